# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ROS-free reading of ROS 1 (.bag) and ROS 2 (.db3, .mcap) bags.

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
from pathlib import Path
from typing import (Any, Callable, Container, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import get_typestore, Stores

from .encodings import decode_compressed, decode_raw
from ..errors import ImageError, MapError

PathLike = Union[str, Path]

_LOG = logging.getLogger(__name__)

#: Message types read_images accepts.
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
#: Message types read_poses accepts (the first three give BagPose, NavSatFix BagFix).
POSE_TYPES = ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/PoseStamped',
              'geometry_msgs/msg/PoseWithCovarianceStamped', 'sensor_msgs/msg/NavSatFix')

_IMAGE, _COMPRESSED = IMAGE_TYPES
_ODOMETRY, _POSE_STAMPED, _POSE_COV_STAMPED, _NAVSATFIX = POSE_TYPES


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


def _selected(bag: Path, reader: AnyReader, topic: str, expected: Optional[Sequence[str]],
              indices: Optional[Container[int]]) -> Iterator[Tuple[int, Any, int, bytes]]:
    """Yield (index on the topic, connection, receive time ns, raw) of the wanted messages."""
    connections = _connections(bag, reader, topic, expected)
    for index, (connection, receive_ns, raw) in enumerate(_messages(bag, reader, connections)):
        if indices is None or index in indices:
            yield index, connection, receive_ns, raw


def _iter_images(bag: Path, topic: str, skip_invalid: bool,
                 on_error: Optional[Callable[[int, str], None]],
                 indices: Optional[Container[int]]) -> Iterator[BagImage]:
    with _open(bag) as (_, reader):
        wanted = _selected(bag, reader, topic, IMAGE_TYPES, indices)
        for index, connection, receive_ns, raw in wanted:
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
        wanted = _selected(bag, reader, topic, expected, indices)
        for index, connection, receive_ns, raw in wanted:
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
