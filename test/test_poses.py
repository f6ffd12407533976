# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Poses: interpolation, keyframes and GNSS to local metres, against hand-computed values."""

import csv
import math

import numpy as np
from pose_data import KITTI_CSV, kitti_z_up, quaternion_rpy, to_camera, write_folder_drive
import pytest

from patch_netvlad_ros.core.drives.poses import (detect_convention, geodetic_to_enu, headings,
                                                 mercator_scale_xy, navsat_trajectory, PoseSample,
                                                 quaternion_from_yaw, sample_to_z_up,
                                                 select_keyframes, to_z_up, Trajectory, yaw_of)
from patch_netvlad_ros.core.errors import MapError

#: WGS84, written out here so the expected values do not come from the module under test.
A = 6378137.0
F = 1.0 / 298.257223563
E2 = F * (2.0 - F)

S45 = math.sqrt(0.5)  # sin 45 deg = cos 45 deg


def yawed(stamp, x, y, z, yaw_deg):
    """Return a PoseSample at (x, y, z) turned yaw_deg about +z (quaternion written by hand)."""
    half = math.radians(yaw_deg) / 2.0
    return PoseSample(stamp, x, y, z, 0.0, 0.0, math.sin(half), math.cos(half))


def components(sample):
    """Return the 7 pose values (x, y, z, qx, qy, qz, qw) of a sample."""
    return (sample.x, sample.y, sample.z, sample.qx, sample.qy, sample.qz, sample.qw)


# ---------------------------------------------------------------- interpolation


def test_position_halfway():
    traj = Trajectory([PoseSample(0.0, 0.0, 0.0, 0.0), PoseSample(2.0, 2.0, 4.0, 0.0)])
    mid = traj.interpolate(1.0, max_gap=5.0)
    assert mid.stamp == 1.0
    assert (mid.x, mid.y, mid.z) == pytest.approx((1.0, 2.0, 0.0), abs=1e-12)
    quarter = traj.interpolate(0.5, max_gap=5.0)
    assert (quarter.x, quarter.y, quarter.z) == pytest.approx((0.5, 1.0, 0.0), abs=1e-12)


