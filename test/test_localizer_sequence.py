# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""localizer_node with the map's fit and the sequence filter, on real rclpy over Fast DDS.

The corridor map is fitted on itself (fitted_corridor.py: fusion weights and calibrated
confidence, place radius 2 m) and saved as a map folder. Frames go in as the graph sends
them: PlaceDescriptors of real corridor queries (or real images through the three nodes),
nav_msgs/Odometry on a topic; what comes out on ~/match and ~/pose is compared with the
core run offline on the same inputs (the descriptors as the node decodes them, the
odometry as the node's buffer interpolates it).
"""

import math
from pathlib import Path
import time
from typing import List

from fitted_corridor import fitted_map, PLACE_RADIUS
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
import numpy as np
from patch_netvlad_ros_interfaces.msg import PlaceDescriptors, PlaceMatch
import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_spinner import Spinner
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from conftest import CORRIDOR_SIZE, TEST_DATA
from patch_netvlad_ros.core.drives.poses import PoseSample
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.localization.odometry import OdometryBuffer
from patch_netvlad_ros.core.localization.sequence import SequenceLocalizer
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.map_building import map_model_path
from patch_netvlad_ros.core.model.checkpoint import model_digest
from patch_netvlad_ros.core.model.image import load_image
from patch_netvlad_ros.nodes.camera_batcher import CameraBatcher
from patch_netvlad_ros.nodes.descriptor_node import DescriptorNode
from patch_netvlad_ros.nodes.localizer_node import LocalizerNode
from patch_netvlad_ros.ros.conversions import (descriptors_to_msg, msg_to_descriptors,
                                               rgb_to_image, seconds)
from patch_netvlad_ros.ros.params import ParameterError

pytestmark = pytest.mark.ros

STAMP0 = 1_700_000_000
#: A contiguous stretch of the corridor queries, at the drive's 2 Hz.
FRAMES = list(range(20, 80))
PERIOD = 0.5


def header_at(t: float) -> Header:
    """A camera header stamped t seconds after STAMP0 (nanoseconds kept)."""
    h = Header(frame_id='camera_optical')
    whole = math.floor(t)
    h.stamp.sec, h.stamp.nanosec = STAMP0 + whole, int(round((t - whole) * 1e9))
    return h


def save_map(ref_map: ReferenceMap, folder: Path, model) -> Path:
    """Save a map folder that keeps its model (a link to the cached checkpoint)."""
    path = ref_map.save(folder)
    map_model_path(path).symlink_to(model.checkpoint_path)
    return path


@pytest.fixture(scope='module')
def fitted_dir(corridor_map, corridor_model, tmp_path_factory) -> Path:
    """The corridor map fitted on itself, as a map folder."""
    return save_map(fitted_map(corridor_map), tmp_path_factory.mktemp('seq') / 'fitted',
                    corridor_model)


@pytest.fixture(scope='module')
def unfitted_dir(corridor_map, corridor_model, tmp_path_factory) -> Path:
    """The corridor map without a fit (as maps built before fitting existed)."""
    return save_map(corridor_map, tmp_path_factory.mktemp('seq') / 'unfitted', corridor_model)


@pytest.fixture
def context():
    """A ROS context of the test's own."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


class Probe(Spinner):
    """Nodes and a probe (publishers, recorders) spinning in a thread."""

    def __init__(self, nodes: List[Node], context) -> None:
        self.nodes = nodes
        self.node = Node('probe', context=context)
        self.matches: List[PlaceMatch] = []
        self.poses: List[PoseWithCovarianceStamped] = []
        self.node.create_subscription(PlaceMatch, '/localizer_node/match',
                                      self.matches.append, 200)
        self.node.create_subscription(PoseWithCovarianceStamped, '/localizer_node/pose',
                                      self.poses.append, 200)
        self.descriptors = self.node.create_publisher(PlaceDescriptors, '/place_descriptors',
                                                      10)
        self.odom = self.node.create_publisher(Odometry, '/odom', 50)
        self.images = self.node.create_publisher(Image, '/camera/image_raw', 10)
        super().__init__(context, [*nodes, self.node], threads=4)


def localizer_node(context, map_dir: Path, *params: Parameter) -> LocalizerNode:
    """localizer_node on a map (checksums not verified: the tests' maps are fresh)."""
    return LocalizerNode(context=context, parameter_overrides=[
        Parameter('map_path', value=str(map_dir)), Parameter('verify_map', value=False),
        *params])


def odometry_msg(t: float, x: float) -> Odometry:
    """Odometry at x metres along the corridor (heading +x), stamped t s after STAMP0."""
    msg = Odometry(header=header_at(t), child_frame_id='base_link')
    msg.header.frame_id = 'odom'
    msg.pose.pose.position.x = x
    msg.pose.pose.orientation.w = 1.0
    return msg


def query_msg(corridor_model, descriptors, i: int, t: float) -> PlaceDescriptors:
    """PlaceDescriptors of corridor query i (float16 patches, as descriptor_node sends)."""
    g, patches = descriptors
    return descriptors_to_msg(header_at(t), corridor_model.config, model_digest(corridor_model),
                              g[i], [p[i] for p in patches])


def test_sequence_answers_equal_the_offline_filter_with_odometry(
        context, fitted_dir, corridor_model, corridor_query_descriptors, capfd):
    """60 consecutive queries with odometry between the frames' stamps: the node's single-
    frame and sequence answers are the core's on the same inputs, ~/pose carries the
    sequence's place exactly when its confidence reaches the map's threshold; a stamp
    going back resets the filter."""
    node = localizer_node(context, fitted_dir, Parameter('odom_topic', value='/odom'))
    probe = Probe([node], context)
    ref_map = ReferenceMap.load(fitted_dir)
    offline = Localizer(ref_map)
    seq = SequenceLocalizer(offline)
    buffer = OdometryBuffer()
    sent = []
    try:
        assert node.threshold() == 0.5 and node.localizer.place_radius == PLACE_RADIUS
        assert probe.wait(lambda: probe.descriptors.get_subscription_count() > 0
                          and probe.odom.get_subscription_count() > 0, 20)
        # Odometry between the frames (t - 0.25 s): each frame's pose is interpolated.
        odom_times = [(k - FRAMES[0]) * PERIOD - 0.25 for k in FRAMES + [FRAMES[-1] + 1]]
        for j, i in enumerate(FRAMES):
            for k in (j, j + 1) if j == 0 else (j + 1,):
                msg = odometry_msg(odom_times[k], FRAMES[0] + k - 0.5)
                stamp = seconds(msg.header.stamp)
                buffer.add(PoseSample(stamp, msg.pose.pose.position.x, 0.0, 0.0))
                probe.odom.publish(msg)
                assert probe.wait(lambda: node.odometry.newest == stamp, 10)
            frame = query_msg(corridor_model, corridor_query_descriptors, i, j * PERIOD)
            probe.descriptors.publish(frame)
            assert probe.wait(lambda: len(probe.matches) == j + 1, 30)
            stamp = seconds(frame.header.stamp)
            single = offline.localize_descriptors(*msg_to_descriptors(frame))
            sent.append((stamp, single, seq.update(single, stamp, buffer.at(stamp))))
        # A frame stamped before the last one (a bag loop): the filter starts again.
        back = query_msg(corridor_model, corridor_query_descriptors, FRAMES[5], 1.0)
        probe.descriptors.publish(back)
        assert probe.wait(lambda: len(probe.matches) == len(FRAMES) + 1, 30)
        time.sleep(0.3)
    finally:
        probe.close()
    matches = probe.matches
    assert [seconds(m.header.stamp) for m in matches[:-1]] == [s for s, _, _ in sent]
    for m, (stamp, single, filtered) in zip(matches, sent):
        assert m.best_reference_id == single.reference.id
        assert m.confidence == pytest.approx(single.confidence, rel=1e-6)
        assert m.sequence_enabled
        assert m.sequence_reference_id == filtered.reference.id
        assert m.sequence_map_index == filtered.best_index
        assert m.sequence_confidence == pytest.approx(filtered.confidence, rel=1e-5, abs=1e-6)
        assert list(m.sequence_ranked) == filtered.retrieval_order[:10]
        assert m.pose_published == (filtered.confidence >= 0.5)
    assert [m.sequence_odometry for m in matches[:len(FRAMES)]] == \
        [False] + [True] * (len(FRAMES) - 1)
    # The filter chose other places than single frames did, and was right more often.
    right = [(abs(int(s.reference.id) - i) <= 2, abs(int(f.reference.id) - i) <= 2)
             for i, (_, s, f) in zip(FRAMES, sent)]
    assert sum(f for _, f in right) > sum(s for s, _ in right)
    assert sum(f for _, f in right) >= len(FRAMES) - 1
    # ~/pose: the sequence's place, for the frames whose sequence confidence passed.
    published = [m for m in matches if m.pose_published]
    assert 0 < len(published) == len(probe.poses)
    for pose, m in zip(probe.poses, published):
        assert pose.header.stamp == m.header.stamp
        assert pose.pose.pose.position.x == float(int(m.sequence_reference_id))
    # After the reset: a uniform prior again, as a fresh filter on that frame alone.
    fresh = SequenceLocalizer(offline).update(
        offline.localize_descriptors(*msg_to_descriptors(back)), seconds(back.header.stamp))
    assert matches[-1].sequence_reference_id == fresh.reference.id
    assert matches[-1].sequence_confidence == pytest.approx(fresh.confidence, rel=1e-5)
    assert not matches[-1].sequence_odometry
    log = capfd.readouterr().err
    assert 'sequence filter reset' in log and 'older than the previous frame' in log


def unknown_images():
    """Images of places not in the corridor map: the Tokyo pair, blank and noise frames."""
    h, w = CORRIDOR_SIZE['image_height'], CORRIDOR_SIZE['image_width']
    images = [load_image(p) for p in sorted((TEST_DATA / 'tokyo_pair').glob('*.[jp][pn]g'))]
    assert len(images) == 2
    images += [np.zeros((h, w, 3), np.uint8), np.full((h, w, 3), 128, np.uint8),
               np.full((h, w, 3), 255, np.uint8),
               np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)]
    return images


