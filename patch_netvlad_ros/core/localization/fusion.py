# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Fusion of the global similarity with the patch scores, fitted on the map itself.

The authors rank the top-k candidates by their patch scores alone (``'patches'``: per
scale z-scores over the candidate list, weighted and summed; :func:`.matching.fuse_scores`).
With untrained NetVLAD weights the global descriptor is often the better ranker
(``'global'``: retrieval order), and ``'global+patches'`` ranks by

    fused_j = z(w_g * z(-global_distance) + w_p * patch_fused)_j

with z the z-score over the candidate list (the terms and the result are unitless and
comparable across queries and weights). w_g = 1 is retrieval alone, w_g = 0 the
authors' order.

:func:`fit_fusion` fits w_g on self-queries (:mod:`.map_fit`: references queried against
the rest of the map, or a second drive) by the mean margin of the best right candidate
over the best wrong one. It also fits a temperature beta: softmax(beta * fused) over the
candidates is each candidate's probability to be the query's place (the sequence
filter's observation model), beta maximising the likelihood of the right answers.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from ..errors import MapError
from ..matching.rerank import fuse_scores

#: 'patches': the authors' order (patch scores alone); 'global': retrieval order;
#: 'global+patches': weighted (module doc).
FUSION_METHODS = ('patches', 'global', 'global+patches')
#: Global weights tried by :func:`fit_fusion` (w_p = 1 - w_g).
WEIGHT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 41), 4))
#: Softmax temperatures tried by :func:`fit_temperature` (log-spaced).
TEMPERATURE_GRID = tuple(np.round(np.geomspace(0.05, 50.0, 121), 6))


@dataclass
class CandidateTable:
    """Scores of one query's top-k candidates, in retrieval order (C candidates, S scales).

    indices: [C] map indices, nearest global descriptor first.
    global_distance: [C] squared L2 distances of the global descriptors (ascending).
    patch_scores: [C, S] raw patch scores per scale (RANSAC inliers / n_p or spatial).
    quality: [C] patch scores scaled to [0, 1] by each scale's maximum, weighted.
    patch_fused: [C] the authors' fused patch score (z-scores per scale, weighted).
    """

    indices: np.ndarray
    global_distance: np.ndarray
    patch_scores: np.ndarray
    quality: np.ndarray
    patch_fused: np.ndarray

    def __len__(self) -> int:
        """Return the number of candidates C."""
        return len(self.indices)


def zscore(values: np.ndarray) -> np.ndarray:
    """Z-score [C] of values [C] over the candidate list (a constant list gives 0)."""
    return fuse_scores(torch.as_tensor(np.asarray(values, np.float64))[:, None],
                       (1.0,)).numpy()


