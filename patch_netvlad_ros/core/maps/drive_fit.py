# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Fit a map's fusion weights and confidence calibration on a labelled second drive.

The map's own data never look like a second traversal (docs/accuracy.md), so its
self-fit (:func:`.map_fit.fit_map`) is underconfident on one. A second drive of the
mapped places, with poses in the map's frame, labels itself: each frame is localized
against the map (the localizer's own retrieval and rerank,
:meth:`~..localization.localizer.Localizer.candidate_table`), and its answer is right iff
the answer's reference lies within place_radius of the frame's pose. The fusion
(:func:`..localization.fusion.fit_fusion`) is fitted on these in-map rows.

A calibration fitted on them alone gives places not in the map a high confidence (the
prior of a drive whose answers are mostly right; 0.58 for blank images in the oracle of
docs/accuracy.md). So the fit also queries the same frames against the map without
every reference within :data:`NOT_IN_MAP_EXCLUSION` place radii of the frame's pose:
*not-in-map rows*, every answer wrong; realistic, in-domain negatives (the drive's own
images, the map's nearest other places).

By default (:data:`DRIVE_NOVELTY_GATE`, :data:`DRIVE_GATE_FROM`) they fit a *novelty
gate* (:class:`..localization.calibration.NoveltyGate`), P(in map | x), and the
calibration is fitted on the in-map rows only, P(right | in map, x); the confidence is
their product. The gate follows the map gate's rule (0.5 at the 5th percentile, 0.95 at
the median) applied to the not-in-map answers' global similarity: what a frame of this
environment at a place not in the map reaches. Pre-registered and measured once
(docs/accuracy.md, "The novelty gate from a second drive"), it met its rule against the
earlier default, the not-in-map rows in the calibration at weight
:data:`NOT_IN_MAP_WEIGHT` (corridor, pooled out of sample: ECE 0.199 -> 0.038, frames at
or above 0.5 74% -> 95%, unknown images at most 0.08). On a trained map (measured after
that decision) the drive's gate let an unknown image through (0.58) where the map's gate
did not (0.12): training pushes the drive's other places apart, so its not-in-map
answers are less similar than the map's own references are to each other. So the
default stores the *stricter* of the two gates (the higher 0.5 point; on the bootstrapped
corridor the drive's, on the trained one the map's: both rows measured, docs/accuracy.md).
``novelty_gate=False`` gives the earlier fit; ``gate_from='drive'`` or ``'map'`` one gate.

:func:`fit_drive` stores the result in ``ref_map.meta['localization']`` in the layout of
:func:`.map_fit.fit_map`, with a ``'drive'`` summary (name, frames, rows, recalls) in
place of the self-query levels.
"""

import dataclasses
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .database import ReferenceMap
from .extraction import describe_batches
from .map_fit import calibration_rows, FIT_VERSION, sample_queries
from ..drives.drives import Drive, positions_of
from ..errors import MapError
from ..localization.calibration import (ALL_FEATURES, DEFAULT_FEATURES, DEFAULT_L2,
                                        fit_calibration, fit_novelty_gate,
                                        gate_from_similarities, hubs_for)
from ..localization.fusion import AUTHORS, CandidateTable, fit_fusion, recall_at_1, RETRIEVAL
from ..localization.localizer import DEFAULT_PLACE_RADIUS, Localizer, META_KEY
from ..model.model import PatchNetVLAD

#: Not-in-map rows: references within this many place radii of the frame are removed.
#: At 2 the nearest remaining reference is at least one whole place (2 radii across) beyond
#: the frame's own: the frame's place and its neighbours are gone, as when the robot is
#: just off the map; chosen before any measurement, not tuned.
NOT_IN_MAP_EXCLUSION = 2.0
#: Total weight of the not-in-map rows relative to the in-map rows (both come from the
#: same frames). 1: a frame of a place not in the map is taken to be as likely as one in
#: it, so the default threshold (0.5) publishes an answer only when it is more likely right
#: than wrong without knowing whether the robot is on the map. It costs confidence where
#: right and wrong in-map answers overlap; chosen before any measurement, not tuned.
NOT_IN_MAP_WEIGHT = 1.0
#: Where a drive fit's novelty gate comes from (module doc).
GATE_SOURCES = ('map', 'drive', 'stricter')
#: A drive fit's defaults (module doc): a gate, the stricter of the drive's and the map's.
DRIVE_NOVELTY_GATE = True
DRIVE_GATE_FROM = 'stricter'
#: Drive frames used at most (a seeded sample of longer drives; two queries each).
MAX_DRIVE_FRAMES = 600

#: One frame's descriptors: global [Dp] and patches per scale [P_s, Dp].
FrameDescriptors = Tuple[torch.Tensor, Sequence[torch.Tensor]]


@dataclasses.dataclass
class DriveRows:
    """Candidate tables of a drive's frames against the map (the rows of a drive fit).

    in_map: per frame, its candidates against the whole map; positives: per frame the
    references within place_radius of its pose. not_in_map: per frame whose exclusion
    leaves references, its candidates without the references within the exclusion
    (no answer can be right); not_in_map_frames: which frames those are.
    """

    in_map: List[CandidateTable]
    positives: List[np.ndarray]
    not_in_map: List[CandidateTable]
    not_in_map_frames: List[int]
    exclusion: float


def nearest_reference(ref_positions: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Distance [Q] (m) from each of positions [Q, 3] to its nearest reference [N, 3]."""
    diff = positions[:, None, :] - ref_positions[None, :, :]
    return np.sqrt((diff ** 2).sum(-1)).min(1)


