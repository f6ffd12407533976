# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""pnv-build-map: build a map database from a recorded drive (bag or image folder).

    pnv-build-map maps/office --bag drive.mcap --image-topic /camera/image_raw \
        --pose-topic /odom --min-distance 1.0
    pnv-build-map maps/office --bag drive2.bag ... --append      # add a second drive
    pnv-build-map maps/office --images DIR --poses poses.csv --checkpoint model.pth.tar

Bags: ROS 1 .bag, ROS 2 .db3 or .mcap (read with rosbags, no ROS needed); images from
sensor_msgs/Image or CompressedImage; poses from nav_msgs/Odometry, PoseStamped,
PoseWithCovarianceStamped, or NavSatFix (converted to a local ENU frame). Without
--checkpoint the clusters and PCA are bootstrapped from the drive itself. Network input:
640 pixels wide, the height from the camera's aspect ratio (--image-size). Poses: z-up
(REP 103) or camera convention (z forward, y down, as KITTI odometry), told apart from
the trajectory unless --pose-convention says; the map keeps it for pnv-evaluate.
After describing, the map is fitted on its own references (no query drive needed): the
weights that fuse global and patch scores and the calibration of the match confidence
for --place-radius, stored in the map and used by the localizer (--no-fit: the authors'
order and the heuristic confidence; `pnv-map fit` fits such a map later). Every argument
is checked before the drive is read; bad input ends with one 'error:' line and exit
status 2.
"""

import argparse
import csv
import math
import sys
from typing import Callable, Optional, Tuple, TYPE_CHECKING

from .common import (add_model_options, CliParser, config_from_args, DEFAULT_PRESET,
                     end_progress, existing_dir, existing_file, existing_path,
                     non_negative_float, non_negative_int, output_dir, positive_float,
                     positive_int, progress_bar, run_main, say)
from ..core.drives.poses import POSE_CONVENTIONS
from ..core.errors import MapError

if TYPE_CHECKING:  # torch, cv2, faiss and rosbags load after the arguments are checked
    from ..core.drives.drives import Drive
    from ..core.maps.database import ReferenceMap

CONVENTION_CHOICES = ('auto',) + POSE_CONVENTIONS


def topic(text: str) -> str:
    """Parse a ROS topic name: non-empty, no spaces."""
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f'must be a topic name like /camera/image_raw; '
                                         f'got {text!r}')
    return text


def frame_name(text: str) -> str:
    """Parse a frame_id: non-empty, no spaces."""
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f'must be a frame name like map; got {text!r}')
    return text


def heading_deg(text: str) -> float:
    """Parse a heading change in degrees, 0 to 180 (headings differ by at most 180)."""
    value = non_negative_float(text)
    if value > 180.0:
        raise argparse.ArgumentTypeError(f'must be 0 to 180 degrees (0 = off); got {text!r}')
    return value


def add_drive_options(parser: argparse.ArgumentParser, what: str) -> None:
    """Options that name a drive: a bag with topics, or a folder with a poses CSV."""
    src = parser.add_argument_group(f'{what} drive')
    src.add_argument('--bag', type=existing_path,
                     help='ROS 1 .bag, ROS 2 bag folder, .db3 or .mcap')
    src.add_argument('--image-topic', type=topic, default='/camera/image_raw',
                     help='Image or CompressedImage topic (default /camera/image_raw)')
    src.add_argument('--pose-topic', type=topic, default='/odom', help='Odometry, PoseStamped, '
                     'PoseWithCovarianceStamped or NavSatFix topic (default /odom)')
    src.add_argument('--max-gap', type=non_negative_float, default=0.5,
                     help='longest pose gap (s) to interpolate across (default 0.5)')
    src.add_argument('--images', type=existing_dir, help='image folder (instead of --bag)')
    src.add_argument('--poses', type=existing_file,
                     help='CSV: image,stamp,x,y[,z,qx,qy,qz,qw] (with --images)')
    src.add_argument('--pose-convention', choices=CONVENTION_CHOICES, default='auto',
                     help='z-up: REP 103 (x forward, z up); camera: the optical convention '
                     '(x right, y down, z forward; KITTI odometry, many SLAM outputs), '
                     'whose ground plane is x-z and heading turns about -y. auto (default): '
                     "a map's own; else an '_optical_frame' pose frame, or the trajectory "
                     'itself (travel along body x or z, the up axis, the plane it stays in)')


def check_drive_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one source: --bag, or --images with --poses."""
    if bool(args.bag) == bool(args.images) or (args.images and not args.poses):
        parser.error('give --bag, or --images together with --poses')
    if args.bag and args.poses:
        parser.error('--poses goes with --images; a bag has its --pose-topic')


