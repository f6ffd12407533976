# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Typed, validated Patch-NetVLAD configuration and the authors' three presets.

A :class:`PatchNetVLADConfig` is immutable. Derive variants with
:meth:`PatchNetVLADConfig.override` (one field at a time or several), which
validates the result, so an invalid configuration can never exist.
"""

from dataclasses import asdict, dataclass, fields, replace
import math
import os
from pathlib import Path
from typing import Any, Dict, Tuple

from .errors import ConfigError

#: VGG16 conv5_3 reduces the image by this factor in each direction.
BACKBONE_STRIDE = 16
MATCHERS = ('ransac', 'spatial')


@dataclass(frozen=True)
class PatchNetVLADConfig:
    """Everything that defines a descriptor and how two descriptors are compared.

    Fields:
        preset: name of the preset this configuration started from.
        patch_sizes: square patch sizes d in feature cells, one per scale.
        strides: patch stride s_p in feature cells, one per scale.
        patch_weights: fusion weight w_i per scale; non-negative, sum to 1.
        num_pcs: whitened-PCA output dimensions (WPCA), also the descriptor size.
        matcher: 'ransac' (homography inliers / n_p) or 'spatial' (rapid spatial scoring).
        top_k: candidates retrieved by the global descriptor and then reranked.
        image_height, image_width: size every image is resized to before the backbone.
        num_clusters: NetVLAD clusters K.
        vladv2: NetVLAD soft-assignment with a bias term (vladv2) instead of vladv1.
        encoder_dim: channels of the backbone output (512 for VGG16 conv5_3).
    """

    preset: str = 'performance'
    patch_sizes: Tuple[int, ...] = (2, 5, 8)
    strides: Tuple[int, ...] = (1, 1, 1)
    patch_weights: Tuple[float, ...] = (0.45, 0.15, 0.4)
    num_pcs: int = 4096
    matcher: str = 'ransac'
    top_k: int = 100
    image_height: int = 480
    image_width: int = 640
    num_clusters: int = 64
    vladv2: bool = False
    encoder_dim: int = 512

    def __post_init__(self) -> None:
        # Normalise sequences given as lists (e.g. from YAML) to tuples, then validate.
        for name in ('patch_sizes', 'strides', 'patch_weights'):
            value = getattr(self, name)
            if isinstance(value, (int, float)):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, 'matcher', str(self.matcher).lower())
        self._validate()

    # ------------------------------------------------------------------ derived
    @property
    def feature_height(self) -> int:
        """Rows of the conv5_3 feature map."""
        return self.image_height // BACKBONE_STRIDE

    @property
    def feature_width(self) -> int:
        """Columns of the conv5_3 feature map."""
        return self.image_width // BACKBONE_STRIDE

    @property
    def vlad_dim(self) -> int:
        """Length K * D of a NetVLAD vector before PCA."""
        return self.num_clusters * self.encoder_dim

    def num_patches(self, scale: int) -> int:
        """n_p = (floor((H - d) / s) + 1) * (floor((W - d) / s) + 1) for one scale."""
        d, s = self.patch_sizes[scale], self.strides[scale]
        return ((self.feature_height - d) // s + 1) * ((self.feature_width - d) // s + 1)

    def identity(self) -> Dict[str, Any]:
        """Fields that must agree between a map and the descriptors queried against it."""
        return {
            'patch_sizes': list(self.patch_sizes),
            'strides': list(self.strides),
            'num_pcs': self.num_pcs,
            'image_height': self.image_height,
            'image_width': self.image_width,
            'num_clusters': self.num_clusters,
            'vladv2': self.vladv2,
            'encoder_dim': self.encoder_dim,
        }

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (lists instead of tuples) for JSON/YAML."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    # --------------------------------------------------------------- overriding
    def override(self, **changes: Any) -> 'PatchNetVLADConfig':
        """Return a copy with the given fields changed; unknown names are an error.

        Changing ``patch_sizes`` alone keeps strides of 1 and equal weights when the
        number of scales changes, so ``override(patch_sizes=[5])`` just works.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(
                f'unknown configuration field(s) {unknown}; known fields: {sorted(known)}')
        if 'patch_sizes' in changes:
            sizes = changes['patch_sizes']
            n = 1 if isinstance(sizes, int) else len(sizes)
            if n != len(self.patch_sizes) and n > 0:
                changes.setdefault('strides', (1,) * n)
                changes.setdefault('patch_weights', (1.0 / n,) * n)
        return replace(self, **changes)

    # ---------------------------------------------------------------- validation
    def _validate(self) -> None:
        n = len(self.patch_sizes)
        if n == 0:
            raise ConfigError('patch_sizes is empty: give at least one patch size, e.g. [5]')
        if len(self.strides) != n or len(self.patch_weights) != n:
            raise ConfigError(
                f'patch_sizes, strides and patch_weights need one entry per scale; got '
                f'{len(self.patch_sizes)}, {len(self.strides)} and {len(self.patch_weights)}')
        for name, values in (('patch_sizes', self.patch_sizes), ('strides', self.strides)):
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError(f'{name} must be positive integers; got {list(values)}')
        for w in self.patch_weights:
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError('patch_weights must be finite and non-negative; got '
                                  f'{list(self.patch_weights)}')
        if abs(sum(self.patch_weights) - 1.0) > 1e-6:
            raise ConfigError(
                f'patch_weights must sum to 1; got {list(self.patch_weights)} '
                f'(sum {sum(self.patch_weights):.6g})')
        if self.matcher not in MATCHERS:
            raise ConfigError(
                f"matcher must be one of {list(MATCHERS)}; got '{self.matcher}'")
        for name in ('num_pcs', 'top_k', 'image_height', 'image_width', 'num_clusters',
                     'encoder_dim'):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f'{name} must be a positive integer; got {v!r}')
        if self.num_pcs > self.vlad_dim:
            raise ConfigError(
                f'num_pcs ({self.num_pcs}) cannot exceed the NetVLAD size '
                f'num_clusters * encoder_dim = {self.vlad_dim}')
        largest = max(self.patch_sizes)
        if min(self.feature_height, self.feature_width) < largest:
            raise ConfigError(
                f'image size {self.image_width}x{self.image_height} gives a '
                f'{self.feature_width}x{self.feature_height} feature map, smaller than the '
                f'largest patch ({largest} cells = {largest * BACKBONE_STRIDE} px): use images of '
                f'at least {largest * BACKBONE_STRIDE} px per side or smaller patch_sizes')


