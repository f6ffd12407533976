# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Evaluation report on a hand-made map: every expected number is worked out by hand.

The map is 10 references on a line, x = 0 .. 9 m (y = z = 0), headings 0 except
ref 2 (10 deg) and ref 8 (90 deg). Five queries, ground truth radius 1.5 m:

=====  ============  ===========  ==================  ======  =====  ========
query  position      positives    ranked              top-1   conf   yaw
=====  ============  ===========  ==================  ======  =====  ========
0      (2, 0.5)      1, 2, 3      2, 5, 7             right   0.9    350 deg
1      (4.4, 0)      3, 4, 5      8, 9, 0, 1, 4       wrong   0.6    0 deg
2      (6, 8)        none         0, 1, 2, 3, 4, 5    wrong   0.4    unknown
3      (1, 0)        0, 1, 2      (no answer)         miss    nan    0 deg
4      (9, 1)        8, 9         8, 9                right   0.4    -170 deg
=====  ============  ===========  ==================  ======  =====  ========

(query 4 is 1 m from ref 9 and sqrt(2) = 1.414 m from ref 8; query 2 is 8 m off the line.)
"""

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from patch_netvlad_ros.core.evaluation.report import (evaluate, format_summary, PLOT_DPI,
                                                      PLOT_SIZE, QueryOutcome, roc_auc,
                                                      write_plots, write_report)

RADIUS = 1.5
REFS = np.array([[float(x), 0.0, 0.0] for x in range(10)])
REF_YAWS = np.zeros(10)
REF_YAWS[2] = math.radians(10.0)
REF_YAWS[8] = math.radians(90.0)


def outcomes(with_global=False):
    """Build the five queries of the module docstring."""
    rows = [
        # stamp, position, yaw (deg), ranked, confidence, latency, stages
        (0.0, (2.0, 0.5, 0.0), 350.0, [2, 5, 7], 0.9, 100.0,
         {'extraction': 50.0, 'rerank': 40.0}),
        (1.0, (4.4, 0.0, 0.0), 0.0, [8, 9, 0, 1, 4], 0.6, 120.0, {'extraction': 60.0}),
        (2.0, (6.0, 8.0, 0.0), None, [0, 1, 2, 3, 4, 5], 0.4, None, {}),
        (3.0, (1.0, 0.0, 0.0), 0.0, [], float('nan'), 300.0, {'extraction': 70.0}),
        (4.0, (9.0, 1.0, 0.0), -170.0, [8, 9], 0.4, 80.0,
         {'extraction': 40.0, 'rerank': 20.0}),
    ]
    out = []
    for i, (stamp, pos, yaw, ranked, conf, lat, stages) in enumerate(rows):
        out.append(QueryOutcome(
            stamp=stamp, position=np.array(pos), yaw=None if yaw is None else math.radians(yaw),
            ranked=ranked, confidence=conf, latency_ms=lat, stage_ms=stages,
            # global order: query i's true ref first for queries 0 .. 3, query 4 wrong
            global_ranked=([[2], [4], [7], [1], [0]][i] if with_global else None)))
    return out


@pytest.fixture
def report():
    return evaluate(outcomes(), REFS, REF_YAWS, radius=RADIUS, ns=(1, 5))


def test_counts_and_recall(report):
    assert report['queries'] == 5
    assert report['answered'] == 4
    assert report['radius_m'] == RADIUS
    # R@1: queries 0 and 4 -> 2/5; R@5: also query 1 (ref 4 at rank 5) -> 3/5.
    assert report['recall'] == {1: pytest.approx(0.4), 5: pytest.approx(0.6)}
    assert 'recall_global' not in report
    assert [q['correct'] for q in report['per_query']] == [True, False, False, False, True]
    assert [q['best'] for q in report['per_query']] == [2, 8, 0, None, 8]


def test_unanswered_query_counts_as_a_miss():
    # Query 3 alone, unanswered although refs 0..2 are positives: recall 0, not undefined.
    only = [outcomes()[3]]
    rep = evaluate(only, REFS, REF_YAWS, radius=RADIUS, ns=(1, 5))
    assert rep['recall'] == {1: 0.0, 5: 0.0}
    assert rep['answered'] == 0
    assert rep['position_error_m'] is None
    assert rep['per_query'][0]['correct'] is False
    assert rep['per_query'][0]['error_m'] is None
    # The same query answered correctly makes it a hit.
    only[0].ranked = [1]
    only[0].confidence = 0.5
    assert evaluate(only, REFS, radius=RADIUS, ns=(1,))['recall'] == {1: 1.0}


def test_recall_global_when_every_outcome_has_it():
    rep = evaluate(outcomes(with_global=True), REFS, REF_YAWS, radius=RADIUS, ns=(1, 5))
    # global top-1: query 0 ref 2 (hit), 1 ref 4 (hit), 2 ref 7 (no positives), 3 ref 1
    # (hit), 4 ref 0 (miss) -> 3/5 at every N.
    assert rep['recall_global'] == {1: pytest.approx(0.6), 5: pytest.approx(0.6)}
    some = outcomes(with_global=True)
    some[2].global_ranked = None
    assert 'recall_global' not in evaluate(some, REFS, radius=RADIUS, ns=(1,))


def test_position_errors(report):
    # Errors of the answered queries: 0.5 (ref 2), 3.6 (ref 8), 10 (ref 0 from (6, 8)),
    # sqrt(2) (ref 8 from (9, 1)). Sorted: 0.5, 1.414, 3.6, 10.
    errors = [q['error_m'] for q in report['per_query']]
    assert errors[3] is None
    assert errors[:3] + errors[4:] == pytest.approx([0.5, 3.6, 10.0, math.sqrt(2.0)])
    stats = report['position_error_m']
    assert stats['median'] == pytest.approx((math.sqrt(2.0) + 3.6) / 2.0)
    assert stats['mean'] == pytest.approx((0.5 + 3.6 + 10.0 + math.sqrt(2.0)) / 4.0)
    assert stats['max'] == pytest.approx(10.0)
    # p95, linear: position 0.95 * 3 = 2.85 between 3.6 and 10.
    assert stats['p95'] == pytest.approx(3.6 + 0.85 * (10.0 - 3.6))


def test_heading_errors_wrap_around(report):
    # 350 vs 10 deg -> 20; 0 vs 90 -> 90; -170 vs 90 -> 260 -> 100; query 2 has no yaw.
    headings = [q['heading_error_deg'] for q in report['per_query']]
    assert headings[2] is None and headings[3] is None
    assert [headings[0], headings[1], headings[4]] == pytest.approx([20.0, 90.0, 100.0])
    stats = report['heading_error_deg']
    assert stats['median'] == pytest.approx(90.0)
    assert stats['mean'] == pytest.approx(70.0)
    assert stats['max'] == pytest.approx(100.0)


def test_heading_errors_none_without_reference_yaws():
    rep = evaluate(outcomes(), REFS, None, radius=RADIUS, ns=(1,))
    assert rep['heading_error_deg'] is None
    assert all(q['heading_error_deg'] is None for q in rep['per_query'])


def test_latency_percentiles(report):
    latencies = [100.0, 120.0, 300.0, 80.0]  # query 2 was not timed
    lat = report['latency_ms']
    assert lat['p50'] == pytest.approx(np.percentile(latencies, 50))
    assert lat['p95'] == pytest.approx(np.percentile(latencies, 95))
    assert lat['mean'] == pytest.approx(150.0)
    assert lat['max'] == pytest.approx(300.0)
    assert report['stage_ms'] == {
        'extraction': {'p50': pytest.approx(np.percentile([50, 60, 70, 40], 50)),
                       'p95': pytest.approx(np.percentile([50, 60, 70, 40], 95))},
        'rerank': {'p50': pytest.approx(30.0), 'p95': pytest.approx(np.percentile([40, 20], 95))},
    }
    assert [q['latency_ms'] for q in report['per_query']] == [100.0, 120.0, None, 300.0, 80.0]


def test_rerank_bytes_per_query(tmp_path):
    """Bytes the rerank read and copied per query, in MB (1e6), over the queries that
    report them; the summary prints mean/max and reads the same back from JSON."""
    outs = outcomes()
    sizes = [(18_000_000, 0), (18_000_000, 3_600_000), None, (9_000_000, 1_800_000),
             (18_000_000, 0)]
    for o, size in zip(outs, sizes):
        if size is not None:
            o.rerank_bytes = {'candidate': size[0], 'moved': size[1]}
    report = evaluate(outs, REFS, REF_YAWS, radius=RADIUS, ns=(1, 5))
    moved = [0.0, 3.6, 1.8, 0.0]
    assert report['rerank_mb'] == {
        'candidate': {'mean': pytest.approx(15.75), 'p50': pytest.approx(18.0),
                      'max': pytest.approx(18.0)},
        'moved': {'mean': pytest.approx(1.35), 'p50': pytest.approx(np.percentile(moved, 50)),
                  'max': pytest.approx(3.6)}}
    text = format_summary(report)
    assert 'rerank MB per query, mean/max: candidate 15.75/18.00, moved 1.35/3.60' in text
    with open(write_report(report, tmp_path / 'r.json')) as f:
        assert format_summary(json.load(f)) == text
    # outcomes without byte counts give no such line
    assert evaluate(outcomes(), REFS, REF_YAWS, radius=RADIUS)['rerank_mb'] == {}
    assert 'rerank MB' not in format_summary(evaluate(outcomes(), REFS, REF_YAWS,
                                                      radius=RADIUS))


def brute_force_auc(scores, labels):
    """Count positive-negative pairs ordered right (1) or tied (1/2)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_confidence_auc_and_means(report):
    conf = report['confidence']
    # Answered: right 0.9, 0.4; wrong 0.6, 0.4. Pairs: (0.9, 0.6) 1, (0.9, 0.4) 1,
    # (0.4, 0.6) 0, (0.4, 0.4) 1/2 -> 2.5 / 4.
    assert conf['auc'] == pytest.approx(0.625)
    assert conf['auc'] == pytest.approx(brute_force_auc([0.9, 0.4, 0.6, 0.4],
                                                        [True, True, False, False]))
    assert conf['right_mean'] == pytest.approx(0.65)
    assert conf['wrong_mean'] == pytest.approx(0.5)


