# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Arithmetic and bytes of Patch-NetVLAD, to set measured speed against the ceiling.

Counts are floating-point operations of the method itself (a multiply-add counts 2),
independent of how an implementation computes them:
- backbone: the 13 3x3 convolutions of VGG16 up to conv5_3 (0.19 TFLOP at 640x480);
- assignment: the 1x1 soft-assignment convolution (K x D per feature cell);
- aggregation: sum_n a_k(n) (x_n - c_k) for the global VLAD (K x D per cell), and each
  patch's residual sum read from an integral image (4 terms of K x D per patch);
- projection: WPCA of every patch and of the global VLAD (K D x Dp each; 0.76 TFLOP for
  the performance preset's 2826 patches at 640x480);
- matching: the similarity GEMMs of mutual nearest neighbours, C x P_s^2 x Dp per scale.
"""

from typing import Dict

from patch_netvlad_ros.core.config import PatchNetVLADConfig

#: VGG16's convolutions up to conv5_3: (input channels, output channels), 'M' = 2x2 max
#: pool (stride 2, floor), as torchvision defines the network.
VGG16_TO_CONV5_3 = ((3, 64), (64, 64), 'M', (64, 128), (128, 128), 'M', (128, 256),
                    (256, 256), (256, 256), 'M', (256, 512), (512, 512), (512, 512), 'M',
                    (512, 512), (512, 512), (512, 512))


def backbone_flops(height: int, width: int) -> int:
    """Count the FLOPs of VGG16 to conv5_3 on one height x width image (padding 1)."""
    total, h, w = 0, height, width
    for layer in VGG16_TO_CONV5_3:
        if layer == 'M':
            h, w = h // 2, w // 2
            continue
        c_in, c_out = layer
        total += 2 * 9 * c_in * c_out * h * w
    return total


def extraction_flops(config: PatchNetVLADConfig) -> Dict[str, int]:
    """Count the FLOPs per image of descriptor extraction, by stage (see the module doc)."""
    cells = config.feature_height * config.feature_width
    kd = config.num_clusters * config.encoder_dim
    patches = sum(config.num_patches(s) for s in range(len(config.patch_sizes)))
    return {
        'backbone': backbone_flops(config.image_height, config.image_width),
        'assignment': 2 * cells * kd,
        'aggregation': 2 * cells * kd + 4 * patches * kd,
        'projection': 2 * (patches + 1) * kd * config.num_pcs,
    }


def matching_flops(config: PatchNetVLADConfig, candidates: int) -> int:
    """Count the FLOPs of the mutual-nearest-neighbour similarities of one rerank."""
    return sum(2 * candidates * config.num_patches(s) ** 2 * config.num_pcs
               for s in range(len(config.patch_sizes)))


def descriptor_bytes(config: PatchNetVLADConfig) -> int:
    """Bytes of one image's descriptors in a map: float16 patches, float32 global."""
    patches = sum(config.num_patches(s) for s in range(len(config.patch_sizes)))
    return 2 * patches * config.num_pcs + 4 * config.num_pcs