def test_slerp_midpoint_of_0_and_90_degrees_is_45():
    traj = Trajectory([PoseSample(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                       PoseSample(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, S45, S45)])
    mid = traj.interpolate(0.5, max_gap=1.0)
    s, c = math.sin(math.radians(22.5)), math.cos(math.radians(22.5))
    assert (mid.qx, mid.qy, mid.qz, mid.qw) == pytest.approx((0.0, 0.0, s, c), abs=1e-12)
    assert yaw_of(mid) == pytest.approx(math.radians(45.0), abs=1e-12)


def test_slerp_takes_the_short_way():
    """-q is the same rotation as q: slerp to -q(90 deg) must still pass through 45 deg."""
    traj = Trajectory([PoseSample(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                       PoseSample(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -S45, -S45)])
    mid = traj.interpolate(0.5, max_gap=1.0)
    s, c = math.sin(math.radians(22.5)), math.cos(math.radians(22.5))
    assert (mid.qx, mid.qy, mid.qz, mid.qw) == pytest.approx((0.0, 0.0, s, c), abs=1e-12)
    # Across +-180 deg: 170 deg to -170 deg passes through 180 deg, not through 0.
    traj = Trajectory([yawed(0.0, 0, 0, 0, 170.0), yawed(1.0, 0, 0, 0, -170.0)])
    mid = traj.interpolate(0.5, max_gap=1.0)
    assert abs(yaw_of(mid)) == pytest.approx(math.pi, abs=1e-12)


def test_slerp_about_a_tilted_axis_and_between_two_axes():
    """Slerp in 3-D: a turn about one axis at constant rate; between two axes, the arc."""
    u = np.array([1.0, 2.0, 2.0]) / 3.0  # a unit axis off every coordinate axis

    def about_u(deg):
        half = math.radians(deg) / 2.0
        return (*(u * math.sin(half)), math.cos(half))

    traj = Trajectory([PoseSample(10.0, 0, 0, 0, *about_u(20.0)),
                       PoseSample(12.0, 0, 0, 0, *about_u(100.0))])
    for stamp, deg in ((10.5, 40.0), (11.0, 60.0), (11.9, 96.0)):
        got = traj.interpolate(stamp, max_gap=2.0)
        assert (got.qx, got.qy, got.qz, got.qw) == pytest.approx(about_u(deg), abs=1e-12)
    # 90 deg about x to 90 deg about y: the quaternions are 60 deg apart (dot 1/2), so the
    # midpoint is their normalised sum (1, 1, 0, 2) / sqrt(6) and a third of the way is
    # (sin 40 q0 + sin 20 q1) / sin 60.
    q0, q1 = np.array([S45, 0.0, 0.0, S45]), np.array([0.0, S45, 0.0, S45])
    traj = Trajectory([PoseSample(0.0, 0, 0, 0, *q0), PoseSample(3.0, 0, 0, 0, *q1)])
    mid = traj.interpolate(1.5, max_gap=3.0)
    expected = np.array([1.0, 1.0, 0.0, 2.0]) / math.sqrt(6)
    assert components(mid)[3:] == pytest.approx(expected, abs=1e-12)
    third = traj.interpolate(1.0, max_gap=3.0)
    sin = [math.sin(math.radians(d)) for d in (40.0, 20.0, 60.0)]
    expected = (sin[0] * q0 + sin[1] * q1) / sin[2]
    assert components(third)[3:] == pytest.approx(expected, abs=1e-12)
    # the same with q1 given as -q1 (the same rotation): the same short arc, same signs
    traj = Trajectory([PoseSample(0.0, 0, 0, 0, *q0), PoseSample(3.0, 0, 0, 0, *-q1)])
    flipped = traj.interpolate(1.5, max_gap=3.0)
    assert components(flipped) == pytest.approx(components(mid), abs=1e-12)


def test_exact_stamp_returns_the_sample():
    samples = [yawed(0.0, 0, 0, 0, 0), yawed(1.0, 1, 2, 3, 30), yawed(2.0, 4, 5, 6, 60)]
    traj = Trajectory(samples)
    for s in samples:
        assert traj.interpolate(s.stamp, max_gap=0.1) == s  # even with a tiny max_gap
    assert traj.interpolate_many([1.0], max_gap=0.1) == [samples[1]]


def test_outside_the_trajectory_is_none():
    traj = Trajectory([PoseSample(1.0, 0, 0, 0), PoseSample(2.0, 1, 0, 0)])
    assert traj.interpolate(0.999, max_gap=10.0) is None
    assert traj.interpolate(2.001, max_gap=10.0) is None
    assert traj.interpolate(float('nan'), max_gap=10.0) is None
    assert traj.interpolate_many([0.999, 2.001, float('nan')], max_gap=10.0) == [None] * 3


def test_max_gap():
    traj = Trajectory([PoseSample(0.0, 0, 0, 0), PoseSample(1.0, 1, 0, 0),
                       PoseSample(4.0, 4, 0, 0)])
    assert traj.interpolate(0.5, max_gap=1.0).x == pytest.approx(0.5)  # gap 1 <= 1
    assert traj.interpolate(2.5, max_gap=1.0) is None                   # gap 3 > 1
    assert traj.interpolate(2.5, max_gap=3.0).x == pytest.approx(2.5)   # gap 3 <= 3
    assert traj.interpolate(2.5, max_gap=math.inf).x == pytest.approx(2.5)
    many = traj.interpolate_many([0.5, 2.5], max_gap=1.0)
    assert many[0].x == pytest.approx(0.5) and many[1] is None


def test_interpolate_many_equals_interpolate():
    rng = np.random.default_rng(3)
    stamps = np.cumsum(rng.uniform(0.05, 0.5, size=40))
    samples = [yawed(float(t), *rng.normal(size=3), rng.uniform(-180, 180)) for t in stamps]
    rng.shuffle(samples)  # the constructor sorts
    traj = Trajectory(samples)
    assert np.all(np.diff(traj.stamps) > 0)
    queries = list(rng.uniform(stamps[0] - 1.0, stamps[-1] + 1.0, size=200))
    queries += list(stamps[::5]) + [float('nan')]
    many = traj.interpolate_many(queries, max_gap=0.3)
    assert len(many) == len(queries)
    assert any(m is None for m in many) and any(m is not None for m in many)
    for q, m in zip(queries, many):
        one = traj.interpolate(q, max_gap=0.3)
        if one is None:
            assert m is None
        else:
            assert m.stamp == one.stamp
            assert components(m) == pytest.approx(components(one), abs=1e-12)


def test_single_sample_trajectory():
    traj = Trajectory([PoseSample(5.0, 1, 2, 3)])
    assert len(traj) == 1
    assert traj.interpolate(5.0, max_gap=1.0) == PoseSample(5.0, 1, 2, 3)
    assert traj.interpolate(5.5, max_gap=1.0) is None
    assert traj.interpolate_many([4.0, 5.0, 6.0], max_gap=1.0) == [
        None, PoseSample(5.0, 1, 2, 3), None]


def test_duplicates_and_normalisation():
    same = PoseSample(1.0, 1, 1, 1)
    traj = Trajectory([PoseSample(0.0, 0, 0, 0), same, same])
    assert len(traj) == 2
    np.testing.assert_array_equal(traj.stamps, [0.0, 1.0])
    scaled = Trajectory([PoseSample(0.0, 0, 0, 0, 0.0, 0.0, 0.0, 2.0)])
    assert scaled.samples[0].qw == pytest.approx(1.0)


# ---------------------------------------------------------------- yaw helpers


def test_yaw_helpers():
    assert quaternion_from_yaw(0.0) == pytest.approx((0.0, 0.0, 0.0, 1.0))
    assert quaternion_from_yaw(math.pi / 2) == pytest.approx((0.0, 0.0, S45, S45))
    assert yaw_of(PoseSample(0, 0, 0, 0, 0.0, 0.0, S45, S45)) == pytest.approx(math.pi / 2)
    assert yaw_of((0.0, 0.0, 1.0, 0.0)) == pytest.approx(math.pi)
    assert yaw_of((0.0, 0.0, -0.5, 0.5)) == pytest.approx(-math.pi / 2)  # scale-invariant


# ---------------------------------------------------------------- keyframes


def test_keyframes_distance_from_last_keyframe():
    """0.4 m steps, 1.0 m: 0 (0.0 m); 3 (1.2 m from 0); 6 (1.2 m from 3); 9."""
    line = [PoseSample(0.1 * i, 0.4 * i, 0.0, 0.0) for i in range(11)]
    assert select_keyframes(line, min_distance=1.0) == [0, 3, 6, 9]
    # Distances are 3-D: steps of (0.3, 0, 0.4) are 0.5 m, so every second sample.
    ramp = [PoseSample(i, 0.3 * i, 0.0, 0.4 * i) for i in range(6)]
    assert select_keyframes(ramp, min_distance=0.9) == [0, 2, 4]


def test_keyframes_turn_in_place():
    """10 deg steps, 25 deg: 0; 3 (30 deg from 0); 6 (30 deg from 3)."""
    turn = [yawed(i, 0, 0, 0, 10.0 * i) for i in range(8)]
    assert select_keyframes(turn, min_heading=math.radians(25.0)) == [0, 3, 6]
    # The difference is wrapped: 170 -> -170 deg is a 20 deg turn, not 340 deg.
    wrap = [yawed(0, 0, 0, 0, 170.0), yawed(1, 0, 0, 0, -170.0), yawed(2, 0, 0, 0, -150.0)]
    assert select_keyframes(wrap, min_heading=math.radians(30.0)) == [0, 2]


def test_keyframes_time_based():
    """0.1 s steps, 0.25 s: 0; 3 (0.3 s after 0); 6; 9."""
    still = [PoseSample(0.1 * i, 0.0, 0.0, 0.0) for i in range(10)]
    assert select_keyframes(still, min_interval=0.25) == [0, 3, 6, 9]


def test_keyframes_any_criterion():
    """Distance 1.0 m OR heading 45 deg OR 3 s, all measured from the last keyframe.

    i (stamp s): x (m), yaw (deg)
    0: 0.0, 0     first sample: always a keyframe
    1: 0.5, 0
    2: 0.6, 50
    3: 0.9, 50
    4: 1.7, 60
    5: 1.8, 60
    distance only: 4 (1.7 m from 0); 5 is 0.1 m from 4            -> [0, 4]
    heading only: 2 (50 deg from 0); 3..5 within 10 deg of 2       -> [0, 2]
    distance or heading: 2 (heading); 3 (0.3 m, 0 deg from 2) no;
        4 (1.1 m from 2) yes; 5 no                                 -> [0, 2, 4]
    3 s only: 3 (3 s from 0); 4, 5 (1 s, 2 s from 3) no            -> [0, 3]
    distance or 3 s: 3 (time, 0.9 m); 4 (0.8 m, 1 s from 3) no;
        5 (0.9 m, 2 s from 3) no                                   -> [0, 3]
    """
    xs_yaws = [(0.0, 0), (0.5, 0), (0.6, 50), (0.9, 50), (1.7, 60), (1.8, 60)]
    samples = [yawed(float(i), x, 0, 0, yaw) for i, (x, yaw) in enumerate(xs_yaws)]
    heading = math.radians(45.0)
    assert select_keyframes(samples, min_distance=1.0) == [0, 4]
    assert select_keyframes(samples, min_heading=heading) == [0, 2]
    assert select_keyframes(samples, min_distance=1.0, min_heading=heading) == [0, 2, 4]
    assert select_keyframes(samples, min_interval=3.0) == [0, 3]
    assert select_keyframes(samples, min_distance=1.0, min_interval=3.0) == [0, 3]
    assert select_keyframes(samples, min_distance=1.0, min_heading=heading,
                            min_interval=3.0) == [0, 2, 4]


def test_keyframes_all_zero_and_empty():
    samples = [PoseSample(i, 0.0, 0.0, 0.0) for i in range(5)]
    assert select_keyframes(samples) == [0, 1, 2, 3, 4]
    assert select_keyframes([]) == []
    with pytest.raises(MapError, match='min_distance'):
        select_keyframes(samples, min_distance=-1.0)


# ---------------------------------------------------------------- GNSS


def test_enu_origin_is_zero():
    enu = geodetic_to_enu(49.0, 8.4, 112.0, 49.0, 8.4, 112.0)
    assert enu.shape == (1, 3)
    np.testing.assert_allclose(enu, [[0.0, 0.0, 0.0]], atol=1e-9)


def test_enu_north_is_the_meridian_arc():
    """0.001 deg north at 49 deg: M dphi, M = a(1 - e^2) / (1 - e^2 sin^2 phi)^1.5."""
    phi = math.radians(49.0005)  # mid-latitude of the arc
    m = A * (1.0 - E2) / (1.0 - E2 * math.sin(phi) ** 2) ** 1.5
    expected = m * math.radians(0.001)
    assert expected == pytest.approx(111.2, abs=0.1)
    enu = geodetic_to_enu(49.001, 8.4, 0.0, 49.0, 8.4, 0.0)[0]
    assert enu[1] == pytest.approx(expected, abs=0.01)
    assert enu[0] == pytest.approx(0.0, abs=1e-6)
    # The chord dips below the tangent plane by about d^2 / (2R) = 1 mm.
    assert enu[2] == pytest.approx(-expected ** 2 / (2 * 6.37e6), abs=2e-4)


def test_enu_up_and_arrays():
    enu = geodetic_to_enu(49.0, 8.4, 100.0, 49.0, 8.4, 0.0)
    np.testing.assert_allclose(enu, [[0.0, 0.0, 100.0]], atol=1e-3)
    many = geodetic_to_enu([49.0, 49.0, 49.001], [8.4, 8.4, 8.4], [0.0, 100.0, 0.0],
                           49.0, 8.4, 0.0)
    assert many.shape == (3, 3)
    np.testing.assert_allclose(many[1], [0.0, 0.0, 100.0], atol=1e-3)


def test_navsat_travel_heading():
    """East for 3 fixes, then north; a stop keeps the previous heading."""
    lat0, lon0 = 49.0, 8.4
    d_lon = 1e-5  # about 0.73 m east at 49 deg
    d_lat = 1e-5  # about 1.11 m north
    lat = [lat0, lat0, lat0, lat0, lat0 + d_lat, lat0 + 2 * d_lat, lat0 + 2 * d_lat,
           lat0 + 2 * d_lat]
    lon = [lon0, lon0 + d_lon, lon0 + 2 * d_lon, lon0 + 3 * d_lon, lon0 + 3 * d_lon,
           lon0 + 3 * d_lon, lon0 + 3 * d_lon, lon0 + 3 * d_lon]
    traj, origin = navsat_trajectory(np.arange(8) * 0.1, lat, lon, None)
    assert origin == (lat0, lon0, 0.0)
    yaws = [math.degrees(yaw_of(s)) for s in traj.samples]
    # 0: copies 1; 1, 2: east; 3: from 2 (east) to 4 (north-east of it); 4: north;
    # 5: from 4 to 6 north; 6: 5 and 7 coincide -> keeps 5's; 7: copies 6.
    # Fix 3's heading, from fix 2 to fix 4: one d_lon east and one d_lat north, in metres
    # by the ellipsoid's radii of curvature N (east) and M (north).
    e4 = A / math.sqrt(1 - E2 * math.sin(math.radians(lat0)) ** 2) \
        * math.cos(math.radians(lat0)) * math.radians(d_lon)
    n4 = A * (1 - E2) / (1 - E2 * math.sin(math.radians(lat0)) ** 2) ** 1.5 \
        * math.radians(d_lat)
    expected = [0.0, 0.0, 0.0, math.degrees(math.atan2(n4, e4)), 90.0, 90.0, 90.0, 90.0]
    assert yaws == pytest.approx(expected, abs=0.01)
    # NaN fixes are dropped; the origin is the first kept fix.
    traj, origin = navsat_trajectory([0.0, 1.0, 2.0], [math.nan, lat0, lat0 + d_lat],
                                     [lon0, lon0, lon0], [5.0, 6.0, 7.0])
    assert len(traj) == 2 and origin == (lat0, lon0, 6.0)
    assert traj.samples[1].z == pytest.approx(1.0, abs=1e-6)


def test_navsat_errors():
    with pytest.raises(MapError, match='no GNSS fix'):
        navsat_trajectory([0.0], [math.nan], [8.4], [0.0])
    with pytest.raises(MapError, match='one value per fix'):
        navsat_trajectory([0.0, 1.0], [49.0], [8.4], [0.0])


# ---------------------------------------------------------------- KITTI drive 0005


@pytest.fixture(scope='module')
def kitti():
    """Load the derived GNSS poses of KITTI raw 2011_09_26_drive_0005 (91 frames)."""
    with open(KITTI_CSV, newline='') as f:
        rows = list(csv.DictReader(f))
    col = {k: np.array([float(r[k]) for r in rows])
           for k in ('lat_deg', 'lon_deg', 'alt_m', 'yaw_rad', 'x_east_m', 'y_north_m')}
    times = np.array([np.datetime64(r['timestamp'].replace(' ', 'T'), 'ns') for r in rows])
    col['stamp'] = (times - times[0]).astype(np.int64) * 1e-9
    return col


def test_kitti_mercator_reproduces_the_devkit(kitti):
    xy = mercator_scale_xy(kitti['lat_deg'], kitti['lon_deg'],
                           kitti['lat_deg'][0], kitti['lon_deg'][0])
    assert xy.shape == (91, 2)
    diff = np.abs(xy - np.stack([kitti['x_east_m'], kitti['y_north_m']], axis=1)).max()
    print(f'max |Mercator - csv| = {diff * 1000:.2f} mm')
    assert diff < 0.002


def test_kitti_enu_within_centimetres_of_the_derived_poses(kitti):
    enu = geodetic_to_enu(kitti['lat_deg'], kitti['lon_deg'], kitti['alt_m'],
                          kitti['lat_deg'][0], kitti['lon_deg'][0], kitti['alt_m'][0])
    csv_xy = np.stack([kitti['x_east_m'], kitti['y_north_m']], axis=1)
    diff = np.abs(enu[:, :2] - csv_xy)
    print(f'max |ENU - csv Mercator|: east {diff[:, 0].max() * 100:.2f} cm, '
          f'north {diff[:, 1].max() * 100:.2f} cm')
    assert diff.max() < 0.05
    # The difference is the sphere of the devkit's projection (radius a) against the
    # ellipsoid's radii of curvature at the origin: scaled by N/a east and M/a north the
    # csv agrees with ENU to its rounding.
    s2 = math.sin(math.radians(kitti['lat_deg'][0])) ** 2
    n = A / math.sqrt(1 - E2 * s2)
    m = A * (1 - E2) / (1 - E2 * s2) ** 1.5
    np.testing.assert_allclose(enu[:, 0], csv_xy[:, 0] * n / A, atol=0.002)
    np.testing.assert_allclose(enu[:, 1], csv_xy[:, 1] * m / A, atol=0.002)


def test_kitti_navsat_trajectory(kitti):
    traj, origin = navsat_trajectory(kitti['stamp'], kitti['lat_deg'], kitti['lon_deg'],
                                     kitti['alt_m'], yaw=kitti['yaw_rad'])
    assert len(traj) == 91
    assert origin == (kitti['lat_deg'][0], kitti['lon_deg'][0], kitti['alt_m'][0])
    yaws = np.array([yaw_of(s) for s in traj.samples])
    wrapped = np.angle(np.exp(1j * (yaws - kitti['yaw_rad'])))
    assert np.abs(wrapped).max() < 1e-9
    steps = np.diff(np.array([[s.x, s.y, s.z] for s in traj.samples]), axis=0)
    length = np.linalg.norm(steps, axis=1).sum()
    print(f'path length {length:.3f} m')
    assert 33.0 < length < 34.0
    # Heading of travel (no yaw) against the vehicle's yaw: a few degrees of sideslip/noise.
    travel, _ = navsat_trajectory(kitti['stamp'], kitti['lat_deg'], kitti['lon_deg'],
                                  kitti['alt_m'])
    diff = np.degrees(np.abs(np.angle(np.exp(
        1j * (np.array([yaw_of(s) for s in travel.samples]) - kitti['yaw_rad'])))))
    print(f'travel heading vs yaw: median {np.median(diff):.1f} deg, max {diff.max():.1f} deg')
    assert np.median(diff) < 5.0 and diff.max() < 15.0
    # Interpolating halfway between two frames lands halfway between them.
    s0, s1 = traj.samples[10], traj.samples[11]
    mid = traj.interpolate(0.5 * (s0.stamp + s1.stamp), max_gap=0.2)
    assert (mid.x, mid.y) == pytest.approx((0.5 * (s0.x + s1.x), 0.5 * (s0.y + s1.y)))


# ---------------------------------------------------------------- errors


def test_trajectory_errors():
    with pytest.raises(MapError, match='at least one pose'):
        Trajectory([])
    with pytest.raises(MapError, match='NaN'):
        Trajectory([PoseSample(0.0, math.nan, 0.0, 0.0)])
    with pytest.raises(MapError, match='NaN'):
        Trajectory([PoseSample(math.nan, 0.0, 0.0, 0.0)])
    with pytest.raises(MapError, match='zero quaternion'):
        Trajectory([PoseSample(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)])
    with pytest.raises(MapError, match='two different poses'):
        Trajectory([PoseSample(0.0, 0.0, 0.0, 0.0), PoseSample(0.0, 1.0, 0.0, 0.0)])
    traj = Trajectory([PoseSample(0.0, 0.0, 0.0, 0.0)])
    with pytest.raises(MapError, match='max_gap'):
        traj.interpolate(0.0, max_gap=-1.0)


# ---------------------------------------------------------------- pose conventions


def test_camera_poses_to_z_up_by_hand():
    # camera axes: x right, y down, z forward; z-up: x forward, y left, z up
    p, q = to_z_up([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0, 1.0]], 'camera')
    assert p[0] == pytest.approx([3.0, -1.0, -2.0])
    assert q[0] == pytest.approx([0.0, 0.0, 0.0, 1.0])
    s45 = math.sqrt(0.5)
    # optical axis turned from +z to +x (the right): about +y by 90 deg -> heading -90 deg
    right = [0.0, s45, 0.0, s45]
    # rolled 30 deg about the optical axis: no heading change at all
    rolled = [0.0, 0.0, math.sin(math.radians(15)), math.cos(math.radians(15))]
    got = np.degrees(headings(np.array([right, rolled]), 'camera'))
    assert got == pytest.approx([-90.0, 0.0], abs=1e-9)
    # read as z-up (the bug): the turn vanishes and the roll becomes a 30 deg heading
    assert np.degrees(headings(np.array([right, rolled]), 'z-up')) == pytest.approx(
        [0.0, 30.0], abs=1e-9)
    # z-up poses are left as they are
    zp, zq = to_z_up([[1.0, 2.0, 3.0]], [right], 'z-up')
    assert zp[0] == pytest.approx([1.0, 2.0, 3.0]) and zq[0] == pytest.approx(right)
    up = sample_to_z_up(PoseSample(7.0, 1.0, 2.0, 3.0, *right), 'camera')
    assert (up.stamp, up.x, up.y, up.z) == pytest.approx((7.0, 3.0, -1.0, -2.0))
    with pytest.raises(MapError, match="unknown pose convention 'ned'"):
        to_z_up([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]], 'ned')


