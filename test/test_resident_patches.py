# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Candidates' patches kept on the rerank device (ResidentPatches) and the localizer on it.

The cache is device-agnostic torch code: here it runs with its slots on the CPU (the
same code path a GPU takes; this machine has none) and, where CUDA is available, on the
GPU as well (those cases are skipped without one).
"""

from typing import List, Sequence

import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.matching import resident_patches
from patch_netvlad_ros.core.matching.resident_patches import (capacity_for, plan_capacity,
                                                              reference_bytes, ResidentPatches)

DEVICES = ['cpu', pytest.param('cuda', marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device on this machine')])]
SHAPES = ((6, 8), (4, 8))                   # two scales: [P_s, Dp]
PER_REF = 2 * (6 * 8 + 4 * 8)               # float16 bytes of one reference


def make_stores(rng, n: int = 9) -> List[np.ndarray]:
    return [rng.standard_normal((n,) + s).astype(np.float16) for s in SHAPES]


def check_rows(cache: ResidentPatches, stores, refs: Sequence[int], rows: np.ndarray) -> None:
    """The slots at rows hold exactly (bit for bit) the stores' references refs."""
    assert len(rows) == len(refs)
    for store, slots in zip(stores, cache.slots):
        got = slots[torch.as_tensor(rows, device=slots.device)].cpu().numpy()
        np.testing.assert_array_equal(got, store[np.asarray(refs)])


class LRUModel:
    """The eviction rule stated plainly: a list, least recently used first."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.order = capacity, []

    def fetch(self, refs: Sequence[int]) -> int:
        wanted = list(dict.fromkeys(refs))
        missing = [r for r in wanted if r not in self.order]
        self.order = [r for r in self.order if r not in wanted] + \
            [r for r in wanted if r in self.order] + missing
        del self.order[:max(0, len(self.order) - self.capacity)]
        return len(missing)


def test_sizes():
    """Bytes per reference and capacities follow the shapes (float16)."""
    stores = make_stores(np.random.default_rng(0))
    assert reference_bytes(stores) == PER_REF
    assert capacity_for(stores, 5 * PER_REF + PER_REF - 1) == 5
    assert capacity_for(stores, 100 * PER_REF) == 9            # never more than the map


@pytest.mark.parametrize('device', DEVICES)
def test_whole_map_is_copied_once(rng, device):
    """By default every reference is copied at construction; queries move nothing."""
    stores = make_stores(rng)
    cache = ResidentPatches(stores, device)
    assert (cache.capacity, len(cache), cache.nbytes) == (9, 9, 9 * PER_REF)
    assert cache.moved_bytes == 9 * PER_REF
    assert all(s.dtype == torch.float16 and s.device.type == device for s in cache.slots)
    for refs in ([8, 0, 3, 3], list(range(9))[::-1], [4]):
        rows, moved = cache.fetch(refs)
        assert moved == 0
        check_rows(cache, stores, refs, rows)
    assert cache.moved_bytes == 9 * PER_REF and cache.misses == 9


@pytest.mark.parametrize('device', DEVICES)
def test_least_recently_used_is_evicted(rng, device):
    """A cache of 3: hits move nothing, a miss replaces the least recently used."""
    stores = make_stores(rng)
    cache = ResidentPatches(stores, device, capacity=3)
    assert cache.moved_bytes == 0 and len(cache) == 0
    steps = [([0, 1, 2], 3),      # order 0 1 2
             ([1, 3], 1),         # 1 is used again: 0 is the oldest and goes; order 2 1 3
             ([0], 1),            # 2 goes; order 1 3 0
             ([3, 0, 1], 0),      # all resident
             ([2, 2], 1)]         # 3 was used before 0 and 1 in the last step; 3 goes
    for refs, misses in steps:
        rows, moved = cache.fetch(refs)
        assert moved == misses * PER_REF, refs
        check_rows(cache, stores, refs, rows)
        assert len(set(rows.tolist())) == len(set(refs)) and rows.max() < 3
    assert set(cache._slot_of) == {0, 1, 2}
    assert (cache.hits, cache.misses) == (3 + 1, 6)
    assert cache.moved_bytes == 6 * PER_REF


def test_random_fetches_follow_the_lru_rule(rng, monkeypatch):
    """300 random fetches (duplicates included; copies staged two references at a time):
    the bytes moved equal a plain LRU list's misses, and the rows hold the references."""
    monkeypatch.setattr(resident_patches, 'STAGING_BYTES', 2 * PER_REF)
    stores = make_stores(rng, n=12)
    cache, model = ResidentPatches(stores, 'cpu', capacity=5), LRUModel(5)
    for _ in range(300):
        refs = rng.integers(0, 12, size=rng.integers(1, 6)).tolist()
        if len(set(refs)) > 5:
            continue
        rows, moved = cache.fetch(refs)
        assert moved == model.fetch(refs) * PER_REF
        check_rows(cache, stores, refs, rows)
        assert list(cache._slot_of) == model.order


