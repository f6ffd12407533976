# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Timed poses in a metric frame: interpolation, keyframe selection and GNSS to local metres.

Conventions (REP 103): positions in metres, quaternions as (x, y, z, w), yaw about +z,
counter-clockwise positive, 0 along +x. The GNSS frame is a local ENU frame (x east,
y north, z up) anchored at an origin fix, like a ``map`` frame. ROS-free: numpy only.

Pose conventions of a drive (:data:`POSE_CONVENTIONS`): 'z-up' is REP 103 (world z up,
the body's x axis forward); 'camera' is the optical convention of KITTI odometry and many
SLAM outputs (world and body: x right, y down, z forward), whose ground plane is x-z and
whose heading turns about -y. :func:`to_z_up` rotates camera-convention poses into z-up
ones (x = z_cam, y = -x_cam, z = -y_cam), so distances, ground plane and heading (yaw
about the up axis) mean the same for both; :func:`detect_convention` tells them apart.

Orientations are interpolated with scipy's ``Slerp`` and turned into matrices with its
``Rotation``. Written out where scipy measured far slower for the same result: the scalar
:func:`yaw_of` and :func:`quaternion_from_yaw` (once per pose sample in keyframe selection
and the sequence filter; scipy takes 200-800 times as long for one quaternion) and the
camera-to-z-up change of axes in :func:`to_z_up` (a product with a signed permutation).
"""

import bisect
from dataclasses import dataclass
import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ..errors import MapError

#: WGS84 semi-major axis (m) and flattening.
WGS84_A = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)

#: Earth radius of the KITTI devkit's Mercator projection (m).
KITTI_EARTH_RADIUS = 6378137.0

#: Below this norm a quaternion is "zero" (no rotation can be read from it).
_MIN_QUAT_NORM = 1e-12
#: Below this distance (m) two fixes are the same position and give no heading.
_MIN_HEADING_BASELINE = 1e-6

ArrayLike = Union[float, Sequence[float], np.ndarray]

Z_UP = 'z-up'
CAMERA = 'camera'
#: The pose conventions a drive or map may use (see the module docstring).
POSE_CONVENTIONS = (Z_UP, CAMERA)
#: Camera-convention coordinates (x right, y down, z forward) -> z-up coordinates
#: (x forward, y left, z up): a proper rotation, rows are the z-up axes in camera axes.
CAMERA_TO_Z_UP = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class PoseSample:
    """A timed pose in a metric frame.

    stamp: time in seconds.
    x, y, z: position in metres.
    qx, qy, qz, qw: orientation quaternion (x, y, z, w); identity by default.
    """

    stamp: float
    x: float
    y: float
    z: float
    qx: float = 0.0
    qy: float = 0.0
    qz: float = 0.0
    qw: float = 1.0

    @property
    def position(self) -> np.ndarray:
        """[3] array of x, y, z in metres."""
        return np.array([self.x, self.y, self.z], dtype=np.float64)

    @property
    def quaternion(self) -> np.ndarray:
        """[4] array of qx, qy, qz, qw."""
        return np.array([self.qx, self.qy, self.qz, self.qw], dtype=np.float64)


def _as_row(sample: PoseSample) -> Tuple[float, ...]:
    return (sample.stamp, sample.x, sample.y, sample.z,
            sample.qx, sample.qy, sample.qz, sample.qw)


def _check_max_gap(max_gap: float) -> None:
    if not (max_gap >= 0.0):  # also rejects NaN
        raise MapError(f'max_gap must be >= 0 seconds (math.inf for no limit), got {max_gap}')


class Trajectory:
    """A time-sorted sequence of poses that can be sampled at any stamp inside it.

    Construction sorts the samples by stamp, merges exact duplicates and normalises the
    quaternions. It raises :class:`MapError` for no samples, non-finite values, zero
    quaternions, or two different poses at the same stamp.
    """

    def __init__(self, samples: Sequence[PoseSample], frame_id: str = '') -> None:
        """Validate and sort the samples.

        samples: PoseSample objects in any order. frame_id: the frame the poses are
        given in, when known (a hint for :func:`detect_convention`).
        """
        self.frame_id = str(frame_id)
        samples = list(samples)
        if not samples:
            raise MapError('a trajectory needs at least one pose sample, got none')
        rows = np.array([_as_row(s) for s in samples], dtype=np.float64)  # [N, 8]
        bad = ~np.all(np.isfinite(rows), axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise MapError(f'pose sample {i} has a NaN or infinite value: {samples[i]}; '
                           'drop it before building the trajectory')
        norms = np.linalg.norm(rows[:, 4:], axis=1)
        zero = norms < _MIN_QUAT_NORM
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise MapError(f'pose sample {i} has a zero quaternion (qx, qy, qz, qw all 0): '
                           f'{samples[i]}; use qw=1 for "no rotation"')
        order = np.argsort(rows[:, 0], kind='stable')
        kept: List[PoseSample] = []
        for i in order:
            s = samples[int(i)]
            norm = norms[int(i)]
            if abs(norm - 1.0) > 1e-12:
                s = PoseSample(s.stamp, s.x, s.y, s.z,
                               s.qx / norm, s.qy / norm, s.qz / norm, s.qw / norm)
            if kept and kept[-1].stamp == s.stamp:
                if _as_row(kept[-1]) != _as_row(s):
                    raise MapError(f'two different poses at stamp {s.stamp}: {kept[-1]} and '
                                   f'{s}; a trajectory has one pose per instant')
                continue
            kept.append(s)
        self._samples: Tuple[PoseSample, ...] = tuple(kept)
        self._stamp_list = [s.stamp for s in kept]
        self._stamps = np.array(self._stamp_list, dtype=np.float64)  # [N]
        self._positions = np.array([[s.x, s.y, s.z] for s in kept], dtype=np.float64)
        self._quats = np.array([[s.qx, s.qy, s.qz, s.qw] for s in kept], dtype=np.float64)
        self._slerp: Optional[Slerp] = None  # built on the first interpolation between samples

    def __len__(self) -> int:
        """Return the number of distinct samples."""
        return len(self._samples)

    @property
    def samples(self) -> Tuple[PoseSample, ...]:
        """The samples, sorted by stamp."""
        return self._samples

    @property
    def stamps(self) -> np.ndarray:
        """[N] sorted stamps in seconds (a copy)."""
        return self._stamps.copy()

    @property
    def positions(self) -> np.ndarray:
        """[N, 3] positions in metres, in stamp order (a copy)."""
        return self._positions.copy()

    @property
    def quaternions(self) -> np.ndarray:
        """[N, 4] unit quaternions as rows of qx, qy, qz, qw, in stamp order (a copy)."""
        return self._quats.copy()

    def path_length(self) -> float:
        """Return the summed straight-line 3-D distance between consecutive samples (m)."""
        return float(np.linalg.norm(np.diff(self._positions, axis=0), axis=1).sum())

    def _blend(self, i0: np.ndarray, stamps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Interpolate between samples i0 and i0 + 1 at stamps.

        i0: [M] int indices; stamps: [M] stamps strictly between those samples'. Returns
        ([M, 3] positions, [M, 4] quats): positions linearly, orientations by scipy's Slerp
        (the shorter arc, in the earlier sample's hemisphere).
        """
        t0 = self._stamps[i0]
        t1 = self._stamps[i0 + 1]
        alpha = (stamps - t0) / (t1 - t0)
        p0 = self._positions[i0]
        p1 = self._positions[i0 + 1]
        pos = p0 + alpha[:, None] * (p1 - p0)
        if self._slerp is None:  # two samples or more: the stamps are strictly increasing
            self._slerp = Slerp(self._stamps, Rotation.from_quat(self._quats))
        return pos, self._slerp(stamps).as_quat()

    def interpolate(self, stamp: float, max_gap: float) -> Optional[PoseSample]:
        """Return the pose at stamp: linear position and quaternion slerp between neighbours.

        Returns None when stamp is outside [first, last] (no extrapolation), is not finite,
        or the two samples around it are more than max_gap seconds apart. A stamp equal to
        a sample's returns that sample.
        """
        _check_max_gap(max_gap)
        stamp = float(stamp)
        if not math.isfinite(stamp):
            return None
        stamps = self._stamp_list
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            return self._samples[i]
        if i == 0 or i == len(stamps):
            return None
        if stamps[i] - stamps[i - 1] > max_gap:
            return None
        pos, quat = self._blend(np.array([i - 1]), np.array([stamp]))
        return PoseSample(stamp, *(float(v) for v in pos[0]), *(float(v) for v in quat[0]))

    def interpolate_many(self, stamps: Sequence[float],
                         max_gap: float) -> List[Optional[PoseSample]]:
        """Return :meth:`interpolate` at each stamp, vectorised.

        stamps: [M] stamps in any order. Returns a list of M PoseSample or None.
        """
        _check_max_gap(max_gap)
        query = np.asarray(stamps, dtype=np.float64).reshape(-1)  # [M]
        known = self._stamps
        n = len(known)
        idx = np.searchsorted(known, query, side='left')  # [M]
        finite = np.isfinite(query)
        exact = finite & (idx < n) & (known[np.minimum(idx, n - 1)] == query)
        inside = finite & ~exact & (idx > 0) & (idx < n)
        i0 = np.clip(idx - 1, 0, max(n - 2, 0))
        if n > 1:
            gap_ok = (known[np.minimum(i0 + 1, n - 1)] - known[i0]) <= max_gap
            between = inside & gap_ok
        else:
            between = np.zeros_like(inside)
        out: List[Optional[PoseSample]] = [None] * len(query)
        for j in np.flatnonzero(exact):
            out[int(j)] = self._samples[int(idx[j])]
        sel = np.flatnonzero(between)
        if sel.size:
            pos, quat = self._blend(i0[sel], query[sel])
            for k, j in enumerate(sel):
                out[int(j)] = PoseSample(float(query[j]), *(float(v) for v in pos[k]),
                                         *(float(v) for v in quat[k]))
        return out


def yaw_of(sample: Union[PoseSample, Sequence[float]]) -> float:
    """Return the heading (rad, in [-pi, pi]) about +z of a pose's quaternion.

    sample: a PoseSample, or a quaternion (qx, qy, qz, qw). Scale-invariant in the quaternion.
    """
    if isinstance(sample, PoseSample):
        qx, qy, qz, qw = sample.qx, sample.qy, sample.qz, sample.qw
    else:
        qx, qy, qz, qw = (float(v) for v in sample)
    return math.atan2(2.0 * (qw * qz + qx * qy), qw * qw + qx * qx - qy * qy - qz * qz)


def quaternion_from_yaw(yaw: float) -> Tuple[float, float, float, float]:
    """Return the quaternion (qx, qy, qz, qw) of a rotation by yaw radians about +z."""
    half = 0.5 * float(yaw)
    return (0.0, 0.0, math.sin(half), math.cos(half))


def _wrap(angle: float) -> float:
    """Return angle wrapped to [-pi, pi]."""
    return math.atan2(math.sin(angle), math.cos(angle))


def check_convention(convention: str) -> str:
    """Return convention if it is one of :data:`POSE_CONVENTIONS`, else raise MapError."""
    if convention not in POSE_CONVENTIONS:
        raise MapError(f'unknown pose convention {convention!r}: use one of '
                       f'{", ".join(POSE_CONVENTIONS)}')
    return convention


def to_z_up(positions: np.ndarray, quaternions: np.ndarray,
            convention: str) -> Tuple[np.ndarray, np.ndarray]:
    """Return poses of a convention as z-up (REP 103) poses.

    positions: [N, 3] metres; quaternions: [N, 4] (qx, qy, qz, qw). Returns ([N, 3],
    [N, 4]) new arrays. 'z-up' poses come back unchanged. 'camera' poses are rotated by
    :data:`CAMERA_TO_Z_UP` C: position C p, orientation C R C^T, so the camera's optical
    axis becomes the body's x axis and the world's -y its z axis. C R C^T is the rotation
    about the axis C u by the same angle: the quaternion's vector part is rotated, its
    scalar part kept (so each quaternion keeps its norm and sign). Written out rather than
    composed with scipy's Rotation: exact, and composing 1000 poses took scipy 1.17 about
    700 times as long as this product.
    """
    check_convention(convention)
    p = np.array(positions, dtype=np.float64).reshape(-1, 3)
    q = np.array(quaternions, dtype=np.float64).reshape(-1, 4)
    if convention == CAMERA:
        p = p @ CAMERA_TO_Z_UP.T
        q[:, :3] = q[:, :3] @ CAMERA_TO_Z_UP.T
    return p, q


def sample_to_z_up(sample: PoseSample, convention: str) -> PoseSample:
    """Return one pose sample of a convention as a z-up one (see :func:`to_z_up`)."""
    if convention == Z_UP:
        return sample
    p, q = to_z_up(sample.position[None], sample.quaternion[None], convention)
    return PoseSample(sample.stamp, *(float(v) for v in p[0]), *(float(v) for v in q[0]))


def headings(quaternions: np.ndarray, convention: str = Z_UP) -> np.ndarray:
    """Return the heading (rad, [-pi, pi]) about the up axis of each orientation.

    quaternions: [N, 4] (qx, qy, qz, qw). z-up: yaw about +z (:func:`yaw_of`); camera:
    the optical axis's turn about -y, 0 along +z, positive towards -x (the left).
    """
    _, q = to_z_up(np.zeros((len(quaternions), 3)), quaternions, convention)
    return np.array([yaw_of(row) for row in q], dtype=np.float64)


def _rotations(quaternions: np.ndarray) -> np.ndarray:
    """Rotation matrices [N, 3, 3] of quaternions [N, 4] (qx, qy, qz, qw), any norm.

    A zero or non-finite quaternion gives a NaN matrix (no rotation can be read from it).
    """
    q = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    out = np.full((len(q), 3, 3), np.nan)
    ok = np.linalg.norm(q, axis=1) >= _MIN_QUAT_NORM
    if ok.any():
        out[ok] = Rotation.from_quat(q[ok]).as_matrix()
    return out


#: Travel (m) between the positions whose direction is compared with the forward axis.
_DETECT_STEP = 0.5


def _travel_pairs(positions: np.ndarray, step: float) -> List[Tuple[int, int]]:
    """Return (i, j) pairs: j is the first sample at least step metres from sample i."""
    pairs, anchor = [], 0
    for j in range(1, len(positions)):
        if np.linalg.norm(positions[j] - positions[anchor]) >= step:
            pairs.append((anchor, j))
            anchor = j
    return pairs


def detect_convention(positions: np.ndarray, quaternions: np.ndarray,
                      frame_id: str = '') -> Tuple[str, str]:
    """Tell a z-up trajectory from a camera-convention one; return (convention, reason).

    positions: [N, 3]; quaternions: [N, 4]; frame_id: the poses' frame, when known.
    Evidence, strongest first:
    1. a frame_id ending in '_optical_frame' (or '_optical') is a camera frame;
    2. vehicles travel along their forward axis: the body's x (z-up) or z (camera), the
       median |cosine| between travel (over 0.5 m steps) and each axis;
    3. the body's up axis stays along the world's: body z on world z (z-up), body y on
       world y (camera, both down), the median cosine of each;
    4. ground vehicles stay near a plane: the extent along z (z-up) or y (camera) is a
       quarter or less of the other's.
    With no evidence either way (e.g. no motion and identity orientations) REP 103's
    'z-up' is assumed, and the reason says so.
    """
    fid = str(frame_id).strip('/').lower()
    if fid.endswith('_optical_frame') or fid.endswith('_optical'):
        return CAMERA, f"the poses' frame {frame_id!r} is an optical frame (z forward, y down)"
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    rot = _rotations(quaternions)
    pairs = _travel_pairs(p, _DETECT_STEP)
    if len(pairs) >= 3:
        i, j = np.array(pairs).T
        travel = p[j] - p[i]
        travel /= np.linalg.norm(travel, axis=1, keepdims=True)
        along_x = float(np.median(np.abs(np.einsum('nk,nk->n', travel, rot[i][:, :, 0]))))
        along_z = float(np.median(np.abs(np.einsum('nk,nk->n', travel, rot[i][:, :, 2]))))
        if max(along_x, along_z) >= 0.7 and abs(along_x - along_z) >= 0.3:
            if along_x > along_z:
                return Z_UP, (f'travel follows the body x axis (median |cos| {along_x:.2f}, '
                              f'z axis {along_z:.2f})')
            return CAMERA, (f'travel follows the body z axis (median |cos| {along_z:.2f}, '
                            f'x axis {along_x:.2f})')
    up_z = float(np.median(rot[:, 2, 2]))
    up_y = float(np.median(rot[:, 1, 1]))
    if max(up_z, up_y) >= 0.9 and abs(up_z - up_y) >= 0.2:
        if up_z > up_y:
            return Z_UP, f'the body z axis stays on the world z axis (median cos {up_z:.2f})'
        return CAMERA, f'the body y axis stays on the world y axis (median cos {up_y:.2f})'
    extent = np.ptp(p, axis=0) if len(p) else np.zeros(3)
    if extent.max() >= 1.0:
        if extent[2] <= 0.25 * extent[1]:
            return Z_UP, (f'the trajectory stays near the x-y plane (extent z {extent[2]:.2f} '
                          f'm, y {extent[1]:.2f} m)')
        if extent[1] <= 0.25 * extent[2]:
            return CAMERA, (f'the trajectory stays near the x-z plane (extent y '
                            f'{extent[1]:.2f} m, z {extent[2]:.2f} m)')
    return Z_UP, 'no evidence either way in the trajectory: REP 103 (z up) assumed'


def select_keyframes(samples: Sequence[PoseSample], min_distance: float = 0.0,
                     min_heading: float = 0.0, min_interval: float = 0.0) -> List[int]:
    """Return the indices of the keyframes among samples (in the order given).

    A criterion is enabled when its threshold is > 0. The first sample is always a
    keyframe. With no criterion enabled every sample is one; otherwise a sample is one when,
    relative to the last keyframe, ANY enabled criterion is met: straight-line 3-D distance
    >= min_distance metres, absolute wrapped yaw difference >= min_heading radians, or
    stamp difference >= min_interval seconds.
    """
    for name, value in (('min_distance', min_distance), ('min_heading', min_heading),
                        ('min_interval', min_interval)):
        if not (value >= 0.0) or math.isinf(value):
            raise MapError(f'{name} must be a finite number >= 0 (0 disables it), got {value}')
    samples = list(samples)
    if not samples:
        return []
    if min_distance <= 0.0 and min_heading <= 0.0 and min_interval <= 0.0:
        return list(range(len(samples)))
    keys = [0]
    last = samples[0]
    last_yaw = yaw_of(last)
    for i in range(1, len(samples)):
        s = samples[i]
        yaw = yaw_of(s)
        hit = False
        if min_distance > 0.0:
            dist = math.sqrt((s.x - last.x) ** 2 + (s.y - last.y) ** 2 + (s.z - last.z) ** 2)
            hit = dist >= min_distance
        if not hit and min_heading > 0.0:
            hit = abs(_wrap(yaw - last_yaw)) >= min_heading
        if not hit and min_interval > 0.0:
            hit = s.stamp - last.stamp >= min_interval
        if hit:
            keys.append(i)
            last, last_yaw = s, yaw
    return keys


def _geodetic_to_ecef(lat_deg: np.ndarray, lon_deg: np.ndarray,
                      alt_m: np.ndarray) -> np.ndarray:
    """WGS84 geodetic to Earth-centred Earth-fixed: [N] arrays -> [N, 3] metres."""
    lat = np.radians(lat_deg)
    lon = np.radians(lon_deg)
    sin_lat = np.sin(lat)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat ** 2)
    x = (n + alt_m) * np.cos(lat) * np.cos(lon)
    y = (n + alt_m) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + alt_m) * sin_lat
    return np.stack([x, y, z], axis=-1)


