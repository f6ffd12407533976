# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Frame counters on /diagnostics (diagnostic_msgs/DiagnosticArray), and reading them back.

Each node publishes, every :data:`PERIOD_S` seconds, one DiagnosticStatus named
``<node name>: frames`` (the diagnostic_updater convention "node: task") whose key-values
are its frame counters (:mod:`patch_netvlad_ros.core.graph.accounting`) and whose level turns
WARN when frames were lost since the last report and ERROR when frames were lost and none
passed on for 10 s (:class:`~patch_netvlad_ros.core.graph.accounting.LevelTracker`).
:class:`DiagnosticsCollector` keeps the latest status of each node for pnv-evaluate, the
benchmarks and the tests; :func:`graph_ledger` of the core adds them up.
"""

import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from ..core.graph.accounting import LevelTracker

#: The ROS convention's topic (absolute: one topic for the whole robot).
TOPIC = '/diagnostics'
#: Seconds between two reports of a node (diagnostic_updater's default period).
PERIOD_S = 1.0
#: Suffix of the status names: '<node name>: frames'.
TASK = 'frames'
_LEVELS = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}
_RANK = {name: level for level, name in _LEVELS.items()}


def diagnostics_qos() -> QoSProfile:
    """Return the QoS of /diagnostics: reliable, keep last 10 (what diagnostic_updater offers)."""
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def level_name(level: int) -> str:
    """Return 'OK', 'WARN', 'ERROR' or 'STALE'."""
    return _LEVELS.get(int(level), str(level))


def _value(text: str) -> Any:
    """Parse a key-value's value back: int, float, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def make_status(node: Node, level: int, message: str,
                counters: Mapping[str, Any]) -> DiagnosticStatus:
    """One node's status: name '<fully qualified node name>: frames', a key per counter."""
    name = node.get_fully_qualified_name()
    return DiagnosticStatus(level=bytes([int(level)]), name=f'{name}: {TASK}',
                            message=message, hardware_id=name,
                            values=[KeyValue(key=k, value=str(v)) for k, v in counters.items()])


def parse_status(status: DiagnosticStatus) -> Optional[Tuple[str, Dict[str, Any]]]:
    """Return (node name, {'level', 'message', 'values'}) of a frames status, else None."""
    if not status.name.endswith(f': {TASK}'):
        return None
    level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else status.level
    return status.name[:-len(TASK) - 2], {
        'level': level_name(level), 'message': status.message,
        'values': {kv.key: _value(kv.value) for kv in status.values}}


class DiagnosticsPublisher:
    """Publish a node's frame counters on /diagnostics every ``period`` seconds.

    counters: returns the node's counters (taken under the node's own lock); kind: the
    node kind that decides which counters are losses ('camera_batcher', ...). On a
    lifecycle node the publisher is a lifecycle one: reports go out while it is active.
    """

    def __init__(self, node: Node, kind: str, counters: Callable[[], Dict[str, Any]],
                 period: float = PERIOD_S, callback_group=None) -> None:
        self.node = node
        self.counters = counters
        self.level = LevelTracker(kind)
        create = getattr(node, 'create_lifecycle_publisher', node.create_publisher)
        self.publisher = create(DiagnosticArray, TOPIC, diagnostics_qos())
        self.timer = node.create_timer(period, self.publish, callback_group=callback_group)

    def destroy(self) -> None:
        """Stop reporting: destroy the timer and the publisher."""
        self.node.destroy_timer(self.timer)
        destroy = getattr(self.node, 'destroy_lifecycle_publisher', self.node.destroy_publisher)
        destroy(self.publisher)

    def publish(self) -> None:
        """Publish the node's status now."""
        counters = self.counters()
        level, message = self.level(counters, time.monotonic())
        msg = DiagnosticArray(status=[make_status(self.node, level, message, counters)])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(msg)


class DiagnosticsCollector:
    """Keep the latest frames status of every node seen on /diagnostics (thread-safe).

    Subscribes on ``node``; :meth:`latest` returns node name -> status (as
    :func:`parse_status` gives it, plus 'time': when it arrived, monotonic); ``worst``:
    node name -> the worst level it reported, with the latest message at that level.
    """

    def __init__(self, node: Node) -> None:
        self._lock = threading.Lock()
        self._latest: Dict[str, Dict[str, Any]] = {}
        self.worst: Dict[str, Tuple[str, str]] = {}
        self.reports = 0
        node.create_subscription(DiagnosticArray, TOPIC, self._on_array, diagnostics_qos())

    def _on_array(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        for status in msg.status:
            parsed = parse_status(status)
            if parsed is None:
                continue
            name, info = parsed
            info['time'] = now
            level = status.level[0] if isinstance(status.level, bytes) else status.level
            with self._lock:
                self._latest[name] = info
                self.reports += 1
                if name not in self.worst or level >= _RANK[self.worst[name][0]]:
                    self.worst[name] = (info['level'], info['message'])

    def latest(self) -> Dict[str, Dict[str, Any]]:
        """Return node name -> its latest status."""
        with self._lock:
            return {k: dict(v) for k, v in self._latest.items()}

    def by_kind(self, names: Mapping[str, str]) -> Optional[Dict[str, Dict[str, Any]]]:
        """Latest counters keyed by node kind; names: kind -> fully qualified node name.

        None until every named node has reported.
        """
        latest = self.latest()
        if not all(n in latest for n in names.values()):
            return None
        return {kind: latest[name]['values'] for kind, name in names.items()}
