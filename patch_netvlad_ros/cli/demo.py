# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-demo: build a map from the shipped reference drive, localise the query drive.

The two drives are small ROS 2 bags (mcap) the project wrote from the corridor images
shipped in the package (patch_netvlad_ros/data/ATTRIBUTION.md): JPEG frames at 2 Hz and
odometry whose poses come from frame order (frame i at x = i m). The demo
1. builds a map from the reference bag (pnv-build-map: speed preset at 320x240, clusters
   and PCA bootstrapped from the drive itself, then the map fitted on itself for a place
   radius of 2 m, the dataset's ground truth; reused on later runs), then
2. replays the query bag through the ROS graph (camera_batcher -> descriptor_node ->
   localizer_node on rclpy/DDS) and evaluates what ~/match says (pnv-evaluate), with the
   dataset's ground truth (query i shows references i-2..i+2), printing recall@N,
   position errors, latency and confidence, and one table of what each stage gives on
   the same frames (:data:`STAGE_HELP`), and writing report.json and PNG plots.
"""

import argparse
from pathlib import Path
import sys
from typing import Optional

from . import build_map, evaluate
from .common import positive_float, run_main
from ..core.drives.datasets import DATA_DIR
from ..core.maps.map_building import map_model_path

DRIVES = DATA_DIR / 'corridor_drives'
IMAGE_TOPIC = '/camera/image_raw/compressed'
POSE_TOPIC = '/odom'
#: The corridor's ground truth: query i shows references i-2..i+2, frames 1 m apart.
PLACE_RADIUS = 2.0
FRAME_TOLERANCE = 2
#: What the rows of the stage table are, for a first-time reader.
STAGE_HELP = '''\
global     the map image nearest by the NetVLAD global descriptor (retrieval)
patches    the top candidates reranked by matching patch descriptors (the paper's order)
fused      global and patch scores fused with weights the map fitted on itself; what
           localizer_node answers each frame with on ~/match (its confidence: the
           probability that the answer is within 2 m)
sequence   a filter over the frames in order (odometry, or time and speed): what
           localizer_node publishes on ~/pose once its confidence reaches the threshold
AUC: how well the confidence tells right from wrong answers (1 = perfectly); ECE: how
far it is from the real rate of right answers (0 = calibrated); R@100%P: the share of
frames answered before the first wrong answer, most confident first.'''


def _map_state(map_dir: Path) -> str:
    """Return 'missing', 'unfitted' or 'ready' for the demo's map folder."""
    from ..core.maps.map_manifest import read_manifest
    if not (map_dir / 'manifest.json').is_file() or not map_model_path(map_dir).is_file():
        return 'missing'
    try:
        meta = read_manifest(map_dir)[0].get('meta', {})
    except Exception:  # noqa: B902 - anything unreadable is rebuilt
        return 'missing'
    if [d.get('name') for d in meta.get('drives', [])] != ['reference']:
        return 'missing'
    return 'ready' if 'localization' in meta else 'unfitted'


def prepare_map(map_dir: Path, rebuild: bool = False,
                checkpoint: Optional[Path] = None) -> int:
    """Build (or fit, or reuse) the demo's map; return an exit status.

    checkpoint: a model instead of bootstrapping one from the drive (tests).
    """
    state = 'missing' if rebuild else _map_state(map_dir)
    if state == 'ready':
        print(f'[1/2] reusing {map_dir} (--rebuild to build it again)', flush=True)
        return 0
    if state == 'unfitted':
        print(f'[1/2] fitting {map_dir} on itself (built by an older version)', flush=True)
        from . import map_tool
        return map_tool.main(['fit', str(map_dir), '--place-radius', str(PLACE_RADIUS)])
    print(f'[1/2] building {map_dir} from {DRIVES / "reference"}', flush=True)
    return build_map.main([str(map_dir), '--bag', str(DRIVES / 'reference'),
                           '--image-topic', IMAGE_TOPIC, '--pose-topic', POSE_TOPIC,
                           '--preset', 'speed', '--image-size', '320x240',
                           '--place-radius', str(PLACE_RADIUS)]
                          + (['--checkpoint', str(checkpoint)] if checkpoint else []))


def localise(map_dir: Path, mode: str, rate: float, output: Path) -> int:
    """Localise the query drive against the map (pnv-evaluate); return an exit status."""
    print(f'[2/2] localising {DRIVES / "query"} ({mode} mode)', flush=True)
    status = evaluate.main(['--map', str(map_dir), '--bag', str(DRIVES / 'query'),
                            '--image-topic', IMAGE_TOPIC, '--pose-topic', POSE_TOPIC,
                            '--mode', mode, '--rate', str(rate),
                            '--frame-tolerance', str(FRAME_TOLERANCE),
                            '--output', str(output)])
    if status == 0:
        print('\nthe stages:\n' + STAGE_HELP)
    return status


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
    status = prepare_map(map_dir, args.rebuild)
    if status:
        return status
    return localise(map_dir, args.mode, args.rate, args.output)


if __name__ == '__main__':
    sys.exit(main())