def check_near_map(ref_positions: np.ndarray, positions: np.ndarray, place_radius: float,
                   name: str) -> None:
    """Raise :class:`MapError` when no frame lies within place_radius of a reference."""
    if len(positions) == 0:
        raise MapError(f'drive {name} has no posed frames to fit on: check its topics and '
                       'pose source')
    near = nearest_reference(np.asarray(ref_positions, np.float64),
                             np.asarray(positions, np.float64))
    if not (near <= place_radius).any():
        raise MapError(f'drive {name}: none of its {len(positions)} frames is within the place '
                       f'radius ({place_radius:g} m) of a reference (nearest '
                       f'{near.min():.3g} m): fit on a drive through the mapped places whose '
                       "poses are in the map's frame (the same odometry or map origin), or "
                       'raise --place-radius')


def drive_rows(localizer: Localizer, descriptors: Iterable[FrameDescriptors],
               positions: np.ndarray,
               exclusion: Optional[float] = None) -> DriveRows:
    """Candidates of each frame against the map, and against it without the frame's place.

    descriptors: per frame (global [Dp], patches per scale [P_s, Dp]), in the order of
    positions [Q, 3] (the frames' poses, in the map's frame). exclusion: metres (default
    :data:`NOT_IN_MAP_EXCLUSION` place radii, at least place_radius so that no answer can
    be right).
    """
    radius = localizer.place_radius
    exclusion = NOT_IN_MAP_EXCLUSION * radius if exclusion is None else float(exclusion)
    if exclusion < radius:
        raise MapError(f'a not-in-map exclusion of {exclusion:g} m is below the place radius '
                       f'({radius:g} m): some answers could still be right')
    ref_positions = localizer.positions
    rows = DriveRows([], [], [], [], exclusion)
    for k, (g, patches) in enumerate(descriptors):
        dist = np.linalg.norm(ref_positions - positions[k], axis=1)           # [N]
        rows.in_map.append(localizer.candidate_table(g, patches)[0])
        rows.positives.append(np.flatnonzero(dist <= radius))
        excluded = np.flatnonzero(dist <= exclusion)
        if len(excluded) < len(ref_positions):
            rows.not_in_map.append(localizer.candidate_table(g, patches, exclude=excluded)[0])
            rows.not_in_map_frames.append(k)
    if len(rows.in_map) != len(positions):
        raise MapError(f'{len(rows.in_map)} descriptors for {len(positions)} positions')
    return rows


