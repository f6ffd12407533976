# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The bf16-screened mutual nearest neighbours equal the exact ones.

References: a float64 brute force (the exact mutual NN of the stored vectors) and the
straightforward float32 path (:func:`matching.mutual_nn`).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import brute_force_mnn, run_without_native, unit
from patch_netvlad_ros.core import native
from patch_netvlad_ros.core.matching import rerank, screened_mnn
from patch_netvlad_ros.core.matching.mutual_nn import mutual_nn

needs_screen = pytest.mark.skipif(
    not screened_mnn.available(),
    reason=f'no bf16 CPU units or C helper here ({native.unavailable_reason() or "no bf16"})')

#: both screens: oneDNN's bf16 GEMM + the C pass, and the fused AMX kernel where it runs
PATHS = [False, pytest.param(True, marks=[pytest.mark.hardware, pytest.mark.skipif(
    not (screened_mnn.available() and native.amx()), reason='no AMX tiles here')])]


@pytest.mark.hardware
@needs_screen
@pytest.mark.parametrize('fused', PATHS)
@pytest.mark.parametrize('dtype', [np.float16, np.float32])
def test_near_ties_below_bf16_resolution_are_resolved_exactly(rng, dtype, fused):
    # candidates hold perturbed copies of query patches: similarities differ by ~1e-4,
    # far below bf16's 4e-3, so only the exact refinement can order them
    q = unit(rng.standard_normal((50, 96)))
    q = unit(np.concatenate([q, q[:10] + 1e-4 * rng.standard_normal((10, 96))]))  # twins
    db = np.repeat(q[None, :45], 4, 0) + 2e-3 * rng.standard_normal((4, 45, 96))
    db = np.concatenate([db, db[:, :10] + 1e-4 * rng.standard_normal((4, 10, 96))], 1)
    db = unit(db).astype(dtype)
    screened = screened_mnn.ScreenedQuery(torch.from_numpy(q), fused=fused)
    match = screened.match(db).numpy()
    expected = brute_force_mnn(q, db.astype(np.float32))
    np.testing.assert_array_equal(match, expected)
    assert (expected >= 0).sum() >= 100
    assert screened.counts[0] > 0 and screened.counts[1] > 0   # rows and columns refined
    assert screened.fallbacks == 0


@pytest.mark.hardware
@needs_screen
def test_tail_sizes_and_single_candidate(rng):
    # sizes that are not multiples of the 16-lane vectors, and one candidate per block
    for pq, pd, d in ((1, 1, 5), (17, 33, 31), (50, 7, 130)):
        q = unit(rng.standard_normal((pq, d)))
        db = unit(rng.standard_normal((3, pd, d))).astype(np.float16)
        np.testing.assert_array_equal(
            screened_mnn.ScreenedQuery(torch.from_numpy(q)).match(db).numpy(),
            brute_force_mnn(q, db.astype(np.float32)))


@pytest.mark.hardware
@needs_screen
@pytest.mark.parametrize('fused', [False, True])
def test_fused_kernel_handles_partial_tiles(rng, fused):
    # rows and columns that fill no whole 32 x 32 block, one row block, several, and
    # candidates nearly equal to the query (many refinements)
    if fused and not native.amx():
        pytest.skip('no AMX tiles here')
    for pq, pd, d in ((1, 1, 32), (17, 33, 64), (50, 7, 96), (70, 95, 128), (33, 64, 32)):
        q = unit(rng.standard_normal((pq, d)))
        db = unit(q[rng.integers(0, pq, (4, pd))]
                  + 0.05 * rng.standard_normal((4, pd, d))).astype(np.float16)
        screened = screened_mnn.ScreenedQuery(torch.from_numpy(q), fused=fused)
        assert screened.fused == fused
        np.testing.assert_array_equal(screened.match(db).numpy(),
                                      brute_force_mnn(q, db.astype(np.float32)))
    assert screened.match(np.zeros((3, 0, d), np.float16)).shape == (3, 0)   # no patches


@pytest.mark.hardware
@needs_screen
@pytest.mark.parametrize('fused', PATHS)
def test_negative_similarities_and_zero_thresholds(rng, fused):
    # every similarity below zero (the windows are scanned on bf16 bits, where negative
    # values order in reverse): cosines shifted by -2 through a last coordinate; then a
    # row of zeros, whose similarities (all exactly 0) top every column
    x = unit(rng.standard_normal((30, 63)))
    x = unit(np.concatenate([x, x[:10] + 1e-3 * rng.standard_normal((10, 63))]))  # twins
    q = np.concatenate([x, np.ones((40, 1), np.float32)], 1)
    near = unit(x[rng.integers(0, 40, (3, 45))] + 0.2 * rng.standard_normal((3, 45, 63)))
    db = np.concatenate([near, np.full((3, 45, 1), -2.0, np.float32)], 2).astype(np.float16)
    assert (db.astype(np.float32) @ q.T).max() < 0
    screened = screened_mnn.ScreenedQuery(torch.from_numpy(q), fused=fused)
    np.testing.assert_array_equal(screened.match(db).numpy(),
                                  brute_force_mnn(q, db.astype(np.float32)))
    assert screened.counts[0] > 0                      # rows refined in negative windows
    zeros = db.copy()
    zeros[:, 7] = 0
    match = screened.match(zeros).numpy()
    np.testing.assert_array_equal(match, brute_force_mnn(q, zeros.astype(np.float32)))
    assert (match[:, 7] == 0).all()                    # first of its tied columns, mutual
    assert screened.fallbacks == 0


