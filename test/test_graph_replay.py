# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Graph replay publishes a bag's camera messages as recorded, into the default graph.

Real bags written with rosbags from the shipped corridor queries (a mono8 .db3 and a
JPEG CompressedImage .mcap), read back as drives, replayed over real rclpy/DDS through the
package's nodes (three processes as launched, and the one-process arrangement) with
their default settings. A probe node in the test listens on the camera topic: what
arrives must be what was recorded; the nodes' /diagnostics must account for every frame.
"""

import os
import subprocess
import sys
import threading
import time
from typing import List

from bag_writers import write_bag
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
import torch

from conftest import CORRIDOR_SIZE
from patch_netvlad_ros.core.drives.bags import read_messages
from patch_netvlad_ros.core.drives.drives import read_bag_drive, read_folder_drive
from patch_netvlad_ros.core.drives.encodings import encode_raw
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps.extraction import describe_batches
from patch_netvlad_ros.core.maps.map_building import map_model_path
from patch_netvlad_ros.ros.graph_processes import format_param, rss_kib
from patch_netvlad_ros.ros.replay import recorded_frames, replay_drive

pytestmark = pytest.mark.ros

SIZE = (CORRIDOR_SIZE['image_height'], CORRIDOR_SIZE['image_width'])
STAMP0 = 1_700_000_000.0
#: Corridor queries in the bags: every 9th (12 frames), 0.5 s apart (a 2 Hz camera).
QUERIES = list(range(4, 111, 9))


def _bag(tmp_path, corridor_images, fmt: str, **kwargs):
    queries = corridor_images[1]
    stamps = [STAMP0 + 0.5 * k for k in range(len(QUERIES))]
    images = [(t, 'camera_optical', queries[i]) for t, i in zip(stamps, QUERIES)]
    poses = [(t, 'map', (float(i), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
             for t, i in zip(stamps, QUERIES)]
    return write_bag(tmp_path / f'queries.{fmt}' if fmt == 'bag' else tmp_path / 'queries',
                     fmt, images, poses=poses, **kwargs), stamps


class Probe:
    """Listen on the replay's camera topic in a context of its own (a second participant)."""

    def __init__(self, topic: str, kind) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node('camera_probe', context=self.context)
        self.got: List = []
        self.node.create_subscription(kind, topic, self.got.append, qos_profile_sensor_data)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        self.context.try_shutdown()


def check_accounting(record, published: int) -> dict:
    """Every frame published is lost before the batcher, answered or dropped by reason."""
    assert record.settled, record.ledger
    ledger = record.ledger
    assert len(record.published) == published
    up = ledger['before_batcher']
    assert ledger['received'] + up['upstream_lost_sequence'] == published
    assert ledger['received'] == ledger['answered'] + ledger['dropped_total']
    assert ledger['in_flight'] == 0 and ledger['unexplained'] == 0
    assert set(ledger['node_balance'].values()) == {0}
    assert ledger['answered'] == len(record.matches) >= 1
    assert set(record.diagnostics) == {'camera_batcher', 'descriptor_node', 'localizer_node'}
    return ledger


def check_places(record, keys, drive, corridor_model, corridor_map) -> None:
    """Answers carry the recorded stamps and the places the core finds offline for the
    same decoded frames (a near-tie may flip with batch composition: one allowed)."""
    localizer = Localizer(corridor_map)
    desc = list(describe_batches(corridor_model, [f.rgb for f in drive.frames]))
    g = torch.cat([d.global_desc for d in desc])
    patches = [torch.cat([d.patches[s] for d in desc]) for s in range(len(desc[0].patches))]
    assert set(record.matches) <= set(keys)
    answered = [(i, record.matches[k][0]) for i, k in enumerate(keys) if k in record.matches]
    same = sum(m.best_reference_id == localizer.localize_descriptors(
        g[i], [p[i] for p in patches]).reference.id for i, m in answered)
    assert same >= len(answered) - 1, (same, len(answered))


def test_mono8_bag_as_recorded_three_processes(corridor_images, corridor_model, corridor_map,
                                               corridor_map_dir, tmp_path):
    """mono8 Image frames at 160x120, as recorded, into three node processes."""
    bag, stamps = _bag(tmp_path, corridor_images, 'db3', encoding='mono8')
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE)
    assert len(drive.frames) == len(QUERIES)
    probe = Probe('/t_mono8/camera/image_raw', Image)
    try:
        record, keys = replay_drive(drive, str(corridor_map_dir),
                                    str(map_model_path(corridor_map_dir)),
                                    'speed', SIZE, rate=1.0, processes='three',
                                    namespace='/t_mono8')
        time.sleep(0.5)
    finally:
        probe.close()
    # What travelled is what was recorded: mono8, full size, recorded stamps and frame.
    assert {(m.encoding, m.width, m.height, m.step) for m in probe.got} == \
        {('mono8', 160, 120, 160)}
    assert sorted(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in probe.got) == \
        pytest.approx(stamps)
    assert {m.header.frame_id for m in probe.got} == {'camera_optical'}
    grey = np.frombuffer(bytes(probe.got[0].data), np.uint8).reshape(120, 160)
    rgb = corridor_images[1][QUERIES[0]].astype(float)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.abs(grey - luma).max() <= 1.0  # the recorded pixels, not a re-encoding
    assert record.encodings == {'mono8': len(QUERIES)} and record.processes == 'three'
    check_accounting(record, len(QUERIES))
    check_places(record, keys, drive, corridor_model, corridor_map)
    assert 'camera_batcher' in record.logs and 'descriptor_node' in record.logs


