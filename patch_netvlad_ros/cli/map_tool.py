# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""pnv-map: check a map folder, put back one an interrupted commit left, remove leftovers.

    pnv-map check maps/office       # schema, sizes, SHA-256 of every file (the model
                                    # too), descriptor values; read-only
    pnv-map recover maps/office     # no map there: put back the complete one beside it
    pnv-map clean maps/office       # recover first, then remove folders of dead builds
    pnv-map fit maps/office         # fit fusion and confidence on the map itself (maps
                                    # built with --no-fit or by older versions)
    pnv-map fit maps/office --bag drive2.mcap --image-topic /cam --pose-topic /odom
                                    # fit them on a labelled second drive of the mapped
                                    # places, poses in the map's frame (--images DIR
                                    # --poses CSV for a folder): better calibrated, and
                                    # places not in the map stay low (docs/accuracy.md)

A commit interrupted where the file system cannot swap folders atomically leaves no map
at PATH and the new and old maps beside it (.NAME.tmp-PID, .NAME.old-PID); the new one
wins when it verifies in full, else the old one. A killed build leaves .NAME.tmp-PID.
Folders of builds still running are never touched. Exit status 0, or 2 with one
'error:' line.
"""

import argparse
from pathlib import Path
import sys
from typing import Optional

from .build_map import (add_drive_options, add_fit_options, check_drive_args, fit_progress,
                        FIT_QUERIES, map_convention, read_drive)
from .common import CliParser, end_progress, progress_bar, run_main
from ..core.errors import MapError
from ..core.maps.database import recover_map, ReferenceMap, tidy_map_folder
from ..core.maps.drive_fit import MAX_DRIVE_FRAMES
from ..core.maps.map_building import fit_summary, refit_map
from ..core.maps.map_folder import leftovers
from ..core.maps.map_manifest import read_manifest


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def check(path: Path, verify: bool, values: bool) -> int:
    """Load the map as the localizer would, without recovering; print what was checked."""
    ref_map = ReferenceMap.load(path, verify=verify, check_values=values, recover=False,
                                log=lambda msg: _say(f'warning: {msg}'))
    manifest, _, _ = read_manifest(path)
    checked = ['schema', 'sizes'] + (['SHA-256'] if verify else []) + \
        (['descriptor values'] if values else [])
    cfg = ref_map.config
    print(f'{path}: ok ({", ".join(checked)}): format {manifest["format_version"]}, '
          f'{len(ref_map)} references, preset {cfg.preset} {cfg.image_width}x'
          f'{cfg.image_height}, {len(manifest["files"])} files '
          f'({", ".join(sorted(manifest["files"]))})')
    print(f'{path}: {fit_summary(ref_map.meta)}')
    return 0


def fit(path: Path, place_radius: Optional[float], queries: int,
        drive_args: Optional[argparse.Namespace] = None,
        novelty_gate: Optional[bool] = None) -> int:
    """Fit the map on itself, or on the drive drive_args name, and commit it in place.

    novelty_gate: store a novelty gate or not; None: :func:`.map_building.refit_map`'s
    default (a drive fit: yes; a fit on the map itself: :func:`.map_building.gate_for`).
    """
    drive = None
    if drive_args is not None:
        from ..core.maps.map_building import map_origin
        base = ReferenceMap.load(path, verify=False, check_values=False)
        cfg = base.config
        drive = read_drive(drive_args, (cfg.image_height, cfg.image_width),
                           origin=map_origin(base), hold_images=False,
                           pose_convention=map_convention(base, drive_args.pose_convention,
                                                          f'the map at {path}'))
        end_progress()
        _say(f'{drive.name}: {drive.summary()}: fitting the map on this drive')
    progress = fit_progress() if drive is None else progress_bar(
        min(len(drive.frames), MAX_DRIVE_FRAMES), 'fit (drive frames described)')
    ref_map = refit_map(path, place_radius, queries, log=_say, progress=progress, drive=drive,
                        novelty_gate=novelty_gate)
    end_progress()
    print(f'{path}: {fit_summary(ref_map.meta)}')
    return 0


def recover(path: Path) -> int:
    """Put back a map an interrupted commit left beside a missing PATH."""
    if path.exists():
        print(f'{path}: a map is in place; nothing to recover')
        return 0
    if recover_map(path, log=_say) is None:
        found = leftovers(path)
        raise MapError(f'no map at {path} and nothing complete beside it to put back'
                       + (': ' + '; '.join(left.describe() for left in found) if found
                          else '') + ': build the map again')
    print(f'{path}: recovered')
    return 0


def clean(path: Path) -> int:
    """Recover a missing map first, then remove the folders of dead builds."""
    recovered, removed = tidy_map_folder(path, log=_say)
    kept = leftovers(path)
    freed = sum(left.nbytes for left in removed)
    print(f'{path}: ' + ('recovered; ' if recovered else '')
          + f'removed {len(removed)} leftover folder(s), {freed / 1e6:.1f} MB freed'
          + (f'; kept {len(kept)} of running builds' if kept else ''))
    return 0


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = CliParser(prog='pnv-map', description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('command', choices=('check', 'recover', 'clean', 'fit'))
    parser.add_argument('path', type=Path, help='the map folder')
    parser.add_argument('--no-verify', action='store_true',
                        help='check: skip the SHA-256 of every file (sizes still checked)')
    parser.add_argument('--no-values', action='store_true',
                        help='check: skip reading the descriptor values')
    add_fit_options(parser)
    add_drive_options(parser, 'fit: a labelled second')
    args = parser.parse_args(argv)
    on_drive = bool(args.bag or args.images or args.poses)
    if on_drive:
        if args.command != 'fit':
            parser.error(f'--bag, --images and --poses name a drive to fit on: they go with '
                         f'fit, not {args.command}')
        check_drive_args(parser, args)
        if args.fit_queries is not None:
            parser.error('--fit-queries sets how many references the fit on the map itself '
                         f'queries; a fit on a drive uses its frames (up to '
                         f'{MAX_DRIVE_FRAMES}): leave --fit-queries out')
    if args.command == 'check':
        return check(args.path, not args.no_verify, not args.no_values)
    if args.command == 'recover':
        return recover(args.path)
    if args.command == 'fit':
        return fit(args.path, args.place_radius, args.fit_queries or FIT_QUERIES,
                   args if on_drive else None, args.novelty_gate)
    return clean(args.path)


if __name__ == '__main__':
    sys.exit(main())
