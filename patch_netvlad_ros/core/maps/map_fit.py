# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Fit a map's fusion weights and confidence calibration on the map's own references.

Self-queries: a reference is queried against the map without the references within an
exclusion radius of it; its right answers are the remaining references within
place_radius. Adjacent keyframes of one drive are often near duplicates, so with only
the reference itself left out every ranker is right (nothing to learn). The exclusion
therefore grows, from 0 (the reference alone) in steps of the map's reference spacing
(the median distance to the nearest other reference: excluding the near duplicates,
not whole places), until the global or the patch ranking errs on at least
:data:`INFORMATIVE_ERROR` of the self-queries; the fusion (:func:`.fusion.fit_fusion`)
is fitted at that level.

The calibration (:func:`.calibration.fit_calibration`) is fitted on the self-queries of
every level computed (right or wrong answers under the fitted fusion), and on simulated
second visits when :func:`fit_map` is given the references' images and the map's model
(a map built from a drive is; a map refitted from its folder alone is not). Self-queries
are the map's own traversal: a second drive's right answers have lower global similarity
than a self-query's at the same distance, so a calibration on self-queries alone is
underconfident on another drive. A second visit (:func:`second_visits`) is a reference's
image warped and re-exposed as the training's synthetic second visit
(:func:`.training.augment.augment_image`), described with the map's model and matched
against the map without the reference itself. Every source (each exclusion level, the
second visits) weighs the same in the fit. Measured on the corridor (docs/accuracy.md):
the query drive's single-frame ECE 0.151 -> 0.108 at the same ROC AUC (0.945, 0.944).

With ``novelty_gate`` (default :data:`NOVELTY_GATE`: off), the fit also stores the map's
novelty gate (:func:`.calibration.fit_novelty_gate`, fitted on the map alone), which the
localizer multiplies its calibrated confidence by: P(in map | x) x P(right | in map, x).

:func:`fit_map` stores everything in ``ref_map.meta['localization']`` (JSON-able), which
:class:`~.localizer.Localizer` then uses by default; save the map to keep it. A labelled
second drive fits better than the map itself (:mod:`.drive_fit`).
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import faiss
import numpy as np
import torch

from .database import ReferenceMap
from .extraction import describe_batches
from ..errors import MapError
from ..localization.calibration import (ALL_FEATURES, confidence_features, DEFAULT_FEATURES,
                                        DEFAULT_L2, fit_calibration, fit_novelty_gate,
                                        hubs_for)
from ..localization.fusion import (AUTHORS, CandidateTable, fit_fusion, Fusion, recall_at_1,
                                   RETRIEVAL)
from ..localization.localizer import DEFAULT_PLACE_RADIUS, Localizer, META_KEY
from ..model.model import PatchNetVLAD
from ..training.augment import augment_image

#: Fraction of self-queries a ranker must get wrong for a level to teach the fusion.
INFORMATIVE_ERROR = 0.05
#: Exclusion levels tried at most (each costs one pass of self-queries).
MAX_LEVELS = 3
#: Self-queries at most (a seeded sample of the references beyond that).
MAX_QUERIES = 300
#: Simulated second visits at most (a seeded sample of the references with images).
MAX_SECOND_VISITS = 120
#: The augmented copy a second visit is (:func:`.training.augment.augment_image`).
SECOND_VISIT_COPY = 0
#: Version of what fit_map stores (2: calibration may include simulated second visits,
#: summarised under 'second_visits'; 3: a fit may be on a labelled second drive
#: (:mod:`.drive_fit`), summarised under 'drive' instead of 'levels'; fits of earlier
#: versions load and work unchanged).
FIT_VERSION = 3
#: Whether a fit stores a novelty gate by default. Off: on its one pre-registered
#: measurement (docs/accuracy.md "Novelty gate") the gate made the corridor self-fit's ECE
#: (0.108 -> 0.115) and share of query frames at or above 0.5 (98% -> 97%) worse, and
#: left an unknown image at 0.56 with the in-map drive fit. A fit without a gate (every
#: fit before it) behaves as before.
NOVELTY_GATE = False

