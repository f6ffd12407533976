# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Messages <-> arrays: images, descriptors, localisation results, stamps.

The only place that knows both the messages and the core's types. Image decoding uses
cv_bridge when it is installed (a ROS 2 install) and the package's own converter
(:mod:`patch_netvlad_ros.core.drives.encodings`) when it is not or when cv_bridge cannot
convert an encoding.
"""

import array
import math
import time
from typing import List, Optional, Sequence, Tuple

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseWithCovarianceStamped
import numpy as np
from patch_netvlad_ros_interfaces.msg import (MatchCandidate, PatchBlock, PlaceDescriptors,
                                              PlaceMatch)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
import torch

from ..core.config import PatchNetVLADConfig
from ..core.drives.encodings import decode_compressed, decode_raw
from ..core.drives.poses import PoseSample
from ..core.errors import ImageError, MapError
from ..core.localization.localizer import LocalizationResult
from ..core.localization.navigation import Transform
from ..core.maps.database import Reference

CONVERTERS = ('auto', 'cv_bridge', 'builtin')
PATCH_DTYPES = {'float16': PatchBlock.FLOAT16, 'float32': PatchBlock.FLOAT32}
_NP_DTYPES = {PatchBlock.FLOAT16: np.dtype('<f2'), PatchBlock.FLOAT32: np.dtype('<f4')}
_TORCH_DTYPES = {PatchBlock.FLOAT16: torch.float16, PatchBlock.FLOAT32: torch.float32}


def _cv_bridge():
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


class ImageDecoder:
    """Camera message -> RGB uint8 [H, W, 3]; raises ImageError for what it cannot read."""

    def __init__(self, converter: str = 'auto') -> None:
        if converter not in CONVERTERS:
            raise ValueError(f'converter must be one of {CONVERTERS}; got {converter!r}')
        self.bridge = None if converter == 'builtin' else _cv_bridge()
        if converter == 'cv_bridge' and self.bridge is None:
            raise ImportError("converter 'cv_bridge' was asked for but cv_bridge is not "
                              "installed: install ros-<distro>-cv-bridge or use 'auto'")

    @property
    def name(self) -> str:
        """Which converter runs: 'cv_bridge' or 'builtin'."""
        return 'builtin' if self.bridge is None else 'cv_bridge'

    def __call__(self, msg) -> np.ndarray:
        """Decode a sensor_msgs/Image or CompressedImage."""
        if isinstance(msg, CompressedImage):
            return decode_compressed(msg.format, bytes(msg.data))
        if self.bridge is not None:
            try:
                return np.ascontiguousarray(self.bridge.imgmsg_to_cv2(msg, 'rgb8'))
            except Exception:  # noqa: B902 - fall back to our converter, which names the problem
                pass
        return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                          bool(msg.is_bigendian))


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """Make an rgb8 sensor_msgs/Image of ``rgb`` [H, W, 3] uint8 with ``header``."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                is_bigendian=0, step=rgb.shape[1] * 3)
    msg.data = rgb.tobytes()
    return msg


def wall_time() -> Time:
    """Now on the wall clock (latency across processes on one machine)."""
    t = time.time_ns()
    return Time(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)


def seconds(stamp: Time) -> float:
    """Convert a builtin_interfaces/Time to seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def descriptors_to_msg(header: Header, config: PatchNetVLADConfig, digest: str,
                       global_desc: torch.Tensor, patches: Sequence[torch.Tensor],
                       patch_dtype: str = 'float16', shared_key: str = '',
                       received: Optional[Time] = None,
                       extraction_ms: float = 0.0) -> PlaceDescriptors:
    """One frame's descriptors: global [Dp], patches per scale [P_s, Dp].

    With a shared_key the blocks carry their shape but no data (out of band).
    """
    msg = PlaceDescriptors(header=header, preset=config.preset, model_digest=digest,
                           image_height=config.image_height, image_width=config.image_width,
                           shared_key=shared_key, extraction_ms=float(extraction_ms))
    if received is not None:
        msg.received = received
    msg.global_descriptor = array.array(
        'f', global_desc.detach().float().cpu().numpy().astype('<f4').tobytes())
    code = PATCH_DTYPES[patch_dtype]
    for i, p in enumerate(patches):
        rows = (config.feature_height - config.patch_sizes[i]) // config.strides[i] + 1
        cols = (config.feature_width - config.patch_sizes[i]) // config.strides[i] + 1
        block = PatchBlock(patch_size=config.patch_sizes[i], stride=config.strides[i],
                           rows=rows, cols=cols, dim=p.shape[-1], dtype=code)
        if not shared_key:
            # torch converts to half several times faster than numpy's astype.
            block.data = p.detach().to(_TORCH_DTYPES[code]).cpu().numpy().tobytes()
        msg.patches.append(block)
    return msg


def _global_array(msg: PlaceDescriptors) -> np.ndarray:
    data = msg.global_descriptor
    if hasattr(data, 'tobytes'):
        return np.frombuffer(data.tobytes(), dtype=np.float32)
    return np.asarray(data, dtype=np.float32)


def check_descriptor_identity(msg: PlaceDescriptors, identity: dict) -> None:
    """Raise MapError when ``msg`` was made by another model or preset than the map's."""
    want = {'model_digest': identity.get('model_digest'),
            'image_height': identity.get('image_height'),
            'image_width': identity.get('image_width'),
            'patch_sizes': list(identity.get('patch_sizes', [])),
            'strides': list(identity.get('strides', [])),
            'num_pcs': identity.get('num_pcs')}
    have = {'model_digest': msg.model_digest, 'image_height': msg.image_height,
            'image_width': msg.image_width,
            'patch_sizes': [b.patch_size for b in msg.patches],
            'strides': [b.stride for b in msg.patches],
            'num_pcs': len(_global_array(msg))}
    diff = [f'{k}: descriptors {have[k]!r} vs map {want[k]!r}' for k in want
            if have[k] != want[k]]
    if diff:
        raise MapError(f"descriptors from preset '{msg.preset}' were made by another model or "
                       'preset than the map (' + '; '.join(diff) + '): run descriptor_node '
                       "with the map's checkpoint and preset, or load a map built with this "
                       'model')


