# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""How both C screens read the candidates' patches from a store (matching/candidate_blocks.py).

One test for every screen that reads candidates through candidate_blocks: the integer screen
(AVX2) and the bf16 screen (AVX-512 bf16: oneDNN GEMM + C pass, or the fused AMX kernel);
each runs where its CPU units are.
"""

import numpy as np
import pytest
import torch

from conftest import brute_force_mnn, unit
from patch_netvlad_ros.core import native
from patch_netvlad_ros.core.matching import int_screen, screened_mnn


def _int8(q: torch.Tensor):
    return int_screen.IntQuery(q, bits=8)


def _int16(q: torch.Tensor):
    return int_screen.IntQuery(q, bits=16)


def _bf16(fused: bool):
    return lambda q: screened_mnn.ScreenedQuery(q, fused=fused)


SCREENS = [
    *[pytest.param(make, id=make.__name__[1:], marks=pytest.mark.skipif(
        not int_screen.available(),
        reason=f'integer screen not built here: {native.unavailable_reason("int_mnn")}'))
      for make in (_int8, _int16)],
    pytest.param(_bf16(False), id='bf16', marks=pytest.mark.skipif(
        not screened_mnn.available(), reason='no bf16 CPU units or C helper here')),
    pytest.param(_bf16(True), id='bf16-fused-amx', marks=pytest.mark.skipif(
        not (screened_mnn.available() and native.amx()), reason='no AMX tiles here')),
]


@pytest.mark.hardware  # every screen needs a CPU feature (AVX2 + F16C, bf16, AMX)
@pytest.mark.parametrize('make_screen', SCREENS)
def test_candidates_are_read_in_place_by_index(rng, tmp_path, make_screen):
    # a float16 memory map read by index (unsorted, repeated, negative) without a gather,
    # and the gathered paths for a torch store and a dtype the helpers do not read
    q = unit(rng.standard_normal((30, 64)))
    data = unit(q[None] + 0.7 * rng.standard_normal((6, 30, 64))).astype(np.float16)
    store = np.memmap(tmp_path / 'patches.f16', dtype=np.float16, mode='w+', shape=data.shape)
    store[:] = data
    indices = np.array([4, 1, 4, -1, 0])
    expected = brute_force_mnn(q, data[indices].astype(np.float32))
    screen = make_screen(torch.from_numpy(q))
    np.testing.assert_array_equal(screen.match(store, indices).numpy(), expected)
    np.testing.assert_array_equal(screen.match(torch.from_numpy(data), indices).numpy(),
                                  expected)
    np.testing.assert_array_equal(screen.match(data.astype(np.float64), indices).numpy(),
                                  expected)
    assert screen.match(store, []).shape == (0, 30)
    with pytest.raises(IndexError, match=r'candidate indices must lie in \[0, 6\)'):
        screen.match(store, [0, 6])
    with pytest.raises(ValueError, match='candidate dimension 32 != query dimension 64'):
        screen.match(np.zeros((2, 3, 32), np.float16))
