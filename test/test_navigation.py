# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Feeding nav2: the base's pose, amcl's map -> odom, /initialpose from a real localizer_node.

The transform math (core.navigation) is checked against compositions worked out by hand
and against amcl's planar formula. localizer_node runs on the corridor map over real
rclpy / Fast DDS: PlaceDescriptors of real corridor queries in, /initialpose out, compared
with the core's confidences offline. tf2_ros has no PyPI wheel, so the TF broadcasts
(publish_tf, publish_map_odom, camera_extrinsic 'tf') cannot run here; where tf2_ros is
missing, the tests check that asking for them fails configure with the reason.
"""

import importlib.util
import math
from pathlib import Path
import time
from typing import List

from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from patch_netvlad_ros_interfaces.msg import PlaceDescriptors, PlaceMatch
import pytest
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_spinner import Spinner
from std_msgs.msg import Header

from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.localization.navigation import (base_pose, InitialPoseGate,
                                                            map_to_odom, Transform)
from patch_netvlad_ros.nodes.localizer_node import LocalizerNode
from patch_netvlad_ros.ros.conversions import descriptors_to_msg
from patch_netvlad_ros.ros.params import ParameterError

STAMP0 = 1_700_000_000
#: Corridor queries sent (every 5th of a stretch), one per second of image stamps.
FRAMES = list(range(10, 100, 5))
HALF = math.sqrt(0.5)


def close(a: Transform, b: Transform, tol: float = 1e-12) -> bool:
    """Same translation and rotation (q and -q alike) within tol."""
    return (np.allclose(a.translation, b.translation, atol=tol)
            and min(np.abs(np.subtract(a.rotation, b.rotation)).max(),
                    np.abs(np.add(a.rotation, b.rotation)).max()) < tol)


# --- core math, by hand ----------------------------------------------------------------

def test_compose_and_inverse_by_hand():
    """A yawed pose composed with a step, and inverses, as worked out on paper."""
    a = Transform.planar(1.0, 2.0, math.pi / 2)        # at (1, 2), facing +y
    step = Transform((0.5, 0.0, 0.0))                    # half a metre ahead
    # Ahead of a robot facing +y is +y.
    assert close(a * step, Transform.planar(1.0, 2.5, math.pi / 2))
    # inverse(a): the map origin seen from the robot: R^T (-t) = (-2, 1), yaw -90 deg.
    assert close(a.inverse(), Transform((-2.0, 1.0, 0.0), (0.0, 0.0, -HALF, HALF)))
    assert close(a * a.inverse(), Transform())
    assert Transform((1e-15, 0.0, 0.0)).is_identity() and not step.is_identity()


def test_matrices_agree_with_composition(rng):
    """Composition and inverse equal the 4x4 matrix products (random 3D transforms)."""
    for _ in range(20):
        a = Transform(tuple(rng.normal(size=3)), tuple(rng.normal(size=4)))
        b = Transform(tuple(rng.normal(size=3)), tuple(rng.normal(size=4)))
        np.testing.assert_allclose((a * b).matrix(), a.matrix() @ b.matrix(), atol=1e-12)
        np.testing.assert_allclose(a.inverse().matrix(), np.linalg.inv(a.matrix()),
                                   atol=1e-12)
        assert close(Transform.from_matrix(a.matrix()), a)


def test_rpy_is_urdfs_fixed_axes():
    """roll, pitch, yaw = (90, 0, 90) deg: R = Rz Ry Rx maps x -> y and y -> z."""
    t = Transform.from_xyz_rpy([0.1, 0.2, 0.3], [math.pi / 2, 0.0, math.pi / 2])
    r = t.matrix()[:3, :3]
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    assert t.translation == (0.1, 0.2, 0.3)
    assert Transform.from_xyz_rpy([0, 0, 0], [0, 0, 0.7]).yaw == pytest.approx(0.7)
    with pytest.raises(ValueError, match='roll, pitch, yaw'):
        Transform.from_xyz_rpy([0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match='not a quaternion'):
        Transform((0, 0, 0), (0, 0, 0, 0))


def test_base_pose_of_a_camera_ahead_and_above():
    """Camera 0.2 m ahead and 1 m above the base; the camera at (10, 5, 1) facing +y.

    map_T_base = map_T_camera * inverse(base_T_camera): inverse moves by (-0.2, 0, -1)
    in the camera's axes; facing +y that is (0, -0.2, -1) in the map: base at (10, 4.8, 0).
    """
    map_T_camera = Transform((10.0, 5.0, 1.0), (0.0, 0.0, HALF, HALF))
    base_T_camera = Transform.from_xyz_rpy([0.2, 0.0, 1.0], [0.0, 0.0, 0.0])
    assert close(base_pose(map_T_camera, base_T_camera),
                 Transform((10.0, 4.8, 0.0), (0.0, 0.0, HALF, HALF)))
    assert close(base_pose(map_T_camera, Transform()), map_T_camera)


def test_base_pose_of_a_pitched_camera():
    """Camera 0.5 m above the base, pitched +90 deg (its x along the base's -z).

    inverse(base_T_camera) = (Ry(-90), (0.5, 0, 0)); the camera at (1, 0, 0) with no
    rotation puts the base at (1.5, 0, 0) rotated Ry(-90), whose z axis is the map's -x,
    so the camera sits 0.5 m along it: back at (1, 0, 0).
    """
    base_T_camera = Transform.from_xyz_rpy([0.0, 0.0, 0.5], [0.0, math.pi / 2, 0.0])
    got = base_pose(Transform((1.0, 0.0, 0.0)), base_T_camera)
    assert close(got, Transform((1.5, 0.0, 0.0), (0.0, -HALF, 0.0, HALF)))
    assert close(got * base_T_camera, Transform((1.0, 0.0, 0.0)))


def test_map_to_odom_by_hand_and_as_amcl():
    """map_T_odom * odom_T_base gives the matched pose; planar case = amcl's formula.

    Base matched at (1, 2) facing +y; odometry says (0.5, 0) facing +x: the odom frame sits
    at (1, 1.5), turned 90 deg (the 0.5 m driven along odom x is map +y).
    """
    map_T_base = Transform.planar(1.0, 2.0, math.pi / 2)
    odom_T_base = Transform.planar(0.5, 0.0, 0.0)
    map_T_odom = map_to_odom(map_T_base, odom_T_base)
    assert close(map_T_odom, Transform.planar(1.0, 1.5, math.pi / 2))
    assert close(map_T_odom * odom_T_base, map_T_base)

    # amcl (2D): yaw_mo = yaw_mb - yaw_ob, t_mo = t_mb - R(yaw_mo) t_ob.
    rng = np.random.default_rng(7)
    for _ in range(50):
        xb, yb, yb_yaw, xo, yo, yo_yaw = rng.uniform(-10, 10, 6)
        got = map_to_odom(Transform.planar(xb, yb, yb_yaw), Transform.planar(xo, yo, yo_yaw))
        yaw = yb_yaw - yo_yaw
        c, s = math.cos(yaw), math.sin(yaw)
        want = Transform.planar(xb - (c * xo - s * yo), yb - (s * xo + c * yo), yaw)
        assert close(got, want, 1e-9)
        assert math.isclose(math.remainder(got.yaw - yaw, 2 * math.pi), 0.0, abs_tol=1e-9)


def test_initialpose_gate():
    """Confidence threshold, minimum interval by stamps, and a stamp going back."""
    gate = InitialPoseGate(0.8, 2.0)
    decisions = [gate(c, t) for c, t in [(0.5, 0.0), (0.9, 1.0), (0.95, 2.0), (0.9, 2.99),
                                         (0.9, 3.0), (0.79, 9.0), (0.9, 1.0)]]
    assert decisions == [False, True, False, False, True, False, True]
    with pytest.raises(ValueError, match='threshold'):
        InitialPoseGate(1.5, 1.0)


# --- localizer_node over DDS -----------------------------------------------------------

@pytest.fixture(scope='module')
def confidences(corridor_map, corridor_query_descriptors) -> dict:
    """Single-frame confidence of each sent query, from the core offline."""
    localizer = Localizer(corridor_map)
    g, patches = corridor_query_descriptors
    return {i: localizer.localize_descriptors(g[i], [p[i] for p in patches]).confidence
            for i in FRAMES}


@pytest.fixture
def context():
    """A ROS context of the test's own."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def header_of(k: int) -> Header:
    """Camera header of the k-th frame sent: k seconds after STAMP0, nanoseconds kept."""
    h = Header(frame_id='camera_link')
    h.stamp.sec, h.stamp.nanosec = STAMP0 + k, 1000 * k + 3
    return h


class Probe(Spinner):
    """localizer_node and a probe node (descriptors out, answers in) spinning in a thread."""

    def __init__(self, context, corridor_map_dir: Path, *params: Parameter) -> None:
        self.node = LocalizerNode(context=context, parameter_overrides=[
            Parameter('map_path', value=str(corridor_map_dir)),
            Parameter('verify_map', value=False),
            Parameter('sequence', value=False), Parameter('publish_initialpose', value=True),
            *params])
        self.probe = Node('nav_probe', context=context)
        self.initialposes: List[PoseWithCovarianceStamped] = []
        self.poses: List[PoseWithCovarianceStamped] = []
        self.matches: List[PlaceMatch] = []
        self.answers = [
            self.probe.create_subscription(PoseWithCovarianceStamped, '/initialpose',
                                           self.initialposes.append, 100),
            self.probe.create_subscription(PoseWithCovarianceStamped, '/localizer_node/pose',
                                           self.poses.append, 100),
            self.probe.create_subscription(PlaceMatch, '/localizer_node/match',
                                           self.matches.append, 100)]
        self.descriptors = self.probe.create_publisher(PlaceDescriptors, '/place_descriptors',
                                                       100)
        super().__init__(context, [self.node, self.probe], threads=3)

    def send(self, corridor_map, descriptors, frames: List[int]) -> None:
        """Publish the frames' descriptors (float32 patches: as offline), 1 s of stamps apart.

        One at a time, each after the previous one's answer: the node's queue (keep last
        16) never overflows on a busy machine.
        """
        # matched, not only discovered: a message sent before the writer matches is lost
        assert self.wait(lambda: self.descriptors.get_subscription_count() > 0
                         and all(s.get_publisher_count() > 0 for s in self.answers), 20)
        g, patches = descriptors
        for k, i in enumerate(frames):
            self.descriptors.publish(descriptors_to_msg(
                header_of(k), corridor_map.config, corridor_map.model_digest, g[i],
                [p[i] for p in patches], 'float32'))
            assert self.wait(lambda: len(self.matches) > k, 60), f'no match for frame {k}'
        time.sleep(0.3)  # anything extra would arrive now


def stamp_key(h: Header) -> tuple:
    return h.stamp.sec, h.stamp.nanosec


@pytest.mark.ros
def test_initialpose_only_when_confident(context, corridor_map_dir, corridor_map,
                                         corridor_query_descriptors, confidences):
    """/initialpose carries exactly the frames whose confidence reaches the threshold.

    The threshold sits in the middle of the widest gap near the median of the offline
    confidences, so that about half the frames pass and no near-tie decides.
    """
    values = sorted(confidences.values())
    mid = len(values) // 2
    lo, hi = max(((values[j], values[j + 1]) for j in range(mid - 4, mid + 4)),
                 key=lambda pair: pair[1] - pair[0])
    threshold = (lo + hi) / 2
    expected = {stamp_key(header_of(k)) for k, i in enumerate(FRAMES)
                if confidences[i] >= threshold}
    assert 3 <= len(expected) <= len(FRAMES) - 3
    probe = Probe(context, corridor_map_dir, Parameter('initialpose_threshold', value=threshold),
                  Parameter('initialpose_interval', value=0.0),
                  Parameter('position_stddev', value=2.0),
                  Parameter('orientation_stddev', value=0.25))
    try:
        probe.send(corridor_map, corridor_query_descriptors, FRAMES)
        got = {stamp_key(p.header): p for p in probe.initialposes}
        assert len(got) == len(probe.initialposes)
        assert set(got) == expected
        matches = {stamp_key(m.header): m for m in probe.matches}
        # Every frame's pose goes to ~/pose (an unfitted map: threshold 0).
        assert len(probe.poses) == len(FRAMES)
        for key, pose in got.items():
            assert pose.header.frame_id == 'map'
            m = matches[key]
            assert m.confidence >= threshold and m.pose_published
            # The base's pose is the matched reference's (no extrinsic): x = index.
            assert pose.pose.pose.position.x == float(int(m.best_reference_id))
            assert pose.pose.pose.orientation.w == 1.0
            cov = np.array(pose.pose.covariance).reshape(6, 6)
            np.testing.assert_array_equal(cov, np.diag([4.0] * 3 + [0.0625] * 3))
    finally:
        probe.close()


@pytest.mark.ros
def test_initialpose_interval_and_static_extrinsic(context, corridor_map_dir, corridor_map,
                                                   corridor_query_descriptors):
    """At most one /initialpose per 2.5 s of image stamps; the base's pose, not the camera's.

    The camera sits at (0.3, 0.1, 1.2) on the base, turned 90 deg left. A camera at a
    reference (x, 0, 0) facing +x puts the base at (x - 0.1, 0.3, -1.2) facing -y
    (inverse(base_T_camera) = (Rz(-90), (-0.1, 0.3, -1.2))).
    """
    frames = FRAMES[:10]
    probe = Probe(context, corridor_map_dir, Parameter('initialpose_threshold', value=0.0),
                  Parameter('initialpose_interval', value=2.5),
                  Parameter('camera_xyz', value=[0.3, 0.1, 1.2]),
                  Parameter('camera_rpy', value=[0.0, 0.0, math.pi / 2]))
    try:
        probe.send(corridor_map, corridor_query_descriptors, frames)
        # Stamps 0, 1, 2, ... s: let out at 0, 3, 6, 9.
        assert [stamp_key(p.header) for p in probe.initialposes] == \
            [stamp_key(header_of(k)) for k in (0, 3, 6, 9)]
        matches = {stamp_key(m.header): m for m in probe.matches}
        assert len(probe.poses) == len(frames)
        for pose in probe.poses + probe.initialposes:
            x = float(int(matches[stamp_key(pose.header)].best_reference_id))
            p, q = pose.pose.pose.position, pose.pose.pose.orientation
            assert (p.x, p.y, p.z) == pytest.approx((x - 0.1, 0.3, -1.2), abs=1e-12)
            assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, 0.0, -HALF, HALF), abs=1e-12)
    finally:
        probe.close()


