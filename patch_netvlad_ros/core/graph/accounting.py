# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Frame accounting across the graph (ROS-free): where every camera frame went.

camera_batcher, descriptor_node and localizer_node each count what became of the frames
they saw (:class:`~.batching.BatcherStats`, :class:`DescriptorStats`,
:class:`LocalizerStats`) and publish the counts on /diagnostics. :func:`graph_ledger` adds
the three nodes' counts up:

    received = answered + sum(dropped by reason) + in_flight

where received counts the frames camera_batcher's callback got, answered the ~/match
messages localizer_node published, and in_flight the frames still between two stages.
Once the graph is idle in_flight is 0; a frame that vanished without a count would stay
"in flight" for ever (or make a stage negative), so a settled ledger is the check.

Frames lost before camera_batcher never reached it and are estimated separately
(:class:`UpstreamLoss`): from the publisher's sequence numbers (exact per publisher, when
the middleware reports them), from DDS's sample-lost count, and from gaps between header
stamps of a steady camera (an estimate).
"""

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Deque, Dict, Hashable, Mapping, Optional, Tuple

#: Diagnostic levels (diagnostic_msgs/DiagnosticStatus): OK, WARN, ERROR.
OK, WARN, ERROR = 0, 1, 2

#: Reasons a frame that camera_batcher received was not answered, in pipeline order:
#: ledger name -> (node, counter) it is read from.
DROP_REASONS = {
    'invalid_encoding': ('camera_batcher', 'dropped_invalid'),
    'oversized': ('camera_batcher', 'dropped_oversized'),
    'backpressure': ('camera_batcher', 'dropped_backpressure'),
    'ack_timeout': ('camera_batcher', 'dropped_ack_timeout'),
    'descriptor_failure': ('descriptor_node', 'failed'),
    'descriptor_transport': ('localizer_node', 'missed'),
    'localizer_rejection': ('localizer_node', 'rejected'),
}

#: Largest sequence number taken as real: rmw reports "unsupported" as UINT64_MAX.
_SEQUENCE_MAX = 2 ** 63


class SequenceGaps:
    """Messages a subscription missed, from each publisher's sequence numbers.

    DDS numbers every sample a writer publishes (rmw's publication_sequence_number); a
    jump from n to n + k + 1 between two samples of one publisher means k samples were
    published and never delivered: overwritten in a keep-last queue (the callback was
    slower than the publisher), or lost in transport. Exact per publisher, from the first
    sample received on; samples lost after the last one received cannot be seen.
    """

    def __init__(self) -> None:
        self._last: Dict[Hashable, int] = {}
        self.missed = 0
        self.supported: Optional[bool] = None  # None until a message says

    def update(self, publisher: Hashable, sequence: Optional[int]) -> int:
        """Record a message; return how many of this publisher's were missed just before."""
        if sequence is None or not 0 < sequence < _SEQUENCE_MAX:
            if self.supported is None:
                self.supported = False
            return 0
        self.supported = True
        last = self._last.get(publisher)
        self._last[publisher] = sequence
        if last is None or sequence <= last:  # a new or restarted publisher
            return 0
        gap = sequence - last - 1
        self.missed += gap
        return gap


class StampGaps:
    """Frames missing between header stamps of one steady camera (an estimate).

    The frame period is the median of the last ``window`` stamp intervals that were not
    gaps; an interval of n periods (n >= 2, rounded) counts n - 1 missing frames. Nothing
    is estimated before ``warmup`` intervals were seen. Wrong for cameras with a varying
    rate, several cameras on one topic, or bags replayed with frames left out; stamps that
    go back (a bag played in a loop, a clock reset) restart the estimate.
    """

    def __init__(self, window: int = 64, warmup: int = 8) -> None:
        self._intervals: Deque[float] = deque(maxlen=window)
        self._warmup = warmup
        self._last: Optional[float] = None
        self.missing = 0

    @property
    def period(self) -> Optional[float]:
        """Estimated frame period in seconds (None during warm-up)."""
        if len(self._intervals) < self._warmup:
            return None
        ordered = sorted(self._intervals)
        return ordered[len(ordered) // 2]

    def update(self, stamp: float) -> int:
        """Record a frame's stamp (s); return the frames estimated missing before it."""
        last, self._last = self._last, stamp
        if last is None:
            return 0
        dt = stamp - last
        if dt < 0:
            self._intervals.clear()
            return 0
        if dt == 0:
            return 0
        period = self.period
        n = round(dt / period) if period else 1
        if n >= 2:
            self.missing += n - 1
            return n - 1
        self._intervals.append(dt)
        return 0


#: Largest plausible sample-lost count change of one DDS event; Fast DDS (rmw_fastrtps,
#: ROS 2 Kilted wheels) was seen reporting 2^31 - 1 for a single lost sample.
_EVENT_MAX = 2 ** 20


@dataclass
class UpstreamLoss:
    """Frames lost before camera_batcher's callback, by three methods.

    lost: the larger of the sequence gaps (every cause, exact between two frames
    received, blind before the first and after the last) and the DDS sample-lost count
    (samples DDS gave up on, e.g. a large best-effort sample missing a fragment; seen even
    when nothing arrives). The DDS count is the sum of the events' count changes, an
    implausible change (Fast DDS reported 2^31 - 1 for one lost sample here) counting as
    1, so it is an estimate. The stamp estimate is reported beside them, for publishers
    without sequence numbers.
    """

    sequence: SequenceGaps = field(default_factory=SequenceGaps)
    stamps: StampGaps = field(default_factory=StampGaps)
    dds_lost: int = 0
    dds_events: int = 0

    def add_dds_event(self, change: int) -> int:
        """Record a DDS sample-lost event; return the samples counted for it."""
        counted = int(change) if 0 < int(change) <= _EVENT_MAX else 1
        self.dds_events += 1
        self.dds_lost += counted
        return counted

    @property
    def lost(self) -> int:
        """Best count of frames lost before the batcher (see the class docstring)."""
        return max(self.sequence.missed, self.dds_lost)

    @property
    def method(self) -> str:
        """How :attr:`lost` was found."""
        if self.sequence.supported:
            return 'publisher sequence numbers and DDS sample-lost events'
        return 'DDS sample-lost events (no publisher sequence numbers)'

    def counters(self) -> Dict[str, Any]:
        """Counters for the diagnostics, flat."""
        period = self.stamps.period
        return {'upstream_lost': self.lost,
                'upstream_lost_sequence': self.sequence.missed,
                'upstream_lost_dds': self.dds_lost,
                'upstream_dds_events': self.dds_events,
                'upstream_lost_stamps_estimate': self.stamps.missing,
                'frame_period_ms': round(1e3 * period, 3) if period else 0.0,
                'upstream_method': self.method}


@dataclass
class DescriptorStats:
    """descriptor_node's counters since start."""

    batches: int = 0          # ImageBatch messages received
    frames: int = 0           # frames in them
    described: int = 0        # PlaceDescriptors published (one per frame)
    failed: int = 0           # frames of batches that could not be described
    describing: int = 0       # frames of the batch being described now
    batches_missed: int = 0   # gaps in the batcher's batch sequence (lost on the way here)

    def counters(self) -> Dict[str, int]:
        """Counters for the diagnostics."""
        return asdict(self)


@dataclass
class LocalizerStats:
    """localizer_node's counters since start."""

    received: int = 0   # PlaceDescriptors received
    answered: int = 0   # ~/match published
    rejected: int = 0   # refused (another model, malformed, empty map, internal error)
    missed: int = 0     # published by descriptor_node, never received (sequence gaps)

    def counters(self) -> Dict[str, int]:
        """Counters for the diagnostics."""
        return asdict(self)


def node_balance(node: str, c: Mapping[str, Any]) -> int:
    """Return frames a node's own counters do not explain (0 when they add up).

    camera_batcher: received = dropped (invalid, oversized, back-pressure) + buffered +
    sent, and sent = in flight + acknowledged + given up; descriptor_node: frames =
    described + failed (+ the batch being described); localizer_node: received =
    answered + rejected.
    """
    if node == 'camera_batcher':
        return (c['received'] - c['dropped_invalid'] - c['dropped_oversized']
                - c['dropped_backpressure'] - c['buffered'] - c['sent']) + (
            c['sent'] - c['in_flight'] - c['acked'] - c['dropped_ack_timeout'])
    if node == 'descriptor_node':
        return c['frames'] - c['described'] - c['failed'] - c.get('describing', 0)
    if node == 'localizer_node':
        return c['received'] - c['answered'] - c['rejected']
    raise ValueError(f'unknown node {node!r}')


#: Per node: counters of frames it lost, and the counter of frames it passed on.
_LOSSES = {
    'camera_batcher': (('dropped_invalid', 'dropped_oversized', 'dropped_backpressure',
                        'dropped_ack_timeout', 'upstream_lost'), 'sent'),
    'descriptor_node': (('failed',), 'described'),
    'localizer_node': (('rejected', 'missed'), 'answered'),
}


class LevelTracker:
    """A node's diagnostic level from what changed since its last report.

    OK: no frame lost since the last report; WARN: some lost; ERROR: frames lost and none
    passed on for ``error_after`` seconds (everything is being lost: every camera frame
    dropped by DDS, no acknowledgement from descriptor_node, ...). A slow stage that
    passes a batch on every few seconds while it drops the rest stays WARN.
    """

    def __init__(self, node: str, error_after: float = 10.0) -> None:
        if node not in _LOSSES:
            raise ValueError(f'unknown node {node!r}')
        self.node = node
        self.error_after = error_after
        self._previous: Dict[str, int] = {}
        self._passed_at: Optional[float] = None   # when a frame was last passed on

    def __call__(self, counters: Mapping[str, Any], now: float) -> Tuple[int, str]:
        """Return (level, one-line summary) at ``now`` (s, monotonic); remember the counters."""
        losses, passed = _LOSSES[self.node]
        delta = {k: int(counters[k]) - self._previous.get(k, 0) for k in (*losses, passed)}
        self._previous = {k: int(counters[k]) for k in (*losses, passed)}
        if self._passed_at is None or delta[passed] > 0:
            self._passed_at = now
        lost = {k: v for k, v in delta.items() if k != passed and v > 0}
        total = sum(int(counters[k]) for k in losses)
        summary = f'{passed} {int(counters[passed])}, lost {total} since start'
        if not lost:
            return OK, summary
        recent = ', '.join(f'{k} {v}' for k, v in lost.items())
        idle = now - self._passed_at
        if idle >= self.error_after:
            return ERROR, (f'{summary}; since the last report: {recent}; none passed on for '
                           f'{idle:.0f} s')
        return WARN, f'{summary}; since the last report: {recent}'


def graph_ledger(nodes: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Add the three nodes' counters up (see the module docstring).

    nodes: node name ('camera_batcher', 'descriptor_node', 'localizer_node') -> its
    counters as published. Returns received, answered, dropped (reason -> frames),
    in_flight (total and per stage: 'batcher_buffer', 'to_descriptor' (sent, not yet
    described or failed; includes the batch being described), 'to_localizer'
    (described, not yet received)), before_batcher (the upstream estimate), settled
    (nothing in flight, no stage negative), unexplained (received - answered - dropped -
    in flight: 0 when camera_batcher's and localizer_node's own counts add up) and
    node_balance (:func:`node_balance` per node).
    """
    b, d, loc = (nodes['camera_batcher'], nodes['descriptor_node'], nodes['localizer_node'])
    by_node = {'camera_batcher': b, 'descriptor_node': d, 'localizer_node': loc}
    dropped = {reason: int(by_node[node][key]) for reason, (node, key) in DROP_REASONS.items()}
    stages = {
        'batcher_buffer': int(b['buffered']),
        'to_descriptor': int(b['sent']) - int(b['dropped_ack_timeout']) - int(d['described'])
        - int(d['failed']),
        'to_localizer': int(d['described']) - int(loc['received']) - int(loc['missed']),
    }
    in_flight = sum(stages.values())
    received, answered = int(b['received']), int(loc['answered'])
    dropped_total = sum(dropped.values())
    return {
        'received': received,
        'answered': answered,
        'dropped': dropped,
        'dropped_total': dropped_total,
        'in_flight': in_flight,
        'in_flight_by_stage': stages,
        'settled': in_flight == 0 and min(stages.values()) >= 0,
        'unexplained': received - answered - dropped_total - in_flight,
        'node_balance': {n: node_balance(n, c) for n, c in by_node.items()},
        'before_batcher': {k: b[k] for k in ('upstream_lost', 'upstream_lost_sequence',
                                             'upstream_lost_dds',
                                             'upstream_lost_stamps_estimate',
                                             'upstream_method') if k in b},
    }
