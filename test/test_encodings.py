# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ROS-free image decoding: hand-made buffers for every encoding, compressed images, errors.

Expected pixels come from the byte layouts of sensor_msgs/image_encodings.hpp and the
BT.601 formula written here, never from the module under test.
"""

from array import array
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from patch_netvlad_ros.core.drives.encodings import (decode_compressed, decode_raw, encode_raw,
                                                     SUPPORTED_ENCODINGS)
from patch_netvlad_ros.core.errors import ImageError

QUERY_DIR = Path(__file__).resolve().parent.parent / 'patch_netvlad_ros' / 'data' / \
    'corridor' / 'query'
JPEG_PATH = sorted(QUERY_DIR.glob('*.jpg'))[0]

#: A 4x6 image whose 24 pixels all have distinct colours.
RGB = ((np.arange(4 * 6 * 3).reshape(4, 6, 3) * 7 + 11) % 256).astype(np.uint8)
ALPHA = (np.arange(4 * 6).reshape(4, 6, 1) * 9 + 1).astype(np.uint8)  # must be dropped
GREY = (np.arange(4 * 6).reshape(4, 6) * 11).astype(np.uint8)
#: 16-bit values around the rounding boundaries of v / 257 (128 -> 0, 129 -> 1).
GREY16 = np.array([[0, 1, 128, 129, 256, 257],
                   [385, 386, 1000, 12345, 32767, 32768],
                   [32896, 40000, 50000, 60000, 65406, 65407],
                   [65408, 65534, 65535, 514, 771, 999]], dtype=np.uint16)
RGB16 = ((np.arange(4 * 6 * 3).reshape(4, 6, 3) * 911 + 77) % 65536).astype(np.uint16)
A16 = np.full((4, 6, 1), 65535, dtype=np.uint16)


def to8(values: np.ndarray) -> np.ndarray:
    """round(v / 257) in integers: 0..65535 onto 0..255."""
    return ((values.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)


def grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def bt601(y, u, v) -> np.ndarray:
    """Limited-range BT.601 YUV -> RGB (Y 16..235, chroma 16..240), rounded and clipped."""
    y, u, v = (np.asarray(c, dtype=np.float64) for c in (y, u, v))
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    rgb = np.stack([c + 1.596 * e, c - 0.392 * d - 0.813 * e, c + 2.017 * d], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def le16(values: np.ndarray) -> np.ndarray:
    """Little-endian bytes of uint16 values, one row per image row."""
    return values.astype('<u2').view(np.uint8).reshape(values.shape[0], -1)


# YUV test pictures: per-pixel luma and per-block chroma in the legal video range.
YUV_Y = np.array([[128, 64, 81, 82, 145, 144, 41, 200],
                  [16, 235, 100, 110, 120, 130, 60, 70]], dtype=np.uint8)
YUV_U = np.array([[128, 90, 54, 240], [128, 128, 200, 30]], dtype=np.uint8)  # per pair
YUV_V = np.array([[128, 240, 34, 110], [128, 128, 60, 180]], dtype=np.uint8)
NV_Y = np.array([[128, 64, 81, 82], [145, 144, 41, 200],
                 [16, 235, 100, 110], [120, 130, 60, 70]], dtype=np.uint8)
NV_U = np.array([[90, 54], [128, 240]], dtype=np.uint8)  # per 2x2 block
NV_V = np.array([[240, 34], [128, 110]], dtype=np.uint8)

BAYER_COLOUR = (200, 100, 30)  # distinct R, G and B, so any pattern mix-up shows


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Mosaic with pattern giving the channels of the top-left 2x2 cell, row by row."""
    mosaic = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for index, colour in enumerate(pattern):
        row, col = divmod(index, 2)
        mosaic[row::2, col::2] = rgb[row::2, col::2, 'rgb'.index(colour)]
    return mosaic


class Case(NamedTuple):
    """A hand-made buffer: rows of bytes (without padding) and the RGB it holds."""

    height: int
    width: int
    rows: np.ndarray  # uint8 [buffer rows, bytes per row]
    expected: np.ndarray
    atol: int = 0


