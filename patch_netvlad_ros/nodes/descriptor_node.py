# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""descriptor_node: ImageBatch in, one PlaceDescriptors per frame out.

Loads the model once, on CUDA when there is one (CPU fallback): the map's own
(``map_path``: its model.pth.tar, preset and image size), a checkpoint in the authors'
layout (``checkpoint``), or, only when ``bootstrap_corridor_model`` asks for it, the model
bootstrapped from the shipped corridor references (a demo and test convenience). With
none of them it refuses to start. It runs each batch through the model in one pass,
publishes each frame's descriptors with that frame's header and the model identity, then
acknowledges the batch on ``image_batch_ack`` so camera_batcher sends the next one.

A lifecycle node (:mod:`..ros.lifecycle`): configure loads the model (a bad parameter or
a missing model: FAILURE with the reason, parameters may be fixed and configure tried
again), activate serves, deactivate stops (batches are neither described nor
acknowledged), cleanup frees the model. ``autostart`` (default) does configure and
activate at start-up.
"""

import sys
import threading
import time
from typing import List, Optional

import numpy as np
from patch_netvlad_ros_interfaces.msg import ImageBatch, PlaceDescriptors
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from std_msgs.msg import UInt64
import torch

from .common import DEFAULT_PRESET, network_config, run_node
from ..core.config import PRESETS
from ..core.drives.encodings import decode_raw
from ..core.errors import ImageError
from ..core.graph.accounting import DescriptorStats, SequenceGaps
from ..core.maps.models import load_map_model, resolve_model
from ..core.model import winograd
from ..core.model.checkpoint import model_digest
from ..core.model.image import to_tensor
from ..ros import shared_store
from ..ros.conversions import descriptors_to_msg, PATCH_DTYPES
from ..ros.diagnostics import DiagnosticsPublisher
from ..ros.lifecycle import AUTOSTART, destroy_endpoints, ManagedNode
from ..ros.params import DEVICES, Param, ParameterError, resolve_device
from ..ros.qos import pipeline_qos

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}

PARAMS = [
    Param('map_path', '', 'map folder: its model (model.pth.tar), preset and image size are '
          "used (the model's digest is checked against the map's)"),
    Param('checkpoint', '', "model checkpoint (*.pth.tar, authors' layout); with map_path it "
          "replaces the map's model.pth.tar and must be the model the map was built with"),
    Param('bootstrap_corridor_model', False, 'demo/test convenience: with neither map_path '
          'nor checkpoint, use the model bootstrapped from the shipped corridor references '
          '(built and cached on first use: minutes on a CPU). Off: the node refuses to start '
          'without a model'),
    Param('preset', '', f"Patch-NetVLAD preset (empty: the map's, else '{DEFAULT_PRESET}'; "
          "with map_path it must be the map's)", choices=('',) + tuple(sorted(PRESETS))),
    Param('image_width', 0, "network input width in px (0: the map's, else the preset's; "
          "with map_path it must be the map's)", low=0, high=8192),
    Param('image_height', 0, "network input height in px (0: the map's, else the preset's; "
          "with map_path it must be the map's)", low=0, high=8192),
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
    Param('seed', 0, 'seed of the bootstrapped corridor model (bootstrap_corridor_model)',
          low=0, high=2 ** 31 - 1),
    AUTOSTART,
]


class DescriptorNode(ManagedNode):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('descriptor_node', PARAMS, **kwargs)
        self.model = None
        self._own_publishers: list = []
        self._own_subscriptions: list = []
        self.diagnostics: Optional[DiagnosticsPublisher] = None
        self.autostart()

    def configure(self) -> None:
        """Load the model; create the publishers, the batch subscription and the counters."""
        p = self.params
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
        model, source = self._load_model(p)
        self.model = model.to(device).eval()
        self.config = config = self.model.config
        self.digest = model_digest(self.model)
        publish = self.create_lifecycle_publisher
        self.descriptors = publish(PlaceDescriptors, 'place_descriptors', pipeline_qos(16))
        self.ack = publish(UInt64, 'image_batch_ack', pipeline_qos(10))
        self._own_publishers = [self.descriptors, self.ack]
        self._own_subscriptions = [self.create_subscription(
            ImageBatch, 'image_batch', self.on_batch, pipeline_qos(4),
            callback_group=MutuallyExclusiveCallbackGroup())]
        self._start_accounting()
        algorithm = 'Winograd' if self.winograd else 'direct'
        patches = ('patches shared in process' if p['patch_transport'] == 'shared'
                   else f"patches as {p['patch_dtype']} in messages")
        log.info(f'model: {source}; preset {config.preset} {config.image_width}x'
                 f'{config.image_height}; {device.type} {p["precision"]} {algorithm}; '
                 f'digest {self.digest[:12]}; {patches}')

    def release(self) -> None:
        """Destroy the publishers, the subscription and the counters; free the model."""
        destroy_endpoints(self, self._own_publishers, self._own_subscriptions)
        self._own_publishers, self._own_subscriptions = [], []
        if self.diagnostics is not None:
            self.diagnostics.destroy()
            self.diagnostics = None
        on_cuda = self.model is not None and self.device.type == 'cuda'
        self.model = None
        if on_cuda:
            torch.cuda.empty_cache()

    def _load_model(self, p):
        """Return (model, where it came from) as the model parameters say (see PARAMS)."""
        if p['bootstrap_corridor_model'] and (p['map_path'] or p['checkpoint']):
            given = 'map_path' if p['map_path'] else 'checkpoint'
            raise ParameterError(f"parameter 'bootstrap_corridor_model' = True, and {given} "
                                 f'= {p[given]!r} is given too: set one of them')
        if not (p['map_path'] or p['checkpoint'] or p['bootstrap_corridor_model']):
            raise ParameterError(
                "no model: set parameter 'map_path' to the map folder (its model.pth.tar, "
                "preset and image size are used), or 'checkpoint' to a model file (with "
                "'preset', 'image_width', 'image_height'); 'bootstrap_corridor_model': true "
                'runs the shipped corridor demo model (built on first use: minutes)')
        config, map_info = network_config(p)
        log = self.get_logger()
        if map_info is not None:
            log.info(f"loading the model of map {p['map_path']}: "
                     f"{p['checkpoint'] or map_info.checkpoint}")
            return load_map_model(p['map_path'], p['checkpoint'] or None, map_info)
        if p['checkpoint']:
            log.info(f"loading the model {p['checkpoint']}")
        else:
            log.info(f'loading the bootstrapped corridor model ({config.preset} '
                     f'{config.image_width}x{config.image_height}, seed {p["seed"]}; built '
                     'on first use)')
        return resolve_model(p['checkpoint'], config, p['seed'],
                             log=lambda m: log.info(f'bootstrap: {m}'),
                             bootstrap=p['bootstrap_corridor_model'])

    def decode(self, msg: ImageBatch) -> List[np.ndarray]:
        """Decode the batch's images into RGB arrays (ImageError if one is malformed)."""
        if not msg.images:
            raise ImageError('empty ImageBatch')
        return [decode_raw(m.encoding, m.height, m.width, m.step, m.data, bool(m.is_bigendian))
                for m in msg.images]

    def _start_accounting(self) -> None:
        """Frame counters (core.accounting.DescriptorStats), published on /diagnostics."""
        self.stats = DescriptorStats()
        self._stats_lock = threading.Lock()
        self._batch_gaps = SequenceGaps()
        self.diagnostics = DiagnosticsPublisher(self, 'descriptor_node', self.counters)

    def counters(self) -> dict:
        """Return the frame counters, as published on /diagnostics."""
        with self._stats_lock:
            return self.stats.counters()

    def on_batch(self, msg: ImageBatch, info) -> None:
        """Describe a batch and publish one message per frame, then acknowledge it.

        Every frame of the batch is counted as described or failed; gaps in the batch
        sequence (per camera_batcher, from rclpy's message ``info``) count lost batches.
        """
        with self.work_lock:
            if not self.active:
                self.get_logger().info('inactive: image batches are not described',
                                       throttle_duration_sec=10.0)
                return
            self._on_batch(msg, info)

    def _on_batch(self, msg: ImageBatch, info) -> None:
        frames = len(msg.images)
        gid = bytes(((info or {}).get('publisher_gid') or {}).get('data', b''))
        with self._stats_lock:
            missed = self._batch_gaps.update(gid, int(msg.sequence))
            self.stats.batches_missed += missed
            self.stats.batches += 1
            self.stats.frames += frames
            self.stats.describing = frames
        if missed:
            self.get_logger().error(
                f'{missed} image batch(es) from camera_batcher never arrived (sequence gap '
                f'before batch {msg.sequence}): camera_batcher counts their frames as '
                'dropped_ack_timeout', throttle_duration_sec=10.0)
        try:
            self._describe(msg)
        except ImageError as exc:
            self.get_logger().error(f'dropped batch {msg.sequence}: {exc}',
                                    throttle_duration_sec=5.0)
        except Exception as exc:  # noqa: B902 - log and keep serving (e.g. CUDA out of memory)
            self.get_logger().error(f'dropped batch {msg.sequence}: internal error '
                                    f'{type(exc).__name__}: {exc}', throttle_duration_sec=5.0)
        finally:
            with self._stats_lock:
                # Frames not described (the whole batch, or the rest after a failure).
                self.stats.failed += self.stats.describing
                self.stats.describing = 0
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
            with self._stats_lock:
                self.stats.described += 1
                self.stats.describing -= 1


def main(args: Optional[List[str]] = None) -> int:
    """Run descriptor_node on its own (console script / `ros2 run`)."""
    return run_node(DescriptorNode, args)


if __name__ == '__main__':
    sys.exit(main())
