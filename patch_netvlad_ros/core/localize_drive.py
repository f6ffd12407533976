# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Localise every frame of a query drive offline with the core (no ROS)."""

import time
from typing import Callable, List, Optional, Sequence

import numpy as np

from .drives import DriveFrame
from .extraction import describe_batches
from .localizer import Localizer
from .model import PatchNetVLAD
from .poses import yaw_of
from .report import QueryOutcome


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


def localize_offline(localizer: Localizer, model: PatchNetVLAD, frames: Sequence[DriveFrame],
                     batch_size: int = 4,
                     progress: Optional[Callable[[int], None]] = None) -> List[QueryOutcome]:
    """Describe the frames in batches (as descriptor_node does) and localise each.

    Latency is compute time: the batch's extraction time per frame plus retrieval and
    rerank; stage_ms has the three parts.
    """
    outcomes: List[QueryOutcome] = []
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
            by_global = [c.index for c in sorted(result.candidates,
                                                 key=lambda c: c.global_distance)]
            outcomes.append(outcome_of(frame, result.retrieval_order, result.confidence,
                                       sum(stages.values()), stages, by_global,
                                       {'candidate': result.candidate_bytes,
                                        'moved': result.moved_bytes}))
        done += n
        if progress is not None:
            progress(n)
        start = time.perf_counter()
    return outcomes