def hand_made(encoding: str) -> Case:
    """The hand-made message of one encoding."""
    if encoding == 'rgb8':
        return Case(4, 6, RGB.reshape(4, -1), RGB)
    if encoding in ('bgr8', '8UC3'):
        return Case(4, 6, RGB[..., ::-1].reshape(4, -1), RGB)
    if encoding == 'rgba8':
        return Case(4, 6, np.concatenate([RGB, ALPHA], axis=2).reshape(4, -1), RGB)
    if encoding in ('bgra8', '8UC4'):
        return Case(4, 6, np.concatenate([RGB[..., ::-1], ALPHA], axis=2).reshape(4, -1), RGB)
    if encoding in ('mono8', '8UC1'):
        return Case(4, 6, GREY, grey3(GREY))
    if encoding in ('mono16', '16UC1'):
        return Case(4, 6, le16(GREY16), grey3(to8(GREY16)))
    if encoding == 'rgb16':
        return Case(4, 6, le16(RGB16.reshape(4, -1)), to8(RGB16))
    if encoding == 'bgr16':
        return Case(4, 6, le16(RGB16[..., ::-1].reshape(4, -1)), to8(RGB16))
    if encoding == 'rgba16':
        return Case(4, 6, le16(np.concatenate([RGB16, A16], axis=2).reshape(4, -1)),
                    to8(RGB16))
    if encoding == 'bgra16':
        return Case(4, 6, le16(np.concatenate([RGB16[..., ::-1], A16], axis=2).reshape(4, -1)),
                    to8(RGB16))
    if encoding in ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'):
        # One (U, V) per horizontal pair of pixels; each pixel has its own Y.
        u, v = np.repeat(YUV_U, 2, axis=1), np.repeat(YUV_V, 2, axis=1)
        chroma = np.where(np.arange(8) % 2 == 0, u, v)  # U Y0 V Y1: U on even pixels
        order = (chroma, YUV_Y) if encoding in ('yuv422', 'uyvy') else (YUV_Y, chroma)
        return Case(2, 8, np.stack(order, axis=-1).reshape(2, -1), bt601(YUV_Y, u, v), 2)
    if encoding in ('nv12', 'nv21'):
        # Y plane, then one row of interleaved chroma (UV for nv12, VU for nv21) per 2 rows.
        first, second = (NV_U, NV_V) if encoding == 'nv12' else (NV_V, NV_U)
        chroma = np.stack([first, second], axis=-1).reshape(2, 4)
        u = np.repeat(np.repeat(NV_U, 2, axis=0), 2, axis=1)
        v = np.repeat(np.repeat(NV_V, 2, axis=0), 2, axis=1)
        return Case(4, 4, np.concatenate([NV_Y, chroma]), bt601(NV_Y, u, v), 2)
    if encoding.startswith('bayer_'):
        pattern, bits = encoding[6:10], int(encoding[10:])
        rgb = np.empty((4, 6, 3), dtype=np.uint16)
        rgb[...] = BAYER_COLOUR
        if bits == 8:
            return Case(4, 6, bayer_mosaic(rgb, pattern).astype(np.uint8), rgb.astype(np.uint8))
        # +100 rounds down to the same 8-bit colour.
        return Case(4, 6, le16(bayer_mosaic(rgb * 257 + 100, pattern)), rgb.astype(np.uint8))
    raise AssertionError(f'no hand-made case for {encoding}')


def assert_rgb(image: np.ndarray, expected: np.ndarray, atol: int = 0) -> None:
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    assert image.shape == expected.shape
    diff = np.abs(image.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= atol, f'max difference {diff.max()} > {atol}'


def real_image() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(JPEG_PATH)), cv2.COLOR_BGR2RGB)


