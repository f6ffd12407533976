# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Message conversions: descriptors through serialisation, images, poses and results."""

import importlib.util

from builtin_interfaces.msg import Time
import cv2
from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from patch_netvlad_ros_interfaces.msg import PatchBlock, PlaceMatch
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
import torch

from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.errors import ImageError, MapError
from patch_netvlad_ros.core.localization.localizer import Candidate, LocalizationResult
from patch_netvlad_ros.core.maps.database import Reference
from patch_netvlad_ros.ros.conversions import (check_descriptor_identity, descriptors_to_msg,
                                               ImageDecoder, msg_to_descriptors,
                                               reference_pose, result_to_msgs, rgb_to_image)

SPEED = get_config('speed', image_height=240, image_width=320)
PERFORMANCE = get_config('performance', image_height=240, image_width=320)
# Feature map 15 x 20 cells; (15 - d) // s + 1 rows and (20 - d) // s + 1 columns per scale.
GRIDS = {
    'speed': [(11, 16)],  # d = 5
    'performance': [(14, 19), (11, 16), (8, 13)],  # d = 2, 5, 8
    'strided': [(6, 8)],  # d = 5, s = 2
}
CONFIGS = {'speed': SPEED, 'performance': PERFORMANCE,
           'strided': SPEED.override(strides=(2,))}


def roundtrip(msg):
    """Serialise and deserialise a message like a ROS transport does."""
    return deserialize_message(serialize_message(msg), type(msg))


def unit_rows(rng, rows, dim):
    """Random unit vectors [rows, dim] as a float32 tensor."""
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x)


def make_descriptors(rng, config):
    """A global unit vector and unit patch vectors of the right shapes for ``config``."""
    g = unit_rows(rng, 1, config.num_pcs)[0]
    patches = [unit_rows(rng, config.num_patches(i), config.num_pcs)
               for i in range(len(config.patch_sizes))]
    return g, patches


def camera_header(sec=1700000000, nanosec=123456789, frame_id='camera_optical'):
    """A camera message header."""
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


@pytest.mark.parametrize('name', sorted(CONFIGS))
@pytest.mark.parametrize('dtype', ['float32', 'float16'])
def test_descriptor_roundtrip(rng, name, dtype):
    """Descriptors survive serialisation: float32 exactly, float16 as numpy rounds them."""
    config = CONFIGS[name]
    for i, (rows, cols) in enumerate(GRIDS[name]):
        assert config.num_patches(i) == rows * cols
    g, patches = make_descriptors(rng, config)
    received = Time(sec=5, nanosec=6)
    msg = roundtrip(descriptors_to_msg(camera_header(), config, 'abc123', g, patches,
                                       patch_dtype=dtype, received=received,
                                       extraction_ms=12.5))
    assert msg.header.stamp.sec == 1700000000 and msg.header.stamp.nanosec == 123456789
    assert msg.header.frame_id == 'camera_optical'
    assert (msg.preset, msg.model_digest) == (config.preset, 'abc123')
    assert (msg.image_height, msg.image_width) == (240, 320)
    assert (msg.received.sec, msg.received.nanosec) == (5, 6)
    assert msg.extraction_ms == 12.5
    assert msg.shared_key == ''
    code = PatchBlock.FLOAT32 if dtype == 'float32' else PatchBlock.FLOAT16
    itemsize = 4 if dtype == 'float32' else 2
    assert len(msg.patches) == len(GRIDS[name])
    for i, (block, (rows, cols)) in enumerate(zip(msg.patches, GRIDS[name])):
        assert (block.patch_size, block.stride) == (config.patch_sizes[i], config.strides[i])
        assert (block.rows, block.cols, block.dim, block.dtype) == (rows, cols,
                                                                    config.num_pcs, code)
        assert len(bytes(block.data)) == rows * cols * config.num_pcs * itemsize

    g2, patches2 = msg_to_descriptors(msg)
    assert g2.dtype == torch.float32
    assert torch.equal(g2, g)  # the global descriptor always travels as float32
    assert len(patches2) == len(patches)
    for p, p2 in zip(patches, patches2):
        assert p2.dtype == torch.float32 and p2.shape == p.shape
        if dtype == 'float32':
            assert torch.equal(p2, p)
        else:
            reference = p.numpy().astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(p2.numpy(), reference)
            # float16 keeps 11 significant bits: relative error at most 2^-11 (normals).
            np.testing.assert_allclose(p2.numpy(), p.numpy(), rtol=2.0 ** -11, atol=2.0 ** -25)
            assert not torch.equal(p2, p)  # it did lose precision


