# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Winograd F(4x4, 3x3) float32 convolutions for the CPU backbone.

VGG16's 3x3 stride-1 convolutions are about 190 GFLOP of a 640x480 image (86% of the
speed preset's extraction; the performance preset's is mostly its PCA). Winograd's
algorithm (Lavin and Gray, CVPR 2016) computes each 4 x 4 output tile from a 6 x 6 input
tile with 36 multiplications per channel pair instead of 144: the input tiles are
transformed (B^T d B), multiplied by the transformed weights (G g G^T) as 36 independent
GEMMs [T, C] @ [C, K] on torch's BLAS, and transformed back (A^T m A). The transforms run
in the C helper ``native/winograd.c`` (with the bias and the ReLU fused into the output).
conv1_1, with its 3 input channels, runs as a direct convolution in the same helper, and
:class:`WinogradEncoder` keeps the layers' maps in two buffers between calls: on the CPU
a new full-size map per layer costs more in page faults than some layers' arithmetic.

Still float32 arithmetic, with a different rounding: a layer's largest error is 5-11x a
direct float32 convolution's (about 3e-6 of the outputs' scale; its transforms multiply
by up to 8), the whole backbone's is 1e-6 (direct: 6e-7), far below bf16's 4e-3; the
corridor's descriptors move by at most 2e-5 and its recall does not change. cuDNN picks
Winograd kernels on its own for the same layers; on the CPU oneDNN has none, so this
module supplies them.
"""

import threading
from typing import List, Optional

import torch
from torch import nn

from .. import native

#: Winograd F(4x4, 3x3): G [6, 3] (weights), B^T and A^T live in winograd.c.
G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
                 dtype=torch.float64)
#: Channels the C transforms take at a time (one AVX-512 register; two AVX2 ones).
CHANNEL_MULTIPLE = 16
#: Budget for one chunk of transformed tiles (V and M together): chunks that stay in the
#: last-level cache keep the transforms from being bound by memory bandwidth.
CHUNK_BYTES = 4 << 20
#: Fewest tiles per chunk: below this the 36 GEMMs re-read the weights too often.
MIN_CHUNK_TILES = 256


def available() -> bool:
    """Whether the C transforms are built here (see :mod:`patch_netvlad_ros.core.native`)."""
    return native.library('winograd') is not None


def resolve(requested: Optional[bool], device: torch.device,
            dtype: Optional[torch.dtype] = None) -> bool:
    """Whether the backbone runs by Winograd: ``requested``, or where it can if None.

    It can on the CPU, in float32, with the C helper built. ValueError (naming why) when
    True is requested where it cannot.
    """
    fp32 = dtype is None or dtype == torch.float32
    if requested is None:
        return fp32 and torch.device(device).type == 'cpu' and available()
    if requested:
        if not fp32 or torch.device(device).type != 'cpu':
            raise ValueError('Winograd runs the float32 backbone on the CPU only (asked for '
                             f'{dtype} on {device})')
        if not available():
            raise ValueError('the Winograd C helper is unavailable: '
                             f'{native.unavailable_reason("winograd")}')
    return requested


def transform_weights(weight: torch.Tensor) -> torch.Tensor:
    """Winograd weights U [36, C, K] (float32, from float64) of a conv weight [K, C, 3, 3]."""
    u = G @ weight.detach().double() @ G.T                     # [K, C, 6, 6]
    return u.permute(2, 3, 1, 0).reshape(36, weight.shape[1], weight.shape[0]).float()


def _same_3x3(conv: nn.Module) -> bool:
    """Whether ``conv`` is a dense 3x3 stride-1 convolution with one pixel of zero padding."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == 'zeros')


