# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Feeding navigation: the base's pose from the matched place, amcl's map -> odom, gating.

Frames (REP 105): ``map`` (the place map's frame), ``odom`` (continuous odometry),
``base_link`` (the robot), the camera. A transform ``a_T_b`` maps coordinates in frame b
to frame a (it is the pose of b in a); ``a_T_b * b_T_c = a_T_c``.

- The matched reference's pose is where the camera was: ``map_T_camera``. The robot's
  pose is ``map_T_base = map_T_camera * inverse(base_T_camera)``, with the camera's
  extrinsic ``base_T_camera`` (from TF, or a static x, y, z, roll, pitch, yaw).
- amcl's correction: ``map_T_odom = map_T_base * inverse(odom_T_base)``, with the
  odometry's ``odom_T_base`` at the image's stamp, so that ``map_T_odom * odom_T_base``
  is the matched pose and odometry keeps moving the robot in ``map`` between fixes.
- :class:`InitialPoseGate` lets a pose out to nav2's ``/initialpose`` only when it is
  confident and not sooner than a minimum interval (image stamps) after the last one.

ROS-free: numpy and scipy's Rotation. Quaternions are (x, y, z, w) as in geometry_msgs.
"""

from dataclasses import dataclass
import math
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from ..drives.poses import PoseSample


@dataclass(frozen=True)
class Transform:
    """A rigid transform: translation (x, y, z) in metres, rotation quaternion (x, y, z, w)."""

    translation: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        q = np.asarray(self.rotation, dtype=np.float64)
        n = float(np.linalg.norm(q))
        if q.shape != (4,) or not math.isfinite(n) or n < 1e-12:
            raise ValueError(f'rotation {self.rotation} is not a quaternion (x, y, z, w)')
        t = np.asarray(self.translation, dtype=np.float64)
        if t.shape != (3,) or not np.isfinite(t).all():
            raise ValueError(f'translation {self.translation} is not three finite numbers')
        # Canonical: unit length, w >= 0 (q and -q are the same rotation).
        q = q / n * (1.0 if q[3] >= 0 else -1.0)
        object.__setattr__(self, 'rotation', tuple(float(v) for v in q))
        object.__setattr__(self, 'translation', tuple(float(v) for v in t))

    @classmethod
    def from_xyz_rpy(cls, xyz: Sequence[float], rpy: Sequence[float]) -> 'Transform':
        """Make one of x, y, z and fixed-axis roll, pitch, yaw (rad) as URDF: R = Rz Ry Rx."""
        if len(xyz) != 3 or len(rpy) != 3:
            raise ValueError(f'need x, y, z and roll, pitch, yaw; got {list(xyz)} and '
                             f'{list(rpy)}')
        q = Rotation.from_euler('xyz', rpy).as_quat()
        return cls(tuple(xyz), tuple(q))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> 'Transform':
        """Make one of a [4, 4] homogeneous matrix."""
        m = np.asarray(matrix, dtype=np.float64)
        return cls(tuple(m[:3, 3]), tuple(Rotation.from_matrix(m[:3, :3]).as_quat()))

    @classmethod
    def from_pose(cls, pose: PoseSample) -> 'Transform':
        """Make one of a timed pose (its stamp dropped)."""
        return cls((pose.x, pose.y, pose.z), (pose.qx, pose.qy, pose.qz, pose.qw))

    @classmethod
    def planar(cls, x: float, y: float, yaw: float) -> 'Transform':
        """Make a 2D pose (x, y, yaw about +z), as amcl and nav2 use."""
        return cls((x, y, 0.0), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))

    def matrix(self) -> np.ndarray:
        """Return the [4, 4] homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = Rotation.from_quat(self.rotation).as_matrix()
        m[:3, 3] = self.translation
        return m

    def __mul__(self, other: 'Transform') -> 'Transform':
        """Compose: ``a_T_b * b_T_c = a_T_c``."""
        r = Rotation.from_quat(self.rotation)
        t = np.asarray(self.translation) + r.apply(other.translation)
        return Transform(tuple(t), tuple((r * Rotation.from_quat(other.rotation)).as_quat()))

    def inverse(self) -> 'Transform':
        """``b_T_a`` of ``a_T_b``."""
        r_inv = Rotation.from_quat(self.rotation).inv()
        return Transform(tuple(-r_inv.apply(self.translation)), tuple(r_inv.as_quat()))

    @property
    def yaw(self) -> float:
        """Rotation about +z (rad, in (-pi, pi]) of the rotation's z-y-x decomposition."""
        x, y, z, w = self.rotation
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    def is_identity(self) -> bool:
        """Whether it moves nothing (within 1e-12)."""
        return bool(np.allclose(self.translation, 0.0, atol=1e-12)
                    and abs(self.rotation[3] - 1.0) < 1e-12)


def base_pose(map_T_camera: Transform, base_T_camera: Transform) -> Transform:
    """Return the robot's pose ``map_T_base`` from the camera's pose and extrinsic."""
    return map_T_camera * base_T_camera.inverse()


def map_to_odom(map_T_base: Transform, odom_T_base: Transform) -> Transform:
    """Return amcl's correction ``map_T_odom`` of a matched pose and the odometry then."""
    return map_T_base * odom_T_base.inverse()


class InitialPoseGate:
    """Whether a pose goes to ``/initialpose`` now: confident, and not too soon.

    threshold: least confidence. min_interval: seconds (image stamps) since the last pose
    let out; a stamp older than the last one (a bag loop, a restarted camera) starts over.
    """

    def __init__(self, threshold: float, min_interval: float) -> None:
        if not (0.0 <= threshold <= 1.0 and min_interval >= 0.0):
            raise ValueError(f'threshold must be in [0, 1] and min_interval >= 0; got '
                             f'{threshold}, {min_interval}')
        self.threshold = float(threshold)
        self.min_interval = float(min_interval)
        self.last: Optional[float] = None

    def __call__(self, confidence: float, stamp: float) -> bool:
        """Decide for a pose of ``confidence`` at ``stamp`` (s); remember it if let out."""
        if confidence < self.threshold:
            return False
        if self.last is not None and self.last <= stamp < self.last + self.min_interval:
            return False
        self.last = stamp
        return True
