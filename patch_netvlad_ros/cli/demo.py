# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-demo: offline localisation on the corridor images shipped with the package.

Bootstraps a model from the reference traversal (ImageNet VGG16 + k-means + WPCA, cached
after the first run), builds a map from the references, localises every query, and
prints recall@1/5/10 (global retrieval and Patch-NetVLAD reranking) and a few results.
Reference poses come from frame order: reference i stands at x = i m along the corridor.
"""

import argparse
import json
from pathlib import Path
import sys
import time
from typing import Optional

import numpy as np

from .common import add_model_options, config_from_args, progress_bar, run_main
from ..core.database import Reference, ReferenceMap
from ..core.datasets import corridor
from ..core.evaluation import recall_at_n
from ..core.extraction import build_reference_map
from ..core.image import load_image
from ..core.localizer import Localizer
from ..core.models import corridor_model

DEMO_NS = (1, 5, 10)


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # speed: a few minutes on 2 CPU cores; performance needs ~20 min here (4096-d PCA fit,
    # RANSAC over 3 scales) and reranks better with bootstrapped weights.
    add_model_options(parser, 'speed')
    parser.add_argument('--output', type=Path, default=Path('out/demo'),
                        help='folder for the map and the JSON report (default out/demo)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--show', type=int, default=5, help='localised queries to print')
    args = parser.parse_args(argv)
    if args.image_size is None:
        args.image_size = (240, 320)  # the corridor images are 160x120: 2x is enough
    config = config_from_args(args)
    data = corridor()
    print(f'corridor: {len(data.references)} references, {len(data.queries)} queries; '
          f'preset {config.preset}, {config.image_width}x{config.image_height}, '
          f'top-{config.top_k}', flush=True)
    refs = [load_image(p) for p in data.references]
    queries = [load_image(p) for p in data.queries]

    t0 = time.perf_counter()
    model, ckpt = corridor_model(
        config, refs, seed=args.seed, progress=progress_bar(len(refs), 'bootstrap: encode'),
        log=lambda msg: print(f'  bootstrap: {msg}', file=sys.stderr))
    t1 = time.perf_counter()
    records = [Reference(id=p.stem, source=str(p.relative_to(p.parents[2])), stamp=float(i),
                         frame_id='map', x=float(i)) for i, p in enumerate(data.references)]
    ref_map = build_reference_map(model, refs, records,
                                  progress=progress_bar(len(refs), 'map'))
    map_path = ref_map.save(args.output / 'corridor_map')
    localizer = Localizer(ReferenceMap.load(map_path), model)
    t2 = time.perf_counter()

    update = progress_bar(len(queries), 'localise')
    results = []
    for image in queries:
        results.append(localizer.localize(image))
        update(1)
    t3 = time.perf_counter()

    by_global = [[c.index for c in sorted(r.candidates, key=lambda c: c.global_distance)]
                 for r in results]
    reranked = [r.retrieval_order for r in results]
    recall_global = recall_at_n(by_global, data.positives, DEMO_NS)
    recall_rerank = recall_at_n(reranked, data.positives, DEMO_NS)
    correct = np.array([r.best_index in pos for r, pos in zip(results, data.positives)])
    conf = np.array([r.confidence for r in results])

    print(f'\n{"":24s}' + ''.join(f'R@{n:<6d}' for n in DEMO_NS))
    print(f'{"NetVLAD (global)":24s}' + ''.join(f'{recall_global[n]:<8.3f}' for n in DEMO_NS))
    print(f'{"Patch-NetVLAD (rerank)":24s}'
          + ''.join(f'{recall_rerank[n]:<8.3f}' for n in DEMO_NS))
    print(f'\nconfidence: mean {conf[correct].mean() if correct.any() else float("nan"):.3f} '
          f'when right, {conf[~correct].mean() if (~correct).any() else float("nan"):.3f} '
          'when wrong')
    print(f'\n{"query":>8s} {"best ref":>9s} {"x [m]":>6s} {"conf":>6s}  ok')
    for i in np.linspace(0, len(results) - 1, args.show).astype(int):
        r = results[i]
        print(f'{data.queries[i].stem:>8s} {r.reference.id:>9s} {r.reference.x:6.1f} '
              f'{r.confidence:6.3f}  {"yes" if correct[i] else "no"}')
    extract = np.median([r.timings['extract_s'] for r in results]) * 1e3
    rerank = np.median([r.timings['rerank_s'] for r in results]) * 1e3
    print(f'\nmodel {t1 - t0:.1f} s ({ckpt}), map {t2 - t1:.1f} s, '
          f'localise {t3 - t2:.1f} s (median extract {extract:.0f} ms, rerank {rerank:.0f} ms)')
    report = {'config': config.to_dict(), 'recall_global': recall_global,
              'recall_rerank': recall_rerank, 'accuracy_top1': float(correct.mean()),
              'confidence_right_mean': float(conf[correct].mean()) if correct.any() else None,
              'confidence_wrong_mean': float(conf[~correct].mean())
              if (~correct).any() else None,
              'median_extract_ms': extract, 'median_rerank_ms': rerank,
              'map': str(map_path), 'checkpoint': str(ckpt)}
    (args.output / 'demo_report.json').write_text(json.dumps(report, indent=2))
    print(f'report: {args.output / "demo_report.json"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
