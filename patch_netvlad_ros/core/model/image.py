# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Validating and preparing images for the network.

The network sees what the authors' ``input_transform`` gives it: RGB, resized to
the configured size (bilinear with antialiasing, like torchvision's Resize on PIL
images), scaled to 0..1 and normalised with the ImageNet mean and std.
"""

from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .backbone import IMAGENET_MEAN, IMAGENET_STD
from ..config import BACKBONE_STRIDE, PatchNetVLADConfig
from ..errors import ImageError


def check_image(image: np.ndarray, min_side: int = BACKBONE_STRIDE) -> None:
    """Raise :class:`ImageError` unless image is a finite H x W x 3 RGB array.

    uint8 images are 0..255; float images must lie in 0..1. min_side: smallest
    accepted height and width in pixels (one backbone cell by default; the size the
    network sees is the configuration's, checked against the largest patch there).
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f'expected a numpy array, got {type(image).__name__}')
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ImageError(
            f'grayscale image of shape {image.shape}: the network needs 3-channel RGB; '
            'convert it first, e.g. cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)')
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f'expected an H x W x 3 RGB image; got shape {image.shape}'
                         + (' (drop the alpha channel first)'
                            if image.ndim == 3 and image.shape[2] == 4 else ''))
    if image.dtype == np.uint8:
        pass
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ImageError('image contains NaN or Inf values')
        if image.min() < 0.0 or image.max() > 1.0:
            raise ImageError(f'float images must lie in [0, 1]; got [{image.min():.3g}, '
                             f'{image.max():.3g}] (pass uint8 for 0..255 data)')
    else:
        raise ImageError(f'unsupported image dtype {image.dtype}: use uint8 (0..255) or '
                         'float32/float64 (0..1)')
    if min(image.shape[:2]) < min_side:
        raise ImageError(
            f'image {image.shape[1]}x{image.shape[0]} is too small: at least {min_side} px '
            'per side are needed')


def to_tensor(images: Union[np.ndarray, Sequence[np.ndarray]],
              config: PatchNetVLADConfig) -> torch.Tensor:
    """Normalised network input [B, 3, H, W] from RGB images (H x W x 3 each).

    Each image is validated (see :func:`check_image`), resized to the config's size and
    normalised. A single image gives B = 1.
    """
    if isinstance(images, np.ndarray) and images.ndim != 4:
        images = [images]
    out = torch.empty(len(images), 3, config.image_height, config.image_width)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i, image in enumerate(images):
        check_image(image)
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        if image.dtype == np.uint8:
            t = t / 255.0
        if t.shape[1:] != (config.image_height, config.image_width):
            t = F.interpolate(t[None], size=(config.image_height, config.image_width),
                              mode='bilinear', align_corners=False, antialias=True)[0]
        out[i] = (t - mean) / std
    return out


def load_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; grayscale files are expanded to RGB."""
    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if data is None:
        raise ImageError(f'cannot read image {path}: missing file or unsupported format')
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] resized to [height, width, 3] the way :func:`to_tensor` does.

    Antialiased bilinear, rounded back to uint8: the camera batcher sends images at the
    network's size so that live descriptors equal the offline ones up to that rounding.
    """
    check_image(image)
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image, dtype=np.uint8)
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(height, width), mode='bilinear', align_corners=False,
                      antialias=True)
    return t[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()
