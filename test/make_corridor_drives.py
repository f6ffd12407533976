#!/usr/bin/env python3
# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Write the shipped demo drives: the corridor traversals as two small ROS 2 bags (mcap).

Each bag holds /camera/image_raw/compressed (sensor_msgs/CompressedImage, JPEG, one frame
per corridor image, 2 Hz) and /odom (nav_msgs/Odometry at 4 Hz). The poses come from
frame order, not from a sensor: frame i stands at x = i metres along a straight corridor
(the dataset's ground truth is by frame index: query i shows references i-2..i+2).
Usage: test/make_corridor_drives.py [OUTPUT_DIR] (default
patch_netvlad_ros/data/corridor_drives).
"""

from pathlib import Path
import sys

from bag_writers import write_bag

from patch_netvlad_ros.core.drives.datasets import corridor
from patch_netvlad_ros.core.model.image import load_image

FRAME_PERIOD = 0.5   # s between frames (2 Hz)
METRES_PER_FRAME = 1.0
STARTS = {'reference': 1_000.0, 'query': 5_000.0}


def write_drive(out: Path, name: str, paths) -> Path:
    """Write one traversal as a bag folder out/name."""
    t0 = STARTS[name]
    images = [(t0 + i * FRAME_PERIOD, 'camera_optical', load_image(p))
              for i, p in enumerate(paths)]
    # Odometry twice per frame, along +x, heading +x (identity orientation).
    end = t0 + (len(paths) - 1) * FRAME_PERIOD
    steps = int(round((end - t0) / (FRAME_PERIOD / 2))) + 1
    poses = []
    for k in range(steps):
        t = t0 + k * FRAME_PERIOD / 2
        x = (t - t0) / FRAME_PERIOD * METRES_PER_FRAME
        poses.append((t, 'odom', (x, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)))
    return write_bag(out / name, 'mcap', images, '/camera/image_raw/compressed', poses,
                     '/odom', compressed=True)


def main() -> int:
    """Write both drives."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path('patch_netvlad_ros/data/'
                                                           'corridor_drives')
    data = corridor()
    for name, paths in (('reference', data.references), ('query', data.queries)):
        print(write_drive(out, name, paths))
    return 0


if __name__ == '__main__':
    sys.exit(main())
