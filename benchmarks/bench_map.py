# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""bench_map: map build speed and size, recall against storage, latency against map size.

Three parts; every case runs in a fresh subprocess (so its peak memory is its own):
build    ``build_reference_map`` on real corridor images resized to 640x480 with the seeded
         model (ImageNet VGG16 + seeded NetVLAD/WPCA) per preset: images/s, and bytes per
         reference image of the saved map folder against the authors' feature files
         (float32 .npy per image and patch size + a float32 global array), computed from
         the shapes and confirmed by writing them for a few images.
storage  recall of the speed preset at 320x240 (the bootstrapped corridor model) on the
         real corridor set when the map's patch descriptors are stored as float32, float16
         (what the map stores) or int8 (per-vector symmetric: q = round(127 v / max|v|),
         a float32 scale per vector; dequantised before matching), reranked with the
         preset's spatial matcher and with RANSAC.
latency  synthetic maps (clustered unit-norm global descriptors, random unit-norm
         patches, float16 memory-mapped, written by ``ReferenceMap.save``) of increasing
         size: top-k retrieval with the index 'auto' picks (and an exact one to compare),
         rerank of the top-100 from the memory map, and the peak memory of a fresh
         process that loads the map and answers queries with the page cache dropped.
Prints tables and writes JSON (out/bench_map.json).
"""

import json
import multiprocessing as mp
import os
from pathlib import Path
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

from benchmarks.bench import _images, _model, PRESET_NAMES
from patch_netvlad_ros.cli.common import (CliParser, non_negative_int, output_dir, output_file,
                                          positive_int, stride_multiple)
from patch_netvlad_ros.core.errors import PatchNetVLADError

#: Top-k reranked in the latency part.
RERANK_K = 100
STORE_DTYPES = ('float32', 'float16', 'int8')


def _folder_bytes(path: Path) -> Dict[str, int]:
    """Bytes of every file in a folder, by name."""
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}


def _rss_mb() -> float:
    """Return the resident memory of this process now (MB)."""
    with open('/proc/self/statm') as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def _rss_parts_mb() -> Dict[str, float]:
    """Resident memory now (MB): anonymous (the process' own) and file-backed.

    File-backed pages are the memory-mapped map files (and libraries): page cache that
    the kernel can drop under pressure, not memory the process needs.
    """
    out = {}
    with open('/proc/self/status') as handle:
        for line in handle:
            key, _, value = line.partition(':')
            if key in ('RssAnon', 'RssFile'):
                out[f'{key[3:].lower()}_mb'] = int(value.split()[0]) / 1024
    return out


# ------------------------------------------------------------------------- build
def case_build(preset: str, count: int, authors_images: int, workdir: str) -> Dict:
    """Build and save a map of ``count`` corridor images at 640x480; sizes on disk."""
    import numpy as np
    from patch_netvlad_ros.core.maps.database import Reference
    from patch_netvlad_ros.core.maps.extraction import build_reference_map
    model = _model(preset)
    cfg = model.config
    images = _images(count)
    refs = [Reference(id=f'{i:06d}', source=f'corridor_{i}.jpg', stamp=float(i), x=float(i))
            for i in range(count)]
    build_reference_map(model, images[:1], refs[:1])                  # warm-up
    start = time.perf_counter()
    ref_map = build_reference_map(model, images, refs)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    path = ref_map.save(Path(workdir) / f'build_{preset}')
    save_s = time.perf_counter() - start
    files = _folder_bytes(path)
    d = cfg.num_pcs
    patches = [cfg.num_patches(i) for i in range(len(cfg.patch_sizes))]
    out = {'preset': preset, 'images': count, 'image_size': [cfg.image_width, cfg.image_height],
           'num_pcs': d, 'num_patches': patches, 'build_s': build_s,
           'images_per_s': count / build_s, 'save_s': save_s, 'files': files,
           'ours_bytes_per_image': sum(files.values()) / count,
           'ours_patch_bytes_per_image': sum(p * d * 2 for p in patches),
           # their feature_extract.py: float32 [Dp, P_s] per image and scale, and one
           # float32 [N, Dp] global array (.npy headers not counted here)
           'authors_bytes_per_image': sum(p * d * 4 for p in patches) + d * 4}
    if authors_images:
        k = min(authors_images, count)
        theirs = Path(workdir) / f'authors_{preset}'
        theirs.mkdir()
        for j in range(k):
            for s, size in enumerate(cfg.patch_sizes):
                np.save(theirs / f'patchfeats_psize{size}_{j:06d}.npy',
                        np.asarray(ref_map.patches[s][j], np.float32).T)
        np.save(theirs / 'globalfeats.npy', np.asarray(ref_map.global_desc[:k], np.float32))
        out['authors_written_images'] = k
        out['authors_written_bytes_per_image'] = sum(_folder_bytes(theirs).values()) / k
        shutil.rmtree(theirs)
    shutil.rmtree(path)
    out['ratio'] = out['authors_bytes_per_image'] / out['ours_bytes_per_image']
    return out


# ----------------------------------------------------------------------- storage
def quantise_int8(x):
    """Per-vector symmetric int8 of x [..., D]: (codes int8 [..., D], scales float32 [...])."""
    import numpy as np
    x = np.asarray(x, np.float32)
    scale = np.abs(x).max(axis=-1)
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.round(127.0 * x / safe[..., None]).astype(np.int8)
    return codes, scale.astype(np.float32)


def dequantise_int8(codes, scales):
    """Float32 [..., D] from :func:`quantise_int8`'s codes and scales."""
    import numpy as np
    return codes.astype(np.float32) * (scales[..., None] / 127.0)


def case_storage(matchers: List[str]) -> Dict:
    """Reranked recall on the real corridor with the patch store in three precisions."""
    import numpy as np
    import torch
    from patch_netvlad_ros.core.config import get_config
    from patch_netvlad_ros.core.drives.datasets import corridor
    from patch_netvlad_ros.core.evaluation.evaluation import recall_at_n
    from patch_netvlad_ros.core.maps.extraction import describe_batches
    from patch_netvlad_ros.core.model.image import load_image
    from patch_netvlad_ros.core.matching.rerank import rerank
    from patch_netvlad_ros.core.maps.models import corridor_model
    from patch_netvlad_ros.core.maps.retrieval import build_index, top_k
    data = corridor()
    refs = [load_image(p) for p in data.references]
    model, _ = corridor_model(get_config('speed', image_height=240, image_width=320), refs)
    cfg = model.config

    def describe(images):
        batches = list(describe_batches(model, images))
        return (torch.cat([b.global_desc for b in batches]).numpy(),
                [torch.cat([b.patches[s] for b in batches]).numpy()
                 for s in range(len(cfg.patch_sizes))])
    db_g, db_p = describe(refs)
    q_g, q_p = describe([load_image(p) for p in data.queries])
    _, cand = top_k(build_index(db_g), q_g, cfg.top_k)
    ns = (1, 5, 10)
    n_vec = sum(p.shape[1] for p in db_p)
    d = cfg.num_pcs
    stores = {'float32': (db_p, n_vec * d * 4),
              'float16': ([p.astype(np.float16) for p in db_p], n_vec * d * 2),
              'int8': ([dequantise_int8(*quantise_int8(p)) for p in db_p],
                       n_vec * d + n_vec * 4)}
    rows = [{'store': 'global only', 'matcher': '-', 'bytes_per_reference': d * 4,
             'recall': recall_at_n(list(cand), data.positives, ns)}]
    for matcher in matchers:
        mcfg = cfg.override(matcher=matcher)
        best32 = None
        for name, (store, patch_bytes) in stores.items():
            start = time.perf_counter()
            orders = []
            for i in range(len(q_g)):
                result = rerank([torch.from_numpy(p[i]) for p in q_p], store, cand[i], mcfg)
                orders.append(cand[i][result.order])
            seconds = time.perf_counter() - start
            best = np.array([o[0] for o in orders])
            best32 = best if best32 is None else best32
            cos = float(np.mean([np.mean((np.asarray(s, np.float32) * p).sum(-1)
                                         / (np.linalg.norm(np.asarray(s, np.float32), axis=-1)
                                            * np.linalg.norm(p, axis=-1)))
                                 for s, p in zip(store, db_p)]))
            rows.append({'store': name, 'matcher': matcher,
                         'bytes_per_reference': patch_bytes + d * 4,
                         'patch_bytes_per_reference': patch_bytes,
                         'recall': recall_at_n(orders, data.positives, ns),
                         'same_top1_as_float32': float(np.mean(best == best32)),
                         'mean_cosine_to_float32': cos,
                         'rerank_ms_per_query': 1e3 * seconds / len(q_g)})
    return {'config': {'preset': 'speed', 'image_size': [cfg.image_width, cfg.image_height],
                       'num_pcs': d, 'num_patches': [cfg.num_patches(i) for i in
                                                     range(len(cfg.patch_sizes))],
                       'top_k': cfg.top_k, 'matcher': cfg.matcher,
                       'references': len(db_g), 'queries': len(q_g)}, 'rows': rows}


# ----------------------------------------------------------------------- latency
def _latency_config(width: int, height: int):
    from patch_netvlad_ros.core.config import get_config
    return get_config('storage', image_height=height, image_width=width)


def _unit(x):
    import numpy as np
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _queries(global_desc, count: int, seed: int):
    """Global queries [count, D] near random map entries, and patch queries [P, D] maker."""
    import numpy as np
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(global_desc), count, replace=len(global_desc) < count)
    g = np.asarray(global_desc[np.sort(picks)], np.float32)
    return _unit(g + 0.3 * rng.standard_normal(g.shape, dtype=np.float32)
                 / np.sqrt(g.shape[1])).astype(np.float32), rng