def fit_drive_rows(ref_map: ReferenceMap, rows: DriveRows, place_radius: float, name: str,
                   features: Sequence[str] = DEFAULT_FEATURES, l2: float = DEFAULT_L2,
                   top_k: Optional[int] = None, seed: int = 0,
                   not_in_map_weight: Optional[float] = None,
                   novelty_gate: bool = DRIVE_NOVELTY_GATE,
                   gate_from: str = DRIVE_GATE_FROM) -> Dict[str, Any]:
    """Fit fusion and calibration on a drive's rows (module doc); store and return them.

    not_in_map_weight: total weight of the not-in-map rows relative to the in-map rows
    (0: not used; default 0 with the novelty gate, else :data:`NOT_IN_MAP_WEIGHT`; the
    benchmark's comparison, not an option to tune). novelty_gate: also store a novelty
    gate, fitted on the not-in-map rows (gate_from 'drive'), on the map alone ('map'), or
    the stricter of the two ('stricter': the higher 0.5 point); both default to the module
    doc's choice.
    """
    if gate_from not in GATE_SOURCES:
        raise MapError(f'gate_from {gate_from!r}: one of {GATE_SOURCES}')
    if not_in_map_weight is None:
        not_in_map_weight = 0.0 if novelty_gate else NOT_IN_MAP_WEIGHT
    positions = ref_map.positions()
    fusion = fit_fusion(rows.in_map, rows.positives, f'drive {name}, {len(rows.in_map)} frames')
    hubs = hubs_for(features, ref_map.global_desc, positions, place_radius)
    x_in, y_in = calibration_rows(rows.in_map, rows.positives, fusion, positions, place_radius,
                                  hubs)
    negatives = rows.not_in_map if not_in_map_weight > 0 else []
    none = [np.zeros(0, np.int64)] * len(negatives)
    x_out, y_out = calibration_rows(negatives, none, fusion, positions, place_radius, hubs)
    # in-map rows weigh 1 each; the not-in-map rows together not_in_map_weight times as much
    w_out = not_in_map_weight * len(y_in) / max(len(y_out), 1)
    x = np.concatenate([x_in, x_out])
    y = np.concatenate([y_in, y_out])
    weights = np.concatenate([np.ones(len(y_in)), np.full(len(y_out), w_out)])
    description = f'drive {name} ({len(y_in)} frames)'
    if len(y_out):
        description += (f' and {len(y_out)} of its frames with the map within '
                        f'{rows.exclusion:g} m removed (not-in-map)')
    calibration = fit_calibration(x, y, place_radius, fusion, features, l2, weights, {
        'description': description, 'rows': int(len(y)), 'right': int(y.sum())})
    summary = {'name': name, 'frames': len(y_in),
               'with_positive': int(sum(len(p) > 0 for p in rows.positives)),
               'not_in_map_rows': len(y_out), 'not_in_map_exclusion_m': rows.exclusion,
               'not_in_map_weight': float(not_in_map_weight) if len(y_out) else 0.0,
               'recall_at_1_global': recall_at_1(rows.in_map, rows.positives, RETRIEVAL),
               'recall_at_1_patches': recall_at_1(rows.in_map, rows.positives, AUTHORS),
               'recall_at_1_fused': recall_at_1(rows.in_map, rows.positives, fusion)}
    fitted = {'version': FIT_VERSION, 'place_radius': float(place_radius),
              'top_k': int(top_k if top_k is not None else ref_map.config.top_k),
              'queries': len(y_in), 'seed': int(seed), 'drive': summary,
              'fusion': fusion.to_meta(), 'calibration': calibration.to_meta()}
    if novelty_gate:
        gates = {}
        if gate_from in ('map', 'stricter'):
            gates['map'] = fit_novelty_gate(np.asarray(ref_map.global_desc),
                                            positions, place_radius)
        if gate_from in ('drive', 'stricter'):
            x_gate = x_out if len(y_out) else calibration_rows(
                rows.not_in_map, [np.zeros(0, np.int64)] * len(rows.not_in_map), fusion,
                positions, place_radius)[0]
            gates['drive'] = gate_from_similarities(
                x_gate[:, ALL_FEATURES.index('similarity')],
                {'drive': name, 'not_in_map_rows': len(x_gate), 'exclusion_m': rows.exclusion},
                f'drive {name}: 0.5 at the {{quantile:g}} quantile of the answer similarity '
                f'of {{n}} of its frames with the map within {rows.exclusion:g} m removed '
                '({centre:.3f}), {high:g} at their median ({median:.3f})')
        found = {k: g for k, g in gates.items() if g is not None}
        meta = None
        if found:
            # the stricter gate: the one whose 0.5 point lies at the higher similarity
            meta = max(found.values(), key=lambda g: g.centre).to_meta()
            if len(found) == 2:
                meta['fitted_on']['stricter_of'] = {k: g.centre for k, g in found.items()}
        fitted['novelty_gate'] = meta
    ref_map.meta[META_KEY] = fitted
    return fitted