def test_places_not_in_the_map_publish_no_pose(context, fitted_dir):
    """The Tokyo pair, black, grey, white and noise frames through the three nodes with
    their defaults: every frame gets a ~/match, none a ~/pose (the map's threshold 0.5)."""
    size = [Parameter('image_width', value=CORRIDOR_SIZE['image_width']),
            Parameter('image_height', value=CORRIDOR_SIZE['image_height'])]
    nodes = [
        CameraBatcher(context=context, parameter_overrides=[
            *size, Parameter('image_topic', value='/camera/image_raw'),
            Parameter('buffer_capacity', value=16)]),
        DescriptorNode(context=context, parameter_overrides=[
            *size, Parameter('map_path', value=str(fitted_dir))]),
        localizer_node(context, fitted_dir),
    ]
    probe = Probe(nodes, context)
    images = unknown_images()
    try:
        assert probe.wait(lambda: probe.images.get_subscription_count() > 0
                          and probe.node.count_publishers('/localizer_node/match') > 0, 30)
        for j, rgb in enumerate(images):
            probe.images.publish(rgb_to_image(rgb, header_at(j * PERIOD)))
            time.sleep(0.05)
        assert probe.wait(lambda: len(probe.matches) == len(images), 120), \
            f'{len(probe.matches)} of {len(images)} answered'
        time.sleep(0.5)
    finally:
        probe.close()
    assert nodes[2].threshold() == 0.5
    assert sorted(seconds(m.header.stamp) for m in probe.matches) == \
        [STAMP0 + j * PERIOD for j in range(len(images))]
    assert not probe.poses
    for m in probe.matches:
        assert not m.pose_published and m.sequence_enabled
        assert m.confidence < 0.5 and m.sequence_confidence < 0.5
    print('single-frame', [round(m.confidence, 3) for m in probe.matches],
          'sequence', [round(m.sequence_confidence, 3) for m in probe.matches])


