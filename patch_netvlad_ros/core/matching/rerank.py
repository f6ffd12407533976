# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Patch matching and scoring, multi-scale fusion and reranking of a candidate list.

Mutual nearest neighbours between patch sets, then per scale:

Scores follow the paper with "larger is better" (the authors' code negates them):
- RANSAC: inliers of a homography between matched patch centres (pixels), / n_p.
- spatial: sum over matches of (x_max - |x_d - mean x_d|)^2 + (y_max - |y_d - mean y_d|)^2,
  / n_p, with x_d, y_d the grid offsets of each match.
- fusion: per scale, z-score over the candidate list, then the weighted sum.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import functools
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from . import batched_ransac, int_screen, screened_mnn
from .geometry import grids_for, PatchGrid
from .mutual_nn import mutual_nn
from ..config import BACKBONE_STRIDE, PatchNetVLADConfig

#: RANSAC reprojection threshold in feature cells per unit of patch stride (1.5 cells,
#: 24 px for VGG16 at stride 1), as in the authors' matcher.
RANSAC_CELLS = 1.5


#: Matchers of :func:`match_candidates`: 'float32' is the straightforward path (float32
#: GEMMs, any device); 'screened' the exact bf16-screened path of
#: :mod:`patch_netvlad_ros.core.matching.screened_mnn` (CPU with bf16 units and a C compiler);
#: 'integer' the exact int8- or int16-screened path of
#: :mod:`patch_netvlad_ros.core.matching.int_screen` (AVX2 CPU and a C compiler); 'auto' takes
#: 'screened' where it can run, else 'integer' where the CPU's float32 GEMMs are 256 bits wide
#: (:func:`int_screen.preferred`), else 'float32'.
MNN_METHODS = ('auto', 'screened', 'integer', 'float32')


def resolve_mnn_method(method: str, device: torch.device, dim: Optional[int] = None) -> str:
    """Return the matcher that ``method`` stands for on ``device`` (see :data:`MNN_METHODS`).

    dim: the descriptor dimension, when known ('auto' screens long descriptors in float32).
    """
    if method not in MNN_METHODS:
        raise ValueError(f'unknown matcher method {method!r}; expected one of {MNN_METHODS}')
    if method != 'auto':
        return method
    if torch.device(device).type != 'cpu':
        return 'float32'
    if screened_mnn.available():
        return 'screened'
    return 'integer' if int_screen.preferred(dim) else 'float32'


#: Bytes of float32 candidate blocks and similarities per chunk of the float32 matcher: on
#: the CPU small blocks stay in cache and are reused by the allocator (no fresh page
#: faults); a GPU wants few, large GEMMs.
CHUNK_BYTES = {'cpu': 16 << 20, 'other': 256 << 20}


def match_candidates(query: torch.Tensor, store, indices: Sequence[int],
                     chunk_bytes: Optional[int] = None, method: str = 'auto') -> torch.Tensor:
    """:func:`mutual_nn` of a query against the references ``indices`` of a patch store.

    store: [N, Pd, D] array or tensor of any float dtype (e.g. a float16 memory map, or
    a :class:`~.resident_patches.ResidentPatches` slot tensor on the query's device);
    candidates are read and converted in chunks so memory stays bounded (default
    :data:`CHUNK_BYTES` for the query's device).
    method: see :data:`MNN_METHODS`; all give the same matches.
    Returns match [C, Pd] in the order of ``indices``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    pd, pq = store.shape[1], query.shape[0]
    resolved = resolve_mnn_method(method, query.device, query.shape[1])
    if resolved == 'screened':
        return screened_mnn.ScreenedQuery(query).match(store, indices).to(query.device)
    if resolved == 'integer':
        return int_screen.IntQuery(query).match(store, indices).to(query.device)
    if chunk_bytes is None:
        chunk_bytes = CHUNK_BYTES['cpu' if query.device.type == 'cpu' else 'other']
    # the float32 candidate block [c, Pd, D] and the similarities [c, Pd, Pq] both count
    step = max(1, chunk_bytes // max(4 * pd * max(pq, store.shape[2]), 1))
    out = []
    for i in range(0, len(indices), step):
        block = store[indices[i:i + step]]
        block = torch.as_tensor(np.asarray(block) if not torch.is_tensor(block) else block)
        out.append(mutual_nn(query, block.to(device=query.device, dtype=query.dtype)))
    if not out:
        return torch.empty(0, pd, dtype=torch.long)
    return torch.cat(out).to(query.device)


def spatial_scores(match: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """Rapid spatial scores [C] from mutual matches [C, P] (see :func:`mutual_nn`).

    Offsets are database position minus query position in grid units; a candidate with
    no match scores 0.
    """
    pos = torch.tensor(grid.positions, dtype=torch.float64, device=match.device)  # [P, 2]
    valid = match >= 0
    idx = match.clamp_min(0)
    count = valid.sum(1, keepdim=True).clamp_min(1)
    score = torch.zeros(match.shape[0], dtype=torch.float64, device=match.device)
    # one axis at a time, in place: [C, P] temporaries instead of [C, P, 2] (4x faster)
    for axis, top in ((0, grid.x_max), (1, grid.y_max)):
        p = pos[:, axis]
        offsets = (p - p[idx]).masked_fill_(~valid, 0.0)               # [C, P]
        mean = offsets.sum(1, keepdim=True) / count
        terms = offsets.sub_(mean).abs_().neg_().add_(top).square_()   # (top - |dev|)^2
        score += terms.masked_fill_(~valid, 0.0).sum(1)
    return score / grid.num_patches


def spatial_score_max(grid: PatchGrid) -> float:
    """Largest possible spatial score (every patch matched with zero deviation)."""
    return float(grid.x_max ** 2 + grid.y_max ** 2)


def ransac_inliers(db_xy: np.ndarray, query_xy: np.ndarray,
                   threshold: float) -> np.ndarray:
    """Inlier mask [M] of a RANSAC homography from db_xy [M, 2] to query_xy [M, 2] (pixels).

    Fewer than 4 matches, or a degenerate configuration, gives no inliers.
    """
    if len(db_xy) < 4:
        return np.zeros(len(db_xy), dtype=bool)
    _, mask = cv2.findHomography(db_xy.astype(np.float32), query_xy.astype(np.float32),
                                 cv2.RANSAC, ransacReprojThreshold=threshold)
    if mask is None:
        return np.zeros(len(db_xy), dtype=bool)
    return mask.ravel().astype(bool)


#: RANSAC implementations of :func:`ransac_scores`: 'opencv' is cv2.findHomography per
#: candidate (the authors' scores exactly; CPU threads); 'batched' fits and scores all
#: candidates' hypotheses at once in torch (:mod:`.batched_ransac`; the GPU path);
#: 'auto' takes 'batched' for CUDA tensors, else 'opencv'.
RANSAC_METHODS = ('auto', 'opencv', 'batched')


def resolve_ransac_method(method: str, device: torch.device) -> str:
    """Return the RANSAC implementation ``method`` stands for on ``device``."""
    if method not in RANSAC_METHODS:
        raise ValueError(f'unknown RANSAC method {method!r}; expected one of {RANSAC_METHODS}')
    if method == 'auto':
        return 'batched' if torch.device(device).type == 'cuda' else 'opencv'
    return method


def ransac_scores(match: torch.Tensor, grid: PatchGrid, method: str = 'auto') -> torch.Tensor:
    """RANSAC scores [C] = homography inliers / n_p from mutual matches [C, P].

    method: see :data:`RANSAC_METHODS`. With 'opencv' the candidates run in parallel
    threads (OpenCV releases the GIL; each findHomography call seeds its own generator,
    so the scores do not depend on the threads).
    """
    threshold = RANSAC_CELLS * BACKBONE_STRIDE * grid.stride
    if resolve_ransac_method(method, match.device) == 'batched':
        centres = torch.tensor(grid.centres, device=match.device)
        src, dst, valid, _ = batched_ransac.pack_matches(match, centres)
        counts, _ = batched_ransac.ransac_inlier_counts(src, dst, valid, threshold)
        return counts.cpu().double() / grid.num_patches
    match_np = match.cpu().numpy()

    def score(row: np.ndarray) -> float:
        db_idx = np.flatnonzero(row >= 0)
        inliers = ransac_inliers(grid.centres[db_idx], grid.centres[row[db_idx]], threshold)
        return inliers.sum() / grid.num_patches

    return torch.tensor(list(_ransac_pool().map(score, match_np)), dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def _ransac_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix='pnv-ransac')


def fuse_scores(scores: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Fuse per-scale scores [C, S] into [C]: sum_i w_i z_i.

    z_i is the z-score of column i over the candidates (population std); a constant
    column contributes 0.
    """
    s = scores.double()
    std = s.std(dim=0, unbiased=False)
    z = (s - s.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))
    return (z * torch.as_tensor(weights, dtype=torch.float64)).sum(1)


