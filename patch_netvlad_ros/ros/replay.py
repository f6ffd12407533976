# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Replay a drive through the ROS graph and record what comes out.

A replay publisher plays the drive's frames as sensor_msgs/Image (with their recorded
stamps and frame ids) at ``rate`` times the recorded speed and publishes /clock from the
same stamps (for nodes with use_sim_time); a recorder collects ~/pose and ~/match. The
three graph nodes run in this process on one MultiThreadedExecutor (the one-process
runner's arrangement); frames still travel between them over DDS.
"""

from dataclasses import dataclass, field
import threading
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from geometry_msgs.msg import PoseWithCovarianceStamped
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from .conversions import rgb_to_image
from .qos import pipeline_qos
from ..core.drives import DriveFrame
from ..msg import PlaceMatch

CAMERA_TOPIC = '/replay/image'


def _split(stamp: float) -> Tuple[int, int]:
    sec = int(stamp // 1)
    return sec, int(round((stamp - sec) * 1e9)) % 1_000_000_000


@dataclass
class ReplayRecord:
    """What the replay published and what the graph answered, by stamp (sec, nanosec)."""

    published: Dict[Tuple[int, int], float] = field(default_factory=dict)  # -> wall time
    matches: Dict[Tuple[int, int], Tuple[PlaceMatch, float]] = field(default_factory=dict)
    poses: Dict[Tuple[int, int], PoseWithCovarianceStamped] = field(default_factory=dict)
    batcher_stats: Optional[object] = None
    seconds: float = 0.0


class Recorder(Node):
    """Collect ~/pose and ~/match of localizer_node with their arrival (wall) times."""

    def __init__(self, record: ReplayRecord, localizer: str = '/localizer_node',
                 **kwargs) -> None:
        super().__init__('replay_recorder', **kwargs)
        self.record = record
        self.create_subscription(PlaceMatch, f'{localizer}/match', self._match, 1000)
        self.create_subscription(PoseWithCovarianceStamped, f'{localizer}/pose', self._pose,
                                 1000)

    def _match(self, msg: PlaceMatch) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.record.matches[key] = (msg, time.time())

    def _pose(self, msg: PoseWithCovarianceStamped) -> None:
        self.record.poses[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg


class ReplayPublisher(Node):
    """Publish frames at their recorded pace times ``rate``, and /clock."""

    def __init__(self, topic: str = CAMERA_TOPIC, **kwargs) -> None:
        super().__init__('replay_publisher', **kwargs)
        self.images = self.create_publisher(Image, topic, pipeline_qos(10))
        self.clock = self.create_publisher(Clock, '/clock', 10)

    def play(self, frames: Sequence[DriveFrame], rate: float, record: ReplayRecord,
             progress: Optional[Callable[[int], None]] = None) -> int:
        """Publish every frame (blocking); return how many were published."""
        if not frames:
            return 0
        t0, wall0 = frames[0].stamp, time.perf_counter()
        for frame in frames:
            due = wall0 + (frame.stamp - t0) / rate if rate > 0 else time.perf_counter()
            time.sleep(max(0.0, due - time.perf_counter()))
            sec, nsec = _split(frame.stamp)
            header = Header(frame_id=frame.frame_id)
            header.stamp.sec, header.stamp.nanosec = sec, nsec
            self.clock.publish(Clock(clock=header.stamp))
            msg = rgb_to_image(frame.rgb, header)
            record.published[(sec, nsec)] = time.time()
            self.images.publish(msg)
            if progress is not None:
                progress(1)
        return len(frames)


def replay_through_graph(frames: Sequence[DriveFrame], map_dir: str, checkpoint: str,
                         preset: str, size: Tuple[int, int], rate: float = 1.0,
                         localizer_params: Sequence[Parameter] = (),
                         timeout_per_frame: float = 30.0,
                         progress: Optional[Callable[[int], None]] = None,
                         batcher_params: Sequence[Parameter] = (),
                         descriptor_params: Sequence[Parameter] = ()) -> ReplayRecord:
    """Run the three nodes in this process, replay the frames, collect the answers.

    size: (height, width) of the network. By default the batcher holds every frame
    (nothing is dropped), so the result covers the whole drive whatever the rate; latency
    then includes queueing when the replay is faster than the graph. The *_params
    override any node parameter (e.g. buffer_capacity, to measure under back-pressure).
    """
    from ..nodes.camera_batcher import CameraBatcher
    from ..nodes.descriptor_node import DescriptorNode
    from ..nodes.localizer_node import LocalizerNode

    record = ReplayRecord()
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    dims = [Parameter('image_width', value=size[1]), Parameter('image_height', value=size[0]),
            Parameter('preset', value=preset)]
    try:
        nodes = [
            CameraBatcher(context=ctx, parameter_overrides=[
                *dims, Parameter('image_topic', value=CAMERA_TOPIC),
                Parameter('qos_reliability', value='reliable'),
                Parameter('qos_depth', value=min(1000, len(frames) + 1)),
                Parameter('buffer_capacity', value=max(8, len(frames) + 1)),
                *batcher_params]),
            DescriptorNode(context=ctx, parameter_overrides=[
                *dims, Parameter('checkpoint', value=str(checkpoint)), *descriptor_params]),
            LocalizerNode(context=ctx, parameter_overrides=[
                Parameter('map_path', value=str(map_dir)), *localizer_params]),
        ]
        recorder = Recorder(record, context=ctx)
        player = ReplayPublisher(context=ctx)
        executor = MultiThreadedExecutor(num_threads=6, context=ctx)
        for node in [*nodes, recorder]:
            executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        end = time.monotonic() + 30
        while player.images.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        start = time.perf_counter()
        player.play(frames, rate, record, progress)
        end = time.monotonic() + timeout_per_frame * max(1, len(frames))
        batcher = nodes[0]
        while time.monotonic() < end:
            stats = batcher.stats
            settled = stats.received == len(frames) and len(batcher.batcher) == 0
            answered = len(record.matches) + nodes[2].rejected
            if settled and answered >= stats.batched:
                time.sleep(0.2)  # the last ~/match may still be on its way to the recorder
                break
            time.sleep(0.05)
        record.seconds = time.perf_counter() - start
        record.batcher_stats = batcher.stats
        executor.shutdown()
        spin.join(timeout=10)
        for node in [*nodes, recorder, player]:
            node.destroy_node()
    finally:
        ctx.try_shutdown()
    return record