#: The references' images: in map order, or by map index.
ReferenceImages = Union[Sequence[np.ndarray], Mapping[int, np.ndarray]]


def sample_queries(n: int, max_queries: int = MAX_QUERIES, seed: int = 0) -> np.ndarray:
    """Map indices used as self-queries: all when n <= max_queries, else a seeded sample."""
    if n <= max_queries:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False))


def reference_spacing(positions: np.ndarray) -> float:
    """Median distance (m) from a reference to its nearest other reference (0 if < 2)."""
    positions = np.asarray(positions, np.float64)
    if len(positions) < 2:
        return 0.0
    index = faiss.IndexFlatL2(positions.shape[1])
    index.add(positions.astype(np.float32))
    dist, _ = index.search(positions.astype(np.float32), 2)
    return float(np.median(np.sqrt(np.maximum(dist[:, 1], 0.0))))


def exclusion_levels(positions: np.ndarray, place_radius: float) -> List[float]:
    """Exclusion radii tried in turn: 0, then multiples of the reference spacing.

    At most :data:`MAX_LEVELS`, each below place_radius (some positives must remain).
    """
    spacing = reference_spacing(positions)
    levels = [0.0]
    while spacing > 0 and len(levels) < MAX_LEVELS and len(levels) * spacing < place_radius:
        levels.append(len(levels) * spacing)
    return levels


def _query_without_neighbours(localizer: Localizer, i: int, exclusion: float,
                              global_desc: torch.Tensor, patches: Sequence[torch.Tensor]
                              ) -> Tuple[CandidateTable, np.ndarray]:
    """Candidates of descriptors of reference i against the map without its neighbours.

    Returns the table and the positives: references within (exclusion, place_radius].
    """
    positions = localizer.positions
    dist = np.linalg.norm(positions - positions[i], axis=1)
    excluded = np.flatnonzero(dist <= exclusion)
    if len(excluded) >= len(localizer.map):
        raise MapError(f'an exclusion of {exclusion:g} m leaves reference {i} nothing to '
                       'match against: the map needs references farther apart')
    table = localizer.candidate_table(global_desc, patches, exclude=excluded)[0]
    return table, np.flatnonzero((dist > exclusion) & (dist <= localizer.place_radius))


def self_queries(localizer: Localizer, queries: Sequence[int], exclusion: float
                 ) -> Tuple[List[CandidateTable], List[np.ndarray]]:
    """Candidate tables and positives of references queried against the rest of the map.

    Each reference in ``queries`` is matched against the map without the references
    within ``exclusion`` metres of it (itself included); its positives are the other
    references within (exclusion, place_radius].
    """
    ref_map = localizer.map
    tables, positives = [], []
    for i in queries:
        patches = [torch.from_numpy(np.asarray(p[i], np.float32)) for p in ref_map.patches]
        table, pos = _query_without_neighbours(
            localizer, int(i), exclusion, torch.from_numpy(np.array(ref_map.global_desc[i])),
            patches)
        tables.append(table)
        positives.append(pos)
    return tables, positives


def second_visits(localizer: Localizer, model: PatchNetVLAD, images: ReferenceImages,
                  queries: Sequence[int], seed: int = 0, batch_size: int = 4
                  ) -> Tuple[List[CandidateTable], List[np.ndarray]]:
    """Candidate tables and positives of simulated second visits of references.

    Reference i's image (``images[i]``) is changed into a synthetic second visit (the
    training's :func:`.training.augment.augment_image`: another viewpoint and exposure,
    fixed by seed and i), described with ``model`` (the map's) and matched against the
    map without reference i itself; its positives are the other references within
    place_radius (the module doc says why). queries: [V] map indices; returns V tables
    and V positives, in the order of queries.
    """
    views = (augment_image(np.asarray(images[int(i)]), seed, SECOND_VISIT_COPY, int(i))
             for i in queries)
    tables, positives = [], []
    done = 0
    for desc in describe_batches(model, views, batch_size):
        for j in range(desc.global_desc.shape[0]):
            patches = [p[j].detach().cpu() for p in desc.patches]
            table, pos = _query_without_neighbours(
                localizer, int(queries[done]), 0.0, desc.global_desc[j].detach().cpu(),
                patches)
            tables.append(table)
            positives.append(pos)
            done += 1
    return tables, positives


