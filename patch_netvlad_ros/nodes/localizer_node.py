# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""localizer_node: PlaceDescriptors in, ~/pose and ~/match out.

Loads a map database once, retrieves the top_k references by global descriptor, reranks
them by patches and answers each frame with ~/match (PlaceMatch: confidence in [0, 1],
best reference, top candidates with their scores, per-stage timings) and, when the
answer's confidence reaches ``confidence_threshold``, ~/pose (PoseWithCovarianceStamped:
the place's reference pose in ``map_frame``, stamped with the camera image's stamp).
Descriptors from another model or preset are refused with a throttled error; the node
keeps running.

Ranking and confidence come from the map's fit (pnv-build-map fits a map on itself:
``fusion`` '' uses its weights of global and patch scores and its calibrated confidence,
the probability that the answer lies within the map's ``place_radius``); a map without
a fit keeps the authors' order and the heuristic confidence (one log line says how to
fit it). With ``sequence`` on (the default) a sequence filter (:mod:`..core.sequence`)
folds each frame's single-frame answer into a belief over the map's places, in stamp
order, moved between frames by odometry (``odom_topic``: nav_msgs/Odometry looked up at
the frame's stamp; or TF ``odom_frame`` -> ``base_frame`` where tf2_ros is installed)
or, without it, by time and ``max_speed``. ~/match carries both answers; ~/pose carries
the filter's place when its confidence (posterior mass within place_radius) reaches the
threshold. The single-frame answer is computed as before; the filter's update (well
under a millisecond) follows it. A stamp older than the previous frame's (a bag loop, a
restarted camera) resets the filter, with a log line.

The rerank runs on ``device``: on the CPU the map's memory-mapped patches are read in
place; on a GPU they are kept there (the whole map, copied once at start-up, or the
``device_cache_mb`` most recently used references), and each ~/match reports the bytes
its candidates took and those copied for it.

Navigation (:mod:`..core.navigation`; REP 103/105 frames, stamps from the image): the
matched reference is the camera's pose; ~/pose is the base's, ``map_T_camera *
inverse(base_T_camera)`` with the camera's extrinsic (``camera_xyz``/``camera_rpy``, or
TF ``base_frame`` -> the camera's frame where tf2_ros is installed). With
``publish_initialpose`` a confident pose also goes to ``/initialpose`` for nav2/amcl to
relocalize (``initialpose_threshold``, at most once per ``initialpose_interval``); with
``publish_map_odom`` (needs tf2_ros) each pose on ~/pose broadcasts amcl's correction
``map_T_odom = map_T_base * inverse(odom_T_base)`` with the odometry at the image's stamp.

