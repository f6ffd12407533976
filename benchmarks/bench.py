# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""bench: extraction and rerank speed, ours vs the authors' code, side by side.

Every case runs in a fresh subprocess on the same inputs (real corridor images at
640x480, the same weights), reports the median of the repeats after one warm-up and the
process's peak resident memory, prints a table and writes JSON.

Rows: ``ours`` (float32 backbone, by Winograd F(4x4, 3x3) on the CPU; rerank with the
default matcher: the exact bf16-screened one where the CPU has bf16 units, else the exact
int8- or int16-screened one on AVX2 CPUs without AVX-512),
``ours-direct`` (float32 backbone by oneDNN's direct convolutions, CPU only),
``ours-bf16`` (bf16 backbone; on a CPU only where it has bf16 units),
``ours-fp16`` (fp16 backbone, GPU only), ``ours-float32`` (rerank with the plain float32
matcher) and ``authors``. ``--device cuda`` runs both implementations on the GPU, times
with CUDA events, keeps the candidates' patches resident on the GPU and reranks with
the float32 matcher and batched RANSAC (the 'auto' choices there); measured once on an
H200 (docs/benchmarks.md#gpu; `scripts/gpu_check.sh` runs it with the CUDA tests).

Extraction time does not depend on the weights (ImageNet VGG16 + seeded NetVLAD/WPCA).
Rerank time does, for the screened matchers (how many similarities the bf16 or integer
screen leaves undecided): it uses the corridor model bootstrapped at 640x480 (k-means +
whitened PCA, built into the cache on first use, about 7 minutes per preset). The
authors' rerank is timed on descriptors already in memory (their pipeline also re-reads
every candidate's .npy files per query; not counted here).

Ceiling: each row carries the method's FLOPs (:mod:`benchmarks.flops`: per
image for extraction, the similarity GEMMs per query for rerank) and the rate achieved;
two ``peak`` rows measure this machine's float32 and bf16 GEMM rate (4096^3 matmul), the
practical peak the achieved rates are set against; on a CPU with AMX a third, ``amx``,
measures the tile unit itself (bf16 tile products on operands in L1), the ceiling of the
fused screened matcher.
"""

import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import resource
import statistics
import sys
import time
from typing import Dict, List, Optional

from patch_netvlad_ros.cli.common import CliParser, output_file, positive_int

PRESET_NAMES = ('performance', 'speed', 'storage')
#: Side of the square GEMM timed as the practical peak.
PEAK_SIZE = 4096


def _model(preset: str):
    from patch_netvlad_ros.core.model.bootstrap import seeded_model
    from patch_netvlad_ros.core.config import get_config
    return seeded_model(get_config(preset), seed=0, imagenet_encoder=True)


def _trained_model(preset: str):
    from patch_netvlad_ros.core.config import get_config
    from patch_netvlad_ros.core.maps.models import corridor_model
    return corridor_model(get_config(preset), log=lambda m: print(m, file=sys.stderr))[0]


def _images(count: int):
    from patch_netvlad_ros.core.drives.datasets import corridor
    from patch_netvlad_ros.core.model.image import load_image
    paths = corridor().references
    return [load_image(paths[(7 * i) % len(paths)]) for i in range(count)]


def _time(fn, repeats: int, device: str = 'cpu') -> List[float]:
    """Seconds per call of fn after one warm-up; CUDA events on a GPU."""
    import torch
    cuda = torch.device(device).type == 'cuda'
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
            continue
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def case_extract(impl: str, preset: str, batch: int, repeats: int,
                 device: str = 'cpu') -> Dict:
    """Time one batch of 640x480 images through the whole descriptor extraction."""
    import torch
    from benchmarks.flops import extraction_flops
    from benchmarks.authors import authors_describe, authors_model
    from patch_netvlad_ros.core.model.image import to_tensor
    from patch_netvlad_ros.core.model import vlad
    from patch_netvlad_ros.core.model.winograd import resolve
    model = _model(preset)
    x = to_tensor(_images(batch), model.config).to(device)
    winograd = per_cell = False
    if impl.startswith('ours'):
        model = model.to(device)
        dtype = {'ours-bf16': torch.bfloat16, 'ours-fp16': torch.float16}.get(impl)
        winograd = resolve(False if impl == 'ours-direct' else None, device, dtype)
        cfg = model.config
        per_cell = vlad.projects_cells(cfg.feature_height, cfg.feature_width, cfg.patch_sizes,
                                       cfg.strides)

        def run():
            model.extract(x, encoder_dtype=dtype, winograd=winograd)
    else:
        theirs = authors_model(model).to(device)

        def run():  # their feature_extract.py, minus the .npy writes
            authors_describe(theirs, theirs.encoder(x), model.config.num_pcs)
    times = _time(run, repeats, device)
    gflop = sum(extraction_flops(model.config).values()) / 1e9
    rate = batch / statistics.median(times)
    return {'seconds': times, 'images_per_s': rate, 'gflop_per_image': gflop,
            'tflops': gflop * rate / 1e3, 'winograd': winograd, 'per_cell': per_cell}


def case_peak(impl: str, preset: str, size: int, repeats: int, device: str = 'cpu') -> Dict:
    """Time a size^3 GEMM in float32 or bf16 (impl 'fp32' / 'bf16'): the practical peak.

    impl 'amx': the AMX tile unit's rate on operands in L1 (bf16 tile products only, no
    memory traffic): the ceiling of the fused screened matcher.
    """
    import torch
    if impl == 'amx':
        from patch_netvlad_ros.core import native
        lib = native.library()
        iters = 1 << 22                     # about 0.1 s a call at this CPU's rate

        def run():
            run.flops = lib.pnv_amx_peak(iters)
        times = _time(run, repeats, device)
        return {'seconds': times, 'tflops': run.flops / statistics.median(times) / 1e12}
    dtype = torch.bfloat16 if impl == 'bf16' else torch.float32
    a = torch.randn(size, size).to(device=device, dtype=dtype)
    b = torch.randn(size, size).to(device=device, dtype=dtype)
    times = _time(lambda: a @ b, repeats, device)
    return {'seconds': times, 'tflops': 2 * size ** 3 / statistics.median(times) / 1e12}


def case_rerank(impl: str, preset: str, candidates: int, repeats: int,
                device: str = 'cpu') -> Dict:
    """Time reranking one query's top-`candidates` (real descriptors, repeated images).

    On a GPU the candidates' patches are resident there (float16), as a localizer would
    keep them; on the CPU they are float16 arrays, as a memory-mapped map gives them.
    """
    import torch
    import numpy as np
    from patch_netvlad_ros.core.matching import int_screen, screened_mnn
    from patch_netvlad_ros.core.maps.database import PATCH_DTYPE
    from benchmarks.flops import descriptor_bytes, matching_flops
    from patch_netvlad_ros.core.model.image import to_tensor
    from patch_netvlad_ros.core.matching.rerank import rerank, resolve_mnn_method
    model = _trained_model(preset)
    cfg = model.config
    distinct = 8
    desc = model.extract(to_tensor(_images(distinct + 1), cfg))
    q = [p[distinct].to(device) for p in desc.patches]
    idx = np.arange(candidates)
    extra = {}
    if impl.startswith('ours'):
        stores = [np.ascontiguousarray(p[np.arange(candidates) % distinct].numpy()
                                       .astype(PATCH_DTYPE)) for p in desc.patches]
        if torch.device(device).type == 'cuda':       # as a GPU localizer keeps them
            from patch_netvlad_ros.core.matching.resident_patches import ResidentPatches
            resident = ResidentPatches(stores, device)
            idx, extra['moved_mb'] = resident.fetch(idx)
            extra['moved_mb'] /= 1e6
            stores = resident.slots
        method = 'float32' if impl == 'ours-float32' else 'auto'
        extra['matcher'] = resolve_mnn_method(method, torch.device(device), q[0].shape[1])

        def run():
            rerank(q, stores, idx, cfg, mnn_method=method)
        if extra['matcher'] in ('screened', 'integer'):
            make = (screened_mnn.ScreenedQuery if extra['matcher'] == 'screened'
                    else int_screen.IntQuery)
            screened = [make(qs) for qs in q]
            for sq, store in zip(screened, stores):
                sq.match(store)
            pairs = sum(2 * s.shape[0] * s.shape[1] for s in stores)
            entries = sum(s.shape[0] * s.shape[1] * qs.shape[0] for s, qs in zip(stores, q))
            extra['refined_fraction'] = float(
                sum(sq.counts[0] + sq.counts[1] for sq in screened) / pairs)
            # refinement dot products per screened similarity
            extra['dot_fraction'] = float(sum(sq.counts[2:].sum() for sq in screened) / entries)
            extra['fallback_candidates'] = sum(sq.fallbacks for sq in screened)
            extra['fused_scales'] = sum(getattr(sq, 'fused', False) for sq in screened)
    else:
        from patchnetvlad.models.local_matcher import normalise_func
        from benchmarks.authors import authors_matcher
        matcher = authors_matcher(cfg, range(len(cfg.patch_sizes)))
        db = [[p[c % distinct].t().contiguous().to(device) for p in desc.patches]
              for c in range(candidates)]

        def run():  # their local_matcher's loop for one query, features in memory
            diffs = np.zeros((candidates, len(cfg.patch_sizes)))
            for k in range(candidates):
                diffs[k, :], _, _ = matcher.match(q, db[k])
            np.argsort(normalise_func(diffs, len(cfg.patch_sizes), cfg.patch_weights))
    times = _time(run, repeats, device)
    gflop = matching_flops(cfg, candidates) / 1e9
    return {'seconds': times, 'ms_per_query': 1e3 * statistics.median(times),
            'matching_gflop': gflop, 'tflops': gflop / statistics.median(times) / 1e3,
            'candidate_mb': candidates * descriptor_bytes(cfg) / 1e6, **extra}


def _worker(queue, kind: str, impl: str, preset: str, arg: int, repeats: int,
            device: str) -> None:
    import torch
    torch.set_grad_enabled(False)
    fn = {'extract': case_extract, 'rerank': case_rerank, 'peak': case_peak}[kind]
    result = fn(impl, preset, arg, repeats, device)
    result['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.device(device).type == 'cuda':
        result['gpu_peak_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    queue.put(result)


def run_case(kind: str, impl: str, preset: str, arg: int, repeats: int,
             device: str = 'cpu') -> Dict:
    """Run one case in a fresh process (so its peak memory is its own)."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker,
                       args=(queue, kind, impl, preset, arg, repeats, device))
    proc.start()
    while True:                 # a case that crashes must not leave the run waiting forever
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f'{kind} case {impl}/{preset} died (exit code '
                                   f'{proc.exitcode}) without a result') from None
    proc.join()
    return result