def test_fusion_parameter_sets_the_order(context, fitted_dir, unfitted_dir, corridor_model,
                                         corridor_query_descriptors, capfd):
    """fusion '' is the map's fit, 'patches' the authors' order, 'global' retrieval order,
    'global+patches' the fitted weights (refused on a map without a fit): the order of
    ~/match's candidates is the core's with that fusion, on a query where they differ."""
    ref_map = ReferenceMap.load(fitted_dir)
    by = {name: Localizer(ref_map, fusion=name) for name in ('patches', 'global', 'fitted')}
    g, patches = corridor_query_descriptors
    # a query whose three rankers put different references first
    query = next(i for i in range(g.shape[0])
                 if len({by[k].localize_descriptors(g[i], [p[i] for p in patches]).best_index
                         for k in by}) == 3)
    frame = query_msg(corridor_model, corridor_query_descriptors, query, 0.0)
    want = {k: loc.localize_descriptors(*msg_to_descriptors(frame)) for k, loc in by.items()}
    got = {}
    for value, key in (('', 'fitted'), ('patches', 'patches'), ('global', 'global'),
                       ('global+patches', 'fitted')):
        node = localizer_node(context, fitted_dir, Parameter('fusion', value=value),
                              Parameter('max_candidates', value=100))
        probe = Probe([node], context)
        try:
            assert probe.wait(lambda: probe.descriptors.get_subscription_count() > 0, 20)
            probe.descriptors.publish(frame)
            assert probe.wait(lambda: len(probe.matches) == 1, 30)
            got[value] = probe.matches[0]
            # the calibrated confidence only with the map's own fusion (else heuristic)
            assert (node.localizer.calibration is not None) == (key == 'fitted')
            assert node.threshold() == (0.5 if key == 'fitted' else 0.0)
        finally:
            probe.close()
        assert [c.map_index for c in got[value].candidates] == want[key].retrieval_order
        assert got[value].confidence == pytest.approx(want[key].confidence, rel=1e-6)
    assert got['patches'].best_reference_id != got['global'].best_reference_id
    assert 'with these parameters the confidence is the heuristic one' in \
        capfd.readouterr().err
    with pytest.raises(ParameterError, match="'fusion' = 'global[+]patches'.*has no fit.*"
                       'pnv-map fit'):
        localizer_node(context, unfitted_dir, Parameter('fusion', value='global+patches'))


