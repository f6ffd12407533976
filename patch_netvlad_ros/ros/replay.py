# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Replay a drive through the ROS graph as a robot would send it; record what comes out.

The drive's own camera messages are published as they were recorded: the bag's Image or
CompressedImage messages read with rosbags and not decoded (encoding, compression, size,
header stamp and frame id kept), or a folder drive's image files as CompressedImage (their
bytes, format from the suffix), at ``rate`` times the recorded pace, with /clock from the
same stamps, and, when asked, each frame's pose as nav_msgs/Odometry on ``odom`` at the
frame's stamp just before it (the drive's poses standing for the robot's odometry, as
pnv-evaluate's offline mode takes them; localizer_node's ``odom_topic``). They go into the
graph with its default settings (camera QoS, batcher buffer, batch size, flow control:
the parameter defaults, which config/localize.yaml repeats), so frames the graph would
drop on a robot are dropped here too: every node counts where its frames went and
publishes the counts on /diagnostics, and the record ends with the graph's ledger
(:func:`~patch_netvlad_ros.core.graph.accounting.graph_ledger`).

The graph runs as launched (:mod:`.graph_processes`: one process per node, the default)
or as the one-process runner runs it ('one': the three nodes on one
MultiThreadedExecutor in this process; DDS then delivers within the process, which
never loses a large best-effort frame). Everything runs in a namespace of its own, so a
live graph on the same ROS domain is left alone. The replay publisher offers reliable
QoS (rclcpp's default, which most camera drivers keep); what a frame meets on its way is
decided by the subscription, as on a robot.
"""

from dataclasses import dataclass, field
import os
from pathlib import Path
import threading
import time
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union)

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from patch_netvlad_ros_interfaces.msg import PlaceMatch
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from .diagnostics import DiagnosticsCollector, PERIOD_S
from .graph_processes import GraphProcesses, NODES
from .qos import pipeline_qos
from ..core.drives.bags import read_messages
from ..core.drives.drives import Drive, DriveFrame
from ..core.drives.poses import PoseSample
from ..core.errors import MapError
from ..core.graph.accounting import graph_ledger

#: Camera topic, relative to the replay's namespace.
CAMERA_TOPIC = 'camera/image_raw'
#: Odometry topic, relative to the replay's namespace (localizer_node's odom_topic).
ODOM_TOPIC = 'odom'
#: Frames of the replayed odometry (REP 105).
ODOM_FRAME, BASE_FRAME = 'odom', 'base_link'
#: Suffix image_transport's compressed transport adds to the camera topic.
COMPRESSED = '/compressed'
CameraMsg = Union[Image, CompressedImage]
StampKey = Tuple[int, int]
#: Image file suffixes -> CompressedImage format of a folder drive's frames.
_FORMATS = {'.jpg': 'jpeg', '.jpeg': 'jpeg', '.png': 'png'}


def _split(stamp: float) -> StampKey:
    sec = int(stamp // 1)
    return sec, int(round((stamp - sec) * 1e9)) % 1_000_000_000


def key_of(msg: Any) -> StampKey:
    """Return a message's header stamp as (sec, nanosec)."""
    return int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)


def _header(recorded: Any) -> Header:
    stamp = recorded.header.stamp
    return Header(stamp=Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec)),
                  frame_id=str(recorded.header.frame_id))


def to_ros_message(msgtype: str, recorded: Any) -> CameraMsg:
    """Make the rclpy message of a camera message deserialized by rosbags (no decoding).

    ROS 1 images (whose header has a seq) become their ROS 2 equivalent field by field.
    """
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        msg = CompressedImage(header=_header(recorded), format=str(recorded.format))
    elif msgtype == 'sensor_msgs/msg/Image':
        msg = Image(header=_header(recorded), height=int(recorded.height),
                    width=int(recorded.width), encoding=str(recorded.encoding),
                    is_bigendian=int(recorded.is_bigendian), step=int(recorded.step))
    else:
        raise MapError(f'{msgtype} is not a camera message (Image or CompressedImage)')
    msg.data = bytes(memoryview(recorded.data).cast('B'))
    return msg