@pytest.mark.parametrize('seed', range(5))
def test_roc_auc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=40) / 5.0  # six levels: many ties
    labels = rng.random(40) < 0.4
    assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))


def test_roc_auc_none_with_one_class():
    assert roc_auc([0.1, 0.5], [True, True]) is None
    assert roc_auc([0.1, 0.5], [False, False]) is None
    assert roc_auc([0.2, 0.2], [True, False]) == 0.5


def test_confidence_auc_none_when_all_right():
    only_right = [outcomes()[0], outcomes()[4]]
    conf = evaluate(only_right, REFS, radius=RADIUS, ns=(1,))['confidence']
    assert conf['auc'] is None
    assert conf['wrong_mean'] is None


def test_pr_curve_by_hand(report):
    curve = report['confidence']['pr_curve']
    # distinct answered confidences 0.4, 0.6, 0.9 plus 0 and 1
    assert [p['threshold'] for p in curve] == pytest.approx([0.0, 0.4, 0.6, 0.9, 1.0])
    by_t = {round(p['threshold'], 6): p for p in curve}
    # Right-able queries (at least one positive): 0, 1, 3, 4 -> 4.
    # t = 0.6: accepted queries 0 (right) and 1 (wrong) -> precision 1/2, recall 1/4.
    assert by_t[0.6]['precision'] == pytest.approx(0.5)
    assert by_t[0.6]['recall'] == pytest.approx(0.25)
    # t = 0.4: all four answers accepted, 2 right -> 2/4, recall 2/4 (query 3 never).
    assert by_t[0.4]['precision'] == pytest.approx(0.5)
    assert by_t[0.4]['recall'] == pytest.approx(0.5)
    # t = 0.9: query 0 only -> 1, 1/4; t = 1: nothing accepted -> precision undefined.
    assert by_t[0.9]['precision'] == pytest.approx(1.0)
    assert by_t[0.9]['recall'] == pytest.approx(0.25)
    assert by_t[1.0]['precision'] is None
    assert by_t[1.0]['recall'] == 0.0


