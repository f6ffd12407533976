# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Weak supervision from poses: which training images show the same place, and which not.

As in NetVLAD and Patch-NetVLAD (MSLS: 10 m and 25 m), an image's *potential positives*
are the other images whose camera lies within ``pos_radius`` metres, and its *negatives*
the images farther than ``neg_radius``; images in between are neither (too uncertain to
push apart). Positions only: the ground truth of a recorded drive is where the camera
was, not what it saw, so the trainer picks among the potential positives by descriptor
(:func:`~.mining.mine_triplets`). Images of every drive form one pool. With more than one
drive an image's positives come from the *other* drives only, as MSLS pairs a query with
database images of another capture: a neighbouring frame of the same drive, seconds
apart, is always the nearest descriptor and would teach nothing about seeing a place
again. Negatives come from every drive.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..errors import ConfigError


@dataclass
class Supervision:
    """Positives and negatives of N training images.

    positives[i]: sorted indices of the images within pos_radius of image i (i excluded).
    negatives[i]: sorted indices of the images farther than neg_radius from image i.
    queries: images that can anchor a triplet (at least one positive and one negative).
    """

    positives: List[np.ndarray]
    negatives: List[np.ndarray]
    pos_radius: float
    neg_radius: float

    @property
    def queries(self) -> np.ndarray:
        """Indices of the images with at least one positive and one negative."""
        return np.array([i for i, (p, n) in enumerate(zip(self.positives, self.negatives))
                         if len(p) and len(n)], dtype=np.int64)

    def __len__(self) -> int:
        """Return the number of training images."""
        return len(self.positives)


def check_radii(pos_radius: float, neg_radius: float) -> None:
    """Raise ConfigError unless 0 < pos_radius <= neg_radius (both finite, metres)."""
    if not (np.isfinite(pos_radius) and pos_radius > 0):
        raise ConfigError(f'the positive radius must be a positive number of metres; got '
                          f'{pos_radius}')
    if not (np.isfinite(neg_radius) and neg_radius >= pos_radius):
        raise ConfigError(f'the negative radius ({neg_radius} m) must be at least the '
                          f'positive radius ({pos_radius} m): images in between are neither')


def supervision_from_positions(positions: np.ndarray, pos_radius: float,
                               neg_radius: float, drives: Optional[Sequence[int]] = None,
                               chunk: int = 2048) -> Supervision:
    """Positives within pos_radius and negatives beyond neg_radius of positions [N, 2 or 3].

    drives: [N] which drive each image comes from; with two or more, positives are images
    of other drives only. Distances are Euclidean in metres (float64), computed chunk rows
    at a time so memory stays O(chunk * N).
    """
    check_radii(pos_radius, neg_radius)
    xyz = np.asarray(positions, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] not in (2, 3) or not np.isfinite(xyz).all():
        raise ConfigError(f'positions must be a finite [N, 2 or 3] array; got shape '
                          f'{xyz.shape}')
    ids = np.zeros(len(xyz), np.int64) if drives is None else np.asarray(drives, np.int64)
    if ids.shape != (len(xyz),):
        raise ConfigError(f'{len(ids)} drive ids for {len(xyz)} positions')
    cross = len(np.unique(ids)) > 1
    positives: List[np.ndarray] = []
    negatives: List[np.ndarray] = []
    for start in range(0, len(xyz), chunk):
        rows = xyz[start:start + chunk]
        dist = np.linalg.norm(rows[:, None, :] - xyz[None, :, :], axis=2)
        for j, row in enumerate(dist):
            near = row <= pos_radius
            near[start + j] = False
            if cross:
                near &= ids != ids[start + j]
            positives.append(np.flatnonzero(near))
            negatives.append(np.flatnonzero(row > neg_radius))
    return Supervision(positives, negatives, float(pos_radius), float(neg_radius))


def concat_positions(drives: Sequence[np.ndarray]) -> np.ndarray:
    """Positions of several drives [N_d, 3] as one pool [sum N_d, 3] (one map frame)."""
    return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in drives])
