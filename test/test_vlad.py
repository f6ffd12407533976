# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""IntegralVLAD patch descriptors against a brute-force per-window VLAD.

Both ways of taking the patch boxes are checked: the torch one (0/1 band GEMMs) and the
C helper ``native/patch_vlad.c``, the default on the CPU where it builds; and both ways of
projecting, in each: each window's VLAD, or each cell's residual summed over the windows
(the default where there are fewer cells than patches).
"""

import numpy as np
import pytest
import torch

from conftest import run_without_native
from patch_netvlad_ros.core import native
from patch_netvlad_ros.core.config import get_config, PRESETS
from patch_netvlad_ros.core.model import vlad
from patch_netvlad_ros.core.model.bootstrap import seeded_model
from patch_netvlad_ros.core.model.image import to_tensor

needs_c_boxes = pytest.mark.skipif(
    not vlad.native_boxes_available(),
    reason=f'no C helper for the patch boxes here: {native.unavailable_reason("patch_vlad")}')

#: the patch boxes in torch (projecting by the default rule, or always each window), and
#: in C where the helper builds
BOXES = ['torch', 'torch-windows', pytest.param('c', marks=needs_c_boxes)]


@pytest.fixture
def boxes(request, monkeypatch):
    """Make model.aggregate (which takes the C boxes where they build) use the ones named."""
    monkeypatch.setattr(vlad, 'native_boxes_available', lambda: request.param == 'c')
    if request.param == 'torch-windows':
        monkeypatch.setattr(vlad, 'projects_cells', lambda *args: False)
    return request.param


def brute_force(model, features):
    """Per-window VLAD computed from scratch in float64: global [Dp], patches per scale."""
    cfg = model.config
    f = features[0].double()                                   # [D, h, w]
    _, h, w = f.shape
    x = f / f.norm(dim=0, keepdim=True)
    logits = torch.einsum('kd,dhw->khw', model.pool.conv.weight[:, :, 0, 0].double(), x)
    if model.pool.conv.bias is not None:
        logits = logits + model.pool.conv.bias.double()[:, None, None]
    a = torch.softmax(logits, dim=0)                           # [K, h, w]
    c = model.pool.centroids.double()
    wpca = model.pca_weight.double()
    b = model.pca_bias.double()

    def describe(window_a, window_x, area=1.0):
        # window_a [K, n], window_x [D, n]: v_k = sum_n a_kn (x_n - c_k); patches are
        # normalised as window means (sum / d^2), as in the authors' code
        v = (window_a @ window_x.t() - window_a.sum(1, keepdim=True) * c) / area
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)      # F.normalize's eps
        v = v.reshape(-1) / v.reshape(-1).norm().clamp_min(1e-12)
        y = wpca @ v + b
        return y / y.norm()

    g = describe(a.reshape(a.shape[0], -1), x.reshape(x.shape[0], -1))
    patches = []
    for size, stride in zip(cfg.patch_sizes, cfg.strides):
        rows = []
        for r0 in range(0, h - size + 1, stride):
            for c0 in range(0, w - size + 1, stride):
                wa = a[:, r0:r0 + size, c0:c0 + size].reshape(a.shape[0], -1)
                wx = x[:, r0:r0 + size, c0:c0 + size].reshape(x.shape[0], -1)
                rows.append(describe(wa, wx, float(size * size)))
        patches.append(torch.stack(rows))
    return g, patches


CASES = [
    # (preset, overrides, feature map h x w): non-square maps, sizes not dividing the map
    ('performance', {}, (13, 19)),
    ('performance', {'strides': (2, 3, 1)}, (17, 11)),
    ('speed', {}, (9, 14)),
    ('speed', {'strides': (2,)}, (11, 8)),
    ('storage', {}, (7, 12)),
    ('storage', {'vladv2': True}, (10, 6)),
]


@pytest.mark.parametrize('boxes', BOXES, indirect=True)
@pytest.mark.parametrize('preset,overrides,hw', CASES)
def test_integral_vlad_equals_brute_force_small_dims(preset, overrides, hw, boxes):
    # K=8 clusters of D=16 dims keep the brute force fast; the window logic is the same.
    base = PRESETS[preset]
    cfg = base.override(num_clusters=8, encoder_dim=16, num_pcs=min(base.num_pcs, 100),
                        image_height=16 * hw[0], image_width=16 * hw[1], **overrides)
    model = seeded_model(cfg, seed=3)
    features = torch.randn(1, 16, *hw, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ours = model.aggregate(features)
    g, patches = brute_force(model, features)
    assert torch.allclose(ours.global_desc[0].double(), g, atol=2e-6)
    assert len(ours.patches) == len(cfg.patch_sizes)
    for i, (mine, ref) in enumerate(zip(ours.patches, patches)):
        assert mine.shape[1] == cfg.num_patches(i) == ref.shape[0]
        assert torch.allclose(mine[0].double(), ref, atol=2e-6), f'scale {i}'


@pytest.mark.parametrize('boxes', BOXES, indirect=True)
def test_integral_vlad_equals_brute_force_full_size_performance(boxes):
    # Real sizes (K=64, D=512, 4096 PCs) on a non-square map that no patch size divides.
    cfg = get_config('performance', image_height=16 * 11, image_width=16 * 13)
    model = seeded_model(cfg, seed=7)
    features = torch.randn(1, 512, 11, 13, generator=torch.Generator().manual_seed(9)).relu()
    with torch.inference_mode():
        ours = model.aggregate(features)
    g, patches = brute_force(model, features)
    assert torch.allclose(ours.global_desc[0].double(), g, atol=2e-5)
    for mine, ref in zip(ours.patches, patches):
        assert torch.allclose(mine[0].double(), ref, atol=2e-5)


def test_batch_gives_same_descriptors_as_single_images():
    cfg = get_config('speed', image_height=16 * 9, image_width=16 * 12)
    model = seeded_model(cfg)
    features = torch.randn(3, 512, 9, 12, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        batch = model.aggregate(features)
        for i in range(3):
            single = model.aggregate(features[i:i + 1])
            assert torch.allclose(batch.global_desc[i], single.global_desc[0], atol=1e-6)
            assert torch.allclose(batch.patches[0][i], single.patches[0][0], atol=1e-6)


@pytest.mark.parametrize('size,stride', [(1, 1), (2, 1), (3, 2), (5, 3), (4, 4)])
def test_box_sums_match_naive_window_sums(size, stride, rng):
    t = torch.from_numpy(rng.normal(size=(4, 9, 11)))
    rows, cols = vlad.grid_shape(9, 11, size, stride)
    got = vlad.box_sums(t, size, stride)[:, vlad.column_major_to_row_major(rows, cols)]
    want = torch.stack([t[:, r:r + size, c:c + size].sum((1, 2))
                        for r in range(0, 9 - size + 1, stride)
                        for c in range(0, 11 - size + 1, stride)], dim=1)
    assert torch.allclose(got, want, atol=1e-12)


def test_patch_count_formula():
    cfg = get_config('performance')
    # n_p = (floor((H - d) / s) + 1) * (floor((W - d) / s) + 1) at 640x480 (30 x 40 cells)
    assert [cfg.num_patches(i) for i in range(3)] == [29 * 39, 26 * 36, 23 * 33]
    assert sum(cfg.num_patches(i) for i in range(3)) == 2826
    assert np.prod(vlad.grid_shape(30, 40, 8, 3)) == (22 // 3 + 1) * (32 // 3 + 1)


@needs_c_boxes
@pytest.mark.parametrize('sizes,strides,per_cell', [
    ((2, 5, 8), (1, 1, 1), True),     # the performance preset's scales: more patches than cells
    ((2, 5, 8), (1, 2, 3), True),
    ((5,), (1,), False),              # the speed and storage presets': boxes, then projected
    ((3, 5), (2, 3), False)])
def test_c_path_equals_torch_boxes_on_real_features(corridor_model, corridor_images, sizes,
                                                    strides, per_cell):
    # real corridor frames through the trained speed model (its WPCA projects windows of
    # any size), with chunks that split the clusters
    model = corridor_model
    with torch.inference_mode():
        features = model.encode(to_tensor(corridor_images[1][10:12], model.config))
        x, a = model.assign(features)
        h, w = features.shape[2:]
        assert vlad.projects_cells(h, w, sizes, strides) == per_cell
        for i in range(2):
            args = (x[i], a[i], model.pool.centroids, model.pca_weight, model.pca_bias, h, w,
                    sizes, strides)
            for chunk in (16 << 20, 1 << 20):
                ref = vlad.patch_descriptors(*args, chunk_bytes=chunk, native_boxes=False,
                                             per_cell=False)
                # the default C path, then each path with each projection
                for in_c, cells in ((True, None), (True, not per_cell), (False, True)):
                    mine = vlad.patch_descriptors(*args, chunk_bytes=chunk,
                                                  native_boxes=in_c, per_cell=cells)
                    for size, stride, m, r in zip(sizes, strides, mine, ref):
                        rows, cols = vlad.grid_shape(h, w, size, stride)
                        assert m.shape == r.shape == (rows * cols, model.config.num_pcs)
                        torch.testing.assert_close(m, r, rtol=0, atol=1e-6)


@needs_c_boxes
@pytest.mark.parametrize('dim,dp', [(20, 10), (3, 70)])
@pytest.mark.parametrize('strides,per_cell', [((1, 2), False), ((1, 1), True)])
def test_c_path_with_empty_clusters_and_odd_dims(rng, dim, dp, strides, per_cell):
    # descriptor and output dims that no vector register or block divides, and clusters
    # with no assignment mass in some windows (their norm is clamped at eps and they add
    # nothing): equal to the torch boxes and to the same formula in float64
    k, h, w = 6, 7, 9
    assert vlad.projects_cells(h, w, (2, 3), strides) == per_cell
    x = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(dim, h * w))), dim=0)
    a = torch.softmax(torch.from_numpy(rng.normal(size=(k, h * w))), 0)
    a[2, :30] = 0.0             # cluster 2 is empty in the top rows' windows
    a[5] = 0.0                  # cluster 5 is empty everywhere
    c = torch.from_numpy(rng.normal(size=(k, dim)))
    wpca = torch.from_numpy(rng.normal(size=(dp, k * dim)))
    b = torch.from_numpy(rng.normal(size=dp))
    args64 = (x, a, c, wpca, b, h, w, (2, 3), strides)
    args32 = tuple(t.float() if torch.is_tensor(t) else t for t in args64)
    exact = vlad.patch_descriptors(*args64, native_boxes=False, per_cell=False)
    ref = vlad.patch_descriptors(*args32, native_boxes=False, per_cell=False)
    for chunk in (16 << 20, 1 << 10):   # one chunk, and one cluster per chunk
        for in_c, cells in ((True, None), (True, not per_cell), (False, True)):
            mine = vlad.patch_descriptors(*args32, chunk_bytes=chunk, native_boxes=in_c,
                                          per_cell=cells)
            for m, r, e in zip(mine, ref, exact):
                torch.testing.assert_close(m, r, rtol=0, atol=1e-6)
                torch.testing.assert_close(m.double(), e, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match='float32 CPU tensors; got torch.float64'):
        vlad.patch_descriptors(*args64, native_boxes=True)


def test_per_cell_projection_is_the_default_where_it_saves_work():
    performance, speed = ((2, 5, 8), (1, 1, 1)), ((5,), (1,))     # at 640x480: 30 x 40 cells
    assert vlad.projects_cells(30, 40, *performance)                  # 1200 < 2826 patches
    assert not vlad.projects_cells(30, 40, *speed)                    # 1200 > 936


def test_without_the_c_helper_the_torch_boxes_run():
    code = ('import torch; from patch_netvlad_ros.core.model import vlad\n'
            'x = torch.nn.functional.normalize(torch.rand(8, 20), dim=0)\n'
            'a = torch.softmax(torch.rand(3, 20), 0)\n'
            'args = (x, a, torch.rand(3, 8), torch.rand(4, 24), torch.rand(4), 4, 5, (2,), (1,))\n'
            'print(vlad.native_boxes_available(), vlad.patch_descriptors(*args)[0].shape)\n'
            'try:\n    vlad.patch_descriptors(*args, native_boxes=True)\n'
            'except RuntimeError as e:\n    print(e)')
    assert run_without_native(code) == [
        'False torch.Size([12, 4])',
        'the C patch boxes are not available here: disabled by PATCH_NETVLAD_NATIVE=0']