def test_positives_override_radius():
    # Frame-style ground truth, as sets: query i matches only the listed refs.
    positives = [{2}, {4}, {0}, {1}, {9}]
    rep = evaluate(outcomes(), REFS, REF_YAWS, radius=RADIUS, ns=(1, 5), positives=positives)
    # top-1: 2 (hit), 8, 0 (hit), none, 8 -> 2/5; within 5: also 4 for query 1 and 9 for
    # query 4 -> 4/5. By radius it would be 2/5 and 3/5, with query 2 wrong.
    assert rep['recall'] == {1: pytest.approx(0.4), 5: pytest.approx(0.8)}
    assert rep['radius_m'] is None
    assert [q['correct'] for q in rep['per_query']] == [True, False, True, False, False]
    # All five queries have a positive now; at t = 0.4 the right answers are 0 and 2.
    by_t = {round(p['threshold'], 6): p for p in rep['confidence']['pr_curve']}
    assert by_t[0.4]['recall'] == pytest.approx(2 / 5)


def test_bad_input():
    with pytest.raises(ValueError, match='no queries'):
        evaluate([], REFS)
    with pytest.raises(ValueError, match='2 positive sets for 5 queries'):
        evaluate(outcomes(), REFS, positives=[{0}, {1}])
    bad = outcomes()
    bad[0].ranked = [10]
    with pytest.raises(ValueError, match='index 10 outside the map of 10'):
        evaluate(bad, REFS)
    with pytest.raises(ValueError, match='3 reference headings for 10'):
        evaluate(outcomes(), REFS, np.zeros(3))