def source_image_shape(args: argparse.Namespace) -> Tuple[int, int]:
    """Return (height, width) of the drive's first image: one message or file, read up front."""
    from ..core.drives.bags import read_images
    from ..core.model.image import load_image
    if args.bag:
        images = read_images(args.bag, args.image_topic, True, lambda *_: None)
        try:
            first = next(images, None)
        finally:
            images.close()
        if first is None:
            raise MapError(f'{args.bag}: topic {args.image_topic} holds no image that can '
                           'be decoded')
        return first.rgb.shape[:2]
    with open(args.poses, newline='') as handle:
        row = next(csv.DictReader(handle), None)
    if row is None or not row.get('image'):
        raise MapError(f'{args.poses}: needs a header with columns image, stamp, x, y and '
                       'one row per image')
    return load_image(args.images / row['image']).shape[:2]


def read_drive(args: argparse.Namespace, size, rule=None, origin=None, desc: str = 'read',
               hold_images: bool = True, pose_convention: Optional[str] = None) -> 'Drive':
    """Read the drive the options name; frames resized to ``size`` (height, width).

    hold_images: False reads the keyframes' images again from the source when they are
    used (see :meth:`Drive.frame_images`) instead of holding them all in memory.
    pose_convention: overrides --pose-convention (e.g. the map's). rule: a
    :class:`~..core.drives.KeyframeRule` (default: every frame).
    """
    from ..core.drives.drives import KeyframeRule, read_bag_drive, read_folder_drive
    rule = rule or KeyframeRule()
    warn = lambda index, message: say(  # noqa: E731 - a one-line callback
        f'warning: frame {index} skipped: {message}')
    convention = pose_convention or args.pose_convention
    if args.bag:
        return read_bag_drive(args.bag, args.image_topic, args.pose_topic, size, rule,
                              args.max_gap, origin, progress_bar(0, desc), warn, hold_images,
                              pose_convention=convention)
    return read_folder_drive(args.images, args.poses, size, rule, progress_bar(0, desc), warn,
                             hold_images, pose_convention=convention)


def map_convention(ref_map: 'ReferenceMap', requested: str, what: str) -> str:
    """Return the convention to read a drive of this map with: the map's, if it keeps one.

    An explicit --pose-convention that contradicts the map's is a MapError.
    """
    from ..core.drives.drives import meta_convention
    kept = meta_convention(ref_map.meta)
    if kept is None:
        return requested
    if requested not in ('auto', kept):
        raise MapError(f'--pose-convention {requested}: {what} keeps {kept} poses (its '
                       'drives were read so); its drives share its frame: drop the option '
                       f'or give {kept}')
    return kept