def test_supported_encodings_are_the_ros_names():
    expected = {'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8UC1', '8UC3', '8UC4', 'mono16',
                '16UC1', 'rgb16', 'bgr16', 'rgba16', 'bgra16', 'yuv422', 'uyvy',
                'yuv422_yuy2', 'yuyv', 'nv12', 'nv21'}
    expected |= {f'bayer_{p}{b}' for p in ('rggb', 'bggr', 'gbrg', 'grbg') for b in (8, 16)}
    assert set(SUPPORTED_ENCODINGS) == expected
    assert len(SUPPORTED_ENCODINGS) == len(expected)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_decode_hand_made(encoding):
    case = hand_made(encoding)
    image = decode_raw(encoding, case.height, case.width, case.rows.shape[1],
                       case.rows.tobytes())
    assert_rgb(image, case.expected, case.atol)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
@pytest.mark.parametrize('padding', [1, 6])
def test_decode_padded_rows(encoding, padding):
    case = hand_made(encoding)
    pad = np.full((case.rows.shape[0], padding), 0xAB, dtype=np.uint8)  # garbage
    rows = np.concatenate([case.rows, pad], axis=1)
    image = decode_raw(encoding, case.height, case.width, rows.shape[1], rows.tobytes())
    assert_rgb(image, case.expected, case.atol)


def test_encoding_names_ignore_case():
    case = hand_made('8UC3')
    image = decode_raw('8uc3', 4, 6, 18, case.rows.tobytes())
    assert_rgb(image, RGB)
    assert_rgb(decode_raw('RGB8', 4, 6, 18, RGB.tobytes()), RGB)


@pytest.mark.parametrize('encoding', ['mono16', 'rgb16', 'bgra16', 'bayer_gbrg16'])
def test_decode_big_endian(encoding):
    case = hand_made(encoding)
    swapped = case.rows.reshape(case.rows.shape[0], -1, 2)[..., ::-1].reshape(case.rows.shape)
    image = decode_raw(encoding, case.height, case.width, swapped.shape[1], swapped.tobytes(),
                       is_bigendian=True)
    assert_rgb(image, case.expected)


def test_big_endian_mono16_known_values():
    data = bytes([0x01, 0x00, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x81])  # 256, 65535, 32768, 129
    image = decode_raw('mono16', 1, 4, 8, data, is_bigendian=True)
    np.testing.assert_array_equal(image[0, :, 0], [1, 255, 128, 1])
    assert_rgb(image, grey3(np.array([[1, 255, 128, 1]], dtype=np.uint8)))


def test_16_bit_scaling_covers_the_full_range():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    image = decode_raw('16UC1', 256, 256, 512, le16(values).tobytes())
    np.testing.assert_array_equal(image[..., 0], np.rint(values / 257.0).astype(np.uint8))
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255


def test_yuv_known_values():
    """Limited range (as OpenCV and cv_bridge decode): Y=16 black, Y=235 white."""
    def uyvy(y, u, v):
        data = bytes([u, y, v, y])
        return decode_raw('yuv422', 1, 2, 4, data)[0, 0].astype(int)

    np.testing.assert_allclose(uyvy(128, 128, 128), [130, 130, 130], atol=1)
    np.testing.assert_array_equal(uyvy(16, 128, 128), [0, 0, 0])
    np.testing.assert_array_equal(uyvy(235, 128, 128), [255, 255, 255])
    red, green, blue = uyvy(81, 90, 240), uyvy(145, 54, 34), uyvy(41, 240, 110)
    np.testing.assert_allclose(red, [255, 0, 0], atol=2)
    np.testing.assert_allclose(green, [0, 255, 0], atol=2)
    np.testing.assert_allclose(blue, [0, 0, 255], atol=2)
    # YUY2 is the same picture with luma first: Y0 U Y1 V.
    yuy2 = decode_raw('yuv422_yuy2', 1, 2, 4, bytes([81, 90, 81, 240]))
    np.testing.assert_array_equal(yuy2[0, 1], red)


@pytest.mark.parametrize('pattern,opencv', [('rggb', 'BG'), ('bggr', 'RG'),
                                            ('gbrg', 'GR'), ('grbg', 'GB')])