def test_shared_key_blocks_carry_no_data(rng):
    """With a shared key the blocks keep their shape but the patches stay out of band."""
    g, patches = make_descriptors(rng, PERFORMANCE)
    msg = roundtrip(descriptors_to_msg(camera_header(), PERFORMANCE, 'abc', g, patches,
                                       shared_key='frame-7'))
    assert msg.shared_key == 'frame-7'
    assert [(b.rows, b.cols) for b in msg.patches] == GRIDS['performance']
    assert all(len(b.data) == 0 for b in msg.patches)
    assert all(b.dim == PERFORMANCE.num_pcs for b in msg.patches)
    g2, shared = msg_to_descriptors(msg, shared=patches)
    assert shared is patches
    assert torch.equal(g2, g)
    with pytest.raises(ImageError, match='out of band') as info:
        msg_to_descriptors(msg)
    assert 'frame-7' in str(info.value)


def small_message(rng, dtype='float32'):
    """A serialised and deserialised speed-preset descriptor message."""
    g, patches = make_descriptors(rng, SPEED)
    return roundtrip(descriptors_to_msg(camera_header(), SPEED, 'abc', g, patches,
                                        patch_dtype=dtype))


@pytest.mark.parametrize('dtype', ['float32', 'float16'])
def test_truncated_block_data(rng, dtype):
    """A block missing bytes is refused with the sizes."""
    msg = small_message(rng, dtype)
    itemsize = 4 if dtype == 'float32' else 2
    expect = 11 * 16 * 512 * itemsize
    msg.patches[0].data = bytes(msg.patches[0].data)[:-itemsize]
    with pytest.raises(ImageError, match=f'patch block 0 holds {expect - itemsize} bytes.*'
                                         f'need {expect}'):
        msg_to_descriptors(roundtrip(msg))


def test_wrong_patch_dim(rng):
    """Patches whose dimension differs from the global descriptor's are refused."""
    g = unit_rows(rng, 1, SPEED.num_pcs)[0]
    patches = [unit_rows(rng, SPEED.num_patches(0), 256)]
    msg = roundtrip(descriptors_to_msg(camera_header(), SPEED, 'abc', g, patches,
                                       patch_dtype='float32'))
    assert msg.patches[0].dim == 256
    with pytest.raises(ImageError, match='global descriptor has 512 dims'):
        msg_to_descriptors(msg)


def test_unknown_dtype_code(rng):
    """A dtype code other than FLOAT32/FLOAT16 is refused, naming both."""
    msg = small_message(rng)
    msg.patches[0].dtype = 7
    with pytest.raises(ImageError, match='unknown dtype code 7.*0 \\(float32\\) or 1 '
                                         '\\(float16\\)'):
        msg_to_descriptors(roundtrip(msg))


def test_nan_in_global(rng):
    """A NaN in the global descriptor is refused."""
    g, patches = make_descriptors(rng, SPEED)
    g[17] = float('nan')
    msg = roundtrip(descriptors_to_msg(camera_header(), SPEED, 'abc', g, patches))
    with pytest.raises(ImageError, match='global descriptor contains NaN'):
        msg_to_descriptors(msg)


@pytest.mark.filterwarnings('ignore:overflow encountered in cast:RuntimeWarning')
@pytest.mark.parametrize('dtype', ['float32', 'float16'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), 1e6])
def test_non_finite_in_patches(rng, dtype, bad):
    """NaN or Inf in a patch block (1e6 overflows float16 to Inf) is refused."""
    g, patches = make_descriptors(rng, PERFORMANCE)
    patches[2][40, 3] = bad
    msg = roundtrip(descriptors_to_msg(camera_header(), PERFORMANCE, 'abc', g, patches,
                                       patch_dtype=dtype))
    if dtype == 'float32' and bad == 1e6:
        msg_to_descriptors(msg)  # finite in float32
        return
    with pytest.raises(ImageError, match='patch block 2 contains NaN or Inf'):
        msg_to_descriptors(msg)


def test_empty_global(rng):
    """An empty global descriptor is refused."""
    msg = small_message(rng)
    msg.global_descriptor = []
    with pytest.raises(ImageError, match='empty global descriptor'):
        msg_to_descriptors(roundtrip(msg))


