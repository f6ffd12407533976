# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Sequence filter: exact updates against a dense brute-force forward algorithm, motion
models, switching off, kidnapping and recall on the corridor's query drive.

Measured on the corridor (fitted map, place radius 2 m, frames 0.5 s and 1 m apart):
single-frame R@1 0.928; sequence R@1 1.0 with odometry and with time only; after a
jump of 30 m (kidnapping) the filter is right again on the first frame. RTAB-Map loop
(map of the first lap, frames 41-84 as queries, time only): R@1 0.977 single and
sequence; recall of revisits at 100% precision 0.636 single frame, 0.932 sequence.
"""

import math

from fitted_corridor import fitted_map, query_tables, right_answers
import numpy as np
import pytest
import torch

from benchmarks.bench_accuracy import read_loop_truth
from conftest import TEST_DATA
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.drives.drives import DriveFrame
from patch_netvlad_ros.core.drives.poses import PoseSample, quaternion_from_yaw
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.evaluation.localize_drive import localize_offline
from patch_netvlad_ros.core.localization.calibration import recall_at_full_precision
from patch_netvlad_ros.core.localization.fusion import Fusion
from patch_netvlad_ros.core.localization.localizer import Candidate, LocalizationResult, Localizer
from patch_netvlad_ros.core.localization.sequence import MotionModel, PlacePairs, SequenceLocalizer
from patch_netvlad_ros.core.maps.database import Reference, ReferenceMap
from patch_netvlad_ros.core.maps.extraction import describe_batches
from patch_netvlad_ros.core.maps.map_fit import fit_map
from patch_netvlad_ros.core.model.image import load_image

# A tiny map: five places along x facing +x, two along y at x = 10 facing +y (yaw pi/2).
PLACES = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (2.0, 0.0, 0.0), (3.0, 0.0, 0.0), (4.0, 0.0, 0.0),
          (10.0, 0.0, math.pi / 2), (10.0, 1.5, math.pi / 2)]


def tiny_map(places=PLACES):
    cfg = get_config('storage', image_height=96, image_width=128)
    rng = np.random.default_rng(0)
    refs = []
    for i, (x, y, yaw) in enumerate(places):
        qx, qy, qz, qw = quaternion_from_yaw(yaw)
        refs.append(Reference(id=f'p{i}', stamp=float(i), x=x, y=y, qx=qx, qy=qy, qz=qz, qw=qw))
    n, p = len(places), cfg.num_patches(0)
    g = rng.standard_normal((n, cfg.num_pcs)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    patches = [rng.standard_normal((n, p, cfg.num_pcs)).astype(np.float16)]
    return ReferenceMap.empty(cfg, 'digest').extended(refs, g, patches)


def frame_result(ref_map, indices, fused, confidence):
    """A single-frame answer with the given candidates (best first) and fused scores."""
    cands = [Candidate(int(i), ref_map.references[i].id, float(f), 0.5, 1.0)
             for i, f in zip(indices, fused)]
    return LocalizationResult(cands[0].index, ref_map.references[cands[0].index], confidence,
                              cands)


def dense_transition(positions, yaws, motion, odom_delta=None, dt=None):
    """T [N, N] (column j: where place j's mass goes), computed entry by entry."""
    n = len(positions)
    t = np.zeros((n, n))
    for j in range(n):
        for k in range(n):
            if odom_delta is not None:
                sigma = motion.odom_sigma + motion.odom_sigma_per_m * np.linalg.norm(odom_delta)
                c, s = math.cos(yaws[j]), math.sin(yaws[j])
                pred = positions[j] + np.array([c * odom_delta[0] - s * odom_delta[1],
                                                s * odom_delta[0] + c * odom_delta[1],
                                                odom_delta[2]])
                err = np.linalg.norm(positions[k] - pred)
                t[k, j] = math.exp(-0.5 * (err / sigma) ** 2) if err <= 3 * sigma else 0.0
            else:
                band = motion.max_speed * dt
                d = np.linalg.norm(positions[k] - positions[j])
                if d <= band + 3 * motion.time_sigma:
                    t[k, j] = math.exp(-0.5 * (max(d - band, 0.0) / motion.time_sigma) ** 2)
        total = t[:, j].sum()
        if total > 0:
            t[:, j] /= total
        else:
            t[j, j] = 1.0
    return t


def dense_likelihood(n, result, temperature):
    q = np.zeros(n)
    fused = np.array([c.fused_score for c in result.candidates])
    p = np.exp(temperature * fused) / np.exp(temperature * fused).sum()
    q[:] = p.min()
    for c, pc in zip(result.candidates, p):
        q[c.index] = pc
    q /= q.sum()
    return (1 - result.confidence) + result.confidence * n * q


def test_updates_equal_the_brute_force_forward_algorithm(rng):
    ref_map = tiny_map()
    fusion = Fusion('global+patches', 0.5, 0.5, 1.7)
    localizer = Localizer(ref_map, None, place_radius=1.2, fusion=fusion)
    motion = MotionModel(max_speed=1.5, time_sigma=0.7, odom_sigma=0.4, odom_sigma_per_m=0.2)
    mixing = 0.05
    seq = SequenceLocalizer(localizer, motion, mixing)
    n = len(PLACES)
    positions = np.array([[x, y, 0.0] for x, y, _ in PLACES])
    yaws = np.array([yaw for _, _, yaw in PLACES])
    belief = np.full(n, 1.0 / n)
    odom = [PoseSample(0.0, 5.0, 5.0, 0.0), None, PoseSample(1.0, 5.0, 5.0, 0.0),
            PoseSample(1.5, 5.0, 6.0, 0.0, *quaternion_from_yaw(math.pi / 2)),
            PoseSample(2.5, 4.0, 6.0, 0.0, *quaternion_from_yaw(math.pi / 2)), None]
    stamps = [0.0, 0.5, 1.0, 1.5, 2.5, 3.0]
    previous = None
    for step, (stamp, pose) in enumerate(zip(stamps, odom)):
        cands = rng.choice(n, 4, replace=False)
        result = frame_result(ref_map, cands, np.sort(rng.standard_normal(4))[::-1],
                              float(rng.uniform(0.2, 0.9)))
        if step > 0:
            if pose is not None and previous is not None:
                yaw0 = 2 * math.atan2(previous.qz, previous.qw)
                d = pose.position - previous.position
                delta = np.array([math.cos(yaw0) * d[0] + math.sin(yaw0) * d[1],
                                  -math.sin(yaw0) * d[0] + math.cos(yaw0) * d[1], d[2]])
                t = dense_transition(positions, yaws, motion, odom_delta=delta)
            else:
                t = dense_transition(positions, yaws, motion, dt=stamp - stamps[step - 1])
            belief = (1 - mixing) * t @ belief + mixing / n
        belief = belief * dense_likelihood(n, result, fusion.temperature)
        belief /= belief.sum()
        previous = pose
        answer = seq.update(result, stamp, pose)
        np.testing.assert_allclose(seq.belief, belief, rtol=1e-10, atol=1e-14)
        best = int(np.argmax(belief))
        near = np.linalg.norm(positions - positions[best], axis=1) <= 1.2
        assert answer.best_index == best
        assert answer.confidence == pytest.approx(belief[near].sum())
        assert answer.single is result
        assert answer.retrieval_order[0] == best


def test_place_pairs_equal_brute_force(rng):
    positions = rng.uniform(0, 20, (60, 3))
    pairs = PlacePairs(positions)
    for radius in (0.0, 2.5, 7.0, 1.0, 30.0, 4.0):
        src, dst, offset = pairs.within(radius)
        got = set(zip(src.tolist(), dst.tolist()))
        d = np.linalg.norm(positions[:, None] - positions[None], axis=2)
        want = set(zip(*np.nonzero(d <= radius)))
        assert got == {(int(a), int(b)) for a, b in want}
        np.testing.assert_allclose(offset, positions[dst] - positions[src])


def uninformative(ref_map):
    return frame_result(ref_map, [0, 1], [0.0, 0.0], 0.0)


def test_odometry_moves_the_belief_along_each_place_heading():
    # places facing -x (yaw pi): driving 1 m forward goes to smaller x
    line = [(float(x), 0.0, math.pi) for x in range(8)]
    ref_map = tiny_map(line)
    seq = SequenceLocalizer(Localizer(ref_map, None, place_radius=0.5), MotionModel(
        time_sigma=1.0, odom_sigma=0.3, odom_sigma_per_m=0.0), mixing=0.0)
    seq.update(frame_result(ref_map, [5, 0], [5.0, -5.0], 1.0), 0.0,
               PoseSample(0.0, 0.0, 0.0, 0.0))
    assert int(np.argmax(seq.belief)) == 5
    for k in range(1, 4):
        answer = seq.update(uninformative(ref_map), float(k), PoseSample(float(k), float(k),
                                                                         0.0, 0.0))
        assert answer.best_index == 5 - k
    # time only, an uninformative frame: a belief at one place spreads alike both ways
    seq.belief = np.eye(8)[3]
    seq.update(uninformative(ref_map), 3.3)
    b = seq.belief
    assert b[2] == pytest.approx(b[4]) and b[1] == pytest.approx(b[5])
    assert b[3] > b[2] > b[1] > b[0] > 0


def test_default_spreads_are_half_the_reference_spacing():
    ref_map = tiny_map([(2.0 * i, 0.0, 0.0) for i in range(6)])
    localizer = Localizer(ref_map, None)
    motion = SequenceLocalizer(localizer).motion
    assert motion.odom_sigma == pytest.approx(1.0) and motion.time_sigma == pytest.approx(1.0)
    given = MotionModel(odom_sigma=0.25, time_sigma=0.75)
    assert SequenceLocalizer(localizer, given).motion == given


def test_switching_off_and_bad_input():
    ref_map = tiny_map()
    localizer = Localizer(ref_map, None)
    result = frame_result(ref_map, [2, 3], [1.0, 0.0], 0.7)
    off = SequenceLocalizer(localizer, enabled=False)
    assert off.update(result, 0.0) is result and off.belief is None
    on = SequenceLocalizer(localizer)
    on.update(result, 5.0)
    with pytest.raises(MapError, match='older than the previous'):
        on.update(result, 4.0)
    on.reset()
    assert on.update(result, 4.0).best_index == 2
    with pytest.raises(MapError, match='mixing'):
        SequenceLocalizer(localizer, mixing=1.0)
    with pytest.raises(MapError, match='max_speed'):
        MotionModel(max_speed=0.0)


@pytest.fixture(scope='module')
def corridor_single(corridor_map, corridor_query_descriptors):
    localizer = Localizer(fitted_map(corridor_map), None)
    tables = query_tables(corridor_map, corridor_query_descriptors)
    return localizer, [localizer.answer(t) for t in tables]


def run_filter(localizer, results, odometry, **kwargs):
    seq = SequenceLocalizer(localizer, **kwargs)
    out = []
    for k, result in enumerate(results):
        pose = PoseSample(0.5 * k, float(k), 0.0, 0.0) if odometry else None
        out.append(seq.update(result, 0.5 * k, pose))
    return out, seq


def test_sequence_recall_on_the_corridor(corridor_single, corridor_set):
    localizer, single = corridor_single
    ok_single = right_answers(single, corridor_set.positives)
    for odometry in (True, False):
        filtered, seq = run_filter(localizer, single, odometry)
        ok = right_answers(filtered, corridor_set.positives)
        conf = np.array([r.confidence for r in filtered])
        print(f'corridor single R@1 {ok_single.mean():.3f}, sequence '
              f'({"odometry" if odometry else "time only"}) R@1 {ok.mean():.3f}, '
              f'confidence right {conf[ok].mean():.3f}')
        assert ok.mean() >= 0.97 and ok.mean() > ok_single.mean()
        assert conf[ok].mean() >= 0.9


def test_kidnapped_filter_relocalizes(corridor_single, corridor_set):
    localizer, single = corridor_single
    # frames 0-49, then the robot is carried 30 m on (odometry does not see it)
    order = list(range(50)) + list(range(80, 111))
    positives = [corridor_set.positives[i] for i in order]
    for odometry in (True, False):
        filtered, _ = run_filter(localizer, [single[i] for i in order], odometry)
        ok = right_answers(filtered, positives)
        back = int(np.argmax(ok[50:]))
        print(f'kidnapped ({"odometry" if odometry else "time only"}): right again after '
              f'{back} frames, R@1 after the jump {ok[50:].mean():.3f}')
        assert back <= 3 and ok[50 + back:].mean() >= 0.95
        # without the uniform mixing term the filter never leaves the old place
        stuck, _ = run_filter(localizer, [single[i] for i in order], odometry, mixing=0.0)
        assert right_answers(stuck, positives)[55:].mean() < ok[55:].mean()


def test_localize_offline_gives_single_and_sequence_outcomes(
        corridor_model, corridor_map, corridor_images, corridor_query_descriptors):
    localizer = Localizer(fitted_map(corridor_map), corridor_model)
    assert localize_offline(localizer, corridor_model, []) == []
    seq = SequenceLocalizer(localizer)
    assert localize_offline(localizer, corridor_model, [], sequence=seq) == ([], [])
    frames = [DriveFrame(i, 0.5 * i, 'camera', f'q{i}',
                         PoseSample(0.5 * i, float(i), 0.0, 0.0), corridor_images[1][i])
              for i in range(8)]
    single, filtered = localize_offline(localizer, corridor_model, frames, sequence=seq,
                                        odometry=[f.pose for f in frames])
    assert all('sequence' in o.stage_ms for o in filtered)
    # the same, by hand, from the fixture's descriptors of these frames (same batches)
    g, patches = corridor_query_descriptors
    by_hand = SequenceLocalizer(localizer)
    for i, frame in enumerate(frames):
        result = localizer.localize_descriptors(g[i], [torch.as_tensor(p[i]) for p in patches])
        answer = by_hand.update(result, frame.stamp, frame.pose)
        assert single[i].ranked == result.retrieval_order
        assert single[i].confidence == pytest.approx(result.confidence)
        assert filtered[i].ranked == answer.retrieval_order
        assert filtered[i].confidence == pytest.approx(answer.confidence)
        assert filtered[i].global_ranked == single[i].global_ranked == result.global_order


@pytest.mark.slow  # describes the 84 RTAB-Map frames: the module's longest test
def test_loop_revisits_at_full_precision(corridor_model):
    """RTAB-Map loop: a map of the first lap (no metric poses: frame i at x = i m)."""
    folder = TEST_DATA / 'rtabmap_loop'
    truth = read_loop_truth(folder / 'gt_loops.csv')
    images = [load_image(folder / 'images' / f'{i}.jpg') for i in range(1, 85)]
    desc = list(describe_batches(corridor_model, images))
    g = torch.cat([d.global_desc for d in desc]).numpy()
    p = torch.cat([d.patches[0] for d in desc]).numpy()
    refs = [Reference(id=f'{i + 1}.jpg', stamp=float(i), x=float(i)) for i in range(40)]
    ref_map = ReferenceMap.empty(corridor_model.config, 'loop').extended(refs, g[:40], [p[:40]])
    fit_map(ref_map, place_radius=2.0)
    localizer = Localizer(ref_map, None)
    queries = list(range(40, 84))
    positives = [{j for j in truth[i] if j < 40} for i in queries]
    single = [localizer.localize_descriptors(torch.from_numpy(g[i]), [torch.from_numpy(p[i])])
              for i in queries]
    seq = SequenceLocalizer(localizer)
    filtered = [seq.update(r, float(i)) for r, i in zip(single, queries)]
    out = {}
    for name, results in (('single', single), ('sequence', filtered)):
        ok = np.array([r.best_index in pos for r, pos in zip(results, positives)])
        conf = [r.confidence for r in results]
        out[name] = (ok.mean(), recall_at_full_precision(conf, ok))
    print(f'loop R@1, recall at 100% precision: {out}')
    assert out['sequence'][0] >= 0.95 and out['single'][0] >= 0.95
    assert out['sequence'][1] >= 0.88 and out['sequence'][1] > out['single'][1] + 0.2
