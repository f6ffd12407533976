# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""localizer_node: PlaceDescriptors in, ~/pose and ~/match out.

Loads a map database once, retrieves the top_k references by global descriptor, reranks
them by patches and answers each frame with ~/match (PlaceMatch: confidence in [0, 1],
best reference, top candidates with fused scores, per-stage timings) and, when the
confidence reaches ``confidence_threshold``, ~/pose (PoseWithCovarianceStamped: the best
reference's pose in ``map_frame``, stamped with the camera image's stamp). Descriptors
from another model or preset are refused with a throttled error; the node keeps running.

The rerank runs on ``device``: on the CPU the map's memory-mapped patches are read in
place; on a GPU they are kept there (the whole map, copied once at start-up, or the
``device_cache_mb`` most recently used references), and each ~/match reports the bytes
its candidates took and those copied for it.
"""

import sys
import threading
from typing import List, Optional

from geometry_msgs.msg import PoseWithCovarianceStamped
from patch_netvlad_ros_interfaces.msg import PlaceDescriptors, PlaceMatch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
import torch

from .common import run_node
from ..core.accounting import LocalizerStats, SequenceGaps
from ..core.config import MATCHERS
from ..core.database import ReferenceMap
from ..core.errors import ImageError, MapError
from ..core.localizer import Localizer
from ..core.matching import resolve_mnn_method
from ..core.resident_patches import plan_capacity
from ..ros import shared_store
from ..ros.conversions import (check_descriptor_identity, msg_to_descriptors, result_to_msgs,
                               seconds, wall_time)
from ..ros.diagnostics import DiagnosticsPublisher
from ..ros.params import declare, DEVICES, Param, ParameterError, resolve_device
from ..ros.qos import pipeline_qos


def _weights_ok(value: List[float]) -> Optional[str]:
    if not value:
        return None
    if any(w < 0 for w in value) or abs(sum(value) - 1.0) > 1e-6:
        return "must be non-negative and sum to 1 (or empty for the map's)"
    return None


PARAMS = [
    Param('map_path', '', 'map database folder (built by build-map or the demo); required'),
    Param('top_k', 0, "candidates reranked per frame (0: the map's)", low=0, high=100000),
    Param('matcher', '', "'ransac' or 'spatial' (empty: the map's)", choices=('',) + MATCHERS),
    Param('patch_weights', [], 'fusion weight per patch scale, summing to 1 (empty: the '
          "map's)", check=_weights_ok),
    Param('place_radius', 5.0, 'metres within which references count as the same place '
          '(confidence)', low=1e-6, high=1e6),
    Param('map_frame', 'map', 'frame_id of ~/pose and ~/match (REP 105)'),
    Param('confidence_threshold', 0.0, 'publish ~/pose only when the match confidence is at '
          'least this (~/match is always published)', low=0.0, high=1.0, read_only=False),
    Param('max_candidates', 10, 'candidates listed in ~/match', low=1, high=1000),
    Param('position_stddev', 5.0, 'position standard deviation (m) in the pose covariance',
          low=0.0, high=1e6),
    Param('orientation_stddev', 0.5, 'orientation standard deviation (rad) in the pose '
          'covariance', low=0.0, high=10.0),
    Param('publish_tf', False, 'broadcast map_frame -> tf_child_frame for accepted poses '
          '(needs tf2_ros)'),
    Param('tf_child_frame', 'place_recognition', 'child frame of the TF broadcast'),
    Param('verify_map', True, 'verify the map checksums at start-up (slow for big maps)'),
    Param('device', 'auto', "where the rerank runs: 'auto' (CUDA when available, else CPU), "
          "'cuda' (the candidates' patches kept on the GPU) or 'cpu'", choices=DEVICES),
    Param('device_cache_mb', 0, "GPU memory for the map's patch descriptors, MiB: 0 keeps the "
          'whole map there (copied once at start-up); otherwise the most recently used '
          'references, at least top_k of them. Unused on the CPU, which reads the map in place',
          low=0, high=2 ** 31 - 1),
]


class LocalizerNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('localizer_node', **kwargs)
        p = declare(self, PARAMS)
        self.params = p
        if not p['map_path']:
            raise ParameterError("parameter 'map_path' is empty: give the map folder "
                                 '(build one with pnv-build-map or the demo)')
        self.tf = None
        if p['publish_tf']:
            try:
                from tf2_ros import TransformBroadcaster
            except ImportError:
                raise ParameterError("parameter 'publish_tf' = True needs tf2_ros, which is "
                                     'not installed: install ros-<distro>-tf2-ros or set it '
                                     'False') from None
            self.tf = TransformBroadcaster(self)
        self.get_logger().info(f"loading map {p['map_path']}" + (
            ' (verifying its checksums)' if p['verify_map'] else ''))
        ref_map = ReferenceMap.load(p['map_path'], verify=p['verify_map'])
        matching = {}
        if p['top_k']:
            matching['top_k'] = p['top_k']
        if p['matcher']:
            matching['matcher'] = p['matcher']
        weights = list(p['patch_weights'])
        if weights:
            if len(weights) != len(ref_map.config.patch_sizes):
                raise ParameterError(
                    f"parameter 'patch_weights' = {weights}: the map has "
                    f'{len(ref_map.config.patch_sizes)} patch scales')
            matching['patch_weights'] = weights
        self.map = ref_map
        self.device = resolve_device(p['device'])
        cfg = ref_map.config.override(**matching)
        self.localizer: Optional[Localizer] = None
        if len(ref_map):
            self.localizer = Localizer(ref_map, None, p['place_radius'], device=self.device,
                                       cache_references=self._cache_references(cfg),
                                       **matching)
        else:
            # Stay up (a map may be rebuilt and the node restarted by a supervisor), but say
            # so loudly: every frame will be answered with an error and no pose.
            self.get_logger().error(f"map {p['map_path']} holds no references: no pose will "
                                    'be published; build it from at least one image')
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, '~/pose', 10)
        self.match_pub = self.create_publisher(PlaceMatch, '~/match', 10)
        self.create_subscription(PlaceDescriptors, 'place_descriptors', self.on_descriptors,
                                 pipeline_qos(16),
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self._start_accounting()
        mnn = resolve_mnn_method('auto', self.device, cfg.num_pcs)
        resident = self.localizer.resident if self.localizer else None
        where = ('the map read in place' if resident is None else
                 f'{resident.capacity} of {len(ref_map)} references resident '
                 f'({resident.nbytes / 2 ** 20:.0f} MiB)')
        self.get_logger().info(
            f"map {p['map_path']}: {len(ref_map)} references, preset {cfg.preset} "
            f'{cfg.image_width}x{cfg.image_height}; top-{cfg.top_k} {cfg.matcher}, '
            f'{mnn} mutual nearest neighbours on {self.device} ({where})')

    def _cache_references(self, cfg) -> Optional[int]:
        """Return the references to keep on the rerank device (None on the CPU)."""
        budget_mb = self.params['device_cache_mb']
        if self.device.type == 'cpu':
            if budget_mb:
                self.get_logger().warning('device_cache_mb is unused: the rerank runs on the '
                                          'CPU, which reads the map in place')
            return None
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == 'cuda' else None
        try:
            return plan_capacity(self.map.patches, min(cfg.top_k, len(self.map)),
                                 budget_mb << 20, free)
        except MapError as exc:
            raise ParameterError(f"parameter 'device_cache_mb' = {budget_mb}: {exc}") from exc

    def _start_accounting(self) -> None:
        """Frame counters (core.accounting.LocalizerStats), published on /diagnostics."""
        self.stats = LocalizerStats()
        self._stats_lock = threading.Lock()
        self._gaps = SequenceGaps()
        self.diagnostics = DiagnosticsPublisher(self, 'localizer_node', self.counters)

    @property
    def answered(self) -> int:
        """Frames answered on ~/match."""
        return self.stats.answered

    @property
    def rejected(self) -> int:
        """Frames refused (another model, malformed, empty map, internal error)."""
        return self.stats.rejected

    def counters(self) -> dict:
        """Return the frame counters, as published on /diagnostics."""
        with self._stats_lock:
            return self.stats.counters()

    def _count(self, outcome: str) -> None:
        with self._stats_lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)

    def on_descriptors(self, msg: PlaceDescriptors, info) -> None:
        """Localise one frame and publish its match (and pose when confident).

        info: rclpy's message info; gaps in descriptor_node's publication sequence count
        descriptors that never arrived (a full queue, or lost in transport).
        """
        gid = bytes(((info or {}).get('publisher_gid') or {}).get('data', b''))
        with self._stats_lock:
            missed = self._gaps.update(gid, (info or {}).get('publication_sequence_number'))
            self.stats.missed += missed
            self.stats.received += 1
        if missed:
            self.get_logger().error(
                f'{missed} descriptor message(s) published by descriptor_node never arrived '
                '(publisher sequence gap): counted as lost between the nodes',
                throttle_duration_sec=10.0)
        shared = shared_store.take(msg.shared_key) if msg.shared_key else None
        try:
            if self.localizer is None:
                raise MapError(f"the map {self.params['map_path']} holds no references")
            check_descriptor_identity(msg, self.map.identity)
            global_desc, patches = msg_to_descriptors(msg, shared)
            result = self.localizer.localize_descriptors(global_desc, patches)
        except (MapError, ImageError) as exc:
            self._count('rejected')
            self.get_logger().error(
                f'no pose for the frame stamped {seconds(msg.header.stamp):.3f}: {exc}',
                throttle_duration_sec=5.0)
            return
        except Exception as exc:  # noqa: B902 - a bug must not stop a robot's localizer
            self._count('rejected')
            self.get_logger().error(
                f'no pose for the frame stamped {seconds(msg.header.stamp):.3f}: internal '
                f'error {type(exc).__name__}: {exc}', throttle_duration_sec=5.0)
            return
        p = self.params
        accepted = result.confidence >= p['confidence_threshold']
        latency_ms = 1e3 * (seconds(wall_time()) - seconds(msg.received)) \
            if msg.received.sec or msg.received.nanosec else 0.0
        sp, so = p['position_stddev'] ** 2, p['orientation_stddev'] ** 2
        pose, match = result_to_msgs(result, self.map.references, msg.header, p['map_frame'],
                                     accepted, p['max_candidates'], [sp] * 3 + [so] * 3,
                                     msg.extraction_ms, latency_ms)
        if accepted:
            self.pose_pub.publish(pose)
            if self.tf is not None:
                self._broadcast(pose)
        self.match_pub.publish(match)
        self._count('answered')

    def _broadcast(self, pose: PoseWithCovarianceStamped) -> None:
        from geometry_msgs.msg import TransformStamped
        t = TransformStamped(header=pose.header, child_frame_id=self.params['tf_child_frame'])
        pos, ori = pose.pose.pose.position, pose.pose.pose.orientation
        t.transform.translation.x, t.transform.translation.y = pos.x, pos.y
        t.transform.translation.z = pos.z
        t.transform.rotation = ori
        self.tf.sendTransform(t)


def main(args: Optional[List[str]] = None) -> int:
    """Run localizer_node on its own (console script / `ros2 run`)."""
    return run_node(LocalizerNode, args)


if __name__ == '__main__':
    sys.exit(main())
