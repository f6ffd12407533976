#!/usr/bin/env python3
# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Measure pnv-train on the shipped corridor drives: recall before and after training.

Trains on the *reference* drive only, then builds a map of the reference drive with the
trained checkpoint (pnv-build-map --checkpoint) and localises the *query* drive, never
seen in training, offline (pnv-evaluate --mode offline --frame-tolerance 2: query i is
right at references i-2..i+2). "Before" is the map bootstrapped from the reference drive
(ImageNet VGG16 + k-means + whitened PCA; pnv-build-map without --checkpoint), as the
demo has it. Prints a table of R@1/R@5 of each single-frame stage of pnv-evaluate's
report (global retrieval, the authors' patch order, the map's fused order) and writes
OUTPUT/train_corridor.json. A step whose output already exists in OUTPUT is not run again
(the maps, the evaluations, the training run): an interrupted measurement continues.

    .venv/bin/python -m benchmarks.train_corridor --output out/train_corridor -- \
        --epochs 4 --pos-radius 2 --neg-radius 5 --augment 2 --margin 0.3 \
        --optimizer adam --lr 1e-5 --weight-decay 0 --refresh-every 25

Arguments after '--' go to pnv-train as they are. The speed preset at 320x240, as the demo.
"""

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import time

from benchmarks.bench_accuracy import cpu_model
from patch_netvlad_ros.cli import build_map, evaluate, train
from patch_netvlad_ros.core.drives.datasets import DATA_DIR
from patch_netvlad_ros.core.training.options import MODEL_FILE, REPORT_FILE

DRIVES = DATA_DIR / 'corridor_drives'
TOPICS = ['--image-topic', '/camera/image_raw/compressed', '--pose-topic', '/odom']
MODEL = ['--preset', 'speed', '--image-size', '320x240']
#: Single-frame stages of pnv-evaluate's side_by_side, in the table's order.
STAGES = ('global', 'patches', 'fused')


def run(main, argv):
    """Run a CLI's main in this process; stop on a non-zero status."""
    print('$ pnv-' + main.__module__.rsplit('.', 1)[-1].replace('_', '-') + ' '
          + ' '.join(argv), flush=True)
    status = main(argv)
    if status:
        sys.exit(status)


def recall(map_dir: Path, out: Path) -> dict:
    """Evaluate the query drive against a map; return R@1/R@5 per single-frame stage."""
    if not (out / 'report.json').is_file():
        run(evaluate.main, ['--map', str(map_dir), '--bag', str(DRIVES / 'query'), *TOPICS,
                            '--mode', 'offline', '--frame-tolerance', '2', '--output',
                            str(out)])
    report = json.loads((out / 'report.json').read_text())
    rows = report['side_by_side']
    # 'reranked' is the map's default order (the fused one for a fitted map)
    recalls = {stage: {n: rows[stage]['recall'][str(n)] for n in (1, 5)}
               for stage in STAGES if stage in rows}
    recalls['reranked'] = {n: report['recall'][str(n)] for n in (1, 5)}
    return recalls


def main() -> int:
    """Train, build both maps, evaluate both; print and write the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', type=Path, default=Path('out/train_corridor'))
    parser.add_argument('train_args', nargs='*', help='extra pnv-train arguments (after --)')
    args = parser.parse_args()
    out = args.output
    ref = ['--bag', str(DRIVES / 'reference'), *TOPICS]
    results = {}
    before = out / 'bootstrapped_map'
    if not before.is_dir():
        run(build_map.main, [str(before), *ref, *MODEL])
    results['before'] = recall(before, out / 'eval_before')
    train_s = None
    if not (out / 'train' / MODEL_FILE).is_file():
        began = time.perf_counter()
        run(train.main, [str(out / 'train'), *ref, *MODEL, *args.train_args])
        train_s = time.perf_counter() - began
    else:
        print(f'reusing the finished training run in {out / "train"}', flush=True)
    report = json.loads((out / 'train' / REPORT_FILE).read_text())
    after = out / 'trained_map'
    if not after.is_dir():
        run(build_map.main, [str(after), *ref, *MODEL, '--checkpoint',
                             str(out / 'train' / MODEL_FILE)])
    results['after'] = recall(after, out / 'eval_after')
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                            text=True).stdout.strip()
    summary = {'results': results, 'train_args': args.train_args,
               'train_options': report['options'], 'train_seconds': train_s,
               'epoch_seconds': [r['seconds'] for r in report['history']],
               'mined_loss': [report['initial_loss']] + [r['mined_loss']
                                                         for r in report['history']],
               'machine': f'{cpu_model()}, {os.cpu_count()} CPUs', 'commit': commit,
               'date': time.strftime('%Y-%m-%d')}
    print('\n| model | ' + ' | '.join(f'{s} R@{n}' for s in STAGES for n in (1, 5)) + ' |')
    print('|---|' + '---|' * (2 * len(STAGES)))
    for name in ('before', 'after'):
        r = results[name]
        cells = [f'{r[s][n]:.3f}' if s in r else '-' for s in STAGES for n in (1, 5)]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    total = 'reused' if train_s is None else f'{train_s:.0f} s'
    print(f'training {total}, epochs {summary["epoch_seconds"]} s, mined loss '
          f'{summary["mined_loss"]}')
    (out / 'train_corridor.json').write_text(json.dumps(summary, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