def recorded_frames(drive: Drive) -> Iterator[Tuple[DriveFrame, CameraMsg]]:
    """Yield each kept frame of the drive with its camera message as recorded, in order.

    Bag drives: the message read with rosbags (only the kept ones are deserialized).
    Folder drives: the image file's bytes as a CompressedImage stamped with the frame's
    stamp and frame id. Streams: only one message is held at a time.
    """
    if drive.raw_source is None:
        raise MapError(f'drive {drive.name} does not say where its images were recorded: '
                       'read it with read_bag_drive or read_folder_drive')
    source, topic = drive.raw_source
    if topic:
        by_index = {f.index: f for f in drive.frames}
        for recorded in read_messages(source, topic, set(by_index)):
            yield by_index[recorded.index], to_ros_message(recorded.msgtype, recorded.msg)
        return
    for frame in drive.frames:
        path = Path(source) / frame.source
        sec, nanosec = _split(frame.stamp)
        msg = CompressedImage(header=Header(stamp=Time(sec=sec, nanosec=nanosec),
                                            frame_id=frame.frame_id),
                              format=_FORMATS.get(path.suffix.lower(), path.suffix[1:].lower()))
        msg.data = path.read_bytes()
        yield frame, msg


def odometry_message(pose: PoseSample, stamp: Time) -> Odometry:
    """Return a pose as nav_msgs/Odometry (odom -> base_link) stamped ``stamp``."""
    msg = Odometry(header=Header(stamp=stamp, frame_id=ODOM_FRAME), child_frame_id=BASE_FRAME)
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = float(pose.x), float(pose.y), float(pose.z)
    q.x, q.y, q.z, q.w = float(pose.qx), float(pose.qy), float(pose.qz), float(pose.qw)
    return msg


@dataclass
class ReplayRecord:
    """What the replay published and what the graph answered, by stamp (sec, nanosec).

    diagnostics: each node's last frames status; worst: each node's worst level reported
    and its message; ledger: the graph's accounting from the last statuses (None if a
    node never reported); settled: the run ended with nothing in flight.
    """

    published: Dict[StampKey, float] = field(default_factory=dict)  # -> wall time
    matches: Dict[StampKey, Tuple[PlaceMatch, float]] = field(default_factory=dict)
    poses: Dict[StampKey, PoseWithCovarianceStamped] = field(default_factory=dict)
    encodings: Dict[str, int] = field(default_factory=dict)  # published, per encoding
    diagnostics: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    worst: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # worst level, message
    ledger: Optional[Dict[str, Any]] = None
    settled: bool = False
    processes: str = 'three'
    seconds: float = 0.0
    logs: Dict[str, str] = field(default_factory=dict)


class Recorder(Node):
    """Collect ~/pose and ~/match of localizer_node (with arrival times) and /diagnostics."""

    def __init__(self, record: ReplayRecord, localizer: str = '/localizer_node',
                 **kwargs) -> None:
        super().__init__('replay_recorder', **kwargs)
        self.record = record
        self.match_topic = f'{localizer}/match'
        self.create_subscription(PlaceMatch, self.match_topic, self._match, 1000)
        self.create_subscription(PoseWithCovarianceStamped, f'{localizer}/pose', self._pose,
                                 1000)
        self.diagnostics = DiagnosticsCollector(self)

    def _match(self, msg: PlaceMatch) -> None:
        self.record.matches[key_of(msg)] = (msg, time.time())

    def _pose(self, msg: PoseWithCovarianceStamped) -> None:
        self.record.poses[key_of(msg)] = msg


class ReplayPublisher(Node):
    """Publish camera messages at their recorded pace times ``rate``, /clock, and odometry."""

    def __init__(self, compressed: bool, topic: str = CAMERA_TOPIC, odometry: bool = False,
                 **kwargs) -> None:
        super().__init__('replay_publisher', **kwargs)
        kind, topic = (CompressedImage, topic + COMPRESSED) if compressed else (Image, topic)
        self.images = self.create_publisher(kind, topic, pipeline_qos(10))
        self.clock = self.create_publisher(Clock, '/clock', 10)
        self.odom = self.create_publisher(Odometry, ODOM_TOPIC, 50) if odometry else None

    def play(self, frames: Iterable[Tuple[float, CameraMsg]], rate: float,
             record: ReplayRecord, progress: Optional[Callable[[int], None]] = None,
             odometry: Optional[Mapping[StampKey, Odometry]] = None) -> int:
        """Publish (stamp, message) pairs, paced by stamp / rate (blocking); return the count.

        rate <= 0: as fast as possible. odometry: by camera stamp key, published just
        before its frame (looked up after the frame is drawn from ``frames``, so a
        generator may fill it as it goes).
        """
        count, t0, wall0 = 0, None, time.perf_counter()
        for stamp, msg in frames:
            t0 = stamp if t0 is None else t0
            due = wall0 + (stamp - t0) / rate if rate > 0 else time.perf_counter()
            time.sleep(max(0.0, due - time.perf_counter()))
            self.clock.publish(Clock(clock=msg.header.stamp))
            record.published[key_of(msg)] = time.time()
            name = msg.encoding if isinstance(msg, Image) else f'compressed {msg.format}'
            record.encodings[name] = record.encodings.get(name, 0) + 1
            odom = None if odometry is None else odometry.get(key_of(msg))
            if self.odom is not None and odom is not None:
                self.odom.publish(odom)
            self.images.publish(msg)
            count += 1
            if progress is not None:
                progress(1)
        return count


