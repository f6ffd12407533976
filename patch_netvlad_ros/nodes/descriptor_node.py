# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""descriptor_node: ImageBatch in, one PlaceDescriptors per frame out.

Loads the model once (a checkpoint in the authors' layout, or the model bootstrapped
from the shipped corridor references when ``checkpoint`` is empty) on CUDA when there is
one (CPU fallback), runs each batch through it in one pass, publishes each frame's
descriptors with that frame's header and the model identity, then acknowledges the batch
on ``image_batch_ack`` so camera_batcher sends the next one.
"""

import sys
import time
from typing import List, Optional

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import UInt64
import torch

from .common import run_node
from ..core import winograd
from ..core.checkpoint import model_digest
from ..core.config import get_config, PRESETS
from ..core.encodings import decode_raw
from ..core.errors import ImageError
from ..core.image import to_tensor
from ..core.models import resolve_model
from ..msg import ImageBatch, PlaceDescriptors
from ..ros import shared_store
from ..ros.conversions import descriptors_to_msg, PATCH_DTYPES
from ..ros.params import declare, DEVICES, Param, ParameterError, resolve_device
from ..ros.qos import pipeline_qos

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}

PARAMS = [
    Param('checkpoint', '', "model checkpoint (*.pth.tar, authors' layout); empty: the model "
          'bootstrapped from the shipped corridor references (built and cached on first use)'),
    Param('preset', 'speed', 'Patch-NetVLAD preset', choices=tuple(sorted(PRESETS))),
    Param('image_width', 0, "network input width in px (0: the preset's)", low=0, high=8192),
    Param('image_height', 0, "network input height in px (0: the preset's)", low=0, high=8192),
    Param('device', 'auto', "'auto': CUDA when available, else CPU", choices=DEVICES),
    Param('precision', 'fp32', 'backbone precision (fp16 needs CUDA; bf16 runs on CUDA and on '
          'CPUs with bf16 support); NetVLAD, patches and PCA stay fp32',
          choices=tuple(PRECISIONS)),
    Param('conv_algorithm', 'auto', "float32 CPU backbone's 3x3 convolutions: 'winograd' "
          '(Winograd F(4x4, 3x3), about 2x faster, descriptors within 1e-5 of direct), '
          "'direct' (oneDNN), 'auto': winograd where its C helper builds (CPU, fp32)",
          choices=('auto', 'winograd', 'direct')),
    Param('patch_dtype', 'float16', 'patch descriptor values in messages (the map stores '
          'float16)', choices=tuple(PATCH_DTYPES)),
    Param('patch_transport', 'message', "'message': patches in PlaceDescriptors; 'shared': "
          'kept in process memory, only a key is sent (localizer_node in the same process)',
          choices=('message', 'shared')),
    Param('seed', 0, 'seed of the bootstrapped model (checkpoint empty)', low=0, high=2 ** 31 - 1),
]


class DescriptorNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('descriptor_node', **kwargs)
        p = declare(self, PARAMS)
        self.params = p
        overrides = {k: p[f'image_{k}'] for k in ('width', 'height') if p[f'image_{k}']}
        config = get_config(p['preset'], **{f'image_{k}': v for k, v in overrides.items()})
        device = resolve_device(p['device'])
        if p['precision'] == 'fp16' and device.type != 'cuda':
            raise ParameterError("parameter 'precision' = 'fp16' needs CUDA (running on cpu): "
                                 "use 'fp32' or 'bf16'")
        requested = {'auto': None, 'winograd': True, 'direct': False}[p['conv_algorithm']]
        try:
            self.winograd = winograd.resolve(requested, device, PRECISIONS[p['precision']])
        except ValueError as exc:
            raise ParameterError(f"parameter 'conv_algorithm' = 'winograd': {exc}: use 'auto' "
                                 "or 'direct'") from exc
        self.device = device
        self.dtype = PRECISIONS[p['precision']]
        log = self.get_logger()
        self.model, source = resolve_model(p['checkpoint'], config, p['seed'],
                                           log=lambda m: log.info(f'bootstrap: {m}'))
        self.model.to(device).eval()
        self.config = self.model.config
        self.digest = model_digest(self.model)
        self.descriptors = self.create_publisher(PlaceDescriptors, 'place_descriptors',
                                                 pipeline_qos(16))
        self.ack = self.create_publisher(UInt64, 'image_batch_ack', pipeline_qos(10))
        self.create_subscription(ImageBatch, 'image_batch', self.on_batch, pipeline_qos(4),
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.frames = 0
        algorithm = 'Winograd' if self.winograd else 'direct'
        patches = ('patches shared in process' if p['patch_transport'] == 'shared'
                   else f"patches as {p['patch_dtype']} in messages")
        log.info(f'model: {source}; preset {config.preset} {config.image_width}x'
                 f'{config.image_height}; {device.type} {p["precision"]} {algorithm}; '
                 f'digest {self.digest[:12]}; {patches}')

    def decode(self, msg: ImageBatch) -> List[np.ndarray]:
        """Decode the batch's images into RGB arrays (ImageError if one is malformed)."""
        if not msg.images:
            raise ImageError('empty ImageBatch')
        return [decode_raw(m.encoding, m.height, m.width, m.step, m.data, bool(m.is_bigendian))
                for m in msg.images]

    def on_batch(self, msg: ImageBatch) -> None:
        """Describe a batch and publish one message per frame, then acknowledge it."""
        try:
            self._describe(msg)
        except ImageError as exc:
            self.get_logger().error(f'dropped batch {msg.sequence}: {exc}',
                                    throttle_duration_sec=5.0)
        except Exception as exc:  # noqa: B902 - log and keep serving (e.g. CUDA out of memory)
            self.get_logger().error(f'dropped batch {msg.sequence}: internal error '
                                    f'{type(exc).__name__}: {exc}', throttle_duration_sec=5.0)
        finally:
            self.ack.publish(UInt64(data=msg.sequence))

    def _describe(self, msg: ImageBatch) -> None:
        images = self.decode(msg)
        start = time.perf_counter()
        desc = self.model.extract(to_tensor(images, self.config), device=self.device,
                                  encoder_dtype=self.dtype, winograd=self.winograd)
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
        per_frame_ms = 1e3 * (time.perf_counter() - start) / len(images)
        shared = self.params['patch_transport'] == 'shared'
        for i, image in enumerate(msg.images):
            patches = [p[i] for p in desc.patches]
            key = shared_store.put([p.float().cpu() for p in patches]) if shared else ''
            received = msg.received[i] if i < len(msg.received) else None
            self.descriptors.publish(descriptors_to_msg(
                image.header, self.config, self.digest, desc.global_desc[i], patches,
                self.params['patch_dtype'], key, received, per_frame_ms))
            self.frames += 1


def main(args: Optional[List[str]] = None) -> int:
    """Run descriptor_node on its own (console script / `ros2 run`)."""
    return run_node(DescriptorNode, args)


if __name__ == '__main__':
    sys.exit(main())
