# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Patch grids: grid positions for spatial scoring and pixel centres for RANSAC."""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..config import BACKBONE_STRIDE, PatchNetVLADConfig

#: VGG16 conv5_3 receptive field size and padding in pixels (stride 16): feature cell
#: (r, c) sees pixels x in [16c - 90, 16c - 90 + 195] and likewise for y.
RECEPTIVE_FIELD = 196
RECEPTIVE_PADDING = 90


@dataclass(frozen=True)
class PatchGrid:
    """Positions of the patches of one scale, in row-major order.

    positions: [P, 2] int grid indices (column, row) of each patch.
    centres: [P, 2] float pixel centres (x, y) of each patch's receptive field.
    x_max, y_max: largest column and row index (the spatial score's anchors).
    """

    size: int
    stride: int
    rows: int
    cols: int
    positions: np.ndarray
    centres: np.ndarray

    @property
    def num_patches(self) -> int:
        """n_p, the number of patches."""
        return self.rows * self.cols

    @property
    def x_max(self) -> int:
        """Largest column index."""
        return self.cols - 1

    @property
    def y_max(self) -> int:
        """Largest row index."""
        return self.rows - 1


@lru_cache(maxsize=64)
def patch_grid(feat_h: int, feat_w: int, size: int, stride: int) -> PatchGrid:
    """Grid of size x size patches with the given stride over a feat_h x feat_w map.

    A patch whose first cell is (r0, c0) covers cells c0..c0+size-1; its pixel centre
    is the centre of the union of their receptive fields:
    x = 16 c0 + 8 (size - 1) + 7.5 (likewise y), for VGG16's 196 px field at stride 16.
    """
    rows = (feat_h - size) // stride + 1
    cols = (feat_w - size) // stride + 1
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing='ij')
    positions = np.stack([c.ravel(), r.ravel()], axis=1)
    first = positions * stride  # first feature cell of each patch
    lo = BACKBONE_STRIDE * first - RECEPTIVE_PADDING
    hi = BACKBONE_STRIDE * (first + size - 1) - RECEPTIVE_PADDING + RECEPTIVE_FIELD - 1
    centres = (lo + hi) / 2.0
    positions.setflags(write=False)
    centres.setflags(write=False)
    return PatchGrid(size, stride, rows, cols, positions, centres)


def grids_for(config: PatchNetVLADConfig) -> 'list[PatchGrid]':
    """One :class:`PatchGrid` per scale of a configuration."""
    return [patch_grid(config.feature_height, config.feature_width, s, st)
            for s, st in zip(config.patch_sizes, config.strides)]