def _in_process(params: Mapping[str, Mapping[str, Any]], namespace: str, ctx) -> List[Node]:
    from ..nodes.camera_batcher import CameraBatcher
    from ..nodes.descriptor_node import DescriptorNode
    from ..nodes.localizer_node import LocalizerNode
    classes = {'camera_batcher': CameraBatcher, 'descriptor_node': DescriptorNode,
               'localizer_node': LocalizerNode}
    nodes: List[Node] = []
    try:
        for kind, cls in classes.items():
            overrides = [Parameter(k, value=v) for k, v in params.get(kind, {}).items()]
            nodes.append(cls(context=ctx, namespace=namespace, parameter_overrides=overrides))
    except BaseException:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


def graph_params(map_dir: str, checkpoint: str, preset: str, size: Tuple[int, int],
                 compressed: bool, batcher: Mapping[str, Any] = (),
                 descriptor: Mapping[str, Any] = (),
                 localizer: Mapping[str, Any] = ()) -> Dict[str, Dict[str, Any]]:
    """Parameters of the three nodes: the wiring (map, model, size, camera topic) + extras.

    Everything else stays at its default, which is what the launch file starts with.
    """
    model = {'map_path': str(map_dir), 'checkpoint': str(checkpoint), 'preset': preset,
             'image_height': int(size[0]), 'image_width': int(size[1])}
    return {
        'camera_batcher': {**model, 'image_topic': CAMERA_TOPIC,
                           'transport': 'compressed' if compressed else 'raw', **dict(batcher)},
        'descriptor_node': {**model, **dict(descriptor)},
        'localizer_node': {'map_path': str(map_dir), **dict(localizer)},
    }


