# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Bad input gets its own exception and a message naming the problem."""

import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.errors import ConfigError, ImageError, MapError
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.extraction import build_reference_map
from patch_netvlad_ros.core.model.bootstrap import bootstrap_model, fit_wpca, seeded_model
from patch_netvlad_ros.core.model.image import check_image, to_tensor

SMALL = get_config('speed', image_height=16 * 8, image_width=16 * 10, num_pcs=64)


@pytest.mark.parametrize('image,message', [
    (np.zeros((50, 60), np.uint8), 'grayscale image of shape'),
    (np.zeros((50, 60, 1), np.uint8), 'grayscale image of shape'),
    (np.zeros((50, 60, 4), np.uint8), 'drop the alpha channel'),
    (np.zeros((3, 50, 60), np.uint8), r'expected an H x W x 3 RGB image; got shape \(3, 50, 60\)'),
    (np.zeros((50, 60, 3), np.int32), 'unsupported image dtype int32'),
    (np.zeros((50, 60, 3), np.uint16), 'unsupported image dtype uint16'),
    (np.full((50, 60, 3), np.nan, np.float32), 'NaN or Inf'),
    (np.full((50, 60, 3), np.inf, np.float64), 'NaN or Inf'),
    (np.full((50, 60, 3), 2.0, np.float32), r'float images must lie in \[0, 1\]'),
    (np.zeros((10, 60, 3), np.uint8), 'too small'),
])
def test_bad_images(image, message):
    with pytest.raises(ImageError, match=message):
        check_image(image)
    with pytest.raises(ImageError, match=message):
        to_tensor(image, SMALL)


def test_not_an_array():
    with pytest.raises(ImageError, match='expected a numpy array, got list'):
        check_image([[1, 2, 3]])


def test_network_input_smaller_than_the_largest_patch():
    model = seeded_model(get_config('performance', image_height=256, image_width=256))
    with pytest.raises(ImageError, match='smaller than the largest patch'):
        model.extract(torch.zeros(1, 3, 112, 160))        # 7 x 10 cells < 8-cell patches
    with pytest.raises(ConfigError, match='smaller than the largest patch'):
        get_config('performance', image_height=112, image_width=640)


def test_nan_tensor_and_wrong_batch_shape():
    model = seeded_model(SMALL)
    with pytest.raises(ImageError, match='NaN or Inf'):
        model.extract(torch.full((1, 3, 128, 160), float('nan')))
    with pytest.raises(ImageError, match=r'expected a batch \[B, 3, H, W\]'):
        model.extract(torch.zeros(3, 128, 160))


def test_empty_reference_set():
    with pytest.raises(ImageError, match='no reference images'):
        bootstrap_model(SMALL, [])
    model = seeded_model(SMALL)
    with pytest.raises(MapError, match='no reference images'):
        build_reference_map(model, [], [])
    with pytest.raises(MapError, match='the map holds no references'):
        Localizer(ReferenceMap.empty(SMALL, 'x'), model)


def test_too_few_samples_for_the_pca():
    with pytest.raises(ImageError, match='512-dimensional PCA needs more than 512'):
        fit_wpca(torch.randn(100, 1000), 512)


