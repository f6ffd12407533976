# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Bootstrap pieces against reference computations (whitened PCA, NetVLAD init); the cache."""

import math

import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.drives.datasets import corridor
from patch_netvlad_ros.core.maps.models import corridor_model
from patch_netvlad_ros.core.model.bootstrap import bootstrap_model, fit_wpca, init_netvlad
from patch_netvlad_ros.core.model.image import load_image
from patch_netvlad_ros.core.model.model import PatchNetVLAD


@pytest.mark.parametrize('n,dv', [(60, 200), (400, 40)])   # Gram (dual) and covariance paths
def test_whitened_pca_matches_eigendecomposition(n, dv, rng):
    scales = np.linspace(3.0, 0.1, dv)
    x = rng.normal(size=(n, dv)) * scales + rng.normal(size=dv)
    weight, bias = fit_wpca(torch.from_numpy(x.copy()).float(), 10)
    # whitened: the projected samples have zero mean and identity covariance
    y = x @ weight.double().numpy().T + bias.double().numpy()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y.T), np.eye(10), atol=2e-3)
    # rows are the top eigenvectors of the sample covariance scaled by 1/sqrt(lambda)
    lams, vecs = np.linalg.eigh(np.cov(x.T))
    top = vecs[:, ::-1][:, :10].T / np.sqrt(lams[::-1][:10, None])
    cos = np.abs((weight.double().numpy() * top).sum(1)) / (
        np.linalg.norm(weight.double().numpy(), axis=1) * np.linalg.norm(top, axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-4)


def test_vladv1_init_hand_computed():
    cfg = get_config('storage', num_clusters=2, encoder_dim=2, num_pcs=2,
                     image_height=128, image_width=128)
    model = PatchNetVLAD(cfg)
    centroids = np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
    descs = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    # unit centroids e1, e2: dots per descriptor (1, 0) and (0.6, 0.8): gaps 1 and 0.2
    alpha = init_netvlad(model, centroids, descs)
    assert alpha == pytest.approx(-math.log(0.01) / 0.6)
    np.testing.assert_allclose(model.pool.conv.weight[:, :, 0, 0].detach().numpy(),
                               alpha * np.eye(2), rtol=1e-6)
    assert torch.equal(model.pool.centroids.detach(), torch.from_numpy(centroids))


def test_vladv2_init_hand_computed():
    cfg = get_config('storage', num_clusters=2, encoder_dim=2, num_pcs=2, vladv2=True,
                     image_height=128, image_width=128)
    model = PatchNetVLAD(cfg)
    centroids = np.array([[0.0, 0.0], [3.0, 0.0]], np.float32)
    descs = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], np.float32)
    # squared distances to the two nearest descriptors: c0 -> 1, 4; c1 -> 1, 4
    alpha = init_netvlad(model, centroids, descs)
    assert alpha == pytest.approx(-math.log(0.01) / 3.0)
    c = torch.from_numpy(centroids)
    assert torch.allclose(model.pool.conv.weight[:, :, 0, 0].detach(), 2 * alpha * c)
    assert torch.allclose(model.pool.conv.bias.detach(), -alpha * (c * c).sum(1))


def test_corridor_model_bootstraps_into_an_empty_cache_then_loads_it(tmp_path):
    # the path the nodes, the demo and the tests take on a fresh machine (no log given)
    cfg = get_config('storage', image_height=128, image_width=128, num_clusters=8, num_pcs=16)
    images = [load_image(p) for p in corridor().references[:4]]
    built, path = corridor_model(cfg, images, cache=tmp_path)
    assert path.is_file() and path.parent == tmp_path
    lines = []
    again = bootstrap_model(cfg, images, log=lines.append)     # deterministic for a seed
    assert [line.split(':')[0] for line in lines] == [
        'encoding 4 reference images', 'k-means', 'whitened PCA']
    loaded, same_path = corridor_model(cfg, cache=tmp_path)    # from the cache, not rebuilt
    assert same_path == path
    for name, value in built.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
        assert torch.equal(value, again.state_dict()[name]), name
