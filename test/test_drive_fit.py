# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Fitting a map on a labelled second drive: the corridor queries (another traversal,
frame i at x = i m like reference i) against the corridor map."""

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest

from patch_netvlad_ros.cli import map_tool
from patch_netvlad_ros.core.drives.drives import Drive, DriveFrame
from patch_netvlad_ros.core.drives.poses import PoseSample
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.localization.calibration import (ALL_FEATURES, confidence_features,
                                                             fit_novelty_gate)
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps import drive_fit
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.map_building import fit_summary, map_model_path
from patch_netvlad_ros.core.maps.map_fit import calibration_rows

RADIUS = 2.0


def descriptors_of(query_descriptors, frames):
    """(global [Dp], patches per scale [P, Dp]) of the given query frames."""
    g, patches = query_descriptors
    return [(g[k], [p[k] for p in patches]) for k in frames]


def positions_at(frames):
    """Poses of corridor query frames: frame i at x = i m (the map's references too)."""
    return np.array([[float(k), 0.0, 0.0] for k in frames])


def unfitted(ref_map: ReferenceMap, n: int = None) -> ReferenceMap:
    """The first n references of a map (all by default) without a fit."""
    n = len(ref_map) if n is None else n
    return ReferenceMap(ref_map.config, ref_map.model_digest, ref_map.references[:n],
                        np.asarray(ref_map.global_desc[:n]),
                        [np.asarray(p[:n]) for p in ref_map.patches], {})


def test_drive_rows_against_brute_force(corridor_map, corridor_query_descriptors):
    """In-map candidates are the nearest global descriptors of the whole map; not-in-map
    candidates those beyond 2 place radii of the frame's pose; labels = answer within
    place_radius of the pose, computed by hand."""
    frames = [3, 40, 77, 109]
    localizer = Localizer(corridor_map, None, RADIUS, fusion='patches')
    rows = drive_fit.drive_rows(localizer, descriptors_of(corridor_query_descriptors, frames),
                                positions_at(frames))
    assert rows.exclusion == drive_fit.NOT_IN_MAP_EXCLUSION * RADIUS == 4.0
    assert rows.not_in_map_frames == [0, 1, 2, 3]
    refs = np.asarray(corridor_map.global_desc, np.float64)
    xs = np.arange(len(corridor_map), dtype=np.float64)          # reference i at x = i
    k = corridor_map.config.top_k
    for j, frame in enumerate(frames):
        q = corridor_query_descriptors[0][frame].numpy().astype(np.float64)
        d2 = ((refs - q) ** 2).sum(1)
        for table, allowed in ((rows.in_map[j], np.ones(len(xs), bool)),
                               (rows.not_in_map[j], np.abs(xs - frame) > 4.0)):
            ids = np.flatnonzero(allowed)
            expected = ids[np.argsort(d2[ids], kind='stable')[:k]]
            assert sorted(table.indices.tolist()) == sorted(expected.tolist())
            np.testing.assert_allclose(table.global_distance, d2[table.indices], atol=1e-4)
        assert rows.positives[j].tolist() == [i for i in range(frame - 2, frame + 3)
                                              if 0 <= i < len(xs)]
    fusion = localizer.fusion
    x_in, y_in = calibration_rows(rows.in_map, rows.positives, fusion, localizer.positions,
                                  RADIUS)
    none = [np.zeros(0, np.int64)] * len(frames)
    x_out, y_out = calibration_rows(rows.not_in_map, none, fusion, localizer.positions, RADIUS)
    for j, frame in enumerate(frames):
        for table, label, x in ((rows.in_map[j], y_in[j], x_in[j]),
                                (rows.not_in_map[j], y_out[j], x_out[j])):
            scores = fusion.scores(table)
            answer = int(table.indices[int(np.argmax(scores))])
            assert label == (abs(xs[answer] - frame) <= RADIUS)
            np.testing.assert_allclose(x, confidence_features(
                table, scores, localizer.positions, RADIUS, fusion.temperature))
    assert not y_out.any()
    # measured on these frames: the patch order finds some places and misses others
    assert y_in.any() and not y_in.all()


def test_drive_fit_round_trips_and_the_localizer_uses_it(corridor_map,
                                                         corridor_query_descriptors,
                                                         tmp_path):
    """The fit on 24 frames (the default: in-map rows and the stricter novelty gate) stores a
    JSON-able drive summary, survives a saved map folder, and the loaded map's localizer
    answers with that fusion, calibration and gate."""
    frames = list(range(24))
    ref_map = unfitted(corridor_map)
    fitted = drive_fit.fit_drive_descriptors(
        ref_map, descriptors_of(corridor_query_descriptors, frames), positions_at(frames),
        'corridor-query', RADIUS)
    assert ref_map.meta['localization'] is fitted
    drive = fitted['drive']
    assert drive['name'] == 'corridor-query' and drive['frames'] == 24
    # the not-in-map rows fit a gate, not the calibration
    assert drive['with_positive'] == 24 and drive['not_in_map_rows'] == 0
    assert set(fitted['novelty_gate']['fitted_on']['stricter_of']) == {'map', 'drive'}
    on = fitted['calibration']['fitted_on']
    assert on['rows'] == 24 and 'drive corridor-query (24 frames)' in on['description']
    assert on['right'] == round(24 * drive['recall_at_1_fused'])
    assert drive['recall_at_1_fused'] >= max(drive['recall_at_1_global'],
                                             drive['recall_at_1_patches'])
    assert 'drive corridor-query R@1' in fit_summary(ref_map.meta)
    assert 'no simulated second visits' not in fit_summary(ref_map.meta)
    path = ref_map.save(tmp_path / 'map')
    loaded = ReferenceMap.load(path)
    assert loaded.meta['localization'] == json.loads(json.dumps(fitted))
    localizer = Localizer(loaded, None)
    assert localizer.place_radius == RADIUS
    assert localizer.fusion.to_meta() == fitted['fusion']
    assert localizer.calibration.to_meta() == fitted['calibration']
    (g, patches), = descriptors_of(corridor_query_descriptors, [80])    # not fitted on
    result = localizer.localize_descriptors(g, patches)
    table = localizer.candidate_table(g, patches)[0]
    x = confidence_features(table, localizer.fusion.scores(table), localizer.positions, RADIUS,
                            localizer.fusion.temperature)
    cal = fitted['calibration']
    cols = [ALL_FEATURES.index(f) for f in cal['features']]
    z = (x[cols] - np.array(cal['mean'])) / np.array(cal['scale'])
    by_hand = 1.0 / (1.0 + np.exp(-(z @ np.array(cal['coef']) + cal['intercept'])))
    gate = fitted['novelty_gate']
    by_hand /= 1.0 + np.exp(-gate['slope'] * (x[ALL_FEATURES.index('similarity')]
                                              - gate['centre']))
    assert result.confidence == pytest.approx(by_hand, rel=1e-9)


def test_drive_fit_with_the_novelty_gate_uses_in_map_rows_only(corridor_map,
                                                               corridor_query_descriptors):
    """With a gate (the default) the calibration is fitted on the in-map rows alone;
    gate_from='map' takes the map's gate; without a gate the not-in-map rows join the
    calibration at weight NOT_IN_MAP_WEIGHT."""
    frames = list(range(0, 24, 2))
    args = (descriptors_of(corridor_query_descriptors, frames), positions_at(frames),
            'corridor-query', RADIUS)
    assert drive_fit.DRIVE_NOVELTY_GATE is True and drive_fit.DRIVE_GATE_FROM == 'stricter'
    plain = drive_fit.fit_drive_descriptors(unfitted(corridor_map), *args, novelty_gate=False)
    assert 'novelty_gate' not in plain and plain['drive']['not_in_map_rows'] == 12
    assert plain['drive']['not_in_map_weight'] == drive_fit.NOT_IN_MAP_WEIGHT
    gated_map = unfitted(corridor_map)
    gated = drive_fit.fit_drive_descriptors(gated_map, *args, gate_from='map')
    assert gated['drive']['not_in_map_rows'] == 0
    assert gated['drive']['not_in_map_weight'] == 0.0
    on = gated['calibration']['fitted_on']
    assert on['rows'] == 12 and 'not-in-map' not in on['description']
    assert gated['fusion'] == plain['fusion']
    expected = fit_novelty_gate(np.asarray(corridor_map.global_desc),
                                corridor_map.positions(), RADIUS)
    assert gated['novelty_gate'] == expected.to_meta()
    assert Localizer(gated_map, None).novelty_gate == expected


def test_drive_gate_is_the_gate_rule_on_the_not_in_map_answers(corridor_map,
                                                               corridor_query_descriptors):
    """gate_from='drive': centre = 5th percentile and 0.95 at the median of the global
    similarity of each not-in-map answer (best fused candidate without the references
    within 2 radii), computed by hand; the calibration as with the map's gate; the
    default takes the stricter of the drive's and the map's gate."""
    frames = list(range(0, 24, 2))
    args = (descriptors_of(corridor_query_descriptors, frames), positions_at(frames),
            'corridor-query', RADIUS)
    by_map = drive_fit.fit_drive_descriptors(unfitted(corridor_map), *args, gate_from='map')
    by_default = drive_fit.fit_drive_descriptors(unfitted(corridor_map), *args)
    gated_map = unfitted(corridor_map)
    localizer = Localizer(gated_map, None, RADIUS, fusion='patches', calibration='heuristic')
    rows = drive_fit.drive_rows(localizer, args[0], args[1])
    fitted = drive_fit.fit_drive_rows(gated_map, rows, RADIUS, 'corridor-query',
                                      novelty_gate=True, gate_from='drive')
    assert fitted['calibration'] == by_map['calibration'] == by_default['calibration']
    assert fitted['fusion'] == by_default['fusion']
    w_g, w_p = fitted['fusion']['global_weight'], fitted['fusion']['patch_weight']
    sims = []
    for table in rows.not_in_map:
        # fused = w_g z(-distance) + w_p patch score, by hand (the outer z-score of the
        # fusion module keeps the argmax)
        g = -np.asarray(table.global_distance, np.float64)
        fused = w_g * (g - g.mean()) / g.std() + w_p * np.asarray(table.patch_fused)
        sims.append(1.0 - 0.5 * float(table.global_distance[int(np.argmax(fused))]))
    centre, median = np.quantile(sims, 0.05), np.median(sims)
    gate = fitted['novelty_gate']
    assert len(sims) == 12 and gate['fitted_on']['not_in_map_rows'] == 12
    assert gate['centre'] == pytest.approx(centre, abs=1e-12)
    assert gate['slope'] == pytest.approx(np.log(19.0) / (median - centre), rel=1e-9)
    assert gate['fitted_on']['drive'] == 'corridor-query'
    # the localizer applies it; the summary names its source
    assert Localizer(gated_map, None).novelty_gate.centre == gate['centre']
    assert 'novelty gate from drive corridor-query' in fit_summary(gated_map.meta)
    # the default: the stricter of the drive's and the map's gate (higher 0.5 point)
    stricter = max(gate, by_map['novelty_gate'], key=lambda g: g['centre'])
    assert by_default['novelty_gate']['centre'] == stricter['centre']
    assert by_default['novelty_gate']['slope'] == stricter['slope']
    assert by_default['novelty_gate']['fitted_on']['stricter_of'] == {
        'drive': gate['centre'], 'map': by_map['novelty_gate']['centre']}
    with pytest.raises(MapError, match='gate_from'):
        drive_fit.fit_drive_rows(gated_map, rows, RADIUS, 'x', novelty_gate=True,
                                 gate_from='elsewhere')


def test_a_drive_far_from_the_map_is_refused_before_describing(corridor_map):
    """No frame within place_radius of a reference: an error naming what to do (the model
    is None: describing would fail otherwise)."""
    pose = PoseSample(0.0, 500.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    frame = DriveFrame(0, 0.0, 'cam', 'x.png', pose, np.zeros((240, 320, 3), np.uint8))
    far = Drive('elsewhere', [frame, dataclasses.replace(frame, index=1)])
    with pytest.raises(MapError, match=r'none of its 2 frames is within the place radius '
                       r'\(2 m\) of a reference \(nearest 390 m\).*map.s frame'):
        drive_fit.fit_drive(unfitted(corridor_map), far, None, RADIUS)
    with pytest.raises(MapError, match='below the place radius'):
        drive_fit.drive_rows(Localizer(corridor_map, None, RADIUS), [], np.zeros((0, 3)), 1.0)


@pytest.fixture
def small_map(corridor_map, corridor_model, tmp_path):
    """The first 40 corridor references saved without a fit, with their model."""
    path = unfitted(corridor_map, 40).save(tmp_path / 'map')
    map_model_path(path).symlink_to(corridor_model.checkpoint_path)
    return path


def query_folder(corridor_set, tmp_path, frames, offset=0.0):
    """A folder of corridor query images with a poses CSV (frame i at x = i + offset)."""
    folder = tmp_path / f'drive{offset:g}'
    folder.mkdir()
    with open(folder / 'poses.csv', 'w', newline='') as handle:
        out = csv.writer(handle)
        out.writerow(['image', 'stamp', 'x', 'y'])
        for k in frames:
            source = corridor_set.queries[k]
            shutil.copyfile(source, folder / source.name)
            out.writerow([source.name, float(k), float(k) + offset, 0.0])
    return folder


def test_pnv_map_fit_on_a_drive_folder(small_map, corridor_set, tmp_path, capsys):
    """pnv-map fit --images --poses fits on the drive and says so; check shows it."""
    folder = query_folder(corridor_set, tmp_path, range(12))
    assert map_tool.main(['fit', str(small_map), '--images', str(folder), '--poses',
                          str(folder / 'poses.csv'), '--place-radius', '2']) == 0
    out = capsys.readouterr().out
    assert 'fitted for place radius 2 m' in out and f'drive {folder.name} R@1' in out
    fitted = ReferenceMap.load(small_map).meta['localization']
    assert fitted['drive']['frames'] == 12 and fitted['drive']['name'] == folder.name
    assert Localizer(ReferenceMap.load(small_map)).calibration.to_meta() == \
        fitted['calibration']
    assert map_tool.main(['check', str(small_map)]) == 0
    out = capsys.readouterr().out
    assert f'calibrated confidence (agreement, similarity) on drive {folder.name}' in out
    gate = fitted['novelty_gate']['fitted_on']
    source = f'drive {folder.name}' if 'drive' in gate else 'the map'
    assert f'novelty gate from {source}' in out and set(gate['stricter_of']) == {'map', 'drive'}
    # --no-novelty-gate: the not-in-map rows join the calibration instead
    assert map_tool.main(['fit', str(small_map), '--images', str(folder), '--poses',
                          str(folder / 'poses.csv'), '--no-novelty-gate']) == 0
    fitted = ReferenceMap.load(small_map).meta['localization']
    assert 'novelty_gate' not in fitted and fitted['drive']['not_in_map_rows'] == 12


def test_pnv_map_fit_refuses_bad_drives_and_arguments(small_map, corridor_set, tmp_path,
                                                      capsys):
    """Bad arguments: exit 2 with one 'error:' line before any work; a drive far from the
    map: exit 2 naming what to do; the map stays as it was."""
    before = (small_map / 'manifest.json').read_text()
    far = query_folder(corridor_set, tmp_path, range(3), offset=1000.0)
    csv_path = str(far / 'poses.csv')
    for argv, says in (
            (['fit', str(small_map), '--images', str(far)],
             'give --bag, or --images together with --poses'),
            (['fit', str(small_map), '--poses', csv_path],
             'give --bag, or --images together with --poses'),
            (['fit', str(small_map), '--bag', str(far), '--images', str(far), '--poses',
              csv_path], 'give --bag, or --images together with --poses'),
            (['check', str(small_map), '--images', str(far), '--poses', csv_path],
             'they go with fit, not check'),
            (['fit', str(small_map), '--images', str(tmp_path / 'nope'), '--poses', csv_path],
             'nope'),
            (['fit', str(small_map), '--images', str(far), '--poses', csv_path,
              '--place-radius', '2'], 'none of its 3 frames is within the place radius')):
        assert map_tool.main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith('error:')]
        assert len(lines) == 1 and says in lines[0], err
    assert (small_map / 'manifest.json').read_text() == before
