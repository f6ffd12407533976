# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Bag reading and writing (drives/bags.py): round trips in every format, a real bag, errors."""

from pathlib import Path
import shutil
from typing import List, Tuple

from bag_writers import bag_topics, count_messages, write_bag
import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import get_typestore, Stores

from patch_netvlad_ros.core.drives import bags
from patch_netvlad_ros.core.errors import ImageError, MapError

REF_DIR = Path(__file__).resolve().parents[1] / 'patch_netvlad_ros' / 'data' / 'corridor' / 'ref'
#: A real T265 recording (kapture's test fixture; see ATTRIBUTION.md beside it).
REAL_BAG = Path(__file__).resolve().parent / 'data' / 'kapture_t265_bag' / 'trimmed_locoffice.bag'
#: The real bag's receive times (ATTRIBUTION.md): start 1553180224.368 s, 0.090 s long.
REAL_START, REAL_SPAN = 1553180224.368, 0.090

FORMATS = ('bag', 'db3', 'mcap')
POSE_TYPES = ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/PoseStamped',
              'geometry_msgs/msg/PoseWithCovarianceStamped')
#: Stamps far from the epoch: float64 holds them to ~0.24 us, so compare within 1 us.
IMAGE_STAMPS = [1700000000.123456789 + 0.1 * i for i in range(5)]
POSES = [(100.0 + 0.1 * i, 'odom', (1.0 + i, -2.5 * i, 0.25, 0.0, 0.0, np.sin(0.1 * i),
                                    np.cos(0.1 * i))) for i in range(4)]
FIXES = [(100.05 + 0.1 * i, 'gps', 48.85 + 1e-6 * i, 2.35 - 1e-6 * i, 35.5 + i)
         for i in range(3)]


def bag_path(tmp_path: Path, fmt: str, name: str = 'test') -> Path:
    """Path write_bag takes for fmt: a .bag file or a ROS 2 bag folder."""
    return tmp_path / (f'{name}.bag' if fmt == 'bag' else name)


@pytest.fixture(scope='module')
def rgbs() -> List[np.ndarray]:
    """Five real corridor reference images (160x120 RGB)."""
    from patch_netvlad_ros.core.model.image import load_image
    paths = sorted(REF_DIR.glob('*.jpg'))[:5]
    assert len(paths) == 5, f'expected corridor references in {REF_DIR}'
    return [load_image(p) for p in paths]


def image_items(rgbs: List[np.ndarray]) -> List[Tuple[float, str, np.ndarray]]:
    return [(stamp, f'camera_{i % 2}', rgb) for i, (stamp, rgb) in
            enumerate(zip(IMAGE_STAMPS, rgbs))]


@pytest.mark.parametrize('pose_type', POSE_TYPES)
@pytest.mark.parametrize('fmt', FORMATS)
def test_round_trip_raw_rgb8_poses_and_fixes(tmp_path, rgbs, fmt, pose_type):
    """Raw rgb8 pixels, stamps, frames, poses and fixes come back as written."""
    path = write_bag(bag_path(tmp_path, fmt), fmt, image_items(rgbs), poses=POSES,
                     pose_type=pose_type, fixes=FIXES)
    assert path == bag_path(tmp_path, fmt) and path.exists()
    assert bag_topics(path) == {'/camera/image_raw': ('sensor_msgs/msg/Image', 5),
                                '/odom': (pose_type, 4),
                                '/gps/fix': ('sensor_msgs/msg/NavSatFix', 3)}
    assert count_messages(path, '/camera/image_raw') == 5
    assert count_messages(path, '/gps/fix') == 3

    images = list(bags.read_images(path, '/camera/image_raw'))
    assert [image.index for image in images] == list(range(5))
    for image, (stamp, frame_id, rgb) in zip(images, image_items(rgbs)):
        assert image.topic == '/camera/image_raw'
        assert image.frame_id == frame_id
        assert abs(image.stamp - stamp) < 1e-6
        assert image.rgb.dtype == np.uint8 and image.rgb.flags.c_contiguous
        np.testing.assert_array_equal(image.rgb, rgb)

    poses = bags.read_poses(path, '/odom')
    assert len(poses) == len(POSES)
    for pose, (stamp, frame_id, values) in zip(poses, POSES):
        assert isinstance(pose, bags.BagPose)
        assert pose.frame_id == frame_id
        assert abs(pose.stamp - stamp) < 1e-9
        assert (pose.x, pose.y, pose.z, pose.qx, pose.qy, pose.qz, pose.qw) == \
            pytest.approx(values, abs=0)

    fixes = bags.read_poses(path, 'gps/fix')  # a topic without its leading slash is found
    assert fixes == [bags.BagFix(stamp=pytest.approx(stamp, abs=1e-9), frame_id=frame_id,
                                 latitude=lat, longitude=lon, altitude=alt, status=0)
                     for stamp, frame_id, lat, lon, alt in FIXES]