def make_parser() -> CliParser:
    """Return the command's argument parser."""
    parser = CliParser(prog='pnv-build-map', description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('output', type=output_dir, help='map folder to write')
    add_drive_options(parser, 'reference')
    add_model_options(parser)
    parser.add_argument('--checkpoint', type=existing_file,
                        help="model (authors' layout); default: bootstrap from the drive")
    parser.add_argument('--append', action='store_true',
                        help='add this drive to the existing map at OUTPUT (its model, '
                        'preset, image size and pose convention)')
    key = parser.add_argument_group('keyframes (relative to the last keyframe; 0 = off)')
    key.add_argument('--min-distance', type=non_negative_float, default=0.0,
                     help='metres travelled')
    key.add_argument('--min-heading', type=heading_deg, default=0.0,
                     help='degrees turned about the up axis (0 to 180)')
    key.add_argument('--min-interval', type=non_negative_float, default=0.0,
                     help='seconds elapsed')
    parser.add_argument('--map-frame', type=frame_name, default='map',
                        help='frame_id of the references')
    parser.add_argument('--batch', type=positive_int, default=4,
                        help='images per network batch (default 4)')
    parser.add_argument('--seed', type=non_negative_int, default=0, help='bootstrap seed')
    parser.add_argument('--no-fit', action='store_true',
                        help='skip the fit on the map itself: the localizer then keeps the '
                        "authors' order and the heuristic confidence")
    add_fit_options(parser)
    return parser


#: Place radius (m) a map is fitted for unless told: the localizer's default
#: (core.localizer.DEFAULT_PLACE_RADIUS, not imported: torch loads after the arguments).
FIT_RADIUS = 5.0
#: Self-queries per fitting level unless told: core.maps.map_fit.MAX_QUERIES (not
#: imported, as above; test_fit_cli checks they agree).
FIT_QUERIES = 300


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Options of the map's fit on itself (pnv-build-map; pnv-map fit)."""
    fit = parser.add_argument_group('fit on the map itself (fusion weights, confidence)')
    fit.add_argument('--place-radius', type=positive_float, default=None,
                     help='metres within which two references are the same place: what '
                     'the confidence is the probability of, and what the fit treats as '
                     f"a right answer (default {FIT_RADIUS:g}; pnv-map fit: the map's)")
    fit.add_argument('--fit-queries', type=positive_int, default=None,
                     help='references queried against the rest of the map per fitting '
                     f'level, at most (default {FIT_QUERIES}; a seeded sample of larger '
                     'maps; the fit on itself only)')
    fit.add_argument('--novelty-gate', action=argparse.BooleanOptionalAction, default=None,
                     help="also fit the map's novelty gate: the confidence is multiplied by "
                     'how likely the image comes from the mapped environment at all, from the '
                     "answer's global similarity (default: on for a fit on a drive: the "
                     "stricter of the map's gate and one fitted on the drive's frames with "
                     "the map's nearby references removed; on the map itself only when its "
                     "model was trained on the map's keyframes; docs/accuracy.md)")


def fit_progress() -> Callable[[int], None]:
    """Return a progress counter of the fit's self-queries, started at its first update."""
    bar = None

    def update(n: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(0, 'fit (self-queries)')
        bar(n)
    return update


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    check_drive_args(parser, args)
    if args.no_fit and args.place_radius is not None:
        parser.error('--place-radius is what the fit uses: drop it or --no-fit')
    if args.append:
        if not args.output.is_dir():
            parser.error(f'--append: there is no map at {args.output} to extend')
        if args.preset or args.image_size or args.top_k:
            parser.error("--append keeps the map's preset, image size and top-k: drop "
                         '--preset, --image-size and --top-k')
    # every argument is valid: now the map, one frame and the checkpoint, then the drive
    from ..core.model.checkpoint import check_checkpoint
    from ..core.config import get_config
    from ..core.maps.database import ReferenceMap
    from ..core.drives.drives import KeyframeRule
    from ..core.localization.localizer import fitted_parameters
    from ..core.maps.map_building import build_map, fit_summary, map_origin
    base, origin, convention = None, None, args.pose_convention
    if args.append:
        base = ReferenceMap.load(args.output)
        config, origin = base.config, map_origin(base)
        convention = map_convention(base, convention, f'the map at {args.output}')
    if args.checkpoint:   # mapped, not read: a refused file costs milliseconds
        check_checkpoint(args.checkpoint, config if base else get_config(
            args.preset or DEFAULT_PRESET))
    if not base:
        config = config_from_args(args, source_image_shape(args), warn=say)
    # an extended map is fitted again for the radius it had, unless told
    kept = (fitted_parameters(base) or {}).get('place_radius') if base else None
    radius = args.place_radius or kept or FIT_RADIUS
    rule = KeyframeRule(args.min_distance, math.radians(args.min_heading), args.min_interval)
    # the keyframes are read again while they are described: memory does not grow with
    # the drive (a bootstrapped model still encodes them all at once)
    drive = read_drive(args, (config.image_height, config.image_width), rule, origin,
                       hold_images=False, pose_convention=convention)
    say(f'{drive.name}: {drive.summary()}; {drive.pose_convention} poses '
        f'({drive.convention_reason}); network input {config.image_width}x'
        f'{config.image_height}')
    ref_map, _ = build_map(drive, args.output, config, args.checkpoint, base,
                           args.map_frame, args.batch, args.seed, log=say,
                           progress=progress_bar(len(drive.frames), 'describe'),
                           fit=not args.no_fit, place_radius=radius,
                           fit_queries=args.fit_queries or FIT_QUERIES,
                           fit_progress=fit_progress(), novelty_gate=args.novelty_gate)
    end_progress()
    print(f'map {args.output}: {len(ref_map)} references ({len(drive.frames)} added), '
          f'preset {ref_map.config.preset} {ref_map.config.image_width}x'
          f'{ref_map.config.image_height}, {drive.pose_convention} poses; '
          f'{fit_summary(ref_map.meta)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