@dataclass
class RerankResult:
    """Reranking of C candidates.

    order: [C] candidate positions (into the input list), best first.
    fused: [C] fused score per candidate (input order).
    per_scale: [C, S] raw score per candidate and scale (input order).
    quality: [C] weighted raw scores scaled to [0, 1] by each scale's maximum (input order).
    """

    order: np.ndarray
    fused: np.ndarray
    per_scale: np.ndarray
    quality: np.ndarray


def score_candidates(query_patches: Sequence[torch.Tensor], stores: Sequence,
                     indices: Sequence[int], config: PatchNetVLADConfig,
                     mnn_method: str = 'auto', ransac_method: str = 'auto'
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Raw scores [C, S] of candidates ``indices`` and the same scaled to [0, 1].

    query_patches: per scale [P_s, Dp]; stores: per scale [N, P_s, Dp] (see
    :func:`match_candidates`, also for mnn_method); ransac_method: see
    :data:`RANSAC_METHODS`.
    """
    raw: List[torch.Tensor] = []
    scaled: List[torch.Tensor] = []
    for q, store, grid in zip(query_patches, stores, grids_for(config)):
        match = match_candidates(q, store, indices, method=mnn_method)
        if config.matcher == 'ransac':
            s, top = ransac_scores(match, grid, ransac_method), 1.0
        else:
            s, top = spatial_scores(match, grid).cpu(), spatial_score_max(grid)
        raw.append(s.double())
        scaled.append(s.double() / top if top > 0 else s.double())
    return torch.stack(raw, 1), torch.stack(scaled, 1)


def rerank(query_patches: Sequence[torch.Tensor], stores: Sequence, indices: Sequence[int],
           config: PatchNetVLADConfig, mnn_method: str = 'auto',
           ransac_method: str = 'auto') -> RerankResult:
    """Rerank candidates ``indices`` for one query by fused Patch-NetVLAD scores.

    query_patches: per scale [P_s, Dp]; stores: per scale [N, P_s, Dp]; mnn_method: see
    :data:`MNN_METHODS`; ransac_method: see :data:`RANSAC_METHODS`.
    """
    raw, scaled = score_candidates(query_patches, stores, indices, config, mnn_method,
                                   ransac_method)
    fused = fuse_scores(raw, config.patch_weights)
    order = torch.argsort(-fused, stable=True)
    quality = (scaled * torch.as_tensor(config.patch_weights, dtype=torch.float64)).sum(1)
    return RerankResult(order.numpy(), fused.numpy(), raw.numpy(), quality.numpy())