@pytest.mark.parametrize('encoding', ['bgr8', 'mono8'])
@pytest.mark.parametrize('fmt', FORMATS)
def test_round_trip_other_encodings(tmp_path, rgbs, fmt, encoding):
    """bgr8 comes back exactly; mono8 comes back as the grey image on three channels."""
    path = write_bag(bag_path(tmp_path, fmt), fmt, image_items(rgbs), encoding=encoding,
                     image_topic='/cam/image')
    images = list(bags.read_images(path, '/cam/image'))
    assert len(images) == 5
    for image, rgb in zip(images, rgbs):
        if encoding == 'mono8':
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            expected = np.repeat(grey[:, :, None], 3, axis=2)
        else:
            expected = rgb
        np.testing.assert_array_equal(image.rgb, expected)


@pytest.mark.parametrize('fmt', FORMATS)
def test_round_trip_compressed_jpeg(tmp_path, rgbs, fmt):
    """Check that CompressedImage JPEG decodes to the written colours within its error."""
    path = write_bag(bag_path(tmp_path, fmt), fmt, image_items(rgbs), compressed=True)
    assert bag_topics(path)['/camera/image_raw'] == ('sensor_msgs/msg/CompressedImage', 5)
    images = list(bags.read_images(path, '/camera/image_raw'))
    assert len(images) == 5
    for image, (stamp, frame_id, rgb) in zip(images, image_items(rgbs)):
        assert image.rgb.shape == rgb.shape and image.rgb.dtype == np.uint8
        diff = np.abs(image.rgb.astype(np.int16) - rgb.astype(np.int16))
        assert diff.mean() < 3.0 and diff.max() < 64  # a channel swap would be far larger
        assert abs(image.stamp - stamp) < 1e-6 and image.frame_id == frame_id


@pytest.mark.parametrize('fmt', ['db3', 'mcap'])
def test_reads_a_single_ros2_storage_file(tmp_path, rgbs, fmt):
    """The .db3 / .mcap file inside a ROS 2 bag folder can be read on its own."""
    folder = write_bag(tmp_path / 'single', fmt, image_items(rgbs)[:2])
    storage = folder / f'single.{fmt}'
    assert storage.is_file()
    assert bag_topics(storage) == {'/camera/image_raw': ('sensor_msgs/msg/Image', 2)}
    np.testing.assert_array_equal(next(bags.read_images(storage, '/camera/image_raw')).rgb,
                                  rgbs[0])


@pytest.fixture()
def real_bag() -> Path:
    assert REAL_BAG.is_file(), f'the real bag {REAL_BAG} is missing from the checkout'
    return REAL_BAG


