# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""FLOP counts: the analytic ones equal torch's operator counts of the real computation."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import flops
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.matching.mutual_nn import mutual_nn
from patch_netvlad_ros.core.model.backbone import build_encoder


def counted(fn) -> int:
    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        fn()
    return mode.get_total_flops()


def test_backbone_count_equals_the_convolutions_torch_runs():
    encoder = build_encoder().eval()
    for h, w in ((64, 96), (50, 70)):           # sizes that do not divide by 16 too
        x = torch.zeros(1, 3, h, w)
        assert counted(lambda: encoder(x)) == flops.backbone_flops(h, w)


def test_matching_count_equals_the_similarity_gemms():
    cfg = get_config('storage', image_height=96, image_width=128)
    p = cfg.num_patches(0)
    q = torch.randn(p, cfg.num_pcs)
    db = torch.randn(7, p, cfg.num_pcs)
    assert counted(lambda: mutual_nn(q, db)) == flops.matching_flops(cfg, 7)


def test_the_figures_the_issue_gives():
    # VGG16 to conv5_3 at 640x480 is about 0.19 TFLOP; the performance preset's projection
    # of 2826 patches from 32768 to 4096 dims about 0.76 TFLOP
    assert abs(flops.backbone_flops(480, 640) / 0.19e12 - 1) < 0.02
    perf = get_config('performance')
    assert sum(perf.num_patches(s) for s in range(3)) == 2826
    assert flops.extraction_flops(perf)['projection'] == 2 * 2827 * 32768 * 4096
    assert abs(flops.extraction_flops(perf)['projection'] / 0.76e12 - 1) < 0.01
    assert flops.descriptor_bytes(perf) == 2826 * 4096 * 2 + 4096 * 4
