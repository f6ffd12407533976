# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Shared fixtures: real data shipped in the repository, seeded models, a bootstrapped
model for the corridor references (cached like the demo's), and their descriptors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.config import get_config, PatchNetVLADConfig
from patch_netvlad_ros.core.model import PatchNetVLAD

TEST_DATA = Path(__file__).resolve().parent / 'data'

#: The corridor is evaluated at 320x240 (its images are 160x120): the demo's setting.
CORRIDOR_SIZE = {'image_height': 240, 'image_width': 320}


def seeded_model(config: PatchNetVLADConfig, seed: int = 0,
                 encoder: bool = False) -> PatchNetVLAD:
    """A model with random but well-conditioned NetVLAD/WPCA weights (vladv1 layout).

    encoder=True loads the real ImageNet VGG16 conv weights.
    """
    gen = torch.Generator().manual_seed(seed)
    model = PatchNetVLAD(config).eval()
    k, d = config.num_clusters, config.encoder_dim
    with torch.no_grad():
        c = torch.nn.functional.normalize(torch.randn(k, d, generator=gen), dim=1) * 0.5
        model.pool.centroids.copy_(c)
        assign = 20.0 * torch.nn.functional.normalize(c, dim=1)
        model.pool.conv.weight.copy_(assign[..., None, None])
        if model.pool.conv.bias is not None:
            model.pool.conv.bias.copy_(torch.randn(k, generator=gen))
        w = torch.randn(config.num_pcs, k * d, generator=gen) / (k * d) ** 0.5
        model.WPCA[0].weight.copy_(w[..., None, None])
        model.WPCA[0].bias.copy_(torch.randn(config.num_pcs, generator=gen) * 0.01)
        if encoder:
            from patch_netvlad_ros.core.backbone import imagenet_encoder_state
            model.encoder.load_state_dict(imagenet_encoder_state())
    return model


@pytest.fixture(scope='session')
def corridor_set():
    """The corridor image set shipped in the package."""
    from patch_netvlad_ros.core.datasets import corridor
    return corridor()


@pytest.fixture(scope='session')
def corridor_images(corridor_set):
    """(reference images, query images) as RGB arrays."""
    from patch_netvlad_ros.core.image import load_image
    return ([load_image(p) for p in corridor_set.references],
            [load_image(p) for p in corridor_set.queries])


@pytest.fixture(scope='session')
def corridor_model(corridor_images):
    """Speed-preset model bootstrapped from the corridor references (cached checkpoint)."""
    from patch_netvlad_ros.cli.demo import corridor_model as build
    from patch_netvlad_ros.core.backbone import cache_dir
    config = get_config('speed', **CORRIDOR_SIZE)
    model, path = build(config, corridor_images[0], seed=0, cache=cache_dir())
    model.checkpoint_path = path
    return model


@pytest.fixture(scope='session')
def corridor_map(corridor_model, corridor_images):
    """Map of the corridor references built with :func:`corridor_model`."""
    from patch_netvlad_ros.core.database import Reference
    from patch_netvlad_ros.core.extraction import build_reference_map
    refs = [Reference(id=f'{i:07d}', stamp=float(i), x=float(i))
            for i in range(len(corridor_images[0]))]
    return build_reference_map(corridor_model, corridor_images[0], refs)


@pytest.fixture(scope='session')
def corridor_query_descriptors(corridor_model, corridor_images):
    """Descriptors of every corridor query: (global [Q, Dp], patches per scale [Q, P, Dp])."""
    from patch_netvlad_ros.core.extraction import describe_batches
    batches = list(describe_batches(corridor_model, corridor_images[1]))
    return (torch.cat([b.global_desc for b in batches]),
            [torch.cat([b.patches[s] for b in batches]) for s in range(len(batches[0].patches))])


@pytest.fixture
def rng():
    """A seeded numpy generator."""
    return np.random.default_rng(1234)