def identity_of(config, digest='digest-1'):
    """A map identity as the localizer builds it."""
    return {'model_digest': digest, **config.identity()}


def identity_message(rng, config, digest='digest-1', dims=None):
    """A descriptor message made by ``config`` (global of ``dims`` values)."""
    g = unit_rows(rng, 1, dims or config.num_pcs)[0]
    patches = [unit_rows(rng, config.num_patches(i), dims or config.num_pcs)
               for i in range(len(config.patch_sizes))]
    return roundtrip(descriptors_to_msg(camera_header(), config, digest, g, patches,
                                        shared_key='k'))


def test_identity_equal_passes(rng):
    """Descriptors of the map's model and preset are accepted."""
    check_descriptor_identity(identity_message(rng, SPEED), identity_of(SPEED))
    check_descriptor_identity(identity_message(rng, PERFORMANCE), identity_of(PERFORMANCE))


FIELDS = ('model_digest', 'image_height', 'image_width', 'patch_sizes', 'strides', 'num_pcs')


@pytest.mark.parametrize('case,message_config,digest,dims,differing', [
    ('digest', SPEED, 'digest-2', None, {'model_digest'}),
    ('size', get_config('speed', image_height=480, image_width=640), 'digest-1', None,
     {'image_height', 'image_width'}),
    ('height', get_config('speed', image_height=256, image_width=320), 'digest-1', None,
     {'image_height'}),
    ('patch sizes', SPEED.override(patch_sizes=(4,)), 'digest-1', None, {'patch_sizes'}),
    ('strides', SPEED.override(strides=(2,)), 'digest-1', None, {'strides'}),
    ('dims', SPEED, 'digest-1', 128, {'num_pcs'}),
    ('preset', PERFORMANCE, 'digest-1', 512, {'patch_sizes', 'strides'}),
])
def test_identity_mismatch_names_the_field(rng, case, message_config, digest, dims,
                                           differing):
    """A message from another model or preset raises MapError naming what differs."""
    msg = identity_message(rng, message_config, digest, dims)
    with pytest.raises(MapError) as info:
        check_descriptor_identity(msg, identity_of(SPEED))
    text = str(info.value)
    for field in FIELDS:
        assert (f'{field}: descriptors' in text) == (field in differing), (field, text)
    if case == 'digest':
        assert "'digest-2' vs map 'digest-1'" in text
    if case == 'patch sizes':
        assert 'patch_sizes: descriptors [4] vs map [5]' in text


def image_msg(encoding, height, width, step, data):
    """A sensor_msgs/Image through serialisation."""
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=0)
    msg.data = bytes(data)
    return roundtrip(msg)


def test_builtin_decoder_rgb8_with_row_padding():
    """rgb8 pixels are taken as they are; row padding is skipped."""
    data = [255, 0, 0, 0, 255, 0, 9, 9,  # red, green, 2 padding bytes
            0, 0, 255, 10, 20, 30, 9, 9]  # blue, (10, 20, 30), padding
    out = ImageDecoder('builtin')(image_msg('rgb8', 2, 2, 8, data))
    expected = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_builtin_decoder_bgr8():
    """bgr8 bytes are reordered to RGB."""
    data = [255, 0, 0, 0, 255, 0, 0, 0, 255,  # blue, green, red in BGR order
            1, 2, 3, 40, 50, 60, 7, 8, 9]
    out = ImageDecoder('builtin')(image_msg('bgr8', 2, 3, 9, data))
    expected = np.array([[[0, 0, 255], [0, 255, 0], [255, 0, 0]],
                         [[3, 2, 1], [60, 50, 40], [9, 8, 7]]], np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_builtin_decoder_mono8():
    """mono8 values are replicated into three channels."""
    out = ImageDecoder('builtin')(image_msg('mono8', 2, 2, 2, [0, 128, 255, 7]))
    expected = np.array([[[0, 0, 0], [128, 128, 128]], [[255, 255, 255], [7, 7, 7]]], np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_builtin_decoder_rejects_truncated_image():
    """A raw image with too few bytes raises ImageError."""
    with pytest.raises(ImageError, match='truncated'):
        ImageDecoder('builtin')(image_msg('rgb8', 2, 2, 6, [0] * 11))


RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                [[10, 20, 30], [200, 100, 50], [1, 2, 3]]], np.uint8)


