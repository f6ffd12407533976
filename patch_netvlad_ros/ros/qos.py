# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""QoS profiles of the graph's topics.

Large frames on best-effort QoS: DDS sends a sample larger than a datagram (or than Fast
DDS's shared-memory segment) in fragments, and a best-effort reader that misses one
fragment drops the whole sample, silently but for a DDS "sample lost" event. Measured
on the project's machines with the PyPI Kilted wheels (Fast DDS, default transports and
socket buffers, net.core.rmem_default 212992), between two processes: every sample up
to 520 kB arrived; of larger ones sent one at a time (0.6 MB to 64 MB) none arrived, of
100 frames of 1920x480 mono8 (900 KiB) at 30 Hz none, and of 900 frames of 640x480 bgr8
(900 KiB) at 30 Hz (python -m benchmarks.bench_soak --transport raw) 75% were lost.
FASTDDS_BUILTIN_TRANSPORTS LARGE_DATA, UDPv4 or SHM alone did not change it; reliable QoS delivered
every one, and within one process (one DDS participant) everything arrived. A subscription is
best-effort whenever either side is, so camera_batcher's default 'sensor_data' loses such
frames from a camera in another process even when the camera publishes reliable.
camera_batcher counts these losses (:mod:`patch_netvlad_ros.core.graph.accounting`) and logs
what to do: a compressed transport, qos_reliability 'reliable' when the camera publishes
reliable, or larger socket buffers.
"""

from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy

RELIABILITIES = ('best_effort', 'reliable', 'sensor_data')


def camera_qos(reliability: str = 'sensor_data', depth: int = 5) -> QoSProfile:
    """Camera subscription: sensor-data QoS (best effort, keep last) unless asked otherwise.

    'reliable' is for bag replay and publishers that only offer reliable.
    """
    if reliability == 'sensor_data':
        profile = QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                             reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability)
        return profile
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                                   else ReliabilityPolicy.BEST_EFFORT))


def pipeline_qos(depth: int) -> QoSProfile:
    """Between the graph's own nodes: reliable, keep last ``depth`` (bounded queues)."""
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)
