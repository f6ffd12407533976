# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Mutual nearest neighbours, spatial and RANSAC scores, fusion: exact small cases."""

import math

import cv2
import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.matching import rerank
from patch_netvlad_ros.core.matching.geometry import patch_grid
from patch_netvlad_ros.core.matching.mutual_nn import mutual_nn


def unit(rng, *shape):
    v = rng.normal(size=shape)
    return torch.from_numpy(v / np.linalg.norm(v, axis=-1, keepdims=True)).float()


def test_mutual_nn_equals_brute_force(rng):
    q = unit(rng, 40, 16)
    db = unit(rng, 3, 35, 16)
    got = mutual_nn(q, db).numpy()
    for c in range(3):
        dist = np.linalg.norm(db[c].numpy()[:, None] - q.numpy()[None], axis=2)  # [Pd, Pq]
        for j in range(35):
            i = dist[j].argmin()
            want = i if dist[:, i].argmin() == j else -1
            assert got[c, j] == want


def test_match_candidates_reads_chunks_of_a_float16_store(rng):
    q = unit(rng, 30, 8)
    store = unit(rng, 12, 25, 8).numpy().astype(np.float16)
    idx = [11, 0, 5, 5, 7]
    chunked = rerank.match_candidates(q, store, idx, chunk_bytes=1)   # one per chunk
    whole = mutual_nn(q, torch.from_numpy(store[idx]).float())
    assert torch.equal(chunked, whole)


def test_spatial_score_hand_computed():
    grid = patch_grid(3, 4, 1, 1)           # 3 x 4 patches of size 1: x_max 3, y_max 2
    assert (grid.x_max, grid.y_max, grid.num_patches) == (3, 2, 12)

    def idx(col, row):
        return row * 4 + col

    match = torch.full((1, 12), -1)
    # db patch (col,row) <- query patch: offsets db - query = (-1,0), (-1,0), (0,0)
    match[0, idx(0, 0)] = idx(1, 0)
    match[0, idx(2, 1)] = idx(3, 1)
    match[0, idx(1, 2)] = idx(1, 2)
    # mean x offset -2/3: |dev_x| = 1/3, 1/3, 2/3; dev_y = 0
    want = ((3 - 1 / 3) ** 2 * 2 + (3 - 2 / 3) ** 2 + 3 * 2 ** 2) / 12
    assert rerank.spatial_scores(match, grid).item() == pytest.approx(want, abs=1e-12)
    assert want == pytest.approx(285 / 9 / 12)


def test_spatial_score_of_no_match_is_zero_and_max_is_reachable():
    grid = patch_grid(5, 6, 2, 1)
    none = torch.full((1, grid.num_patches), -1)
    identity = torch.arange(grid.num_patches)[None]
    assert rerank.spatial_scores(none, grid).item() == 0.0
    # every patch matched to itself: zero deviation, each term is x_max^2 + y_max^2
    assert rerank.spatial_scores(identity, grid).item() == pytest.approx(
        rerank.spatial_score_max(grid))


def test_fusion_hand_computed():
    scores = torch.tensor([[1.0, 2.0, 7.0], [3.0, 4.0, 7.0], [5.0, 9.0, 7.0]])
    fused = rerank.fuse_scores(scores, (0.25, 0.5, 0.25)).numpy()
    z1 = np.array([-2.0, 0.0, 2.0]) / math.sqrt(8 / 3)       # mean 3, population var 8/3
    z2 = np.array([-3.0, -1.0, 4.0]) / math.sqrt(26 / 3)     # mean 5, population var 26/3
    np.testing.assert_allclose(fused, 0.25 * z1 + 0.5 * z2, atol=1e-12)  # constant col: 0