def test_builtin_decoder_png_is_exact():
    """A PNG CompressedImage (BGR payload, as image_transport writes) decodes exactly."""
    bgr = RGB[:, :, ::-1].copy()  # what image_transport compresses
    ok, png = cv2.imencode('.png', bgr)
    assert ok
    msg = roundtrip(CompressedImage(header=camera_header(), format='png',
                                    data=png.tobytes()))
    out = ImageDecoder('builtin')(msg)
    np.testing.assert_array_equal(out, RGB)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8


def test_builtin_decoder_png_of_rgb_payload():
    """A 'compressed rgb8' payload is already RGB once decoded."""
    ok, png = cv2.imencode('.png', RGB)
    assert ok
    msg = CompressedImage(format='rgb8; png compressed rgb8', data=png.tobytes())
    np.testing.assert_array_equal(ImageDecoder('builtin')(msg), RGB)


def test_builtin_decoder_grey_png():
    """A grey PNG is replicated into three channels."""
    grey = np.array([[0, 50], [100, 255]], np.uint8)
    ok, png = cv2.imencode('.png', grey)
    assert ok
    out = ImageDecoder('builtin')(CompressedImage(format='png', data=png.tobytes()))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def test_decoder_names_and_bad_converter():
    """The builtin decoder says so; an unknown converter is refused."""
    assert ImageDecoder('builtin').name == 'builtin'
    with pytest.raises(ValueError, match='converter must be one of'):
        ImageDecoder('opencv')


@pytest.mark.skipif(importlib.util.find_spec('cv_bridge') is not None,
                    reason='cv_bridge is installed')
def test_cv_bridge_converter_without_cv_bridge():
    """Asking for cv_bridge where it is not installed raises ImportError; auto falls back."""
    with pytest.raises(ImportError, match='cv_bridge'):
        ImageDecoder('cv_bridge')
    assert ImageDecoder('auto').name == 'builtin'


def test_rgb_to_image_roundtrip(rng):
    """rgb_to_image makes an rgb8 Image that decodes back to the same pixels."""
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    header = camera_header(sec=3, nanosec=4, frame_id='cam')
    msg = rgb_to_image(rgb[:, ::-1], header)  # a non-contiguous view is fine
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, 'rgb8')
    assert msg.is_bigendian == 0
    msg = roundtrip(msg)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (3, 4, 'cam')
    assert len(msg.data) == 5 * 7 * 3
    np.testing.assert_array_equal(ImageDecoder('builtin')(msg), rgb[:, ::-1])


@pytest.mark.parametrize('q,expected', [
    ((0.0, 0.0, 3.0, 4.0), (0.0, 0.0, 0.6, 0.8)),
    ((0.0, 0.0, 0.0, 2.0), (0.0, 0.0, 0.0, 1.0)),
    ((1.0, 1.0, 1.0, 1.0), (0.5, 0.5, 0.5, 0.5)),
    ((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)),
    ((float('nan'), 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0)),
])
def test_reference_pose_normalises_quaternion(q, expected):
    """reference_pose copies the position and makes the quaternion unit (zero: identity)."""
    ref = Reference(id='r', x=1.5, y=-2.0, z=0.25, qx=q[0], qy=q[1], qz=q[2], qw=q[3])
    pose = reference_pose(ref)
    assert (pose.position.x, pose.position.y, pose.position.z) == (1.5, -2.0, 0.25)
    o = pose.orientation
    np.testing.assert_allclose([o.x, o.y, o.z, o.w], expected, atol=1e-12)


REFERENCES = [
    Reference(id='ref-0', x=0.0, y=0.0, z=0.0),
    Reference(id='ref-1', x=10.0, y=1.0, z=0.5, qz=3.0, qw=4.0),
    Reference(id='ref-2', x=20.0, y=2.0, z=1.0, qw=0.0),  # zero quaternion
    Reference(id='ref-3', x=30.0, y=-3.0, z=1.5, qx=2.0, qw=0.0),
]


def make_result():
    """A result whose best match is ref-1, with three candidates."""
    candidates = [
        Candidate(index=1, id='ref-1', fused_score=-0.75, quality=0.875, global_distance=0.5),
        Candidate(index=3, id='ref-3', fused_score=-0.5, quality=0.625, global_distance=0.75),
        Candidate(index=0, id='ref-0', fused_score=-0.25, quality=0.125, global_distance=1.25),
    ]
    return LocalizationResult(best_index=1, reference=REFERENCES[1], confidence=0.8125,
                              candidates=candidates,
                              timings={'retrieve_s': 0.0125, 'rerank_s': 0.25,
                                       'total_s': 99.0},
                              candidate_bytes=3 * 2 ** 33, moved_bytes=2 ** 33 + 5)


