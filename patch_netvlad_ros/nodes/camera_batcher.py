# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""camera_batcher: camera images in, batches of network-sized rgb8 images out.

Subscribes ``image_topic`` (sensor_msgs/Image, or CompressedImage on
``<image_topic>/compressed`` with transport 'compressed') with sensor-data QoS by default;
converts every common encoding to RGB, resizes to the network's input size and publishes
``image_batch`` (ImageBatch) by size or age, whichever comes first. The size is the map's
with ``map_path`` (as descriptor_node's with the same map), else ``preset``,
``image_width`` and ``image_height``, which must then be descriptor_node's.
descriptor_node acknowledges each batch on ``image_batch_ack``; while ``max_in_flight``
batches wait for it, frames queue in a buffer of ``buffer_capacity`` frames that drops
the oldest (counted).
A frame that cannot be converted is dropped with a throttled error naming the problem.
"""

import sys
import threading
import time
from typing import List, Optional

import cv2
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, UInt64

from .common import DEFAULT_PRESET, network_config, run_node
from ..core.batching import FrameBatcher
from ..core.config import PRESETS
from ..core.errors import ImageError
from ..core.image import resize_rgb
from ..msg import ImageBatch
from ..ros.conversions import CONVERTERS, ImageDecoder, rgb_to_image, wall_time
from ..ros.params import declare, Param, ParameterError
from ..ros.qos import camera_qos, pipeline_qos, RELIABILITIES

PARAMS = [
    Param('image_topic', 'image_raw', 'camera topic (relative names follow the namespace)'),
    Param('transport', 'raw', "'raw': sensor_msgs/Image on image_topic; 'compressed': "
          'sensor_msgs/CompressedImage on <image_topic>/compressed',
          choices=('raw', 'compressed')),
    Param('qos_reliability', 'sensor_data', 'camera subscription reliability',
          choices=RELIABILITIES),
    Param('qos_depth', 5, 'camera subscription queue depth', low=1, high=1000),
    Param('map_path', '', "map folder: frames are resized to the map's network input size "
          '(the one descriptor_node runs at with the same map)'),
    Param('preset', '', 'preset whose image size is used when image_width/height are 0 '
          f"(empty: the map's, else '{DEFAULT_PRESET}'; with map_path it must be the map's)",
          choices=('',) + tuple(sorted(PRESETS))),
    Param('image_width', 0, "network input width in px (0: the map's, else the preset's; "
          "with map_path it must be the map's)", low=0, high=8192),
    Param('image_height', 0, "network input height in px (0: the map's, else the preset's; "
          "with map_path it must be the map's)", low=0, high=8192),
    Param('batch_size', 4, 'frames per batch', low=1, high=256),
    Param('max_batch_age', 0.25, 'seconds the oldest frame may wait before a partial batch '
          'is sent', low=0.0, high=60.0),
    Param('buffer_capacity', 8, 'frames buffered while descriptor_node is busy; the oldest '
          'is dropped when full (bounded memory)', low=1, high=10000),
    Param('max_in_flight', 1, 'batches sent and not yet acknowledged by descriptor_node '
          '(0: no flow control)', low=0, high=100),
    Param('ack_timeout', 5.0, 'seconds after which an unacknowledged batch is given up',
          low=0.001, high=3600.0),
    Param('converter', 'auto', "image conversion: cv_bridge when installed ('auto'), or the "
          "package's own converter ('builtin')", choices=CONVERTERS),
]


class CameraBatcher(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('camera_batcher', **kwargs)
        p = declare(self, PARAMS)
        if p['batch_size'] > p['buffer_capacity']:
            raise ParameterError(f"parameter 'buffer_capacity' = {p['buffer_capacity']}: must "
                                 f"hold at least one batch (batch_size {p['batch_size']})")
        config, _ = network_config(p)
        self.size = (config.image_height, config.image_width)
        self.decode = ImageDecoder(p['converter'])
        self.batcher: FrameBatcher = FrameBatcher(
            p['batch_size'], p['max_batch_age'], p['buffer_capacity'], p['max_in_flight'],
            p['ack_timeout'])
        self._lock = threading.Lock()
        self.publisher = self.create_publisher(ImageBatch, 'image_batch',
                                               pipeline_qos(max(1, p['max_in_flight'])))
        group = MutuallyExclusiveCallbackGroup()
        qos = camera_qos(p['qos_reliability'], p['qos_depth'])
        if p['transport'] == 'compressed':
            topic = p['image_topic'].rstrip('/') + '/compressed'
            self.create_subscription(CompressedImage, topic, self.on_image, qos,
                                     callback_group=group)
        else:
            topic = p['image_topic']
            self.create_subscription(Image, topic, self.on_image, qos, callback_group=group)
        self.create_subscription(UInt64, 'image_batch_ack', self.on_ack, pipeline_qos(10),
                                 callback_group=group)
        # A timer sends partial batches by age; 4 checks per max age keeps the wait bounded.
        period = max(0.005, min(0.05, p['max_batch_age'] / 4 or 0.005))
        self.create_timer(period, self.flush, callback_group=group)
        self.get_logger().info(
            f"subscribed to {self.resolve_topic_name(topic)} ({p['transport']}, "
            f"{p['qos_reliability']}); batches of {p['batch_size']} at "
            f'{self.size[1]}x{self.size[0]}, converter {self.decode.name}')

    @property
    def stats(self):
        """Counters: received, batched, dropped_backpressure, dropped_invalid, batches."""
        return self.batcher.stats

    def on_image(self, msg) -> None:
        """Convert, resize and queue one camera frame; publish a batch when one is due."""
        received = wall_time()
        try:
            rgb = resize_rgb(self.decode(msg), *self.size)
        except (ImageError, ValueError, cv2.error) as exc:
            with self._lock:
                self.batcher.count_invalid()
            kind = 'CompressedImage' if isinstance(msg, CompressedImage) else 'Image'
            self.get_logger().error(
                f"dropped a {kind} (frame '{msg.header.frame_id}'): {exc}",
                throttle_duration_sec=5.0)
            return
        with self._lock:
            self.batcher.push((msg.header, rgb, received), time.monotonic())
        self.flush()

    def on_ack(self, msg: UInt64) -> None:
        """descriptor_node finished batch msg.data: send the next one if due."""
        with self._lock:
            self.batcher.ack(int(msg.data))
        self.flush()

    def flush(self) -> None:
        """Publish every batch that is due and allowed."""
        while True:
            with self._lock:
                taken = self.batcher.take(time.monotonic())
                stats = self.batcher.stats
                dropped = (stats.dropped_backpressure, stats.dropped_invalid)
            if taken is None:
                return
            seq, frames = taken
            self.publisher.publish(self._batch_msg(seq, frames, dropped))

    @staticmethod
    def _batch_msg(seq: int, frames: List, dropped) -> ImageBatch:
        msg = ImageBatch(sequence=seq, dropped_backpressure=dropped[0],
                         dropped_invalid=dropped[1])
        for header, rgb, received in frames:
            image = rgb_to_image(rgb, Header(stamp=header.stamp, frame_id=header.frame_id))
            msg.images.append(image)
            # The batcher's receipt time rides in the batch so latency covers conversion.
            msg.received.append(received)
        return msg


def main(args: Optional[List[str]] = None) -> int:
    """Run camera_batcher on its own (console script / `ros2 run`)."""
    return run_node(CameraBatcher, args)


if __name__ == '__main__':
    sys.exit(main())