@pytest.mark.hardware
@pytest.mark.skipif(not (screened_mnn.available() and native.amx()), reason='no AMX tiles here')
def test_amx_peak_counts_the_tile_products_of_every_thread():
    # python -m benchmarks.bench's `amx` peak row: 2 x 2 tile products of 16 x 16 x 32 per round
    # and thread, on torch's OpenMP threads (the helper shares torch's libgomp)
    flops = native.library().pnv_amx_peak(1000)
    assert flops == 2 * 4 * 16 * 16 * 32 * 1000 * torch.get_num_threads()


@pytest.mark.hardware
@pytest.mark.skipif(not (screened_mnn.available() and native.amx()), reason='no AMX tiles here')
def test_fused_kernel_and_onednn_share_the_tile_unit(rng):
    # the kernel configures and releases the tiles on torch's own OpenMP threads, where
    # oneDNN runs its AMX GEMMs and convolutions: alternate them and check both each time
    q = unit(rng.standard_normal((70, 64)))
    db = unit(q[rng.integers(0, 70, (3, 50))] + 0.3 * rng.standard_normal((3, 50, 64)))
    expected = brute_force_mnn(q, db.astype(np.float16).astype(np.float32))
    a = torch.from_numpy(rng.standard_normal((300, 512)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((512, 200)).astype(np.float32))
    exact = (a.double() @ b.double()).float()
    screened = screened_mnn.ScreenedQuery(torch.from_numpy(q), fused=True)
    for _ in range(3):
        np.testing.assert_array_equal(screened.match(db.astype(np.float16)).numpy(), expected)
        got = (a.bfloat16() @ b.bfloat16()).float()          # oneDNN, AMX
        torch.testing.assert_close(got, exact, rtol=0.02, atol=0.5)


@pytest.mark.hardware
@needs_screen
def test_fused_kernel_refuses_dimensions_it_cannot_tile():
    q = torch.from_numpy(unit(np.ones((4, 40))))
    with pytest.raises(ValueError, match='divisible by 32 and at most 1024 .got 40.'):
        screened_mnn.ScreenedQuery(q, fused=True)
    assert not screened_mnn.fused_ok(40)
    assert not screened_mnn.fused_ok(2048)       # oneDNN's blocked GEMM is faster there


@pytest.mark.hardware
@needs_screen
@pytest.mark.parametrize('fused', PATHS)
def test_real_corridor_descriptors_match_the_float32_path(corridor_map,
                                                          corridor_query_descriptors, fused):
    g, patches = corridor_query_descriptors
    store = corridor_map.patches[0]                      # float16 memory map [N, P, D]
    refined = rows = 0
    for qi in range(0, g.shape[0], 10):
        q = patches[0][qi]
        cands = np.argsort(-(corridor_map.global_desc @ g[qi].numpy()))[:40]
        screened = screened_mnn.ScreenedQuery(q, fused=fused)
        fast = screened.match(np.asarray(store[cands]))
        plain = rerank.match_candidates(q, store, cands, method='float32')
        torch.testing.assert_close(fast, plain, rtol=0, atol=0)
        np.testing.assert_array_equal(
            fast.numpy(), brute_force_mnn(q.numpy(), np.asarray(store[cands], np.float32)))
        refined += screened.counts[0] + screened.counts[1]
        rows += 2 * len(cands) * q.shape[0]
        assert screened.fallbacks == 0
    print(f'rows + columns refined exactly: {refined / rows:.3f}')
    assert refined / rows < 0.5        # the screen decides most of them


@pytest.mark.hardware
@needs_screen
@pytest.mark.parametrize('fused', PATHS)
def test_nearly_parallel_descriptors_fall_back_to_float32(rng, fused):
    # every vector close to one common direction: the bf16 screen cannot separate them
    common = rng.standard_normal(64)
    q = unit(common + 0.01 * rng.standard_normal((40, 64)))
    db = unit(common + 0.01 * rng.standard_normal((3, 40, 64))).astype(np.float16)
    screened = screened_mnn.ScreenedQuery(torch.from_numpy(q), fused=fused)
    match = screened.match(db)
    assert screened.fallbacks == 3
    torch.testing.assert_close(
        match, mutual_nn(torch.from_numpy(q), torch.from_numpy(db).float()),
        rtol=0, atol=0)


def test_method_names_are_checked():
    with pytest.raises(ValueError, match='unknown matcher method'):
        rerank.resolve_mnn_method('fast', torch.device('cpu'))
    assert rerank.resolve_mnn_method('float32', torch.device('cpu')) == 'float32'
    assert rerank.resolve_mnn_method('auto', torch.device('meta')) == 'float32'


def test_disabled_helper_uses_the_float32_path_and_says_why():
    code = ('from patch_netvlad_ros.core import native; from patch_netvlad_ros.core.matching '
            'import rerank as matching; import torch; '
            'print(matching.resolve_mnn_method("auto", torch.device("cpu"))); '
            'print(native.library()); print(native.unavailable_reason())')
    assert run_without_native(code) == ['float32', 'None', 'disabled by PATCH_NETVLAD_NATIVE=0']


def test_missing_compiler_is_reported(tmp_path):
    # a source checkout without a build: no prebuilt helpers to load (winograd: a helper
    # every CPU runs, so the reason is the compiler's)
    code = ('from patch_netvlad_ros.core import native; '
            'print(native.library("winograd")); print(native.unavailable_reason("winograd"))')
    env = {**os.environ, 'CC': str(tmp_path / 'no-such-cc'), 'PATH': str(tmp_path),
           'PATCH_NETVLAD_CACHE': str(tmp_path / 'cache'),
           'PATCH_NETVLAD_NATIVE_DIR': str(tmp_path / 'no-build')}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.splitlines() == [
        'None', f'no prebuilt winograd library in {tmp_path / "no-build"} (colcon build, or '
        'scripts/setup.sh, builds them) and no C compiler found to build it now (set CC, or '
        'install gcc)']