def _flat(value: ArrayLike) -> np.ndarray:
    return np.atleast_1d(np.asarray(value, dtype=np.float64)).reshape(-1)


def geodetic_to_enu(lat_deg: ArrayLike, lon_deg: ArrayLike, alt_m: ArrayLike,
                    lat0_deg: float, lon0_deg: float, alt0_m: float) -> np.ndarray:
    """Convert WGS84 fixes to local east, north, up metres at an origin fix (exact).

    lat_deg, lon_deg, alt_m: scalars or [N] arrays (broadcast together).
    lat0_deg, lon0_deg, alt0_m: the origin. Returns [N, 3] (east, north, up) in metres:
    geodetic -> ECEF, minus the origin's ECEF, rotated into the origin's ENU axes.
    """
    lat, lon, alt = np.broadcast_arrays(_flat(lat_deg), _flat(lon_deg), _flat(alt_m))
    d = _geodetic_to_ecef(lat, lon, alt) - _geodetic_to_ecef(
        np.array([lat0_deg], dtype=np.float64), np.array([lon0_deg], dtype=np.float64),
        np.array([alt0_m], dtype=np.float64))
    phi = math.radians(lat0_deg)
    lam = math.radians(lon0_deg)
    sp, cp, sl, cl = math.sin(phi), math.cos(phi), math.sin(lam), math.cos(lam)
    rot = np.array([[-sl, cl, 0.0],
                    [-sp * cl, -sp * sl, cp],
                    [cp * cl, cp * sl, sp]])  # rows: east, north, up in ECEF
    return d @ rot.T


