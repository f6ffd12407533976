# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The cv_bridge path of ImageDecoder against the builtin converter, on a real image.

cv_bridge comes with a ROS 2 install (ros-<distro>-cv-bridge) and has no PyPI wheel, so
this module skips where it cannot be imported (the venv of scripts/setup.sh). Where it
runs, every encoding the builtin converter handles is decoded both ways from the same
message: 8-bit encodings must agree exactly; 16-bit ones within one level, since cv_bridge
scales by 1/256 and the builtin converter by 1/257 (round(v / 257) maps 65535 to 255).
"""

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from conftest import TEST_DATA
from patch_netvlad_ros.core.drives.encodings import encode_raw, SUPPORTED_ENCODINGS
from patch_netvlad_ros.ros.conversions import ImageDecoder

cv_bridge = pytest.importorskip(
    'cv_bridge', reason='cv_bridge comes with a ROS 2 install (ros-<distro>-cv-bridge) and '
                        'has no PyPI wheel: the cv_bridge path is tested where it is installed')

#: Encodings cv_bridge converts to rgb8 itself in every ROS 2 distribution (the rest may
#: fall back to the builtin converter, which the comparison then covers as well).
CV_BRIDGE_OWN = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'rgb16', 'bgr16',
                 'rgba16', 'bgra16', 'bayer_rggb8', 'bayer_bggr8', 'bayer_gbrg8',
                 'bayer_grbg8')


@pytest.fixture(scope='module')
def rgb() -> np.ndarray:
    """The Tokyo 24/7 query (a real street photograph) at 64x48, RGB uint8."""
    bgr = cv2.imread(str(TEST_DATA / 'tokyo_pair' / 'tokyo_query_640x480.jpg'))
    assert bgr is not None, 'the shipped Tokyo query image is missing'
    return cv2.cvtColor(cv2.resize(bgr, (64, 48), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2RGB)


def message(rgb: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image of rgb in encoding (rows padded by pad bytes), through serialisation."""
    data, step = encode_raw(rgb, encoding)
    rows = len(data) // step
    plane = np.frombuffer(data, np.uint8).reshape(rows, step)
    if bigendian:
        plane = plane.reshape(rows, -1, 2)[:, :, ::-1].reshape(rows, step)
    if pad:
        plane = np.concatenate([plane, np.full((rows, pad), 7, np.uint8)], axis=1)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
                step=plane.shape[1], is_bigendian=int(bigendian))
    msg.data = plane.tobytes()
    return deserialize_message(serialize_message(msg), Image)


def levels(encoding: str) -> int:
    """Largest difference allowed between the two converters for an encoding."""
    return 1 if encoding.endswith('16') else 0


def test_cv_bridge_is_chosen():
    assert ImageDecoder('cv_bridge').name == 'cv_bridge'
    assert ImageDecoder('auto').name == 'cv_bridge'
    assert ImageDecoder('builtin').name == 'builtin'


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_every_encoding_equals_the_builtin_converter(rgb, encoding):
    msg = message(rgb, encoding)
    ours = ImageDecoder('builtin')(msg)
    theirs = ImageDecoder('cv_bridge')(msg)
    assert theirs.shape == ours.shape == rgb.shape and theirs.dtype == np.uint8
    assert theirs.flags.c_contiguous
    diff = np.abs(theirs.astype(np.int16) - ours.astype(np.int16)).max()
    assert diff <= levels(encoding), f'{encoding}: converters differ by {diff} levels'
    if encoding in CV_BRIDGE_OWN:  # cv_bridge itself decoded it, no fallback
        direct = cv_bridge.CvBridge().imgmsg_to_cv2(msg, 'rgb8')
        np.testing.assert_array_equal(theirs, direct)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgra8', 'mono8', 'bayer_grbg8'])
def test_row_padding(rgb, encoding):
    """Rows longer than the pixels (step > width * bytes): both skip the padding."""
    msg = message(rgb, encoding, pad=6)
    np.testing.assert_array_equal(ImageDecoder('cv_bridge')(msg),
                                  ImageDecoder('builtin')(msg))


@pytest.mark.parametrize('encoding', ['mono16', 'rgb16', 'bayer_rggb16'])
def test_big_endian_16_bit(rgb, encoding):
    """Big-endian 16-bit data decodes like the little-endian message of the same image."""
    big = message(rgb, encoding, bigendian=True)
    little = message(rgb, encoding)
    theirs = ImageDecoder('cv_bridge')(big)
    np.testing.assert_array_equal(ImageDecoder('builtin')(big), ImageDecoder('builtin')(little))
    diff = np.abs(theirs.astype(np.int16) - ImageDecoder('builtin')(little)).max()
    assert diff <= 1, f'{encoding}: big-endian data differs by {diff} levels'
