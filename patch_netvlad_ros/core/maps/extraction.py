# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The extraction loop: images in, descriptors out, in batches; and building a map."""

import itertools
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch

from .database import PATCH_DTYPE, Reference, ReferenceMap
from ..errors import MapError
from ..model.checkpoint import model_digest
from ..model.image import to_tensor
from ..model.model import Descriptors, PatchNetVLAD


def describe_batches(model: PatchNetVLAD, images: Iterable[np.ndarray], batch_size: int = 4,
                     with_patches: bool = True,
                     progress: Optional[Callable[[int], None]] = None,
                     encoder_dtype: Optional[torch.dtype] = None,
                     winograd: Optional[bool] = None) -> Iterator[Descriptors]:
    """Descriptors of RGB images, one :class:`Descriptors` per batch of batch_size.

    images: any iterable (a generator is read one batch at a time, so a drive's images
    need not all be in memory). encoder_dtype, winograd: backbone precision and algorithm
    (see :meth:`PatchNetVLAD.extract`).
    """
    images = iter(images)
    while batch := list(itertools.islice(images, batch_size)):
        yield model.extract(to_tensor(batch, model.config), with_patches=with_patches,
                            encoder_dtype=encoder_dtype, winograd=winograd)
        if progress is not None:
            progress(len(batch))


def build_reference_map(model: PatchNetVLAD, images: Sequence[np.ndarray],
                        references: Sequence[Reference], batch_size: int = 4,
                        base: Optional[ReferenceMap] = None,
                        progress: Optional[Callable[[int], None]] = None,
                        encoder_dtype: Optional[torch.dtype] = None,
                        winograd: Optional[bool] = None) -> ReferenceMap:
    """Describe reference images and return a map (appended to ``base`` if given).

    images and references pair up one to one. Patch descriptors are stored as float16.
    encoder_dtype, winograd: backbone precision and algorithm (see
    :meth:`PatchNetVLAD.extract`).
    """
    if len(images) != len(references):
        raise MapError(f'{len(images)} images for {len(references)} references')
    if len(images) == 0 and base is None:
        raise MapError('no reference images: a map needs at least one')
    digest = model_digest(model)
    if base is None:
        base = ReferenceMap.empty(model.config, digest)
    base.check_extension(digest, model.config, references)
    globals_: List[np.ndarray] = []
    patches: List[List[np.ndarray]] = [[] for _ in model.config.patch_sizes]
    for desc in describe_batches(model, images, batch_size, progress=progress,
                                 encoder_dtype=encoder_dtype, winograd=winograd):
        globals_.append(desc.global_desc.cpu().numpy())
        for store, p in zip(patches, desc.patches):
            store.append(p.cpu().numpy().astype(PATCH_DTYPE))
    return base.extended(references, np.concatenate(globals_),
                         [np.concatenate(p) for p in patches])
