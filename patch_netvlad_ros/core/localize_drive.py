# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Localise every frame of a query drive offline with the core (no ROS)."""

import time
from typing import Callable, List, Optional, overload, Sequence, Tuple

import numpy as np

from .drives import DriveFrame
from .extraction import describe_batches
from .localizer import LocalizationResult, Localizer
from .model import PatchNetVLAD
from .poses import PoseSample, yaw_of
from .report import QueryOutcome
from .sequence import SequenceLocalizer


def outcome_of(frame: DriveFrame, ranked: Sequence[int], confidence: float,
               latency_ms: Optional[float], stage_ms: dict,
               global_ranked: Optional[Sequence[int]] = None,
               rerank_bytes: Optional[dict] = None) -> QueryOutcome:
    """Make a query's outcome, with its ground truth from the drive frame."""
    return QueryOutcome(stamp=frame.stamp,
                        position=np.array([frame.pose.x, frame.pose.y, frame.pose.z]),
                        yaw=yaw_of(frame.pose), ranked=list(ranked),
                        confidence=float(confidence), latency_ms=latency_ms,
                        stage_ms=dict(stage_ms),
                        global_ranked=None if global_ranked is None else list(global_ranked),
                        rerank_bytes=dict(rerank_bytes or {}))


def result_outcome(frame: DriveFrame, result: LocalizationResult,
                   stage_ms: dict) -> QueryOutcome:
    """Make a query's outcome from a (single-frame or filtered) answer."""
    return outcome_of(frame, result.retrieval_order, result.confidence,
                      sum(stage_ms.values()), stage_ms, result.global_order,
                      {'candidate': result.candidate_bytes, 'moved': result.moved_bytes})


Outcomes = List[QueryOutcome]


@overload
def localize_offline(localizer: Localizer, model: PatchNetVLAD, frames: Sequence[DriveFrame],
                     batch_size: int = 4, progress: Optional[Callable[[int], None]] = None,
                     sequence: None = None,
                     odometry: Optional[Sequence[Optional[PoseSample]]] = None) -> Outcomes:
    ...


@overload
def localize_offline(localizer: Localizer, model: PatchNetVLAD, frames: Sequence[DriveFrame],
                     batch_size: int = 4, progress: Optional[Callable[[int], None]] = None,
                     sequence: SequenceLocalizer = ...,
                     odometry: Optional[Sequence[Optional[PoseSample]]] = None
                     ) -> Tuple[Outcomes, Outcomes]:
    ...


def localize_offline(localizer, model, frames, batch_size=4, progress=None, sequence=None,
                     odometry=None):
    """Describe the frames in batches (as descriptor_node does) and localise each.

    Latency is compute time: the batch's extraction time per frame plus retrieval and
    rerank; stage_ms has the three parts.
    sequence: a :class:`~.sequence.SequenceLocalizer` (reset first) that also filters the
    frames in order; then the return value is (single-frame outcomes, sequence outcomes),
    the latter with a 'sequence' stage (the filter's update). odometry: per frame its
    odometry pose or None (the filter's motion model uses time where there is none);
    default none.
    """
    if odometry is not None and len(odometry) != len(frames):
        raise ValueError(f'{len(odometry)} odometry poses for {len(frames)} frames')
    if sequence is not None:
        sequence.reset()
    outcomes: Outcomes = []
    filtered: Outcomes = []
    images = [f.rgb for f in frames]
    start = time.perf_counter()
    done = 0
    for desc in describe_batches(model, images, batch_size):
        n = desc.global_desc.shape[0]
        extract_ms = 1e3 * (time.perf_counter() - start) / n
        for j in range(n):
            frame = frames[done + j]
            result = localizer.localize_descriptors(desc.global_desc[j],
                                                    [p[j] for p in desc.patches])
            stages = {'extraction': extract_ms,
                      'retrieval': 1e3 * result.timings['retrieve_s'],
                      'rerank': 1e3 * result.timings['rerank_s']}
            outcomes.append(result_outcome(frame, result, stages))
            if sequence is not None:
                odom = odometry[done + j] if odometry is not None else None
                answer = sequence.update(result, frame.stamp, odom)
                filtered.append(result_outcome(
                    frame, answer, {**stages, 'sequence': 1e3 * sequence.last_update_s}))
        done += n
        if progress is not None:
            progress(n)
        start = time.perf_counter()
    return outcomes if sequence is None else (outcomes, filtered)