def msg_to_descriptors(msg: PlaceDescriptors,
                       shared: Optional[List[torch.Tensor]] = None
                       ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Global [Dp] and patches per scale [P_s, Dp] (float32) of a descriptor message.

    ``shared``: the patches found in the process-local store when msg.shared_key is set.
    Raises ImageError for a malformed message (sizes, dtype, NaN).
    """
    g = _global_array(msg)
    dim = len(g)
    if dim == 0:
        raise ImageError('descriptor message has an empty global descriptor')
    if not np.isfinite(g).all():
        raise ImageError('global descriptor contains NaN or Inf')
    if msg.shared_key:
        if shared is None:
            raise ImageError(f"patches were sent out of band (shared_key '{msg.shared_key}') "
                             'and are not in this process: run descriptor and localizer '
                             "nodes in one process, or set patch_transport 'message'")
        return torch.from_numpy(g.copy()), shared
    patches = []
    for i, b in enumerate(msg.patches):
        if b.dtype not in _NP_DTYPES:
            raise ImageError(f'patch block {i} has unknown dtype code {b.dtype}; expected '
                             f'{PatchBlock.FLOAT32} (float32) or {PatchBlock.FLOAT16} (float16)')
        dt = _NP_DTYPES[b.dtype]
        # array.array exposes its buffer: view it without a copy (read-only bytes are not).
        raw = b.data if isinstance(b.data, array.array) else bytearray(b.data)
        expect = b.rows * b.cols * b.dim * dt.itemsize
        if b.dim != dim or len(raw) != expect:
            raise ImageError(f'patch block {i} holds {len(raw)} bytes; {b.rows}x{b.cols} '
                             f'patches of {b.dim} {dt.name} values need {expect} (global '
                             f'descriptor has {dim} dims)')
        p = torch.frombuffer(raw, dtype=_TORCH_DTYPES[b.dtype]) if len(raw) else \
            torch.empty(0, dtype=_TORCH_DTYPES[b.dtype])
        # float() copies half data; float32 data is cloned so the message can go.
        p = p.float() if b.dtype == PatchBlock.FLOAT16 else p.clone()
        if not torch.isfinite(p).all():
            raise ImageError(f'patch block {i} contains NaN or Inf')
        patches.append(p.view(b.rows * b.cols, b.dim))
    return torch.from_numpy(g.copy()), patches


def reference_sample(ref: Reference) -> PoseSample:
    """Return a map reference's pose, its quaternion normalised (zero or NaN: identity)."""
    q = np.array([ref.qx, ref.qy, ref.qz, ref.qw], dtype=float)
    n = np.linalg.norm(q)
    q = q / n if n > 0 and math.isfinite(n) else np.array([0.0, 0.0, 0.0, 1.0])
    return PoseSample(ref.stamp, ref.x, ref.y, ref.z, *(float(v) for v in q))


def reference_pose(ref: Reference) -> Pose:
    """Return the geometry_msgs/Pose of a map reference."""
    s = reference_sample(ref)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = s.x, s.y, s.z
    pose.orientation.x, pose.orientation.y = s.qx, s.qy
    pose.orientation.z, pose.orientation.w = s.qz, s.qw
    return pose


def transform_to_pose(transform: Transform) -> Pose:
    """Return the geometry_msgs/Pose of a transform (the pose of its child frame)."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = transform.translation
    q = transform.rotation
    pose.orientation.x, pose.orientation.y = q[0], q[1]
    pose.orientation.z, pose.orientation.w = q[2], q[3]
    return pose


def result_to_msgs(result: LocalizationResult, references: Sequence[Reference],
                   camera_header: Header, map_frame: str, pose_published: bool,
                   max_candidates: int, covariance_diagonal: Sequence[float],
                   extraction_ms: float = 0.0, latency_ms: float = 0.0
                   ) -> Tuple[PoseWithCovarianceStamped, PlaceMatch]:
    """Make the ~/pose and ~/match messages of one localisation (stamp = the camera's)."""
    header = Header(stamp=camera_header.stamp, frame_id=map_frame)
    pose = PoseWithCovarianceStamped(header=header)
    pose.pose.pose = reference_pose(result.reference)
    cov = np.zeros((6, 6))
    cov[np.diag_indices(6)] = covariance_diagonal
    pose.pose.covariance = cov.reshape(-1).tolist()
    match = PlaceMatch(header=header, camera_frame_id=camera_header.frame_id,
                       confidence=float(result.confidence), pose_published=pose_published,
                       best_reference_id=result.reference.id,
                       extraction_ms=float(extraction_ms),
                       retrieval_ms=1e3 * result.timings.get('retrieve_s', 0.0),
                       rerank_ms=1e3 * result.timings.get('rerank_s', 0.0),
                       latency_ms=float(latency_ms),
                       candidate_bytes=int(result.candidate_bytes),
                       moved_bytes=int(result.moved_bytes))
    for c in result.candidates[:max_candidates]:
        match.candidates.append(MatchCandidate(
            reference_id=c.id, map_index=c.index, fused_score=float(c.fused_score),
            quality=float(c.quality), global_distance=float(c.global_distance),
            pose=reference_pose(references[c.index]), patch_score=float(c.patch_score)))
    return pose, match
