# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Localise every frame of a query drive offline with the core (no ROS).

Each frame's outcome also holds the rankings of its candidates by the other rankers
(:func:`stage_rankings`: retrieval alone, the authors' patch order, the map's fitted
fusion), so that one pass reports every stage side by side
(:func:`.report.side_by_side`).
"""

import time
from typing import Callable, Dict, List, Optional, overload, Sequence, Tuple

import numpy as np

from .report import QueryOutcome
from ..drives.drives import DriveFrame
from ..drives.poses import PoseSample, yaw_of
from ..localization.fusion import AUTHORS, CandidateTable, Fusion, RETRIEVAL
from ..localization.localizer import fitted_parameters, LocalizationResult, Localizer
from ..localization.sequence import SequenceLocalizer
from ..maps.database import ReferenceMap
from ..maps.extraction import describe_batches
from ..model.model import PatchNetVLAD

#: Fusion method -> the key of its row in :data:`.report.STAGES`.
STAGE_OF = {'global': 'global', 'patches': 'patches', 'global+patches': 'fused'}


def rankers(ref_map: ReferenceMap) -> Dict[str, Fusion]:
    """Return the rankers compared side by side: retrieval, authors' order, map's fit."""
    out = {'global': RETRIEVAL, 'patches': AUTHORS}
    fitted = fitted_parameters(ref_map)
    if fitted is not None and 'fusion' in fitted:
        out['fused'] = Fusion.from_meta(fitted['fusion'])
    return out


def stage_rankings(table: CandidateTable, fusions: Dict[str, Fusion]) -> Dict[str, List[int]]:
    """Map indices of a query's candidates ranked by each fusion, best first.

    Ties keep retrieval order (as :meth:`.localizer.Localizer.answer` does).
    """
    return {name: [int(i) for i in table.indices[np.argsort(-f.scores(table), kind='stable')]]
            for name, f in fusions.items()}


def outcome_of(frame: DriveFrame, ranked: Sequence[int], confidence: float,
               latency_ms: Optional[float], stage_ms: dict,
               global_ranked: Optional[Sequence[int]] = None,
               rerank_bytes: Optional[dict] = None,
               rankings: Optional[Dict[str, List[int]]] = None) -> QueryOutcome:
    """Make a query's outcome, with its ground truth from the drive frame."""
    return QueryOutcome(stamp=frame.stamp,
                        position=np.array([frame.pose.x, frame.pose.y, frame.pose.z]),
                        yaw=yaw_of(frame.pose), ranked=list(ranked),
                        confidence=float(confidence), latency_ms=latency_ms,
                        stage_ms=dict(stage_ms),
                        global_ranked=None if global_ranked is None else list(global_ranked),
                        rerank_bytes=dict(rerank_bytes or {}), rankings=dict(rankings or {}))


def result_outcome(frame: DriveFrame, result: LocalizationResult, stage_ms: dict,
                   fusions: Optional[Dict[str, Fusion]] = None) -> QueryOutcome:
    """Make a query's outcome from a (single-frame or filtered) answer.

    fusions: rankers whose order of the answer's candidate table goes into the outcome's
    rankings (a single-frame answer's; a filtered answer has no table).
    """
    rankings = (stage_rankings(result.table, fusions)
                if fusions and result.table is not None else None)
    return outcome_of(frame, result.retrieval_order, result.confidence,
                      sum(stage_ms.values()), stage_ms, result.global_order,
                      {'candidate': result.candidate_bytes, 'moved': result.moved_bytes},
                      rankings)


Outcomes = List[QueryOutcome]


@overload
def localize_offline(localizer: Localizer, model: PatchNetVLAD, frames: Sequence[DriveFrame],
                     batch_size: int = 4, progress: Optional[Callable[[int], None]] = None,
                     sequence: None = None,
                     odometry: Optional[Sequence[Optional[PoseSample]]] = None,
                     fusions: Optional[Dict[str, Fusion]] = None) -> Outcomes:
    ...


@overload
def localize_offline(localizer: Localizer, model: PatchNetVLAD, frames: Sequence[DriveFrame],
                     batch_size: int = 4, progress: Optional[Callable[[int], None]] = None,
                     sequence: SequenceLocalizer = ...,
                     odometry: Optional[Sequence[Optional[PoseSample]]] = None,
                     fusions: Optional[Dict[str, Fusion]] = None
                     ) -> Tuple[Outcomes, Outcomes]:
    ...


def localize_offline(localizer, model, frames, batch_size=4, progress=None, sequence=None,
                     odometry=None, fusions=None):
    """Describe the frames in batches (as descriptor_node does) and localise each.

    Latency is compute time: the batch's extraction time per frame plus retrieval and
    rerank; stage_ms has the three parts.
    sequence: a :class:`~.sequence.SequenceLocalizer` (reset first) that also filters the
    frames in order; then the return value is (single-frame outcomes, sequence outcomes),
    the latter with a 'sequence' stage (the filter's update). odometry: per frame its
    odometry pose or None (the filter's motion model uses time where there is none);
    default none. fusions: rankers (:func:`rankers`) whose orders of each frame's
    candidates go into the single-frame outcomes' rankings.
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
            outcomes.append(result_outcome(frame, result, stages, fusions))
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