def test_bayer_mapping_to_opencv(pattern, opencv):
    """A ROS pattern names the top-left cell; OpenCV's code names are shifted from it."""
    rgb = np.empty((6, 8, 3), dtype=np.uint8)
    rgb[...] = BAYER_COLOUR
    mosaic = bayer_mosaic(rgb, pattern)
    assert_rgb(cv2.cvtColor(mosaic, getattr(cv2, f'COLOR_Bayer{opencv}2RGB')), rgb)
    assert_rgb(decode_raw(f'bayer_{pattern}8', 6, 8, 8, mosaic.tobytes()), rgb)
    # Every other pattern's reading of this mosaic gets the colour wrong.
    for other in ('rggb', 'bggr', 'gbrg', 'grbg'):
        if other != pattern:
            wrong = decode_raw(f'bayer_{other}8', 6, 8, 8, mosaic.tobytes())
            assert np.abs(wrong[2:-2, 2:-2].astype(int) - BAYER_COLOUR).max() > 50


def test_bayer_literal_rggb_mosaic():
    """R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1), written out by hand."""
    mosaic = np.array([[200, 100, 200, 100],
                       [100, 30, 100, 30],
                       [200, 100, 200, 100],
                       [100, 30, 100, 30]], dtype=np.uint8)
    image = decode_raw('bayer_rggb8', 4, 4, 4, mosaic.tobytes())
    np.testing.assert_array_equal(image.reshape(-1, 3), np.tile([200, 100, 30], (16, 1)))


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer_smooth_ramps(pattern):
    """Bilinear demosaicing rebuilds linear ramps exactly away from the border."""
    yy, xx = np.mgrid[0:10, 0:12]
    rgb = np.stack([20 + 10 * xx, 60 + 5 * xx + 5 * yy, 200 - 12 * yy], axis=-1).astype(np.uint8)
    image = decode_raw(f'bayer_{pattern}8', 10, 12, 12, bayer_mosaic(rgb, pattern).tobytes())
    assert_rgb(image[2:-2, 2:-2].copy(), rgb[2:-2, 2:-2])


@pytest.mark.parametrize('kind', ['bytes', 'bytearray', 'memoryview', 'array', 'ndarray',
                                  'ndarray2d', 'list'])
def test_buffer_types(kind):
    raw = RGB.tobytes()
    data = {'bytes': raw, 'bytearray': bytearray(raw), 'memoryview': memoryview(raw),
            'array': array('B', raw), 'ndarray': np.frombuffer(raw, dtype=np.uint8).copy(),
            'ndarray2d': RGB.reshape(4, 18).copy(), 'list': list(raw)}[kind]
    image = decode_raw('rgb8', 4, 6, 18, data)
    assert_rgb(image, RGB)
    assert image.flags.writeable and image.flags.owndata
    image[...] = 0  # the result never aliases the message
    assert bytes(memoryview(data)) == raw if kind != 'list' else data == list(raw)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_encode_decode_round_trip(encoding):
    rgb = real_image()
    height, width = rgb.shape[:2]
    data, step = encode_raw(rgb, encoding)
    rows = height * 3 // 2 if encoding in ('nv12', 'nv21') else height
    assert isinstance(data, bytes) and len(data) == step * rows
    image = decode_raw(encoding, height, width, step, data)
    assert image.shape == rgb.shape and image.dtype == np.uint8
    diff = np.abs(image.astype(int) - rgb)
    if encoding in ('mono8', '8UC1', 'mono16', '16UC1'):
        luma = np.rint(rgb @ np.array([0.299, 0.587, 0.114]))
        assert np.abs(image.astype(int) - grey3(luma)).max() <= 1
    elif encoding.startswith('bayer') or encoding in ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv',
                                                      'nv12', 'nv21'):
        assert diff.mean() < 3  # chroma subsampling / demosaicing lose fine detail only
    else:
        assert diff.max() == 0


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_encode_decode_round_trip_on_flat_blocks(encoding):
    """On colours constant over 2x2 blocks only rounding is lost, even for YUV."""
    blocks = real_image()[::2, ::2]
    rgb = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)
    if encoding.startswith('bayer'):
        rgb[...] = (37, 180, 90)
    data, step = encode_raw(rgb, encoding)
    image = decode_raw(encoding, rgb.shape[0], rgb.shape[1], step, data)
    if encoding in ('mono8', '8UC1', 'mono16', '16UC1'):
        rgb = grey3(np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8))
    # Saturated colours fall outside the YUV gamut's rounding; they are rare here.
    tolerance = 3 if encoding in ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv', 'nv12',
                                  'nv21') else 1
    assert np.percentile(np.abs(image.astype(int) - rgb), 99.9) <= tolerance


