# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The frozen trunk, the trained conv5 block, and the on-disk cache of the trunk's maps.

The authors train VGG16's last conv block (conv5_1..conv5_3) and the NetVLAD layer; every
layer before conv5_1 keeps its ImageNet weights (their ``layers[:-5]`` frozen). Those
frozen layers are 86% of the backbone's arithmetic and give the same map for an image in
every epoch, so each training image passes through them once: their output (pool4,
[512, H/16, W/16]) is kept on disk, and training runs conv5 and NetVLAD on it.

A cached map is named by the SHA-256 of everything it depends on: the cache format, the
frozen weights, the image size, the convolution algorithm and the image's pixels at that
size. A changed image, other weights or another size give another name, so a stale map is
never read; a file that is truncated or of the wrong shape is computed again.
"""

import copy
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..model import winograd as wino
from ..model.image import to_tensor
from ..model.model import PatchNetVLAD

#: encoder[:TRUNK_END] is conv1_1 .. pool4 (frozen); encoder[TRUNK_END:] is conv5_1 ..
#: conv5_3 with their ReLUs (trained).
TRUNK_END = 24
#: Bumped when what a cache file holds changes.
CACHE_FORMAT = 1
PathLike = Union[str, Path]
Progress = Optional[Callable[[int], None]]


def trunk(model: PatchNetVLAD) -> nn.Sequential:
    """Return the frozen layers conv1_1 .. pool4: [B, 3, H, W] -> [B, 512, H/16, W/16]."""
    return model.encoder[:TRUNK_END]


def conv5_block(model: PatchNetVLAD) -> nn.Sequential:
    """Return the trained layers conv5_1 .. conv5_3 (sharing the model's parameters)."""
    return model.encoder[TRUNK_END:]


def trainable_parameters(model: PatchNetVLAD) -> List[nn.Parameter]:
    """conv5_1 .. conv5_3 weights and biases, then the NetVLAD centroids and assignment."""
    return [*conv5_block(model).parameters(), *model.pool.parameters()]


def trunk_digest(model: PatchNetVLAD) -> str:
    """SHA-256 of the frozen weights (names, shapes and float32 values)."""
    digest = hashlib.sha256()
    for name, value in trunk(model).state_dict().items():
        digest.update(f'{name}{tuple(value.shape)}'.encode())
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


#: Hex characters of a pixel key (64 bits): a checkpoint lists one per training image.
PIXEL_KEY_CHARS = 16


def pixel_key(image: np.ndarray) -> str:
    """Name an RGB uint8 image [H, W, 3] by its pixels alone (SHA-256 of shape and bytes).

    Unlike :meth:`FeatureCache.key` it depends on no model or cache setting: pnv-train
    lists its training images' pixel keys in the checkpoint, so that a map built of the
    same images (at the same size) can tell (:mod:`..map_building`).
    """
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f'{image.shape};{image.dtype};'.encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:PIXEL_KEY_CHARS]