def case_make_map(n: int, width: int, height: int, workdir: str, seed: int = 0) -> Dict:
    """Write a synthetic map of n references with ``ReferenceMap.save``."""
    import numpy as np
    from patch_netvlad_ros.core.maps.database import Reference, ReferenceMap
    from patch_netvlad_ros.core.maps.retrieval import index_kind_of
    cfg = _latency_config(width, height)
    p, d = cfg.num_patches(0), cfg.num_pcs
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 50), d), dtype=np.float32)
    g = _unit(centres[rng.integers(0, len(centres), n)]
              + 0.5 * rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
    scratch = Path(workdir) / f'scratch_{n}.npy'
    patches = np.lib.format.open_memmap(scratch, mode='w+', dtype=np.float16, shape=(n, p, d))
    step = max(1, (64 << 20) // (p * d * 4))
    start = time.perf_counter()
    for i in range(0, n, step):
        block = rng.standard_normal((min(step, n - i), p, d), dtype=np.float32)
        patches[i:i + step] = _unit(block)
    generate_s = time.perf_counter() - start
    refs = [Reference(id=f'{i:07d}', x=float(i)) for i in range(n)]
    ref_map = ReferenceMap(cfg, 'synthetic', refs, g, [patches])
    start = time.perf_counter()
    index = ref_map.index                                     # 'auto' for this size
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    path = ref_map.save(Path(workdir) / f'map_{n}')               # writes that index
    save_s = time.perf_counter() - start
    del ref_map, patches
    scratch.unlink()
    files = _folder_bytes(path)
    ivf = getattr(index, 'nlist', None)
    return {'references': n, 'path': str(path), 'num_patches': p, 'num_pcs': d,
            'index_kind': index_kind_of(index), 'nlist': ivf,
            'nprobe': getattr(index, 'nprobe', None), 'generate_s': generate_s,
            'index_build_s': index_s, 'save_s': save_s, 'files': files,
            'map_bytes': sum(files.values())}


def _median_ms(times: List[float]) -> float:
    return 1e3 * statistics.median(times)


def case_latency(path: str, queries: int, rerank_queries: int) -> Dict:
    """Load a map; time top-k (its index and an exact one) and rerank of the top-100."""
    import numpy as np
    import torch
    from patch_netvlad_ros.core.maps.database import ReferenceMap
    from patch_netvlad_ros.core.matching.rerank import rerank
    from patch_netvlad_ros.core.maps.retrieval import build_index, index_kind_of, top_k
    out = {}
    for verify in (True, False):
        start = time.perf_counter()
        ref_map = ReferenceMap.load(path, verify=verify)
        out[f'load_s_verify_{verify}'.lower()] = time.perf_counter() - start
    cfg = ref_map.config
    q, rng = _queries(ref_map.global_desc, queries, seed=1)
    indexes = {index_kind_of(ref_map.index): ref_map.index}
    if 'flat' not in indexes:
        start = time.perf_counter()
        indexes['flat'] = build_index(ref_map.global_desc, 'flat')
        out['flat_build_s'] = time.perf_counter() - start
    found = {}
    for kind, index in indexes.items():
        top_k(index, q[:1], RERANK_K)                                       # warm-up
        times = []
        rows = []
        for row in q:
            start = time.perf_counter()
            rows.append(top_k(index, row, RERANK_K)[1][0])
            times.append(time.perf_counter() - start)
        found[kind] = rows
        out[f'top_k_ms_{kind}'] = _median_ms(times)
    if len(found) > 1:
        exact, approx = found['flat'], found[index_kind_of(ref_map.index)]
        out['recall_at_100_vs_flat'] = float(np.mean(
            [len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))
        out['recall_at_1_vs_flat'] = float(np.mean([a[0] == e[0]
                                                    for a, e in zip(approx, exact)]))
    patches = [torch.from_numpy(_unit(rng.standard_normal(
        (cfg.num_patches(0), cfg.num_pcs), dtype=np.float32)).astype(np.float32))]
    rows = found[index_kind_of(ref_map.index)]
    rerank(patches, ref_map.patches, rows[0], cfg)                          # warm-up
    times = []
    for row in rows[:rerank_queries]:
        start = time.perf_counter()
        rerank(patches, ref_map.patches, row, cfg)
        times.append(time.perf_counter() - start)
    out['rerank_ms_warm'] = _median_ms(times)
    out.update({f'latency_rss_{k}': v for k, v in _rss_parts_mb().items()})
    return out


def case_rss(path: str, queries: int) -> Dict:
    """Drop the map from the page cache, load it (no verify) and answer queries."""
    import numpy as np
    import torch
    from patch_netvlad_ros.core.maps.database import ReferenceMap
    from patch_netvlad_ros.core.matching.rerank import rerank
    from patch_netvlad_ros.core.maps.retrieval import top_k
    rss_imports = _rss_mb()
    dropped = True
    for f in Path(path).iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            dropped = False
        finally:
            os.close(fd)
    start = time.perf_counter()
    ref_map = ReferenceMap.load(path, verify=False)
    load_s = time.perf_counter() - start
    rss_loaded = _rss_mb()
    cfg = ref_map.config
    q, rng = _queries(ref_map.global_desc, queries, seed=2)
    patches = [torch.from_numpy(_unit(rng.standard_normal(
        (cfg.num_patches(0), cfg.num_pcs), dtype=np.float32)).astype(np.float32))]
    times = []
    for row in q:
        start = time.perf_counter()
        idx = top_k(ref_map.index, row, RERANK_K)[1][0]
        rerank(patches, ref_map.patches, idx, cfg)
        times.append(time.perf_counter() - start)
    parts = _rss_parts_mb()
    return {'page_cache_dropped': dropped, 'load_s_cold': load_s,
            'rss_after_imports_mb': rss_imports, 'rss_after_load_mb': rss_loaded,
            'rss_end_anon_mb': parts['anon_mb'], 'rss_end_file_mb': parts['file_mb'],
            'query_ms_cold_median': _median_ms(times), 'query_ms_cold_first': 1e3 * times[0],
            'queries': queries}


# ---------------------------------------------------------------------- running
CASES = {'build': case_build, 'storage': case_storage, 'make_map': case_make_map,
         'latency': case_latency, 'rss': case_rss}


def _worker(queue, name: str, kwargs: Dict) -> None:
    import torch
    torch.set_grad_enabled(False)
    try:
        result = CASES[name](**kwargs)
    except Exception as exc:  # report it in the parent instead of hanging it
        queue.put({'error': f'{type(exc).__name__}: {exc}'})
        raise
    result['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result['load_average_1min'] = os.getloadavg()[0]   # > 1 busy core: others were running
    queue.put(result)


def run_case(name: str, **kwargs) -> Dict:
    """Run one case in a fresh process (so its peak memory is its own)."""
    print(f'running {name} {kwargs} ...', file=sys.stderr, flush=True)
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(queue, name, kwargs))
    proc.start()
    result = queue.get()
    proc.join()
    if 'error' in result:
        raise RuntimeError(f'{name} failed: {result["error"]}')
    return result


def _busy(loads: List[float]) -> None:
    """Warn below a table when the machine was busy with other work during its cases."""
    if loads and max(loads) > 1.5:
        print(f'(load average up to {max(loads):.1f} at the end of these cases: other '
              'processes were running; timings are pessimistic)')


def _mb(n: float) -> str:
    return f'{n / 1e6:.3f} MB' if n >= 1e5 else f'{n / 1e3:.1f} kB'


def print_build(rows: List[Dict]) -> None:
    """Print the build table."""
    print(f'\n(a) map build: {rows[0]["images"]} corridor images at 640x480, seeded model')
    print(f'{"preset":12s} {"im/s":>6s} {"save s":>7s} {"ours/image":>12s} '
          f'{"authors/image":>14s} {"written":>12s} {"authors/ours":>12s}')
    for r in rows:
        written = _mb(r['authors_written_bytes_per_image']) if 'authors_written_bytes_per_image' \
            in r else '-'
        print(f'{r["preset"]:12s} {r["images_per_s"]:6.3f} {r["save_s"]:7.2f} '
              f'{_mb(r["ours_bytes_per_image"]):>12s} {_mb(r["authors_bytes_per_image"]):>14s} '
              f'{written:>12s} {r["ratio"]:11.2f}x')
    _busy([r['load_average_1min'] for r in rows])


def print_storage(result: Dict) -> None:
    """Print the recall-against-storage table."""
    c = result['config']
    print(f'\n(b) recall against storage: corridor, {c["preset"]} preset at '
          f'{c["image_size"][0]}x{c["image_size"][1]}, {c["references"]} refs x '
          f'{c["num_patches"]} patches x {c["num_pcs"]} dims, top-{c["top_k"]} {c["matcher"]}')
    print(f'{"patch store":12s} {"matcher":8s} {"bytes/ref":>10s} {"R@1":>6s} {"R@5":>6s} '
          f'{"R@10":>6s} {"top-1 = f32":>11s} {"cosine":>8s}')
    for r in result['rows']:
        rec = r['recall']
        extra = (f'{r["same_top1_as_float32"]:11.3f} {r["mean_cosine_to_float32"]:8.5f}'
                 if 'same_top1_as_float32' in r else '')
        print(f'{r["store"]:12s} {r["matcher"]:8s} {r["bytes_per_reference"]:10d} '
              f'{rec[1]:6.3f} {rec[5]:6.3f} {rec[10]:6.3f} {extra}')
    _busy([result['load_average_1min']])


def print_latency(rows: List[Dict], label: str) -> None:
    """Print the latency-against-size table."""
    print(f'\n(c) search + rerank against map size: synthetic {label}')
    print('load: with SHA-256 verify / without; top-k: median of single queries, k=100, the '
          "map's index, and an exact one; R@100/flat: share of the exact top-100 found; "
          'rerank: top-100 from the warm memory map; cold: top-k + rerank after dropping the '
          'page cache, in a fresh process whose peak RSS (anonymous + file-backed at the '
          'end; after imports) follows')
    print(f'{"refs":>8s} {"index":>14s} {"on disk":>9s} {"load s":>11s} {"top-k ms":>9s} '
          f'{"flat ms":>8s} {"R@100/flat":>10s} {"rerank ms":>9s} {"cold ms":>8s} '
          f'{"peak RSS":>9s} {"anon+file":>10s} {"imports":>8s}')
    for r in rows:
        kind = r['index_kind'] + (f' {r["nlist"]}/{r["nprobe"]}' if r['nlist'] else '')
        flat = f'{r["top_k_ms_flat"]:.3f}' if r['index_kind'] != 'flat' else '='
        rec = f'{r["recall_at_100_vs_flat"]:.3f}' if 'recall_at_100_vs_flat' in r else 'exact'
        load = f'{r["load_s_verify_true"]:.2f}/{r["load_s_verify_false"]:.2f}'
        parts = f'{r["rss_end_anon_mb"]:.0f}+{r["rss_end_file_mb"]:.0f}'
        print(f'{r["references"]:8d} {kind:>14s} {r["map_bytes"] / 1e9:7.3f}GB {load:>11s} '
              f'{r["top_k_ms_" + r["index_kind"]]:9.3f} {flat:>8s} {rec:>10s} '
              f'{r["rerank_ms_warm"]:9.2f} {r["query_ms_cold_median"]:8.2f} '
              f'{r["rss_peak_rss_mb"]:7.0f}MB {parts:>10s} {r["rss_after_imports_mb"]:6.0f}MB')
    _busy([r[f'{name}_load_average'] for r in rows for name in ('latency', 'rss')])


def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = CliParser(prog='python -m benchmarks.bench_map', description=__doc__.splitlines()[0])
    parser.add_argument('--parts', nargs='+', choices=('build', 'storage', 'latency'),
                        default=('build', 'storage', 'latency'))
    parser.add_argument('--presets', nargs='+', choices=PRESET_NAMES, default=PRESET_NAMES,
                        help='presets of the build part')
    parser.add_argument('--build-images', type=positive_int, default=8,
                        help='corridor images per map in the build part')
    parser.add_argument('--authors-images', type=non_negative_int, default=2,
                        help="images whose authors' feature files are written to confirm "
                             'their size')
    parser.add_argument('--skip-authors', action='store_true',
                        help="skip writing the authors' feature files")
    parser.add_argument('--matchers', nargs='+', choices=('spatial', 'ransac'),
                        default=['spatial', 'ransac'],
                        help='matchers of the storage part (the preset uses spatial)')
    parser.add_argument('--sizes', nargs='+', type=positive_int, default=(1000, 10_000, 100_000),
                        help='references per synthetic map in the latency part')
    parser.add_argument('--latency-image', nargs=2, type=stride_multiple, default=(320, 240),
                        metavar=('W', 'H'), help='image size fixing the patch grid of the '
                        'synthetic maps (storage preset)')
    parser.add_argument('--queries', type=positive_int, default=200,
                        help='top-k queries per map')
    parser.add_argument('--rerank-queries', type=positive_int, default=30,
                        help='reranked queries per map (warm)')
    parser.add_argument('--rss-queries', type=positive_int, default=20,
                        help='queries of the fresh low-memory process')
    parser.add_argument('--workdir', type=output_dir, default=None,
                        help='scratch folder for the maps (default: a new one in /tmp)')
    parser.add_argument('--output', type=output_file, default='out/bench_map.json')
    args = parser.parse_args(argv)
    if 'latency' in args.parts:
        try:
            _latency_config(*args.latency_image)
        except PatchNetVLADError as exc:
            parser.error(f'argument --latency-image: {exc}')
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix='pnv-bench-map-', dir=args.workdir))
    started = time.perf_counter()
    result: Dict = {}
    try:
        if 'build' in args.parts:
            result['build'] = [run_case('build', preset=p, count=args.build_images,
                                        authors_images=0 if args.skip_authors
                                        else args.authors_images, workdir=str(workdir))
                               for p in args.presets]
            print_build(result['build'])
        if 'storage' in args.parts:
            result['storage'] = run_case('storage', matchers=args.matchers)
            print_storage(result['storage'])
        if 'latency' in args.parts:
            w, h = args.latency_image
            cfg = _latency_config(w, h)
            label = (f'storage preset at {w}x{h}: global {cfg.num_pcs} float32, '
                     f'{cfg.num_patches(0)} patches x {cfg.num_pcs} float16 per reference')
            rows = []
            for n in args.sizes:
                row = run_case('make_map', n=n, width=w, height=h, workdir=str(workdir))
                for name, kwargs in (('make_map', {}),
                                     ('latency', {'queries': args.queries,
                                                  'rerank_queries': args.rerank_queries}),
                                     ('rss', {'queries': args.rss_queries})):
                    part = row if name == 'make_map' else run_case(name, path=row['path'],
                                                                   **kwargs)
                    row[f'{name}_peak_rss_mb'] = part.pop('peak_rss_mb')
                    row[f'{name}_load_average'] = part.pop('load_average_1min')
                    row.update(part)
                shutil.rmtree(row.pop('path'))
                rows.append(row)
                print_latency(rows[-1:], label)
            result['latency'] = {'config': label, 'rows': rows}
            print_latency(rows, label)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    import faiss
    import numpy as np
    import torch
    meta = {'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
            'memory_gb': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30,
            'python': platform.python_version(), 'torch': torch.__version__,
            'faiss': faiss.__version__, 'numpy': np.__version__,
            'total_s': time.perf_counter() - started, 'args': {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({'meta': meta, **result}, indent=2, default=str))
    print(f'\nwrote {args.output} ({meta["total_s"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
