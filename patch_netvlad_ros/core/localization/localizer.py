# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Offline localisation of query images against a reference map.

Retrieve the top-k references by global descriptor, rerank them by patches (optionally
fused with the global similarity, :mod:`.fusion`), answer with the best reference's pose
and a confidence in [0, 1].

What a map was fitted with (:func:`.map_fit.fit_map`, stored in ``meta['localization']``)
is used by default: its fusion weights, its calibrated confidence (the probability that
the answer lies within ``place_radius``, :mod:`.calibration`) and its place radius. A map
without them keeps the authors' order (``fusion='patches'``) and the heuristic
confidence below.

Heuristic confidence in [0, 1], two equally weighted parts:
- agreement: 1 if the global descriptor's own top-1 reference lies within place_radius
  of the reranked best, else 0 (the two stages point at the same place);
- distinctiveness: 1 - q_far / q_best, clipped to [0, 1], where q is a candidate's match
  quality (fusion-weighted fraction of the best possible patch score, RANSAC inliers /
  n_p or spatial score / (x_max^2 + y_max^2)) and q_far the best quality among
  candidates farther than place_radius from the best (a ratio test between places:
  adjacent map frames are the same place, not competitors); 1 if there is none.
On the corridor set with the bootstrapped speed model (top-100, place_radius 5 m) it
separates right from wrong best matches with a ROC AUC of 0.878; raw match quality alone
gave 0.57-0.66.

