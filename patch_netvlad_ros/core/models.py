# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Where a model comes from: a checkpoint file, or the bootstrapped corridor model.

The bootstrapped model is fitted on the shipped corridor references (ImageNet VGG16 +
k-means + WPCA) and cached as an authors' checkpoint. The demo, the nodes and the tests
all get their model here.
"""

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .backbone import cache_dir
from .bootstrap import bootstrap_model, RECIPE_VERSION
from .checkpoint import load_model, save_checkpoint
from .config import PatchNetVLADConfig
from .datasets import corridor
from .image import load_image
from .model import PatchNetVLAD

Log = Optional[Callable[[str], None]]


def corridor_checkpoint_path(config: PatchNetVLADConfig, seed: int = 0,
                             cache: Optional[Path] = None) -> Path:
    """Cache path of the bootstrapped corridor model for this preset and image size."""
    return (cache or cache_dir()) / (
        f'corridor_{config.preset}_{config.image_width}x{config.image_height}'
        f'_seed{seed}_v{RECIPE_VERSION}.pth.tar')


def corridor_model(config: PatchNetVLADConfig, images: Optional[Sequence[np.ndarray]] = None,
                   seed: int = 0, cache: Optional[Path] = None, log: Log = None,
                   progress: Optional[Callable[[int], None]] = None
                   ) -> Tuple[PatchNetVLAD, Path]:
    """Return the model bootstrapped from the corridor references (built once, cached)."""
    path = corridor_checkpoint_path(config, seed, cache)
    if path.is_file():
        return load_model(path, config), path
    if images is None:
        images = [load_image(p) for p in corridor().references]
    model = bootstrap_model(config, images, seed=seed, log=log, progress=progress)
    save_checkpoint(model, path)
    return model, path


def resolve_model(checkpoint: str, config: PatchNetVLADConfig, seed: int = 0,
                  log: Log = None) -> Tuple[PatchNetVLAD, str]:
    """Load ``checkpoint``, or the bootstrapped corridor model when it is empty.

    Returns the model and a description of where it came from.
    """
    if checkpoint:
        return load_model(checkpoint, config), str(checkpoint)
    model, path = corridor_model(config, seed=seed, log=log)
    return model, f'bootstrapped corridor model ({path})'