def mercator_scale_xy(lat_deg: ArrayLike, lon_deg: ArrayLike,
                      lat0_deg: float, lon0_deg: float) -> np.ndarray:
    """Project fixes with the KITTI devkit's Mercator projection, relative to an origin.

    The devkit's ``latToScale``/``latlonToMercator``: scale = cos(lat0),
    mx = scale * lon * pi * er / 180, my = scale * er * ln(tan((90 + lat) * pi / 360)),
    er = 6378137 m. lat_deg, lon_deg: scalars or [N] arrays. Returns [N, 2] (x east,
    y north) in metres, minus the origin's projection.
    """
    lat, lon = np.broadcast_arrays(_flat(lat_deg), _flat(lon_deg))
    scale = math.cos(math.radians(lat0_deg))
    er = KITTI_EARTH_RADIUS

    def project(la: np.ndarray, lo: np.ndarray) -> np.ndarray:
        mx = scale * lo * math.pi * er / 180.0
        my = scale * er * np.log(np.tan((90.0 + la) * math.pi / 360.0))
        return np.stack([mx, my], axis=-1)

    origin = project(np.array([lat0_deg], dtype=np.float64),
                     np.array([lon0_deg], dtype=np.float64))
    return project(lat, lon) - origin


def _travel_headings(east: np.ndarray, north: np.ndarray) -> np.ndarray:
    """Heading of travel (rad, 0 = east, CCW+) at each of N positions: [N] -> [N].

    Interior samples use the direction from the previous to the next fix; where those
    coincide the previous heading is kept (leading ones take the first defined heading,
    all 0 when the receiver never moves). The first and last copy their neighbour.
    """
    n = len(east)
    if n < 2:
        return np.zeros(n)
    if n == 2:
        de, dn = east[1] - east[0], north[1] - north[0]
        moved = math.hypot(de, dn) > _MIN_HEADING_BASELINE
        return np.full(2, math.atan2(dn, de) if moved else 0.0)
    de = east[2:] - east[:-2]
    dn = north[2:] - north[:-2]
    inner = np.where(np.hypot(de, dn) > _MIN_HEADING_BASELINE, np.arctan2(dn, de), np.nan)
    defined = np.flatnonzero(np.isfinite(inner))
    if defined.size == 0:
        return np.zeros(n)
    current = inner[defined[0]]
    for i in range(len(inner)):
        if np.isfinite(inner[i]):
            current = inner[i]
        else:
            inner[i] = current
    return np.concatenate([inner[:1], inner, inner[-1:]])


