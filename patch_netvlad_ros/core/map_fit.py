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
every level computed (right or wrong answers under the fitted fusion).

:func:`fit_map` stores everything in ``ref_map.meta['localization']`` (JSON-able), which
:class:`~.localizer.Localizer` then uses by default; save the map to keep it.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import faiss
import numpy as np
import torch

from .calibration import (confidence_features, DEFAULT_FEATURES, DEFAULT_L2,
                          fit_calibration)
from .database import ReferenceMap
from .errors import MapError
from .fusion import AUTHORS, CandidateTable, fit_fusion, recall_at_1, RETRIEVAL
from .localizer import DEFAULT_PLACE_RADIUS, Localizer, META_KEY

#: Fraction of self-queries a ranker must get wrong for a level to teach the fusion.
INFORMATIVE_ERROR = 0.05
#: Exclusion levels tried at most (each costs one pass of self-queries).
MAX_LEVELS = 3
#: Self-queries at most (a seeded sample of the references beyond that).
MAX_QUERIES = 300
#: Version of what fit_map stores.
FIT_VERSION = 1


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


def self_queries(localizer: Localizer, queries: Sequence[int], exclusion: float
                 ) -> Tuple[List[CandidateTable], List[np.ndarray]]:
    """Candidate tables and positives of references queried against the rest of the map.

    Each reference in ``queries`` is matched against the map without the references
    within ``exclusion`` metres of it (itself included); its positives are the other
    references within (exclusion, place_radius].
    """
    ref_map = localizer.map
    positions = localizer.positions
    tables, positives = [], []
    for i in queries:
        dist = np.linalg.norm(positions - positions[i], axis=1)
        excluded = np.flatnonzero(dist <= exclusion)
        if len(excluded) >= len(ref_map):
            raise MapError(f'an exclusion of {exclusion:g} m leaves reference {i} nothing to '
                           'match against: the map needs references farther apart')
        patches = [torch.from_numpy(np.asarray(p[i], np.float32)) for p in ref_map.patches]
        table = localizer.candidate_table(torch.from_numpy(np.array(ref_map.global_desc[i])),
                                          patches, exclude=excluded)[0]
        tables.append(table)
        positives.append(np.flatnonzero((dist > exclusion) & (dist <= localizer.place_radius)))
    return tables, positives


def _level_summary(exclusion: float, tables: Sequence[CandidateTable],
                   positives: Sequence[np.ndarray]) -> Dict[str, float]:
    return {'exclusion_m': exclusion, 'queries': len(tables),
            'with_positive': int(sum(len(p) > 0 for p in positives)),
            'recall_at_1_global': recall_at_1(tables, positives, RETRIEVAL),
            'recall_at_1_patches': recall_at_1(tables, positives, AUTHORS)}


def fit_map(ref_map: ReferenceMap, place_radius: float = DEFAULT_PLACE_RADIUS,
            max_queries: int = MAX_QUERIES, seed: int = 0,
            features: Sequence[str] = DEFAULT_FEATURES, l2: float = DEFAULT_L2,
            progress: Optional[Callable[[int], None]] = None,
            **matching: object) -> Dict[str, Any]:
    """Fit fusion and calibration on self-queries (module doc); store and return them.

    matching: top_k, matcher, patch_weights as the localizer will use them.
    progress: called with the number of self-queries done after each level.
    Returns the dict stored in ``ref_map.meta['localization']``.
    """
    if len(ref_map) < 3:
        raise MapError(f'a map of {len(ref_map)} references is too small to fit on itself '
                       '(at least 3)')
    localizer = Localizer(ref_map, None, place_radius, fusion='patches',
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
    rows, labels = [], []
    for _, level_tables, level_positives in levels[:chosen + 1]:
        for table, pos in zip(level_tables, level_positives):
            fused = fusion.scores(table)
            rows.append(confidence_features(table, fused, localizer.positions, place_radius,
                                            fusion.temperature))
            labels.append(bool(np.isin(table.indices[int(np.argmax(fused))], pos)))
    x, y = np.array(rows), np.array(labels)
    summaries = [_level_summary(e, t, p) for e, t, p in levels]
    calibration = fit_calibration(x, y, place_radius, fusion, features, l2, fitted_on={
        'description': f'self-queries, exclusion 0 to {exclusion:g} m',
        'rows': int(len(y)), 'right': int(y.sum())})
    fitted = {'version': FIT_VERSION, 'place_radius': float(place_radius),
              'top_k': int(localizer.config.top_k), 'queries': int(len(queries)),
              'seed': int(seed), 'levels': summaries, 'fusion_level': int(chosen),
              'fusion': fusion.to_meta(), 'calibration': calibration.to_meta()}
    ref_map.meta[META_KEY] = fitted
    return fitted
