# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-evaluate on the shipped demo drives: offline and through the ROS graph agree.

The map is built from the shipped reference bag with the corridor model (the demo
bootstraps its own; here the cached one keeps the test short) and fitted on itself for
the demo's place radius (2 m, the ground truth). The graph mode replays all 111 recorded
query messages over real rclpy/DDS at 4x the recorded 2 Hz into the graph's default
settings (in this process, to keep the test short; test_graph_replay.py runs the three
processes). Both reports put every stage side by side; the floors are a little below
what this map measured (offline: global R@1 0.856, patches 0.586, fused 0.937, sequence
with the drive's poses as odometry 1.0; the graph replays them as odometry too).
"""

import json
from pathlib import Path

from bag_writers import bag_topics
from demo_drives import demo_map_dir
import pytest

from patch_netvlad_ros.cli import evaluate
from patch_netvlad_ros.cli.demo import DRIVES, FRAME_TOLERANCE, IMAGE_TOPIC, POSE_TOPIC
from patch_netvlad_ros.core.maps.database import ReferenceMap

RATE = 4.0


@pytest.fixture(scope='module')
def demo_map(corridor_model, tmp_path_factory) -> Path:
    """Map of the shipped reference drive, built with the corridor model and fitted."""
    return demo_map_dir(corridor_model, tmp_path_factory)


def _evaluate(demo_map, out, *extra):
    """pnv-evaluate of the shipped query drive as the demo's step 2 calls it, plus extra."""
    status = evaluate.main(['--map', str(demo_map), '--bag', str(DRIVES / 'query'),
                            '--image-topic', IMAGE_TOPIC, '--pose-topic', POSE_TOPIC,
                            '--frame-tolerance', str(FRAME_TOLERANCE), '--output', str(out),
                            *extra])
    assert status == 0
    return json.loads((out / 'report.json').read_text())


def test_shipped_drives_are_small_real_bags():
    """Two mcap bags, 111 JPEG frames at 2 Hz and odometry, about a megabyte each."""
    for name in ('reference', 'query'):
        topics = bag_topics(DRIVES / name)
        assert topics[IMAGE_TOPIC] == ('sensor_msgs/msg/CompressedImage', 111)
        assert topics[POSE_TOPIC] == ('nav_msgs/msg/Odometry', 221)
        size = sum(p.stat().st_size for p in (DRIVES / name).iterdir())
        assert size < 2_000_000


def test_graph_replay_matches_offline(demo_map, demo_offline, tmp_path):
    """The recorded JPEG frames at 4x the recorded rate into the default graph: every frame
    accounted for, dropped ones count as misses, answered ones as the core offline.

    The offline side is the demo's own pnv-evaluate run (conftest's demo_offline: this
    drive, a copy of this map, this frame tolerance, --mode offline), run once per test run.
    """
    status, printed, offline_dir = demo_offline
    assert status == 0, printed
    offline = json.loads((offline_dir / 'report.json').read_text())
    graph = _evaluate(demo_map, tmp_path / 'graph', '--mode', 'graph', '--rate', str(RATE),
                      '--graph-processes', 'one')
    assert graph['published'] == 111 and graph['graph_processes'] == 'one'
    assert graph['encodings'] == {'compressed jpeg': 111}  # as recorded, not decoded
    frames = graph['frames']
    assert frames['settled'] and frames['in_flight_at_end'] == 0
    # Every frame: lost before the batcher, answered, or dropped for a named reason.
    assert frames['published'] == (frames['lost_before_batcher'] + frames['answered']
                                   + sum(frames['dropped'].values()))
    assert frames['lost_before_batcher'] == \
        frames['lost_before_batcher_detected']['upstream_lost_sequence']
    assert {k for k, v in frames['dropped'].items() if v} <= {'backpressure'}
    assert graph['answered'] == frames['answered']
    assert set(graph['diagnostics']) == {'camera_batcher', 'descriptor_node',
                                         'localizer_node'}
    assert graph['diagnostics']['camera_batcher']['values']['received'] == \
        frames['received_by_batcher']
    assert offline['queries'] == graph['queries'] == 111
    # Real rate: 110 intervals of 0.5 s / RATE.
    assert graph['replay_seconds'] >= 110 * 0.5 / RATE
    # Unanswered frames are misses: recall@1 is over all 111 frames.
    graph_right = sum(q['correct'] for q in graph['per_query'])
    assert graph['recall']['1'] == pytest.approx(graph_right / 111)
    assert sum(q['best'] is not None for q in graph['per_query']) == graph['answered']
    # Same images, same model: where the graph answered, it answered as the core offline
    # (batch composition moves VGG's float rounding: allow a near-tie or two).
    pairs = [(o['best'], g['best']) for o, g in zip(offline['per_query'], graph['per_query'])
             if g['best'] is not None]
    assert sum(o == g for o, g in pairs) >= len(pairs) - 2
    right_off = sum(o['correct'] for o, g in zip(offline['per_query'], graph['per_query'])
                    if g['best'] is not None)
    assert graph_right >= right_off - 2
    # Offline sanity against the core's measured corridor numbers (test_real_data.py).
    assert offline['recall']['5'] >= 0.85
    assert graph['latency_ms']['p50'] > 0
    # Both modes report the candidates' bytes per query (top-100 of the 111 references,
    # float16 patches); on the CPU the map is read in place and nothing is copied.
    cfg = ReferenceMap.load(demo_map).config
    per_query = 100 * 2 * cfg.num_patches(0) * cfg.num_pcs / 1e6
    for report in (offline, graph):
        assert report['rerank_mb']['candidate'] == {'mean': pytest.approx(per_query),
                                                    'p50': pytest.approx(per_query),
                                                    'max': pytest.approx(per_query)}
        assert report['rerank_mb']['moved']['max'] == 0
    for folder in (offline_dir, tmp_path / 'graph'):
        for name in ('trajectory', 'recall_at_n', 'confidence_hist', 'precision_recall',
                     'reliability', 'reliability_sequence'):
            assert (folder / f'{name}.png').stat().st_size > 1000
    check_side_by_side(offline, graph)


def check_side_by_side(offline: dict, graph: dict) -> None:
    """Every stage on the same frames, in both modes (floors below the measured numbers)."""
    rows = offline['side_by_side']
    assert set(rows) == {'global', 'patches', 'fused', 'sequence'}  # JSON sorts keys
    r1 = {k: r['recall']['1'] for k, r in rows.items()}
    assert r1['global'] >= 0.82 and r1['patches'] >= 0.55
    assert r1['fused'] >= 0.90 and r1['sequence'] >= 0.97
    assert r1['patches'] < r1['global'] < r1['fused'] <= r1['sequence']
    # ~/match answers with the map's fusion: its row is the report's own recall and
    # confidence; the sequence row is the filter's report (odometry: the drive's poses).
    assert rows['fused']['answer'] and rows['fused']['recall'] == offline['recall']
    assert rows['fused']['auc'] == offline['confidence']['auc'] >= 0.85
    assert 0 < rows['fused']['ece'] < 0.3 and rows['fused']['recall_at_full_precision'] >= 0.5
    assert offline['sequence_motion'] == 'odometry'
    assert rows['sequence']['recall'] == offline['sequence']['recall']
    assert rows['sequence']['ece'] <= 0.05
    assert rows['sequence']['recall_at_full_precision'] >= 0.95
    assert rows['global']['auc'] is None  # rankings only: no confidence of their own
    # Graph mode: the node's own answers (its ~/match lists every candidate, so the other
    # rankers' orders come from its scores); the replay publishes the drive's poses as
    # odometry, and the node's filter moved by them on every answer after the first.
    rows = graph['side_by_side']
    assert set(rows) == {'global', 'patches', 'fused', 'sequence'}  # JSON sorts keys
    assert graph['sequence_motion'] == 'odometry'
    assert graph['sequence_odometry_frames'] == graph['answered'] - 1
    assert rows['fused']['recall'] == graph['recall']
    answered = graph['answered'] / graph['queries']
    for key in ('global', 'patches', 'fused'):
        # dropped frames are misses: at most the answered share, about offline's rate
        assert offline['side_by_side'][key]['recall']['1'] * answered - 0.05 <= \
            rows[key]['recall']['1'] <= answered
    assert rows['sequence']['recall']['1'] >= max(
        rows['fused']['recall']['1'],
        offline['side_by_side']['sequence']['recall']['1'] * answered - 0.02)
