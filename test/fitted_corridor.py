# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The corridor map fitted on itself (map_fit) and its queries' answers, computed once per run.

Fitting takes N self-queries per exclusion level (about 20-40 s on 2 cores), so the
accuracy tests of fusion, calibration and sequence share one fit. The session's
``corridor_map`` fixture is never changed: the fit goes into a copy's meta. It is fitted
on self-queries alone (as ``pnv-map fit`` does; simulated second visits would describe
111 more images per run: test_map_fit covers them, docs/accuracy.md measures them).
"""

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from patch_netvlad_ros.core.localization.fusion import CandidateTable
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.map_fit import fit_map

#: The corridor's ground truth is query i <-> references i-2..i+2, frames 1 m apart: a
#: place radius of 2 m makes "within place_radius" the same as "right".
PLACE_RADIUS = 2.0

_MAPS: Dict[int, ReferenceMap] = {}
_TABLES: Dict[int, List[CandidateTable]] = {}


def fitted_map(corridor_map: ReferenceMap) -> ReferenceMap:
    """Return a copy of the corridor map with fitted fusion and calibration in its meta."""
    key = id(corridor_map)
    if key not in _MAPS:
        fitted = dataclasses.replace(corridor_map, meta={})
        fit_map(fitted, place_radius=PLACE_RADIUS)
        _MAPS[key] = fitted
    return _MAPS[key]


def query_tables(corridor_map: ReferenceMap,
                 descriptors: Tuple) -> List[CandidateTable]:
    """Return the candidate tables of every corridor query (retrieval and patch scores)."""
    key = id(corridor_map)
    if key not in _TABLES:
        localizer = Localizer(corridor_map, None, PLACE_RADIUS, fusion='patches')
        g, patches = descriptors
        _TABLES[key] = [localizer.candidate_table(g[i], [p[i] for p in patches])[0]
                        for i in range(g.shape[0])]
    return _TABLES[key]


def right_answers(results, positives) -> np.ndarray:
    """Return [Q] booleans: each answer's best reference is one of its query's positives."""
    return np.array([r.best_index in set(np.asarray(p).tolist())
                     for r, p in zip(results, positives)])