def test_real_ros1_bag(real_bag):
    """The RealSense T265 bag: mono8 fisheye frames and VIO odometry."""
    topics = bag_topics(real_bag)
    assert topics['/camera/fisheye1/image_raw'] == ('sensor_msgs/msg/Image', 3)
    assert topics['/camera/odom/sample'] == ('nav_msgs/msg/Odometry', 19)
    images = list(bags.read_images(real_bag, '/camera/fisheye1/image_raw'))
    assert len(images) == 3
    for image in images:
        assert image.rgb.shape == (800, 848, 3)
        assert image.frame_id == 'camera_fisheye1_optical_frame'
        np.testing.assert_array_equal(image.rgb[..., 0], image.rgb[..., 1])
        np.testing.assert_array_equal(image.rgb[..., 0], image.rgb[..., 2])
        assert image.rgb.std() > 1.0  # a real picture, not a constant frame
    poses = bags.read_poses(real_bag, '/camera/odom/sample')
    assert len(poses) == 19
    assert all(isinstance(p, bags.BagPose) and p.frame_id == 'camera_odom_frame'
               for p in poses)
    stamps = np.array([p.stamp for p in poses])
    # Header stamps are capture times, a few ms off the receive times that span the bag.
    assert np.all(stamps > REAL_START - 0.02) and np.all(stamps < REAL_START + REAL_SPAN + 0.02)
    assert np.all(np.diff(stamps) > 0)
    for p in poses:
        assert np.linalg.norm([p.qx, p.qy, p.qz, p.qw]) == pytest.approx(1.0, abs=1e-4)


def test_missing_path(tmp_path):
    with pytest.raises(MapError, match='does not exist'):
        bag_topics(tmp_path / 'nothing.bag')
    with pytest.raises(MapError, match='does not exist'):
        bags.read_images(tmp_path / 'nothing', '/camera/image_raw')
    with pytest.raises(MapError, match='without metadata.yaml'):
        bag_topics(tmp_path)


def test_random_bytes_and_truncated_bag(tmp_path, real_bag):
    random_bag = tmp_path / 'x.bag'
    random_bag.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    with pytest.raises(MapError, match='not a ROS bag or it is damaged'):
        bag_topics(random_bag)
    truncated = tmp_path / 'truncated.bag'
    with open(real_bag, 'rb') as f:
        truncated.write_bytes(f.read(100_000))
    with pytest.raises(MapError, match='not a ROS bag or it is damaged'):
        bags.read_poses(truncated, '/camera/odom/sample')
    for name in ('x.db3', 'x.mcap'):
        shutil.copy(random_bag, tmp_path / name)
        with pytest.raises(MapError, match='not a ROS bag or it is damaged'):
            count_messages(tmp_path / name, '/odom')


def test_unknown_topic_and_wrong_type(real_bag):
    with pytest.raises(MapError, match='is not in bag') as info:
        bags.read_images(real_bag, '/camera/color/image_raw')
    message = str(info.value)
    assert '/camera/fisheye1/image_raw (sensor_msgs/msg/Image, 3 messages)' in message
    assert '/camera/odom/sample (nav_msgs/msg/Odometry, 19 messages)' in message
    with pytest.raises(MapError, match='is not in bag'):
        count_messages(real_bag, '/nope')
    with pytest.raises(MapError, match='carries nav_msgs/msg/Odometry messages.*'
                                       'sensor_msgs/msg/Image, sensor_msgs/msg/CompressedImage'):
        bags.read_images(real_bag, '/camera/odom/sample')  # raised before iterating
    with pytest.raises(MapError, match='carries sensor_msgs/msg/Imu'):
        bags.read_poses(real_bag, '/camera/gyro/sample')


@pytest.mark.parametrize('fmt', FORMATS)
def test_refuses_to_overwrite(tmp_path, rgbs, fmt):
    path = write_bag(bag_path(tmp_path, fmt), fmt, image_items(rgbs)[:1])
    before = sorted(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir()))
    with pytest.raises(MapError, match='exists already'):
        write_bag(path, fmt, image_items(rgbs)[1:2])
    after = sorted(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir()))
    assert before == after
    assert len(list(bags.read_images(path, '/camera/image_raw'))) == 1


