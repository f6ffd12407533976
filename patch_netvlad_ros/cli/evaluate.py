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
plots (trajectory, recall@N, confidence histogram, precision-recall, reliability
diagrams) in --output.

Stage by stage, on the same frames: retrieval alone (global), the authors' patch order,
the map's fitted fusion (maps fitted by pnv-build-map or pnv-map fit), each frame's own
answer (what ~/match says) and the sequence filter's (what ~/pose carries): recall@N,
and for the answers' confidences the ROC AUC, the expected calibration error and the
recall at 100% precision. The sequence filter (--sequence) moves between frames by
odometry or by time and --max-speed. 'odometry' takes the drive's own poses as the
robot's odometry (a robot has its odometry; the drive's poses stand for it, so this is
odometry without drift): offline the filter reads them, in graph mode the replay
publishes them as nav_msgs/Odometry at each frame's stamp for localizer_node's
odom_topic, and the report counts the frames the node's filter moved by them.
Positions, headings and the trajectory plot use the ground plane of the map's pose
convention (x-y for z-up poses, x-z for camera-convention poses, heading about the up
axis). Every argument is checked before the map, the model or the drive is read.
"""

import argparse
from pathlib import Path
import sys
from typing import Dict, List, Optional, Sequence, Set, TYPE_CHECKING

import numpy as np

from .build_map import add_drive_options, check_drive_args, map_convention, read_drive
from .common import (CliParser, end_progress, existing_dir, existing_file,
                     non_negative_int, output_dir, positive_float, positive_int,
                     progress_bar, run_main, say)
from ..core.errors import MapError

if TYPE_CHECKING:   # the heavy modules (torch) load after the arguments are checked
    from ..core.drives.drives import Drive
    from ..core.evaluation.report import QueryOutcome
    from ..core.localization.fusion import CandidateTable, Fusion
    from ..core.maps.database import ReferenceMap


NS = (1, 5, 10, 20)
#: Candidates a graph-mode ~/match lists at most (localizer_node's max_candidates limit).
MAX_LISTED = 1000


def frame_positives(drive: 'Drive', ref_map: 'ReferenceMap', tolerance: int) -> List[Set[int]]:
    """Positives by frame index: references whose drive index is within tolerance.

    For drives recorded in lock-step (query frame i shows the place of reference frame i),
    like the shipped corridor drives.
    """
    ref_index = np.array([int(r.id.rsplit('#', 1)[-1]) for r in ref_map.references])
    return [set(np.flatnonzero(np.abs(ref_index - f.index) <= tolerance).tolist())
            for f in drive.frames]


def match_table(msg) -> 'CandidateTable':
    """Return the candidate table of a ~/match that lists every candidate (retrieval order).

    Only what ranking needs: map indices, global distances, the authors' patch scores
    (per-scale scores are not in the message), qualities.
    """
    from ..core.localization.fusion import CandidateTable
    cands = sorted(msg.candidates, key=lambda c: (c.global_distance, c.map_index))
    return CandidateTable(np.array([c.map_index for c in cands], np.int64),
                          np.array([c.global_distance for c in cands], np.float64),
                          np.zeros((len(cands), 0)),
                          np.array([c.quality for c in cands], np.float64),
                          np.array([c.patch_score for c in cands], np.float64))


def graph_outcomes(drive: 'Drive', args: argparse.Namespace, ref_map: 'ReferenceMap',
                   checkpoint: Path, fusions: Dict[str, 'Fusion'], motion: Optional[str]):
    """Replay the drive through the ROS graph; one outcome per frame (no answer: a miss).

    The drive's camera messages go out as recorded (encoding, compression, size, stamps)
    into the graph with its default settings (:mod:`patch_netvlad_ros.ros.replay`), so
    frames the graph drops under them have no answer and count as misses in recall@N.
    ~/match lists every candidate, so the other rankers' orders (``fusions``) come from
    the node's own scores. motion: the sequence filter's (:func:`sequence_motion`);
    'odometry' replays the drive's poses as odometry. Returns the single-frame outcomes,
    the sequence filter's (None when it is off) and the report's graph sections: frames
    published, answered, dropped by reason, lost before camera_batcher, each node's last
    /diagnostics status, and the answers whose filter moved by odometry.
    """
    from ..core.evaluation.localize_drive import outcome_of, stage_rankings
    from ..ros.replay import replay_drive
    top_k = args.top_k or ref_map.config.top_k
    params = {'max_candidates': min(max(max(NS), top_k), MAX_LISTED), 'verify_map': False,
              'sequence': motion is not None, 'max_speed': args.max_speed}
    if args.top_k:
        params['top_k'] = args.top_k
    cfg = ref_map.config
    record, keys = replay_drive(drive, str(args.map), str(checkpoint), cfg.preset,
                                (cfg.image_height, cfg.image_width), args.rate,
                                getattr(args, 'graph_processes', 'three'), params,
                                progress=progress_bar(len(drive.frames), 'replay'),
                                odometry=motion == 'odometry')
    outcomes, filtered = [], []
    for frame, key in zip(drive.frames, keys):
        sent, got = record.published.get(key), record.matches.get(key)
        if got is None or sent is None:
            outcomes.append(outcome_of(frame, [], float('nan'), None, {}))
            filtered.append(outcome_of(frame, [], float('nan'), None, {}))
            continue
        msg, arrived = got
        latency = 1e3 * (arrived - sent)
        stages = {'extraction': msg.extraction_ms, 'retrieval': msg.retrieval_ms,
                  'rerank': msg.rerank_ms, 'node_latency': msg.latency_ms}
        outcomes.append(outcome_of(frame, [c.map_index for c in msg.candidates],
                                   msg.confidence, latency, stages, None,
                                   {'candidate': msg.candidate_bytes,
                                    'moved': msg.moved_bytes},
                                   stage_rankings(match_table(msg), fusions)))
        filtered.append(outcome_of(frame, list(msg.sequence_ranked), msg.sequence_confidence,
                                   latency, {**stages, 'sequence': msg.sequence_ms}))
    return (outcomes, filtered if motion is not None else None,
            graph_sections(record, args.rate))


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
            # answers whose sequence filter moved by odometry (replayed or the node's own)
            'sequence_odometry_frames': sum(bool(m.sequence_odometry)
                                            for m, _ in record.matches.values()),
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
    parser.add_argument('--sequence', choices=('odometry', 'time', 'off'), default='odometry',
                        help="the sequence filter's motion model: 'odometry' (the drive's "
                        "own poses stand for the robot's odometry; graph mode: the replay "
                        "publishes them on the node's odom_topic), 'time' (time between "
                        "frames and --max-speed), 'off' (single frames only)")
    parser.add_argument('--max-speed', type=positive_float, default=3.0,
                        help='sequence filter without odometry: fastest motion in m/s '
                        '(default 3)')
    parser.add_argument('--output', type=output_dir, default='out/evaluate',
                        help='folder for report.json and the plots (default out/evaluate)')
    args = parser.parse_args(argv)
    check_drive_args(parser, args)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Evaluate with checked arguments (:func:`main`); returns the exit status."""
    from ..core.model.checkpoint import model_digest
    from ..core.maps.database import check_identity, ReferenceMap
    from ..core.drives.drives import frames_in_z_up, meta_convention
    from ..core.evaluation.localize_drive import localize_offline, rankers, STAGE_OF
    from ..core.localization.localizer import descriptor_identity, Localizer
    from ..core.maps.map_building import fit_summary, map_model_path, map_origin, resolve_map_model
    from ..core.drives.poses import headings, to_z_up
    from ..core.evaluation.report import (evaluate, format_summary, side_by_side, write_plots,
                                          write_report)
    from ..core.localization.sequence import MotionModel, SequenceLocalizer
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
    say(f'map {fit_summary(ref_map.meta)}')
    motion = sequence_motion(args, convention)
    # ground truth in z-up terms: ground plane x-y, heading about +z (camera poses rotated)
    drive.frames = frames_in_z_up(drive.frames, convention)
    ref_positions, ref_quats = to_z_up(
        ref_map.positions(), [(r.qx, r.qy, r.qz, r.qw) for r in ref_map.references],
        convention)
    matching = {'top_k': args.top_k} if args.top_k else {}
    localizer = Localizer(ref_map, None, **matching)   # the node's settings
    fusions = rankers(ref_map)
    extra = {}
    if args.mode == 'offline':
        localizer.model = model
        sequence = (None if motion is None else
                    SequenceLocalizer(localizer, MotionModel(max_speed=args.max_speed)))
        odometry = [f.pose for f in drive.frames] if motion == 'odometry' else None
        result = localize_offline(localizer, model, drive.frames,
                                  progress=progress_bar(len(drive.frames), 'localise'),
                                  sequence=sequence, odometry=odometry, fusions=fusions)
        outcomes, filtered = result if sequence is not None else (result, None)
    else:
        ckpt = args.checkpoint or map_model_path(args.map)
        outcomes, filtered, extra = graph_outcomes(drive, args, ref_map, ckpt, fusions,
                                                   motion)
    end_progress()
    positives = (frame_positives(drive, ref_map, args.frame_tolerance)
                 if args.frame_tolerance is not None else None)
    truth = (ref_positions, headings(ref_quats), args.radius, NS, positives)
    report = evaluate(outcomes, *truth)
    seq_report = None if filtered is None else evaluate(filtered, *truth)
    report.update(mode=args.mode, map=str(args.map), drive=drive.name,
                  drive_summary=drive.summary(), model_digest=model_digest(model)[:16],
                  criterion=(f'frame tolerance {args.frame_tolerance}'
                             if positives is not None else f'radius {args.radius} m'),
                  pose_convention=convention, pose_convention_reason=drive.convention_reason,
                  map_fit=fit_summary(ref_map.meta), sequence=seq_report,
                  sequence_motion=motion,
                  side_by_side=side_by_side(report, STAGE_OF[localizer.fusion.method],
                                            seq_report), **extra)
    args.output.mkdir(parents=True, exist_ok=True)
    path = write_report(report, args.output / 'report.json')
    title = f'{drive.name} vs {args.map.name} ({args.mode})'
    plots = write_plots(report, outcomes, ref_positions, args.output, title=title,
                        convention=convention,
                        sequence=None if filtered is None else (seq_report, filtered))
    plots += reliability_plots(outcomes, filtered, report, seq_report, args.output, title)
    print(format_summary(report))
    if extra:
        f = extra['frames']
        dropped = ', '.join(f'{k} {v}' for k, v in f['dropped'].items() if v) or 'none'
        print(f"graph ({extra['graph_processes']} process(es)): published {f['published']}, "
              f"lost before camera_batcher {f['lost_before_batcher']}, answered "
              f"{f['answered']}, dropped: {dropped}; poses {extra['poses_published']} "
              '(unanswered frames count as misses)')
        if motion == 'odometry':
            print('sequence filter moved by the replayed odometry on '
                  f"{extra['sequence_odometry_frames']} of {f['answered']} answers (the "
                  'first has nothing to move from)')
        if not f['settled']:
            say(f"warning: the graph had not settled at the end ({f['in_flight_at_end']} "
                'frames in flight)')
    print(f'report: {path}; plots: {", ".join(p.name for p in plots)}')
    return 0


