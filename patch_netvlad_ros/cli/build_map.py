# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""pnv-build-map: build a map database from a recorded drive (bag or image folder).

    pnv-build-map maps/office --bag drive.mcap --image-topic /camera/image_raw \\
        --pose-topic /odom --min-distance 1.0
    pnv-build-map maps/office --bag drive2.bag ... --append      # add a second drive
    pnv-build-map maps/office --images DIR --poses poses.csv --checkpoint model.pth.tar

Bags: ROS 1 .bag, ROS 2 .db3 or .mcap (read with rosbags, no ROS needed); images from
sensor_msgs/Image or CompressedImage; poses from nav_msgs/Odometry, PoseStamped,
PoseWithCovarianceStamped, or NavSatFix (converted to a local ENU frame). Without
--checkpoint the clusters and PCA are bootstrapped from the drive itself. Exit status 2
with one 'error:' line for bad input.
"""

import argparse
import math
from pathlib import Path
import sys
from typing import Optional

from .common import add_model_options, config_from_args, progress_bar, run_main
from ..core.database import ReferenceMap
from ..core.drives import KeyframeRule, read_bag_drive, read_folder_drive
from ..core.errors import MapError
from ..core.map_building import build_map, map_origin


def add_drive_options(parser: argparse.ArgumentParser, what: str) -> None:
    """Options that name a drive: a bag with topics, or a folder with a poses CSV."""
    src = parser.add_argument_group(f'{what} drive')
    src.add_argument('--bag', type=Path, help='ROS 1 .bag, ROS 2 bag folder, .db3 or .mcap')
    src.add_argument('--image-topic', default='/camera/image_raw',
                     help='Image or CompressedImage topic (default /camera/image_raw)')
    src.add_argument('--pose-topic', default='/odom', help='Odometry, PoseStamped, '
                     'PoseWithCovarianceStamped or NavSatFix topic (default /odom)')
    src.add_argument('--max-gap', type=float, default=0.5,
                     help='longest pose gap (s) to interpolate across (default 0.5)')
    src.add_argument('--images', type=Path, help='image folder (instead of --bag)')
    src.add_argument('--poses', type=Path,
                     help='CSV: image,stamp,x,y[,z,qx,qy,qz,qw] (with --images)')


def check_drive_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one source: --bag, or --images with --poses."""
    if bool(args.bag) == bool(args.images) or (args.images and not args.poses):
        parser.error('give --bag, or --images together with --poses')


def read_drive(args: argparse.Namespace, size, rule: KeyframeRule = KeyframeRule(),
               origin=None, desc: str = 'read', hold_images: bool = True):
    """Read the drive the options name; frames resized to ``size`` (height, width).

    hold_images: False reads the keyframes' images again from the source when they are
    used (see :meth:`Drive.frame_images`) instead of holding them all in memory.
    """
    warn = lambda index, message: print(  # noqa: E731 - a one-line callback
        f'warning: frame {index} skipped: {message}', file=sys.stderr)
    if args.bag:
        return read_bag_drive(args.bag, args.image_topic, args.pose_topic, size, rule,
                              args.max_gap, origin, progress_bar(0, desc), warn, hold_images)
    return read_folder_drive(args.images, args.poses, size, rule, progress_bar(0, desc), warn,
                             hold_images)


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('output', type=Path, help='map folder to write')
    add_drive_options(parser, 'reference')
    add_model_options(parser, 'speed')
    parser.add_argument('--checkpoint', type=Path,
                        help="model (authors' layout); default: bootstrap from the drive")
    parser.add_argument('--append', action='store_true',
                        help='add this drive to the existing map at OUTPUT (its model)')
    key = parser.add_argument_group('keyframes (relative to the last keyframe; 0 = off)')
    key.add_argument('--min-distance', type=float, default=0.0, help='metres travelled')
    key.add_argument('--min-heading', type=float, default=0.0, help='degrees turned')
    key.add_argument('--min-interval', type=float, default=0.0, help='seconds elapsed')
    parser.add_argument('--map-frame', default='map', help='frame_id of the references')
    parser.add_argument('--batch', type=int, default=4, help='images per network batch')
    parser.add_argument('--seed', type=int, default=0, help='bootstrap seed')
    args = parser.parse_args(argv)
    check_drive_args(parser, args)
    base, origin = None, None
    if args.append:
        if not args.output.exists():
            raise MapError(f'--append: there is no map at {args.output} to extend')
        base = ReferenceMap.load(args.output)
        config, origin = base.config, map_origin(base)
    else:
        config = config_from_args(args)
    rule = KeyframeRule(args.min_distance, math.radians(args.min_heading), args.min_interval)
    # the keyframes are read again while they are described: memory does not grow with
    # the drive (a bootstrapped model still encodes them all at once)
    drive = read_drive(args, (config.image_height, config.image_width), rule, origin,
                       hold_images=False)
    print(f'{drive.name}: {drive.summary()}', file=sys.stderr)
    ref_map, _ = build_map(drive, args.output, config, args.checkpoint, base,
                           args.map_frame, args.batch, args.seed,
                           log=lambda msg: print(msg, file=sys.stderr),
                           progress=progress_bar(len(drive.frames), 'describe'))
    print(f'map {args.output}: {len(ref_map)} references ({len(drive.frames)} added), '
          f'preset {ref_map.config.preset} {ref_map.config.image_width}x'
          f'{ref_map.config.image_height}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