def navsat_trajectory(stamps: ArrayLike, lat: ArrayLike, lon: ArrayLike,
                      alt: Optional[ArrayLike], yaw: Optional[ArrayLike] = None,
                      origin: Optional[Tuple[float, float, float]] = None
                      ) -> Tuple[Trajectory, Tuple[float, float, float]]:
    """Build a trajectory in a local ENU frame (x east, y north, z up) from GNSS fixes.

    stamps, lat, lon, alt: [N] seconds, degrees, degrees, metres; alt None for 2-D fixes
    (all at the origin's height). yaw: optional [N] headings (rad, 0 = east, CCW+) that
    become the orientations; without it the heading of travel is used (see
    :func:`_travel_headings`). origin: (lat0, lon0, alt0), default the first kept fix.
    Fixes with NaN latitude or longitude are dropped (filtering NO_FIX status is the
    caller's job). Returns the trajectory and the origin used. Raises MapError when no
    fix is left, the arrays differ in length, or a kept fix has a non-finite altitude/yaw.
    """
    t = _flat(stamps)
    la = _flat(lat)
    lo = _flat(lon)
    al = np.zeros_like(la) if alt is None else _flat(alt)
    ya = None if yaw is None else _flat(yaw)
    lengths = {len(t), len(la), len(lo), len(al)} | ({len(ya)} if ya is not None else set())
    if len(lengths) != 1:
        raise MapError(f'stamps, lat, lon, alt and yaw must have one value per fix; got '
                       f'lengths {len(t)}, {len(la)}, {len(lo)}, {len(al)}'
                       + (f', {len(ya)}' if ya is not None else ''))
    keep = np.isfinite(la) & np.isfinite(lo)
    if not keep.any():
        raise MapError('no GNSS fix with a finite latitude and longitude; nothing to convert')
    t, la, lo, al = t[keep], la[keep], lo[keep], al[keep]
    if not np.all(np.isfinite(al)):
        raise MapError('a GNSS fix has a NaN altitude; pass alt=None for 2-D fixes')
    if ya is not None:
        ya = ya[keep]
        if not np.all(np.isfinite(ya)):
            raise MapError('a GNSS fix has a NaN yaw; drop it or pass yaw=None')
    if origin is None:
        origin = (float(la[0]), float(lo[0]), float(al[0]))
    else:
        origin = tuple(float(v) for v in origin)
        if len(origin) != 3 or not all(math.isfinite(v) for v in origin):
            raise MapError(f'origin must be three finite numbers (lat, lon, alt), got {origin}')
    if alt is None:
        al = np.full_like(la, origin[2])
    enu = geodetic_to_enu(la, lo, al, *origin)  # [N, 3]
    headings = ya if ya is not None else _travel_headings(enu[:, 0], enu[:, 1])
    samples = [PoseSample(float(t[i]), float(enu[i, 0]), float(enu[i, 1]), float(enu[i, 2]),
                          *quaternion_from_yaw(float(headings[i])))
               for i in range(len(t))]
    return Trajectory(samples), origin