def calibration_rows(tables: Sequence[CandidateTable], positives: Sequence[np.ndarray],
                     fusion: Fusion, positions: np.ndarray, place_radius: float,
                     hubs: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Confidence features [M, len(ALL_FEATURES)] and labels [M] of queries' answers.

    An answer (the top candidate under ``fusion``) is right iff it is among the query's
    positives. positions: [N, 3] the map's reference positions; hubs: [N] as
    :func:`.calibration.confidence_features` takes them.
    """
    rows, labels = [], []
    for table, pos in zip(tables, positives):
        fused = fusion.scores(table)
        rows.append(confidence_features(table, fused, positions, place_radius,
                                        fusion.temperature, hubs))
        labels.append(bool(np.isin(table.indices[int(np.argmax(fused))], pos)))
    return (np.array(rows, np.float64).reshape(len(rows), len(ALL_FEATURES)),
            np.array(labels, bool))


def _level_summary(exclusion: float, tables: Sequence[CandidateTable],
                   positives: Sequence[np.ndarray]) -> Dict[str, float]:
    return {'exclusion_m': exclusion, 'queries': len(tables),
            'with_positive': int(sum(len(p) > 0 for p in positives)),
            'recall_at_1_global': recall_at_1(tables, positives, RETRIEVAL),
            'recall_at_1_patches': recall_at_1(tables, positives, AUTHORS)}


def _images_for(images: ReferenceImages, n: int) -> np.ndarray:
    """Map indices that ``images`` holds an image of (all n for a sequence of n)."""
    if isinstance(images, Mapping):
        keys = np.array(sorted(int(k) for k in images), np.int64)
        if len(keys) and (keys[0] < 0 or keys[-1] >= n):
            raise MapError(f'images are given for references {keys[0]}..{keys[-1]}, the map '
                           f'has {n} (indices 0..{n - 1})')
        return keys
    if len(images) != n:
        raise MapError(f'{len(images)} images for a map of {n} references: give one per '
                       'reference, in order, or a mapping from reference index to image')
    return np.arange(n)


def store_novelty_gate(ref_map: ReferenceMap, fitted: Dict[str, Any], place_radius: float,
                       enabled: bool) -> None:
    """Add the map's novelty gate to a fit dict ('novelty_gate'; None when not fitted)."""
    if not enabled:
        return
    gate = fit_novelty_gate(np.asarray(ref_map.global_desc), ref_map.positions(),
                            place_radius)
    fitted['novelty_gate'] = gate.to_meta() if gate is not None else None


def fit_map(ref_map: ReferenceMap, place_radius: float = DEFAULT_PLACE_RADIUS,
            max_queries: int = MAX_QUERIES, seed: int = 0,
            features: Sequence[str] = DEFAULT_FEATURES, l2: float = DEFAULT_L2,
            progress: Optional[Callable[[int], None]] = None,
            images: Optional[ReferenceImages] = None, model: Optional[PatchNetVLAD] = None,
            max_second_visits: int = MAX_SECOND_VISITS,
            novelty_gate: bool = NOVELTY_GATE, **matching: object) -> Dict[str, Any]:
    """Fit fusion and calibration on self-queries (module doc); store and return them.

    matching: top_k, matcher, patch_weights as the localizer will use them.
    progress: called with the number of queries done after each level (and after the
    simulated second visits).
    images, model: the references' RGB images (a sequence in map order, or a mapping
    from map index to image, any size) and the map's model: the calibration then also
    learns from simulated second visits of up to ``max_second_visits`` of them (module
    doc); without them it learns from the self-queries alone.
    novelty_gate: also store the map's novelty gate (module doc).
    Returns the dict stored in ``ref_map.meta['localization']``.
    """
    if len(ref_map) < 3:
        raise MapError(f'a map of {len(ref_map)} references is too small to fit on itself '
                       '(at least 3)')
    if (images is None) != (model is None):
        raise MapError('simulated second visits need both the images and the model (the '
                       "map's); give both or neither")
    localizer = Localizer(ref_map, model, place_radius, device='cpu', fusion='patches',
                          calibration='heuristic', **matching)
    queries = sample_queries(len(ref_map), max_queries, seed)
    levels: List[Tuple[float, List[CandidateTable], List[np.ndarray]]] = []
    chosen = None
    for exclusion in exclusion_levels(localizer.positions, place_radius):
        tables, positives = self_queries(localizer, queries, exclusion)
        levels.append((exclusion, tables, positives))
        if progress is not None:
            progress(len(queries))
        summary = _level_summary(exclusion, tables, positives)
        if summary['with_positive'] == 0:
            continue
        chosen = len(levels) - 1
        worst = min(summary['recall_at_1_global'], summary['recall_at_1_patches'])
        if worst <= 1.0 - INFORMATIVE_ERROR:
            break
    if chosen is None:
        raise MapError(f'no reference has another within place_radius {place_radius:g} m: '
                       'raise the radius (or build the map with denser keyframes)')
    exclusion, tables, positives = levels[chosen]
    fusion = fit_fusion(tables, positives, f'self-queries, exclusion {exclusion:g} m')
    # each source of calibration rows: (exclusion of its queries, tables, positives)
    sources = [(e, t, p) for e, t, p in levels[:chosen + 1]]
    description = f'self-queries, exclusion 0 to {exclusion:g} m'
    visits = None
    if images is not None:
        available = _images_for(images, len(ref_map))
        picked = available[sample_queries(len(available), max_second_visits, seed)]
        if len(picked):
            v_tables, v_positives = second_visits(localizer, model, images, picked, seed)
            if progress is not None:
                progress(len(picked))
            sources.append((0.0, v_tables, v_positives))
            visits = {**_level_summary(0.0, v_tables, v_positives),
                      'recall_at_1_fused': recall_at_1(v_tables, v_positives, fusion)}
            description += f'; {len(picked)} simulated second visits'
    rows, labels, weights = [], [], []
    hubs = hubs_for(features, ref_map.global_desc, localizer.positions, place_radius)
    for _, source_tables, source_positives in sources:
        x_s, y_s = calibration_rows(source_tables, source_positives, fusion,
                                    localizer.positions, place_radius, hubs)
        rows.append(x_s)
        labels.append(y_s)
        # every source weighs the same, whatever its number of queries (mean weight 1)
        weights += [1.0 / len(source_tables)] * len(source_tables)
    x, y = np.concatenate(rows), np.concatenate(labels)
    weights = np.array(weights) * len(y) / len(sources)
    summaries = [_level_summary(e, t, p) for e, t, p in levels]
    calibration = fit_calibration(x, y, place_radius, fusion, features, l2, weights, {
        'description': description, 'rows': int(len(y)), 'right': int(y.sum())})
    fitted = {'version': FIT_VERSION, 'place_radius': float(place_radius),
              'top_k': int(localizer.config.top_k), 'queries': int(len(queries)),
              'seed': int(seed), 'levels': summaries, 'fusion_level': int(chosen),
              'fusion': fusion.to_meta(), 'calibration': calibration.to_meta()}
    if visits is not None:
        fitted['second_visits'] = visits
    store_novelty_gate(ref_map, fitted, place_radius, novelty_gate)
    ref_map.meta[META_KEY] = fitted
    return fitted
