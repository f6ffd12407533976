# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Score fusion: hand-computed scores, the fit against brute force, recall on real images.

Measured on the corridor (speed preset, 320x240, bootstrapped model, fit on the map's
self-queries at place radius 2 m: w_g 0.725): query R@1 / R@5 global 0.865 / 0.964,
patches alone 0.559 / 0.910, fused 0.928 / 0.973.
"""

import json

from fitted_corridor import fitted_map, PLACE_RADIUS, query_tables
import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.evaluation.evaluation import recall_at_n
from patch_netvlad_ros.core.localization import fusion as fusion_mod
from patch_netvlad_ros.core.localization.fusion import CandidateTable, fit_fusion, Fusion
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.matching.rerank import fuse_scores, rerank


def standardise(x):
    x = np.asarray(x, np.float64)
    return (x - x.mean()) / x.std()


def random_table(rng, c=9, scales=2, indices=None):
    raw = rng.random((c, scales))
    weights = np.full(scales, 1.0 / scales)
    return CandidateTable(np.arange(c) if indices is None else np.asarray(indices),
                          np.sort(rng.random(c) * 2.0), raw, raw.mean(1),
                          fuse_scores(torch.from_numpy(raw), weights).numpy())


def test_scores_match_hand_computation(rng):
    table = random_table(rng)
    w = 0.3
    by_hand = standardise(w * standardise(-table.global_distance)
                          + (1 - w) * table.patch_fused)
    np.testing.assert_allclose(Fusion('global+patches', w, 1 - w).scores(table), by_hand,
                               atol=1e-12)
    np.testing.assert_array_equal(fusion_mod.AUTHORS.scores(table), table.patch_fused)
    global_order = np.argsort(-fusion_mod.RETRIEVAL.scores(table), kind='stable')
    np.testing.assert_array_equal(global_order, np.argsort(table.global_distance))
    probs = Fusion('global', temperature=2.0).probabilities(np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(probs, np.exp([0, 2, 4]) / np.exp([0, 2, 4]).sum())


def test_meta_round_trip_and_bad_parameters():
    fused = Fusion('global+patches', 0.25, 0.75, 1.5, {'queries': 3})
    assert Fusion.from_meta(json.loads(json.dumps(fused.to_meta()))) == fused
    with pytest.raises(MapError, match='malformed'):
        Fusion.from_meta({'method': 'global+patches'})
    with pytest.raises(MapError, match='unknown fusion'):
        Fusion('sum')
    with pytest.raises(MapError, match='non-negative'):
        Fusion('global+patches', -0.5, 1.5)
    with pytest.raises(MapError, match='temperature'):
        Fusion('global+patches', 0.5, 0.5, 0.0)


def brute_force_fit(tables, positives):
    """The weight and temperature fit_fusion should pick, computed the long way."""
    def fused(t, w):
        return standardise(w * standardise(-t.global_distance) + (1 - w) * t.patch_fused)

    def hits(w):
        return sum(np.isin(t.indices[np.argmax(fused(t, w))], p)
                   for t, p in zip(tables, positives))

    floor = max(hits(0.0), hits(1.0))
    best_w, best_margin = None, -np.inf
    for w in fusion_mod.WEIGHT_GRID:
        margins = []
        for t, p in zip(tables, positives):
            f, pos = fused(t, w), np.isin(t.indices, p)
            margins.append(f[pos].max() - f[~pos].max())
        if hits(w) >= floor and np.mean(margins) > best_margin + 1e-12:
            best_w, best_margin = w, np.mean(margins)
    best_t, best_ll = None, -np.inf
    for temp in fusion_mod.TEMPERATURE_GRID:
        ll = []
        for t, p in zip(tables, positives):
            z = temp * fused(t, best_w)
            pos = np.isin(t.indices, p)
            ll.append(np.log(np.exp(z[pos]).sum() / np.exp(z).sum()))
        if np.mean(ll) > best_ll + 1e-12:
            best_t, best_ll = temp, np.mean(ll)
    return best_w, best_t


def test_fit_matches_brute_force(rng):
    # the right candidate is second by global distance and second by patches, a wrong one
    # first by each: only a weight between 0 and 1 puts it first
    tables, positives = [], []
    for _ in range(24):
        t = random_table(rng, c=12)
        right, by_global, by_patches = rng.choice(12, 3, replace=False)
        d = np.sort(t.global_distance)
        t.global_distance[[by_global, right]] = d[0] - 0.2, d[0] - 0.1 * rng.random()
        t.patch_fused[[by_patches, right]] = (t.patch_fused.max() + 2.0,
                                              t.patch_fused.max() + rng.random())
        tables.append(t)
        positives.append(np.array([right]))
    fitted = fit_fusion(tables, positives, 'synthetic')
    w, temp = brute_force_fit(tables, positives)
    assert fitted.method == 'global+patches'
    assert fitted.global_weight == pytest.approx(w) and fitted.patch_weight == pytest.approx(
        1 - w)
    assert fitted.temperature == pytest.approx(temp)
    assert 0 < w < 1                          # both rankers carry information here
    assert fitted.fitted_on['recall_at_1'] >= max(fitted.fitted_on['recall_at_1_global'],
                                                  fitted.fitted_on['recall_at_1_patches'])


def test_fit_needs_a_right_answer(rng):
    tables = [random_table(rng) for _ in range(3)]
    with pytest.raises(MapError, match='no self-query has a right answer'):
        fit_fusion(tables, [np.array([99])] * 3)


def test_fused_recall_is_not_worse_than_retrieval(corridor_map, corridor_query_descriptors,
                                                  corridor_set):
    fitted = fitted_map(corridor_map)
    tables = query_tables(corridor_map, corridor_query_descriptors)
    recalls = {}
    for name in ('global', 'patches', None):
        localizer = Localizer(fitted, None, fusion=name)
        ranked = [localizer.answer(t).retrieval_order for t in tables]
        recalls[name or 'fused'] = recall_at_n(ranked, corridor_set.positives, (1, 5))
    meta = fitted.meta['localization']['fusion']
    print(f"corridor w_g {meta['global_weight']}, temperature {meta['temperature']}: "
          f'{recalls}')
    assert recalls['fused'][1] >= recalls['global'][1]
    assert recalls['fused'][1] >= 0.91 and recalls['fused'][5] >= 0.96
    assert recalls['global'][1] >= 0.84 and recalls['patches'][1] >= 0.5


def test_authors_order_stays_available(corridor_map, corridor_query_descriptors):
    fitted = fitted_map(corridor_map)
    g, patches = corridor_query_descriptors
    unfitted = Localizer(corridor_map, None)
    assert unfitted.fusion == fusion_mod.AUTHORS and unfitted.calibration is None
    authors = Localizer(fitted, None, fusion='patches')
    default = Localizer(fitted, None)
    assert default.fusion.method == 'global+patches' and authors.fusion == fusion_mod.AUTHORS
    for i in (0, 37, 90):
        q = [p[i] for p in patches]
        ours = authors.localize_descriptors(g[i], q)
        rows = ours.global_order
        direct = rerank(q, fitted.patches, rows, authors.config)
        assert ours.retrieval_order == [rows[j] for j in direct.order]
        assert ours.retrieval_order == unfitted.localize_descriptors(g[i], q).retrieval_order


def test_fit_is_stored_in_the_map_and_survives_save(corridor_map, corridor_query_descriptors,
                                                    tmp_path):
    fitted = fitted_map(corridor_map)
    stored = fitted.meta['localization']
    assert stored['place_radius'] == PLACE_RADIUS
    # adjacent keyframes 1 m apart: the reference alone left out teaches nothing, so the
    # fusion was fitted with the neighbours within one spacing (1 m) left out too
    assert [lv['exclusion_m'] for lv in stored['levels']] == [0.0, 1.0]
    assert stored['levels'][0]['recall_at_1_global'] >= 0.95 and stored['fusion_level'] == 1
    loaded = ReferenceMap.load(fitted.save(tmp_path / 'map'))
    assert json.loads(json.dumps(loaded.meta['localization'])) == json.loads(
        json.dumps(stored))
    before, after = Localizer(fitted, None), Localizer(loaded, None)
    assert after.fusion == before.fusion and after.calibration == before.calibration
    assert after.place_radius == PLACE_RADIUS
    g, patches = corridor_query_descriptors
    for i in (3, 55):
        a = before.localize_descriptors(g[i], [p[i] for p in patches])
        b = after.localize_descriptors(g[i], [p[i] for p in patches])
        assert a.retrieval_order == b.retrieval_order
        assert a.confidence == pytest.approx(b.confidence)