Device: the rerank runs where the query's patches are put (``device``; default the
model's, else the CPU). On the CPU the map's float16 memory maps are read in place. On any
other device (a GPU) the candidates' patches are kept there by
:class:`~.resident_patches.ResidentPatches`: the whole map by default, copied once, or the
``cache_references`` most recently used; each result reports the bytes it copied.
"""

from dataclasses import dataclass, field
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .calibration import ALL_FEATURES, Calibration, confidence_features, hubs_for, NoveltyGate
from .fusion import AUTHORS, CandidateTable, Fusion, RETRIEVAL
from ..config import PatchNetVLADConfig
from ..errors import ImageError, MapError
from ..maps.database import check_identity, map_identity, Reference, ReferenceMap
from ..maps.retrieval import top_k
from ..matching.rerank import rerank
from ..matching.resident_patches import reference_bytes, ResidentPatches
from ..model.checkpoint import model_digest
from ..model.image import to_tensor
from ..model.model import Descriptors, PatchNetVLAD

#: Key of :attr:`ReferenceMap.meta` that holds what :func:`.map_fit.fit_map` fitted.
META_KEY = 'localization'
#: Place radius (m) of a map that was not fitted.
DEFAULT_PLACE_RADIUS = 5.0


@dataclass
class Candidate:
    """A reranked candidate: map index, reference id, fused and raw scores.

    fused_score: the score the candidates are ranked by (the localizer's fusion);
    patch_score: the authors' fused patch score; quality: patch match quality in [0, 1].
    Scores are nan for a place that was not among the frame's candidates (a sequence
    filter's answer can be one).
    """

    index: int
    id: str
    fused_score: float
    quality: float
    global_distance: float
    patch_score: float = math.nan


@dataclass
class LocalizationResult:
    """Answer for one query image; ``reference`` carries the pose (REP 103 frame)."""

    best_index: int
    reference: Reference
    confidence: float
    candidates: List[Candidate]
    timings: Dict[str, float] = field(default_factory=dict)
    #: candidate patch bytes the matcher read, and those copied to the rerank device for
    #: this query (0 when they were resident or read in place)
    candidate_bytes: int = 0
    moved_bytes: int = 0
    #: the candidates' raw scores in retrieval order (None for a filtered answer)
    table: Optional[CandidateTable] = field(default=None, repr=False)
    #: for a sequence filter's answer: the single-frame answer it was made from
    single: Optional['LocalizationResult'] = field(default=None, repr=False)

    @property
    def retrieval_order(self) -> List[int]:
        """Map indices in reranked order, best first."""
        return [c.index for c in self.candidates]

    @property
    def global_order(self) -> List[int]:
        """Map indices by global distance alone, nearest first (the single frame's)."""
        source = self.single if self.single is not None else self
        if source.table is not None:
            return [int(i) for i in source.table.indices]
        return [c.index for c in sorted(source.candidates, key=lambda c: c.global_distance)]


def descriptor_identity(model: PatchNetVLAD) -> Dict:
    """Identity of the descriptors a model produces (compare with a map's)."""
    return map_identity(model_digest(model), model.config)


def fitted_parameters(ref_map: ReferenceMap) -> Optional[Dict[str, Any]]:
    """Return what :func:`.map_fit.fit_map` stored in the map's meta, or None."""
    fitted = ref_map.meta.get(META_KEY)
    return fitted if isinstance(fitted, dict) else None


FusionArg = Union[str, Fusion, None]
CalibrationArg = Union[str, Calibration, None]


class Localizer:
    """Localise query images (or their descriptors) against a :class:`ReferenceMap`.

    top_k, matcher and patch_weights may differ from the map's build settings (they only
    change the matching); anything that changes the descriptors may not.
    place_radius (metres): references closer than this to each other count as the same
    place; default the radius the map was fitted with, else 5 m.
    fusion: 'patches' (the authors' order), 'global' (retrieval order), 'fitted' (the
    map's fitted fusion, an error when it has none), a :class:`~.fusion.Fusion`, or None:
    the map's if fitted, else 'patches'.
    calibration: 'heuristic' (the module doc's confidence), 'fitted' (the map's calibrated
    confidence), a :class:`~.calibration.Calibration`, or None: the map's when it was
    fitted with this fusion and place radius, else 'heuristic'.
    novelty_gate: with a calibrated confidence, multiply it by the map's novelty gate
    (P(the frame comes from the mapped environment), :class:`~.calibration.NoveltyGate`)
    when the map's fit holds one (None or True), or never (False). The sequence filter
    then receives the gated confidence: a frame judged not from the environment carries
    less evidence (docs/accuracy.md).
    device: where the rerank runs (default: the model's device, else the CPU).
    cache_references: references kept on the rerank device (default: none on the CPU,
    which reads the map in place; the whole map elsewhere); at least top_k.
    """

    def __init__(self, ref_map: ReferenceMap, model: Optional[PatchNetVLAD] = None,
                 place_radius: Optional[float] = None,
                 device: Union[str, torch.device, None] = None,
                 cache_references: Optional[int] = None, fusion: FusionArg = None,
                 calibration: CalibrationArg = None, novelty_gate: Optional[bool] = None,
                 **matching: object) -> None:
        if len(ref_map) == 0:
            raise MapError('the map holds no references: build it from at least one image')
        allowed = {'top_k', 'matcher', 'patch_weights'}
        if set(matching) - allowed:
            raise MapError(f'only {sorted(allowed)} can be changed at localisation time; '
                           f'got {sorted(set(matching) - allowed)}')
        fitted = fitted_parameters(ref_map) or {}
        if place_radius is None:
            place_radius = fitted.get('place_radius', DEFAULT_PLACE_RADIUS)
        if not place_radius > 0:
            raise MapError(f'place_radius must be positive (metres); got {place_radius}')
        self.map = ref_map
        self.place_radius = float(place_radius)
        self._positions = ref_map.positions()
        self.config: PatchNetVLADConfig = ref_map.config.override(**matching)
        self.fusion = self._resolve_fusion(fusion, fitted)
        self.calibration = self._resolve_calibration(calibration, fitted)
        # s_r of the 'distinct' feature, once per map (calibration module doc)
        self._hubs: Optional[np.ndarray] = None
        if self.calibration is not None:
            self._hubs = hubs_for(self.calibration.features, ref_map.global_desc,
                                  self._positions, self.place_radius)
        self.novelty_gate: Optional[NoveltyGate] = None
        if (self.calibration is not None and novelty_gate is not False
                and fitted.get('novelty_gate') is not None):
            self.novelty_gate = NoveltyGate.from_meta(fitted['novelty_gate'])
        self.model = model
        if model is not None:
            check_identity(ref_map.identity, descriptor_identity(model), 'the map')
        if device is None:
            device = next(model.parameters()).device if model is not None else 'cpu'
        self.device = torch.device(device)
        self.resident: Optional[ResidentPatches] = None
        if self.device.type != 'cpu' or cache_references is not None:
            need = min(self.config.top_k, len(ref_map))
            if cache_references is not None and cache_references < need:
                raise MapError(f'cache_references = {cache_references} cannot hold the '
                               f'top-{need} candidates of a query: raise it to at least '
                               f'{need} or lower top_k')
            self.resident = ResidentPatches(ref_map.patches, self.device, cache_references)

    @staticmethod
    def _resolve_fusion(fusion: FusionArg, fitted: Dict[str, Any]) -> Fusion:
        if isinstance(fusion, Fusion):
            return fusion
        if fusion == 'patches':
            return AUTHORS
        if fusion == 'global':
            return RETRIEVAL
        if fusion in (None, 'fitted'):
            if 'fusion' in fitted:
                return Fusion.from_meta(fitted['fusion'])
            if fusion is None:
                return AUTHORS
            raise MapError("fusion='fitted' but the map has no fitted fusion: fit it with "
                           'patch_netvlad_ros.core.maps.map_fit.fit_map, or use '
                           "fusion='patches'")
        raise MapError("fusion must be 'patches', 'global', 'fitted', None or a Fusion; got "
                       f'{fusion!r}')

    def _resolve_calibration(self, calibration: CalibrationArg,
                             fitted: Dict[str, Any]) -> Optional[Calibration]:
        if isinstance(calibration, Calibration):
            problem = calibration.mismatch(self.fusion, self.place_radius)
            if problem:
                raise MapError(f'this calibration does not fit the localizer: {problem}')
            return calibration
        if calibration == 'heuristic':
            return None
        if calibration in (None, 'fitted'):
            stored = fitted.get('calibration')
            if stored is not None:
                stored = Calibration.from_meta(stored)
                problem = stored.mismatch(self.fusion, self.place_radius)
                if not problem:
                    return stored
                if calibration == 'fitted':
                    raise MapError(f"calibration='fitted' cannot be used: {problem}; refit "
                                   'the map or use the fitted fusion and place radius')
                return None
            if calibration is None:
                return None
            raise MapError("calibration='fitted' but the map has no fitted calibration: fit "
                           'it with patch_netvlad_ros.core.maps.map_fit.fit_map, or use '
                           "calibration='heuristic'")
        raise MapError("calibration must be 'heuristic', 'fitted', None or a Calibration; "
                       f'got {calibration!r}')

    @property
    def positions(self) -> np.ndarray:
        """Reference positions [N, 3] in metres."""
        return self._positions

    def confidence(self, candidates: Sequence[Candidate], global_best: int) -> float:
        """Heuristic confidence in [0, 1] of the first of the reranked candidates."""
        best = candidates[0]
        here = self._positions[best.index]
        agreement = float(np.linalg.norm(self._positions[global_best] - here)
                          <= self.place_radius)
        far = [c.quality for c in candidates[1:]
               if np.linalg.norm(self._positions[c.index] - here) > self.place_radius]
        if best.quality <= 0:
            distinct = 0.0
        elif not far:
            distinct = 1.0
        else:
            distinct = float(np.clip(1.0 - max(far) / best.quality, 0.0, 1.0))
        return 0.5 * agreement + 0.5 * distinct

    def describe(self, image: np.ndarray) -> Descriptors:
        """Descriptors of one RGB image with the localizer's model."""
        if self.model is None:
            raise MapError('this Localizer has no model: pass one, or call '
                           'localize_descriptors() with precomputed descriptors')
        return self.model.extract(to_tensor(image, self.model.config))

    def localize(self, image: np.ndarray) -> LocalizationResult:
        """Localise one RGB image (H x W x 3)."""
        start = time.perf_counter()
        desc = self.describe(image)
        extract_s = time.perf_counter() - start
        result = self.localize_descriptors(desc.global_desc[0], [p[0] for p in desc.patches])
        result.timings = {'extract_s': extract_s, **result.timings}
        return result

    def localize_descriptors(self, global_desc: torch.Tensor,
                             patches: Sequence[torch.Tensor]) -> LocalizationResult:
        """Localise from descriptors: global [Dp] and patches per scale [P_s, Dp]."""
        table, timings, read, moved = self.candidate_table(global_desc, patches)
        t0 = time.perf_counter()
        result = self.answer(table)
        result.timings = {**timings, 'answer_s': time.perf_counter() - t0}
        result.candidate_bytes, result.moved_bytes = read, moved
        return result

    def candidate_table(self, global_desc: torch.Tensor, patches: Sequence[torch.Tensor],
                        exclude: Sequence[int] = ()
                        ) -> Tuple[CandidateTable, Dict[str, float], int, int]:
        """Retrieve and score the top-k candidates of one query (no ranking decision yet).

        global_desc: [Dp]; patches: per scale [P_s, Dp]. exclude: map indices left out
        of the candidates (a reference queried against the rest of the map).
        Returns the table, the stage timings (retrieve_s, rerank_s), and the candidate
        bytes read and moved to the rerank device.
        """
        cfg = self.config
        g = torch.as_tensor(global_desc).float().reshape(-1)
        if g.numel() != cfg.num_pcs or len(patches) != len(cfg.patch_sizes):
            raise MapError(f'descriptor has {g.numel()} dims and {len(patches)} scales; the '
                           f'map needs {cfg.num_pcs} dims and {len(cfg.patch_sizes)} scales')
        for i, p in enumerate(patches):
            if tuple(p.shape) != (cfg.num_patches(i), cfg.num_pcs):
                raise MapError(f'patch block {i} has shape {tuple(p.shape)}, the map needs '
                               f'{(cfg.num_patches(i), cfg.num_pcs)}')
            if not torch.isfinite(torch.as_tensor(p)).all():
                raise ImageError(f'patch block {i} contains NaN or Inf')
        exclude = set(int(i) for i in exclude)
        if len(exclude) >= len(self.map):
            raise MapError('every reference is excluded: nothing is left to match against')
        t0 = time.perf_counter()
        dist, idx = top_k(self.map.index, g.numpy()[None], cfg.top_k + len(exclude))
        dist, idx = dist[0], idx[0]
        if exclude:
            keep = ~np.isin(idx, list(exclude))
            dist, idx = dist[keep][:cfg.top_k], idx[keep][:cfg.top_k]
        t1 = time.perf_counter()
        query = [torch.as_tensor(p).to(self.device, torch.float32) for p in patches]
        if self.resident is not None:
            rows, moved = self.resident.fetch(idx)
            stores = self.resident.slots
        else:
            rows, moved, stores = idx, 0, self.map.patches
        result = rerank(query, stores, rows, cfg)
        t2 = time.perf_counter()
        table = CandidateTable(idx.astype(np.int64), dist.astype(np.float64),
                               np.asarray(result.per_scale, np.float64),
                               np.asarray(result.quality, np.float64),
                               np.asarray(result.fused, np.float64))
        return (table, {'retrieve_s': t1 - t0, 'rerank_s': t2 - t1},
                len(idx) * reference_bytes(stores), moved)

    def answer(self, table: CandidateTable) -> LocalizationResult:
        """Rank a query's candidates by the localizer's fusion; the best with its confidence."""
        fused = self.fusion.scores(table)
        order = np.argsort(-fused, kind='stable')
        cands = [Candidate(int(table.indices[j]), self.map.references[table.indices[j]].id,
                           float(fused[j]), float(table.quality[j]),
                           float(table.global_distance[j]), float(table.patch_fused[j]))
                 for j in order]
        if self.calibration is None:
            confidence = self.confidence(cands, int(table.indices[0]))
        else:
            x = confidence_features(table, fused, self._positions, self.place_radius,
                                    self.fusion.temperature, self._hubs)
            confidence = float(self.calibration.probability(x[None])[0])
            if self.novelty_gate is not None:
                # P(in map | x) x P(right | in map, x) (calibration module doc)
                similarity = x[ALL_FEATURES.index('similarity')]
                confidence *= float(self.novelty_gate.probability(similarity))
        best = cands[0]
        return LocalizationResult(best.index, self.map.references[best.index], confidence,
                                  cands, table=table)