def sequence_motion(args: argparse.Namespace, convention: str) -> Optional[str]:
    """Return the sequence filter's motion model for this run: 'odometry', 'time', None."""
    if args.sequence == 'off':
        return None
    if args.sequence == 'odometry' and convention != 'z-up':
        say(f"{convention}-convention poses: the filter's odometry model turns about z; "
            'it moves by time and --max-speed instead')
        return 'time'
    return args.sequence


def reliability_plots(outcomes: Sequence['QueryOutcome'],
                      filtered: Optional[Sequence['QueryOutcome']], report: dict,
                      seq_report: Optional[dict], out_dir: Path, title: str) -> List[Path]:
    """Reliability diagrams of the single-frame and the sequence filter's confidences."""
    from ..core.localization.calibration import reliability_diagram
    written = []
    for name, outs, rep in (('reliability.png', outcomes, report),
                            ('reliability_sequence.png', filtered, seq_report)):
        if outs is None:
            continue
        rows = [(min(max(o.confidence, 0.0), 1.0), q['correct'])
                for o, q in zip(outs, rep['per_query']) if o.answered
                and np.isfinite(o.confidence)]
        if rows:
            what = 'single frame' if rep is report else 'sequence filter'
            written.append(reliability_diagram([c for c, _ in rows], [r for _, r in rows],
                                               out_dir / name, title=f'{title}: {what}'))
    return written


if __name__ == '__main__':
    sys.exit(main())
