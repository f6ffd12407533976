# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""First stage: nearest global descriptors with faiss.

The index type follows the map's size (:func:`index_kind_for`):
    flat    IndexFlatL2, exact; below 10,000 references
    ivf     IndexIVFFlat, nlist ~ 4 sqrt(N) inverted lists, nprobe = max(16, nlist / 8)
            of them searched per query; exact distances, approximate neighbours (on
            clustered synthetic maps the whole exact top-10 and 99.5% / 94.5% of the exact
            top-100 at 10,000 / 100,000 references; nlist / 16 found 96% / 86%)
    ivfpq   IndexIVFPQ, the same lists with 8-bit product-quantised codes (m bytes per
            reference, m dividing the descriptor size); from 1,000,000 references
Training (k-means of the coarse quantiser and of the PQ codebooks) is seeded, so the
same descriptors give the same index.
"""

from contextlib import contextmanager
import math
from typing import Iterator, Optional, Tuple

import faiss
import numpy as np

from ..errors import MapError

INDEX_KINDS = ('auto', 'flat', 'ivf', 'ivfpq')
#: References from which 'auto' switches from exact search to IVF, and to IVF-PQ.
IVF_MIN_REFERENCES = 10_000
IVFPQ_MIN_REFERENCES = 1_000_000
#: Seed of every k-means that trains an index.
TRAIN_SEED = 1234
#: Fewest training points per k-means centroid (faiss warns below 39).
MIN_POINTS_PER_LIST = 39
#: Training points per k-means centroid at most (faiss subsamples, seeded, above).
MAX_POINTS_PER_LIST = 256
PQ_BITS = 8

#: Query batches smaller than this are searched on one thread (see :func:`top_k`).
SINGLE_THREAD_BELOW = 20

#: faiss file signatures (first 4 bytes) of the kinds we write.
FOURCC_KINDS = {b'IxF2': 'flat', b'IwFl': 'ivf', b'IwPQ': 'ivfpq'}


def index_kind_for(n: int) -> str:
    """Index kind 'auto' picks for a map of n references."""
    if n >= IVFPQ_MIN_REFERENCES:
        return 'ivfpq'
    if n >= IVF_MIN_REFERENCES:
        return 'ivf'
    return 'flat'


def ivf_nlist(n: int) -> int:
    """Inverted lists for n references: 4 sqrt(n) clipped to [16, 65536].

    Also at most n / 39, so that k-means has enough points per list (and at least 1).
    """
    nlist = int(np.clip(round(4 * math.sqrt(max(n, 1))), 16, 65536))
    return max(1, min(nlist, n // MIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Inverted lists searched per query: max(16, nlist / 8), at most nlist."""
    return min(nlist, max(16, nlist // 8))


def pq_subquantizers(d: int) -> int:
    """Bytes per IVF-PQ code: the largest divisor m of d with m <= min(64, d / 8)."""
    cap = max(1, min(64, d // 8))
    return max(m for m in range(1, cap + 1) if d % m == 0)


def ivf_of(index: faiss.Index) -> Optional[faiss.IndexIVF]:
    """Return the IVF part of an index, or None for an index without inverted lists."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def index_kind_of(index: faiss.Index) -> str:
    """Kind ('flat', 'ivf', 'ivfpq' or the faiss class name) of an index."""
    if isinstance(index, faiss.IndexIVFPQ):
        return 'ivfpq'
    if isinstance(index, faiss.IndexIVFFlat):
        return 'ivf'
    if isinstance(index, faiss.IndexFlatL2):
        return 'flat'
    return type(index).__name__


def resolve_kind(kind: str, n: int) -> str:
    """Validate an index kind and resolve 'auto' for a map of n references."""
    if kind not in INDEX_KINDS:
        raise MapError(f"unknown index kind '{kind}'; choose one of {list(INDEX_KINDS)}")
    return index_kind_for(n) if kind == 'auto' else kind


def build_index(descriptors: np.ndarray, kind: str = 'auto',
                seed: int = TRAIN_SEED) -> faiss.Index:
    """Build an L2 index over global descriptors [N, Dp] (float32).

    kind: 'flat', 'ivf', 'ivfpq' or 'auto' (by N, see :func:`index_kind_for`). IVF kinds
    are trained on the descriptors themselves with k-means seeded by ``seed``.
    """
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or descriptors.shape[0] == 0:
        raise MapError(f'cannot index {descriptors.shape} descriptors: the map is empty')
    if not np.isfinite(descriptors).all():
        raise MapError('global descriptors contain NaN or Inf: rebuild the map')
    n, d = descriptors.shape
    kind = resolve_kind(kind, n)
    if kind == 'flat':
        index = faiss.IndexFlatL2(d)
        index.add(descriptors)
        return index
    nlist = ivf_nlist(n)
    quantizer = faiss.IndexFlatL2(d)
    if kind == 'ivf':
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    else:
        if n < 2 ** PQ_BITS:
            raise MapError(f'an ivfpq index needs at least {2 ** PQ_BITS} references to '
                           f'train its codebooks; the map has {n}: use flat or ivf')
        index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_subquantizers(d), PQ_BITS)
        index.pq.cp.seed = seed
    index.cp.seed = seed
    index.cp.max_points_per_centroid = MAX_POINTS_PER_LIST
    index.train(descriptors)
    index.add(descriptors)
    index.nprobe = default_nprobe(nlist)
    return index


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run faiss on n OpenMP threads inside the block (a per-thread setting), then restore."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def top_k(index: faiss.Index, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Find the k nearest references of each query [M, Dp]: (distances, indices) [M, k'].

    k' = min(k, index size); distances are squared L2 (approximate for ivfpq), ascending.
    When an IVF index's searched lists hold fewer than k' references, the query is
    searched again over all lists, so no row is padded with faiss' -1; an index of
    another kind that still returns -1 has those columns stripped.

    Fewer than :data:`SINGLE_THREAD_BELOW` queries (the localizer sends one) are searched
    on one thread: faiss splits a single query's exact search over threads, and with
    torch's OpenMP runtime in the same process that was 7x slower (100,000 x 128 flat:
    24 ms on 2 threads, 3.4 ms on one; 2-core machine).
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != index.d:
        raise MapError(f'query descriptors have {queries.shape[1]} dims, the map {index.d}: '
                       'the map was built with another model or preset')
    if not np.isfinite(queries).all():
        raise MapError('query descriptor contains NaN or Inf')
    if index.ntotal == 0:
        raise MapError('the map holds no references')
    k = min(int(k), index.ntotal)
    threads = 1 if len(queries) < SINGLE_THREAD_BELOW else faiss.omp_get_max_threads()
    with faiss_threads(threads):
        dist, idx = index.search(queries, k)
        short = (idx < 0).any(axis=1)
        ivf = ivf_of(index) if short.any() else None
        if ivf is not None:
            every = faiss.SearchParametersIVF(nprobe=ivf.nlist)
            dist[short], idx[short] = index.search(queries[short], k, params=every)
    complete = (idx >= 0).all(axis=0)
    if not complete.all():
        keep = int(np.argmin(complete))        # faiss puts the -1s last
        dist, idx = dist[:, :keep], idx[:, :keep]
    return dist, idx
