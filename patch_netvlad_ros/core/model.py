# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The Patch-NetVLAD network: VGG16 conv5_3 + NetVLAD + WPCA, inference only.

Module and parameter names follow the authors' checkpoints (``encoder.*``,
``pool.centroids``, ``pool.conv.weight`` [+ ``pool.conv.bias`` for vladv2],
``WPCA.0.weight``, ``WPCA.0.bias``), so their ``state_dict`` loads unchanged.
"""

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn
import torch.nn.functional as F

from . import vlad
from .backbone import build_encoder
from .config import BACKBONE_STRIDE, PatchNetVLADConfig
from .errors import ImageError


@dataclass
class Descriptors:
    """Descriptors of a batch of B images.

    global_desc: [B, Dp] unit vectors.
    patches: one [B, P_s, Dp] tensor of unit vectors per scale, patches in row-major
        grid order (see :mod:`patch_netvlad_ros.core.geometry`).
    """

    global_desc: torch.Tensor
    patches: List[torch.Tensor]


class NetVLADPool(nn.Module):
    """NetVLAD parameters: centroids [K, D] and the 1x1 assignment conv [K, D, 1, 1]."""

    def __init__(self, num_clusters: int, dim: int, vladv2: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=vladv2)
        self.centroids = nn.Parameter(torch.zeros(num_clusters, dim))


class PatchNetVLAD(nn.Module):
    """Global and multi-scale patch descriptors of RGB images.

    Input: [B, 3, H, W] float images normalised like torchvision's ImageNet models
    (see :func:`patch_netvlad_ros.core.image.to_tensor`); H, W = the config's size.
    """

    def __init__(self, config: PatchNetVLADConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder()
        self.pool = NetVLADPool(config.num_clusters, config.encoder_dim, config.vladv2)
        self.WPCA = nn.Sequential(nn.Conv2d(config.vlad_dim, config.num_pcs, kernel_size=1))

    # ------------------------------------------------------------------ pieces
    @property
    def pca_weight(self) -> torch.Tensor:
        """WPCA weight as a matrix [Dp, K*D]."""
        w = self.WPCA[0].weight
        return w.view(w.shape[0], -1)

    @property
    def pca_bias(self) -> torch.Tensor:
        """WPCA bias [Dp]."""
        return self.WPCA[0].bias

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, D, H/16, W/16] of normalised images [B, 3, H, W]."""
        return self.encoder(images)

    def assign(self, features: torch.Tensor) -> 'tuple[torch.Tensor, torch.Tensor]':
        """Return unit features x [B, D, N] and soft assignments a [B, K, N]."""
        x = F.normalize(features.flatten(2), p=2, dim=1)
        return x, vlad.soft_assign(x, self.pool.conv.weight, self.pool.conv.bias)

    def aggregate(self, features: torch.Tensor,
                  with_patches: bool = True) -> Descriptors:
        """Global and patch descriptors from backbone features [B, D, h, w]."""
        cfg = self.config
        b, _, h, w = features.shape
        if min(h, w) < max(cfg.patch_sizes):
            raise ImageError(
                f'feature map {w}x{h} is smaller than the largest patch ({max(cfg.patch_sizes)} '
                f'cells): images must be at least {max(cfg.patch_sizes) * BACKBONE_STRIDE} px '
                'per side')
        x, a = self.assign(features)
        centroids = self.pool.centroids
        g = vlad.project(vlad.normalize_vlad(vlad.global_vlad(x, a, centroids)),
                         self.pca_weight, self.pca_bias)
        if not with_patches:
            return Descriptors(g, [])
        per_image = [  # one image at a time bounds memory to one residual map
            vlad.patch_descriptors(x[i], a[i], centroids, self.pca_weight, self.pca_bias,
                                   h, w, cfg.patch_sizes, cfg.strides)
            for i in range(b)]
        return Descriptors(g, [torch.stack(scale) for scale in zip(*per_image)])

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, with_patches: bool = True,
                device: Optional[torch.device] = None,
                encoder_dtype: Optional[torch.dtype] = None) -> Descriptors:
        """Descriptors of normalised images [B, 3, H, W]; see :class:`Descriptors`.

        encoder_dtype (torch.float16 / torch.bfloat16): run the backbone under autocast
        in that precision (the bulk of the time); NetVLAD, patches and PCA stay float32.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ImageError(f'expected a batch [B, 3, H, W]; got shape {tuple(images.shape)}')
        if not torch.isfinite(images).all():
            raise ImageError('image batch contains NaN or Inf values')
        device = device or next(self.parameters()).device
        images = images.to(device)
        if encoder_dtype is None or encoder_dtype == torch.float32:
            features = self.encode(images)
        else:
            with torch.autocast(device.type, dtype=encoder_dtype):
                features = self.encode(images)
        return self.aggregate(features.float(), with_patches)
