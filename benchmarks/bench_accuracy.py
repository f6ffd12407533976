# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""bench_accuracy: fusion, calibrated confidence and the sequence filter, side by side.

Two parts, each with a map fitted on itself (:func:`..core.map_fit.fit_map`: fusion
weights and confidence calibration from the map's own references, no query labels):

corridor  the demo's drives (patch_netvlad_ros/data/corridor_drives): a map of the
          reference bag (built like ``make demo`` does: speed preset at 320x240, model
          bootstrapped from the drive; or ``--map``), the query bag localised frame by
          frame. Right = a reference within 2 frames (the dataset's ground truth), and the
          place radius is 2 m (frames are 1 m apart), so "within place_radius" and
          "right" are the same thing. Recall@1/5 of retrieval alone, the authors' patch
          order, the fitted fusion, and the sequence filter with odometry (the bag's
          /odom) and with time only; confidence ROC AUC and expected calibration error
          (ECE) of the single-frame and the filtered confidence; filter cost per frame
          against the rerank's; confidences of images of places not in the map (Tokyo
          pair, blank and noise images) against the default threshold.
loop      the RTAB-Map loop sample (``--loop``, default test/data/rtabmap_loop): a map of
          the first lap (frames 1-40, no metric poses: frame i at x = i m, stamp i s),
          queried with frames 41-84 against gt_loops.csv: recall@1, and recall at 100%
          precision (the most revisits accepted, by confidence, before the first wrong
          one), single frame against the sequence filter (time only: frame order).
Both maps are fitted as pnv-build-map fits them: self-queries plus simulated second
visits of their references' images (``--self-queries-only``: without, as ``pnv-map fit``
does). Prints a table and writes JSON (default out/bench_accuracy/bench_accuracy.json) with
reliability diagrams beside it.

