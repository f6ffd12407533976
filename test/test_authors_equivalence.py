# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Side by side with the authors' implementation (patchnetvlad==0.1.8).

Same weights (our checkpoint loaded into their get_model with a strict load_state_dict),
same real images -> same global and patch descriptors, same spatial scores, RANSAC scores
within a stated tolerance, and the same rerank order from their own local_matcher
reading feature files from disk as their pipeline does.

One numerical difference is by design: their patch VLADs are read off a running-sum
integral image, which cancels catastrophically for clusters whose soft-assignment mass
inside a patch is tiny (1e-12 and less happens with real weights); intra-normalisation
then blows that rounding noise up to unit length. We sum each window directly. With their
integral swapped for exact box sums, their pipeline gives our descriptors to 1e-5.
"""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.authors import (authors_config, authors_describe, authors_keypoints,
                                authors_matcher, authors_model)
from conftest import CORRIDOR_SIZE, TEST_DATA
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.maps.retrieval import build_index, top_k
from patch_netvlad_ros.core.matching import rerank
from patch_netvlad_ros.core.matching.geometry import grids_for
from patch_netvlad_ros.core.matching.mutual_nn import mutual_nn
from patch_netvlad_ros.core.model.bootstrap import seeded_model
from patch_netvlad_ros.core.model.image import load_image, to_tensor

pnv_local = pytest.importorskip('patchnetvlad.models.local_matcher')
pnv_patch = pytest.importorskip('patchnetvlad.models.patchnetvlad')


@pytest.fixture
def exact_authors_integral(monkeypatch):
    """Their box means read off an exact window sum instead of a running-sum integral."""
    monkeypatch.setattr(pnv_patch, 'get_integral_feature', lambda feat: feat)
    monkeypatch.setattr(pnv_patch, 'get_square_regions_from_integral',
                        lambda feat, size, stride: torch.nn.functional.avg_pool2d(
                            feat, size, stride))


def authors_descriptors(theirs, images, dp, dtype=torch.float32):
    """Their feature_extract: global [B, Dp] and per scale [B, Dp, P] (as saved to .npy).

    dtype=float64 runs their NetVLAD/WPCA code in double precision on the float32 VGG
    features (their integral builds its box filter with the default dtype, hence
    set_default_dtype): the same equations without their float32 rounding.
    """
    with torch.no_grad():
        features = theirs.encoder(images)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return authors_describe(copy.deepcopy(theirs).to(dtype), features.to(dtype), dp)
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture(scope='module')
def tokyo():
    return [load_image(TEST_DATA / 'tokyo_pair' / 'tokyo_db.png'),
            load_image(TEST_DATA / 'tokyo_pair' / 'tokyo_query_640x480.jpg')]


def test_speed_preset_descriptors_equal_on_tokyo(corridor_model, tokyo, monkeypatch):
    # The real bootstrapped model (ImageNet VGG16 + k-means + WPCA) at the authors' 640x480.
    from patch_netvlad_ros.core.model.checkpoint import load_model
    ours = load_model(corridor_model.checkpoint_path, get_config('speed'))
    theirs = authors_model(ours)
    x = to_tensor(tokyo, ours.config)
    # their direct-convolution backbone under both (Winograd's deviation: test_winograd.py)
    mine = ours.extract(x, winograd=False)
    # Their unmodified float32 code: global descriptors agree.
    g32, p32 = authors_descriptors(theirs, x, ours.config.num_pcs)
    assert torch.allclose(mine.global_desc, g32, atol=1e-5)
    # Their code in float64 with exact window sums: the same equations, so the same
    # patch descriptors (their assignment, residuals, normalisation order and WPCA).
    with monkeypatch.context() as patch:
        patch.setattr(pnv_patch, 'get_integral_feature', lambda feat: feat)
        patch.setattr(pnv_patch, 'get_square_regions_from_integral',
                      lambda feat, size, stride: torch.nn.functional.avg_pool2d(
                          feat, size, stride))
        g64, exact = authors_descriptors(theirs, x, ours.config.num_pcs, torch.float64)
    assert torch.allclose(mine.global_desc.double(), g64, atol=1e-5)
    assert torch.allclose(mine.patches[0].double(), exact[0].transpose(1, 2), atol=1e-5)
    # Their running-sum integral is what separates their float32 patches from the exact
    # ones (whitening amplifies it); ours stay within float32 rounding of exact.
    ours_err = (mine.patches[0].double() - exact[0].transpose(1, 2)).abs().max().item()
    their_err = (p32[0].double() - exact[0]).abs().max().item()
    print(f'max |patch - exact|: ours {ours_err:.2e}, authors {their_err:.2e}')
    assert ours_err < 1e-5 < their_err


def test_performance_preset_descriptors_equal(tokyo, exact_authors_integral):
    # Real VGG16, seeded NetVLAD/WPCA at 4096 dims: 3 scales, 2826 patches per image.
    ours = seeded_model(get_config('performance'), seed=11, imagenet_encoder=True)
    theirs = authors_model(ours)
    x = to_tensor(tokyo[:1], ours.config)
    mine = ours.extract(x, winograd=False)                # their backbone, as above
    g, patches = authors_descriptors(theirs, x, 4096)
    assert torch.allclose(mine.global_desc, g, atol=1e-5)
    for a, b in zip(mine.patches, patches):
        assert a.shape == b.transpose(1, 2).shape
        assert torch.allclose(a, b.transpose(1, 2), atol=1e-5)


def checked_grids(cfg):
    """Our patch grids, checked to list patches in the authors' order."""
    grids = grids_for(cfg)
    for grid, (_, ind) in zip(grids, authors_keypoints(cfg)):
        assert np.array_equal(ind.T, grid.positions)         # same patch order
    return grids


