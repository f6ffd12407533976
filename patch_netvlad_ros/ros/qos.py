# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""QoS profiles of the graph's topics."""

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