def test_write_plots(report, tmp_path):
    import matplotlib
    from matplotlib import image as mpimg
    backend = matplotlib.get_backend()
    paths = write_plots(report, outcomes(), REFS, tmp_path / 'plots', title='line')
    assert matplotlib.get_backend() == backend
    names = ['trajectory.png', 'recall_at_n.png', 'confidence_hist.png',
             'precision_recall.png']
    assert [p.name for p in paths] == names
    height = int(round(PLOT_SIZE[1] * PLOT_DPI))
    width = int(round(PLOT_SIZE[0] * PLOT_DPI))
    assert (height, width) == (600, 800)
    for p in paths:
        assert p.parent == tmp_path / 'plots'
        assert p.stat().st_size > 0
        pixels = mpimg.imread(p)
        assert pixels.shape[:2] == (height, width)
        assert pixels[..., :3].std() > 0.0  # something was drawn


def test_write_plots_with_global_curve_and_no_answers(tmp_path):
    rep = evaluate(outcomes(with_global=True), REFS, REF_YAWS, radius=RADIUS)
    assert len(write_plots(rep, outcomes(with_global=True), REFS, tmp_path)) == 4
    none = [outcomes()[3]]
    rep = evaluate(none, REFS, radius=RADIUS)
    assert all(p.stat().st_size > 0 for p in write_plots(rep, none, REFS, tmp_path / 'n'))


def test_import_has_no_matplotlib_side_effect():
    code = ('import sys; import patch_netvlad_ros.core.evaluation.report; '
            "sys.exit(1 if 'matplotlib' in sys.modules else 0)")
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0


def test_write_report_round_trip(report, tmp_path):
    path = write_report(report, tmp_path / 'sub' / 'report.json')
    assert path == tmp_path / 'sub' / 'report.json'
    text = path.read_text()
    assert 'NaN' not in text
    with open(path) as f:
        loaded = json.load(f)
    assert loaded['recall'] == {'1': pytest.approx(0.4), '5': pytest.approx(0.6)}
    assert list(loaded['recall']) == ['1', '5']
    assert loaded['per_query'][3]['confidence'] is None  # nan -> null
    assert loaded['per_query'][3]['best'] is None
    assert loaded['confidence']['auc'] == pytest.approx(0.625)
    assert loaded['queries'] == 5
    assert list(loaded) == sorted(loaded)


def test_format_summary(report, tmp_path):
    text = format_summary(report)
    assert 'R@1 0.400' in text
    assert 'R@5 0.600' in text
    assert 'AUC 0.625' in text
    # The report read back from JSON (string keys, null) formats the same.
    with open(write_report(report, tmp_path / 'r.json')) as f:
        assert format_summary(json.load(f)) == text


# ---------------------------------------------------------------- pose conventions


