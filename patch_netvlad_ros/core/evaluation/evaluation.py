# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Recall@N and ground truth, the one implementation used by tests, CLI and nodes."""

from typing import Collection, Dict, List, Optional, Sequence

import numpy as np

from ..config import RECALL_NS


def positives_within(query_positions: np.ndarray, ref_positions: np.ndarray,
                     threshold: float) -> List[np.ndarray]:
    """Find the reference indices within threshold (same units as the positions) of each query.

    query_positions: [M, 2 or 3]; ref_positions: [N, 2 or 3].
    """
    q = np.asarray(query_positions, dtype=np.float64)
    r = np.asarray(ref_positions, dtype=np.float64)
    dist = np.linalg.norm(q[:, None, :] - r[None, :, :], axis=2)
    return [np.flatnonzero(row <= threshold) for row in dist]


def positives_by_frame(num_queries: int, num_refs: int, tolerance: int) -> List[np.ndarray]:
    """Frame-index ground truth: query i matches references i - tol .. i + tol."""
    return [np.arange(max(0, i - tolerance), min(num_refs, i + tolerance + 1))
            for i in range(num_queries)]


def recall_at_n(predictions: Sequence[Sequence[int]], positives: Sequence[Collection[int]],
                ns: Optional[Sequence[int]] = None) -> Dict[int, float]:
    """Fraction of queries with a positive among their first N predictions, per N.

    predictions: per query, reference indices best first (rows may be shorter than N).
    Queries without any positive count as misses, as in the paper's protocol.
    """
    ns = tuple(ns or RECALL_NS)
    if len(predictions) != len(positives):
        raise ValueError(f'{len(predictions)} prediction rows for {len(positives)} queries')
    if len(predictions) == 0:
        raise ValueError('no queries to evaluate')
    hits = np.zeros(len(ns))
    for pred, pos in zip(predictions, positives):
        pred = np.asarray(pred)
        # np.isin takes a set as one object value: compare against its elements.
        pos = np.fromiter(pos, dtype=np.int64) if isinstance(pos, (set, frozenset)) else pos
        found = np.flatnonzero(np.isin(pred, pos))
        if found.size:
            hits += found[0] < np.asarray(ns)
    return {n: float(h) / len(predictions) for n, h in zip(ns, hits)}