``--drive-fit``: instead, the fit on a labelled second drive (:mod:`..core.maps.drive_fit`,
``pnv-map fit MAP --bag``) against the self-fit, honestly: the corridor query drive in two
contiguous halves (frames 0-55 and 56-110; adjacent frames are near duplicates, so an
interleaved split would evaluate on the fit's own images), each fitted on one half and
evaluated on the other, then pooled; the self-fit on the same evaluation frames, and the
confidence of the places not in the map under each fit. The self-fit without and with
its novelty gate (:class:`..core.localization.calibration.NoveltyGate`, fitted on the map
alone); the drive fits of :data:`DRIVE_VARIANTS`: in-map plus not-in-map rows (no gate:
``--no-novelty-gate``), in-map rows alone (no gate), in-map rows alone with the map's
gate, with the gate fitted on the not-in-map rows, with the stricter of the two (the
default of ``pnv-map fit --bag``), that with eight calibration features, and that with
``distinct`` in place of ``similarity`` (so also the self-fit: :data:`SELF_VARIANTS`). The
loop revisits are split the same way (their poses: frame i at x = i m; a revisit's pose is
that of the first-lap frame it closes the loop with, the median where several). Writes
bench_accuracy_drive_fit.json.
"""

import csv
import dataclasses
import json
from pathlib import Path
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from patch_netvlad_ros.cli.common import (CliParser, existing_dir, output_dir, positive_float,
                                          run_main)
from patch_netvlad_ros.cli.demo import DRIVES, IMAGE_TOPIC, POSE_TOPIC
from patch_netvlad_ros.cli.evaluate import frame_positives
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.drives.drives import read_bag_drive
from patch_netvlad_ros.core.drives.poses import PoseSample
from patch_netvlad_ros.core.evaluation.evaluation import recall_at_n
from patch_netvlad_ros.core.evaluation.report import roc_auc
from patch_netvlad_ros.core.localization.calibration import (DEFAULT_FEATURES,
                                                             expected_calibration_error,
                                                             recall_at_full_precision,
                                                             reliability_diagram)
from patch_netvlad_ros.core.localization.fusion import CandidateTable
from patch_netvlad_ros.core.localization.localizer import (LocalizationResult, Localizer,
                                                           META_KEY)
from patch_netvlad_ros.core.localization.sequence import SequenceLocalizer
from patch_netvlad_ros.core.maps.database import Reference, ReferenceMap
from patch_netvlad_ros.core.maps.drive_fit import (drive_rows, fit_drive_rows,
                                                   NOT_IN_MAP_EXCLUSION, NOT_IN_MAP_WEIGHT)
from patch_netvlad_ros.core.maps.extraction import describe_batches
from patch_netvlad_ros.core.maps.map_building import build_map, resolve_map_model
from patch_netvlad_ros.core.maps.map_fit import fit_map
from patch_netvlad_ros.core.model.image import load_image, resize_rgb
from patch_netvlad_ros.core.model.model import PatchNetVLAD

REPO = Path(__file__).resolve().parent.parent
#: Shipped with the repository's tests (not the package): attribution files beside them.
DEFAULT_LOOP = REPO / 'test' / 'data' / 'rtabmap_loop'
DEFAULT_UNKNOWN = REPO / 'test' / 'data' / 'tokyo_pair'
#: Corridor: right = within 2 frames; frames are 1 m apart.
FRAME_TOLERANCE = 2
CORRIDOR_RADIUS = 2.0
#: Loop: first lap = map, the rest = queries (1-based frame numbers).
LOOP_MAP_FRAMES = 40
LOOP_RADIUS = 2.0
SIZE = (240, 320)


def read_loop_truth(path: Path) -> Dict[int, Set[int]]:
    """gt_loops.csv: 0-based query frame -> 0-based earlier frames it closes a loop with."""
    truth = {}
    with open(path, newline='') as handle:
        for row in csv.DictReader(handle):
            frames = [int(name.split('.')[0]) - 1 for name in
                      row['matching_earlier_images'].split()]
            truth[int(row['query_image'].split('.')[0]) - 1] = set(frames)
    return truth


def describe(model: PatchNetVLAD, images: Sequence[np.ndarray]) -> List:
    """Descriptors per image: (global [Dp], patches per scale [P, Dp])."""
    out = []
    for desc in describe_batches(model, images):
        for j in range(desc.global_desc.shape[0]):
            out.append((desc.global_desc[j], [p[j] for p in desc.patches]))
    return out


def tables_of(localizer: Localizer,
              descriptors: Sequence) -> Tuple[List[CandidateTable], List[float]]:
    """Return the candidate tables of the queries and the rerank's time (s) of each."""
    tables, rerank_s = [], []
    for g, patches in descriptors:
        table, timings, _, _ = localizer.candidate_table(g, patches)
        tables.append(table)
        rerank_s.append(timings['rerank_s'])
    return tables, rerank_s


def scores(results: Sequence[LocalizationResult], positives: Sequence[Set[int]],
           confidence: bool = True) -> Dict:
    """Recall@1/5, and the confidence's ROC AUC, ECE and recall at 100% precision."""
    ranked = [r.retrieval_order for r in results]
    recall = recall_at_n(ranked, [np.array(sorted(p), np.int64) for p in positives], (1, 5))
    out = {'r1': recall[1], 'r5': recall[5]}
    if confidence:
        right = np.array([r.best_index in p for r, p in zip(results, positives)])
        conf = np.array([r.confidence for r in results])
        out.update(auc=roc_auc(conf, right), ece=expected_calibration_error(conf, right),
                   r100p=recall_at_full_precision(conf, right),
                   conf_right=float(conf[right].mean()) if right.any() else None,
                   conf_wrong=float(conf[~right].mean()) if (~right).any() else None)
    return out


def run_filter(localizer: Localizer, results: Sequence[LocalizationResult],
               stamps: Sequence[float], odometry: Optional[Sequence[PoseSample]]):
    """Filter a stream of answers; return the filtered answers and update times (s)."""
    seq = SequenceLocalizer(localizer)
    out, times = [], []
    for k, result in enumerate(results):
        out.append(seq.update(result, stamps[k], odometry[k] if odometry else None))
        times.append(seq.last_update_s)
    return out, times


def single_and_sequence(ref_map: ReferenceMap, tables: Sequence[CandidateTable],
                        positives: Sequence[Set[int]], stamps: Sequence[float],
                        odometry: Optional[Sequence[PoseSample]], plots: Path,
                        name: str) -> Dict:
    """Every ranking of the same candidate tables, and the filters on the fitted one."""
    out = {}
    for label, fusion, calibration in (('global', 'global', 'heuristic'),
                                       ('patches', 'patches', 'heuristic'),
                                       ('fused', None, None)):
        localizer = Localizer(ref_map, None, fusion=fusion, calibration=calibration)
        out[label] = scores([localizer.answer(t) for t in tables], positives,
                            confidence=label != 'global')
    fitted = Localizer(ref_map, None)
    single = [fitted.answer(t) for t in tables]
    right = np.array([r.best_index in p for r, p in zip(single, positives)])
    reliability_diagram([r.confidence for r in single], right,
                        plots / f'{name}_reliability_single.png',
                        title=f'{name}: single-frame confidence')
    modes = {'sequence_time': None}
    if odometry is not None:
        modes = {'sequence_odometry': odometry, **modes}
    for label, odom in modes.items():
        filtered, times = run_filter(fitted, single, stamps, odom)
        out[label] = scores(filtered, positives)
        out[label]['update_ms_median'] = 1e3 * statistics.median(times)
        out[label]['update_ms_max'] = 1e3 * max(times)
        ok = np.array([r.best_index in p for r, p in zip(filtered, positives)])
        reliability_diagram([r.confidence for r in filtered], ok,
                            plots / f'{name}_reliability_{label}.png',
                            title=f'{name}: {label.replace("_", " ")} confidence')
    out['threshold'] = fitted.calibration.threshold
    out['above_threshold'] = float(np.mean([r.confidence >= out['threshold']
                                            for r in single]))
    return out


def unknown_images(folder: Optional[Path], size=SIZE) -> Dict[str, np.ndarray]:
    """Images of places not in the map: the Tokyo pair (if found), blank and noise."""
    h, w = size
    images = {}
    if folder is not None and folder.is_dir():
        for path in sorted(folder.glob('*.[jp][pn]g')):
            images[path.stem] = resize_rgb(load_image(path), h, w)
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    images.update(black=np.zeros((h, w, 3), np.uint8),
                  grey=np.full((h, w, 3), 128, np.uint8),
                  white=np.full((h, w, 3), 255, np.uint8), noise=noise)
    return images


def corridor_map(args, log) -> Path:
    """Return the corridor map's folder: args.map, else one in OUTPUT, built if missing.

    Built as the demo builds it: the reference bag, speed preset at SIZE, model bootstrapped.
    """
    map_dir = args.map or args.output / 'corridor_map'
    if args.rebuild or not (map_dir / 'manifest.json').is_file():
        log(f'building {map_dir} from {DRIVES / "reference"} (bootstrapping the model)')
        build_map(read_bag_drive(DRIVES / 'reference', IMAGE_TOPIC, POSE_TOPIC, SIZE),
                  map_dir, get_config('speed', image_height=SIZE[0], image_width=SIZE[1]),
                  log=log)
    return map_dir


def corridor_part(args, log) -> Dict:
    """Measure on the demo's drives (module doc)."""
    map_dir = corridor_map(args, log)
    ref_map = ReferenceMap.load(map_dir)
    model = resolve_map_model(map_dir, ref_map.config)
    images = None
    if not args.self_queries_only:
        reference = read_bag_drive(DRIVES / 'reference', IMAGE_TOPIC, POSE_TOPIC, SIZE)
        if len(reference.frames) == len(ref_map):
            images = [f.rgb for f in reference.frames]
        else:
            log(f'{map_dir} is not a map of {DRIVES / "reference"} alone: self-queries only')
    start = time.perf_counter()
    fitted = fit_map(ref_map, place_radius=args.place_radius, images=images,
                     model=model if images else None)
    fit_s = time.perf_counter() - start
    log(f'fitted {map_dir} on itself in {fit_s:.1f} s: w_g '
        f"{fitted['fusion']['global_weight']}")
    drive = read_bag_drive(DRIVES / 'query', IMAGE_TOPIC, POSE_TOPIC, SIZE)
    positives = frame_positives(drive, ref_map, FRAME_TOLERANCE)
    descriptors = describe(model, [f.rgb for f in drive.frames])
    tables, rerank_s = tables_of(Localizer(ref_map, None), descriptors)
    result = single_and_sequence(ref_map, tables, positives, [f.stamp for f in drive.frames],
                                 [f.pose for f in drive.frames], args.output, 'corridor')
    result['rerank_ms_median'] = 1e3 * statistics.median(rerank_s)
    for label in ('sequence_odometry', 'sequence_time'):
        result[label]['update_vs_rerank'] = (result[label]['update_ms_median']
                                             / result['rerank_ms_median'])
    localizer = Localizer(ref_map, model)
    result['unknown'] = {k: localizer.localize(v).confidence
                         for k, v in unknown_images(args.unknown).items()}
    result['fit'] = {'seconds': fit_s, **{k: fitted[k] for k in ('levels', 'fusion_level')},
                     'fusion': fitted['fusion'], 'calibration': fitted['calibration']}
    result['map'] = str(map_dir)
    return result


@dataclasses.dataclass
class Loop:
    """The loop sample: the first lap's map and images, the revisits queried against it.

    queries: frame indices of the revisits with ground truth; descriptors: theirs (global,
    patches per scale); positives: per revisit the first-lap frames it closes the loop with.
    """

    ref_map: ReferenceMap
    map_images: List[np.ndarray]
    queries: List[int]
    descriptors: List
    positives: List[Set[int]]


def load_loop(args, model: PatchNetVLAD, log) -> Optional[Loop]:
    """Describe the loop sample and map its first lap (:class:`Loop`).

    None (said in the log) when args.loop holds no loop data.
    """
    folder = args.loop
    if folder is None or not (folder / 'gt_loops.csv').is_file():
        log(f'no loop data at {folder}: skipping the loop part')
        return None
    truth = read_loop_truth(folder / 'gt_loops.csv')
    paths = sorted((folder / 'images').glob('*.jpg'), key=lambda p: int(p.stem))
    h, w = model.config.image_height, model.config.image_width
    images = [resize_rgb(load_image(p), h, w) for p in paths]
    descriptors = describe(model, images)
    n = LOOP_MAP_FRAMES
    refs = [Reference(id=paths[i].name, source=str(paths[i]), stamp=float(i), x=float(i))
            for i in range(n)]
    ref_map = ReferenceMap.empty(model.config, model_digest_of(model)).extended(
        refs, np.stack([d[0].numpy() for d in descriptors[:n]]),
        [np.stack([d[1][s].numpy() for d in descriptors[:n]])
         for s in range(len(model.config.patch_sizes))])
    queries = [i for i in range(n, len(paths)) if i in truth]
    return Loop(ref_map, images[:n], queries, [descriptors[i] for i in queries],
                [{j for j in truth[i] if j < n} for i in queries])


def loop_part(args, model: PatchNetVLAD, log) -> Optional[Dict]:
    """Measure on the RTAB-Map loop (module doc); None when its folder is missing."""
    loop = load_loop(args, model, log)
    if loop is None:
        return None
    visits = None if args.self_queries_only else loop.map_images
    fitted = fit_map(loop.ref_map, place_radius=LOOP_RADIUS, images=visits,
                     model=model if visits else None)
    tables, _ = tables_of(Localizer(loop.ref_map, None), loop.descriptors)
    result = single_and_sequence(loop.ref_map, tables, loop.positives,
                                 [float(i) for i in loop.queries], None, args.output, 'loop')
    result['fit'] = {k: fitted[k] for k in ('levels', 'fusion_level', 'fusion', 'calibration')}
    result['queries'] = len(loop.queries)
    return result


def halves(n: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Return both folds' fit and evaluation frames, contiguous (see the module doc)."""
    first, second = np.arange((n + 1) // 2), np.arange((n + 1) // 2, n)
    return [(first, second), (second, first)]


#: The eight features of the pre-registered eight-feature row (all but ``distinct``).
EIGHT_FEATURES = ('margin', 'mass', 'agreement', 'quality', 'generic', 'similarity',
                  'global_margin', 'global_z')
#: The hub-corrected pair (docs/accuracy.md, pre-registered): ``distinct`` for ``similarity``.
DISTINCT_FEATURES = ('agreement', 'distinct')
#: Drive-fit variants compared: (label, total weight of the not-in-map rows, novelty gate,
#: where the gate is fitted, calibration features). The weight without the gate was fixed
#: before measuring (drive_fit.NOT_IN_MAP_WEIGHT); with a gate the drive fit uses the
#: in-map rows alone (decided before measuring); the drive gate, the eight features and
#: ``distinct``: docs/accuracy.md, pre-registered.
DRIVE_VARIANTS = (('drive fit, not-in-map rows', NOT_IN_MAP_WEIGHT, False, 'map',
                   DEFAULT_FEATURES),
                  ('drive fit, in-map rows only', 0.0, False, 'map', DEFAULT_FEATURES),
                  ('drive fit, in-map rows + gate', 0.0, True, 'map', DEFAULT_FEATURES),
                  ('drive fit, in-map rows + drive gate', 0.0, True, 'drive', DEFAULT_FEATURES),
                  ('drive fit, in-map rows + stricter gate', 0.0, True, 'stricter',
                   DEFAULT_FEATURES),
                  ('drive fit, 8 features + stricter gate', 0.0, True, 'stricter',
                   EIGHT_FEATURES),
                  ('drive fit, distinct + stricter gate', 0.0, True, 'stricter',
                   DISTINCT_FEATURES))
#: Self-fits: (label, novelty gate applied, calibration features); one fit per feature
#: set, its gate applied or not.
SELF_VARIANTS = (('self fit', False, DEFAULT_FEATURES),
                 ('self fit + gate', True, DEFAULT_FEATURES),
                 ('self fit, distinct', False, DISTINCT_FEATURES),
                 ('self fit, distinct + gate', True, DISTINCT_FEATURES))
VARIANTS = tuple(v[0] for v in SELF_VARIANTS) + tuple(v[0] for v in DRIVE_VARIANTS)


def unfitted_copy(ref_map: ReferenceMap) -> ReferenceMap:
    """Return the map (same arrays) without its fit."""
    return dataclasses.replace(ref_map, meta={k: v for k, v in ref_map.meta.items()
                                              if k != META_KEY})


def evaluate_fit(ref_map: ReferenceMap, tables: Sequence[CandidateTable],
                 positives: Sequence[Set[int]], unknown: Dict[str, Tuple],
                 gate: bool = False) -> Dict:
    """Scores of a fitted map on evaluation tables, and its confidence on unknown places.

    unknown: name -> descriptors (global, patches) of images of places not in the map;
    gate: apply the map's novelty gate (it must hold one).
    """
    localizer = Localizer(ref_map, None, novelty_gate=gate)
    if gate and localizer.novelty_gate is None:
        raise RuntimeError('the fit holds no novelty gate')
    results = [localizer.answer(t) for t in tables]
    out = scores(results, positives)
    out['above_threshold'] = float(np.mean([r.confidence >= localizer.calibration.threshold
                                            for r in results]))
    out['right'] = [bool(r.best_index in p) for r, p in zip(results, positives)]
    out['confidence'] = [float(r.confidence) for r in results]
    out['unknown'] = {k: float(localizer.localize_descriptors(*v).confidence)
                      for k, v in unknown.items()}
    out['unknown_max'] = max(out['unknown'].values())
    return out


def pooled(folds: Sequence[Dict]) -> Dict:
    """R@1, ROC AUC, ECE and R@100%P over every fold's evaluation frames together."""
    right = np.concatenate([f['right'] for f in folds])
    conf = np.concatenate([f['confidence'] for f in folds])
    return {'r1': float(right.mean()), 'auc': roc_auc(conf, right),
            'ece': expected_calibration_error(conf, right),
            'r100p': recall_at_full_precision(conf, right),
            'above_threshold': float(np.mean(conf >= 0.5)),
            'unknown_max': max(f['unknown_max'] for f in folds)}


def self_fits(ref_map: ReferenceMap, place_radius: float, images, model: PatchNetVLAD,
              log) -> Dict[Tuple[str, ...], ReferenceMap]:
    """Return the map fitted on itself per feature set of :data:`SELF_VARIANTS`.

    As pnv-build-map fits (gate stored); images None: self-queries alone.
    """
    fits = {}
    for features in dict.fromkeys(f for _, _, f in SELF_VARIANTS):
        fitted = unfitted_copy(ref_map)
        start = time.perf_counter()
        fit_map(fitted, place_radius=place_radius, features=features, images=images,
                model=model if images is not None else None, novelty_gate=True)
        log(f'self-fit {features} in {time.perf_counter() - start:.1f} s')
        fits[features] = fitted
    return fits


def drive_fit_folds(ref_map: ReferenceMap, fits: Dict[Tuple[str, ...], ReferenceMap],
                    model: PatchNetVLAD,
                    descriptors: Sequence, tables: Sequence[CandidateTable],
                    positives: Sequence[Set[int]], positions: np.ndarray, radius: float,
                    unknown: Dict[str, np.ndarray], name: str, log,
                    fit_positives: Optional[Sequence[Set[int]]] = None) -> Dict:
    """Both folds: each variant's drive fit on one half, evaluated on the other (module doc).

    fit_positives: the labels of the fit rows (default: references within radius of the
    frames' positions, as drive_fit computes them).
    """
    out = {'folds': []}
    unknown = dict(zip(unknown, describe(model, list(unknown.values()))))
    for fit_frames, eval_frames in halves(len(tables)):
        label = f'{name}[{fit_frames[0]}-{fit_frames[-1]}]'
        localizer = Localizer(unfitted_copy(ref_map), None, radius, fusion='patches',
                              calibration='heuristic')
        rows = drive_rows(localizer, [descriptors[k] for k in fit_frames],
                          positions[fit_frames])
        if fit_positives is not None:
            rows = dataclasses.replace(rows, positives=[
                np.array(sorted(fit_positives[k]), np.int64) for k in fit_frames])
        ev_tables = [tables[k] for k in eval_frames]
        ev_pos = [positives[k] for k in eval_frames]
        fold = {'fit_frames': [int(fit_frames[0]), int(fit_frames[-1])],
                'eval_frames': [int(eval_frames[0]), int(eval_frames[-1])]}
        for variant, gate, features in SELF_VARIANTS:
            fold[variant] = evaluate_fit(fits[features], ev_tables, ev_pos, unknown, gate)
        for variant, weight, gate, source, features in DRIVE_VARIANTS:
            fitted_map = unfitted_copy(ref_map)
            fitted = fit_drive_rows(fitted_map, rows, radius, label, features=features,
                                    not_in_map_weight=weight, novelty_gate=gate,
                                    gate_from=source)
            fold[variant] = evaluate_fit(fitted_map, ev_tables, ev_pos, unknown, gate)
            fold[variant]['fit'] = {k: fitted.get(k) for k in
                                    ('drive', 'fusion', 'calibration', 'novelty_gate')}
        log(f'{name}: fold fitted on frames {fold["fit_frames"]} done')
        out['folds'].append(fold)
    out['pooled'] = {v: pooled([f[v] for f in out['folds']]) for v in VARIANTS}
    out['self_fit_novelty_gate'] = fits[DEFAULT_FEATURES].meta[META_KEY]['novelty_gate']
    return out


def corridor_drive_fit(args, log) -> Dict:
    """Measure the corridor's 2-fold drive fit against its self-fit (module doc)."""
    map_dir = corridor_map(args, log)
    ref_map = unfitted_copy(ReferenceMap.load(map_dir))
    model = resolve_map_model(map_dir, ref_map.config)
    images = None
    if not args.self_queries_only:
        reference = read_bag_drive(DRIVES / 'reference', IMAGE_TOPIC, POSE_TOPIC, SIZE)
        images = [f.rgb for f in reference.frames]
    fits = self_fits(ref_map, args.place_radius, images, model, log)
    drive = read_bag_drive(DRIVES / 'query', IMAGE_TOPIC, POSE_TOPIC, SIZE)
    positives = frame_positives(drive, ref_map, FRAME_TOLERANCE)
    descriptors = describe(model, [f.rgb for f in drive.frames])
    tables, _ = tables_of(Localizer(ref_map, None, args.place_radius), descriptors)
    positions = np.array([[f.pose.x, f.pose.y, f.pose.z] for f in drive.frames])
    result = drive_fit_folds(ref_map, fits, model, descriptors, tables, positives,
                             positions, args.place_radius, unknown_images(args.unknown),
                             'query', log)
    result['self_fit'] = fits[DEFAULT_FEATURES].meta[META_KEY]['calibration']['fitted_on']
    result['map'] = str(map_dir)
    return result


def loop_drive_fit(args, model: PatchNetVLAD, log) -> Optional[Dict]:
    """Measure the revisits' 2-fold drive fit against the first lap's self-fit (module doc)."""
    loop = load_loop(args, model, log)
    if loop is None:
        return None
    fits = self_fits(loop.ref_map, LOOP_RADIUS,
                     None if args.self_queries_only else loop.map_images, model, log)
    # a revisit's pose: the first-lap frame it closes the loop with (module doc); one
    # without any is placed far from the map (every answer wrong)
    positions = np.array([[float(np.median(sorted(p))) if p else 1e6, 0.0, 0.0]
                          for p in loop.positives])
    tables, _ = tables_of(Localizer(loop.ref_map, None, LOOP_RADIUS), loop.descriptors)
    size = (model.config.image_height, model.config.image_width)
    result = drive_fit_folds(loop.ref_map, fits, model, loop.descriptors, tables,
                             loop.positives, positions, LOOP_RADIUS,
                             unknown_images(args.unknown, size), 'revisits', log,
                             fit_positives=loop.positives)
    result['queries'] = len(loop.queries)
    return result


def print_drive_fit(result: Dict) -> None:
    """Print the drive-fit comparison: per fold and pooled."""
    head = (f'{"":46s} {"frames":>8s} {"R@1":>6s} {"AUC":>6s} {"ECE":>6s} {"R@100%P":>8s} '
            f'{">=0.5":>6s} {"unknown":>8s}')
    for part in ('corridor', 'loop'):
        res = result.get(part)
        if not res:
            continue
        print(f'\n{part}: fitted on one half, evaluated on the other (contiguous halves)')
        print(head)
        rows = [(f'fold {k + 1}: {v}', f['eval_frames'], f[v])
                for k, f in enumerate(res['folds'])
                for v in VARIANTS]
        rows += [(f'pooled: {v}', None, r) for v, r in res['pooled'].items()]
        for label, frames, r in rows:
            span = f'{frames[0]}-{frames[1]}' if frames else 'all'
            print(f'{label:46s} {span:>8s} {_f(r["r1"]):>6s} {_f(r.get("auc")):>6s} '
                  f'{_f(r.get("ece")):>6s} {_f(r.get("r100p")):>8s} '
                  f'{_f(r["above_threshold"], ".2f"):>6s} {_f(r["unknown_max"]):>8s}')


def measure(args, log, corridor: Callable, loop: Callable, show: Callable[[Dict], None],
            name: str, **extra: object) -> Path:
    """Measure the corridor, then the loop with the corridor map's model; print, write JSON.

    corridor(args, log) -> its result, holding 'map'; loop(args, model, log) -> its result
    or None. Returns the JSON file written (OUTPUT/name).
    """
    result = {'machine': {'platform': platform.platform(), 'cpu': cpu_model(),
                          'threads': torch.get_num_threads()}, **extra}
    result['corridor'] = corridor(args, log)
    map_dir = Path(result['corridor']['map'])
    model = resolve_map_model(map_dir, ReferenceMap.load(map_dir, verify=False).config)
    result['loop'] = loop(args, model, log)
    show(result)
    path = args.output / name
    path.write_text(json.dumps(result, indent=2, default=float))
    return path


def drive_fit_main(args, log) -> int:
    """Run the --drive-fit comparison; print it and write its JSON."""
    path = measure(args, log, corridor_drive_fit, loop_drive_fit, print_drive_fit,
                   'bench_accuracy_drive_fit.json',
                   not_in_map={'exclusion_place_radii': NOT_IN_MAP_EXCLUSION,
                               'weight': NOT_IN_MAP_WEIGHT})
    print(f'\nwrote {path}')
    return 0


def model_digest_of(model: PatchNetVLAD) -> str:
    """Return the model digest that maps record."""
    from patch_netvlad_ros.core.model.checkpoint import model_digest
    return model_digest(model)


def cpu_model() -> str:
    """Return the CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _f(value, spec='.3f') -> str:
    return '-' if value is None else format(value, spec)


def print_table(result: Dict) -> None:
    """Print the side-by-side table."""
    rows = [('global (retrieval)', 'global'), ('patches (authors)', 'patches'),
            ('fused (fitted)', 'fused'), ('sequence, odometry', 'sequence_odometry'),
            ('sequence, time only', 'sequence_time')]
    for part in ('corridor', 'loop'):
        res = result.get(part)
        if not res:
            continue
        print(f'\n{part}: fusion w_g {res["fit"]["fusion"]["global_weight"]}, '
              f'temperature {res["fit"]["fusion"]["temperature"]}; calibrated on '
              f'{res["fit"]["calibration"]["fitted_on"]["description"]}')
        print(f'{"":22s} {"R@1":>6s} {"R@5":>6s} {"AUC":>6s} {"ECE":>6s} {"R@100%P":>8s}')
        for label, key in rows:
            if key in res:
                r = res[key]
                print(f'{label:22s} {_f(r["r1"]):>6s} {_f(r["r5"]):>6s} '
                      f'{_f(r.get("auc")):>6s} {_f(r.get("ece")):>6s} '
                      f'{_f(r.get("r100p")):>8s}')
    cor = result.get('corridor')
    if cor:
        print(f'\nrerank per frame (median) {cor["rerank_ms_median"]:.1f} ms; filter update '
              f'{cor["sequence_odometry"]["update_ms_median"]:.3f} ms with odometry '
              f'({100 * cor["sequence_odometry"]["update_vs_rerank"]:.2f}% of the rerank), '
              f'{cor["sequence_time"]["update_ms_median"]:.3f} ms time only')
        print(f'default threshold {cor["threshold"]:.2f}: {100 * cor["above_threshold"]:.0f}% '
              'of the query frames at or above; places not in the map: '
              + ', '.join(f'{k} {v:.2f}' for k, v in cor['unknown'].items()))
        print(f'fit on the map itself: {cor["fit"]["seconds"]:.1f} s')


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = CliParser(description=__doc__.splitlines()[0])
    parser.add_argument('--map', type=existing_dir, default=None,
                        help='a map of the corridor reference drive (default: build one in '
                        'OUTPUT/corridor_map, reused on later runs)')
    parser.add_argument('--rebuild', action='store_true', help='rebuild OUTPUT/corridor_map')
    parser.add_argument('--place-radius', type=positive_float, default=CORRIDOR_RADIUS,
                        help='place radius of the corridor fit in m (default 2: the ground '
                        "truth's 2 frames)")
    parser.add_argument('--loop', type=Path, default=DEFAULT_LOOP,
                        help='RTAB-Map loop folder (images/, gt_loops.csv)')
    parser.add_argument('--unknown', type=Path, default=DEFAULT_UNKNOWN,
                        help='folder of images of places not in the map (plus blank, noise)')
    parser.add_argument('--self-queries-only', action='store_true',
                        help='fit the calibrations without simulated second visits (as '
                        '`pnv-map fit` does: it has no images)')
    parser.add_argument('--drive-fit', action='store_true',
                        help='compare the fit on a labelled second drive with the self-fit '
                        '(2-fold, contiguous halves of the query drive and of the revisits)')
    parser.add_argument('--output', type=output_dir, default=Path('out/bench_accuracy'))
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    args.output.mkdir(parents=True, exist_ok=True)
    if args.drive_fit:
        return drive_fit_main(args, log)
    path = measure(args, log, corridor_part, loop_part, print_table, 'bench_accuracy.json')
    print(f'\nwrote {path} and reliability diagrams in {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
