# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ROS-free reading and writing of ROS 1 (.bag) and ROS 2 (.db3, .mcap) bags.

Built on the pure-Python ``rosbags`` package, so maps can be built from recordings and
test bags written without a ROS installation. Nothing here imports rclpy or the
package's ROS messages; images are decoded by :mod:`.encodings` (the cv_bridge
conventions the live node uses), so a frame read from a bag equals the frame the node
would have received.

Paths: a ROS 1 ``.bag`` file, a ROS 2 bag folder (``metadata.yaml`` next to its
``.db3`` or ``.mcap`` files) or a single ``.db3`` or ``.mcap`` file. Every problem with
the bag itself (missing, not a bag, damaged, unknown topic, wrong message type) raises
:class:`MapError`; an image that cannot be decoded raises :class:`ImageError`.
"""

from contextlib import contextmanager
from dataclasses import dataclass
import logging
import math
from pathlib import Path
import shutil
from typing import (Any, Callable, Container, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import get_typestore, Stores

from .encodings import decode_compressed, decode_raw, encode_raw
from .errors import ImageError, MapError

PathLike = Union[str, Path]

_LOG = logging.getLogger(__name__)

#: Message types read_images accepts.
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
#: Message types read_poses accepts (the first three give BagPose, NavSatFix BagFix).
POSE_TYPES = ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/PoseStamped',
              'geometry_msgs/msg/PoseWithCovarianceStamped', 'sensor_msgs/msg/NavSatFix')
#: Formats write_bag writes: ROS 1 bag, ROS 2 sqlite3 and ROS 2 mcap.
FORMATS = ('bag', 'db3', 'mcap')

_IMAGE, _COMPRESSED = IMAGE_TYPES
_ODOMETRY, _POSE_STAMPED, _POSE_COV_STAMPED, _NAVSATFIX = POSE_TYPES

#: rosbag2 metadata version written: 8 keeps the integer QoS encoding older distros read.
_ROSBAG2_VERSION = 8


@dataclass
class BagImage:
    """One image of a bag, decoded to RGB.

    stamp is the header stamp in seconds; when the header stamp is zero (a publisher
    that never set it) the bag's receive time is used instead.
    """

    stamp: float
    frame_id: str
    topic: str
    index: int  # 0-based index among this topic's messages, in bag (receive time) order
    rgb: np.ndarray  # [H, W, 3] uint8


@dataclass
class BagPose:
    """A pose message (Odometry, PoseStamped, PoseWithCovarianceStamped) reduced to a pose.

    stamp falls back to the receive time when the header stamp is zero, as in BagImage.
    """

    stamp: float
    frame_id: str
    x: float
    y: float
    z: float
    qx: float
    qy: float
    qz: float
    qw: float


@dataclass
class BagFix:
    """A sensor_msgs/NavSatFix; status is NavSatStatus.status (-1: no fix, 0: fix, ...)."""

    stamp: float
    frame_id: str
    latitude: float
    longitude: float
    altitude: float
    status: int


# ----------------------------------------------------------------------------- reading


def _bag_path(path: PathLike) -> Path:
    """Check that path names something that may be a bag; return it as a Path."""
    if not isinstance(path, (str, Path)):
        raise MapError(f'bag path must be a string or a Path, got {type(path).__name__}')
    path = Path(path).expanduser()
    if not path.exists():
        raise MapError(
            f'bag {path} does not exist; pass a ROS 1 .bag file, a ROS 2 bag folder '
            '(with metadata.yaml) or a .db3 / .mcap file')
    if path.is_dir() and not (path / 'metadata.yaml').is_file():
        raise MapError(
            f'{path} is a folder without metadata.yaml, so it is not a ROS 2 bag; pass the '
            'folder `ros2 bag record` created, a single .db3 / .mcap file inside it, or a '
            'ROS 1 .bag file')
    if path.is_file() and path.suffix not in ('.bag', '.db3', '.mcap'):
        raise MapError(
            f'{path} is not a bag: expected a ROS 1 .bag file, a ROS 2 .db3 or .mcap file '
            f'or a ROS 2 bag folder, got a {path.suffix or "suffix-less"} file')
    return path


def _damaged(path: Path, err: BaseException) -> MapError:
    """Build the MapError for a bag rosbags cannot read."""
    detail = str(err) or type(err).__name__
    hint = ('re-copy or re-record it (a truncated ROS 1 bag may be repaired with '
            '`rosbag reindex`)' if path.suffix == '.bag' else
            're-copy or re-record it (`ros2 bag reindex` rebuilds a lost metadata.yaml)')
    return MapError(f'cannot read bag {path}: it is not a ROS bag or it is damaged '
                    f'(truncated or corrupt): {detail}; {hint}')


@contextmanager
def _open(path: PathLike) -> Iterator[Tuple[Path, AnyReader]]:
    """Open a bag with AnyReader, turning every failure into a MapError."""
    path = _bag_path(path)
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except (MapError, ImageError):
        raise
    except Exception as err:  # rosbags raises many types on corrupt input
        raise _damaged(path, err) from err
    try:
        yield path, reader
    finally:
        reader.close()


def _topic_types(reader: AnyReader) -> Dict[str, Tuple[str, int]]:
    """Map topic -> (msgtype, count); several types on one topic are joined with ' | '."""
    types: Dict[str, set] = {}
    for connection in reader.connections:
        types.setdefault(connection.topic, set()).add(connection.msgtype)
    return {topic: (' | '.join(sorted(types.get(topic, ()))) or '?', int(info.msgcount))
            for topic, info in reader.topics.items()}


def _listing(topics: Dict[str, Tuple[str, int]]) -> str:
    if not topics:
        return 'the bag has no topics'
    return 'its topics are: ' + ', '.join(
        f'{topic} ({msgtype}, {count} messages)' for topic, (msgtype, count) in
        sorted(topics.items()))


def _connections(path: Path, reader: AnyReader, topic: str,
                 expected: Optional[Sequence[str]]) -> List[Any]:
    """Return the connections of topic, checking that it exists and carries expected."""
    if not isinstance(topic, str) or not topic:
        raise MapError(f'topic must be a non-empty string, got {topic!r}')
    topics = _topic_types(reader)
    if topic not in topics and not topic.startswith('/') and '/' + topic in topics:
        topic = '/' + topic
    if topic not in topics:
        raise MapError(f'topic {topic!r} is not in bag {path}; {_listing(topics)}')
    connections = [c for c in reader.connections if c.topic == topic]
    if expected is not None:
        wrong = sorted({c.msgtype for c in connections} - set(expected))
        if wrong:
            raise MapError(
                f'topic {topic} of bag {path} carries {", ".join(wrong)} messages, but one of '
                f'{", ".join(expected)} is expected; pick another topic ({_listing(topics)})')
    return connections


def _messages(path: Path, reader: AnyReader,
              connections: List[Any]) -> Iterator[Tuple[Any, int, bytes]]:
    """Yield reader.messages, raising read failures (a damaged chunk) as MapError."""
    stream = reader.messages(connections=connections)
    while True:
        try:
            item = next(stream)
        except StopIteration:
            return
        except Exception as err:
            raise _damaged(path, err) from err
        yield item


def _stamp(header: Any, receive_ns: int) -> float:
    """Return the header stamp in seconds, or the receive time if the stamp is zero."""
    sec, nanosec = int(header.stamp.sec), int(header.stamp.nanosec)
    if sec == 0 and nanosec == 0:
        return receive_ns * 1e-9
    return sec + nanosec * 1e-9


def bag_topics(path: PathLike) -> Dict[str, Tuple[str, int]]:
    """Return the topics of a bag: topic -> (message type, message count).

    Types are ROS 2 style ('sensor_msgs/msg/Image') for ROS 1 bags too.
    """
    with _open(path) as (_, reader):
        return _topic_types(reader)


def count_messages(path: PathLike, topic: str) -> int:
    """Return the number of messages on topic (MapError if the bag lacks it)."""
    with _open(path) as (bag, reader):
        connections = _connections(bag, reader, topic, None)
        return sum(int(c.msgcount) for c in connections)


def _decode(msgtype: str, msg: Any) -> np.ndarray:
    if msgtype == _IMAGE:
        return decode_raw(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                          msg.data, bool(msg.is_bigendian))
    return decode_compressed(msg.format, msg.data)


def read_images(path: PathLike, topic: str, skip_invalid: bool = True,
                on_error: Optional[Callable[[int, str], None]] = None,
                indices: Optional[Container[int]] = None) -> Iterator[BagImage]:
    """Iterate over the images of an Image or CompressedImage topic, decoded to RGB.

    The bag and topic are checked at once (MapError), before the first image is read.
    Images come in bag (receive time) order. A message that cannot be deserialized or
    decoded is skipped and reported as on_error(index, message) (logged as a warning
    when on_error is None) if skip_invalid, else raised as ImageError. indices: only the
    messages with these indices on the topic (the others are not decoded).
    """
    with _open(path) as (bag, reader):
        _connections(bag, reader, topic, IMAGE_TYPES)
    return _iter_images(bag, topic, skip_invalid, on_error, indices)


def _iter_images(bag: Path, topic: str, skip_invalid: bool,
                 on_error: Optional[Callable[[int, str], None]],
                 indices: Optional[Container[int]]) -> Iterator[BagImage]:
    with _open(bag) as (_, reader):
        connections = _connections(bag, reader, topic, IMAGE_TYPES)
        for index, (connection, receive_ns, raw) in enumerate(
                _messages(bag, reader, connections)):
            if indices is not None and index not in indices:
                continue
            try:
                try:
                    msg = reader.deserialize(raw, connection.msgtype)
                except Exception as err:
                    raise ImageError(f'cannot deserialize the message: {err}') from err
                rgb = _decode(connection.msgtype, msg)
            except ImageError as err:
                message = f'{connection.topic} message {index} of bag {bag}: {err}'
                if not skip_invalid:
                    raise ImageError(message) from err
                if on_error is None:
                    _LOG.warning('skipping invalid image: %s', message)
                else:
                    on_error(index, message)
                continue
            yield BagImage(stamp=_stamp(msg.header, receive_ns),
                           frame_id=str(msg.header.frame_id), topic=connection.topic,
                           index=index, rgb=rgb)


@dataclass
class BagMessage:
    """One message of a bag as recorded: deserialized by rosbags, nothing decoded.

    msg is rosbags' message object (fields as in the .msg definition; uint8[] data as a
    numpy array); for graph replay, which publishes camera frames as they were recorded.
    """

    index: int          # 0-based index among the topic's messages, as in BagImage
    topic: str
    msgtype: str        # ROS 2 style, e.g. 'sensor_msgs/msg/CompressedImage'
    receive_ns: int     # the bag's receive time
    msg: Any


def read_messages(path: PathLike, topic: str,
                  indices: Optional[Container[int]] = None,
                  expected: Optional[Sequence[str]] = IMAGE_TYPES) -> Iterator[BagMessage]:
    """Iterate over a topic's messages deserialized but not decoded, in bag order.

    indices: only these (as :func:`read_images` numbers them; the others are not even
    deserialized). expected: the message types the topic must carry (MapError
    otherwise; None: any). A message that cannot be deserialized raises MapError.
    """
    with _open(path) as (bag, reader):
        _connections(bag, reader, topic, expected)
    return _iter_messages(bag, topic, indices, expected)


def _iter_messages(bag: Path, topic: str, indices: Optional[Container[int]],
                   expected: Optional[Sequence[str]]) -> Iterator[BagMessage]:
    with _open(bag) as (_, reader):
        connections = _connections(bag, reader, topic, expected)
        for index, (connection, receive_ns, raw) in enumerate(
                _messages(bag, reader, connections)):
            if indices is not None and index not in indices:
                continue
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as err:
                raise MapError(f'cannot deserialize {connection.topic} message {index} of bag '
                               f'{bag}: {err}; the bag is damaged') from err
            yield BagMessage(index=index, topic=connection.topic, msgtype=connection.msgtype,
                             receive_ns=int(receive_ns), msg=msg)


def _pose(msgtype: str, msg: Any, stamp: float) -> Union[BagPose, BagFix]:
    frame_id = str(msg.header.frame_id)
    if msgtype == _NAVSATFIX:
        return BagFix(stamp=stamp, frame_id=frame_id, latitude=float(msg.latitude),
                      longitude=float(msg.longitude), altitude=float(msg.altitude),
                      status=int(msg.status.status))
    # Odometry and PoseWithCovarianceStamped nest the pose once more than PoseStamped.
    pose = msg.pose if msgtype == _POSE_STAMPED else msg.pose.pose
    p, q = pose.position, pose.orientation
    return BagPose(stamp=stamp, frame_id=frame_id, x=float(p.x), y=float(p.y), z=float(p.z),
                   qx=float(q.x), qy=float(q.y), qz=float(q.z), qw=float(q.w))


def read_poses(path: PathLike, topic: str) -> List[Union[BagPose, BagFix]]:
    """Read a pose topic, in bag (receive time) order.

    Odometry, PoseStamped and PoseWithCovarianceStamped messages give BagPose (the
    pose's frame is the header's frame_id), NavSatFix messages BagFix.
    """
    with _open(path) as (bag, reader):
        connections = _connections(bag, reader, topic, POSE_TYPES)
        poses: List[Union[BagPose, BagFix]] = []
        for index, (connection, receive_ns, raw) in enumerate(
                _messages(bag, reader, connections)):
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as err:
                raise MapError(f'cannot deserialize {connection.topic} message {index} of bag '
                               f'{bag}: {err}; the bag is damaged') from err
            poses.append(_pose(connection.msgtype, msg, _stamp(msg.header, receive_ns)))
        return poses


# ----------------------------------------------------------------------------- writing


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