def test_refusals_name_the_problem_and_change_nothing(rng):
    """Bad sizes and indices are refused; a refused fetch leaves the cache as it was."""
    stores = make_stores(rng)
    with pytest.raises(MapError, match='holds no references'):
        ResidentPatches([s[:0] for s in stores], 'cpu')
    with pytest.raises(MapError, match='at least one reference'):
        ResidentPatches(stores, 'cpu', capacity=0)
    cache = ResidentPatches(stores, 'cpu', capacity=3)
    rows, _ = cache.fetch([5, 6])
    with pytest.raises(MapError, match='4 candidates do not fit in a device cache of 3 '
                       'references.*raise the cache size or lower top_k'):
        cache.fetch([0, 1, 2, 5])
    with pytest.raises(IndexError, match=r'must lie in \[0, 9\); got 0..9'):
        cache.fetch([0, 9])
    with pytest.raises(IndexError, match='got -1..2'):
        cache.fetch([-1, 2])
    assert (cache.hits, cache.misses, cache.moved_bytes) == (0, 2, 2 * PER_REF)
    again, moved = cache.fetch([5, 6])
    assert moved == 0 and again.tolist() == rows.tolist()


def test_plan_capacity_names_the_sizes(rng):
    """The whole map by default, else what fits; too small or too big is refused."""
    stores = make_stores(rng)
    assert plan_capacity(stores, need=4) == 9
    assert plan_capacity(stores, 4, budget_bytes=5 * PER_REF) == 5
    assert plan_capacity(stores, 4, free_bytes=10 * PER_REF) == 9       # 90% of free
    with pytest.raises(MapError, match='holds 3 references.*fewer than the top-4.*or lower '
                       'top_k'):
        plan_capacity(stores, 4, budget_bytes=3 * PER_REF)
    with pytest.raises(MapError, match=r'the whole map \(9 references\) needs .* MiB free: '
                       'set a cache size'):
        plan_capacity(stores, 4, free_bytes=9 * PER_REF)
    with pytest.raises(MapError, match=r'the device cache \(5 references\)'):
        plan_capacity(stores, 4, budget_bytes=5 * PER_REF, free_bytes=5 * PER_REF)


def candidate_sets(results) -> List[set]:
    return [{c.index for c in r.candidates} for r in results]


def test_localizer_with_a_device_cache_answers_as_reading_in_place(
        corridor_map, corridor_model, corridor_query_descriptors):
    """The corridor's 111 queries, top-20: a 40-reference cache (slots on the CPU) gives
    the same ranks, scores and confidences as the memory-mapped map, and copies only the
    candidates it does not hold: at least those never seen before, at most those that were
    not the previous query's candidates."""
    g, patches = corridor_query_descriptors
    plain = Localizer(corridor_map, corridor_model, top_k=20)
    cached = Localizer(corridor_map, corridor_model, top_k=20, device='cpu',
                       cache_references=40)
    assert plain.resident is None and cached.resident.capacity == 40
    per = reference_bytes(corridor_map.patches)
    want, got = [], []
    for i in range(len(g)):
        want.append(plain.localize_descriptors(g[i], [p[i] for p in patches]))
        got.append(cached.localize_descriptors(g[i], [p[i] for p in patches]))
    for a, b in zip(want, got):
        assert a.retrieval_order == b.retrieval_order
        assert [c.fused_score for c in a.candidates] == [c.fused_score for c in b.candidates]
        assert a.confidence == b.confidence
        assert a.candidate_bytes == b.candidate_bytes == 20 * per and a.moved_bytes == 0
    seen: set = set()
    previous: set = set()
    for now, result in zip(candidate_sets(got), got):
        assert result.moved_bytes % per == 0
        assert len(now - seen) <= result.moved_bytes // per <= len(now - previous)
        seen |= now
        previous = now
    moved = sum(r.moved_bytes for r in got)
    assert moved == cached.resident.moved_bytes == cached.resident.misses * per
    # the corridor's consecutive queries share most candidates: far less than a full copy
    assert moved < 0.5 * sum(r.candidate_bytes for r in got)
    with pytest.raises(MapError, match='cache_references = 19 cannot hold the top-20'):
        Localizer(corridor_map, corridor_model, top_k=20, device='cpu', cache_references=19)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_localizer_on_the_gpu_keeps_the_map_resident(corridor_map, corridor_model,
                                                     corridor_query_descriptors):
    """On a GPU the whole map is copied once; no query moves a byte, and the answers are
    those of the exact CPU matcher (the GPU's float32 similarities may flip a near tie)."""
    g, patches = corridor_query_descriptors
    cpu = Localizer(corridor_map, corridor_model, device='cpu')
    gpu = Localizer(corridor_map, corridor_model, device='cuda')
    assert gpu.resident.capacity == len(corridor_map)
    same = 0
    for i in range(len(g)):
        a = cpu.localize_descriptors(g[i], [p[i] for p in patches])
        b = gpu.localize_descriptors(g[i], [p[i] for p in patches])
        assert b.moved_bytes == 0 and b.candidate_bytes == a.candidate_bytes
        same += a.retrieval_order == b.retrieval_order
    assert same >= 0.95 * len(g)