@pytest.mark.ros
@pytest.mark.skipif(importlib.util.find_spec('tf2_ros') is not None,
                    reason='tf2_ros is installed: the TF paths are available')
@pytest.mark.parametrize('params, reason', [
    ({'publish_map_odom': True, 'odom_topic': '/odom'},
     "'publish_map_odom' = True needs tf2_ros"),
    ({'camera_extrinsic': 'tf'}, "'camera_extrinsic' = 'tf' needs tf2_ros"),
    ({'publish_tf': True}, "'publish_tf' = True needs tf2_ros"),
])
def test_tf_paths_say_they_need_tf2_ros(context, corridor_map_dir, params, reason):
    """Without tf2_ros the TF options refuse to configure, naming what is missing."""
    with pytest.raises(ParameterError, match=reason):
        LocalizerNode(context=context, parameter_overrides=[
            Parameter('map_path', value=str(corridor_map_dir)),
            Parameter('verify_map', value=False),
            *(Parameter(k, value=v) for k, v in params.items())])


@pytest.mark.ros
def test_map_odom_needs_odometry(context, corridor_map_dir):
    """publish_map_odom without an odometry source is refused with what to set."""
    with pytest.raises(ParameterError, match='set odom_topic or odom_frame'):
        LocalizerNode(context=context, parameter_overrides=[
            Parameter('map_path', value=str(corridor_map_dir)),
            Parameter('verify_map', value=False),
            Parameter('publish_map_odom', value=True)])
