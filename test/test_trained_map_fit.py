# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A map built of the images its model was trained on says so (issue 18).

A real (tiny) pnv-train run on real corridor frames writes a checkpoint whose training
record lists its images' pixel keys; maps of a drive that shares frames with training,
and of one that does not, are built with it and fitted on themselves. The shared share
is counted by hand (every keyframe is in the fit's sample: 24 < MAX_SECOND_VISITS).
"""

import json

import pytest

from patch_netvlad_ros.cli import map_tool
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.drives.drives import Drive, DriveFrame
from patch_netvlad_ros.core.localization.localizer import META_KEY
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.map_building import (build_map, fit_summary, map_model_path,
                                                      refit_map, TRAINED_ON_KEY, training_record,
                                                      training_warning)
from patch_netvlad_ros.core.maps.map_fit import MAX_SECOND_VISITS
from patch_netvlad_ros.core.model.checkpoint import load_model, save_checkpoint
from patch_netvlad_ros.core.model.image import load_image, resize_rgb
from patch_netvlad_ros.core.training.features import pixel_key
from patch_netvlad_ros.core.training.options import MODEL_FILE, TrainOptions
from patch_netvlad_ros.core.training.trainer import train_from_drives

#: Small enough for seconds (as test_training): 80 x 112 input, 8 clusters, 32 PCs.
TINY = {'image_height': 80, 'image_width': 112, 'num_clusters': 8, 'num_pcs': 32}
SIZE = (TINY['image_height'], TINY['image_width'])
FAST = {'epochs': 1, 'batch_size': 2, 'num_negatives': 3, 'pos_radius': 1.5,
        'neg_radius': 3.0, 'refresh_every': 3, 'optimizer': 'adam', 'lr': 1e-4,
        'weight_decay': 0.0}


def drive_of(paths, name, first=0):
    """A drive of real corridor frames, 1 m apart along x (poses by frame number)."""
    from patch_netvlad_ros.core.drives.poses import PoseSample
    frames = [DriveFrame(i, float(i), 'map', p.name,
                         PoseSample(float(first + i), float(first + i), 0.0, 0.0, 0.0, 0.0,
                                    0.0, 1.0),
                         resize_rgb(load_image(p), *SIZE)) for i, p in enumerate(paths)]
    return Drive(name, frames, images=len(frames))


@pytest.fixture(scope='module')
def config():
    return get_config('speed', **TINY)


@pytest.fixture(scope='module')
def trained(corridor_set, config, tmp_path_factory):
    """A real pnv-train run on reference frames 0..7 and query frames 0..7."""
    drives = [drive_of(corridor_set.references[:8], 'ref'),
              drive_of(corridor_set.queries[:8], 'query')]
    out = tmp_path_factory.mktemp('trained')
    train_from_drives(drives, out, config, TrainOptions(**FAST),
                      feature_cache=tmp_path_factory.mktemp('features'))
    return out / MODEL_FILE, drives


def test_checkpoint_lists_the_pixel_keys_of_its_training_images(trained):
    checkpoint, drives = trained
    keys = training_record(checkpoint)['image_keys'].split()
    assert keys == [pixel_key(f.rgb) for d in drives for f in d.frames]
    assert len(set(keys)) == 16                       # 16 different real frames


def test_map_of_training_images_is_flagged_and_others_are_not(trained, corridor_set, config,
                                                              tmp_path, capsys):
    checkpoint, _ = trained
    # reference frames 0..23: 8 of them (0..7) were training images
    same = drive_of(corridor_set.references[:24], 'drive_a')
    assert len(same.frames) <= MAX_SECOND_VISITS      # every keyframe is checked
    lines = []
    ref_map, _ = build_map(same, tmp_path / 'a', config, checkpoint, log=lines.append)
    share = ref_map.meta[META_KEY][TRAINED_ON_KEY]
    assert share == pytest.approx(8 / 24)
    warnings = [m for m in lines if m.startswith("warning: the map's model was trained on")]
    assert len(warnings) == 1 and '33%' in warnings[0] and 'not trustworthy' in warnings[0]
    # fitted on training images: the novelty gate is fitted without being asked for, and
    # the warning says what it does and does not mend
    assert ref_map.meta[META_KEY]['novelty_gate']
    assert any('fitting the novelty gate too' in m for m in lines)
    assert 'novelty gate keeps places outside' in warnings[0]
    assert 'confidence near 1.0' not in warnings[0]
    # kept through a reload, the map's own model copy, pnv-map check and pnv-map fit
    assert 'WARNING' in fit_summary(ReferenceMap.load(tmp_path / 'a').meta)
    assert training_record(map_model_path(tmp_path / 'a'))['image_keys'] == \
        training_record(checkpoint)['image_keys']
    assert map_tool.main(['check', str(tmp_path / 'a')]) == 0
    assert "WARNING: the map's model was trained on 33%" in capsys.readouterr().out
    refit = refit_map(tmp_path / 'a')
    assert refit.meta[META_KEY][TRAINED_ON_KEY] == pytest.approx(8 / 24)
    assert refit.meta[META_KEY]['novelty_gate'] == ref_map.meta[META_KEY]['novelty_gate']
    # told not to (pnv-map fit --no-novelty-gate): no gate, and the warning names the ways
    # to get one
    assert map_tool.main(['fit', str(tmp_path / 'a'), '--no-novelty-gate']) == 0
    ungated = ReferenceMap.load(tmp_path / 'a')
    assert 'novelty_gate' not in ungated.meta[META_KEY]
    assert 'confidence near 1.0' in training_warning(ungated.meta)
    assert 'pnv-map fit MAP --novelty-gate' in training_warning(ungated.meta)

    # reference frames 30..53: none was a training image
    other = drive_of(corridor_set.references[30:54], 'drive_b', first=30)
    lines = []
    other_map, _ = build_map(other, tmp_path / 'b', config, checkpoint, log=lines.append)
    assert TRAINED_ON_KEY not in other_map.meta[META_KEY]
    assert 'novelty_gate' not in other_map.meta[META_KEY]          # off by default
    assert 'WARNING' not in fit_summary(other_map.meta)
    assert not [m for m in lines if 'trained on' in m]

    # extended with reference frames 0..7 (all training images) by the map's own model copy
    extended, _ = build_map(drive_of(corridor_set.references[:8], 'drive_c'), tmp_path / 'b',
                            base=ReferenceMap.load(tmp_path / 'b'))
    assert extended.meta[META_KEY][TRAINED_ON_KEY] == pytest.approx(8 / 32)


def test_checkpoint_without_pixel_keys_is_matched_by_its_drive_records(trained, config,
                                                                       tmp_path):
    # a checkpoint written before the keys were recorded: the same record without them
    checkpoint, drives = trained
    record = training_record(checkpoint)
    del record['image_keys']
    older = tmp_path / 'older.pth.tar'
    save_checkpoint(load_model(checkpoint, config), older, {'training': json.dumps(record)})
    ref_map, _ = build_map(drives[1], tmp_path / 'q', config, older)     # the 'query' drive
    assert ref_map.meta[META_KEY][TRAINED_ON_KEY] == 1.0
    assert 'trained on 100%' in fit_summary(ref_map.meta)


def test_fit_on_a_drive_of_training_images_is_flagged(trained, corridor_set, config,
                                                      tmp_path, capsys):
    """A map fitted on a drive its model was trained on warns (the drive labels itself too
    well); a fit on a drive of other frames does not."""
    checkpoint, _ = trained
    build_map(drive_of(corridor_set.references[30:54], 'map', first=30), tmp_path / 'm',
              config, checkpoint)
    # query frames 0..7 (training images) and 38..53 (not), posed along the map's 30..53
    mixed = drive_of(corridor_set.queries[:8] + corridor_set.queries[38:54], 'mixed', first=30)
    fitted = refit_map(tmp_path / 'm', drive=mixed).meta[META_KEY]
    assert fitted['drive'][TRAINED_ON_KEY] == pytest.approx(8 / 24)
    assert TRAINED_ON_KEY not in fitted                   # the map's keyframes: none
    assert map_tool.main(['check', str(tmp_path / 'm')]) == 0
    out = capsys.readouterr().out
    says = ("WARNING: the map's model was trained on 33% of the frames of the drive the "
            'map was fitted on (mixed)')
    assert says in out
    clean = drive_of(corridor_set.queries[30:54], 'clean', first=30)
    fitted = refit_map(tmp_path / 'm', drive=clean).meta[META_KEY]
    assert TRAINED_ON_KEY not in fitted['drive']
    assert 'WARNING' not in fit_summary(ReferenceMap.load(tmp_path / 'm').meta)