def test_spatial_scores_equal(corridor_model, corridor_map, corridor_query_descriptors):
    cfg = corridor_model.config
    grids = checked_grids(cfg)
    matcher = authors_matcher(cfg, [0])
    _, q_patches = corridor_query_descriptors
    store = torch.from_numpy(np.asarray(corridor_map.patches[0], np.float32))
    for qi in (3, 40, 77):
        q = q_patches[0][qi]
        cands = list(range(0, 111, 7))
        ours = rerank.spatial_scores(mutual_nn(q, store[cands]), grids[0])
        theirs = [-matcher.match([q], [store[c].t()])[0][0] for c in cands]
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-9, atol=1e-9)


def test_ransac_scores_match_within_one_inlier(corridor_images, tmp_path):
    # Our patch centres are the exact receptive-field centres; theirs are truncated to
    # integer pixels (0.5 px apart). Inlier counts agree within one patch per candidate.
    cfg = get_config('performance', **CORRIDOR_SIZE)
    model = seeded_model(cfg, seed=5, imagenet_encoder=True)
    refs, queries = corridor_images
    db = model.extract(to_tensor(refs[20:32], cfg))
    q = model.extract(to_tensor(queries[25:26], cfg))
    for s, grid in enumerate(checked_grids(cfg)):
        matcher = authors_matcher(cfg, [s])
        ours = rerank.ransac_scores(mutual_nn(q.patches[s][0], db.patches[s]), grid)
        theirs = [-matcher.match([q.patches[s][0]], [db.patches[s][c].t()])[0][0]
                  for c in range(db.patches[s].shape[0])]
        np.testing.assert_allclose(ours.numpy() * grid.num_patches,
                                   np.array(theirs) * grid.num_patches, atol=1.0)


@pytest.mark.parametrize('preset', ['speed', 'performance'])
def test_rerank_order_equals_authors_local_matcher(
        preset, corridor_model, corridor_map, corridor_query_descriptors, corridor_images,
        tmp_path):
    if preset == 'speed':
        cfg = corridor_model.config.override(top_k=10)
        db_global = corridor_map.global_desc
        db_patches = [np.asarray(p, np.float32) for p in corridor_map.patches]
        q_global, q_patches = corridor_query_descriptors
        q_patches = [p.numpy() for p in q_patches]
        query_ids = list(range(0, 111, 5))
    else:  # three scales with RANSAC on 30 references around the queries
        cfg = get_config('performance', top_k=10, **CORRIDOR_SIZE)
        model = seeded_model(cfg, seed=5, imagenet_encoder=True)
        refs, queries = corridor_images
        db = model.extract(to_tensor(refs[30:60], cfg))
        qd = model.extract(to_tensor(queries[35:55:4], cfg))
        db_global, db_patches = db.global_desc.numpy(), [p.numpy() for p in db.patches]
        q_global, q_patches = qd.global_desc, [p.numpy() for p in qd.patches]
        query_ids = list(range(qd.global_desc.shape[0]))
    _, preds = top_k(build_index(db_global), np.asarray(q_global)[query_ids], cfg.top_k)

    # Their pipeline reads one float32 [Dp, P] .npy per image and patch size.
    names = [f'db{i:04d}' for i in range(len(db_global))] + [f'q{i:04d}' for i in query_ids]
    for s, size in enumerate(cfg.patch_sizes):
        for i in range(len(db_global)):
            np.save(tmp_path / f'db_psize{size}_db{i:04d}.npy', db_patches[s][i].T)
        for i in query_ids:
            np.save(tmp_path / f'q_psize{size}_q{i:04d}.npy', q_patches[s][i].T)
    eval_set = SimpleNamespace(images=[n + '.jpg' for n in names], numDb=len(db_global))
    theirs = pnv_local.local_matcher(preds, eval_set, str(tmp_path / 'q'),
                                     str(tmp_path / 'db'), authors_config(cfg),
                                     torch.device('cpu'))
    for row, (qi, pred) in enumerate(zip(query_ids, preds)):
        result = rerank.rerank([torch.from_numpy(p[qi]) for p in q_patches], db_patches,
                               pred, cfg)
        assert list(pred[result.order]) == list(theirs[row]), f'query {qi}'