@pytest.mark.parametrize('overrides,message', [
    ({'patch_sizes': ()}, 'patch_sizes is empty'),
    ({'patch_weights': (0.5, 0.2, 0.2)}, 'must sum to 1'),
    ({'patch_weights': (1.2, -0.2, 0.0)}, 'non-negative'),
    ({'strides': (1, 1)}, 'one entry per scale'),
    ({'matcher': 'magic'}, "matcher must be one of \\['ransac', 'spatial'\\]; got 'magic'"),
    ({'num_pcs': 0}, 'num_pcs must be a positive integer'),
    ({'num_pcs': 40000}, 'cannot exceed the NetVLAD size'),
    ({'top_k': 2.5}, 'top_k must be a positive integer'),
    ({'patch_sizes': (2, 0, 8)}, 'positive integers'),
    ({'colour': 'red'}, r"unknown configuration field\(s\) \['colour'\]"),
])
def test_bad_configuration(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_config('performance').override(**overrides)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        get_config('fast')


def test_drive_reading_options_are_checked_before_anything_is_read(tmp_path):
    """A bad option is named even though the bag and folder do not exist: nothing is read."""
    from patch_netvlad_ros.core.drives.drives import (KeyframeRule, read_bag_drive,
                                                      read_folder_drive)
    missing = tmp_path / 'missing'
    with pytest.raises(MapError, match="unknown pose convention 'ned': use one of z-up"):
        read_folder_drive(missing, missing / 'poses.csv', (96, 128), pose_convention='ned')
    with pytest.raises(MapError, match='max_gap must be >= 0 seconds, got -1'):
        read_bag_drive(missing, '/camera/image_raw', '/odom', (96, 128), max_gap=-1.0)
    with pytest.raises(MapError, match='min_distance must be a finite number >= 0'):
        read_bag_drive(missing, '/camera/image_raw', '/odom', (96, 128),
                       KeyframeRule(min_distance=-1.0))


def test_gnss_drives_are_z_up_and_maps_have_one_convention(kitti_image, tmp_path):
    """NavSatFix poses are ENU: 'camera' is refused; auto and z-up read them."""
    from bag_writers import write_bag
    from patch_netvlad_ros.core.drives.drives import meta_convention, read_bag_drive
    stamps = [10.0, 10.1, 10.2]
    fixes = [(t, 'gps', 49.0112 + 1e-5 * i, 8.4228, 112.8) for i, t in enumerate(stamps)]
    bag = write_bag(tmp_path / 'gnss.bag', 'bag', [(t, 'cam', kitti_image) for t in stamps],
                    fixes=fixes, compressed=True)
    with pytest.raises(MapError, match="NavSatFix poses are ENU .* 'camera' does not apply"):
        read_bag_drive(bag, '/camera/image_raw', '/gps/fix', (96, 320), pose_convention='camera')
    for convention in ('auto', 'z-up'):
        drive = read_bag_drive(bag, '/camera/image_raw', '/gps/fix', (96, 320),
                               pose_convention=convention)
        assert drive.pose_convention == 'z-up' and len(drive.frames) == 3
    assert meta_convention({'drives': [{'name': 'a'}]}) is None          # older maps
    assert meta_convention({'drives': [{'pose_convention': 'camera'}] * 2}) == 'camera'
    with pytest.raises(MapError, match=r'different pose conventions \(camera, z-up\)'):
        meta_convention({'drives': [{'pose_convention': 'z-up'},
                                    {'pose_convention': 'camera'}]})


@pytest.fixture
def kitti_image():
    """A real 1242x375 KITTI frame, shrunk to 310x94 to keep the bag small."""
    import cv2
    from pose_data import KITTI_IMAGES
    from patch_netvlad_ros.core.model.image import load_image
    return cv2.resize(load_image(KITTI_IMAGES / '0000000000.jpg'), (310, 94))


@pytest.mark.parametrize('hold_images', [True, False])
def test_a_too_small_image_in_a_drive_is_counted_invalid_not_a_changed_source(
        tmp_path, corridor_images, hold_images):
    """An 8x8 frame among real ones: counted invalid (named) at the first read, whether the
    drive holds its images or reads them again; the others are kept and read again whole."""
    import csv

    import cv2

    from patch_netvlad_ros.core.drives.drives import read_folder_drive
    images = list(corridor_images[0][:3]) + [np.zeros((8, 8, 3), np.uint8)]
    with open(tmp_path / 'poses.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['image', 'stamp', 'x', 'y'])
        for i, rgb in enumerate(images):
            cv2.imwrite(str(tmp_path / f'{i}.png'), rgb[:, :, ::-1])
            writer.writerow([f'{i}.png', i, i, 0])
    errors = []
    drive = read_folder_drive(tmp_path, tmp_path / 'poses.csv', (240, 320),
                              hold_images=hold_images,
                              on_error=lambda i, m: errors.append((i, m)))
    assert drive.summary()['invalid'] == 1 and len(drive.frames) == 3
    assert errors == [(3, '3.png: image 8x8 is too small: at least 16 px per side are needed')]
    read = list(drive.frame_images())
    assert [im.shape for im in read] == [(240, 320, 3)] * 3
