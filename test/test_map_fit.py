# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Fitting a map on itself: spacing, exclusion levels, self-queries, simulated second
visits of real corridor images, stored parameters, maps built from drives and refitted."""

import dataclasses
import json

from bag_writers import write_bag
import numpy as np
import pytest

from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.drives.drives import read_bag_drive
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps import map_fit
from patch_netvlad_ros.core.maps.database import Reference, ReferenceMap
from patch_netvlad_ros.core.maps.extraction import describe_batches
from patch_netvlad_ros.core.maps.map_building import build_map, fit_summary, refit_map
from patch_netvlad_ros.core.training.augment import augment_image

#: The corridor at the demo's size (rows, columns).
SIZE = (240, 320)


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


def test_second_visits_are_augmented_references_matched_without_themselves(
        corridor_model, corridor_map, corridor_images):
    """A second visit: the reference's augmented image, described and matched without it."""
    localizer = Localizer(corridor_map, corridor_model, 2.0, fusion='patches')
    queries = [3, 50, 109]
    images = corridor_images[0]
    tables, positives = map_fit.second_visits(localizer, corridor_model, images, queries)
    n = len(corridor_map)
    for i, table, pos in zip(queries, tables, positives):
        view = augment_image(images[i], 0, map_fit.SECOND_VISIT_COPY, i)
        assert view.shape == images[i].shape and np.abs(
            view.astype(int) - images[i].astype(int)).mean() > 10         # really changed
        desc = next(describe_batches(corridor_model, [view]))
        direct = localizer.candidate_table(desc.global_desc[0],
                                           [p[0] for p in desc.patches], exclude=[i])[0]
        np.testing.assert_array_equal(table.indices, direct.indices)
        np.testing.assert_allclose(table.patch_fused, direct.patch_fused, rtol=1e-5)
        assert i not in table.indices.tolist()
        # references 1 m apart: the others within 2 m are the place's right answers
        assert pos.tolist() == [j for j in range(i - 2, i + 3) if 0 <= j < n and j != i]
        # measured: retrieval finds the place of every simulated visit of the corridor
        assert table.indices[int(np.argmin(table.global_distance))] in pos


def test_fit_map_with_second_visits(corridor_model, corridor_map, corridor_images):
    """Second visits add calibration rows, not fusion weights; stored, deterministic."""
    def fit(**kwargs):
        ref_map = dataclasses.replace(corridor_map, meta={})
        return ref_map, map_fit.fit_map(ref_map, 2.0, max_queries=20, **kwargs)

    images = {i: corridor_images[0][i] for i in range(0, 111, 10)}         # 12 of 111
    _, alone = fit()
    ref_map, fitted = fit(images=images, model=corridor_model, max_second_visits=6)
    assert fitted['version'] == map_fit.FIT_VERSION == 3
    assert json.loads(json.dumps(fitted)) == fitted
    assert fitted['fusion'] == alone['fusion'] and fitted['levels'] == alone['levels']
    visits = fitted['second_visits']
    assert visits['queries'] == visits['with_positive'] == 6
    levels = fitted['fusion_level'] + 1
    on = fitted['calibration']['fitted_on']
    assert on['rows'] == 20 * levels + 6
    assert on['description'].endswith('; 6 simulated second visits')
    assert 'second_visits' not in alone
    assert alone['calibration']['fitted_on']['rows'] == 20 * levels
    assert fitted['calibration']['coef'] != alone['calibration']['coef']
    assert Localizer(ref_map, None).calibration.to_meta() == fitted['calibration']
    assert fit(images=images, model=corridor_model, max_second_visits=6)[1] == fitted
    # every image given is used when there are fewer than max_second_visits
    assert fit(images=corridor_images[0][:111], model=corridor_model,
               max_second_visits=0)[1]['calibration'] == alone['calibration']


def test_fit_map_second_visit_errors(corridor_model, corridor_map, corridor_images):
    ref_map = dataclasses.replace(corridor_map, meta={})
    with pytest.raises(MapError, match='both the images and the model'):
        map_fit.fit_map(ref_map, 2.0, images=corridor_images[0])
    with pytest.raises(MapError, match='3 images for a map of 111'):
        map_fit.fit_map(ref_map, 2.0, max_queries=5, images=corridor_images[0][:3],
                        model=corridor_model)
    outside = {5: corridor_images[0][5], 111: corridor_images[0][0]}
    with pytest.raises(MapError, match=r'references 5\.\.111, the map has 111'):
        map_fit.fit_map(ref_map, 2.0, max_queries=5, images=outside, model=corridor_model)


def test_built_map_learns_from_second_visits_and_refit_says_it_has_none(
        corridor_model, corridor_images, tmp_path):
    """build_map fits with second visits of its drive; a refit from the folder has none."""
    stamps = [10.0 + i for i in range(12)]
    bag = write_bag(tmp_path / 'drive', 'mcap',
                    [(t, 'cam', im) for t, im in zip(stamps, corridor_images[0][:12])],
                    poses=[(t, 'odom', (float(i), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
                           for i, t in enumerate(stamps)])
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE, hold_images=False)
    out = tmp_path / 'map'
    built, _ = build_map(drive, out, config=corridor_model.config,
                         checkpoint=corridor_model.checkpoint_path, place_radius=2.0)
    fitted = built.meta['localization']
    assert fitted['second_visits']['queries'] == 12
    summary = fit_summary(built.meta)
    assert 'on self-queries, exclusion 0 to' in summary
    assert summary.endswith('; 12 simulated second visits, threshold 0.5')
    refit = refit_map(out)
    assert 'second_visits' not in refit.meta['localization']
    assert refit.meta['localization']['fusion'] == fitted['fusion']
    assert 'only (no images: no simulated second visits)' in fit_summary(refit.meta)
    # a version-1 fit (before second visits) loads and is used as stored
    old = {**refit.meta['localization'], 'version': 1}
    v1 = dataclasses.replace(refit, meta={**refit.meta, 'localization': old})
    v1.save(tmp_path / 'v1')
    loaded = ReferenceMap.load(tmp_path / 'v1')
    assert loaded.meta['localization'] == old
    assert Localizer(loaded, None).calibration.to_meta() == old['calibration']
