# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-demo: build a map from the shipped reference drive, localise the query drive.

The two drives are small ROS 2 bags (mcap) the project wrote from the corridor images
shipped in the package (patch_netvlad_ros/data/ATTRIBUTION.md): JPEG frames at 2 Hz and
odometry whose poses come from frame order (frame i at x = i m). The demo
1. builds a map from the reference bag (pnv-build-map: speed preset at 320x240, clusters
   and PCA bootstrapped from the drive itself; reused on later runs), then
2. replays the query bag through the ROS graph (camera_batcher -> descriptor_node ->
   localizer_node on rclpy/DDS) and evaluates what ~/match says (pnv-evaluate), with the
   dataset's ground truth (query i shows references i-2..i+2), printing recall@N,
   position errors, latency and confidence, and writing report.json and PNG plots.
"""

import argparse
import json
from pathlib import Path
import sys
from typing import Optional

from . import build_map, evaluate
from .common import positive_float, run_main
from ..core.datasets import DATA_DIR
from ..core.map_building import map_model_path

DRIVES = DATA_DIR / 'corridor_drives'
IMAGE_TOPIC = '/camera/image_raw/compressed'
POSE_TOPIC = '/odom'


def _map_is_current(map_dir: Path) -> bool:
    manifest = map_dir / 'manifest.json'
    if not manifest.is_file() or not map_model_path(map_dir).is_file():
        return False
    meta = json.loads(manifest.read_text()).get('meta', {})
    return [d.get('name') for d in meta.get('drives', [])] == ['reference']


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', type=Path, default=Path('out/demo'),
                        help='folder for the map, report and plots (default out/demo)')
    parser.add_argument('--mode', choices=('graph', 'offline'), default='graph',
                        help='graph: through the ROS nodes (default); offline: the core')
    parser.add_argument('--rate', type=positive_float, default=1.0,
                        help='replay speed relative to the recording (graph mode)')
    parser.add_argument('--rebuild', action='store_true', help='rebuild the map')
    args = parser.parse_args(argv)
    map_dir = args.output / 'corridor_map'
    if args.rebuild or not _map_is_current(map_dir):
        print(f'[1/2] building {map_dir} from {DRIVES / "reference"}', flush=True)
        status = build_map.main([str(map_dir), '--bag', str(DRIVES / 'reference'),
                                 '--image-topic', IMAGE_TOPIC, '--pose-topic', POSE_TOPIC,
                                 '--preset', 'speed', '--image-size', '320x240'])
        if status:
            return status
    else:
        print(f'[1/2] reusing {map_dir} (--rebuild to build it again)', flush=True)
    print(f'[2/2] localising {DRIVES / "query"} ({args.mode} mode)', flush=True)
    return evaluate.main(['--map', str(map_dir), '--bag', str(DRIVES / 'query'),
                          '--image-topic', IMAGE_TOPIC, '--pose-topic', POSE_TOPIC,
                          '--mode', args.mode, '--rate', str(args.rate),
                          '--frame-tolerance', '2', '--output', str(args.output)])


if __name__ == '__main__':
    sys.exit(main())
