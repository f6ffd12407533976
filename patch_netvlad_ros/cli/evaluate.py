# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""pnv-evaluate: localise a query drive against a map and report how well it went.

    pnv-evaluate --map maps/office --bag query.mcap --image-topic /camera/image_raw \
        --pose-topic /odom --mode graph --rate 2.0

Modes: 'offline' runs the core straight over the drive; 'graph' replays the drive's
camera messages as recorded (encoding, compression, size, stamps; and /clock) through
camera_batcher -> descriptor_node -> localizer_node on real rclpy/DDS at --rate times the
recorded speed, into the graph with its default settings (three node processes as
launched, or one with --graph-processes one), and records ~/match and /diagnostics:
frames the graph drops are reported by reason and count as misses. Ground truth: the
drive's poses (NavSatFix drives use the map's ENU origin). Output: recall@N by distance
(--radius, default 25 m) or by frame tolerance, position and heading error of the chosen
reference, latency percentiles, confidence against correctness; a JSON report and PNG
plots (trajectory, recall@N, confidence histogram, precision-recall) in --output.
Positions, headings and the trajectory plot use the ground plane of the map's pose
convention (x-y for z-up poses, x-z for camera-convention poses, heading about the up
axis). Every argument is checked before the map, the model or the drive is read.
"""

import argparse
from pathlib import Path
import sys
from typing import List, Optional, Set

import numpy as np

from .build_map import add_drive_options, check_drive_args, map_convention, read_drive
from .common import (CliParser, end_progress, existing_dir, existing_file,
                     non_negative_int, output_dir, positive_float, positive_int,
                     progress_bar, run_main, say)
from ..core.checkpoint import model_digest
from ..core.database import check_identity, ReferenceMap
from ..core.drives import Drive, frames_in_z_up, meta_convention
from ..core.errors import MapError
from ..core.localize_drive import localize_offline, outcome_of
from ..core.localizer import descriptor_identity, Localizer
from ..core.map_building import map_model_path, map_origin, resolve_map_model
from ..core.poses import headings, to_z_up
from ..core.report import evaluate, format_summary, write_plots, write_report

NS = (1, 5, 10, 20)


def frame_positives(drive: Drive, ref_map: ReferenceMap, tolerance: int) -> List[Set[int]]:
    """Positives by frame index: references whose drive index is within tolerance.

    For drives recorded in lock-step (query frame i shows the place of reference frame i),
    like the shipped corridor drives.
    """
    ref_index = np.array([int(r.id.rsplit('#', 1)[-1]) for r in ref_map.references])
    return [set(np.flatnonzero(np.abs(ref_index - f.index) <= tolerance).tolist())
            for f in drive.frames]


def graph_outcomes(drive: Drive, args: argparse.Namespace, ref_map: ReferenceMap,
                   checkpoint: Path):
    """Replay the drive through the ROS graph; one outcome per frame (no answer: a miss).

    The drive's camera messages go out as recorded (encoding, compression, size, stamps)
    into the graph with its default settings (:mod:`patch_netvlad_ros.ros.replay`), so
    frames the graph drops under them have no answer and count as misses in recall@N.
    Returns the outcomes and the report's graph sections: frames published, answered,
    dropped by reason, lost before camera_batcher, each node's last /diagnostics status.
    """
    from ..ros.replay import replay_drive
    params = {'max_candidates': max(NS), 'verify_map': False}
    if args.top_k:
        params['top_k'] = args.top_k
    cfg = ref_map.config
    record, keys = replay_drive(drive, str(args.map), str(checkpoint), cfg.preset,
                                (cfg.image_height, cfg.image_width), args.rate,
                                getattr(args, 'graph_processes', 'three'), params,
                                progress=progress_bar(len(drive.frames), 'replay'))
    ids = {r.id: i for i, r in enumerate(ref_map.references)}
    outcomes = []
    for frame, key in zip(drive.frames, keys):
        sent, got = record.published.get(key), record.matches.get(key)
        if got is None or sent is None:
            outcomes.append(outcome_of(frame, [], float('nan'), None, {}))
            continue
        msg, arrived = got
        ranked = [ids[c.reference_id] for c in msg.candidates]
        outcomes.append(outcome_of(frame, ranked, msg.confidence, 1e3 * (arrived - sent),
                                   {'extraction': msg.extraction_ms,
                                    'retrieval': msg.retrieval_ms, 'rerank': msg.rerank_ms,
                                    'node_latency': msg.latency_ms}, None,
                                   {'candidate': msg.candidate_bytes,
                                    'moved': msg.moved_bytes}))
    return outcomes, graph_sections(record, args.rate)


def graph_sections(record, rate: float) -> dict:
    """Return the report's graph-mode sections of a replay record (see graph_outcomes)."""
    ledger = record.ledger or {}
    received = ledger.get('received', 0)
    frames = {
        'published': len(record.published),
        'received_by_batcher': received,
        # Exact: the replay knows what it published. The nodes' own estimate is below.
        'lost_before_batcher': len(record.published) - received,
        'lost_before_batcher_detected': ledger.get('before_batcher', {}),
        'answered': ledger.get('answered', len(record.matches)),
        'dropped': ledger.get('dropped', {}),
        'in_flight_at_end': ledger.get('in_flight'),
        'settled': record.settled,
        'unexplained': ledger.get('unexplained'),
        'note': 'frames without an answer (dropped for a reason above, or lost before '
                'camera_batcher) count as misses in recall@N',
    }
    return {'published': len(record.published), 'answered': len(record.matches),
            'poses_published': len(record.poses), 'rate': rate,
            'replay_seconds': record.seconds, 'graph_processes': record.processes,
            'encodings': dict(record.encodings), 'frames': frames,
            'diagnostics': {node: {k: v for k, v in status.items() if k != 'time'}
                            for node, status in record.diagnostics.items()}}


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = CliParser(prog='pnv-evaluate', description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('--map', type=existing_dir, required=True, help='map folder')
    add_drive_options(parser, 'query')
    parser.add_argument('--checkpoint', type=existing_file,
                        help="the map's model (default: the model the map folder keeps)")
    parser.add_argument('--mode', choices=('offline', 'graph'), default='offline')
    parser.add_argument('--rate', type=positive_float, default=1.0,
                        help='graph mode: replay speed relative to the recording (> 0)')
    parser.add_argument('--graph-processes', choices=('three', 'one'), default='three',
                        help="graph mode: 'three' node processes as launched (default), or "
                        "'one' (the three nodes in this process, as localize_graph)")
    parser.add_argument('--radius', type=positive_float, default=25.0,
                        help='a reference within this many metres is right (> 0, default 25)')
    parser.add_argument('--frame-tolerance', type=non_negative_int, default=None,
                        help='instead of --radius: right when the reference frame index '
                        'is within this of the query frame index (lock-step drives)')
    parser.add_argument('--top-k', type=positive_int, default=None, help="default: the map's")
    parser.add_argument('--output', type=output_dir, default='out/evaluate',
                        help='folder for report.json and the plots (default out/evaluate)')
    args = parser.parse_args(argv)
    check_drive_args(parser, args)
    # every argument is valid: now the map, its model, then the drive
    ref_map = ReferenceMap.load(args.map)
    if len(ref_map) == 0:
        raise MapError(f'{args.map} holds no references: nothing to evaluate against')
    convention = map_convention(ref_map, args.pose_convention, f'map {args.map}')
    cfg = ref_map.config
    model = resolve_map_model(args.map, cfg, args.checkpoint)
    check_identity(ref_map.identity, descriptor_identity(model), str(args.map))
    drive = read_drive(args, (cfg.image_height, cfg.image_width), origin=map_origin(ref_map),
                       desc='read queries', pose_convention=convention)
    if not drive.frames:
        raise MapError(f'query drive {drive.name} has no posed frames: {drive.summary()}')
    if meta_convention(ref_map.meta):
        drive.convention_reason = 'kept by the map'
    # a map without a recorded convention (older maps) takes the query drive's
    convention = drive.pose_convention
    say(f'{drive.name}: {drive.summary()}; {convention} poses ({drive.convention_reason}); '
        f'map {len(ref_map)} references, {args.mode} mode')
    # ground truth in z-up terms: ground plane x-y, heading about +z (camera poses rotated)
    drive.frames = frames_in_z_up(drive.frames, convention)
    ref_positions, ref_quats = to_z_up(
        ref_map.positions(), [(r.qx, r.qy, r.qz, r.qw) for r in ref_map.references],
        convention)
    extra = {}
    if args.mode == 'offline':
        matching = {'top_k': args.top_k} if args.top_k else {}
        localizer = Localizer(ref_map, model, **matching)
        outcomes = localize_offline(localizer, model, drive.frames,
                                    progress=progress_bar(len(drive.frames), 'localise'))
    else:
        ckpt = args.checkpoint or map_model_path(args.map)
        outcomes, extra = graph_outcomes(drive, args, ref_map, ckpt)
    end_progress()
    positives = (frame_positives(drive, ref_map, args.frame_tolerance)
                 if args.frame_tolerance is not None else None)
    report = evaluate(outcomes, ref_positions, headings(ref_quats), args.radius, NS,
                      positives)
    report.update(mode=args.mode, map=str(args.map), drive=drive.name,
                  drive_summary=drive.summary(), model_digest=model_digest(model)[:16],
                  criterion=(f'frame tolerance {args.frame_tolerance}'
                             if positives is not None else f'radius {args.radius} m'),
                  pose_convention=convention, pose_convention_reason=drive.convention_reason,
                  **extra)
    args.output.mkdir(parents=True, exist_ok=True)
    path = write_report(report, args.output / 'report.json')
    plots = write_plots(report, outcomes, ref_positions, args.output,
                        title=f'{drive.name} vs {args.map.name} ({args.mode})',
                        convention=convention)
    print(format_summary(report))
    if extra:
        f = extra['frames']
        dropped = ', '.join(f'{k} {v}' for k, v in f['dropped'].items() if v) or 'none'
        print(f"graph ({extra['graph_processes']} process(es)): published {f['published']}, "
              f"lost before camera_batcher {f['lost_before_batcher']}, answered "
              f"{f['answered']}, dropped: {dropped}; poses {extra['poses_published']} "
              '(unanswered frames count as misses)')
        if not f['settled']:
            say(f"warning: the graph had not settled at the end ({f['in_flight_at_end']} "
                'frames in flight)')
    print(f'report: {path}; plots: {", ".join(p.name for p in plots)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