def kitti_outcomes(positions, quats, convention):
    """Map: even KITTI frames; queries: odd frames, answered with the map frame 2 ahead.

    Poses of either convention go through to_z_up and headings, as pnv-evaluate does.
    Returns (outcomes, z-up map positions [46, 3], map headings [46]).
    """
    from patch_netvlad_ros.core.drives.poses import headings, to_z_up
    pos, q = to_z_up(positions, quats, convention)
    yaws = headings(q)
    refs = np.arange(0, 91, 2)
    out = [QueryOutcome(stamp=float(i), position=pos[i], yaw=float(yaws[i]),
                        ranked=[min(i // 2 + 1, len(refs) - 1), 0], confidence=0.5)
           for i in range(1, 91, 2)]
    return out, pos[refs], yaws[refs]


def test_errors_and_plot_axes_agree_in_both_conventions():
    """The KITTI drive in z-up and camera axes: same errors, same ground-plane plot."""
    from pose_data import kitti_z_up, to_camera
    from patch_netvlad_ros.core.evaluation.report import GROUND_AXES, trajectory_figure
    _, pos, quats, yaw, _ = kitti_z_up()
    results = {}
    for convention, (p, q) in (('z-up', (pos, quats)), ('camera', to_camera(pos, quats))):
        outs, refs, ref_yaws = kitti_outcomes(p, q, convention)
        rep = evaluate(outs, refs, ref_yaws, radius=3.0, ns=(1, 2))
        fig = trajectory_figure(rep, outs, refs, convention=convention)
        results[convention] = (rep, fig.axes[0])
    (up, ax_up), (cam, ax_cam) = results['z-up'], results['camera']
    assert cam['recall'] == up['recall']
    for a, b in zip(cam['per_query'], up['per_query']):
        assert a['best'] == b['best'] and a['correct'] == b['correct']
        assert a['error_m'] == pytest.approx(b['error_m'], abs=1e-9)
        assert a['heading_error_deg'] == pytest.approx(b['heading_error_deg'], abs=1e-9)
    # by hand: query frame 2k+1 answered with map frame 2k+2, heading error from the yaw
    for k, q in enumerate(up['per_query']):
        i, j = 2 * k + 1, min(2 * k + 2, 90)
        assert q['error_m'] == pytest.approx(np.linalg.norm(pos[i] - pos[j]), abs=1e-9)
        diff = math.degrees(abs(math.remainder(yaw[i] - yaw[j], 2 * math.pi)))
        assert q['heading_error_deg'] == pytest.approx(diff, abs=1e-7)
    # the plots draw the same ground plane: the map's line is east-north in both
    for ax in (ax_up, ax_cam):
        line = ax.get_lines()[0].get_xydata()
        np.testing.assert_allclose(line, pos[0::2, :2], atol=1e-9)
    assert ax_cam.get_xlim() == pytest.approx(ax_up.get_xlim())
    assert ax_cam.get_ylim() == pytest.approx(ax_up.get_ylim())
    assert (ax_up.get_xlabel(), ax_up.get_ylabel()) == GROUND_AXES['z-up'][:2]
    assert (ax_cam.get_xlabel(), ax_cam.get_ylabel()) == ('z (m)', '-x (m)')
    assert 'camera frame' in ax_cam.get_title()


def test_camera_poses_taken_as_z_up_plot_lateral_against_height():
    """What the plot showed before: camera poses read as z-up draw x (lateral) vs y (down)."""
    from pose_data import kitti_z_up, to_camera
    from patch_netvlad_ros.core.evaluation.report import trajectory_figure
    _, pos, quats, _, _ = kitti_z_up()
    cam_pos, cam_q = to_camera(pos, quats)
    outs, refs, ref_yaws = kitti_outcomes(cam_pos, cam_q, 'z-up')
    rep = evaluate(outs, refs, ref_yaws, radius=3.0, ns=(1,))
    line = trajectory_figure(rep, outs, refs).axes[0].get_lines()[0].get_xydata()
    np.testing.assert_allclose(line, np.stack([-pos[0::2, 1], -pos[0::2, 2]], axis=1))
    with pytest.raises(ValueError, match="unknown pose convention 'ned'"):
        trajectory_figure(rep, outs, refs, convention='ned')
