# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The integer-screened (int8 and int16) mutual nearest neighbours equal the exact ones.

References: a float64 brute force (the exact mutual NN of the stored vectors) and the
straightforward float32 path (:func:`matching.mutual_nn`).
"""

import numpy as np
import pytest
import torch

from conftest import brute_force_mnn, run_without_native, unit
from patch_netvlad_ros.core import native
from patch_netvlad_ros.core.matching import int_screen, rerank
from patch_netvlad_ros.core.matching.mutual_nn import mutual_nn

pytestmark = [pytest.mark.hardware, pytest.mark.skipif(
    not int_screen.available(),
    reason=f'integer screen not built here: {native.unavailable_reason("int_mnn")}')]


@pytest.mark.parametrize('bits', [8, 16])
@pytest.mark.parametrize('dtype, d', [(np.float16, 96), (np.float32, 96), (np.float16, 101)])
def test_near_ties_below_the_screen_resolution_are_resolved_exactly(rng, dtype, d, bits):
    # twins 1e-4 apart: their similarities differ by ~1e-4, inside the windows of both
    # widths at these dims (int16: 2E ~ 2.5e-4; int8: ~0.05; float16 twins may even tie
    # exactly), so only the refinement can order them (d = 101: the dot products' 5-element
    # tail after six 16-element steps)
    q = unit(rng.standard_normal((50, d)))
    q = unit(np.concatenate([q, q[:10] + 1e-4 * rng.standard_normal((10, d))]))
    db = np.repeat(q[None, :45], 4, 0) + 2e-3 * rng.standard_normal((4, 45, d))
    db = np.concatenate([db, db[:, :10] + 1e-4 * rng.standard_normal((4, 10, d))], 1)
    db = unit(db).astype(dtype)
    screen = int_screen.IntQuery(torch.from_numpy(q), bits)
    match = screen.match(db).numpy()
    expected = brute_force_mnn(q, db.astype(np.float32))
    np.testing.assert_array_equal(match, expected)
    assert (expected >= 0).sum() >= 100
    assert screen.counts[0] > 0 and screen.counts[1] > 0 and screen.counts[2] > 0
    assert screen.fallbacks == 0


@pytest.mark.parametrize('bits', [8, 16])
def test_exact_ties_go_to_float64_and_keep_the_lowest_index(rng, bits):
    # duplicated query rows and candidate rows: equal similarities, which the float32
    # pass cannot order, so float64 decides (first index on ties, as torch.argmax)
    base = unit(rng.standard_normal((20, 64)))
    q = np.concatenate([base, base[:8]])                       # rows 20..27 repeat 0..7
    db = unit(base[None, :12] + 0.05 * rng.standard_normal((3, 12, 64)))
    db = np.concatenate([db, db[:, :4]], 1).astype(np.float16)  # rows 12..15 repeat 0..3
    screen = int_screen.IntQuery(torch.from_numpy(q), bits)
    match = screen.match(db).numpy()
    np.testing.assert_array_equal(match, brute_force_mnn(q, db.astype(np.float32)))
    assert screen.counts[3] > 0                                # float64 near-tie path ran
    assert not np.isin(match, np.arange(20, 28)).any()         # later twins never win
    assert (match[:, 12:] == -1).all()                         # nor do the candidate's


@pytest.mark.parametrize('bits', [8, 16])
def test_tail_sizes_single_candidate_and_empty_sets(rng, bits):
    # sizes that are not multiples of the 8 lanes, 16-column panels, 4-row tiles or
    # 32-byte steps; one candidate; no patches on either side
    for pq, pd, d in ((1, 1, 5), (17, 33, 31), (50, 7, 130), (16, 4, 32), (3, 5, 1)):
        q = unit(rng.standard_normal((pq, d)))
        db = unit(rng.standard_normal((3, pd, d))).astype(np.float16)
        np.testing.assert_array_equal(int_screen.IntQuery(torch.from_numpy(q), bits).match(db),
                                      brute_force_mnn(q, db.astype(np.float32)))
        one = int_screen.IntQuery(torch.from_numpy(q), bits).match(db[:1])
        np.testing.assert_array_equal(one, brute_force_mnn(q, db[:1].astype(np.float32)))
    screen = int_screen.IntQuery(torch.from_numpy(unit(rng.standard_normal((5, 8)))), bits)
    assert screen.match(np.zeros((3, 0, 8), np.float16)).shape == (3, 0)
    empty = int_screen.IntQuery(torch.zeros(0, 8), bits)
    assert (empty.match(unit(rng.standard_normal((2, 6, 8)))).numpy() == -1).all()
    with pytest.raises(ValueError, match=r'\[Pq, D\] with D >= 1; got shape \(4, 0\)'):
        int_screen.IntQuery(torch.zeros(4, 0), bits)


@pytest.mark.parametrize('bits', [8, 16])
def test_long_descriptors_are_blocked_over_the_dimension(rng, bits):
    # 4096 dims (the performance preset) with 300 query rows: the GEMM runs the dimension
    # in blocks of the query panels, accumulating in int32
    q = unit(rng.standard_normal((300, 4096)))
    db = unit(q[rng.integers(0, 300, (2, 60))] + 0.5 * rng.standard_normal((2, 60, 4096)))
    db = db.astype(np.float16)
    screen = int_screen.IntQuery(torch.from_numpy(q), bits)
    match = screen.match(db).numpy()
    np.testing.assert_array_equal(match, brute_force_mnn(q, db.astype(np.float32)))
    assert (match >= 0).sum() >= 60


@pytest.mark.parametrize('bits', [8, 16])
@pytest.mark.parametrize('d', [1, 7, 512, 4096, 16384])
def test_flat_rows_cannot_overflow_the_int32_sums(rng, d, bits):
    # rows whose entries all have the same magnitude (+-1/sqrt(d)): the smallest max|x| a
    # unit row can have, so int16's norm cap sets the scale and a row rounds to
    # |h| ~ 46340; the dot product of a row with itself is then |h|^2, within 2^31 by a
    # hair. An int32 overflow would wrap it negative and lose every match. (int8's sums
    # stay below 127 * 63 * d.)
    signs = np.where(rng.random((min(d + 1, 40), d)) < 0.5, -1.0, 1.0)
    q = unit(signs)
    db = q[None, rng.permutation(len(q))].astype(np.float16)
    screen = int_screen.IntQuery(torch.from_numpy(q), bits)
    match = screen.match(db).numpy()
    np.testing.assert_array_equal(match, brute_force_mnn(q, db.astype(np.float32)))
    if d >= 64:     # distinct sign patterns: each candidate row matches its own copy
        assert (match[0] >= 0).all()
        np.testing.assert_array_equal(np.sign(q[match[0]]), np.sign(db[0].astype(np.float32)))


@pytest.mark.parametrize('bits', [8, 16])
def test_negative_similarities_and_zero_rows(rng, bits):
    # every similarity below zero (cosines shifted by -1 through 16 extra coordinates of
    # +-1/4, small enough not to coarsen the rounding), so the integer sums are negative
    # too; then a candidate row of zeros, whose similarities (all exactly 0) top every column
    x = unit(rng.standard_normal((200, 63)))
    q = np.concatenate([x, np.full((200, 16), 0.25, np.float32)], 1)
    near = unit(x[rng.integers(0, 200, (3, 150))] + 0.3 * rng.standard_normal((3, 150, 63)))
    db = np.concatenate([near, np.full((3, 150, 16), -0.25, np.float32)], 2).astype(np.float16)
    assert (db.astype(np.float32) @ q.T).max() < 0
    screen = int_screen.IntQuery(torch.from_numpy(q), bits)
    np.testing.assert_array_equal(screen.match(db), brute_force_mnn(q, db.astype(np.float32)))
    assert screen.counts[0] > 0 and screen.fallbacks == 0
    zeros = db.copy()
    zeros[:, 7] = 0
    match = screen.match(zeros).numpy()
    np.testing.assert_array_equal(match, brute_force_mnn(q, zeros.astype(np.float32)))
    assert (match[:, 7] == 0).all()
    assert screen.fallbacks == 0


@pytest.mark.parametrize('bits', [8, 16])
def test_real_corridor_descriptors_match_the_float32_path(corridor_map,
                                                          corridor_query_descriptors, bits):
    g, patches = corridor_query_descriptors
    store = corridor_map.patches[0]                      # float16 memory map [N, P, D]
    entries = dots = fallbacks = candidates = 0
    for qi in range(0, g.shape[0], 10):
        q = patches[0][qi]
        cands = np.argsort(-(corridor_map.global_desc @ g[qi].numpy()))[:40]
        screen = int_screen.IntQuery(q, bits)
        fast = screen.match(store, cands)                # read in place from the map
        plain = rerank.match_candidates(q, store, cands, method='float32')
        torch.testing.assert_close(fast, plain, rtol=0, atol=0)
        np.testing.assert_array_equal(
            fast.numpy(), brute_force_mnn(q.numpy(), np.asarray(store[cands], np.float32)))
        entries += len(cands) * q.shape[0] * store.shape[1]
        dots += screen.counts[2] + screen.counts[3]
        fallbacks += screen.fallbacks
        candidates += len(cands)
    print(f'dot products per screened similarity: {dots / entries:.3f}, '
          f'{fallbacks} of {candidates} candidates on the float32 path')
    # the screen leaves a small part to refine (these 176-patch sets at 320x240 are its
    # harder case: 936 patches at 640x480 need about 4%) and keeps most candidates
    assert dots / entries < int_screen.MAX_EXACT_FRACTION
    assert fallbacks < candidates / 4


@pytest.mark.parametrize('bits', [8, 16])
def test_nearly_parallel_descriptors_fall_back_to_float32(rng, bits):
    # every vector within 1e-3 of one common direction: their similarities differ by about
    # 1e-6, far inside the windows of both widths, so every row would need dot products
    common = rng.standard_normal(64)
    q = unit(common + 1e-3 * rng.standard_normal((40, 64)))
    db = unit(common + 1e-3 * rng.standard_normal((3, 40, 64))).astype(np.float16)
    screen = int_screen.IntQuery(torch.from_numpy(q), bits)
    match = screen.match(db)
    assert screen.fallbacks == 3
    torch.testing.assert_close(
        match, mutual_nn(torch.from_numpy(q), torch.from_numpy(db).float()),
        rtol=0, atol=0)


def test_auto_picks_the_integer_screen_where_it_is_preferred(rng):
    expected = ('screened' if rerank.screened_mnn.available()
                else 'integer' if int_screen.preferred() else 'float32')
    assert rerank.resolve_mnn_method('auto', torch.device('cpu')) == expected
    # every preset's dimension, the performance preset's 4096 included
    for dim in (128, 512, 4096):
        assert rerank.resolve_mnn_method('auto', torch.device('cpu'), dim) == expected
    assert rerank.resolve_mnn_method('integer', torch.device('cpu')) == 'integer'
    # the width follows the dimension: int8 up to 1024 dims, int16 above
    assert [int_screen.bits_for(d) for d in (128, 512, 1024, 1025, 4096)] == [8, 8, 8, 16, 16]
    assert int_screen.IntQuery(torch.ones(3, 4096) / 64).bits == 16
    with pytest.raises(ValueError, match='bits must be 8 or 16; got 12'):
        int_screen.IntQuery(torch.ones(3, 8), bits=12)
    with pytest.raises(ValueError, match="unknown matcher method 'int8'"):
        rerank.resolve_mnn_method('int8', torch.device('cpu'))
    q = torch.from_numpy(unit(rng.standard_normal((20, 32))))
    store = unit(rng.standard_normal((5, 25, 32))).astype(np.float16)
    np.testing.assert_array_equal(
        rerank.match_candidates(q, store, [3, 0, 4], method='integer'),
        brute_force_mnn(q.numpy(), store[[3, 0, 4]].astype(np.float32)))


def test_disabled_helper_is_unavailable_and_says_why():
    code = ('from patch_netvlad_ros.core import native; from patch_netvlad_ros.core.matching '
            'import int_screen; import torch; '
            'print(int_screen.available(), int_screen.preferred()); '
            'print(native.unavailable_reason("int_mnn"))\n'
            'try:\n    int_screen.IntQuery(torch.zeros(2, 4))\n'
            'except RuntimeError as e:\n    print(e)')
    assert run_without_native(code) == [
        'False False', 'disabled by PATCH_NETVLAD_NATIVE=0',
        'integer screen unavailable: disabled by PATCH_NETVLAD_NATIVE=0']
