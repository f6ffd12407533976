# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Fitting a map on itself: spacing, exclusion levels, self-queries, stored parameters."""

import json

import numpy as np
import pytest

from patch_netvlad_ros.core import map_fit
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.database import Reference, ReferenceMap
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.localizer import Localizer


def line_map(n, spacing, seed=0):
    """N references every ``spacing`` m along x, random unit descriptors (storage preset)."""
    cfg = get_config('storage', image_height=96, image_width=128, top_k=8)
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, cfg.num_pcs)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = rng.standard_normal((n, cfg.num_patches(0), cfg.num_pcs))
    p /= np.linalg.norm(p, axis=2, keepdims=True)
    refs = [Reference(id=f'r{i}', stamp=float(i), x=spacing * i) for i in range(n)]
    return ReferenceMap.empty(cfg, 'digest').extended(refs, g, [p.astype(np.float16)])


def test_spacing_and_exclusion_levels(rng):
    positions = rng.uniform(0, 50, (40, 3))
    d = np.linalg.norm(positions[:, None] - positions[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert map_fit.reference_spacing(positions) == pytest.approx(np.median(d.min(1)), rel=1e-5)
    line = np.c_[np.arange(10) * 1.5, np.zeros((10, 2))]
    assert map_fit.exclusion_levels(line, 5.0) == pytest.approx([0.0, 1.5, 3.0])
    assert map_fit.exclusion_levels(line, 2.0) == pytest.approx([0.0, 1.5])
    assert map_fit.exclusion_levels(line, 1.0) == [0.0]
    assert map_fit.exclusion_levels(line[:1], 5.0) == [0.0]


def test_self_queries_leave_out_the_neighbourhood():
    ref_map = line_map(12, 1.5)
    localizer = Localizer(ref_map, None, place_radius=4.0, fusion='patches')
    tables, positives = map_fit.self_queries(localizer, [0, 5], exclusion=1.5)
    assert not set(tables[0].indices) & {0, 1} and not set(tables[1].indices) & {4, 5, 6}
    assert len(tables[1]) == 8                                  # top_k still filled
    assert positives[0].tolist() == [2] and positives[1].tolist() == [3, 7]
    # the reference's own descriptors query the rest of the map
    direct, _, _, _ = localizer.candidate_table(ref_map.global_desc[5], [
        np.asarray(ref_map.patches[0][5], np.float32)], exclude=[4, 5, 6])
    np.testing.assert_array_equal(direct.indices, tables[1].indices)
    np.testing.assert_allclose(direct.patch_fused, tables[1].patch_fused)


def test_fit_map_stores_json_parameters_the_localizer_uses():
    ref_map = line_map(16, 1.0, seed=1)
    fitted = map_fit.fit_map(ref_map, place_radius=2.0, max_queries=10)
    assert ref_map.meta['localization'] is fitted
    assert json.loads(json.dumps(fitted)) == fitted
    assert fitted['queries'] == 10 and fitted['place_radius'] == 2.0
    # random descriptors: both rankers err from the start, the first level is used
    assert fitted['fusion_level'] == 0 and len(fitted['levels']) == 1
    localizer = Localizer(ref_map, None)
    assert localizer.place_radius == 2.0
    assert localizer.fusion.to_meta() == fitted['fusion']
    assert localizer.calibration.to_meta() == fitted['calibration']
    again = map_fit.fit_map(line_map(16, 1.0, seed=1), place_radius=2.0, max_queries=10)
    assert again == fitted                                      # deterministic


def test_fit_map_refuses_maps_it_cannot_learn_from():
    with pytest.raises(MapError, match='too small'):
        map_fit.fit_map(line_map(2, 1.0))
    with pytest.raises(MapError, match='raise the radius'):
        map_fit.fit_map(line_map(6, 10.0), place_radius=2.0)
    assert map_fit.sample_queries(5, 10).tolist() == list(range(5))
    sample = map_fit.sample_queries(100, 10, seed=3)
    assert len(set(sample.tolist())) == 10 and sample.tolist() == sorted(sample.tolist())
