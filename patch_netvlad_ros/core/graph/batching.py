# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Frame batching with bounded memory and credit-based back-pressure (ROS-free).

camera_batcher pushes converted frames in; a batch leaves when ``batch_size`` frames wait
or the oldest waiting frame is ``max_age_s`` old, whichever comes first, and only while
fewer than ``max_in_flight`` batches are unacknowledged by the consumer (descriptor_node
acknowledges each batch it finishes). While the consumer is busy, frames wait in a buffer
of ``capacity`` frames; when it is full the oldest frame is dropped and counted, so memory
stays bounded and the newest frames win. An acknowledgement that never comes (consumer
restarted) is given up after ``ack_timeout_s``, so the batcher cannot stall for good.

Accounting: every frame pushed or counted is, at any moment, in exactly one place:

    received = dropped_invalid + dropped_oversized + dropped_backpressure + waiting + sent
    sent = in flight + acked + dropped_ack_timeout

(sent: frames handed out in batches). Batches are tracked until acknowledged or given up
also without flow control (``max_in_flight`` 0), so the frames of a batch whose
acknowledgement never came are counted (dropped_ack_timeout); an acknowledgement that
comes after all moves them back to acked.
"""

from collections import deque, OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Deque, Dict, Generic, List, Optional, Tuple, TypeVar

from ..errors import ConfigError

T = TypeVar('T')


@dataclass
class BatcherStats:
    """Counters since start (frames unless named otherwise)."""

    received: int = 0
    batched: int = 0                # sent in batches
    dropped_backpressure: int = 0   # oldest dropped from a full buffer
    dropped_invalid: int = 0        # could not be converted
    dropped_oversized: int = 0      # larger than the node's limit
    batches: int = 0                # batches sent
    acks_timed_out: int = 0         # batches given up (no acknowledgement in time)
    acked: int = 0                  # in acknowledged batches
    dropped_ack_timeout: int = 0    # in batches given up and never acknowledged
    late_acks: int = 0              # batches acknowledged after they were given up


#: Given-up batches remembered for a late acknowledgement (older ones stay given up).
LATE_ACK_MEMORY = 1024


class FrameBatcher(Generic[T]):
    """Bounded FIFO of frames that hands out batches (see module doc). Not thread-safe."""

    def __init__(self, batch_size: int, max_age_s: float, capacity: int,
                 max_in_flight: int = 1, ack_timeout_s: float = 5.0) -> None:
        if batch_size < 1:
            raise ConfigError(f'batch_size must be >= 1; got {batch_size}')
        if not max_age_s >= 0:
            raise ConfigError(f'max_age_s must be >= 0 seconds; got {max_age_s}')
        if capacity < batch_size:
            raise ConfigError(f'capacity ({capacity}) must hold at least one batch '
                              f'(batch_size {batch_size})')
        if max_in_flight < 0:
            raise ConfigError(f'max_in_flight must be >= 0 (0 = no flow control); '
                              f'got {max_in_flight}')
        if not ack_timeout_s > 0:
            raise ConfigError(f'ack_timeout_s must be positive; got {ack_timeout_s}')
        self.batch_size = batch_size
        self.max_age_s = float(max_age_s)
        self.capacity = capacity
        self.max_in_flight = max_in_flight
        self.ack_timeout_s = float(ack_timeout_s)
        self._frames: Deque['tuple[float, T]'] = deque()
        # batch sequence -> (time sent, frames); given up: sequence -> frames
        self._in_flight: Dict[int, Tuple[float, int]] = {}
        self._given_up: 'OrderedDict[int, int]' = OrderedDict()
        self._sequence = 0
        self.stats = BatcherStats()

    def __len__(self) -> int:
        """Frames waiting."""
        return len(self._frames)

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet acknowledged (nor given up)."""
        return len(self._in_flight)

    @property
    def in_flight_frames(self) -> int:
        """Frames in the batches in flight."""
        return sum(n for _, n in self._in_flight.values())

    def counters(self) -> Dict[str, Any]:
        """All counters plus the gauges: buffered, in_flight (frames), in_flight_batches.

        Names as :func:`~.accounting.node_balance` reads them (sent = batched).
        """
        c = asdict(self.stats)
        c.update(sent=self.stats.batched, buffered=len(self._frames),
                 in_flight=self.in_flight_frames, in_flight_batches=len(self._in_flight))
        return c

    def push(self, frame: T, now: float) -> None:
        """Add a frame received at ``now`` (seconds, monotonic); drop the oldest if full."""
        self.stats.received += 1
        if len(self._frames) >= self.capacity:
            self._frames.popleft()
            self.stats.dropped_backpressure += 1
        self._frames.append((now, frame))

    def count_invalid(self) -> None:
        """Count a frame that could not be converted."""
        self.stats.received += 1
        self.stats.dropped_invalid += 1

    def count_oversized(self) -> None:
        """Count a frame refused for its size."""
        self.stats.received += 1
        self.stats.dropped_oversized += 1

    def ack(self, sequence: int) -> bool:
        """Acknowledge batch ``sequence``; False if it was not in flight.

        A batch given up earlier is acknowledged late: its frames move from
        dropped_ack_timeout back to acked (and False is returned: it no longer held a slot).
        """
        sent = self._in_flight.pop(sequence, None)
        if sent is not None:
            self.stats.acked += sent[1]
            return True
        frames = self._given_up.pop(sequence, None)
        if frames is not None:
            self.stats.late_acks += 1
            self.stats.dropped_ack_timeout -= frames
            self.stats.acked += frames
        return False

    def expire(self, now: float) -> None:
        """Give up the batches unacknowledged for longer than ack_timeout_s."""
        for seq, (sent, frames) in list(self._in_flight.items()):
            if now - sent > self.ack_timeout_s:
                del self._in_flight[seq]
                self.stats.acks_timed_out += 1
                self.stats.dropped_ack_timeout += frames
                self._given_up[seq] = frames
                if len(self._given_up) > LATE_ACK_MEMORY:
                    self._given_up.popitem(last=False)

    def next_due(self, now: float) -> Optional[float]:
        """Seconds until the waiting frames form a batch by age (None: nothing waits)."""
        if not self._frames:
            return None
        return max(0.0, self._frames[0][0] + self.max_age_s - now)

    def take(self, now: float) -> 'Optional[tuple[int, List[T]]]':
        """Return (sequence, frames oldest first) when a batch is due and allowed, else None.

        Due: batch_size frames wait, or the oldest has waited max_age_s. Allowed: fewer
        than max_in_flight batches unacknowledged (always, when max_in_flight is 0).
        Batches unacknowledged for ack_timeout_s are given up first (:meth:`expire`).
        """
        self.expire(now)
        if not self._frames:
            return None
        full = len(self._frames) >= self.batch_size
        old = now - self._frames[0][0] >= self.max_age_s
        if not (full or old):
            return None
        if self.max_in_flight and len(self._in_flight) >= self.max_in_flight:
            return None
        count = min(self.batch_size, len(self._frames))
        batch = [self._frames.popleft()[1] for _ in range(count)]
        self._sequence += 1
        # Tracked without flow control too: the acknowledgement accounts for the frames.
        self._in_flight[self._sequence] = (now, count)
        self.stats.batches += 1
        self.stats.batched += len(batch)
        return self._sequence, batch