def test_to_z_up_keeps_norm_and_sign():
    """C R C^T by hand: the vector part renamed (x = z_cam, y = -x_cam, z = -y_cam)."""
    s, c = math.sin(math.radians(35)), math.cos(math.radians(35))
    cam = np.array([[0.6, 0.0, 0.8, 0.0],              # 180 deg about (0.6, 0, 0.8)
                    [-s, 0.0, 0.0, -c],                # w < 0: the sign is kept
                    [0.0, 0.0, 2 * s, 2 * c],          # norm 2: kept
                    [0.0, 0.0, 0.0, 0.0]])             # zero: stays zero
    _, q = to_z_up(np.zeros((4, 3)), cam, 'camera')
    np.testing.assert_allclose(q[:3], [[0.8, -0.6, 0.0, 0.0], [0.0, s, 0.0, -c],
                                       [2 * s, 0.0, 0.0, 2 * c]], atol=1e-15)
    np.testing.assert_array_equal(q[3], [0.0, 0.0, 0.0, 0.0])


def test_rotation_matrices_by_hand():
    """Quaternion to matrix: 90 deg about x, 120 deg about (1, 1, 1), any norm; zero: NaN."""
    from patch_netvlad_ros.core.drives.poses import _rotations
    third = math.sqrt(1.0 / 3.0)
    rot = _rotations(np.array([[S45, 0.0, 0.0, S45],
                               [0.5, 0.5, 0.5, 0.5],        # cycles the axes x -> y -> z
                               [0.0, 0.0, 0.0, 4.0],
                               [0.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(rot[0], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(rot[1], [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(rot[1] @ ([third] * 3), [third] * 3, atol=1e-15)  # the axis
    np.testing.assert_array_equal(rot[2], np.eye(3))
    assert np.isnan(rot[3]).all()


def test_kitti_trajectory_in_both_conventions():
    """The real drive rotated into camera axes comes back exactly; headings are its yaw."""
    _, pos, quats, yaw, roll = kitti_z_up()
    cam_pos, cam_q = to_camera(pos, quats)
    back_pos, back_q = to_z_up(cam_pos, cam_q, 'camera')
    np.testing.assert_allclose(back_pos, pos, atol=1e-12)
    np.testing.assert_allclose(back_q, quats, atol=1e-15)
    wrapped = np.angle(np.exp(1j * (headings(cam_q, 'camera') - yaw)))
    assert np.abs(wrapped).max() < 1e-9
    assert np.abs(np.angle(np.exp(1j * (headings(quats) - yaw)))).max() < 1e-9
    # taken as z-up, camera poses give a "heading" that is not the yaw (a mix of roll and
    # the camera's tilt): tens of degrees off on this drive
    wrong = np.degrees(np.abs(np.angle(np.exp(1j * (headings(cam_q, 'z-up') - yaw)))))
    assert wrong.min() > 10.0
    assert np.abs(roll).max() < math.radians(3)   # while the car hardly rolls
    # distances do not depend on the convention
    np.testing.assert_allclose(np.linalg.norm(np.diff(cam_pos, axis=0), axis=1),
                               np.linalg.norm(np.diff(pos, axis=0), axis=1), atol=1e-12)


def test_detect_convention_on_the_kitti_drive():
    _, pos, quats, _, _ = kitti_z_up()
    cam_pos, cam_q = to_camera(pos, quats)
    assert detect_convention(pos, quats)[0] == 'z-up'
    convention, reason = detect_convention(cam_pos, cam_q)
    assert convention == 'camera' and 'body z axis' in reason
    # an optical frame says so whatever the trajectory
    assert detect_convention(pos, quats, '/camera_color_optical_frame')[0] == 'camera'


def test_detect_convention_without_travel_evidence():
    ident = np.tile([0.0, 0.0, 0.0, 1.0], (20, 1))
    # standing still, identity orientation: nothing to go by, REP 103 assumed
    convention, reason = detect_convention(np.zeros((20, 3)), ident)
    assert convention == 'z-up' and 'no evidence' in reason
    # turning in place about z-up's up axis: body z stays on world z, body y does not
    turning = np.array([quaternion_from_yaw(a) for a in np.linspace(0, 2 * np.pi, 20)])
    assert detect_convention(np.zeros((20, 3)), turning)[0] == 'z-up'
    # the same turn about the camera's up axis (-y)
    _, cam_turning = to_camera(np.zeros((20, 3)), turning)
    assert detect_convention(np.zeros((20, 3)), cam_turning)[0] == 'camera'
    # sliding sideways with identity orientation (no forward-axis evidence): the plane
    line = np.linspace(0.0, 10.0, 20)
    flat_y = np.stack([np.zeros(20), line, 0.01 * np.sin(line)], axis=1)
    convention, reason = detect_convention(flat_y, ident)
    assert convention == 'z-up' and 'x-y plane' in reason
    flat_x = np.stack([line, 0.01 * np.sin(line), np.zeros(20)], axis=1)
    assert detect_convention(flat_x, ident)[0] == 'z-up'   # travels along body x
    cam_x = np.stack([line, 0.01 * np.sin(line), line], axis=1)   # diagonal in x-z
    convention, reason = detect_convention(cam_x, ident)
    assert convention == 'camera' and 'x-z plane' in reason


def test_heading_keyframes_agree_in_both_conventions(tmp_path):
    """min_heading keyframes count turns about the up axis, whatever the convention.

    The ten shipped KITTI frames (0, 10, ..., 90) read as folder drives in both
    conventions, keyframes every 9 degrees of yaw: by the CSV's yaw (-70.0, -62.6, -55.9,
    -49.0, -41.0, -30.2, -22.4, -23.6, -34.4, -48.9 deg) frames 0, 20, 40, 50 and 90.
    """
    from patch_netvlad_ros.core.drives.drives import KeyframeRule, read_folder_drive
    stamps, pos, quats, _, _ = kitti_z_up()
    cam_pos, cam_q = to_camera(pos, quats)
    frames = range(0, 91, 10)
    rule = KeyframeRule(min_heading=math.radians(9.0))
    size = (32, 96)
    kept = {}
    for name, (p, q) in (('z-up', (pos, quats)), ('camera', (cam_pos, cam_q))):
        csv_path = write_folder_drive(tmp_path / name, frames, p, q, stamps)
        drive = read_folder_drive(tmp_path / name, csv_path, size, rule)
        assert drive.pose_convention == name       # detected from the trajectory
        kept[name] = [f.source for f in drive.frames]
        assert drive.summary()['pose_convention'] == name
    expected = [f'{i:010d}.jpg' for i in (0, 20, 40, 50, 90)]
    assert kept['z-up'] == kept['camera'] == expected
    # what reading camera poses as z-up did: the roll-like angle hardly moves
    wrong = read_folder_drive(tmp_path / 'camera', tmp_path / 'camera' / 'poses.csv', size,
                              rule, pose_convention='z-up')
    assert [f.source for f in wrong.frames] == expected[:1]
    assert yaw_of(quaternion_rpy(0.1, 0.2, 0.3)) == pytest.approx(0.3)