def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = CliParser(prog='python -m benchmarks.bench', description=__doc__.splitlines()[0])
    parser.add_argument('--presets', nargs='+', choices=PRESET_NAMES, default=PRESET_NAMES)
    parser.add_argument('--batch', type=positive_int, default=4,
                        help='images per extraction batch')
    parser.add_argument('--candidates', type=positive_int, default=100, help='top-k to rerank')
    parser.add_argument('--repeats', type=positive_int, default=3)
    parser.add_argument('--stages', nargs='+', choices=('extract', 'rerank'),
                        default=('extract', 'rerank'))
    parser.add_argument('--skip-authors', action='store_true')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'),
                        help='where both implementations run (cuda: timed with CUDA events)')
    parser.add_argument('--output', type=output_file, default='out/bench.json')
    args = parser.parse_args(argv)
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available to torch here')
    authors = [] if args.skip_authors else ['authors']
    from patch_netvlad_ros.core.matching.screened_mnn import bf16_is_fast
    # without bf16 units torch emulates bf16 convolutions at a tenth of the float32 speed
    others = (['ours-bf16', 'ours-fp16'] if args.device == 'cuda'
              else ['ours-direct'] + (['ours-bf16'] if bf16_is_fast() else []))
    impls = {'extract': ['ours'] + others + authors,
             'rerank': ['ours', 'ours-float32'] + authors}
    rows = []
    from patch_netvlad_ros.core import native
    cpu = args.device == 'cpu'
    peaks = (['fp32'] + (['bf16'] if not cpu or bf16_is_fast() else [])
             + (['amx'] if cpu and native.amx() else []))
    for impl in peaks:
        print(f'running peak {impl} ...', file=sys.stderr, flush=True)
        rows.append({'stage': 'peak', 'preset': '-', 'impl': impl,
                     **run_case('peak', impl, '-', PEAK_SIZE, args.repeats, args.device)})
    peak = {r['impl']: r['tflops'] for r in rows}
    for preset in args.presets:
        for kind, arg in (('extract', args.batch), ('rerank', args.candidates)):
            if kind not in args.stages:
                continue
            for impl in impls[kind]:
                print(f'running {kind} {preset} {impl} ...', file=sys.stderr, flush=True)
                rows.append({'stage': kind, 'preset': preset, 'impl': impl,
                             **run_case(kind, impl, preset, arg, args.repeats, args.device)})
    print(f'\n{"stage":8s} {"preset":12s} {"impl":13s} {"median":>12s} {"peak MB":>9s} '
          f'{"speed-up":>9s} {"TFLOP/s":>8s}  notes')
    for row in rows:
        value = {'extract': lambda r: f'{r["images_per_s"]:.3f} im/s',
                 'rerank': lambda r: f'{r["ms_per_query"]:.0f} ms/q',
                 'peak': lambda r: f'{r["tflops"]:.2f} TF/s'}[row['stage']](row)
        ref = [r for r in rows if r['impl'] == 'authors' and r['stage'] == row['stage']
               and r['preset'] == row['preset']]
        ratio = ''
        if ref and row['impl'] != 'authors':
            ratio = (f'{row["images_per_s"] / ref[0]["images_per_s"]:.2f}x'
                     if row['stage'] == 'extract'
                     else f'{ref[0]["ms_per_query"] / row["ms_per_query"]:.2f}x')
        notes = ''
        if row['stage'] == 'extract':
            precision = 'bf16' if row['impl'] in ('ours-bf16', 'ours-fp16') else 'fp32'
            notes = (f'{row["gflop_per_image"]:.0f} GFLOP/image, '
                     f'{100 * row["tflops"] / peak[precision]:.0f}% of the {precision} GEMM peak'
                     + (' (Winograd: counted at the direct FLOPs)' if row.get('winograd')
                        else '')
                     + (' (WPCA per cell: counted per patch)' if row.get('per_cell') else ''))
        elif row['stage'] == 'rerank':
            notes = f'{row["matching_gflop"]:.0f} GFLOP, {row["candidate_mb"]:.0f} MB/q read'
            if 'moved_mb' in row:   # GPU: what crossed the bus per query (resident: 0)
                notes += f', {row["moved_mb"]:.0f} MB/q copied to the GPU'
        if 'matcher' in row:
            fused = row.get('fused_scales', 0)
            notes += ', ' + row['matcher'] + (' (fused AMX)' if fused else '') + (
                f', {100 * row["refined_fraction"]:.1f}% refined, '
                f'{100 * row["dot_fraction"]:.1f}% dot products'
                if 'refined_fraction' in row else '')
        rate = f'{row["tflops"]:.3f}' if row['stage'] != 'peak' else ''
        print(f'{row["stage"]:8s} {row["preset"]:12s} {row["impl"]:13s} {value:>12s} '
              f'{row["peak_rss_mb"]:9.0f} {ratio:>9s} {rate:>8s}  {notes}')
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
            'device': (torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu'),
            'batch': args.batch, 'candidates': args.candidates, 'repeats': args.repeats}
    args.output.write_text(json.dumps({'meta': meta, 'results': rows}, indent=2))
    print(f'\nwrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