def supported(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 3x3 stride-1 pad-1 dense convolution Winograd can run."""
    return (_same_3x3(conv) and conv.in_channels % CHANNEL_MULTIPLE == 0
            and conv.out_channels % CHANNEL_MULTIPLE == 0)


def supported_direct(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 3x3 stride-1 pad-1 convolution for :class:`DirectConv3x3`."""
    return (_same_3x3(conv) and conv.in_channels < CHANNEL_MULTIPLE
            and conv.out_channels % (4 * CHANNEL_MULTIPLE) == 0)


def fusable_pool(pool: nn.Module) -> bool:
    """Whether ``pool`` is the 2x2 stride-2 max-pool the output transform can fuse."""
    return (isinstance(pool, nn.MaxPool2d) and _pair(pool.kernel_size) == (2, 2)
            and _pair(pool.stride) == (2, 2) and _pair(pool.padding) == (0, 0)
            and _pair(pool.dilation) == (1, 1) and not pool.ceil_mode
            and not pool.return_indices)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class WinogradConv3x3(nn.Module):
    """A float32 CPU 3x3 convolution (+ optional ReLU, 2x2 max-pool) by Winograd F(4x4, 3x3).

    Input [N, C, H, W] float32, any memory format; output [N, K, H, W] channels-last, or
    [N, K, H//2, W//2] with ``pool`` (the pool is taken in the output transform, so the
    full-size map is never written). Holds a transformed copy of the weights, made at
    construction (inference only).
    """

    def __init__(self, conv: nn.Conv2d, relu: bool, pool: bool = False) -> None:
        super().__init__()
        if not supported(conv):
            raise ValueError(f'{conv} is not a 3x3 stride-1 pad-1 convolution with channels '
                             f'divisible by {CHANNEL_MULTIPLE}')
        self.relu = relu
        self.pool = pool
        self.register_buffer('u', transform_weights(conv.weight).contiguous())
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer('bias', bias.detach().float().contiguous())

    def output_numel(self, shape: torch.Size) -> int:
        """Elements of the output for an input of ``shape`` [N, C, H, W]."""
        h, w = (shape[2] // 2, shape[3] // 2) if self.pool else (shape[2], shape[3])
        return shape[0] * self.u.shape[2] * h * w

    def forward(self, x: torch.Tensor, out: Optional[torch.Tensor] = None,
                work: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """Convolve x [N, C, H, W] (float32, CPU).

        out: a flat float32 buffer whose front receives the output (a channels-last view of
        it is returned); None: a new tensor. work: two flat float32 buffers for the
        transformed tiles, grown in the list when too small; None: new ones.
        """
        lib = _library()
        n, c, h, w = x.shape
        k = self.u.shape[2]
        _check_input(x, self.u.shape[1])
        x = x.contiguous(memory_format=torch.channels_last)
        oh, ow = (h // 2, w // 2) if self.pool else (h, w)
        y = _output(out, n, k, oh, ow)
        tiles = n * ((h + 3) // 4) * ((w + 3) // 4)
        chunk = min(tiles, max(MIN_CHUNK_TILES, CHUNK_BYTES // (36 * 4 * (c + k))))
        work = [torch.empty(0), torch.empty(0)] if work is None else work
        v = _grown(work, 0, 36 * chunk * c).view(36, chunk, c)
        m = _grown(work, 1, 36 * chunk * k).view(36, chunk, k)
        for t0 in range(0, tiles, chunk):
            nt = min(chunk, tiles - t0)
            # the last chunk's [36, nt, C] lives in the front of the same buffers
            vt, mt = v.view(-1)[:36 * nt * c].view(36, nt, c), m.view(-1)[:36 * nt * k].view(
                36, nt, k)
            _checked(lib.pnv_wino_input(x.data_ptr(), n, h, w, c, t0, nt, vt.data_ptr()),
                     x.shape)
            torch.bmm(vt, self.u, out=mt)
            _checked(lib.pnv_wino_output(mt.data_ptr(), self.bias.data_ptr(), int(self.relu),
                                         int(self.pool), n, h, w, k, t0, nt, y.data_ptr()),
                     x.shape)
        return y


class DirectConv3x3(nn.Module):
    """conv1_1 (+ ReLU): a float32 CPU 3x3 convolution of few input channels, in C.

    Winograd's GEMMs would have an inner dimension of 3 here; oneDNN's convolution takes the
    layer well but always writes a new 64-channel full-size map (315 MB at 640x480, batch
    4), whose page faults cost more than the arithmetic. This one writes into the
    encoder's kept buffer, bypassing the cache, with the ReLU fused. Input [N, C, H, W]
    float32 (C < 16), output [N, K, H, W] channels-last (K a multiple of 64).
    """

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        if not supported_direct(conv):
            raise ValueError(f'{conv} is not a 3x3 stride-1 pad-1 convolution with fewer than '
                             f'{CHANNEL_MULTIPLE} input and a multiple of '
                             f'{4 * CHANNEL_MULTIPLE} output channels')
        self.relu = relu
        self.register_buffer('weight', conv.weight.detach().float().permute(2, 3, 1, 0)
                             .contiguous())                                # [3, 3, C, K]
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer('bias', bias.detach().float().contiguous())

    def output_numel(self, shape: torch.Size) -> int:
        """Elements of the output for an input of ``shape`` [N, C, H, W]."""
        return shape[0] * self.weight.shape[3] * shape[2] * shape[3]

    def forward(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Convolve x [N, C, H, W] (float32, CPU); out: as :meth:`WinogradConv3x3.forward`."""
        lib = _library()
        n, c, h, w = x.shape
        k = self.weight.shape[3]
        _check_input(x, self.weight.shape[2])
        x = x.contiguous(memory_format=torch.channels_last)
        y = _output(out, n, k, h, w)
        _checked(lib.pnv_conv3x3_direct(x.data_ptr(), n, h, w, c, self.weight.data_ptr(),
                                        self.bias.data_ptr(), k, int(self.relu), y.data_ptr()),
                 x.shape)
        return y


def _library():
    lib = native.library('winograd')
    if lib is None:
        raise RuntimeError('the Winograd C helper is unavailable: '
                           f'{native.unavailable_reason("winograd")}')
    return lib


def _checked(rc: int, shape: torch.Size) -> None:
    """Raise ValueError when the C helper refused the sizes (it returns -2, writing nothing)."""
    if rc != 0:
        raise ValueError(f'the Winograd C helper refused an input of shape {tuple(shape)} '
                         '(empty, or too large a map)')


def _check_input(x: torch.Tensor, channels: int) -> None:
    if x.dtype != torch.float32 or x.device.type != 'cpu' or x.shape[1] != channels:
        raise ValueError(f'expected float32 CPU input with {channels} channels; got '
                         f'{x.dtype} on {x.device} with {x.shape[1]}')


def _output(out: Optional[torch.Tensor], n: int, k: int, h: int, w: int) -> torch.Tensor:
    """Return a channels-last [n, k, h, w] map: the front of the flat ``out``, or a new one."""
    if out is None:
        return torch.empty(n, k, h, w, memory_format=torch.channels_last)
    return out[:n * h * w * k].view(n, h, w, k).permute(0, 3, 1, 2)


def _grown(buffers: List[torch.Tensor], i: int, numel: int) -> torch.Tensor:
    """Return the front ``numel`` elements of ``buffers[i]``, grown first if it is short.

    A new buffer is a normal tensor even under inference mode, so that a later call outside
    it may still write into it.
    """
    if buffers[i].numel() < numel:
        with torch.inference_mode(False):
            buffers[i] = torch.empty(numel)
    return buffers[i][:numel]


def _shares(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class WinogradEncoder(nn.Sequential):
    """A backbone whose 3x3 convolutions run by Winograd (made by :func:`winograd_encoder`).

    The C layers (:class:`DirectConv3x3`, :class:`WinogradConv3x3`) write their maps into
    two scratch buffers, in turn, that are kept between calls, as are the transformed-tile
    buffers: a new map per layer (10-315 MB each at 640x480, batch 4) costs its page
    faults on every call, about 9% of the backbone's time on a VM here. Each buffer grows
    to the largest map written into it (315 and 79 MB at 640x480, batch 4) and neither is
    part of the state dict. The result is always a tensor of its own. Calls are
    serialised, since they share the buffers.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self._init_scratch()

    def _init_scratch(self) -> None:
        self._lock = threading.Lock()
        self._maps = [torch.empty(0), torch.empty(0)]
        self._work = [torch.empty(0), torch.empty(0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers on x [N, 3, H, W]; features [N, 512, H/16, W/16], channels-last."""
        with self._lock:
            for mod in self:
                if isinstance(mod, (DirectConv3x3, WinogradConv3x3)):
                    # write into the map buffer that x does not live in
                    i = 1 if _shares(x, self._maps[0]) else 0
                    out = _grown(self._maps, i, mod.output_numel(x.shape))
                    x = (mod(x, out, self._work) if isinstance(mod, WinogradConv3x3)
                         else mod(x, out))
                else:
                    x = mod(x)
            if any(_shares(x, b) for b in self._maps):
                x = x.clone(memory_format=torch.channels_last)
            return x

    def __getstate__(self) -> dict:
        # a lock cannot be copied or pickled; nor need the buffers be
        return {k: v for k, v in self.__dict__.items() if k not in ('_lock', '_maps', '_work')}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._init_scratch()


def winograd_encoder(encoder: nn.Sequential) -> WinogradEncoder:
    """Return a copy of ``encoder`` whose 3x3 convolutions run in C, most by Winograd.

    A supported Conv2d followed by a ReLU becomes one WinogradConv3x3 with the ReLU fused,
    and with the 2x2 max-pool that follows them fused too; conv1_1 (3 input channels) and
    its ReLU become one DirectConv3x3; other layers are kept as they are. Callers check
    :func:`resolve` first; without the helper the copy's forward raises.
    """
    layers: List[nn.Module] = []
    mods = list(encoder)
    i = 0
    while i < len(mods):
        mod = mods[i]
        if not (supported(mod) or supported_direct(mod)):
            layers.append(mod)
            i += 1
            continue
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        i += 2 if relu else 1
        if supported_direct(mod):
            layers.append(DirectConv3x3(mod, relu))
            continue
        pool = i < len(mods) and fusable_pool(mods[i])
        layers.append(WinogradConv3x3(mod, relu, pool))
        i += 1 if pool else 0
    return WinogradEncoder(*layers)