def test_write_rejects_bad_arguments(tmp_path, rgbs):
    items = image_items(rgbs)[:1]
    with pytest.raises(MapError, match='not one of bag, db3, mcap'):
        write_bag(tmp_path / 'a', 'rosbag', items)
    with pytest.raises(MapError, match='must end in .bag'):
        write_bag(tmp_path / 'a.db3', 'bag', items)
    with pytest.raises(MapError, match='pose_type'):
        write_bag(tmp_path / 'b', 'mcap', items, poses=POSES, pose_type='nav_msgs/msg/Path')
    with pytest.raises(MapError, match='RGB uint8'):
        write_bag(tmp_path / 'c', 'mcap', [(1.0, 'cam', rgbs[0][..., 0])])
    with pytest.raises(MapError, match='stamp'):
        write_bag(tmp_path / 'd', 'mcap', [(float('nan'), 'cam', rgbs[0])])
    with pytest.raises(ImageError, match='unsupported image encoding'):
        write_bag(tmp_path / 'e', 'mcap', items, encoding='jpeg')
    assert list(tmp_path.iterdir()) == []  # nothing was created


def write_by_hand(path: Path, fmt: str, rgb: np.ndarray) -> None:
    """Write three Images: valid, data shorter than step * height, valid; header stamps 0."""
    store = get_typestore(Stores.ROS1_NOETIC if fmt == 'bag' else Stores.ROS2_HUMBLE)
    types = store.types
    msgtype = 'sensor_msgs/msg/Image'
    height, width = rgb.shape[:2]
    if fmt == 'bag':
        writer = Writer1(path)
    else:
        plugin = StoragePlugin.MCAP if fmt == 'mcap' else StoragePlugin.SQLITE3
        writer = Writer2(path, version=9, storage_plugin=plugin)
    with writer:
        connection = writer.add_connection('/camera/image_raw', msgtype, typestore=store)
        for i, data in enumerate([rgb.tobytes(), rgb.tobytes()[:-width * 3], rgb.tobytes()]):
            stamp = types['builtin_interfaces/msg/Time'](sec=0, nanosec=0)
            header_fields = {'seq': i} if fmt == 'bag' else {}
            header = types['std_msgs/msg/Header'](stamp=stamp, frame_id='cam', **header_fields)
            msg = types[msgtype](header=header, height=height, width=width, encoding='rgb8',
                                 is_bigendian=0, step=width * 3,
                                 data=np.frombuffer(data, dtype=np.uint8))
            raw = store.serialize_ros1(msg, msgtype) if fmt == 'bag' else \
                store.serialize_cdr(msg, msgtype)
            writer.write(connection, (5 + i) * 1_000_000_000 + 250, raw)


@pytest.mark.parametrize('fmt', FORMATS)
def test_invalid_image_is_skipped_or_raised(tmp_path, rgbs, fmt):
    """A truncated Image is reported through on_error, or raised with skip_invalid=False."""
    path = bag_path(tmp_path, fmt, 'invalid')
    write_by_hand(path, fmt, rgbs[0])
    errors = []
    images = list(bags.read_images(path, '/camera/image_raw',
                                   on_error=lambda index, message: errors.append((index,
                                                                                  message))))
    assert [image.index for image in images] == [0, 2]
    for image in images:
        np.testing.assert_array_equal(image.rgb, rgbs[0])
    # Zero header stamps fall back to the receive time.
    assert [image.stamp for image in images] == pytest.approx([5.00000025, 7.00000025],
                                                              abs=1e-9)
    assert len(errors) == 1 and errors[0][0] == 1
    assert 'message 1' in errors[0][1] and 'truncated' in errors[0][1]

    images = list(bags.read_images(path, '/camera/image_raw'))  # logged, still skipped
    assert len(images) == 2
    stream = bags.read_images(path, '/camera/image_raw', skip_invalid=False)
    assert next(stream).index == 0
    with pytest.raises(ImageError, match='message 1 .*truncated'):
        next(stream)
