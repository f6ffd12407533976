# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-build-map and pnv-evaluate on a real drive given in both pose conventions.

The ten shipped KITTI frames (0, 10, ..., 90; 1242x375) with the drive's GNSS/IMU poses,
once z-up (REP 103) and once in camera axes (z forward, y down: KITTI odometry's
convention): map from frames 0, 20, ..., 80, queries 10, 30, ..., 90, the corridor model
at 320 pixels wide (the aspect ratio kept: 320x96). Each map keeps the convention
detected from its trajectory, and both evaluations report the same errors.
"""

import json
import math

import numpy as np
from pose_data import kitti_z_up, to_camera, write_folder_drive
import pytest

from patch_netvlad_ros.cli import build_map, evaluate
from patch_netvlad_ros.core.maps.database import ReferenceMap

MAP_FRAMES = range(0, 91, 20)
QUERY_FRAMES = range(10, 91, 20)


@pytest.fixture(scope='module')
def runs(corridor_model, tmp_path_factory):
    """Build and evaluate in both conventions; {convention: (map folder, report, stderr)}."""
    root = tmp_path_factory.mktemp('conventions')
    stamps, pos, quats, _, _ = kitti_z_up()
    out = {}
    for convention, (p, q) in (('z-up', (pos, quats)), ('camera', to_camera(pos, quats))):
        base = root / convention
        map_csv = write_folder_drive(base / 'map_drive', MAP_FRAMES, p, q, stamps)
        query_csv = write_folder_drive(base / 'query_drive', QUERY_FRAMES, p, q, stamps)
        assert build_map.main([str(base / 'map'), '--images', str(base / 'map_drive'),
                               '--poses', str(map_csv), '--image-size', '320',
                               '--checkpoint', str(corridor_model.checkpoint_path)]) == 0
        assert evaluate.main(['--map', str(base / 'map'), '--images',
                              str(base / 'query_drive'), '--poses', str(query_csv),
                              '--radius', '5', '--output', str(base / 'eval')]) == 0
        out[convention] = (base, json.loads((base / 'eval' / 'report.json').read_text()))
    return out


def test_maps_keep_the_detected_convention_and_the_aspect_ratio(runs):
    for convention, (base, _) in runs.items():
        ref_map = ReferenceMap.load(base / 'map')
        assert [d['pose_convention'] for d in ref_map.meta['drives']] == [convention]
        assert (ref_map.config.image_width, ref_map.config.image_height) == (320, 96)
        # the references keep the poses as recorded
        stamps, pos, quats, _, _ = kitti_z_up()
        want = pos if convention == 'z-up' else to_camera(pos, quats)[0]
        np.testing.assert_allclose(ref_map.positions(), want[list(MAP_FRAMES)], atol=1e-9)


def test_both_conventions_give_the_same_evaluation(runs):
    (_, up), (_, cam) = runs['z-up'], runs['camera']
    assert up['pose_convention'] == 'z-up' and cam['pose_convention'] == 'camera'
    assert cam['pose_convention_reason'] == 'kept by the map'
    assert cam['recall'] == up['recall']
    _, pos, _, yaw, _ = kitti_z_up()
    for a, b, frame in zip(up['per_query'], cam['per_query'], QUERY_FRAMES):
        assert a['best'] == b['best']
        assert a['error_m'] == pytest.approx(b['error_m'], abs=1e-6)
        assert a['heading_error_deg'] == pytest.approx(b['heading_error_deg'], abs=1e-6)
        # by hand: the chosen reference's GNSS position and OXTS yaw
        ref = MAP_FRAMES[a['best']]
        assert a['error_m'] == pytest.approx(np.linalg.norm(pos[frame] - pos[ref]), abs=1e-6)
        diff = math.degrees(abs(math.remainder(yaw[frame] - yaw[ref], 2 * math.pi)))
        assert a['heading_error_deg'] == pytest.approx(diff, abs=1e-6)
    for name in ('median', 'mean', 'max'):
        assert cam['heading_error_deg'][name] == pytest.approx(up['heading_error_deg'][name])


def test_an_option_that_contradicts_the_map_is_refused(runs, capsys):
    base, _ = runs['camera']
    status = evaluate.main(['--map', str(base / 'map'), '--images', str(base / 'query_drive'),
                            '--poses', str(base / 'query_drive' / 'poses.csv'),
                            '--pose-convention', 'z-up', '--output', str(base / 'wrong')])
    err = capsys.readouterr().err.strip().split('\n')
    assert status == 2 and not (base / 'wrong').exists()
    assert err[-1].startswith('error: --pose-convention z-up: map ')
    assert 'keeps camera poses' in err[-1]


def test_appending_keeps_the_maps_convention(runs, capsys):
    """--append reads the new drive in the map's convention; a contradicting one is refused."""
    base, _ = runs['camera']
    before = ReferenceMap.load(base / 'map').meta['drives']
    status = build_map.main([str(base / 'map'), '--images', str(base / 'query_drive'),
                             '--poses', str(base / 'query_drive' / 'poses.csv'), '--append',
                             '--pose-convention', 'z-up'])
    err = capsys.readouterr().err.strip().split('\n')
    assert status == 2
    assert err[-1].startswith('error: --pose-convention z-up: the map at ')
    assert 'keeps camera poses' in err[-1]
    assert ReferenceMap.load(base / 'map').meta['drives'] == before