class FeatureCache:
    """pool4 maps [512, H/16, W/16] (float32 .npy) of images, computed once, kept on disk.

    model: its frozen trunk makes the maps; size: (height, width) of the network input
    (images of another size are resized like :func:`~..image.to_tensor` does). winograd:
    the trunk's CPU algorithm (None: where it runs, see :func:`~..winograd.resolve`); it is
    part of the name because its float32 rounding differs from the direct one.
    """

    def __init__(self, folder: PathLike, model: PatchNetVLAD, size: Tuple[int, int],
                 device: Union[str, torch.device] = 'cpu',
                 winograd: Optional[bool] = None) -> None:
        self.folder = Path(folder)
        self.model = model
        self.size = (int(size[0]), int(size[1]))
        self.device = torch.device(device)
        self.winograd = wino.resolve(winograd, self.device)
        self.config = model.config.override(image_height=self.size[0],
                                            image_width=self.size[1])
        self._prefix = (f'format={CACHE_FORMAT};trunk={trunk_digest(model)};'
                        f'size={self.size};winograd={self.winograd};').encode()
        # a copy taken with the digest: the maps always come from the weights they are named by
        layers = copy.deepcopy(trunk(model)).to(self.device)
        self._layers = wino.winograd_encoder(layers) if self.winograd else layers
        self.computed = 0     # maps computed (not found in the cache) by this object

    @property
    def map_shape(self) -> Tuple[int, int, int]:
        """Shape of one cached map: (512, H/16, W/16)."""
        return (self.model.config.encoder_dim, self.size[0] // 16, self.size[1] // 16)

    def key(self, image: np.ndarray) -> str:
        """Name of an RGB uint8 image's map: SHA-256 of the cache identity and the pixels."""
        image = np.ascontiguousarray(image)
        digest = hashlib.sha256(self._prefix)
        digest.update(f'{image.shape};{image.dtype};'.encode())
        digest.update(image.tobytes())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """File of a key."""
        return self.folder / key[:2] / f'{key}.npy'

    def _valid(self, path: Path) -> bool:
        if not path.is_file():
            return False
        try:
            arr = np.load(path, mmap_mode='r')
        except (ValueError, OSError, EOFError):
            return False
        return arr.shape == self.map_shape and arr.dtype == np.float32

    def ensure(self, images: Iterable[np.ndarray], batch_size: int = 8,
               progress: Progress = None) -> List[Path]:
        """Return the map file of every image, computing the missing ones in batches.

        images: any iterable of RGB uint8 arrays (read one at a time: a drive's images need
        not be in memory). progress(n) is called as n more images are done.
        """
        paths: List[Path] = []
        pending: List[Tuple[Path, np.ndarray]] = []
        for image in images:
            path = self.path(self.key(image))
            paths.append(path)
            if self._valid(path) or any(p == path for p, _ in pending):
                if progress is not None:
                    progress(1)
                continue
            pending.append((path, image))
            if len(pending) == batch_size:
                self._compute(pending, progress)
                pending = []
        if pending:
            self._compute(pending, progress)
        return paths

    @torch.inference_mode()
    def _compute(self, pending: Sequence[Tuple[Path, np.ndarray]], progress: Progress) -> None:
        x = to_tensor([im for _, im in pending], self.config).to(self.device)
        maps = self._layers(x.contiguous(memory_format=torch.channels_last)).float().cpu()
        for (path, _), fmap in zip(pending, maps):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
            with open(tmp, 'wb') as handle:
                np.save(handle, fmap.contiguous().numpy())
            os.replace(tmp, path)          # never a half-written map under the real name
            self.computed += 1
        if progress is not None:
            progress(len(pending))


class FeatureStore:
    """Cached maps of the training images, read as batches on a device.

    Maps are memory-mapped (a long drive's maps need not fit in memory) unless they fit in
    ``preload_bytes``, then they are held as one tensor on the device (no copies per
    step; on a GPU no host-to-device transfer after the first).
    """

    def __init__(self, paths: Sequence[Path], device: Union[str, torch.device],
                 preload_bytes: int = 2 << 30) -> None:
        self.paths = list(paths)
        self.device = torch.device(device)
        self._maps = [np.load(p, mmap_mode='r') for p in self.paths]
        total = sum(m.nbytes for m in self._maps)
        self._all: Optional[torch.Tensor] = None
        if total <= preload_bytes:
            self._all = torch.from_numpy(np.stack(self._maps)).to(self.device)

    def __len__(self) -> int:
        """Return the number of maps."""
        return len(self.paths)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Return the maps [B, 512, h, w] (float32, on the device) of the given images."""
        index = [int(i) for i in indices]
        if self._all is not None:
            return self._all[torch.tensor(index, device=self.device)]
        return torch.from_numpy(np.stack([self._maps[i] for i in index])).to(self.device)