def fit_drive_descriptors(ref_map: ReferenceMap, descriptors: Iterable[FrameDescriptors],
                          positions: np.ndarray, name: str,
                          place_radius: float = DEFAULT_PLACE_RADIUS,
                          features: Sequence[str] = DEFAULT_FEATURES, l2: float = DEFAULT_L2,
                          seed: int = 0, novelty_gate: bool = DRIVE_NOVELTY_GATE,
                          gate_from: str = DRIVE_GATE_FROM,
                          **matching: object) -> Dict[str, Any]:
    """Fit on a drive given as its frames' descriptors and positions [Q, 3] (module doc).

    matching: top_k, matcher, patch_weights as the localizer will use them.
    novelty_gate, gate_from: as :func:`fit_drive_rows`.
    Returns the dict stored in ``ref_map.meta['localization']``.
    """
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    check_near_map(ref_map.positions(), positions, place_radius, name)
    localizer = Localizer(ref_map, None, place_radius, device='cpu', fusion='patches',
                          calibration='heuristic', **matching)
    rows = drive_rows(localizer, descriptors, positions)
    return fit_drive_rows(ref_map, rows, place_radius, name, features, l2,
                          localizer.config.top_k, seed, novelty_gate=novelty_gate,
                          gate_from=gate_from)


def fit_drive(ref_map: ReferenceMap, drive: Drive, model: PatchNetVLAD,
              place_radius: float = DEFAULT_PLACE_RADIUS, max_frames: int = MAX_DRIVE_FRAMES,
              seed: int = 0, features: Sequence[str] = DEFAULT_FEATURES,
              l2: float = DEFAULT_L2, batch_size: int = 4,
              progress: Optional[Callable[[int], None]] = None,
              novelty_gate: bool = DRIVE_NOVELTY_GATE, gate_from: str = DRIVE_GATE_FROM,
              **matching: object) -> Dict[str, Any]:
    """Fit a map on a labelled second drive (module doc); store and return the fit.

    drive: read at the map's image size, poses in the map's frame (same origin and
    convention); model: the map's. At most ``max_frames`` frames (a seeded sample) are
    described (``progress`` counts them). A drive none of whose frames lies within
    place_radius of a reference is a :class:`MapError`, raised before describing.
    novelty_gate, gate_from: as :func:`fit_drive_rows`.
    """
    picked = sample_queries(len(drive.frames), max_frames, seed)
    frames = dataclasses.replace(drive, frames=[drive.frames[int(k)] for k in picked])
    positions = positions_of(frames.frames)
    check_near_map(ref_map.positions(), positions, place_radius, drive.name)
    cfg = ref_map.config
    for f in frames.frames:
        if f.rgb is not None and f.rgb.shape[:2] != (cfg.image_height, cfg.image_width):
            raise MapError(f'drive {drive.name} was read at {f.rgb.shape[1]}x'
                           f'{f.rgb.shape[0]}, the map needs {cfg.image_width}x'
                           f'{cfg.image_height}: read it at the map size')
        break

    def descriptors() -> Iterable[FrameDescriptors]:
        for desc in describe_batches(model, frames.frame_images(), batch_size,
                                     progress=progress):
            for j in range(desc.global_desc.shape[0]):
                yield (desc.global_desc[j].detach().cpu(),
                       [p[j].detach().cpu() for p in desc.patches])

    return fit_drive_descriptors(ref_map, descriptors(), positions, drive.name, place_radius,
                                 features, l2, seed, novelty_gate, gate_from, **matching)
