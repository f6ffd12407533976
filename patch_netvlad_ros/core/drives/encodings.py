# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ROS-free conversion of sensor_msgs/Image and CompressedImage buffers to RGB arrays.

This replaces cv_bridge where it is not installed: the ROS layer passes the message's
plain fields (encoding, height, width, step, data, is_bigendian or format, data) and
gets an owned, C-contiguous RGB uint8 array [H, W, 3] back. Nothing here imports ROS.

Conventions (the same as cv_bridge and image_transport's compressed subscriber):

* Encoding names are those of sensor_msgs/image_encodings.hpp, matched ignoring case;
  8UC1 is mono8, 8UC3 is bgr8, 8UC4 is bgra8 and 16UC1 is mono16.
* 16-bit values map to 8 bits as round(v / 257), i.e. the full 0..65535 range onto
  0..255 (what cv_bridge's 16 -> 8 bit conversion does); is_bigendian is honoured.
* yuv422 is UYVY (as in ROS), yuv422_yuy2 is YUYV; they, nv12 and nv21 are decoded by
  OpenCV with BT.601 limited-range ("video") coefficients: Y=16 is black, Y=235 white.
* Bayer names give the 2x2 pattern of the top-left corner (bayer_rggb8: R at (0, 0)).
  OpenCV names its codes after the second row's middle pixels, so ROS rggb is
  OpenCV's BG, bggr is RG, gbrg is GR and grbg is GB (verified in the tests).
* Grey images are replicated to three channels; alpha channels are dropped.
* len(data) must equal step * rows exactly: a different size means a malformed message.
"""

from array import array
from typing import Dict, NamedTuple, Tuple, Union

import cv2
import numpy as np

from ..errors import ImageError

Buffer = Union[bytes, bytearray, memoryview, array, np.ndarray]


class _Layout(NamedTuple):
    """How one encoding lays out its pixels."""

    name: str  # the ROS spelling
    kind: str  # rgb, bgr, rgba, bgra, mono, uyvy, yuy2, nv12, nv21 or bayer_<pattern>
    channels: int  # values per pixel in the buffer (2 for YUV 4:2:2: Y and U or V)
    depth: int  # bytes per value


_LAYOUTS = [
    _Layout('rgb8', 'rgb', 3, 1),
    _Layout('bgr8', 'bgr', 3, 1),
    _Layout('rgba8', 'rgba', 4, 1),
    _Layout('bgra8', 'bgra', 4, 1),
    _Layout('mono8', 'mono', 1, 1),
    _Layout('8UC1', 'mono', 1, 1),
    _Layout('8UC3', 'bgr', 3, 1),
    _Layout('8UC4', 'bgra', 4, 1),
    _Layout('mono16', 'mono', 1, 2),
    _Layout('16UC1', 'mono', 1, 2),
    _Layout('rgb16', 'rgb', 3, 2),
    _Layout('bgr16', 'bgr', 3, 2),
    _Layout('rgba16', 'rgba', 4, 2),
    _Layout('bgra16', 'bgra', 4, 2),
    _Layout('yuv422', 'uyvy', 2, 1),
    _Layout('uyvy', 'uyvy', 2, 1),
    _Layout('yuv422_yuy2', 'yuy2', 2, 1),
    _Layout('yuyv', 'yuy2', 2, 1),
    _Layout('nv12', 'nv12', 1, 1),
    _Layout('nv21', 'nv21', 1, 1),
] + [_Layout(f'bayer_{p}{bits}', f'bayer_{p}', 1, bits // 8)
     for bits in (8, 16) for p in ('rggb', 'bggr', 'gbrg', 'grbg')]

_BY_NAME: Dict[str, _Layout] = {layout.name.lower(): layout for layout in _LAYOUTS}

#: Every encoding decode_raw and encode_raw accept, spelt as in image_encodings.hpp.
SUPPORTED_ENCODINGS: Tuple[str, ...] = tuple(layout.name for layout in _LAYOUTS)

_TO_RGB = {
    'bgr': cv2.COLOR_BGR2RGB,
    'rgba': cv2.COLOR_RGBA2RGB,
    'bgra': cv2.COLOR_BGRA2RGB,
    'mono': cv2.COLOR_GRAY2RGB,
    'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuy2': cv2.COLOR_YUV2RGB_YUY2,
    'nv12': cv2.COLOR_YUV2RGB_NV12,
    'nv21': cv2.COLOR_YUV2RGB_NV21,
    # OpenCV's Bayer names are shifted one pixel diagonally from ROS's (module docstring).
    'bayer_rggb': cv2.COLOR_BayerBG2RGB,
    'bayer_bggr': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg': cv2.COLOR_BayerGR2RGB,
    'bayer_grbg': cv2.COLOR_BayerGB2RGB,
}


def _layout(encoding: str) -> _Layout:
    if not isinstance(encoding, str):
        raise ImageError(f'encoding must be a string, got {type(encoding).__name__}')
    layout = _BY_NAME.get(encoding.strip().lower())
    if layout is None:
        raise ImageError(
            f'unsupported image encoding {encoding!r}; supported encodings are: '
            f'{", ".join(SUPPORTED_ENCODINGS)} (convert the image upstream, e.g. with '
            'image_proc, or publish one of these)')
    return layout


def _as_bytes(data: Buffer) -> np.ndarray:
    """Flat uint8 view of a message buffer (a copy only for non-contiguous arrays)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        # rclpy may hand sequences over as lists; slow, but correct.
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        raise ImageError(
            f'image data must be bytes, bytearray, memoryview, array.array or a numpy '
            f'array, got {type(data).__name__}') from None


def _to_8bit(image: np.ndarray) -> np.ndarray:
    """Map 16-bit values onto 0..255 as round(v / 257); exact for every v (tested)."""
    return cv2.convertScaleAbs(image, alpha=1.0 / 257.0)


def decode_raw(encoding: str, height: int, width: int, step: int, data: Buffer,
               is_bigendian: bool = False) -> np.ndarray:
    """Decode a sensor_msgs/Image buffer into an RGB uint8 array [height, width, 3].

    The result is C-contiguous and owns its memory (never a view of data), so callers
    may modify it and drop the message. step may exceed the bytes a row needs (row
    padding); len(data) must be step * rows exactly, rows being height, or
    height * 3 / 2 for nv12 and nv21. Raises ImageError for anything malformed.
    """
    layout = _layout(encoding)
    name = layout.name
    for field, value in (('height', height), ('width', width), ('step', step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ImageError(f'{name} image {field} must be an integer, got {value!r}')
    if height <= 0 or width <= 0:
        raise ImageError(f'{name} image has an empty size {width}x{height} (width x height); '
                         'the message carries no image')
    if layout.kind in ('uyvy', 'yuy2', 'nv12', 'nv21') and width % 2:
        raise ImageError(f'{name} image width {width} is odd; YUV 4:2:2 and 4:2:0 pack two '
                         'pixels per chroma sample, so the width must be even')
    if layout.kind in ('nv12', 'nv21') and height % 2:
        raise ImageError(f'{name} image height {height} is odd; 4:2:0 chroma covers two '
                         'rows, so the height must be even')
    if layout.kind.startswith('bayer') and (width < 2 or height < 2):
        raise ImageError(f'{name} image of {width}x{height} is smaller than one 2x2 Bayer '
                         'cell')
    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageError(f'{name} image of {width}x{height} has empty data')
    rows = height * 3 // 2 if layout.kind in ('nv12', 'nv21') else height
    row_bytes = width * layout.channels * layout.depth
    if step < row_bytes:
        raise ImageError(
            f'{name} image step {step} is smaller than a row: width {width} x '
            f'{layout.channels * layout.depth} bytes per pixel = {row_bytes} bytes; fix '
            "the publisher's step or encoding")
    if buf.size != step * rows:
        raise ImageError(
            f'{name} image data has {buf.size} bytes but step {step} x {rows} rows = '
            f'{step * rows} bytes were expected; the message is truncated or its '
            'height, step or encoding is wrong')

    plane = buf.reshape(rows, step)
    if step != row_bytes:
        plane = plane[:, :row_bytes]  # drop the row padding (a strided view)
    if layout.depth == 2:
        # astype to native order copies into a contiguous, aligned array for OpenCV.
        plane = plane.view('>u2' if is_bigendian else '<u2').astype(np.uint16)
    shape = (rows, width) if layout.channels == 1 else (rows, width, layout.channels)
    image = np.ascontiguousarray(plane.reshape(shape))

    bayer = layout.kind.startswith('bayer')
    if layout.depth == 2 and not bayer:
        image = _to_8bit(image)  # before the colour conversion: fewer bytes to move
    if layout.kind == 'rgb':
        # Copy only when image is still a view of data (unpadded 8-bit rows).
        return image if image.flags.owndata else image.copy()
    image = cv2.cvtColor(image, _TO_RGB[layout.kind])
    if layout.depth == 2 and bayer:  # demosaiced at full precision, scaled after
        image = _to_8bit(image)
    return image


def _compressed_is_rgb(fmt: str) -> bool:
    """Whether the payload was compressed from an RGB-ordered array.

    image_transport writes 'ENC; jpeg compressed TARGET'. Its publisher compresses bgr8
    (a normal, true-colour file); a 'compressed rgb8' payload came from an RGB array
    passed to a BGR-expecting encoder, so the decoded array is already RGB (what
    image_transport's subscriber assumes too).
    """
    _, _, tail = fmt.lower().partition(';')
    return 'compressed rgb' in tail


def decode_compressed(fmt: str, data: Buffer) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage into an RGB uint8 array [H, W, 3].

    fmt is the message's format ('jpeg', 'png', 'rgb8; jpeg compressed bgr8', ...);
    the codec itself is detected from the data. 16-bit images are scaled like
    decode_raw's, grey ones replicated and alpha dropped.
    """
    if not isinstance(fmt, str):
        raise ImageError(f'compressed image format must be a string, got {type(fmt).__name__}')
    if 'compresseddepth' in fmt.lower().replace(' ', ''):
        raise ImageError(f'compressed image format {fmt!r} is a compressedDepth (depth) image; '
                         'subscribe to a colour or grey image topic instead')
    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageError(f'compressed image ({fmt!r}) has empty data')
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(
            f'cannot decode {buf.size} bytes of compressed image ({fmt!r}): the data is not '
            'an image OpenCV can read (expected JPEG or PNG); check the publisher')
    if image.dtype == np.uint16:
        image = _to_8bit(image)
    elif image.dtype != np.uint8:
        raise ImageError(f'compressed image ({fmt!r}) decodes to {image.dtype} pixels; only '
                         '8- and 16-bit images are supported')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels not in (3, 4):
        raise ImageError(f'compressed image ({fmt!r}) has {channels} channels; expected 1, 3 '
                         'or 4')
    if _compressed_is_rgb(fmt):
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB) if channels == 4 else image
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if channels == 4 else cv2.COLOR_BGR2RGB)


# BT.601 limited range, the inverse of what OpenCV's YUV -> RGB conversions apply.
_RGB2YUV = np.array([[65.481, 128.553, 24.966],
                     [-37.797, -74.203, 112.0],
                     [112.0, -93.786, -18.214]], dtype=np.float32) / 255.0
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def _yuv(rgb: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution Y, U and V planes (float32) of an RGB image."""
    yuv = rgb.astype(np.float32) @ _RGB2YUV.T + _YUV_OFFSET
    return yuv[..., 0], yuv[..., 1], yuv[..., 2]


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample each pixel's channel from a 2x2 pattern such as 'rggb' (top-left first)."""
    mosaic = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for index, colour in enumerate(pattern):
        row, col = divmod(index, 2)
        mosaic[row::2, col::2] = rgb[row::2, col::2, 'rgb'.index(colour)]
    return mosaic


def encode_raw(rgb: np.ndarray, encoding: str) -> Tuple[bytes, int]:
    """Encode an RGB uint8 image [H, W, 3] as a sensor_msgs/Image buffer: (data, step).

    Rows are unpadded; 16-bit encodings hold v * 257 for each 8-bit value v, little-endian
    (publish is_bigendian=False). Grey encodings take OpenCV's BT.601 luma; YUV
    encodings average chroma over each 2-pixel (4:2:2) or 2x2 (4:2:0) block, so the
    width (and, for nv12/nv21, the height) must be even. Every SUPPORTED_ENCODINGS
    entry is accepted.
    """
    layout = _layout(encoding)
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3:
        shape = getattr(rgb, 'shape', None)
        dtype = getattr(rgb, 'dtype', type(rgb).__name__)
        raise ImageError(f'encode_raw needs an RGB uint8 array [H, W, 3]; got {dtype} with '
                         f'shape {shape}')
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f'cannot encode an empty {width}x{height} image')
    kind = layout.kind
    if kind in ('uyvy', 'yuy2', 'nv12', 'nv21') and width % 2:
        raise ImageError(f'{layout.name} needs an even width, got {width}')
    if kind in ('nv12', 'nv21') and height % 2:
        raise ImageError(f'{layout.name} needs an even height, got {height}')
    rgb = np.ascontiguousarray(rgb)

    if kind in ('uyvy', 'yuy2'):
        y, u, v = _yuv(rgb)
        packed = np.empty((height, width, 2), dtype=np.uint8)
        luma, chroma = (1, 0) if kind == 'uyvy' else (0, 1)
        packed[..., luma] = _u8(y)
        packed[:, 0::2, chroma] = _u8((u[:, 0::2] + u[:, 1::2]) / 2)
        packed[:, 1::2, chroma] = _u8((v[:, 0::2] + v[:, 1::2]) / 2)
        out = packed
    elif kind in ('nv12', 'nv21'):
        y, u, v = _yuv(rgb)

        def pooled(plane: np.ndarray) -> np.ndarray:
            return _u8(plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)))

        first, second = (u, v) if kind == 'nv12' else (v, u)
        chroma = np.stack([pooled(first), pooled(second)], axis=-1)
        out = np.concatenate([_u8(y), chroma.reshape(height // 2, width)], axis=0)
    else:
        if kind == 'rgb':
            out = rgb
        elif kind == 'mono':
            out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        elif kind.startswith('bayer'):
            out = _mosaic(rgb, kind[len('bayer_'):])
        else:
            out = cv2.cvtColor(rgb, {'bgr': cv2.COLOR_RGB2BGR, 'rgba': cv2.COLOR_RGB2RGBA,
                                     'bgra': cv2.COLOR_RGB2BGRA}[kind])
        if layout.depth == 2:
            out = (out.astype(np.uint16) * 257).astype('<u2')
    return out.tobytes(), width * layout.channels * layout.depth