def test_map_without_a_fit_keeps_the_old_behaviour(context, unfitted_dir, capfd):
    """A map built before fitting existed: authors' order, heuristic confidence, threshold
    0 (every frame's pose goes out, as before), one warning saying how to fit it."""
    node = localizer_node(context, unfitted_dir, Parameter('sequence', value=False))
    try:
        assert node.localizer.fusion.method == 'patches'
        assert node.localizer.calibration is None and node.threshold() == 0.0
        assert node.localizer.place_radius == 5.0 and node.sequence is None
    finally:
        node.destroy_node()
    log = capfd.readouterr().err
    assert log.count('has no fit') == 1 and 'pnv-map fit' in log


def test_odometry_parameters_are_checked(context, fitted_dir):
    """One odometry source at most; TF odometry needs tf2_ros (not installable here)."""
    with pytest.raises(ParameterError, match='give one odometry source'):
        localizer_node(context, fitted_dir, Parameter('odom_topic', value='/odom'),
                       Parameter('odom_frame', value='odom'))
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        with pytest.raises(ParameterError, match="'odom_frame' = 'odom' needs tf2_ros.*"
                           'odom_topic'):
            localizer_node(context, fitted_dir, Parameter('odom_frame', value='odom'))
    with pytest.raises(ParameterError, match="'max_speed'"):
        localizer_node(context, fitted_dir, Parameter('max_speed', value=0.0))
    with pytest.raises(ParameterError, match="'fusion' = 'both'"):
        localizer_node(context, fitted_dir, Parameter('fusion', value='both'))