A lifecycle node (:mod:`..ros.lifecycle`): configure loads the map (a bad parameter or
map: FAILURE with the reason; fix the parameters and configure again), activate serves,
deactivate stops (frames are not localized, nothing is published), cleanup frees the
map. ``autostart`` (default) does configure and activate at start-up.
"""

import sys
import threading
from typing import List, Optional

from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry
from patch_netvlad_ros_interfaces.msg import PlaceDescriptors, PlaceMatch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header
import torch

from .common import run_node
from ..core.config import MATCHERS
from ..core.drives.poses import PoseSample
from ..core.errors import ImageError, MapError
from ..core.graph.accounting import LocalizerStats, SequenceGaps
from ..core.localization.fusion import FUSION_METHODS
from ..core.localization.localizer import fitted_parameters, LocalizationResult, Localizer
from ..core.localization.navigation import base_pose, InitialPoseGate, map_to_odom, Transform
from ..core.localization.odometry import OdometryBuffer
from ..core.localization.sequence import MotionModel, SequenceLocalizer
from ..core.maps.database import ReferenceMap
from ..core.maps.map_building import FIT_HINT, training_warning
from ..core.matching.rerank import resolve_mnn_method
from ..core.matching.resident_patches import plan_capacity
from ..ros import shared_store
from ..ros.conversions import (check_descriptor_identity, msg_to_descriptors,
                               reference_sample, result_to_msgs, seconds, transform_to_pose,
                               wall_time)
from ..ros.diagnostics import DiagnosticsPublisher
from ..ros.lifecycle import AUTOSTART, destroy_endpoints, ManagedNode
from ..ros.params import DEVICES, Param, ParameterError, resolve_device
from ..ros.qos import pipeline_qos

#: ``fusion`` parameter -> the Localizer's fusion argument: '' the map's if fitted,
#: 'global+patches' the map's fitted weights (refused without a fit).
FUSIONS = {'': None, **{m: 'fitted' if m == 'global+patches' else m for m in FUSION_METHODS}}
#: Odometry subscription: best effort matches reliable and best-effort publishers alike;
#: a lost sample only widens the interpolation gap.
ODOM_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
#: /initialpose as rviz2 and nav2 publish it: reliable, volatile.
INITIALPOSE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


def _weights_ok(value: List[float]) -> Optional[str]:
    if not value:
        return None
    if any(w < 0 for w in value) or abs(sum(value) - 1.0) > 1e-6:
        return "must be non-negative and sum to 1 (or empty for the map's)"
    return None


def _three(value: List[float]) -> Optional[str]:
    return None if len(value) == 3 else 'needs three values'


PARAMS = [
    Param('map_path', '', 'map database folder (built by build-map or the demo); required'),
    Param('top_k', 0, "candidates reranked per frame (0: the map's)", low=0, high=100000),
    Param('matcher', '', "'ransac' or 'spatial' (empty: the map's)", choices=('',) + MATCHERS),
    Param('patch_weights', [], 'fusion weight per patch scale, summing to 1 (empty: the '
          "map's)", check=_weights_ok),
    Param('fusion', '', "how candidates are ranked: '' (the map's fit: its weights of global "
          "similarity and patch scores; the authors' order for a map without a fit), "
          "'patches' (the authors': patch scores alone), 'global' (global similarity "
          "alone) or 'global+patches' (the map's fitted weights; the map must have a fit). "
          "The calibrated confidence needs the map's own fusion and place_radius; other "
          'choices use the heuristic confidence', choices=tuple(FUSIONS)),
    Param('place_radius', 0.0, 'metres within which references count as the same place: '
          'the confidence is the probability that the answer lies within it (0: the '
          'radius the map was fitted for, 5.0 for a map without a fit)', low=0.0, high=1e6),
    Param('map_frame', 'map', 'frame_id of ~/pose and ~/match (REP 105)'),
    Param('confidence_threshold', -1.0, 'publish ~/pose only when its confidence (the '
          "sequence filter's with sequence on) is at least this; ~/match is always "
          "published. Negative: the map's, the threshold of its calibrated confidence "
          '(0.5: more likely right than wrong), or 0.0 with the heuristic confidence',
          low=-1.0, high=1.0, read_only=False),
    Param('sequence', True, "filter the frames in stamp order over the map's places "
          "(odometry or time motion model): ~/pose carries the filter's place, ~/match "
          'both answers. False: every frame on its own'),
    Param('max_speed', 3.0, 'sequence filter without odometry: fastest motion in m/s '
          '(places farther than max_speed x the time between frames are unlikely)',
          low=1e-3, high=1000.0),
    Param('odom_topic', '', 'sequence filter: nav_msgs/Odometry topic whose pose at each '
          "frame's stamp moves the belief (empty: none; then TF odom_frame, else time "
          'and max_speed)'),
    Param('odom_frame', '', 'sequence filter: odometry from TF odom_frame -> base_frame at '
          "each frame's stamp instead of odom_topic (needs tf2_ros; empty: no TF)"),
    Param('base_frame', 'base_link', "the robot's frame (REP 105): ~/pose and initialpose "
          "are its pose; the TF odometry (odom_frame) and the camera's extrinsic refer to it"),
    Param('max_candidates', 10, 'candidates listed in ~/match', low=1, high=1000),
    Param('position_stddev', 5.0, 'position standard deviation (m) in the pose covariance',
          low=0.0, high=1e6),
    Param('orientation_stddev', 0.5, 'orientation standard deviation (rad) in the pose '
          'covariance', low=0.0, high=10.0),
    Param('publish_tf', False, 'broadcast map_frame -> tf_child_frame for accepted poses '
          '(needs tf2_ros)'),
    Param('tf_child_frame', 'place_recognition', 'child frame of the TF broadcast'),
    Param('camera_extrinsic', 'static', "the camera's pose on the robot, which turns the "
          "matched camera pose into the base's: 'static' (camera_xyz and camera_rpy in "
          "base_frame) or 'tf' (TF base_frame -> camera_frame at the image's stamp; needs "
          'tf2_ros)', choices=('static', 'tf')),
    Param('camera_frame', '', "camera_extrinsic 'tf': the frame whose pose the map's "
          'references are (x forward, z up: e.g. camera_link, not an optical frame; empty: '
          "the image header's frame_id)"),
    Param('camera_xyz', [0.0, 0.0, 0.0], "static extrinsic: the camera's x, y, z in "
          'base_frame (m)', check=_three),
    Param('camera_rpy', [0.0, 0.0, 0.0], "static extrinsic: the camera's roll, pitch, yaw "
          'in base_frame (rad, fixed axes as in URDF)', check=_three),
    Param('publish_initialpose', False, "send the base's pose to initialpose_topic (nav2 / "
          'amcl relocalization) when its confidence reaches initialpose_threshold, at most '
          'once per initialpose_interval'),
    Param('initialpose_topic', '/initialpose', 'topic of the relocalization poses '
          '(geometry_msgs/PoseWithCovarianceStamped; amcl and nav2 listen on /initialpose)'),
    Param('initialpose_threshold', 0.9, 'least confidence of a pose sent to '
          'initialpose_topic (and at least what ~/pose needs)', low=0.0, high=1.0),
    Param('initialpose_interval', 10.0, 'least seconds (image stamps) between two poses '
          'sent to initialpose_topic', low=0.0, high=1e6),
    Param('publish_map_odom', False, "broadcast amcl's correction map_frame -> odometry "
          'frame for each pose on ~/pose: map_T_odom = map_T_base * inverse(odom_T_base) '
          "at the image's stamp (needs tf2_ros and odometry: odom_topic or odom_frame)"),
    Param('verify_map', True, 'verify the map checksums at start-up (slow for big maps)'),
    Param('device', 'auto', "where the rerank runs: 'auto' (CUDA when available, else CPU), "
          "'cuda' (the candidates' patches kept on the GPU) or 'cpu'", choices=DEVICES),
    Param('device_cache_mb', 0, "GPU memory for the map's patch descriptors, MiB: 0 keeps the "
          'whole map there (copied once at start-up); otherwise the most recently used '
          'references, at least top_k of them. Unused on the CPU, which reads the map in place',
          low=0, high=2 ** 31 - 1),
    AUTOSTART,
]


class LocalizerNode(ManagedNode):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('localizer_node', PARAMS, **kwargs)
        self._own_publishers: list = []
        self._own_subscriptions: list = []
        self.diagnostics: Optional[DiagnosticsPublisher] = None
        self._release_state()
        self.autostart()

    def _release_state(self) -> None:
        """Forget the map, the filters and the TF helpers (the unconfigured state)."""
        self.map: Optional[ReferenceMap] = None
        self.localizer: Optional[Localizer] = None
        self.sequence: Optional[SequenceLocalizer] = None
        self.odometry: Optional[OdometryBuffer] = None
        self.tf = None
        self.tf_buffer = None
        self._tf_listener = None
        self.initialpose_gate: Optional[InitialPoseGate] = None
        self._odom_frame_id = ''

    def release(self) -> None:
        """Destroy the publishers, subscriptions, TF helpers and counters; free the map."""
        destroy_endpoints(self, self._own_publishers, self._own_subscriptions)
        self._own_publishers, self._own_subscriptions = [], []
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        if self.diagnostics is not None:
            self.diagnostics.destroy()
            self.diagnostics = None
        self._release_state()

    def configure(self) -> None:
        """Check the parameters, load the map, subscribe and advertise (module docstring)."""
        p = self.params
        if not p['map_path']:
            raise ParameterError("parameter 'map_path' is empty: give the map folder "
                                 '(build one with pnv-build-map or the demo)')
        self.extrinsic = self._static_extrinsic()
        if p['publish_map_odom'] and not (p['odom_topic'] or p['odom_frame']):
            raise ParameterError("parameter 'publish_map_odom' = True needs the odometry at "
                                 "each image's stamp: set odom_topic or odom_frame")
        if p['publish_tf'] or p['publish_map_odom']:
            name = 'publish_tf' if p['publish_tf'] else 'publish_map_odom'
            try:
                import tf2_ros  # noqa: F401 - only whether it is installed
            except ImportError:
                raise ParameterError(f"parameter '{name}' = True needs tf2_ros, which is "
                                     'not installed: install ros-<distro>-tf2-ros or set it '
                                     'False') from None
        if p['camera_extrinsic'] == 'tf':
            self._require_tf_buffer("parameter 'camera_extrinsic' = 'tf'",
                                    "or use 'static' with camera_xyz and camera_rpy")
        if p['publish_initialpose']:
            self.initialpose_gate = InitialPoseGate(p['initialpose_threshold'],
                                                    p['initialpose_interval'])
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
        self.sequence: Optional[SequenceLocalizer] = None
        if len(ref_map):
            self.localizer = self._make_localizer(ref_map, cfg, matching)
            if p['sequence']:
                self.sequence = SequenceLocalizer(self.localizer,
                                                  MotionModel(max_speed=p['max_speed']))
        else:
            # Stay up (a map may be rebuilt and the node restarted by a supervisor), but say
            # so loudly: every frame will be answered with an error and no pose.
            self.get_logger().error(f"map {p['map_path']} holds no references: no pose will "
                                    'be published; build it from at least one image')
        self._last_stamp: Optional[float] = None
        self.odometry = self._start_odometry()
        if p['publish_tf'] or p['publish_map_odom']:
            from tf2_ros import TransformBroadcaster
            self.tf = TransformBroadcaster(self)
        publish = self.create_lifecycle_publisher
        self.pose_pub = publish(PoseWithCovarianceStamped, '~/pose', 10)
        self.match_pub = publish(PlaceMatch, '~/match', 10)
        self._own_publishers += [self.pose_pub, self.match_pub]
        if p['publish_initialpose']:
            self.initialpose_pub = publish(PoseWithCovarianceStamped, p['initialpose_topic'],
                                           INITIALPOSE_QOS)
            self._own_publishers.append(self.initialpose_pub)
        self._own_subscriptions.append(self.create_subscription(
            PlaceDescriptors, 'place_descriptors', self.on_descriptors, pipeline_qos(16),
            callback_group=MutuallyExclusiveCallbackGroup()))
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
        if self.localizer is not None:
            self._log_answers()

    def _make_localizer(self, ref_map: ReferenceMap, cfg, matching: dict) -> Localizer:
        """Make the localizer with the fusion and place radius asked for (or ParameterError)."""
        p = self.params
        try:
            return Localizer(ref_map, None, p['place_radius'] or None, device=self.device,
                             cache_references=self._cache_references(cfg),
                             fusion=FUSIONS[p['fusion']], **matching)
        except MapError as exc:
            if p['fusion'] == 'global+patches' and fitted_parameters(ref_map) is None:
                raise ParameterError(
                    f"parameter 'fusion' = 'global+patches' needs the map's fitted weights, "
                    f"and the map {p['map_path']} has no fit: {FIT_HINT}, or leave fusion "
                    'empty') from exc
            raise

    def _log_answers(self) -> None:
        """Say once how frames are ranked, how confident, and when a pose goes out."""
        p, loc = self.params, self.localizer
        fusion = loc.fusion
        how = {'patches': "the authors' order (patch scores alone)",
               'global': 'global similarity alone',
               'global+patches': f"global similarity and patch scores fused (the map's "
                                 f'weights {fusion.global_weight:.3g} and '
                                 f'{fusion.patch_weight:.3g})'}[fusion.method]
        conf = ('calibrated confidence (fitted on '
                f"{loc.calibration.fitted_on.get('description', 'the map')})"
                if loc.calibration is not None else 'heuristic confidence')
        threshold = self.threshold()
        told = 'set' if p['confidence_threshold'] >= 0 else (
            "the map's" if loc.calibration is not None else 'default for the heuristic')
        if self.sequence is None:
            seq = 'sequence filter off: each frame on its own'
        else:
            motion = (f"odometry from {p['odom_topic']}" if p['odom_topic'] else
                      f"odometry from TF {p['odom_frame']} -> {p['base_frame']}"
                      if p['odom_frame'] else 'no odometry: time')
            seq = f"sequence filter on ({motion}, max_speed {p['max_speed']:g} m/s)"
        self.get_logger().info(
            f'ranking: {how}; {conf}, place radius {loc.place_radius:g} m; ~/pose when the '
            f'confidence >= {threshold:g} ({told}); {seq}')
        fitted = fitted_parameters(self.map)
        if fitted is None:
            self.get_logger().warning(
                f"the map {p['map_path']} has no fit (fusion weights, calibrated "
                f"confidence): the authors' order and the heuristic confidence; {FIT_HINT}")
        elif loc.calibration is None:
            self.get_logger().warning(
                "the map's calibrated confidence was fitted for its own fusion and place "
                f"radius ({fitted['place_radius']:g} m): with these parameters the "
                'confidence is the heuristic one')
        warning = training_warning(self.map.meta)
        if warning:
            self.get_logger().warning(warning)

    def _start_odometry(self) -> Optional[OdometryBuffer]:
        """Subscribe to the odometry source the parameters name (None: no odometry)."""
        p = self.params
        if p['odom_topic'] and p['odom_frame']:
            raise ParameterError(f"parameters 'odom_topic' = {p['odom_topic']!r} and "
                                 f"'odom_frame' = {p['odom_frame']!r}: give one odometry "
                                 'source (the other empty)')
        if p['odom_frame']:
            self._require_tf_buffer(f"parameter 'odom_frame' = {p['odom_frame']!r}",
                                    'or give odom_topic (the nav_msgs/Odometry topic) instead')
            return None
        if not p['odom_topic']:
            return None
        buffer = OdometryBuffer()
        self._own_subscriptions.append(self.create_subscription(
            Odometry, p['odom_topic'], self.on_odometry, ODOM_QOS,
            callback_group=MutuallyExclusiveCallbackGroup()))
        return buffer

    def _require_tf_buffer(self, what: str, otherwise: str) -> None:
        """Listen to TF (once), or ParameterError saying what needs tf2_ros."""
        if self.tf_buffer is not None:
            return
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            raise ParameterError(f'{what} needs tf2_ros, which is not installed: install '
                                 f'ros-<distro>-tf2-ros, {otherwise}') from None
        self.tf_buffer = Buffer()
        self._tf_listener = TransformListener(self.tf_buffer, self)

    def _static_extrinsic(self) -> Transform:
        """``base_T_camera`` of camera_xyz and camera_rpy (ParameterError if not finite)."""
        p = self.params
        try:
            return Transform.from_xyz_rpy(p['camera_xyz'], p['camera_rpy'])
        except ValueError as exc:
            raise ParameterError(f"parameters 'camera_xyz' = {list(p['camera_xyz'])}, "
                                 f"'camera_rpy' = {list(p['camera_rpy'])}: {exc}") from exc

    def on_odometry(self, msg: Odometry) -> None:
        """Buffer an odometry pose (looked up at the frames' stamps)."""
        self._odom_frame_id = msg.header.frame_id
        pose = msg.pose.pose
        sample = PoseSample(seconds(msg.header.stamp), pose.position.x, pose.position.y,
                            pose.position.z, pose.orientation.x, pose.orientation.y,
                            pose.orientation.z, pose.orientation.w)
        buffer = self.odometry
        if buffer is None:
            return  # unconfigured meanwhile
        try:
            restarted = buffer.add(sample)
        except ValueError as exc:
            self.get_logger().warning(f'odometry ignored: {exc}', throttle_duration_sec=10.0)
            return
        if restarted:
            self.get_logger().warning(
                f'odometry stamp {sample.stamp:.3f} is older than the last one (a bag loop or '
                'a restarted driver?): odometry buffer started again')

    def _odometry_at(self, stamp: float) -> Optional[PoseSample]:
        """Return the robot's odometry pose at a frame's stamp, None when there is none."""
        if self.odometry is not None:
            odom = self.odometry.at(stamp)
            if odom is None:
                newest = self.odometry.newest
                self.get_logger().warning(
                    f'no odometry at the frame stamped {stamp:.3f} (newest '
                    + ('none' if newest is None else f'{newest:.3f}') + ' on '
                    f"{self.params['odom_topic']}): this frame moved the sequence filter by "
                    'time and max_speed', throttle_duration_sec=10.0)
            return odom
        p = self.params
        if not p['odom_frame'] or self.tf_buffer is None:
            return None
        from tf2_ros import TransformException
        try:
            t = self.tf_buffer.lookup_transform(p['odom_frame'], p['base_frame'],
                                                _ros_time(stamp))
        except TransformException as exc:
            self.get_logger().warning(
                f'no TF {p["odom_frame"]} -> {p["base_frame"]} at the frame stamped '
                f'{stamp:.3f} ({exc}): this frame moved the sequence filter by time and '
                'max_speed', throttle_duration_sec=10.0)
            return None
        tr, q = t.transform.translation, t.transform.rotation
        return PoseSample(stamp, tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w)

    def threshold(self) -> float:
        """Return the confidence ~/pose needs now (``confidence_threshold``, or the map's)."""
        set_value = self.params['confidence_threshold']
        if set_value >= 0:
            return float(set_value)
        calibration = self.localizer.calibration if self.localizer else None
        return calibration.threshold if calibration is not None else 0.0

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
        with self.work_lock:
            if not self.active:
                self.get_logger().info('inactive: place descriptors are not localized',
                                       throttle_duration_sec=10.0)
                return
            self._on_descriptors(msg, info)

    def _on_descriptors(self, msg: PlaceDescriptors, info) -> None:
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
        stamp = seconds(msg.header.stamp)
        p = self.params
        odom = self._odometry_at(stamp) if self.sequence or p['publish_map_odom'] else None
        answer = self._filter(result, stamp, odom)
        place = answer if answer is not None else result
        accepted = place.confidence >= self.threshold()
        latency_ms = 1e3 * (seconds(wall_time()) - seconds(msg.received)) \
            if msg.received.sec or msg.received.nanosec else 0.0
        sp, so = p['position_stddev'] ** 2, p['orientation_stddev'] ** 2
        pose, match = result_to_msgs(result, self.map.references, msg.header, p['map_frame'],
                                     accepted, p['max_candidates'], [sp] * 3 + [so] * 3,
                                     msg.extraction_ms, latency_ms)
        if answer is not None:
            self._fill_sequence(match, answer)
        map_T_base = self._base_pose(place.reference, msg.header) if accepted else None
        if map_T_base is not None:
            pose.pose.pose = transform_to_pose(map_T_base)
            self.pose_pub.publish(pose)
            if p['publish_tf']:
                self._broadcast(pose.header, p['tf_child_frame'], map_T_base)
            if p['publish_map_odom']:
                self._broadcast_map_odom(pose.header, map_T_base, odom)
            if self.initialpose_gate is not None and self.initialpose_gate(
                    place.confidence, stamp):
                self.initialpose_pub.publish(pose)
        match.pose_published = map_T_base is not None
        self.match_pub.publish(match)
        self._count('answered')

    def _base_pose(self, reference, header) -> Optional[Transform]:
        """``map_T_base`` of the matched reference (the camera's pose) and the extrinsic.

        None (logged) when camera_extrinsic is 'tf' and TF has no extrinsic at the stamp, or
        the reference's pose is not finite.
        """
        try:
            map_T_camera = Transform.from_pose(reference_sample(reference))
        except ValueError as exc:
            self.get_logger().error(f'reference {reference.id} of the map has no usable pose '
                                    f'({exc}): no pose for this frame',
                                    throttle_duration_sec=10.0)
            return None
        if self.params['camera_extrinsic'] == 'static':
            return base_pose(map_T_camera, self.extrinsic)
        from tf2_ros import TransformException
        p = self.params
        camera = p['camera_frame'] or header.frame_id
        try:
            t = self.tf_buffer.lookup_transform(p['base_frame'], camera,
                                                _ros_time(seconds(header.stamp)))
        except TransformException as exc:
            self.get_logger().warning(
                f"no TF {p['base_frame']} -> {camera} at the image stamped "
                f'{seconds(header.stamp):.3f} ({exc}): no pose for this frame',
                throttle_duration_sec=10.0)
            return None
        tr, q = t.transform.translation, t.transform.rotation
        return base_pose(map_T_camera, Transform((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)))

    def _filter(self, result: LocalizationResult, stamp: float,
                odom: Optional[PoseSample]) -> Optional[LocalizationResult]:
        """Fold a frame's answer into the sequence filter; its answer (None when off)."""
        if self.sequence is None:
            return None
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.get_logger().warning(
                f"frame stamp {stamp:.3f} is older than the previous frame's "
                f'{self._last_stamp:.3f} (a bag loop or a restarted camera?): sequence filter '
                'reset')
            self.sequence.reset()
        self._last_stamp = stamp
        return self.sequence.update(result, stamp, odom)

    def _fill_sequence(self, match: PlaceMatch, answer: LocalizationResult) -> None:
        """Put the sequence filter's answer into ~/match (PlaceMatch's sequence fields)."""
        match.sequence_enabled = True
        match.sequence_reference_id = answer.reference.id
        match.sequence_map_index = int(answer.best_index)
        match.sequence_confidence = float(answer.confidence)
        match.sequence_ranked = [int(c.index) for c in
                                 answer.candidates[:self.params['max_candidates']]]
        match.sequence_odometry = self.sequence.last_motion == 'odometry'
        match.sequence_ms = 1e3 * self.sequence.last_update_s

    def _broadcast(self, header: Header, child: str, transform: Transform) -> None:
        """Send ``header.frame_id`` -> ``child`` on TF, stamped with the image's stamp."""
        t = TransformStamped(header=header, child_frame_id=child)
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = \
            transform.translation
        q = transform.rotation
        t.transform.rotation.x, t.transform.rotation.y = q[0], q[1]
        t.transform.rotation.z, t.transform.rotation.w = q[2], q[3]
        self.tf.sendTransform(t)

    def _broadcast_map_odom(self, header: Header, map_T_base: Transform,
                            odom: Optional[PoseSample]) -> None:
        """Broadcast amcl's map -> odom correction of an accepted pose (no odometry: logged)."""
        p = self.params
        odom_frame = p['odom_frame'] or self._odom_frame_id
        if odom is None or not odom_frame:
            self.get_logger().warning(
                f'no odometry at the image stamped {seconds(header.stamp):.3f}: no '
                f"{p['map_frame']} -> odom correction for it", throttle_duration_sec=10.0)
            return
        self._broadcast(header, odom_frame, map_to_odom(map_T_base, Transform.from_pose(odom)))


def _ros_time(stamp: float):
    """Return the rclpy Time of a stamp in seconds (TF look-ups)."""
    from rclpy.time import Time
    return Time(nanoseconds=int(round(stamp * 1e9)))


def main(args: Optional[List[str]] = None) -> int:
    """Run localizer_node on its own (console script / `ros2 run`)."""
    return run_node(LocalizerNode, args)


if __name__ == '__main__':
    sys.exit(main())
