# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Test-only: writing ROS 1 (.bag) and ROS 2 (.db3, .mcap) bags with ``rosbags``.

The package only reads bags (:mod:`patch_netvlad_ros.core.drives.bags`); the tests, and
test/make_corridor_drives.py for the shipped demo drives, write them with
:func:`write_bag` (images raw or compressed, poses, fixes) and list what a bag holds with
:func:`bag_topics` and :func:`count_messages` (through the package's reader).
"""

import math
from pathlib import Path
import shutil
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import get_typestore, Stores

from patch_netvlad_ros.core.drives.bags import (_COMPRESSED, _connections, _IMAGE, _NAVSATFIX,
                                                _ODOMETRY, _open, _POSE_COV_STAMPED,
                                                _POSE_STAMPED, _topic_types, PathLike,
                                                POSE_TYPES)
from patch_netvlad_ros.core.drives.encodings import encode_raw
from patch_netvlad_ros.core.errors import ImageError, MapError


#: Formats write_bag writes: ROS 1 bag, ROS 2 sqlite3 and ROS 2 mcap.
FORMATS = ('bag', 'db3', 'mcap')


#: rosbag2 metadata version written: 8 keeps the integer QoS encoding older distros read.
_ROSBAG2_VERSION = 8


def _split_stamp(stamp: float, what: str) -> Tuple[int, int]:
    """Split seconds into (sec, nanosec); reject non-finite, negative or huge stamps."""
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float, np.integer, np.floating)):
        raise MapError(f'{what} stamp must be a number of seconds, got {stamp!r}')
    stamp = float(stamp)
    if not math.isfinite(stamp) or stamp < 0 or stamp >= 2 ** 31:
        raise MapError(f'{what} stamp {stamp!r} is not a time in [0, 2^31) seconds')
    sec = math.floor(stamp)
    nanosec = round((stamp - sec) * 1e9)  # stamp - sec is exact
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return int(sec), int(nanosec)


def _check_rgb(rgb: Any, what: str) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or 0 in rgb.shape:
        shape = getattr(rgb, 'shape', None)
        dtype = getattr(rgb, 'dtype', type(rgb).__name__)
        raise MapError(f'{what} must be a non-empty RGB uint8 array [H, W, 3]; got {dtype} '
                       f'with shape {shape}')
    return rgb


class _Builder:
    """Builds the messages of one typestore (ROS 1 Noetic or ROS 2 Humble definitions)."""

    def __init__(self, ros1: bool) -> None:
        self.ros1 = ros1
        self.store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
        self.seq = 0

    def _t(self, name: str, **fields: Any) -> Any:
        return self.store.types[name](**fields)

    def serialize(self, msg: Any) -> bytes:
        if self.ros1:
            return bytes(self.store.serialize_ros1(msg, msg.__msgtype__))
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))

    def header(self, sec: int, nanosec: int, frame_id: str) -> Any:
        stamp = self._t('builtin_interfaces/msg/Time', sec=sec, nanosec=nanosec)
        if self.ros1:
            self.seq += 1
            return self._t('std_msgs/msg/Header', seq=self.seq, stamp=stamp,
                           frame_id=frame_id)
        return self._t('std_msgs/msg/Header', stamp=stamp, frame_id=frame_id)

    def image(self, header: Any, rgb: np.ndarray, encoding: str, compressed: bool) -> Any:
        if compressed:
            ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise MapError(f'OpenCV could not JPEG-encode an image of shape {rgb.shape}')
            return self._t(_COMPRESSED, header=header, format='jpeg',
                           data=np.asarray(jpeg, dtype=np.uint8).reshape(-1))
        data, step = encode_raw(rgb, encoding)
        return self._t(_IMAGE, header=header, height=rgb.shape[0], width=rgb.shape[1],
                       encoding=encoding, is_bigendian=0, step=step,
                       data=np.frombuffer(data, dtype=np.uint8))

    def pose(self, header: Any, msgtype: str, values: Sequence[float],
             child_frame_id: str) -> Any:
        x, y, z, qx, qy, qz, qw = (float(v) for v in values)
        geometry = 'geometry_msgs/msg/'
        pose = self._t(geometry + 'Pose',
                       position=self._t(geometry + 'Point', x=x, y=y, z=z),
                       orientation=self._t(geometry + 'Quaternion', x=qx, y=qy, z=qz, w=qw))
        if msgtype == _POSE_STAMPED:
            return self._t(msgtype, header=header, pose=pose)
        with_cov = self._t(geometry + 'PoseWithCovariance', pose=pose,
                           covariance=np.zeros(36, dtype=np.float64))
        if msgtype == _POSE_COV_STAMPED:
            return self._t(msgtype, header=header, pose=with_cov)
        zero = self._t(geometry + 'Vector3', x=0.0, y=0.0, z=0.0)
        twist = self._t(geometry + 'TwistWithCovariance',
                        twist=self._t(geometry + 'Twist', linear=zero, angular=zero),
                        covariance=np.zeros(36, dtype=np.float64))
        return self._t(_ODOMETRY, header=header, child_frame_id=child_frame_id, pose=with_cov,
                       twist=twist)

    def fix(self, header: Any, latitude: float, longitude: float, altitude: float) -> Any:
        status = self._t('sensor_msgs/msg/NavSatStatus', status=0, service=1)  # FIX, GPS
        return self._t(_NAVSATFIX, header=header, status=status, latitude=float(latitude),
                       longitude=float(longitude), altitude=float(altitude),
                       position_covariance=np.zeros(9, dtype=np.float64),
                       position_covariance_type=0)  # COVARIANCE_TYPE_UNKNOWN


def _check_topic(name: str, topic: Any) -> None:
    if not isinstance(topic, str) or not topic.startswith('/') or topic.endswith('/'):
        raise MapError(f'{name} must be an absolute topic name such as /camera/image_raw, '
                       f'got {topic!r}')


def write_bag(path: PathLike, fmt: str,
              images: Sequence[Tuple[float, str, np.ndarray]],
              image_topic: str = '/camera/image_raw',
              poses: Sequence[Tuple[float, str, Tuple[float, ...]]] = (),
              pose_topic: str = '/odom', pose_type: str = _ODOMETRY,
              compressed: bool = False, encoding: str = 'rgb8',
              fixes: Sequence[Tuple[float, str, float, float, float]] = (),
              fix_topic: str = '/gps/fix', child_frame_id: str = 'base_link') -> Path:
    """Write a bag in fmt 'bag' (ROS 1), 'db3' or 'mcap' (ROS 2) and return its path.

    Messages use the standard definitions of rosbags' typestores (ROS 1 Noetic, ROS 2
    Humble). images: (stamp, frame_id, rgb) written as sensor_msgs/Image in encoding
    (any encodings.SUPPORTED_ENCODINGS entry), or with compressed=True as
    CompressedImage JPEG (format 'jpeg'). poses: (stamp, frame_id, (x, y, z, qx, qy, qz,
    qw)) written as pose_type (Odometry, with child_frame_id, PoseStamped or
    PoseWithCovarianceStamped; zero covariances). fixes: (stamp, frame_id, latitude,
    longitude, altitude) as NavSatFix (status FIX, service GPS). Receive times equal
    the header stamps; stamps are seconds, stored to the nanosecond. A 'bag' path must
    end in .bag; for 'db3' and 'mcap' path is the bag folder (the storage file inside
    it is named after it). Refuses to overwrite an existing path (MapError); a partly
    written bag is removed if writing fails.
    """
    if fmt not in FORMATS:
        raise MapError(f'bag format {fmt!r} is not one of {", ".join(FORMATS)}')
    path = Path(path).expanduser()
    if fmt == 'bag' and path.suffix != '.bag':
        raise MapError(f'a ROS 1 bag path must end in .bag (readers rely on it), got {path}')
    if path.exists() or path.is_symlink():
        raise MapError(f'{path} exists already; not overwriting it: remove it or pick '
                       'another path')
    if pose_type not in POSE_TYPES[:3]:
        raise MapError(f'pose_type {pose_type!r} is not one of {", ".join(POSE_TYPES[:3])}')
    _check_topic('image_topic', image_topic)
    if poses:
        _check_topic('pose_topic', pose_topic)
    if fixes:
        _check_topic('fix_topic', fix_topic)
    used = [t for t, items in ((image_topic, images), (pose_topic, poses),
                               (fix_topic, fixes)) if items]
    if len(set(used)) != len(used):
        raise MapError(f'images, poses and fixes need distinct topics, got {used}')
    if not compressed:
        encode_raw(np.zeros((2, 2, 3), dtype=np.uint8), encoding)  # ImageError if unknown

    # Validate everything before creating the bag; order messages by receive time.
    plan: List[Tuple[int, int, str, int, Tuple[int, int]]] = []
    for kind, items, width in (('image', images, 3), ('pose', poses, 3),
                               ('fix', fixes, 5)):
        for i, item in enumerate(items):
            what = f'{kind} {i}'
            if not isinstance(item, (tuple, list)) or len(item) != width:
                raise MapError(f'{what} must be a tuple of {width} items, got {item!r:.80}')
            stamp = _split_stamp(item[0], what)
            if not isinstance(item[1], str):
                raise MapError(f'{what} frame_id must be a string, got {item[1]!r}')
            if kind == 'image':
                _check_rgb(item[2], f'{what} rgb')
            elif kind == 'pose' and (not isinstance(item[2], (tuple, list, np.ndarray))
                                     or len(item[2]) != 7):
                raise MapError(f'{what} pose must be (x, y, z, qx, qy, qz, qw), got '
                               f'{item[2]!r}')
            values = item[2] if kind == 'pose' else item[2:] if kind == 'fix' else ()
            try:
                finite = all(math.isfinite(float(v)) for v in values)
            except (TypeError, ValueError):
                finite = False
            if not finite:
                raise MapError(f'{what} needs finite numbers, got {tuple(values)!r:.120}')
            ns = stamp[0] * 1_000_000_000 + stamp[1]
            plan.append((ns, len(plan), kind, i, stamp))
    plan.sort()

    builder = _Builder(ros1=fmt == 'bag')
    types = {'image': _COMPRESSED if compressed else _IMAGE, 'pose': pose_type,
             'fix': _NAVSATFIX}
    topics = {'image': image_topic, 'pose': pose_topic, 'fix': fix_topic}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == 'bag':
        writer: Any = Writer1(path)
    else:
        plugin = StoragePlugin.MCAP if fmt == 'mcap' else StoragePlugin.SQLITE3
        writer = Writer2(path, version=_ROSBAG2_VERSION, storage_plugin=plugin)
    try:
        with writer:
            connections = {kind: writer.add_connection(topics[kind], types[kind],
                                                       typestore=builder.store)
                           for kind, items in (('image', images), ('pose', poses),
                                               ('fix', fixes)) if items}
            for ns, _, kind, i, (sec, nanosec) in plan:
                if kind == 'image':
                    _, frame_id, rgb = images[i]
                    msg = builder.image(builder.header(sec, nanosec, frame_id), rgb, encoding,
                                        compressed)
                elif kind == 'pose':
                    _, frame_id, values = poses[i]
                    msg = builder.pose(builder.header(sec, nanosec, frame_id), pose_type,
                                       values, child_frame_id)
                else:
                    _, frame_id, lat, lon, alt = fixes[i]
                    msg = builder.fix(builder.header(sec, nanosec, frame_id), lat, lon, alt)
                writer.write(connections[kind], ns, builder.serialize(msg))
    except BaseException as err:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
        if isinstance(err, (MapError, ImageError)) or not isinstance(err, Exception):
            raise
        raise MapError(f'cannot write bag {path}: {err}') from err
    return path


def bag_topics(path: PathLike) -> Dict[str, Tuple[str, int]]:
    """Return the topics of a bag: topic -> (message type, message count).

    Types are ROS 2 style ('sensor_msgs/msg/Image') for ROS 1 bags too; a bag that cannot
    be read raises the package's MapError, as its readers do.
    """
    with _open(path) as (_, reader):
        return _topic_types(reader)


def count_messages(path: PathLike, topic: str) -> int:
    """Return the number of messages on topic (MapError if the bag lacks it)."""
    with _open(path) as (bag, reader):
        connections = _connections(bag, reader, topic, None)
        return sum(int(c.msgcount) for c in connections)