def _wait_ready(recorder: Recorder, player: ReplayPublisher, names: Dict[str, str],
                graph: Optional[GraphProcesses], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if graph is not None and graph.exited():
            raise MapError(f'graph node(s) exited during start-up: {graph.exited()}; logs:\n'
                           + '\n'.join(f'--- {k}\n{v[-3000:]}'
                                       for k, v in graph.read_logs().items()))
        if (player.images.get_subscription_count() > 0
                and recorder.count_publishers(recorder.match_topic) > 0
                and recorder.diagnostics.by_kind(names) is not None):
            return
        time.sleep(0.1)
    raise MapError(f'the graph did not come up within {timeout:.0f} s')


def _settle(record: ReplayRecord, recorder: Recorder, names: Dict[str, str],
            graph: Optional[GraphProcesses], deadline: float) -> None:
    """Wait for two rounds of reports after the last frame with the same settled ledger.

    Settled: nothing in flight; the same twice: camera_batcher received nothing more.
    """
    after = time.monotonic() + 0.5 * PERIOD_S
    previous = None
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if graph is not None and graph.exited():
            break
        latest = recorder.diagnostics.latest()
        if not all(latest.get(n, {}).get('time', 0.0) > after for n in names.values()):
            continue
        ledger = graph_ledger({kind: latest[name]['values'] for kind, name in names.items()})
        record.diagnostics = {kind: latest[name] for kind, name in names.items()}
        record.ledger = ledger
        state = (ledger['received'], ledger['answered'], ledger['dropped_total'])
        if ledger['settled'] and state == previous and len(record.matches) >= state[1]:
            record.settled = True
            return
        previous = state if ledger['settled'] else None
        after = max(latest[n]['time'] for n in names.values())


def replay_through_graph(frames: Iterable[Tuple[float, CameraMsg]], compressed: bool,
                         map_dir: str, checkpoint: str, preset: str, size: Tuple[int, int],
                         rate: float = 1.0, processes: str = 'three',
                         localizer_params: Mapping[str, Any] = (),
                         batcher_params: Mapping[str, Any] = (),
                         descriptor_params: Mapping[str, Any] = (),
                         expected_frames: int = 0, timeout_per_frame: float = 30.0,
                         start_timeout: float = 600.0, namespace: str = '',
                         progress: Optional[Callable[[int], None]] = None,
                         on_start: Optional[Callable[[Dict[str, int]], None]] = None,
                         odometry: Optional[Mapping[StampKey, Odometry]] = None
                         ) -> ReplayRecord:
    """Start the graph, replay (stamp, camera message) pairs, wait for it to settle.

    compressed: the messages are CompressedImage (camera_batcher subscribes the
    compressed transport). size: (height, width) of the map's network. processes:
    'three' (as launched) or 'one' (this process). The *_params override node
    parameters (everything else stays at its default). namespace: of the graph and
    the replay (default: /pnv_replay_<pid>). on_start: called with the nodes' process
    ids (node kind -> pid; this process's for 'one') once the graph is up, before the
    first frame. odometry: by camera stamp key, published on :data:`ODOM_TOPIC` before
    each frame (:meth:`ReplayPublisher.play`), and localizer_node's odom_topic set to it.
    Returns the record; its ledger says where every frame went.
    """
    if processes not in ('one', 'three'):
        raise ValueError(f"processes must be 'one' or 'three'; got {processes!r}")
    namespace = namespace or f'/pnv_replay_{os.getpid()}'
    names = {kind: f'{namespace}/{kind}' for kind in NODES}
    if odometry is not None:
        localizer_params = {'odom_topic': ODOM_TOPIC, **dict(localizer_params)}
    params = graph_params(map_dir, checkpoint, preset, size, compressed, batcher_params,
                          descriptor_params, localizer_params)
    record = ReplayRecord(processes=processes)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    graph, nodes = None, []
    try:
        if processes == 'three':
            graph = GraphProcesses.start(params, namespace)
        else:
            nodes = _in_process(params, namespace, ctx)
        recorder = Recorder(record, names['localizer_node'], context=ctx, namespace=namespace)
        player = ReplayPublisher(compressed, odometry=odometry is not None, context=ctx,
                                 namespace=namespace)
        executor = MultiThreadedExecutor(num_threads=6, context=ctx)
        for node in [*nodes, recorder]:
            executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        try:
            _wait_ready(recorder, player, names, graph, start_timeout)
            if on_start is not None:
                on_start(graph.pids if graph is not None else
                         {kind: os.getpid() for kind in NODES})
            start = time.perf_counter()
            count = player.play(frames, rate, record, progress, odometry)
            deadline = time.monotonic() + timeout_per_frame * max(1, count, expected_frames)
            _settle(record, recorder, names, graph, deadline)
            record.seconds = time.perf_counter() - start
            record.worst = {kind: recorder.diagnostics.worst[name]
                            for kind, name in names.items()
                            if name in recorder.diagnostics.worst}
        finally:
            executor.shutdown()
            spin.join(timeout=10)
            for node in [*nodes, recorder, player]:
                node.destroy_node()
    finally:
        if graph is not None:
            record.logs = graph.stop()
        ctx.try_shutdown()
    return record


def replay_drive(drive: Drive, map_dir: str, checkpoint: str, preset: str,
                 size: Tuple[int, int], rate: float = 1.0, processes: str = 'three',
                 localizer_params: Mapping[str, Any] = (),
                 progress: Optional[Callable[[int], None]] = None, odometry: bool = False,
                 **options: Any) -> Tuple[ReplayRecord, List[Optional[StampKey]]]:
    """Replay a drive's recorded camera messages; return the record and each frame's key.

    keys[i]: the stamp key frame i was published under (its answer's key in
    record.matches), None if it was not published. odometry: also publish each frame's
    pose as odometry at its camera stamp (module doc). options: more keyword arguments of
    :func:`replay_through_graph` (batcher_params, namespace, ...).
    """
    first = next(recorded_frames(drive), None)
    if first is None:
        raise MapError(f'drive {drive.name} has no frames to replay')
    compressed = isinstance(first[1], CompressedImage)
    keys: Dict[int, StampKey] = {}
    odom: Optional[Dict[StampKey, Odometry]] = {} if odometry else None

    def stream() -> Iterator[Tuple[float, CameraMsg]]:
        for frame, msg in recorded_frames(drive):
            if isinstance(msg, CompressedImage) != compressed:
                raise MapError(f'drive {drive.name} mixes Image and CompressedImage messages: '
                               'replay needs one kind')
            keys[id(frame)] = key_of(msg)
            if odom is not None:
                odom[key_of(msg)] = odometry_message(frame.pose, msg.header.stamp)
            yield frame.stamp, msg

    record = replay_through_graph(stream(), compressed, map_dir, checkpoint, preset, size,
                                  rate, processes, localizer_params,
                                  expected_frames=len(drive.frames), progress=progress,
                                  odometry=odom, **options)
    return record, [keys.get(id(f)) for f in drive.frames]


def frames_of(messages: Sequence[CameraMsg]) -> List[Tuple[float, CameraMsg]]:
    """Pair messages with their header stamps in seconds (for replay_through_graph)."""
    return [(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, m) for m in messages]