def test_ransac_recovers_known_homography_with_outliers(rng):
    h_true = np.array([[1.05, 0.04, 12.0], [-0.03, 0.98, -7.0], [2e-5, -1e-5, 1.0]])
    src = rng.uniform(0, 640, size=(200, 2))
    dst_h = np.c_[src, np.ones(200)] @ h_true.T
    dst = dst_h[:, :2] / dst_h[:, 2:]
    outliers = rng.choice(200, 60, replace=False)
    dst[outliers] += rng.uniform(60, 200, size=(60, 2)) * rng.choice([-1, 1], size=(60, 2))
    inliers = rerank.ransac_inliers(src, dst, threshold=24.0)
    expected = np.ones(200, bool)
    expected[outliers] = False
    assert np.array_equal(inliers, expected)
    h_est, _ = cv2.findHomography(src[inliers].astype(np.float32),
                                  dst[inliers].astype(np.float32), 0)
    probe = np.array([[100.0, 100.0, 1.0], [500.0, 400.0, 1.0]])
    est = probe @ h_est.T
    true = probe @ h_true.T
    np.testing.assert_allclose(est[:, :2] / est[:, 2:], true[:, :2] / true[:, 2:], atol=0.05)


def test_ransac_score_is_inliers_over_patch_count(rng):
    grid = patch_grid(30, 40, 5, 1)                   # 26 x 36 patches at 640x480
    cols, rows = grid.positions[:, 0], grid.positions[:, 1]
    # a shift of +2 columns and +1 row (32 px, 16 px): a pure translation homography
    ok = (cols + 2 < grid.cols) & (rows + 1 < grid.rows)
    db_idx = np.flatnonzero(ok)[:300]
    match = torch.full((1, grid.num_patches), -1)
    match[0, db_idx] = torch.from_numpy(db_idx + 1 * grid.cols + 2)
    # 40 outliers: matched to a patch at least 10 cells (160 px) away in x
    spare = np.setdiff1d(np.arange(grid.num_patches), db_idx)
    bad = rng.choice(spare[cols[spare] < 20], 40, replace=False)
    match[0, bad] = torch.from_numpy(bad + 10)
    score = rerank.ransac_scores(match, grid).item()
    assert score == pytest.approx(300 / grid.num_patches)
    assert rerank.ransac_scores(torch.full((1, grid.num_patches), -1), grid).item() == 0


def test_threaded_ransac_scores_equal_one_call_per_candidate(rng):
    # many noisy candidates scored in parallel threads: each score must be exactly what a
    # lone findHomography call gives (OpenCV seeds every call, threads change nothing)
    grid = patch_grid(30, 40, 5, 1)
    match = torch.full((24, grid.num_patches), -1)
    for c in range(24):
        db_idx = rng.choice(grid.num_patches, 200, replace=False)
        match[c, db_idx] = torch.from_numpy(rng.choice(grid.num_patches, 200))
    threshold = rerank.RANSAC_CELLS * 16 * grid.stride
    expected = []
    for row in match.numpy():
        db_idx = np.flatnonzero(row >= 0)
        inliers = rerank.ransac_inliers(grid.centres[db_idx], grid.centres[row[db_idx]],
                                        threshold)
        expected.append(inliers.sum() / grid.num_patches)
    for _ in range(2):
        np.testing.assert_array_equal(rerank.ransac_scores(match, grid).numpy(), expected)
    assert rerank.ransac_scores(match[:0], grid).shape == (0,)


def test_rerank_orders_by_fused_score(rng):
    from patch_netvlad_ros.core.config import get_config
    cfg = get_config('speed', image_height=16 * 8, image_width=16 * 10, num_pcs=32)
    p = cfg.num_patches(0)
    q = unit(rng, p, 32)
    # candidate 2 is the query itself, candidate 0 a copy with half its patches replaced,
    # candidate 1 unrelated
    noisy = q.clone()
    noisy[::2] = unit(rng, len(noisy[::2]), 32)
    store = torch.stack([noisy, unit(rng, p, 32), q])
    result = rerank.rerank([q], [store], [0, 1, 2], cfg)
    assert result.quality[2] > result.quality[0] > result.quality[1]
    assert list(result.order) == [2, 0, 1]
    assert result.quality[2] == pytest.approx(1.0)
    assert np.all((result.quality >= 0) & (result.quality <= 1))
