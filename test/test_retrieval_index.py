# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The global index kinds (flat, IVF, IVF-PQ) against brute force, and top_k's contract."""

import faiss
import numpy as np
import pytest

from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.maps.retrieval import (build_index, default_nprobe, index_kind_for,
                                                   index_kind_of, ivf_nlist, pq_subquantizers,
                                                   top_k)


def clustered(n, d, rng, clusters=200, spread=0.3):
    """Descriptors [n, d] float32 around random cluster centres, unit norm."""
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(db, queries, k):
    """Indices [M, k] of the k nearest rows of db for each query (exact, numpy)."""
    d2 = (queries ** 2).sum(1)[:, None] - 2 * queries @ db.T + (db ** 2).sum(1)[None]
    return np.argsort(d2, axis=1, kind='stable')[:, :k]


def recall(found, truth):
    """Mean fraction of the true neighbours found per query."""
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


@pytest.fixture(scope='module')
def data():
    rng = np.random.default_rng(7)
    db = clustered(20_000, 64, rng)
    queries = db[rng.choice(len(db), 200, replace=False)] + 0.05 * rng.normal(size=(200, 64))
    queries = queries.astype(np.float32)
    return db, queries, brute_force(db, queries, 10)


def test_kind_by_size_and_parameters():
    assert [index_kind_for(n) for n in (1, 9_999, 10_000, 999_999, 1_000_000)] == [
        'flat', 'flat', 'ivf', 'ivf', 'ivfpq']
    assert ivf_nlist(20_000) == 512                  # 4 sqrt(N) = 566, at most N / 39
    assert ivf_nlist(1_000_000) == 4000 and ivf_nlist(10 ** 10) == 65536
    assert ivf_nlist(100) == 2 and ivf_nlist(5) == 1
    assert default_nprobe(512) == 64 and default_nprobe(40) == 16 and default_nprobe(2) == 2
    assert [pq_subquantizers(d) for d in (64, 128, 512, 4096, 100)] == [8, 16, 64, 64, 10]


def test_flat_is_exact(data):
    db, queries, _ = data
    index = build_index(db[:3000])
    assert index_kind_of(index) == 'flat'
    dist, idx = top_k(index, queries, 10)
    assert np.array_equal(idx, brute_force(db[:3000], queries, 10))
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_ivf_recall_against_brute_force(data):
    db, queries, truth = data
    index = build_index(db)                                       # auto: 20,000 -> ivf
    assert index_kind_of(index) == 'ivf'
    assert (index.nlist, index.nprobe) == (512, 64)
    _, idx = top_k(index, queries, 10)
    assert idx.shape == (200, 10)
    assert recall(idx, truth) >= 0.95


def test_training_is_deterministic(data):
    db = data[0][:4000]
    for kind in ('ivf', 'ivfpq'):
        a, b = build_index(db, kind), build_index(db, kind)
        assert np.array_equal(faiss.serialize_index(a), faiss.serialize_index(b)), kind


def test_ivfpq_returns_valid_ids(data):
    db, queries, truth = data
    index = build_index(db[:4000], 'ivfpq')
    assert index_kind_of(index) == 'ivfpq' and index.pq.M == 8 and index.pq.nbits == 8
    _, idx = top_k(index, queries, 10)
    assert idx.shape == (200, 10)
    assert idx.min() >= 0 and idx.max() < 4000
    assert all(len(set(row)) == 10 for row in idx)
    # 8-byte codes of 64-dim vectors: approximate, but far better than chance
    assert recall(idx, brute_force(db[:4000], queries, 10)) >= 0.3


@pytest.mark.parametrize('kind', ['flat', 'ivf', 'ivfpq'])
def test_k_beyond_what_the_probed_lists_hold(data, kind):
    db, queries, _ = data
    index = build_index(db[:2000], kind)
    if kind != 'flat':
        index.nprobe = 1                            # one list holds far fewer than k
    _, idx = top_k(index, queries[:3], 500)
    assert idx.shape == (3, 500) and idx.min() >= 0
    assert all(len(set(row)) == 500 for row in idx)
    _, idx = top_k(index, queries[:2], 5000)        # k > N: every reference, no -1
    assert idx.shape == (2, 2000) and sorted(idx[0]) == list(range(2000))
    assert top_k(index, queries[0], 3)[1].shape == (1, 3)


def test_single_queries_match_the_batch_and_threads_are_restored(data):
    db, queries, _ = data
    index = build_index(db[:5000])
    threads = faiss.omp_get_max_threads()
    batch = top_k(index, queries[:40], 10)[1]                 # multi-threaded batch
    single = np.concatenate([top_k(index, q, 10)[1] for q in queries[:40]])
    assert np.array_equal(batch, single)
    assert faiss.omp_get_max_threads() == threads


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(MapError, match="unknown index kind 'hnsw'"):
        build_index(rng.normal(size=(10, 8)), 'hnsw')
    with pytest.raises(MapError, match='ivfpq index needs at least 256 references'):
        build_index(rng.normal(size=(100, 8)), 'ivfpq')
    with pytest.raises(MapError, match='the map is empty'):
        build_index(np.zeros((0, 8)), 'ivf')
    index = build_index(rng.normal(size=(100, 8)), 'ivf')
    with pytest.raises(MapError, match='query descriptors have 4 dims, the map 8'):
        top_k(index, np.zeros(4), 3)