def test_result_to_msgs():
    """Pose and match carry the camera stamp, the map frame, poses, scores and timings."""
    header = camera_header(sec=12, nanosec=345, frame_id='camera_optical')
    pose, match = result_to_msgs(make_result(), REFERENCES, header, 'world', True,
                                 max_candidates=2,
                                 covariance_diagonal=[25.0, 16.0, 9.0, 0.25, 0.5, 1.0],
                                 extraction_ms=3.5, latency_ms=40.25)
    pose = roundtrip(pose)
    match = roundtrip(match)
    assert isinstance(pose, PoseWithCovarianceStamped) and isinstance(match, PlaceMatch)
    for h in (pose.header, match.header):
        assert (h.stamp.sec, h.stamp.nanosec, h.frame_id) == (12, 345, 'world')
    p = pose.pose.pose
    assert (p.position.x, p.position.y, p.position.z) == (10.0, 1.0, 0.5)
    assert (p.orientation.x, p.orientation.y) == (0.0, 0.0)
    assert p.orientation.z == pytest.approx(0.6) and p.orientation.w == pytest.approx(0.8)
    cov = list(pose.pose.covariance)
    assert len(cov) == 36
    diagonal = {0: 25.0, 7: 16.0, 14: 9.0, 21: 0.25, 28: 0.5, 35: 1.0}
    assert cov == [diagonal.get(i, 0.0) for i in range(36)]

    assert match.camera_frame_id == 'camera_optical'
    assert match.confidence == 0.8125
    assert match.pose_published is True
    assert match.best_reference_id == 'ref-1'
    assert match.extraction_ms == 3.5
    assert match.retrieval_ms == pytest.approx(12.5)
    assert match.rerank_ms == pytest.approx(250.0)
    assert match.latency_ms == 40.25
    # uint64: byte counts above 32 bits survive
    assert (match.candidate_bytes, match.moved_bytes) == (3 * 2 ** 33, 2 ** 33 + 5)
    assert [c.reference_id for c in match.candidates] == ['ref-1', 'ref-3']
    assert [c.map_index for c in match.candidates] == [1, 3]
    assert [c.fused_score for c in match.candidates] == [-0.75, -0.5]
    assert [c.quality for c in match.candidates] == [0.875, 0.625]
    assert [c.global_distance for c in match.candidates] == [0.5, 0.75]
    first, second = (c.pose for c in match.candidates)
    assert (first.position.x, first.orientation.z) == (10.0, pytest.approx(0.6))
    assert (second.position.x, second.position.y, second.position.z) == (30.0, -3.0, 1.5)
    assert (second.orientation.x, second.orientation.w) == (1.0, 0.0)  # (2, 0, 0, 0) normalised


def test_result_to_msgs_all_candidates_and_no_timings():
    """max_candidates above the count keeps all, in order; missing timings are 0 ms."""
    result = make_result()
    result.timings = {}
    result.reference = REFERENCES[2]
    result.confidence = 0.25
    pose, match = result_to_msgs(result, REFERENCES, camera_header(), 'map', False,
                                 max_candidates=10, covariance_diagonal=[1.0] * 6)
    assert [c.reference_id for c in match.candidates] == ['ref-1', 'ref-3', 'ref-0']
    assert match.candidates[2].pose.orientation.w == 1.0
    assert match.pose_published is False
    assert match.best_reference_id == 'ref-2'
    assert match.confidence == 0.25
    assert (match.retrieval_ms, match.rerank_ms, match.extraction_ms, match.latency_ms) == (
        0.0, 0.0, 0.0, 0.0)
    assert (match.candidate_bytes, match.moved_bytes) == (3 * 2 ** 33, 2 ** 33 + 5)
    o = pose.pose.pose.orientation
    assert (o.x, o.y, o.z, o.w) == (0.0, 0.0, 0.0, 1.0)  # ref-2's zero quaternion
    assert pose.header.frame_id == 'map'
    assert list(pose.pose.covariance) == [1.0 if i % 7 == 0 else 0.0 for i in range(36)]