#: The authors' configs (performance.ini, speed.ini, storage.ini of Patch-NetVLAD).
PRESETS: Dict[str, PatchNetVLADConfig] = {
    'performance': PatchNetVLADConfig(
        preset='performance', patch_sizes=(2, 5, 8), strides=(1, 1, 1),
        patch_weights=(0.45, 0.15, 0.4), num_pcs=4096, matcher='ransac'),
    'speed': PatchNetVLADConfig(
        preset='speed', patch_sizes=(5,), strides=(1,), patch_weights=(1.0,),
        num_pcs=512, matcher='spatial'),
    'storage': PatchNetVLADConfig(
        preset='storage', patch_sizes=(5,), strides=(1,), patch_weights=(1.0,),
        num_pcs=128, matcher='spatial'),
}

#: The preset of every CLI, node and the launch file when nothing names one: single scale,
#: 512 dims and rapid spatial scoring run at camera rates on a CPU, and a keyframe costs
#: about 1 MB of map (the performance preset: 23 MB and several seconds a frame).
DEFAULT_PRESET = 'speed'

#: Recall@N values reported by the paper.
RECALL_NS = (1, 5, 10, 20, 50, 100)


def get_config(preset: str = 'performance', **overrides: Any) -> PatchNetVLADConfig:
    """Return a preset, optionally with fields overridden (validated)."""
    try:
        base = PRESETS[preset]
    except KeyError:
        raise ConfigError(
            f"unknown preset '{preset}'; choose one of {sorted(PRESETS)}") from None
    return base.override(**overrides) if overrides else base


def cache_dir() -> Path:
    """Folder for converted weights: $PATCH_NETVLAD_CACHE, else ~/.cache/patch_netvlad_ros."""
    env = os.environ.get('PATCH_NETVLAD_CACHE')
    base = Path(env) if env else Path(os.path.expanduser('~')) / '.cache' / 'patch_netvlad_ros'
    return base
