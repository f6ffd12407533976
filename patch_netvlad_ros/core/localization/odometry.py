# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Recent odometry poses, looked up at a camera frame's stamp (the sequence filter's input).

Odometry arrives at its own rate (10-100 Hz on most robots) and ahead of the frame it
belongs to (a frame's descriptors take a while), so the pose at a frame's stamp lies
between two buffered samples: :meth:`OdometryBuffer.at` interpolates it (linear position,
slerped orientation: :meth:`.poses.Trajectory.interpolate`). Nothing is extrapolated: a
stamp outside the buffer, or between two samples more than ``max_gap_s`` apart, has no
pose (the filter then uses its time-only motion model for that frame). Samples older than
``horizon_s`` behind the newest are dropped, so memory stays bounded. A sample older than
the newest means the odometry's clock went back (a bag loop, a restarted driver): the
buffer starts again from it. Thread-safe (odometry and frames arrive on different
threads).
"""

import bisect
import math
import threading
from typing import List, Optional

from ..drives.poses import PoseSample, Trajectory

#: Seconds of odometry kept behind the newest sample.
DEFAULT_HORIZON_S = 30.0
#: Longest gap (s) between two odometry samples to interpolate across.
DEFAULT_MAX_GAP_S = 1.0


class OdometryBuffer:
    """Odometry poses of the last ``horizon_s`` seconds (module doc)."""

    def __init__(self, horizon_s: float = DEFAULT_HORIZON_S,
                 max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        if not (horizon_s > 0 and max_gap_s >= 0):
            raise ValueError(f'horizon_s must be > 0 and max_gap_s >= 0; got {horizon_s}, '
                             f'{max_gap_s}')
        self.horizon_s = float(horizon_s)
        self.max_gap_s = float(max_gap_s)
        self._samples: List[PoseSample] = []
        self._stamps: List[float] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Return the number of samples held."""
        with self._lock:
            return len(self._samples)

    @property
    def newest(self) -> Optional[float]:
        """Stamp (s) of the newest sample, None when empty."""
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def add(self, sample: PoseSample) -> bool:
        """Add a sample; return True when it was older than the newest (buffer restarted).

        A sample at the newest's stamp replaces it. A sample with a non-finite value or a
        zero quaternion raises ValueError (nothing is added).
        """
        values = (sample.stamp, sample.x, sample.y, sample.z, sample.qx, sample.qy,
                  sample.qz, sample.qw)
        if not all(math.isfinite(v) for v in values) or not any(values[4:]):
            raise ValueError(f'odometry pose with a non-finite value or a zero quaternion: '
                             f'{sample}')
        with self._lock:
            restarted = bool(self._stamps) and sample.stamp < self._stamps[-1]
            if restarted:
                self._samples.clear()
                self._stamps.clear()
            elif self._stamps and sample.stamp == self._stamps[-1]:
                self._samples.pop()
                self._stamps.pop()
            self._samples.append(sample)
            self._stamps.append(float(sample.stamp))
            old = bisect.bisect_left(self._stamps, self._stamps[-1] - self.horizon_s)
            if old > 64 or old > len(self._stamps) // 2:   # drop in chunks: amortised O(1)
                del self._samples[:old], self._stamps[:old]
            return restarted

    def clear(self) -> None:
        """Forget every sample."""
        with self._lock:
            self._samples.clear()
            self._stamps.clear()

    def at(self, stamp: float) -> Optional[PoseSample]:
        """Return the pose at ``stamp`` (module doc), or None when the buffer cannot say."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp)
            if i < len(self._stamps) and self._stamps[i] == stamp:
                return self._samples[i]
            if i == 0 or i == len(self._stamps) or \
                    stamp < self._stamps[-1] - self.horizon_s:
                return None
            pair = (self._samples[i - 1], self._samples[i])
        return Trajectory(pair).interpolate(stamp, self.max_gap_s)
