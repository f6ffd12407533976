# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""First stage: nearest global descriptors with faiss."""

from typing import Tuple

import faiss
import numpy as np

from .errors import MapError


def build_index(descriptors: np.ndarray) -> faiss.Index:
    """Exact L2 index over global descriptors [N, Dp] (float32)."""
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or descriptors.shape[0] == 0:
        raise MapError(f'cannot index {descriptors.shape} descriptors: the map is empty')
    if not np.isfinite(descriptors).all():
        raise MapError('global descriptors contain NaN or Inf: rebuild the map')
    index = faiss.IndexFlatL2(descriptors.shape[1])
    index.add(descriptors)
    return index


def top_k(index: faiss.Index, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Find the k nearest references of each query [M, Dp]: (distances, indices) [M, k'].

    k' = min(k, index size); distances are squared L2, ascending.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != index.d:
        raise MapError(f'query descriptors have {queries.shape[1]} dims, the map {index.d}: '
                       'the map was built with another model or preset')
    if not np.isfinite(queries).all():
        raise MapError('query descriptor contains NaN or Inf')
    if index.ntotal == 0:
        raise MapError('the map holds no references')
    return index.search(queries, min(k, index.ntotal))
