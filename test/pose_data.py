# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A real trajectory in both pose conventions: KITTI raw drive 0005's GNSS/IMU poses.

z-up: WGS84 fixes to local ENU metres (x east, y north, z up) and the OXTS roll, pitch
and yaw as the body's orientation (x forward, z up). Camera convention: the same poses
with the axes renamed by hand here (x_cam = -y, y_cam = -z, z_cam = x), as KITTI odometry
and many SLAM outputs give them; written out independently of the module under test.
"""

import csv
import math
from pathlib import Path
import shutil
from typing import Tuple

import numpy as np

from patch_netvlad_ros.core.drives.poses import geodetic_to_enu

TEST_DATA = Path(__file__).resolve().parent / 'data'
KITTI_CSV = TEST_DATA / 'kitti_raw_0005' / 'gps_poses_derived.csv'
#: Left-camera images of frames 0, 10, ..., 90 (1242x375).
KITTI_IMAGES = TEST_DATA / 'kitti_distractors'


def quaternion_rpy(roll: float, pitch: float, yaw: float) -> Tuple[float, ...]:
    """Return (qx, qy, qz, qw) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def kitti_z_up() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return stamps [91] (s), positions [91, 3], quaternions [91, 4], yaw and roll [91]."""
    with open(KITTI_CSV, newline='') as handle:
        rows = list(csv.DictReader(handle))
    col = {k: np.array([float(r[k]) for r in rows])
           for k in ('lat_deg', 'lon_deg', 'alt_m', 'roll_rad', 'pitch_rad', 'yaw_rad')}
    times = np.array([np.datetime64(r['timestamp'].replace(' ', 'T'), 'ns') for r in rows])
    stamps = (times - times[0]).astype(np.int64) * 1e-9
    positions = geodetic_to_enu(col['lat_deg'], col['lon_deg'], col['alt_m'],
                                col['lat_deg'][0], col['lon_deg'][0], col['alt_m'][0])
    quats = np.array([quaternion_rpy(r, p, y) for r, p, y in
                      zip(col['roll_rad'], col['pitch_rad'], col['yaw_rad'])])
    return stamps, positions, quats, col['yaw_rad'], col['roll_rad']


def to_camera(positions: np.ndarray, quats: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Return z-up poses in the camera convention (x right, y down, z forward).

    Positions: x_cam = -y, y_cam = -z, z_cam = x. Orientations: the same renaming on the
    quaternion's axis (C^T R C has axis C^T u), scalar part kept.
    """
    p = np.stack([-positions[:, 1], -positions[:, 2], positions[:, 0]], axis=1)
    q = np.stack([-quats[:, 1], -quats[:, 2], quats[:, 0], quats[:, 3]], axis=1)
    return p, q


def write_folder_drive(folder: Path, frames, positions: np.ndarray, quats: np.ndarray,
                       stamps: np.ndarray) -> Path:
    """Write a poses CSV for KITTI frames (their images copied in); return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ['image,stamp,x,y,z,qx,qy,qz,qw']
    for i in frames:
        name = f'{i:010d}.jpg'
        shutil.copy(KITTI_IMAGES / name, folder / name)
        values = [*positions[i], *quats[i]]
        lines.append(f'{name},{float(stamps[i])!r},' + ','.join(repr(float(v)) for v in values))
    path = folder / 'poses.csv'
    path.write_text('\n'.join(lines) + '\n')
    return path
