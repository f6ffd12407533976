# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Triplet margin loss and triplet mining from a cache of descriptors (NetVLAD's recipe).

For a query q, its potential positives P (near by pose) and negatives N (far by pose):
- the positive is the one *nearest q in descriptor space*: poses say only that the camera
  was near, and the nearest descriptor is the positive most likely to show the same view
  (NetVLAD's weakly supervised "best matching potential positive"; the authors' MSLS code
  takes the same one);
- the hard negatives are the negatives that violate the margin, d(q, n) < d(q, p) + m,
  nearest first, at most ``num_negatives`` of them (a query none violate is skipped: its
  loss and gradient are zero);
- the loss of a triplet is max(0, d(q, p) - d(q, n) + m), Euclidean distances of the
  L2-normalised VLADs, summed over all triplets of a batch and divided by the number of
  negatives (the authors' TripletMarginLoss(reduction='sum') / nNeg).
The authors' train.ini gives margin = 0.1 and their loss uses its square root (a margin
on distances, not on squared distances); :func:`distance_margin` makes that conversion.
Mining runs on descriptors computed with the model of a recent step (the cache, refreshed
every so many steps), the loss on descriptors of the current one.
"""

from dataclasses import dataclass
import math

import torch


def distance_margin(margin: float) -> float:
    """Return the authors' config margin (0.1) as a margin on distances: its square root."""
    return math.sqrt(margin)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [M, C] (float64) between rows of a [M, D] and b [C, D].

    |a|^2 + |b|^2 - 2 a.b in float64: one GEMM, and its cancellation (about 1e-16 of the
    norms) stays far below the gaps between descriptors of neighbouring places, which a
    float32 expansion would blur.
    """
    a64, b64 = a.double(), b.double()
    sq = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.t())
    return sq.clamp_(min=0).sqrt_()


@dataclass
class Triplets:
    """Mined triplets of M queries, as indices into the cache.

    positive: [M] the best positive, -1 where a query has no positive in the cache.
    negatives: [M, num_negatives] hard negatives nearest first, -1 where there are fewer.
    """

    positive: torch.Tensor
    negatives: torch.Tensor

    @property
    def active(self) -> torch.Tensor:
        """[M] bool: queries with a positive and at least one hard negative."""
        return (self.positive >= 0) & (self.negatives[:, 0] >= 0)


def mine_triplets(queries: torch.Tensor, cache: torch.Tensor, positive_mask: torch.Tensor,
                  negative_mask: torch.Tensor, margin: float, num_negatives: int) -> Triplets:
    """Choose each query's best positive and hard negatives among the cached descriptors.

    queries [M, D] and cache [C, D]: L2-normalised descriptors; positive_mask and
    negative_mask [M, C] bool: which cache entries are potential positives / negatives of
    each query (by pose). margin: on distances (see :func:`distance_margin`). Ties go to
    the lower cache index.
    """
    if num_negatives < 1:
        raise ValueError(f'num_negatives must be at least 1; got {num_negatives}')
    dist = pairwise_distances(queries, cache)                            # [M, C]
    inf = torch.tensor(float('inf'), dtype=dist.dtype, device=dist.device)
    d_pos = torch.where(positive_mask, dist, inf)
    best, positive = d_pos.min(dim=1)                  # min returns the first of ties
    has_pos = torch.isfinite(best)
    positive = torch.where(has_pos, positive, torch.full_like(positive, -1))
    violating = negative_mask & (dist < best[:, None] + margin) & has_pos[:, None]
    d_neg = torch.where(violating, dist, inf)
    k = min(num_negatives, cache.shape[0])
    # a stable sort keeps equal distances in index order
    order = torch.sort(d_neg, dim=1, stable=True).indices[:, :k]
    chosen = torch.gather(violating, 1, order)
    negatives = torch.where(chosen, order, torch.full_like(order, -1))
    if k < num_negatives:
        pad = torch.full((negatives.shape[0], num_negatives - k), -1, dtype=negatives.dtype,
                         device=negatives.device)
        negatives = torch.cat([negatives, pad], dim=1)
    return Triplets(positive, negatives)


def triplet_loss(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                 valid: torch.Tensor, margin: float) -> torch.Tensor:
    """Sum over triplets of max(0, |q - p| - |q - n| + margin) / number of negatives.

    query, positive: [B, D]; negatives: [B, M, D]; valid: [B, M] bool (padding is False);
    margin: on distances. Returns a scalar; 0 (with a zero gradient) when nothing is valid.
    """
    d_pos = torch.linalg.vector_norm(query - positive, dim=-1)                  # [B]
    d_neg = torch.linalg.vector_norm(query[:, None, :] - negatives, dim=-1)     # [B, M]
    hinge = torch.clamp(d_pos[:, None] - d_neg + margin, min=0.0)
    hinge = torch.where(valid, hinge, torch.zeros_like(hinge))
    return hinge.sum() / valid.sum().clamp(min=1)
