# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Training options and output file names (no torch: the CLI checks them before loading it)."""

from dataclasses import dataclass, fields
import math
from typing import Any, Dict, Optional

from .supervision import check_radii
from ..errors import ConfigError

#: Files in a training output folder.
STATE_FILE = 'state.pt'
MODEL_FILE = 'model.pth.tar'
REPORT_FILE = 'training.json'
OPTIMIZERS = ('sgd', 'adam')


@dataclass(frozen=True)
class TrainOptions:
    """What to train with; the defaults are the authors' (train.ini, MSLS).

    epochs: passes over the queries. batch_size: queries per step (each with its best
    positive and up to num_negatives hard negatives). margin: the authors' config margin
    (the loss's margin on distances is its square root). pos_radius / neg_radius (m):
    potential positives within, negatives beyond. refresh_every: steps between refreshes
    of the mining cache; cache_negatives: random images described per refresh.
    optimizer 'sgd' (with momentum, weight_decay, lr halved every lr_step epochs by
    lr_gamma) or 'adam' (with weight_decay, same schedule). pca_samples: VLAD vectors the
    final WPCA is fitted on (None: max(2 * num_pcs, 8192), see trainer.PCA_SAMPLES). augment:
    augmented copies of the drives, each trained as another drive (see :mod:`.augment`;
    0: none, the authors' recipe). seed: all randomness (query order, cache negatives,
    k-means, PCA samples, augmentations).
    """

    epochs: int = 10
    batch_size: int = 4
    num_negatives: int = 5
    margin: float = 0.1
    pos_radius: float = 10.0
    neg_radius: float = 25.0
    refresh_every: int = 250
    cache_negatives: int = 1000
    optimizer: str = 'sgd'
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-3
    lr_step: int = 5
    lr_gamma: float = 0.5
    pca_samples: Optional[int] = None
    augment: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ('epochs', 'batch_size', 'num_negatives', 'refresh_every',
                     'cache_negatives', 'lr_step'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f'{name} must be a positive integer; got {value!r}')
        if not isinstance(self.augment, int) or self.augment < 0:
            raise ConfigError(f'augment must be a non-negative integer; got {self.augment!r}')
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f'seed must be a non-negative integer; got {self.seed!r}')
        for name in ('margin', 'lr'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f'{name} must be a positive number; got {value!r}')
        check_radii(self.pos_radius, self.neg_radius)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f'optimizer must be one of {list(OPTIMIZERS)}; got '
                              f'{self.optimizer!r}')
        if not 0 <= self.momentum < 1:
            raise ConfigError(f'momentum must be in [0, 1); got {self.momentum}')
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f'weight_decay must be >= 0; got {self.weight_decay}')
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f'lr_gamma must be in (0, 1]; got {self.lr_gamma}')
        if self.pca_samples is not None and (not isinstance(self.pca_samples, int)
                                             or self.pca_samples < 2):
            raise ConfigError(f'pca_samples must be an integer of at least 2; got '
                              f'{self.pca_samples!r}')

    def fingerprint(self) -> Dict[str, Any]:
        """Return the options a resumed run must share (all but the number of epochs)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != 'epochs'}
