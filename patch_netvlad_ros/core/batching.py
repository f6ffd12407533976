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
"""

from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Generic, List, Optional, TypeVar

from .errors import ConfigError

T = TypeVar('T')


@dataclass
class BatcherStats:
    """Counters since start."""

    received: int = 0
    batched: int = 0
    dropped_backpressure: int = 0
    dropped_invalid: int = 0
    batches: int = 0
    acks_timed_out: int = 0


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
        self._in_flight: Dict[int, float] = {}  # batch sequence -> time sent
        self._sequence = 0
        self.stats = BatcherStats()

    def __len__(self) -> int:
        """Frames waiting."""
        return len(self._frames)

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet acknowledged."""
        return len(self._in_flight)

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

    def ack(self, sequence: int) -> bool:
        """Acknowledge batch ``sequence``; False if it was not in flight."""
        return self._in_flight.pop(sequence, None) is not None

    def _expire(self, now: float) -> None:
        for seq, sent in list(self._in_flight.items()):
            if now - sent > self.ack_timeout_s:
                del self._in_flight[seq]
                self.stats.acks_timed_out += 1

    def next_due(self, now: float) -> Optional[float]:
        """Seconds until the waiting frames form a batch by age (None: nothing waits)."""
        if not self._frames:
            return None
        return max(0.0, self._frames[0][0] + self.max_age_s - now)

    def take(self, now: float) -> 'Optional[tuple[int, List[T]]]':
        """Return (sequence, frames oldest first) when a batch is due and allowed, else None.

        Due: batch_size frames wait, or the oldest has waited max_age_s. Allowed: fewer
        than max_in_flight batches unacknowledged (always, when max_in_flight is 0).
        """
        if not self._frames:
            return None
        full = len(self._frames) >= self.batch_size
        old = now - self._frames[0][0] >= self.max_age_s
        if not (full or old):
            return None
        self._expire(now)
        if self.max_in_flight and len(self._in_flight) >= self.max_in_flight:
            return None
        count = min(self.batch_size, len(self._frames))
        batch = [self._frames.popleft()[1] for _ in range(count)]
        self._sequence += 1
        if self.max_in_flight:
            self._in_flight[self._sequence] = now
        self.stats.batches += 1
        self.stats.batched += len(batch)
        return self._sequence, batch
