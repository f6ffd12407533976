# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The novelty gate, P(in map | x): constants against a brute force from a map's descriptors
and positions, applied in the localizer's confidence on real images, saved and loaded with
the map, and an old fit without it behaving as before."""

import dataclasses
import json
import math

import numpy as np
import pytest

from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.localization import calibration
from patch_netvlad_ros.core.localization.calibration import (fit_novelty_gate, GATE_EXCLUSION,
                                                             GATE_HIGH, GATE_QUANTILE,
                                                             NoveltyGate)
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps import map_fit
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.map_building import fit_summary

RADIUS = 2.0
#: References of the corridor map in the brute force (every one: 111).
N_BRUTE = 111


def brute_force_gate(g, positions, place_radius):
    """(centre, slope, references) by loops over pairs: s_r, its quantile and median.

    g: [N, Dp] float64; positions: [N, 3]; the quantile interpolates linearly.
    """
    s = []
    for r in range(len(g)):
        best = -math.inf
        for q in range(len(g)):
            if np.linalg.norm(positions[r] - positions[q]) > GATE_EXCLUSION * place_radius:
                sq = float(np.sum((g[r] - g[q]) ** 2))
                best = max(best, 1.0 - sq / 2.0)
        if best > -math.inf:
            s.append(best)
    s.sort()

    def quantile(p):
        h = (len(s) - 1) * p
        lo = math.floor(h)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (h - lo) * (s[hi] - s[lo])

    centre, median = quantile(GATE_QUANTILE), quantile(0.5)
    return centre, math.log(GATE_HIGH / (1 - GATE_HIGH)) / (median - centre), len(s)


def test_gate_constants_against_a_brute_force(corridor_map):
    """The gate of the real corridor map equals loops over its descriptors and positions;
    0.5 at the centre, GATE_HIGH at the median; no gate where no reference is far enough."""
    g = np.asarray(corridor_map.global_desc[:N_BRUTE], np.float64)
    positions = corridor_map.positions()[:N_BRUTE]
    gate = fit_novelty_gate(g, positions, RADIUS)
    centre, slope, n = brute_force_gate(g, positions, RADIUS)
    assert gate.centre == pytest.approx(centre, abs=1e-9)
    assert gate.slope == pytest.approx(slope, rel=1e-6)
    assert gate.fitted_on['references'] == n == N_BRUTE
    median = gate.fitted_on['median_similarity']
    np.testing.assert_allclose(gate.probability([centre, median]), [0.5, GATE_HIGH])
    assert gate.probability([centre - 0.1])[0] < 0.5 < gate.probability([centre + 0.1])[0]
    # blocks give the same s_r as one block
    block = calibration._GATE_BLOCK
    try:
        calibration._GATE_BLOCK = 7
        assert fit_novelty_gate(g, positions, RADIUS) == gate
    finally:
        calibration._GATE_BLOCK = block
    # references all within 2 radii of each other (or one alone): no gate
    assert fit_novelty_gate(g[:3], positions[:3], 10.0) is None
    assert fit_novelty_gate(g[:1], positions[:1], RADIUS) is None


def test_gate_meta_is_checked():
    gate = NoveltyGate(0.06, 55.0, {'references': 3})
    assert NoveltyGate.from_meta(json.loads(json.dumps(gate.to_meta()))) == gate
    for bad in ({'slope': 1.0}, {'centre': 0.1, 'slope': -1.0},
                {'centre': 'x', 'slope': 1.0}, {'centre': math.nan, 'slope': 1.0}):
        with pytest.raises(MapError, match='novelty gate'):
            NoveltyGate.from_meta(bad)


@pytest.fixture(scope='module')
def fitted_corridor(corridor_map):
    """The corridor map fitted on 20 of its self-queries, with its novelty gate."""
    ref_map = dataclasses.replace(corridor_map, meta={})
    fitted = map_fit.fit_map(ref_map, RADIUS, max_queries=20, novelty_gate=True)
    return ref_map, fitted


def similarity_of(result):
    """Global similarity of the answer (the calibration's 'similarity' feature)."""
    return 1.0 - 0.5 * result.candidates[0].global_distance


def test_gate_in_the_localizer_confidence(fitted_corridor, corridor_model,
                                          corridor_query_descriptors):
    """Gated = ungated x gate(similarity of the answer); blank and noise images lose
    confidence, real query frames of the mapped corridor keep it (measured floors)."""
    ref_map, fitted = fitted_corridor
    assert fitted['novelty_gate'] is not None
    gated = Localizer(ref_map, corridor_model)
    plain = Localizer(ref_map, corridor_model, novelty_gate=False)
    gate = gated.novelty_gate
    assert gate.to_meta() == fitted['novelty_gate'] and plain.novelty_gate is None
    h, w = corridor_model.config.image_height, corridor_model.config.image_width
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for image in (np.zeros((h, w, 3), np.uint8), np.full((h, w, 3), 255, np.uint8), noise):
        a, b = gated.localize(image), plain.localize(image)
        assert a.best_index == b.best_index
        factor = gate.probability([similarity_of(a)])[0]
        assert a.confidence == pytest.approx(b.confidence * factor, rel=1e-9)
        assert a.confidence < b.confidence and factor < 0.9
    g, patches = corridor_query_descriptors
    ratios = []
    for k in range(0, len(g), 5):
        frame = (g[k], [p[k] for p in patches])
        a, b = gated.localize_descriptors(*frame), plain.localize_descriptors(*frame)
        assert a.best_index == b.best_index
        ratios.append(a.confidence / b.confidence)
    # measured: the queries' answers are far more similar to the map than the gate's centre
    assert np.median(ratios) > 0.99 and min(ratios) > 0.9


def test_saved_map_round_trips_the_gate(fitted_corridor, tmp_path):
    ref_map, fitted = fitted_corridor
    loaded = ReferenceMap.load(ref_map.save(tmp_path / 'map'))
    assert loaded.meta['localization']['novelty_gate'] == fitted['novelty_gate']
    assert Localizer(loaded, None).novelty_gate == NoveltyGate.from_meta(
        fitted['novelty_gate'])
    assert 'novelty gate from the map (0.5 at global similarity' in fit_summary(loaded.meta)


def test_an_old_fit_without_a_gate_behaves_as_before(fitted_corridor, corridor_query_descriptors,
                                                     tmp_path):
    """A fit saved before the gate (no 'novelty_gate') loads, and its confidence is the
    calibration's alone, as with the gate switched off."""
    ref_map, fitted = fitted_corridor
    old = {k: v for k, v in fitted.items() if k != 'novelty_gate'}
    path = dataclasses.replace(ref_map, meta={**ref_map.meta, 'localization': old}).save(
        tmp_path / 'old')
    loaded = ReferenceMap.load(path)
    assert 'novelty_gate' not in loaded.meta['localization']
    before = Localizer(loaded, None)
    assert before.novelty_gate is None
    assert 'novelty gate' not in fit_summary(loaded.meta)
    plain = Localizer(ref_map, None, novelty_gate=False)
    g, patches = corridor_query_descriptors
    for k in (0, 40, 100):
        frame = (g[k], [p[k] for p in patches])
        assert before.localize_descriptors(*frame).confidence == \
            plain.localize_descriptors(*frame).confidence
    # the heuristic confidence is never gated
    assert Localizer(ref_map, None, calibration='heuristic').novelty_gate is None


def test_distinct_feature_against_a_brute_force(corridor_map, corridor_query_descriptors):
    """``distinct`` = the answer's similarity - s_r of the answer (loops over pairs, 0 where
    no reference lies beyond 2 radii); a fit on it is applied by the localizer as by hand."""
    from fitted_corridor import query_tables
    g = np.asarray(corridor_map.global_desc, np.float64)
    positions = corridor_map.positions()
    near_all = positions.copy()
    near_all[:5] = positions[0]                        # 5 references with no far neighbour
    for pos, far_ones in ((positions, N_BRUTE), (near_all[:5], 0)):
        hubs = calibration.hub_similarity(g[:len(pos)], pos, RADIUS)
        for r in range(len(pos)):
            far = [1.0 - float(np.sum((g[r] - g[q]) ** 2)) / 2.0 for q in range(len(pos))
                   if np.linalg.norm(pos[r] - pos[q]) > GATE_EXCLUSION * RADIUS]
            assert hubs[r] == pytest.approx(max(far) if far else 0.0, abs=1e-9)
        assert int(np.count_nonzero(hubs)) == far_ones
    hubs = calibration.hub_similarity(g, positions, RADIUS)
    fitted = dataclasses.replace(corridor_map, meta={})
    map_fit.fit_map(fitted, place_radius=RADIUS, features=('agreement', 'distinct'))
    localizer = Localizer(fitted, None)
    cal = localizer.calibration
    assert cal.features == ('agreement', 'distinct')
    col = calibration.ALL_FEATURES.index('distinct')
    for table in query_tables(corridor_map, corridor_query_descriptors)[::10]:
        answer = localizer.answer(table)
        x = calibration.confidence_features(table, localizer.fusion.scores(table), positions,
                                            RADIUS, localizer.fusion.temperature, hubs)
        sim = 1.0 - table.global_distance[list(table.indices).index(answer.best_index)] / 2.0
        assert x[col] == pytest.approx(sim - hubs[answer.best_index], abs=1e-9)
        agree = float(np.linalg.norm(positions[table.indices[np.argmin(table.global_distance)]]
                                     - positions[answer.best_index]) <= RADIUS)
        z = (np.array([agree, x[col]]) - cal.mean) / cal.scale
        assert answer.confidence == pytest.approx(
            1.0 / (1.0 + math.exp(-(z @ cal.coef + cal.intercept))), abs=1e-9)
    # without the map's s_r the feature is undefined, not silently 0
    assert math.isnan(calibration.confidence_features(
        table, localizer.fusion.scores(table), positions, RADIUS, 1.0)[col])
