# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Augmented copies of a drive: synthetic second visits when there is only one drive.

One drive gives positives that are neighbouring frames of the same pass, seconds apart:
nearly the same image, nothing to learn about seeing a place again from elsewhere in the
lane, at another exposure. Each augmented copy of the training images is treated as
another drive (same poses), so an image's positives are warped and re-exposed views of
its place (see :mod:`.supervision`).

A copy's warp is one homography (a random crop of 70-100% of the area with its aspect
changed by up to 15%, whose corners move by up to 8% of the image size: a viewpoint a
little to the side, nearer or turned) and its photometry a random brightness, contrast
and saturation (x0.7-1.3 each). Each image's parameters come from (seed, copy, image
index) alone, so a copy is the same pixels in every run, and its pool4 maps are cached
like the originals' (the cache names them by their pixels). Computing them costs one
trunk pass per image and copy, once.
"""

from typing import Iterable, Iterator

import cv2
import numpy as np

#: Ranges of the random parameters (see the module doc).
AREA = (0.70, 1.0)
ASPECT = (1 / 1.15, 1.15)
CORNER_JITTER = 0.08
PHOTOMETRIC = (0.7, 1.3)


def _warp(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    area = rng.uniform(*AREA)
    aspect = np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1])))
    cw = min(1.0, np.sqrt(area * aspect)) * w
    ch = min(1.0, np.sqrt(area / aspect)) * h
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    src = np.array([[x0, y0], [x0 + cw, y0], [x0 + cw, y0 + ch], [x0, y0 + ch]])
    src += rng.uniform(-CORNER_JITTER, CORNER_JITTER, size=(4, 2)) * [w, h]
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    return cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    brightness, contrast, saturation = rng.uniform(*PHOTOMETRIC, size=3)
    x = image.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey[..., None]) * saturation + grey[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment_image(image: np.ndarray, seed: int, copy: int, index: int) -> np.ndarray:
    """Return the augmented view [H, W, 3] uint8 of an RGB image for (seed, copy, index)."""
    rng = np.random.default_rng([seed, copy, index])
    return _photometric(_warp(np.ascontiguousarray(image), rng), rng)


def augmented(images: Iterable[np.ndarray], seed: int, copy: int,
              first_index: int = 0) -> Iterator[np.ndarray]:
    """Augmented views of a stream of images (index = first_index + position)."""
    for i, image in enumerate(images):
        yield augment_image(image, seed, copy, first_index + i)
