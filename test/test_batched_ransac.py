# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Batched RANSAC: exact 4-point fits, fair samples, and OpenCV's inlier counts on real matches.

OpenCV's findHomography (via matching.ransac_inliers) is the reference; the batched
version runs on the CPU here exactly as it would on a GPU (same tensor code, float64
instead of float32).
"""

import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.matching import batched_ransac, rerank
from patch_netvlad_ros.core.matching.geometry import grids_for


def project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:]


def test_four_point_fit_is_exact_and_degenerate_samples_are_rejected(rng):
    h = np.array([[1.1, 0.05, 12.0], [-0.03, 0.95, -7.0], [1e-4, -2e-4, 1.0]])
    src = rng.uniform(0, 640, (50, 4, 2))
    dst = np.stack([project(h, s) for s in src])
    fit, ok = batched_ransac.fit_homographies(torch.from_numpy(src), torch.from_numpy(dst))
    assert ok.all()
    fit = fit.numpy() / fit.numpy()[:, 2:, 2:]
    np.testing.assert_allclose(fit, np.broadcast_to(h, fit.shape), rtol=1e-7, atol=1e-9)
    # three collinear points, and a sample whose orientation flips, are not used
    line = np.array([[[0, 0], [10, 10], [20, 20], [5, 30]]], dtype=np.float64)
    flip = np.array([[[0, 0], [100, 0], [100, 100], [0, 100]]], dtype=np.float64)
    flip_dst = flip.copy()
    flip_dst[0, [2, 3]] = flip_dst[0, [3, 2]]      # a bow tie: orientation not kept
    good = batched_ransac._good_samples
    assert not good(torch.from_numpy(line), torch.from_numpy(line)).item()
    assert not good(torch.from_numpy(flip), torch.from_numpy(flip_dst)).item()
    assert good(torch.from_numpy(flip), torch.from_numpy(flip * 2 + 5)).item()


def test_samples_are_four_distinct_matches_drawn_uniformly():
    counts = torch.tensor([4, 9, 37, 2])
    gen = torch.Generator().manual_seed(1)
    idx = batched_ransac._distinct_samples(counts, 20000, gen)
    for c, n in enumerate(counts.tolist()):
        rows = idx[c].numpy()
        if n < 4:
            continue
        assert (np.sort(rows, 1)[:, 1:] != np.sort(rows, 1)[:, :-1]).all()
        assert rows.min() == 0 and rows.max() == n - 1
        freq = np.bincount(rows.ravel(), minlength=n) / rows.size
        np.testing.assert_allclose(freq, 1.0 / n, rtol=0.1)   # 80k draws per row


def test_recovers_a_known_homography_among_outliers(rng):
    h = np.array([[0.9, 0.1, 30.0], [-0.05, 1.05, 10.0], [5e-5, 1e-4, 1.0]])
    src = rng.uniform(0, 640, (200, 2))
    dst = project(h, src) + rng.normal(0, 2.0, (200, 2))
    outlier = rng.random(200) < 0.6                  # 60% outliers, far away
    dst[outlier] = rng.uniform(0, 640, (outlier.sum(), 2))
    truth = np.linalg.norm(project(h, src) - dst, axis=1) <= 24.0
    counts, mask = batched_ransac.ransac_inlier_counts(
        torch.from_numpy(src)[None], torch.from_numpy(dst)[None],
        torch.ones(1, 200, dtype=torch.bool), threshold=24.0)
    assert counts.item() == mask.sum().item()
    assert (mask[0].numpy() == truth).mean() > 0.97
    assert counts.item() >= truth.sum() - 3


def test_packing_keeps_each_candidate_s_matches_in_patch_order():
    match = torch.tensor([[-1, 3, -1, 0], [2, -1, -1, -1], [-1, -1, -1, -1]])
    centres = torch.tensor([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    src, dst, valid, order = batched_ransac.pack_matches(match, centres)
    assert valid.tolist() == [[True, True], [True, False], [False, False]]
    assert order[0].tolist() == [1, 3]
    assert src[0].tolist() == [[1.0, 10.0], [3.0, 30.0]]
    assert dst[0].tolist() == [[3.0, 30.0], [0.0, 0.0]]
    assert src[1, 0].tolist() == [0.0, 0.0] and dst[1, 0].tolist() == [2.0, 20.0]
    with pytest.raises(ValueError, match='packed first'):
        batched_ransac.ransac_inlier_counts(src, dst, valid.flip(1), 24.0)


DEVICES = ['cpu', pytest.param('cuda', marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device on this machine')])]


@pytest.mark.parametrize('device', DEVICES)
def test_inlier_counts_agree_with_opencv_on_real_matches(corridor_map,
                                                         corridor_query_descriptors, device):
    """Tolerance: at most max(3, 10%) below OpenCV's count and 30% above it; at least as
    many inliers for 90% of the candidates.

    OpenCV stops after its adaptive iteration count (about 80 samples at half inliers),
    the batched version scores 2000 samples, so it finds the largest consensus set more
    often: its counts are mostly equal or higher.
    """
    g, patches = corridor_query_descriptors
    grid = grids_for(corridor_map.config)[0]
    threshold = rerank.RANSAC_CELLS * 16 * grid.stride
    ours, theirs = [], []
    for qi in range(0, g.shape[0], 10):
        cands = np.argsort(-(corridor_map.global_desc @ g[qi].numpy()))[:20]
        match = rerank.match_candidates(patches[0][qi], corridor_map.patches[0], cands)
        src, dst, valid, _ = batched_ransac.pack_matches(
            match.to(device), torch.tensor(grid.centres, device=device))
        counts, mask = batched_ransac.ransac_inlier_counts(src, dst, valid, threshold)
        assert counts.device.type == device
        assert (mask.sum(1) == counts).all()
        ours += counts.tolist()
        for row in match.numpy():
            db_idx = np.flatnonzero(row >= 0)
            theirs.append(int(rerank.ransac_inliers(grid.centres[db_idx],
                                                    grid.centres[row[db_idx]],
                                                    threshold).sum()))
    ours, theirs = np.array(ours), np.array(theirs)
    print(f'{len(ours)} candidates: equal {np.mean(ours == theirs):.2f}, ours higher '
          f'{np.mean(ours > theirs):.2f}, ours lower {np.mean(ours < theirs):.2f}, '
          f'most below {np.max(theirs - ours)}, most above {np.max(ours - theirs)} '
          f'({np.max((ours - theirs) / np.maximum(theirs, 1)):.2f} of the OpenCV count; '
          f'median {int(np.median(theirs))} inliers)')
    assert (theirs - ours <= np.maximum(3, 0.1 * theirs)).all()
    assert (ours - theirs <= 0.3 * theirs).all()
    assert np.mean(ours >= theirs) >= 0.9


def test_batched_scores_plug_into_the_rerank(corridor_map, corridor_query_descriptors):
    g, patches = corridor_query_descriptors
    cfg = corridor_map.config.override(matcher='ransac')
    cands = np.argsort(-(corridor_map.global_desc @ g[0].numpy()))[:10]
    match = rerank.match_candidates(patches[0][0], corridor_map.patches[0], cands)
    grid = grids_for(cfg)[0]
    scores = rerank.ransac_scores(match, grid, method='batched')
    src, dst, valid, _ = batched_ransac.pack_matches(
        match, torch.tensor(grid.centres))
    counts, _ = batched_ransac.ransac_inlier_counts(src, dst, valid,
                                                    rerank.RANSAC_CELLS * 16 * grid.stride)
    np.testing.assert_array_equal(scores.numpy(), counts.numpy() / grid.num_patches)
    result = rerank.rerank([patches[0][0]], corridor_map.patches, cands, cfg,
                           ransac_method='batched')
    np.testing.assert_array_equal(result.per_scale[:, 0], scores.numpy())
    assert rerank.resolve_ransac_method('auto', torch.device('cpu')) == 'opencv'
    assert rerank.resolve_ransac_method('auto', torch.device('cuda')) == 'batched'
    with pytest.raises(ValueError, match='unknown RANSAC method'):
        rerank.resolve_ransac_method('fast', torch.device('cpu'))