@dataclass(frozen=True)
class Fusion:
    """How candidates are ranked (module doc); JSON round trip by :meth:`to_meta`.

    method: one of :data:`FUSION_METHODS`. global_weight, patch_weight: w_g, w_p (used only
    by 'global+patches'). temperature: beta of the per-candidate softmax. fitted_on: what the
    weights were fitted on and how they did there (free-form, JSON-able).
    """

    method: str = 'patches'
    global_weight: float = 0.0
    patch_weight: float = 1.0
    temperature: float = 1.0
    fitted_on: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise MapError(f'unknown fusion {self.method!r}; expected one of {FUSION_METHODS}')
        weights = (self.global_weight, self.patch_weight)
        if not all(np.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise MapError(f'fusion weights must be non-negative, not both 0; got {weights}')
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise MapError(f'fusion temperature must be positive; got {self.temperature}')

    def combine(self, patch_fused: np.ndarray, global_distance: np.ndarray) -> np.ndarray:
        """Fused scores [C] (larger is better) from the patch fused scores and distances [C]."""
        patch_fused = np.asarray(patch_fused, np.float64)
        if self.method == 'patches':
            return patch_fused.copy()
        if self.method == 'global':
            return zscore(-np.asarray(global_distance, np.float64))
        return zscore(self.global_weight * zscore(-np.asarray(global_distance, np.float64))
                      + self.patch_weight * patch_fused)

    def scores(self, table: CandidateTable) -> np.ndarray:
        """Fused scores [C] of a candidate table."""
        return self.combine(table.patch_fused, table.global_distance)

    def probabilities(self, fused: np.ndarray) -> np.ndarray:
        """Softmax [C] of temperature * fused: each candidate's chance to be the place."""
        z = self.temperature * np.asarray(fused, np.float64)
        z = np.exp(z - z.max())
        return z / z.sum()

    def to_meta(self) -> Dict[str, Any]:
        """Return a JSON-able dict for :attr:`ReferenceMap.meta`."""
        return {'method': self.method, 'global_weight': float(self.global_weight),
                'patch_weight': float(self.patch_weight),
                'temperature': float(self.temperature), 'fitted_on': dict(self.fitted_on)}

    @classmethod
    def from_meta(cls, meta: Dict[str, Any]) -> 'Fusion':
        """Inverse of :meth:`to_meta`; a malformed dict raises :class:`MapError`."""
        try:
            return cls(str(meta['method']), float(meta['global_weight']),
                       float(meta['patch_weight']), float(meta['temperature']),
                       dict(meta.get('fitted_on', {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise MapError(f"the map's fusion parameters are malformed ({exc!r}): refit "
                           'them (patch_netvlad_ros.core.maps.map_fit.fit_map)') from exc


#: The authors' order: patch scores alone.
AUTHORS = Fusion('patches')
#: Retrieval order: global distance alone.
RETRIEVAL = Fusion('global')


def recall_at_1(tables: Sequence[CandidateTable], positives: Sequence[np.ndarray],
                fusion: Fusion) -> float:
    """Fraction of queries whose best fused candidate is one of their positives."""
    hits = [t.indices[int(np.argmax(fusion.scores(t)))] in set(np.asarray(p).tolist())
            for t, p in zip(tables, positives)]
    return float(np.mean(hits)) if hits else 0.0


def _positive_masks(tables: Sequence[CandidateTable],
                    positives: Sequence[np.ndarray]) -> List[np.ndarray]:
    return [np.isin(t.indices, np.asarray(p, np.int64)) for t, p in zip(tables, positives)]


def log_likelihood(fused: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                   temperature: float) -> float:
    """Mean log of the softmax mass on the positives (queries with a positive candidate).

    fused: per query [C] fused scores; masks: per query [C] booleans (positive candidates).
    """
    total, count = 0.0, 0
    for f, m in zip(fused, masks):
        if not m.any():
            continue
        z = temperature * np.asarray(f, np.float64)
        z = z - z.max()
        total += np.log(np.exp(z[m]).sum()) - np.log(np.exp(z).sum())
        count += 1
    return total / max(count, 1)


def fit_temperature(fused: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Return the temperature of :data:`TEMPERATURE_GRID` with the best :func:`log_likelihood`."""
    lls = [log_likelihood(fused, masks, t) for t in TEMPERATURE_GRID]
    return float(TEMPERATURE_GRID[int(np.argmax(lls))])


def margins(fused: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """Per query: best positive minus best negative of the standardised fused scores.

    fused: per query [C]; masks: per query [C] booleans (positive candidates). Queries
    without a positive or without a negative candidate are left out.
    """
    out = []
    for f, m in zip(fused, masks):
        if m.any() and not m.all():
            z = zscore(f)
            out.append(z[m].max() - z[~m].max())
    return np.array(out)


def fit_fusion(tables: Sequence[CandidateTable], positives: Sequence[np.ndarray],
               fitted_on: str = '') -> Fusion:
    """Fit the global weight (and the temperature) on self-queries.

    tables: per query its candidate table; positives: per query the map indices that are
    right answers. The global weight w_g (w_p = 1 - w_g) over :data:`WEIGHT_GRID`
    maximises the mean :func:`margins` (the best right candidate's lead over the best
    wrong one, in standard deviations of the candidates' fused scores), among the
    weights whose recall@1 on these queries is at least that of either ranker alone (so
    the fit is never worse than retrieval or the authors' order on the data it saw).
    The margin is a smooth stand-in for recall@1, which on a few hundred self-queries
    moves in steps and ties over wide ranges of weights (on the corridor's self-queries
    recall@1 alone picked w_g = 0.325 where the margin picks 0.725; on the query drive
    those give R@1 0.77 and 0.93, global alone 0.86). Ties go to the smaller w_g. The
    temperature then maximises :func:`log_likelihood`. Queries without a positive
    candidate are ignored.
    """
    masks = _positive_masks(tables, positives)
    keep = [i for i, m in enumerate(masks) if m.any()]
    if not keep:
        raise MapError('no self-query has a right answer among its candidates: the map is '
                       'too sparse for the place radius to fit a fusion (raise the radius)')
    tables = [tables[i] for i in keep]
    masks = [masks[i] for i in keep]
    pos = [t.indices[m] for t, m in zip(tables, masks)]
    gz = [zscore(-t.global_distance) for t in tables]
    means, hits = [], []
    for w in WEIGHT_GRID:
        fused = [w * g + (1.0 - w) * t.patch_fused for g, t in zip(gz, tables)]
        means.append(float(np.mean(margins(fused, masks))))
        hits.append(sum(bool(m[int(np.argmax(f))]) for f, m in zip(fused, masks)))
    # never worse than either ranker alone (w = 0 and w = 1 are in the grid) on this data
    floor = max(hits[0], hits[-1])
    allowed = [i for i, h in enumerate(hits) if h >= floor]
    best = max(allowed, key=lambda i: (means[i], -i))
    w = float(WEIGHT_GRID[best])
    fusion = Fusion('global+patches', w, 1.0 - w)
    temp = fit_temperature([fusion.scores(t) for t in tables], masks)
    r1 = {name: recall_at_1(tables, pos, f) for name, f in (
        ('global', RETRIEVAL), ('patches', AUTHORS), ('fused', fusion))}
    summary = {'description': fitted_on, 'queries': len(tables),
               'recall_at_1': r1['fused'], 'recall_at_1_global': r1['global'],
               'recall_at_1_patches': r1['patches'], 'mean_margin': means[best],
               'mean_margin_global': means[-1], 'mean_margin_patches': means[0]}
    return Fusion('global+patches', w, 1.0 - w, temp, summary)
