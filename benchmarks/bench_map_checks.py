# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""What a map's safety checks cost: writing with row checks, loading with each check.

    .venv/bin/python -m benchmarks.bench_map_checks --references 10000 --workdir /tmp/mapbench

Writes a synthetic storage-preset map at 640x480 (936 patches x 128 dims per reference,
unit-norm rows, float16) with MapWriter, then loads it: sizes only (verify=False,
check_values=False), values (verify=False, the default check), SHA-256 and values (one
read); each with the page cache warm and, where posix_fadvise can drop it, cold. Memory:
the process' anonymous and file-backed resident set after each load. Prints a table and
writes JSON (out/bench_map_checks.json).
"""

import argparse
import json
import os
from pathlib import Path
import platform
import shutil
import sys
import time

import numpy as np

from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.maps.database import MapWriter, Reference, ReferenceMap


def rss_mb() -> dict:
    """Anonymous and file-backed resident memory of this process (MB)."""
    out = {}
    with open('/proc/self/status') as handle:
        for line in handle:
            key, _, value = line.partition(':')
            if key in ('RssAnon', 'RssFile'):
                out[key[3:].lower()] = int(value.split()[0]) / 1024
    return out


def drop_cache(path: Path) -> bool:
    """Ask the kernel to drop the map's files from the page cache."""
    ok = True
    for f in path.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            ok = False
        finally:
            os.close(fd)
    return ok


def write_map(path: Path, n: int, seed: int = 0) -> dict:
    """Write n synthetic references with MapWriter; time the row checks and the commit."""
    cfg = get_config('storage')
    p, d = cfg.num_patches(0), cfg.num_pcs
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((64, p, d), dtype=np.float32)
    block = (block / np.linalg.norm(block, axis=2, keepdims=True)).astype(np.float16)
    g = rng.standard_normal((n, d), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    append_s = 0.0
    start = time.perf_counter()
    with MapWriter(path, cfg, 'synthetic', n) as writer:
        for i in range(0, n, 64):
            k = min(64, n - i)
            t = time.perf_counter()
            writer.append(g[i:i + k], [block[:k]])
            append_s += time.perf_counter() - t
        t = time.perf_counter()
        writer.commit([Reference(id=f'{i:07d}', x=float(i)) for i in range(n)],
                      index_kind='flat')
        commit_s = time.perf_counter() - t
    patch_bytes = (path / 'patches_0.npy').stat().st_size
    return {'references': n, 'patch_bytes': patch_bytes, 'write_s': time.perf_counter() - start,
            'append_s': append_s, 'commit_s': commit_s}


def time_load(path: Path, cold: bool, **kwargs) -> dict:
    """Load once; seconds and resident memory after."""
    dropped = drop_cache(path) if cold else False
    start = time.perf_counter()
    ref_map = ReferenceMap.load(path, log=lambda msg: None, **kwargs)
    seconds = time.perf_counter() - start
    out = {'seconds': seconds, 'cold': dropped, **rss_mb()}
    del ref_map
    return out


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--references', type=int, default=10000)
    parser.add_argument('--workdir', type=Path, default=Path('/tmp/pnv_bench_map_checks'))
    parser.add_argument('--output', type=Path, default=Path('out/bench_map_checks.json'))
    parser.add_argument('--keep', action='store_true', help='keep the map folder')
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / 'map'
    result = {'machine': f'{platform.processor() or platform.machine()}, '
              f'{os.cpu_count()} CPUs', 'write': write_map(path, args.references)}
    gb = result['write']['patch_bytes'] / 1e9
    cases = [('sizes only', dict(verify=False, check_values=False)),
             ('values (default, verify=False)', dict(verify=False)),
             ('SHA-256 + values (verify=True)', dict(verify=True))]
    rows = []
    for name, kwargs in cases:
        for cold in (True, False):
            r = time_load(path, cold, **kwargs)
            r.update(case=name, warm=not cold)
            rows.append(r)
    result['loads'] = rows
    w = result['write']
    print(f"map: {w['references']} references, {gb:.2f} GB of patches; write "
          f"{w['write_s']:.1f} s (append with row checks {w['append_s']:.1f} s, commit "
          f"{w['commit_s']:.1f} s: SHA-256 + fsync)")
    print(f"{'load':34} {'cache':6} {'s':>7} {'GB/s':>6} {'anon MB':>8} {'file MB':>8}")
    for r in rows:
        cache = 'warm' if r['warm'] else ('cold' if r['cold'] else 'n/a')
        rate = gb / r['seconds'] if r['seconds'] > 0.05 else float('nan')
        print(f"{r['case']:34} {cache:6} {r['seconds']:7.2f} {rate:6.2f} "
              f"{r.get('anon', 0):8.0f} {r.get('file', 0):8.0f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