def test_compressed_bag_as_recorded_one_process(corridor_images, corridor_model,
                                                corridor_map, corridor_map_dir, tmp_path):
    """JPEG CompressedImage frames, as recorded, at 4x the recorded rate, in one process."""
    bag, stamps = _bag(tmp_path, corridor_images, 'mcap', compressed=True)
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE)
    recorded = [bytes(m.msg.data) for m in read_messages(bag, '/camera/image_raw')]
    probe = Probe('/t_jpeg/camera/image_raw/compressed', CompressedImage)
    try:
        record, keys = replay_drive(drive, str(corridor_map_dir),
                                    str(map_model_path(corridor_map_dir)),
                                    'speed', SIZE, rate=4.0, processes='one',
                                    namespace='/t_jpeg')
        time.sleep(0.5)
    finally:
        probe.close()
    assert {m.format for m in probe.got} == {'jpeg'} and len(probe.got) == len(QUERIES)
    assert sorted(bytes(m.data) for m in probe.got) == sorted(recorded)
    assert record.encodings == {'compressed jpeg': len(QUERIES)}
    assert record.processes == 'one' and not record.logs
    # 12 frames in 2.75 s: whatever the default buffer drops is counted, nothing else.
    ledger = check_accounting(record, len(QUERIES))
    assert {k for k, v in ledger['dropped'].items() if v} <= {'backpressure'}
    check_places(record, keys, drive, corridor_model, corridor_map)
    # The replay kept the recorded pace: 11 intervals of 0.5 s at 4x.
    assert record.seconds >= 11 * 0.5 / 4


@pytest.mark.parametrize('value', ['plain', '/a/path', '0001', 'true', '', 'x: y', 5, 0.25,
                                   1e-6, True, False, [0.45, 0.15, 0.4]])
def test_node_process_parameters_round_trip(value):
    """The graph processes' `-p name:=value` reads back as the value, type included."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=['--ros-args', '-p', format_param('p', value)])
    try:
        node = Node('params', context=ctx,
                    automatically_declare_parameters_from_overrides=True)
        got = node.get_parameter('p').value
        node.destroy_node()
    finally:
        ctx.try_shutdown()
    assert type(got) is type(value) or (isinstance(value, list) and list(got) == value)
    assert got == value or list(got) == value


def test_rss_of_a_process():
    """VmRSS of a live process in KiB (this one holds torch: tens of MiB at least)."""
    assert rss_kib(os.getpid()) > 10 * 1024
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    assert rss_kib(dead.pid) is None


@pytest.mark.parametrize('fmt', ['bag', 'db3', 'mcap'])
@pytest.mark.parametrize('kind', ['bgr8', 'mono16', 'jpeg'])
def test_recorded_frames_are_the_bags_messages(corridor_images, tmp_path, fmt, kind):
    """ROS 1 and ROS 2 bags, raw and compressed: each kept frame's message as written."""
    compressed = kind == 'jpeg'
    bag, stamps = _bag(tmp_path, corridor_images, fmt, compressed=compressed,
                       **({} if compressed else {'encoding': kind}))
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE)
    drive.frames = drive.frames[1::3]   # keyframes: only these are read and sent
    got = list(recorded_frames(drive))
    assert [f for f, _ in got] == drive.frames
    written = {m.index: m.msg for m in read_messages(bag, '/camera/image_raw')}
    for frame, msg in got:
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == \
            (int(frame.stamp), round(frame.stamp % 1 * 1e9))
        assert msg.header.frame_id == 'camera_optical'
        assert bytes(msg.data) == bytes(written[frame.index].data)
        if compressed:
            assert isinstance(msg, CompressedImage) and msg.format == 'jpeg'
        else:
            data, step = encode_raw(corridor_images[1][QUERIES[frame.index]], kind)
            assert isinstance(msg, Image) and bytes(msg.data) == data
            assert (msg.encoding, msg.width, msg.height, msg.step) == (kind, 160, 120, step)


def test_folder_drive_frames_are_the_image_files(corridor_set, tmp_path):
    """A folder drive replays each image file's bytes as a CompressedImage, as recorded."""
    files = [corridor_set.queries[i] for i in QUERIES]
    poses = tmp_path / 'poses.csv'
    poses.write_text('image,stamp,x,y\n' + ''.join(
        f'{p.name},{STAMP0 + 0.5 * k},{i},0\n' for k, (p, i) in enumerate(zip(files, QUERIES))))
    drive = read_folder_drive(files[0].parent, poses, SIZE)
    kept = {p.name for p in files}
    drive.frames = [f for f in drive.frames if f.source in kept]
    got = list(recorded_frames(drive))
    assert len(got) == len(QUERIES)
    for frame, msg in got:
        assert isinstance(msg, CompressedImage) and msg.format == 'jpeg'
        assert bytes(msg.data) == (files[0].parent / frame.source).read_bytes()
        assert msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 == \
            pytest.approx(frame.stamp)
