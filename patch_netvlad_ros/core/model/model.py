# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The Patch-NetVLAD network: VGG16 conv5_3 + NetVLAD + WPCA, inference only.

Module and parameter names follow the authors' checkpoints (``encoder.*``,
``pool.centroids``, ``pool.conv.weight`` [+ ``pool.conv.bias`` for vladv2],
``WPCA.0.weight``, ``WPCA.0.bias``), so their ``state_dict`` loads unchanged.
"""

import copy
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import nn
import torch.nn.functional as F

from . import vlad
from . import winograd as wino
from .backbone import build_encoder
from ..config import BACKBONE_STRIDE, PatchNetVLADConfig
from ..errors import ImageError


@dataclass
class Descriptors:
    """Descriptors of a batch of B images.

    global_desc: [B, Dp] unit vectors.
    patches: one [B, P_s, Dp] tensor of unit vectors per scale, patches in row-major
        grid order (see :mod:`patch_netvlad_ros.core.matching.geometry`).
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
    (see :func:`patch_netvlad_ros.core.model.image.to_tensor`); H, W = the config's size.
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

    def encode(self, images: torch.Tensor, dtype: Optional[torch.dtype] = None,
               winograd: Optional[bool] = None) -> torch.Tensor:
        """Backbone features [B, D, H/16, W/16] (float32) of normalised images [B, 3, H, W].

        Runs channels-last (NHWC): oneDNN's and cuDNN's fast convolutions want that
        layout, and the NCHW path spends most of its time converting layouts (3x slower
        in bf16 on an AMX CPU). dtype (torch.float16 / torch.bfloat16) runs a copy of
        the backbone whose weights are stored in that precision. winograd: run the float32
        CPU backbone's 3x3 convolutions by Winograd F(4x4, 3x3) (see
        :mod:`patch_netvlad_ros.core.model.winograd`); None: where it runs (CPU, float32, C
        helper built). Copies are made once and remade when the weights change.
        """
        low = dtype is not None and dtype != torch.float32
        winograd = wino.resolve(winograd, images.device, dtype)
        encoder = self.encoder
        if low:
            encoder = self._encoder_copy(
                ('dtype', dtype, str(images.device)),
                lambda: copy.deepcopy(self.encoder).to(device=images.device, dtype=dtype).to(
                    memory_format=torch.channels_last))
            images = images.to(dtype)
        elif winograd:
            encoder = self._encoder_copy(('winograd',), lambda: wino.winograd_encoder(
                self.encoder))
        features = encoder(images.contiguous(memory_format=torch.channels_last))
        return features.float().contiguous()

    def _encoder_copy(self, kind: tuple, make: Callable[[], nn.Module]) -> nn.Module:
        """Return the backbone copy ``kind`` (cached, not a submodule; one kind at a time)."""
        # _version moves on every in-place write, e.g. load_state_dict's copy_
        key = kind + tuple(p._version for p in self.encoder.parameters())
        cache = self.__dict__.setdefault('_encoder_copies', {})
        if key not in cache:
            cache.clear()
            cache[key] = make()
        return cache[key]

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
                encoder_dtype: Optional[torch.dtype] = None,
                winograd: Optional[bool] = None) -> Descriptors:
        """Descriptors of normalised images [B, 3, H, W]; see :class:`Descriptors`.

        encoder_dtype (torch.float16 / torch.bfloat16): run the backbone in that
        precision (the bulk of the time; see :meth:`encode`); NetVLAD, patches and PCA
        stay float32. winograd: the float32 CPU backbone's algorithm (see :meth:`encode`).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ImageError(f'expected a batch [B, 3, H, W]; got shape {tuple(images.shape)}')
        if not torch.isfinite(images).all():
            raise ImageError('image batch contains NaN or Inf values')
        device = device or next(self.parameters()).device
        features = self.encode(images.to(device), encoder_dtype, winograd)
        return self.aggregate(features, with_patches)
