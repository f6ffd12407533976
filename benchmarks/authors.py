# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Glue to the authors' implementation (patchnetvlad==0.1.8).

It is the reference that the benchmark and the equivalence tests run side by side with
ours. Imports of ``patchnetvlad`` happen inside the functions: it is a test/benchmark
dependency, not a runtime one.
"""

import configparser
import copy
from typing import List, Sequence, Tuple

import numpy as np
import torch

from patch_netvlad_ros.core.config import PatchNetVLADConfig
from patch_netvlad_ros.core.model.model import PatchNetVLAD

MATCHER_NAMES = {'ransac': 'RANSAC', 'spatial': 'spatialApproximator'}


def authors_config(cfg: PatchNetVLADConfig) -> configparser.ConfigParser:
    """Their ini sections ``global_params`` and ``feature_match`` for our configuration."""
    parser = configparser.ConfigParser()
    parser.read_dict({
        'global_params': {'pooling': 'patchnetvlad', 'num_clusters': str(cfg.num_clusters),
                          'vladv2': str(cfg.vladv2), 'num_pcs': str(cfg.num_pcs),
                          'patch_sizes': ','.join(map(str, cfg.patch_sizes)),
                          'strides': ','.join(map(str, cfg.strides))},
        'feature_match': {'matcher': MATCHER_NAMES[cfg.matcher],
                          'patchWeights2Use': ','.join(map(str, cfg.patch_weights)),
                          'imageresizeH': str(cfg.image_height),
                          'imageresizeW': str(cfg.image_width)}})
    return parser


def authors_model(ours: PatchNetVLAD) -> torch.nn.Module:
    """Their network with our weights (strict load: the layouts must be identical)."""
    from patchnetvlad.models.models_generic import get_model
    cfg = ours.config
    theirs = get_model(copy.deepcopy(ours.encoder), cfg.encoder_dim,
                       authors_config(cfg)['global_params'], append_pca_layer=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs.eval()


def authors_describe(theirs: torch.nn.Module, features: torch.Tensor,
                     dp: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Their feature_extract.py on backbone features [B, D, h, w], minus the .npy writes.

    Returns global [B, Dp] and per scale [B, Dp, P] (the layout they save).
    """
    from patchnetvlad.models.models_generic import get_pca_encoding
    with torch.no_grad():
        local, glob = theirs.pool(features)
        g = get_pca_encoding(theirs, glob)
        patches = []
        for this in local:
            flat = this.permute(2, 0, 1).reshape(-1, this.size(1))
            patches.append(get_pca_encoding(theirs, flat).reshape(
                this.size(2), this.size(0), dp).permute(1, 2, 0))
    return g, patches


def authors_keypoints(cfg: PatchNetVLADConfig) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Their (pixel keypoints [2, P], grid indices [2, P]) per scale."""
    from patchnetvlad.models.local_matcher import calc_keypoint_centers_from_patches
    section = authors_config(cfg)['feature_match']
    return [calc_keypoint_centers_from_patches(section, s, s, st, st)
            for s, st in zip(cfg.patch_sizes, cfg.strides)]


def authors_matcher(cfg: PatchNetVLADConfig, scales: Sequence[int]):
    """Their PatchMatcher for the given scales of a configuration."""
    from patchnetvlad.tools.patch_matcher import PatchMatcher
    keypoints = authors_keypoints(cfg)
    return PatchMatcher(MATCHER_NAMES[cfg.matcher], [cfg.patch_sizes[s] for s in scales],
                        [cfg.strides[s] for s in scales], [keypoints[s][0] for s in scales],
                        [keypoints[s][1] for s in scales])
