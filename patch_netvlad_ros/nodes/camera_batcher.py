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
A frame that cannot be converted, or is larger than ``max_image_pixels``, is dropped with a
throttled log line naming the problem. Every frame received is counted where it went, and
frames lost before this node are detected (publisher sequence gaps, DDS sample-lost
events, stamp gaps); the counters go to /diagnostics (:mod:`patch_netvlad_ros.ros.diagnostics`).
"""

import sys
import threading
import time
from typing import List, Optional

import cv2
from patch_netvlad_ros_interfaces.msg import ImageBatch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, UInt64

from .common import DEFAULT_PRESET, network_config, run_node
from ..core.config import PRESETS
from ..core.errors import ImageError
from ..core.graph.accounting import UpstreamLoss
from ..core.graph.batching import FrameBatcher
from ..core.graph.image_limits import (check_pixels, compressed_dimensions, DEFAULT_MAX_PIXELS,
                                       OversizedImage)
from ..core.model.image import resize_rgb
from ..ros.conversions import CONVERTERS, ImageDecoder, rgb_to_image, wall_time
from ..ros.diagnostics import DiagnosticsPublisher
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
    Param('max_image_pixels', DEFAULT_MAX_PIXELS, 'largest camera frame converted, in pixels '
          '(width x height; default 4096x4096): larger frames are dropped, logged and counted '
          '(converting one at full size stalls the camera callback for a second or more)',
          low=1, high=2 ** 31 - 1),
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
        self._start_accounting(p)
        qos = camera_qos(p['qos_reliability'], p['qos_depth'])
        if p['transport'] == 'compressed':
            topic = p['image_topic'].rstrip('/') + '/compressed'
            self.create_subscription(CompressedImage, topic, self.on_image, qos,
                                     callback_group=group, event_callbacks=self.camera_events)
        else:
            topic = p['image_topic']
            self.create_subscription(Image, topic, self.on_image, qos, callback_group=group,
                                     event_callbacks=self.camera_events)
        self.create_subscription(UInt64, 'image_batch_ack', self.on_ack, pipeline_qos(10),
                                 callback_group=group)
        # A timer sends partial batches by age; 4 checks per max age keeps the wait bounded.
        period = max(0.005, min(0.05, p['max_batch_age'] / 4 or 0.005))
        self.create_timer(period, self.flush, callback_group=group)
        self.get_logger().info(
            f"subscribed to {self.resolve_topic_name(topic)} ({p['transport']}, "
            f"{p['qos_reliability']}); batches of {p['batch_size']} at "
            f'{self.size[1]}x{self.size[0]}, converter {self.decode.name}')

    def _start_accounting(self, p) -> None:
        """Frame accounting: size limit, upstream loss detection, /diagnostics."""
        self.max_pixels = p['max_image_pixels']
        self.upstream = UpstreamLoss()
        self.camera_events = SubscriptionEventCallbacks(message_lost=self.on_message_lost)
        self.diagnostics = DiagnosticsPublisher(self, 'camera_batcher', self.counters)
        if p['qos_reliability'] != 'reliable':
            self.get_logger().info(
                'best-effort camera subscription: frames DDS cannot deliver whole are lost '
                'before this node (large ones above all; see qos_reliability) and counted '
                'as upstream_lost on /diagnostics')

    @property
    def stats(self):
        """The batcher's counters (core.batching.BatcherStats)."""
        return self.batcher.stats

    def counters(self) -> dict:
        """Return every frame counter and gauge, as published on /diagnostics."""
        with self._lock:
            counters = self.batcher.counters()
            counters.update(self.upstream.counters())
        return counters

    def on_message_lost(self, event) -> None:
        """DDS gave up on camera samples (e.g. a fragment of a large best-effort frame)."""
        with self._lock:
            counted = self.upstream.add_dds_event(event.total_count_change)
            total = self.upstream.dds_lost
        self.get_logger().warning(
            f'DDS lost {counted} camera frame(s) before they reached this node (about '
            f'{total} since start): with best-effort QoS a frame '
            f'travels in fragments and one lost fragment loses the frame; with Fast DDS on '
            "this project's machines most best-effort frames above about 512 KiB sent "
            'between processes were lost (640x480 rgb8 is 900 KiB). Use qos_reliability '
            "'reliable' when the camera publishes reliable, a compressed transport, or "
            'larger DDS socket buffers (net.core.rmem_max)', throttle_duration_sec=10.0)

    def _upstream(self, msg, info) -> None:
        """Count frames that never reached this callback (sequence and stamp gaps)."""
        gid = (info or {}).get('publisher_gid') or {}
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            missed = self.upstream.sequence.update(
                bytes(gid.get('data', b'')), (info or {}).get('publication_sequence_number'))
            self.upstream.stamps.update(stamp)
        if missed:
            self.get_logger().warning(
                f'{missed} camera frame(s) published never reached this node (publisher '
                f'sequence gap; {self.upstream.sequence.missed} since start): the '
                'subscription queue (qos_depth) overflowed while the callback was busy, or '
                'DDS lost them', throttle_duration_sec=10.0)

    def on_image(self, msg, info) -> None:
        """Check, convert, resize and queue one camera frame; publish a batch when due.

        info: rclpy's message info (publisher sequence numbers for the upstream count).
        """
        received = wall_time()
        self._upstream(msg, info)
        kind = 'CompressedImage' if isinstance(msg, CompressedImage) else 'Image'
        try:
            if kind == 'Image':
                check_pixels(msg.height, msg.width, self.max_pixels, f'{msg.encoding} Image')
            else:
                size = compressed_dimensions(msg.data)
                if size is not None:
                    check_pixels(*size, self.max_pixels, f'{msg.format} CompressedImage')
            rgb = self.decode(msg)
            check_pixels(rgb.shape[0], rgb.shape[1], self.max_pixels, kind)
            rgb = resize_rgb(rgb, *self.size)
        except OversizedImage as exc:
            with self._lock:
                self.batcher.count_oversized()
            self.get_logger().warning(f"dropped a {kind} (frame '{msg.header.frame_id}'): "
                                      f'{exc}', throttle_duration_sec=5.0)
            return
        except (ImageError, ValueError, cv2.error) as exc:
            with self._lock:
                self.batcher.count_invalid()
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
        """Publish every batch that is due and allowed (giving up unacknowledged ones)."""
        while True:
            with self._lock:
                given_up = self.batcher.stats.acks_timed_out
                taken = self.batcher.take(time.monotonic())
                stats = self.batcher.stats
                dropped = (stats.dropped_backpressure, stats.dropped_invalid)
                given_up = stats.acks_timed_out - given_up
            if given_up:
                self.get_logger().error(
                    f'descriptor_node acknowledged no batch for ack_timeout = '
                    f'{self.batcher.ack_timeout_s:g} s: gave up {given_up} batch(es); their '
                    'frames count as dropped_ack_timeout (is descriptor_node running?)',
                    throttle_duration_sec=10.0)
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
