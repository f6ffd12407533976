# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The map's fit on itself through the command line: pnv-build-map fits (or --no-fit),
pnv-map check shows what a map has, pnv-map fit fits a map built without one in place."""

import json

from bag_writers import write_bag
import numpy as np
import pytest

from patch_netvlad_ros.cli import build_map, map_tool
from patch_netvlad_ros.core.localization.calibration import fit_novelty_gate
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.map_building import map_model_path
from patch_netvlad_ros.core.maps.map_fit import fit_map
from patch_netvlad_ros.core.maps.map_manifest import read_manifest


def first(ref_map: ReferenceMap, n: int) -> ReferenceMap:
    """A map of the first n references of another, without a fit."""
    return ReferenceMap(ref_map.config, ref_map.model_digest, ref_map.references[:n],
                        np.asarray(ref_map.global_desc[:n]),
                        [np.asarray(p[:n]) for p in ref_map.patches], {})


def test_pnv_map_fit_fits_an_old_map_in_place(corridor_map, corridor_model, tmp_path,
                                              capsys):
    """A map without a fit: check says so and how to fit; fit stores exactly fit_map's
    result, keeps descriptors, index and model (all checksummed), and check shows it."""
    small = first(corridor_map, 40)
    path = small.save(tmp_path / 'map')
    map_model_path(path).symlink_to(corridor_model.checkpoint_path)
    assert map_tool.main(['check', str(path)]) == 0
    assert 'not fitted' in capsys.readouterr().out
    assert map_tool.main(['fit', str(path), '--place-radius', '2']) == 0
    out = capsys.readouterr().out
    assert 'fitted for place radius 2 m: fusion global+patches' in out
    loaded = ReferenceMap.load(path)          # every file verified, the model included
    assert 'model.pth.tar' in read_manifest(path)[0]['files']
    expected = fit_map(first(corridor_map, 40), place_radius=2.0)
    assert loaded.meta['localization'] == json.loads(json.dumps(expected))
    np.testing.assert_array_equal(loaded.global_desc, small.global_desc)
    np.testing.assert_array_equal(np.asarray(loaded.patches[0]), np.asarray(small.patches[0]))
    localizer = Localizer(loaded)
    assert localizer.fusion.method == 'global+patches' and localizer.calibration is not None
    assert localizer.place_radius == 2.0
    assert map_tool.main(['check', str(path)]) == 0
    assert 'fitted for place radius 2 m' in capsys.readouterr().out
    assert 'novelty_gate' not in loaded.meta['localization']       # off unless asked for
    # fit again: the radius the map has unless told; --novelty-gate stores the map's gate
    assert map_tool.main(['fit', str(path), '--fit-queries', '20', '--novelty-gate']) == 0
    assert 'novelty gate' in capsys.readouterr().out
    again = ReferenceMap.load(path).meta['localization']
    assert again['place_radius'] == 2.0 and again['queries'] == 20
    gate = fit_novelty_gate(small.global_desc, small.positions(), 2.0)
    assert again['novelty_gate'] == json.loads(json.dumps(gate.to_meta()))
    assert Localizer(ReferenceMap.load(path)).novelty_gate is not None


@pytest.fixture
def five_frame_bag(corridor_images, tmp_path):
    """A bag of five corridor frames 1 m apart with odometry."""
    images = corridor_images[0][:5]
    stamps = [float(i) for i in range(5)]
    odom = [(t, 'odom', (t, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)) for t in stamps]
    return write_bag(tmp_path / 'bag', 'mcap', [(t, 'cam', im) for t, im in zip(stamps, images)],
                     poses=odom)


def test_build_map_fits_unless_told_not_to(five_frame_bag, corridor_model, tmp_path, capsys):
    """pnv-build-map fits for --place-radius and says so; --no-fit leaves the map unfitted
    (and --place-radius with --no-fit is refused before any work)."""
    common = ['--bag', str(five_frame_bag), '--checkpoint', str(corridor_model.checkpoint_path),
              '--image-size', '320x240']
    assert build_map.main([str(tmp_path / 'fitted'), *common, '--place-radius', '2']) == 0
    out = capsys.readouterr().out
    assert 'fitted for place radius 2 m' in out
    fitted = ReferenceMap.load(tmp_path / 'fitted').meta['localization']
    assert fitted['place_radius'] == 2.0 and fitted['fusion']['method'] == 'global+patches'
    assert build_map.main([str(tmp_path / 'plain'), *common, '--no-fit']) == 0
    assert 'not fitted' in capsys.readouterr().out
    assert 'localization' not in ReferenceMap.load(tmp_path / 'plain').meta
    assert build_map.main([str(tmp_path / 'x'), *common, '--no-fit', '--place-radius',
                           '2']) == 2
    assert 'error: --place-radius is what the fit uses' in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()


def test_fit_queries_belong_to_the_fit_on_the_map_itself(tmp_path, capsys):
    """--fit-queries with a drive would be ignored: refused before any work, naming why;
    the CLI's default (kept out of the torch-free argument module) is the core's."""
    from patch_netvlad_ros.cli.build_map import FIT_QUERIES
    from patch_netvlad_ros.core.maps.drive_fit import MAX_DRIVE_FRAMES
    from patch_netvlad_ros.core.maps.map_fit import MAX_QUERIES
    assert FIT_QUERIES == MAX_QUERIES
    (tmp_path / 'images').mkdir()
    (tmp_path / 'poses.csv').write_text('image,stamp,x,y\n')
    argv = ['fit', str(tmp_path / 'map'), '--images', str(tmp_path / 'images'), '--poses',
            str(tmp_path / 'poses.csv'), '--fit-queries', '20']
    assert map_tool.main(argv) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith('error:')]
    assert len(lines) == 1 and 'leave --fit-queries out' in lines[0]
    assert f'up to {MAX_DRIVE_FRAMES}' in lines[0]
