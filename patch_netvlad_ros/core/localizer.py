# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Offline localisation of query images against a reference map.

Retrieve the top-k references by global descriptor, rerank them by patches, answer with
the best reference's pose and a confidence in [0, 1].

Confidence in [0, 1] (documented in the README), two equally weighted parts:
- agreement: 1 if the global descriptor's own top-1 reference lies within place_radius
  of the reranked best, else 0 (the two stages point at the same place);
- distinctiveness: 1 - q_far / q_best, clipped to [0, 1], where q is a candidate's match
  quality (fusion-weighted fraction of the best possible patch score, RANSAC inliers /
  n_p or spatial score / (x_max^2 + y_max^2)) and q_far the best quality among
  candidates farther than place_radius from the best (a ratio test between places:
  adjacent map frames are the same place, not competitors); 1 if there is none.
On the corridor set with the bootstrapped speed model (top-100, place_radius 5 m) it
separates right from wrong best matches with a ROC AUC of 0.878 (test_real_data.py);
raw match quality alone gave 0.57-0.66.

Device: the rerank runs where the query's patches are put (``device``; default the
model's, else the CPU). On the CPU the map's float16 memory maps are read in place. On any
other device (a GPU) the candidates' patches are kept there by
:class:`~.resident_patches.ResidentPatches`: the whole map by default, copied once, or the
``cache_references`` most recently used; each result reports the bytes it copied.
"""

from dataclasses import dataclass, field
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .checkpoint import model_digest
from .config import PatchNetVLADConfig
from .database import check_identity, map_identity, Reference, ReferenceMap
from .errors import ImageError, MapError
from .image import to_tensor
from .matching import rerank
from .model import Descriptors, PatchNetVLAD
from .resident_patches import reference_bytes, ResidentPatches
from .retrieval import top_k


@dataclass
class Candidate:
    """A reranked candidate: map index, reference id, fused and raw scores."""

    index: int
    id: str
    fused_score: float
    quality: float
    global_distance: float


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

    @property
    def retrieval_order(self) -> List[int]:
        """Map indices in reranked order, best first."""
        return [c.index for c in self.candidates]


def descriptor_identity(model: PatchNetVLAD) -> Dict:
    """Identity of the descriptors a model produces (compare with a map's)."""
    return map_identity(model_digest(model), model.config)


class Localizer:
    """Localise query images (or their descriptors) against a :class:`ReferenceMap`.

    top_k, matcher and patch_weights may differ from the map's build settings (they only
    change the matching); anything that changes the descriptors may not. place_radius
    (metres): references closer than this to each other count as the same place.
    device: where the rerank runs (default: the model's device, else the CPU).
    cache_references: references kept on the rerank device (default: none on the CPU,
    which reads the map in place; the whole map elsewhere); at least top_k.
    """

    def __init__(self, ref_map: ReferenceMap, model: Optional[PatchNetVLAD] = None,
                 place_radius: float = 5.0, device: Union[str, torch.device, None] = None,
                 cache_references: Optional[int] = None, **matching: object) -> None:
        if len(ref_map) == 0:
            raise MapError('the map holds no references: build it from at least one image')
        allowed = {'top_k', 'matcher', 'patch_weights'}
        if set(matching) - allowed:
            raise MapError(f'only {sorted(allowed)} can be changed at localisation time; '
                           f'got {sorted(set(matching) - allowed)}')
        if not place_radius > 0:
            raise MapError(f'place_radius must be positive (metres); got {place_radius}')
        self.map = ref_map
        self.place_radius = float(place_radius)
        self._positions = ref_map.positions()
        self.config: PatchNetVLADConfig = ref_map.config.override(**matching)
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

    def confidence(self, candidates: Sequence[Candidate], global_best: int) -> float:
        """Confidence in [0, 1] of the first of the reranked candidates (module doc)."""
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
        t0 = time.perf_counter()
        dist, idx = top_k(self.map.index, g.numpy()[None], cfg.top_k)
        t1 = time.perf_counter()
        query = [torch.as_tensor(p).to(self.device, torch.float32) for p in patches]
        if self.resident is not None:
            rows, moved = self.resident.fetch(idx[0])
            stores = self.resident.slots
        else:
            rows, moved, stores = idx[0], 0, self.map.patches
        result = rerank(query, stores, rows, cfg)
        t2 = time.perf_counter()
        cands = [Candidate(int(idx[0][j]), self.map.references[idx[0][j]].id,
                           float(result.fused[j]), float(result.quality[j]), float(dist[0][j]))
                 for j in result.order]
        confidence = self.confidence(cands, int(idx[0][0]))
        best = cands[0]
        return LocalizationResult(best.index, self.map.references[best.index], confidence,
                                  cands, {'retrieve_s': t1 - t0, 'rerank_s': t2 - t1},
                                  len(idx[0]) * reference_bytes(stores), moved)