def test_encode_raw_layouts():
    data, step = encode_raw(RGB, 'bgr8')
    assert step == 18 and data == RGB[..., ::-1].tobytes()
    data, step = encode_raw(RGB, 'rgba16')
    expected = np.concatenate([RGB.astype(np.uint16) * 257, A16], axis=2)
    assert step == 48 and data == expected.astype('<u2').tobytes()
    data, step = encode_raw(RGB, 'bayer_grbg8')
    assert step == 6 and data == bayer_mosaic(RGB, 'grbg').tobytes()
    flat = np.full((2, 2, 3), (255, 0, 0), dtype=np.uint8)
    data, step = encode_raw(flat, 'uyvy')  # BT.601 limited-range red: Y 81, U 90, V 240
    assert step == 4 and np.abs(np.frombuffer(data, np.uint8)[:4].astype(int)
                                - [90, 81, 240, 81]).max() <= 1


# Compressed images.

def test_jpeg_file_decodes_like_opencv():
    data = JPEG_PATH.read_bytes()
    assert_rgb(decode_compressed('jpeg', data), real_image())


@pytest.mark.parametrize('fmt', ['jpeg', 'rgb8; jpeg compressed bgr8',
                                 'bgr8; jpeg compressed bgr8'])
def test_jpeg_round_trip(fmt):
    rgb = real_image()
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    image = decode_compressed(fmt, jpeg.tobytes())
    assert image.shape == rgb.shape
    assert np.abs(image.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize('fmt', ['png', 'bgr8; png compressed bgr8', 'rgb8; png compressed bgr8'])
def test_png_round_trip_is_exact(fmt):
    rgb = real_image()
    ok, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    assert_rgb(decode_compressed(fmt, png.tobytes()), rgb)


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_compressed_rgb_payload(ext):
    """'compressed rgb8' payloads were encoded from RGB arrays (image_transport's rule)."""
    rgb = real_image()
    ok, payload = cv2.imencode(ext, rgb)  # the RGB array goes in as it is
    assert ok
    image = decode_compressed('rgb8; ' + ext[1:] + ' compressed rgb8', payload.tobytes())
    assert np.abs(image.astype(int) - rgb).mean() < (3 if ext == '.jpg' else 1e-9)


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_compressed_grey_is_replicated(ext):
    grey = cv2.cvtColor(real_image(), cv2.COLOR_RGB2GRAY)
    ok, payload = cv2.imencode(ext, grey)
    assert ok
    image = decode_compressed('mono8; ' + ext[1:] + ' compressed mono8', payload.tobytes())
    assert image.shape == grey.shape + (3,)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert np.abs(image[..., 0].astype(int) - grey).mean() < (3 if ext == '.jpg' else 1e-9)


def test_compressed_16_bit_png_is_scaled():
    ok, png = cv2.imencode('.png', GREY16)
    assert ok
    assert_rgb(decode_compressed('mono16; png compressed mono16', png.tobytes()),
               grey3(to8(GREY16)))
    ok, png = cv2.imencode('.png', np.ascontiguousarray(RGB16[..., ::-1]))  # BGR order
    assert ok
    assert_rgb(decode_compressed('bgr16; png compressed bgr16', png.tobytes()), to8(RGB16))


def test_compressed_alpha_is_dropped():
    bgra = np.concatenate([RGB[..., ::-1], ALPHA], axis=2)
    ok, png = cv2.imencode('.png', bgra)
    assert ok
    assert_rgb(decode_compressed('bgra8; png compressed bgra8', png.tobytes()), RGB)


@pytest.mark.parametrize('kind', ['bytearray', 'memoryview', 'array', 'ndarray'])
def test_compressed_buffer_types(kind):
    raw = JPEG_PATH.read_bytes()
    data = {'bytearray': bytearray(raw), 'memoryview': memoryview(raw), 'array': array('B', raw),
            'ndarray': np.frombuffer(raw, dtype=np.uint8)}[kind]
    assert_rgb(decode_compressed('jpeg', data), real_image())


# Errors.

def test_unknown_encoding_lists_supported():
    with pytest.raises(ImageError, match=r"unsupported image encoding '32FC1'.*rgb8.*bayer"):
        decode_raw('32FC1', 4, 6, 24, bytes(96))
    with pytest.raises(ImageError, match='unsupported image encoding'):
        encode_raw(RGB, 'hsv8')


@pytest.mark.parametrize('height,width', [(0, 6), (4, 0), (-1, 6), (4, -6)])
def test_empty_size(height, width):
    with pytest.raises(ImageError, match='empty size'):
        decode_raw('rgb8', height, width, 18, RGB.tobytes())


def test_non_integer_size():
    with pytest.raises(ImageError, match='height must be an integer'):
        decode_raw('rgb8', 4.0, 6, 18, RGB.tobytes())


@pytest.mark.parametrize('data', [b'', bytearray(), np.zeros(0, np.uint8), array('B')])
def test_empty_data(data):
    with pytest.raises(ImageError, match='empty data'):
        decode_raw('rgb8', 4, 6, 18, data)


def test_unsupported_data_type():
    with pytest.raises(ImageError, match='image data must be bytes'):
        decode_raw('rgb8', 4, 6, 18, 'not a buffer')


def test_step_smaller_than_row():
    with pytest.raises(ImageError, match=r'step 17 is smaller than a row: width 6 x 3 bytes per '
                                         r'pixel = 18 bytes'):
        decode_raw('rgb8', 4, 6, 17, bytes(68))
    with pytest.raises(ImageError, match='step 11 is smaller.*= 12 bytes'):
        decode_raw('mono16', 4, 6, 11, bytes(44))


@pytest.mark.parametrize('size', [71, 73, 36])
def test_data_size_must_match(size):
    with pytest.raises(ImageError, match=rf'has {size} bytes but step 18 x 4 rows = 72 bytes'):
        decode_raw('rgb8', 4, 6, 18, bytes(size))


def test_nv12_size_counts_chroma_rows():
    with pytest.raises(ImageError, match='step 4 x 6 rows = 24 bytes'):
        decode_raw('nv12', 4, 4, 4, bytes(16))


@pytest.mark.parametrize('encoding', ['yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv', 'nv12', 'nv21'])
def test_odd_width_yuv(encoding):
    with pytest.raises(ImageError, match='width 3 is odd'):
        decode_raw(encoding, 2, 3, 6, bytes(12))
    with pytest.raises(ImageError, match='even width'):
        encode_raw(RGB[:, :5].copy(), encoding)


def test_odd_height_nv12():
    with pytest.raises(ImageError, match='height 3 is odd'):
        decode_raw('nv12', 3, 4, 4, bytes(16))


def test_bayer_too_small():
    with pytest.raises(ImageError, match='smaller than one 2x2 Bayer cell'):
        decode_raw('bayer_rggb8', 1, 4, 4, bytes(4))


@pytest.mark.parametrize('image', [GREY, RGB.astype(np.float32), RGB[..., :2], [[1, 2, 3]]])
def test_encode_raw_needs_rgb_uint8(image):
    with pytest.raises(ImageError, match=r'RGB uint8 array \[H, W, 3\]'):
        encode_raw(image, 'rgb8')


def test_compressed_empty():
    with pytest.raises(ImageError, match='empty data'):
        decode_compressed('jpeg', b'')


def test_compressed_garbage():
    with pytest.raises(ImageError, match=r"cannot decode 13 bytes of compressed image \('png'\)"):
        decode_compressed('png', b'not an image!')
    truncated = JPEG_PATH.read_bytes()[:20]
    with pytest.raises(ImageError, match='cannot decode'):
        decode_compressed('jpeg', truncated)


def test_compressed_depth_is_refused():
    with pytest.raises(ImageError, match='compressedDepth'):
        decode_compressed('16UC1; compressedDepth png', JPEG_PATH.read_bytes())
