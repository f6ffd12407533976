# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Winograd F(4x4, 3x3) convolutions against float64 direct convolutions and on real images.

References: torch's direct convolution in float64 (exact to ~1e-15 here) and in float32 (the
rounding Winograd is compared with); the paper's transform matrices written out by hand.
"""

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from conftest import run_without_native
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.evaluation.evaluation import recall_at_n
from patch_netvlad_ros.core.model import winograd
from patch_netvlad_ros.core.model.model import PatchNetVLAD

needs_helper = pytest.mark.skipif(
    not winograd.available(),
    reason=f'Winograd C helper not built here ({winograd.native.unavailable_reason("winograd")})')

#: Lavin and Gray's F(4x4, 3x3) input and output transforms, as printed in the paper.
BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                  dtype=torch.float64)
AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                   [0, 1, -1, 8, -8, 1]], dtype=torch.float64)


def test_transforms_compute_a_3x3_correlation_on_one_tile(rng):
    # A^T [(G g G^T) . (B^T d B)] A is the 4 x 4 valid correlation of a 6 x 6 tile
    d = torch.from_numpy(rng.normal(size=(6, 6)))
    g = torch.from_numpy(rng.normal(size=(3, 3)))
    y = AT @ ((winograd.G @ g @ winograd.G.T) * (BT @ d @ BT.T)) @ AT.T
    direct = torch.tensor([[(d[i:i + 3, j:j + 3] * g).sum() for j in range(4)]
                           for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(y, direct, rtol=0, atol=1e-12)
    u = winograd.transform_weights(g[None, None].float())          # [36, C=1, K=1]
    torch.testing.assert_close(u[:, 0, 0].double(), (winograd.G @ g @ winograd.G.T).flatten(),
                               rtol=1e-6, atol=1e-7)


@needs_helper
@pytest.mark.parametrize('n,c,k,h,w,relu,pool', [
    (2, 16, 32, 13, 10, True, False),  # partial tiles at the bottom and the right
    (1, 64, 16, 8, 8, False, False),   # exact tiles, no ReLU (conv5_3)
    (3, 32, 48, 5, 21, True, False),   # one tile row, K not a power of two
    (2, 16, 32, 13, 10, True, True),   # + the 2x2 max-pool: odd rows dropped (floor mode)
    (1, 32, 16, 16, 12, True, True),   # exact tiles, as VGG16's pools at 640x480
    (3, 16, 48, 7, 21, False, True),   # pooled output rows and columns cut inside a tile
])
def test_equals_float64_direct_convolution(rng, n, c, k, h, w, relu, pool):
    x = torch.from_numpy(rng.normal(size=(n, c, h, w)).astype(np.float32))
    conv = nn.Conv2d(c, k, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(rng.normal(size=(k, c, 3, 3)) / (3 * c ** 0.5)))
    layer = winograd.WinogradConv3x3(conv, relu, pool)
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    direct32 = F.conv2d(x, conv.weight, conv.bias, padding=1).double()
    if relu:
        exact, direct32 = exact.clamp(min=0), direct32.clamp(min=0)
    if pool:
        exact, direct32 = F.max_pool2d(exact, 2), F.max_pool2d(direct32, 2)
    with torch.inference_mode():
        got = layer(x)
        if pool:   # max is exact: the fused pool is the unfused layer's pooled, bit for bit
            unfused = winograd.WinogradConv3x3(conv, relu, pool=False)(x)
            assert torch.equal(got, F.max_pool2d(unfused, 2))
    assert got.shape == exact.shape and got.is_contiguous(memory_format=torch.channels_last)
    # F(4x4, 3x3) rounds about 5-10x worse than a direct float32 sum (its transforms
    # multiply by up to 8 and add 6 terms twice), still ~1e-6 of the outputs' scale; a wrong
    # transform coefficient would be ~1e-1
    scale = exact.abs().max().item()
    err, err32 = (got.double() - exact).abs().max(), (direct32 - exact).abs().max()
    print(f'max error / scale: Winograd {err / scale:.2e}, direct float32 {err32 / scale:.2e}')
    assert err < 20 * err32 and err < 1e-5 * scale
    assert (got == 0).any() == relu                              # the ReLU is fused
    # chunked over the tiles (3 at a time, a short last chunk): as exact (the BLAS may
    # block a shorter GEMM otherwise, so not always bit-equal)
    old = winograd.CHUNK_BYTES, winograd.MIN_CHUNK_TILES
    winograd.CHUNK_BYTES, winograd.MIN_CHUNK_TILES = 1, 3
    try:
        with torch.inference_mode():
            assert (layer(x).double() - exact).abs().max() < 1e-5 * scale
    finally:
        winograd.CHUNK_BYTES, winograd.MIN_CHUNK_TILES = old


@needs_helper
@pytest.mark.parametrize('n,c,k,h,w,relu,offset', [
    (2, 3, 64, 13, 10, True, 0),    # conv1_1's shape; partial right/bottom, even width
    (1, 1, 128, 5, 7, False, 0),    # odd width: the last pixel of a row has no pair
    (3, 3, 64, 1, 1, True, 0),      # one pixel: every neighbour is padding
    (1, 15, 64, 6, 9, True, 1),     # into a buffer 4 bytes off alignment (plain stores)
])
def test_direct_first_layer_equals_float64_convolution(rng, n, c, k, h, w, relu, offset):
    x = torch.from_numpy(rng.normal(size=(n, c, h, w)).astype(np.float32))
    conv = nn.Conv2d(c, k, 3, padding=1)
    layer = winograd.DirectConv3x3(conv, relu)
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    direct32 = F.conv2d(x, conv.weight, conv.bias, padding=1).double()
    if relu:
        exact, direct32 = exact.clamp(min=0), direct32.clamp(min=0)
    buffer = torch.full((n * k * h * w + 5,), float('nan'))
    with torch.inference_mode():
        got = layer(x)
        into = layer(x, buffer[offset:])
    assert got.shape == exact.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(into, got) and into.data_ptr() == buffer[offset:].data_ptr()
    assert buffer[offset + n * k * h * w:].isnan().all()           # nothing written past it
    # the same sums as a direct float32 convolution, in some order: within a few roundings
    scale = exact.abs().max().item()
    err, err32 = (got.double() - exact).abs().max(), (direct32 - exact).abs().max()
    assert err <= 4 * err32 + 1e-7 * scale
    assert (got == 0).any() == relu


def test_unsupported_layers_and_inputs_are_refused():
    with pytest.raises(ValueError, match='3x3 stride-1 pad-1'):
        winograd.WinogradConv3x3(nn.Conv2d(3, 64, 3, padding=1), relu=True)   # conv1_1
    assert winograd.supported_direct(nn.Conv2d(3, 64, 3, padding=1))
    for conv in (nn.Conv2d(16, 64, 3, padding=1), nn.Conv2d(3, 48, 3, padding=1),
                 nn.Conv2d(3, 64, 3, padding=1, stride=2)):
        with pytest.raises(ValueError, match='fewer than 16 input'):
            winograd.DirectConv3x3(conv, relu=True)
    with pytest.raises(ValueError, match='with 3 channels'):
        winograd.DirectConv3x3(nn.Conv2d(3, 64, 3, padding=1), True)(torch.zeros(1, 4, 8, 8))
    assert not winograd.supported(nn.Conv2d(16, 16, 3, padding=1, stride=2))
    assert not winograd.supported(nn.Conv2d(16, 16, 1))
    assert winograd.supported(nn.Conv2d(16, 32, 3, padding=1))
    config = get_config('storage', image_width=96, image_height=96)
    model = PatchNetVLAD(config).eval()
    with pytest.raises(ValueError, match='float32 backbone on the CPU only'):
        model.encode(torch.zeros(1, 3, 96, 96), torch.bfloat16, winograd=True)


@needs_helper
def test_encoder_copy_fuses_relus_and_follows_new_weights():
    from patch_netvlad_ros.core.model.bootstrap import seeded_model
    config = get_config('storage', image_width=96, image_height=96)
    model = seeded_model(config, seed=0)
    layers = winograd.winograd_encoder(model.encoder)
    kinds = [type(m).__name__ for m in layers]
    # conv1_1 (3 input channels) runs direct; 12 convs by Winograd; every ReLU but the
    # last conv's fused, the 4 pools fused into the convs before them (conv1_2, conv2_2,
    # conv3_3, conv4_3)
    assert kinds[0] == 'DirectConv3x3' and layers[0].relu
    assert kinds.count('WinogradConv3x3') == 12 and len(kinds) == 13
    assert not layers[-1].relu and all(m.relu for m in layers[:-1])
    pooled = [i for i, m in enumerate(layers) if getattr(m, 'pool', False)]
    assert pooled == [1, 3, 6, 9]
    assert winograd.fusable_pool(nn.MaxPool2d(2, 2))
    assert not winograd.fusable_pool(nn.MaxPool2d(2, 2, ceil_mode=True))
    assert not winograd.fusable_pool(nn.MaxPool2d(3, 2))
    images = torch.randn(2, 3, 96, 96)

    def rel_err(a, b):
        return ((a - b).norm() / b.norm()).item()

    with torch.inference_mode():
        first = model.encode(images, winograd=True)
        model.load_state_dict(seeded_model(config, seed=1).state_dict())
        ref = model.encode(images, winograd=False)
        again = model.encode(images, winograd=True)
    assert rel_err(again, ref) < 1e-5                  # the Winograd copy was remade
    assert rel_err(first, ref) > 0.5


@needs_helper
def test_encoder_scratch_maps_are_kept_and_results_are_its_own():
    import copy
    import pickle
    import threading
    from patch_netvlad_ros.core.model.bootstrap import seeded_model
    config = get_config('storage', image_width=96, image_height=96)
    encoder = winograd.winograd_encoder(seeded_model(config, seed=0).encoder)
    layers = nn.Sequential(*encoder)               # the same layers, each map a new tensor
    images = torch.randn(3, 3, 96, 80)
    with torch.inference_mode():
        ref = [layers(images[:2]), layers(images)]
        first = encoder(images[:2])
        kept = first.clone()
        maps = [b.data_ptr() for b in encoder._maps]
        again = encoder(images[:2])
        assert [b.data_ptr() for b in encoder._maps] == maps   # reused, not remade
        grown = encoder(images)                                 # a larger batch: grown
        # conv1_1's full-size map in one buffer, the largest of the others in the second
        assert [b.numel() for b in encoder._maps] == [3 * 64 * 96 * 80, 3 * 64 * 48 * 40]
        # the same bits as fresh maps, and a later call does not write into a result
        assert torch.equal(first, ref[0]) and torch.equal(again, ref[0])
        assert torch.equal(first, kept) and torch.equal(grown, ref[1])
        assert all(not winograd._shares(r, b) for r in (first, again, grown)
                   for b in encoder._maps)
        # a copy (deepcopy, pickle) has its own lock and buffers
        for other in (copy.deepcopy(encoder), pickle.loads(pickle.dumps(encoder))):
            assert torch.equal(other(images), ref[1])
        # concurrent calls are serialised over the shared buffers, and buffers made under
        # inference mode still take writes outside it (these threads run without it)
        out = {}
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, encoder(images)))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(torch.equal(out[i], ref[1]) for i in range(3))


def test_without_the_helper_the_backbone_runs_direct():
    code = ('from patch_netvlad_ros.core import native; from patch_netvlad_ros.core.model import '
            'winograd; import torch; '
            'from patch_netvlad_ros.core.model.model import PatchNetVLAD; '
            'from patch_netvlad_ros.core.config import get_config; '
            'm = PatchNetVLAD(get_config("storage", image_width=96, image_height=96)).eval(); '
            'print(tuple(m.encode(torch.zeros(1, 3, 96, 96)).shape)); '
            'print(winograd.available()); print(native.unavailable_reason("winograd"))')
    assert run_without_native(code) == ['(1, 512, 6, 6)', 'False',
                                        'disabled by PATCH_NETVLAD_NATIVE=0']


#: Every STRIDE-th corridor reference and query in the real-image comparison: 56 of each,
#: so the direct backbone (about twice Winograd's time here) describes 112 images, not 222.
STRIDE = 2


@needs_helper
def test_real_corridor_descriptors_and_recall_equal_the_direct_backbone(
        corridor_set, corridor_model, corridor_images, corridor_map, corridor_query_descriptors):
    # the shared fixtures ran the default backbone: Winograd, where the helper is built
    from patch_netvlad_ros.core.maps.database import ReferenceMap
    from patch_netvlad_ros.core.maps.extraction import build_reference_map, describe_batches
    from patch_netvlad_ros.core.localization.localizer import Localizer

    refs = range(0, len(corridor_images[0]), STRIDE)
    queries = range(0, len(corridor_images[1]), STRIDE)
    # ground truth on the kept references: reference r is row r // STRIDE of both maps
    positives = [[r // STRIDE for r in corridor_set.positives[q] if r % STRIDE == 0]
                 for q in queries]
    assert all(positives)
    batches = list(describe_batches(corridor_model, [corridor_images[1][q] for q in queries],
                                    winograd=False))
    direct = (torch.cat([b.global_desc for b in batches]),
              [torch.cat([b.patches[0] for b in batches])])      # speed preset: one scale
    g, p = corridor_query_descriptors
    wino = (g[list(queries)], [s[list(queries)] for s in p])
    kept = [corridor_map.references[r] for r in refs]
    maps = {'winograd': ReferenceMap(                      # rows of the session's map
        corridor_map.config, corridor_map.model_digest, kept, corridor_map.global_desc[refs],
        [s[refs] for s in corridor_map.patches]),
        'direct': build_reference_map(corridor_model, [corridor_images[0][r] for r in refs],
                                      kept, winograd=False)}
    recalls = {}
    for (name, ref_map), (g, p) in zip(maps.items(), (wino, direct)):
        localizer = Localizer(ref_map, corridor_model)
        results = [localizer.localize_descriptors(g[i], [s[i] for s in p])
                   for i in range(g.shape[0])]
        by_global = [[c.index for c in sorted(r.candidates, key=lambda c: c.global_distance)]
                     for r in results]
        recalls[name] = (recall_at_n(by_global, positives, (1, 5)),
                         recall_at_n([r.retrieval_order for r in results], positives, (1, 5)))
    (g1, p1), (g0, p0) = wino, direct
    global_err = (g1 - g0).norm(dim=1).max().item()
    patch_err = max((a - b).norm(dim=-1).max().item() for a, b in zip(p0, p1))
    print(f'Winograd vs direct: largest descriptor distance global {global_err:.1e}, '
          f'patch {patch_err:.1e}; recall@1,5 (global, reranked) {recalls}')
    assert global_err < 1e-4 and patch_err < 1e-3
    assert not torch.equal(g0, g1)                     # really another algorithm
    assert recalls['winograd'] == recalls['direct']
    # real places are told apart (global R@1 0.84 measured): not two equal failures
    assert recalls['direct'][0][1] >= 0.75
