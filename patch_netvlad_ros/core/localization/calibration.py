# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Calibrated match confidence: the probability that the answer lies within place_radius.

Features of a query's ranked candidates (:func:`confidence_features`, best = the top
fused candidate, far = candidates farther than place_radius from it):
    margin          fused(best) - max fused(far): how much better the place is than any
                    other place (the fused scores are z-scores over the candidates)
    mass            log-odds of the softmax mass (:meth:`.fusion.Fusion.probabilities`)
                    of the candidates within place_radius of the best
    agreement       1 if the global descriptor's own top-1 lies within place_radius
    quality         the best's raw patch match quality in [0, 1]
    generic         quality(best) - median quality of the candidates (evidence specific
                    to the best place beyond what any candidate shares)
    similarity      global cosine similarity of the best (1 - d / 2 for unit vectors)
    global_margin   similarity(best) - max similarity(far)
    global_z        z-score of similarity(best) among the candidates
    distinct        similarity(best) - s_r(best): how much more similar the frame is to
                    that reference than the reference is to any other place of the map
                    (s_r below, :func:`hub_similarity`; a hub - a reference like many
                    places - needs a higher similarity to mean the same)
A logistic regression on standardised features (:func:`fit_calibration`, L2-penalised,
Newton's method, deterministic) turns them into a probability. It is fitted on data the
map already has (:func:`.map_fit.fit_map`: self-queries of the references), so it needs
no labelled query drive.

The default features are agreement and similarity. Measured on the corridor (query
drive against a map of the reference drive, calibrated on the reference drive's
self-queries only): absolute patch quality separates places not in the map best
(unknown images - Tokyo, KITTI street frames, blank, noise - 0.01-0.07; right answers
of the query drive 0.12-0.44), but it does not carry over from self-queries (same
traversal, median 0.5-0.7) to another traversal (median 0.28), so models with it put
about half of the query drive's right answers below 0.5; the global similarity drops
less between traversals and still puts every unknown image (at most 0.09) below every
right answer of the query drive (at least 0.10). No feature set made the single-frame
probabilities well calibrated on the other traversal (expected calibration error 0.14
or more from self-queries alone: they are another distribution, on which the model is
underconfident on a second drive); simulated second visits (:mod:`.map_fit`) bring it
to 0.11, and an isotonic recalibration of the logistic on the same rows did not help
(docs/accuracy.md). The sequence filter's posterior (:mod:`.sequence`) is calibrated
(0.01-0.05).

A map's fit may also hold a *novelty gate* (:class:`NoveltyGate`, :func:`fit_novelty_gate`):
the probability that a frame comes from the mapped environment at all, P(in map | x), from
the global similarity of its answer. The confidence is then P(in map | x) x P(right | in
map, x), the calibration giving the second factor. The gate is fitted on the map alone,
by a rule fixed before any measurement (docs/accuracy.md, "Novelty gate"):
for each reference r, s_r is its highest global similarity to any reference farther than
:data:`GATE_EXCLUSION` place radii from it (how similar an image of *another* place of
this environment still is to the map: a frame from this environment, even at a place not
mapped, reaches about that); the gate is a logistic in the similarity whose 0.5 point is
the :data:`GATE_QUANTILE` quantile of {s_r} and which reaches :data:`GATE_HIGH` at their
median. Nothing is tuned: both constants follow from the map's numbers. Measured once
(docs/accuracy.md): it sends the loop's unknown images to 0 but lowers the corridor's only
by 0.4-0.8x (their similarity lies inside the corridor's own range) and made the corridor
self-fit's ECE worse, so fits store it only when asked (:data:`.map_fit.NOVELTY_GATE`)
or when a self-fit's keyframes are its model's training images
(:func:`..maps.map_building.gate_for`: there it is what keeps unknown places below 0.5).

:func:`expected_calibration_error` and :func:`reliability_diagram` measure how well the
probabilities match the frequencies.
"""

from dataclasses import dataclass, field
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .fusion import CandidateTable, Fusion
from ..errors import MapError

#: Every feature :func:`confidence_features` computes, in order.
ALL_FEATURES = ('margin', 'mass', 'agreement', 'quality', 'generic', 'similarity',
                'global_margin', 'global_z', 'distinct')
#: The features a fit uses by default (module doc: why not the patch quality).
DEFAULT_FEATURES = ('agreement', 'similarity')
#: Default confidence threshold: publish answers more likely right than wrong.
DEFAULT_THRESHOLD = 0.5
#: Default L2 penalty of the logistic regression (on standardised features).
DEFAULT_L2 = 1.0
#: Bins of :func:`expected_calibration_error` and :func:`reliability_diagram`.
DEFAULT_BINS = 10
#: Odds clip of the mass feature (softmax masses of exactly 0 or 1).
_MASS_EPS = 1e-6
#: Novelty gate (module doc), fixed before measuring: s_r uses the references farther than
#: this many place radii from r (another place, not r's neighbour) ...
GATE_EXCLUSION = 2.0
#: ... the gate is 0.5 at this quantile of {s_r} (a low one: most of this environment's
#: other places still look at least that similar to the map) ...
GATE_QUANTILE = 0.05
#: ... and GATE_HIGH at their median (the slope follows from their spread).
GATE_HIGH = 0.95
#: References whose similarities are compared in one block (bounded memory).
_GATE_BLOCK = 1024


def confidence_features(table: CandidateTable, fused: np.ndarray, positions: np.ndarray,
                        place_radius: float, temperature: float,
                        hubs: Optional[np.ndarray] = None) -> np.ndarray:
    """Features [F] (:data:`ALL_FEATURES`, module doc) of a query's candidates.

    table: the query's candidates (C); fused: [C] their fused scores; positions: [N, 3]
    reference positions; temperature: the softmax temperature of the fusion; hubs: [N]
    :func:`hub_similarity` of the map (without it ``distinct`` is nan).
    """
    fused = np.asarray(fused, np.float64)
    b = int(np.argmax(fused))
    here = positions[table.indices[b]]
    dist = np.linalg.norm(positions[table.indices] - here, axis=1)           # [C]
    near = dist <= place_radius
    far = ~near
    margin = fused[b] - (fused[far].max() if far.any() else fused.min())
    z = temperature * fused
    p = np.exp(z - z.max())
    mass = float(np.clip(p[near].sum() / p.sum(), _MASS_EPS, 1.0 - _MASS_EPS))
    top_global = positions[table.indices[int(np.argmin(table.global_distance))]]
    agreement = float(np.linalg.norm(top_global - here) <= place_radius)
    quality = float(table.quality[b])
    generic = quality - float(np.median(table.quality))
    sim = 1.0 - 0.5 * np.asarray(table.global_distance, np.float64)
    similarity = float(sim[b])
    global_margin = similarity - (sim[far].max() if far.any() else sim.min())
    global_z = (similarity - sim.mean()) / max(sim.std(), 1e-12)
    distinct = similarity - hubs[table.indices[b]] if hubs is not None else math.nan
    return np.array([margin, math.log(mass / (1.0 - mass)), agreement, quality, generic,
                     similarity, global_margin, global_z, distinct])


#: The fusion fields a calibration depends on.
FUSION_KEYS = ('method', 'global_weight', 'patch_weight', 'temperature')


def fusion_identity(fusion: Fusion) -> Dict[str, Any]:
    """Return the fields of a fusion (:data:`FUSION_KEYS`) a calibration depends on."""
    meta = fusion.to_meta()
    return {k: meta[k] for k in FUSION_KEYS}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class Calibration:
    """Logistic regression from features to P(answer within place_radius).

    features: names (a subset of :data:`ALL_FEATURES`); mean, scale, coef: [F] each
    (standardisation and weights); intercept; place_radius and fusion: what the features
    were computed with (a localizer with others cannot use it); threshold: default
    confidence below which no pose is published; fitted_on: free-form summary.
    """

    features: Tuple[str, ...]
    mean: Tuple[float, ...]
    scale: Tuple[float, ...]
    coef: Tuple[float, ...]
    intercept: float
    place_radius: float
    fusion: Dict[str, Any]
    threshold: float = DEFAULT_THRESHOLD
    fitted_on: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.features) - set(ALL_FEATURES)
        if unknown:
            raise MapError(f'unknown calibration features {sorted(unknown)}; known: '
                           f'{ALL_FEATURES}')
        n = len(self.features)
        if not len(self.mean) == len(self.scale) == len(self.coef) == n:
            raise MapError(f'calibration has {n} features but {len(self.mean)} means, '
                           f'{len(self.scale)} scales and {len(self.coef)} weights')

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Probabilities [M] from features [M, len(ALL_FEATURES)] (every feature, in order)."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        cols = [ALL_FEATURES.index(f) for f in self.features]
        z = (x[:, cols] - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(z @ np.asarray(self.coef) + self.intercept)

    def mismatch(self, fusion: Fusion, place_radius: float) -> str:
        """Why a localizer with this fusion and radius cannot use it ('' when it can)."""
        if not math.isclose(place_radius, self.place_radius, rel_tol=1e-9):
            return (f'it was fitted for place_radius {self.place_radius:g} m, the localizer '
                    f'uses {place_radius:g} m')
        mine = {k: self.fusion.get(k) for k in FUSION_KEYS}
        theirs = fusion_identity(fusion)
        if mine != theirs:
            return f'it was fitted with the fusion {mine}, the localizer uses {theirs}'
        return ''

    def to_meta(self) -> Dict[str, Any]:
        """Return a JSON-able dict for :attr:`ReferenceMap.meta`."""
        return {'features': list(self.features), 'mean': [float(v) for v in self.mean],
                'scale': [float(v) for v in self.scale],
                'coef': [float(v) for v in self.coef], 'intercept': float(self.intercept),
                'place_radius': float(self.place_radius), 'fusion': dict(self.fusion),
                'threshold': float(self.threshold), 'fitted_on': dict(self.fitted_on)}

    @classmethod
    def from_meta(cls, meta: Dict[str, Any]) -> 'Calibration':
        """Inverse of :meth:`to_meta`; a malformed dict raises :class:`MapError`."""
        try:
            return cls(tuple(meta['features']), tuple(map(float, meta['mean'])),
                       tuple(map(float, meta['scale'])), tuple(map(float, meta['coef'])),
                       float(meta['intercept']), float(meta['place_radius']),
                       dict(meta['fusion']), float(meta.get('threshold', DEFAULT_THRESHOLD)),
                       dict(meta.get('fitted_on', {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise MapError(f"the map's calibration is malformed ({exc!r}): refit it "
                           '(patch_netvlad_ros.core.maps.map_fit.fit_map)') from exc


@dataclass(frozen=True)
class NoveltyGate:
    """P(the frame comes from the mapped environment) from its answer's global similarity.

    sigmoid(slope x (similarity - centre)); fitted_on: how centre and slope were derived
    (:func:`fit_novelty_gate`).
    """

    centre: float
    slope: float
    fitted_on: Dict[str, Any] = field(default_factory=dict)

    def probability(self, similarity: np.ndarray) -> np.ndarray:
        """Gate values [M] in (0, 1) of global similarities [M]."""
        s = np.asarray(similarity, np.float64)
        return _sigmoid(self.slope * (s - self.centre))

    def to_meta(self) -> Dict[str, Any]:
        """Return a JSON-able dict for :attr:`ReferenceMap.meta`."""
        return {'centre': float(self.centre), 'slope': float(self.slope),
                'fitted_on': dict(self.fitted_on)}

    @classmethod
    def from_meta(cls, meta: Dict[str, Any]) -> 'NoveltyGate':
        """Inverse of :meth:`to_meta`; a malformed dict raises :class:`MapError`."""
        try:
            gate = cls(float(meta['centre']), float(meta['slope']),
                       dict(meta.get('fitted_on', {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise MapError(f"the map's novelty gate is malformed ({exc!r}): refit it "
                           '(patch_netvlad_ros.core.maps.map_fit.fit_map)') from exc
        if not (math.isfinite(gate.centre) and math.isfinite(gate.slope) and gate.slope > 0):
            raise MapError(f"the map's novelty gate has centre {gate.centre} and slope "
                           f'{gate.slope} (needs finite values, slope > 0): refit the map')
        return gate


def environment_similarity(global_desc: np.ndarray, positions: np.ndarray,
                           exclusion: float) -> np.ndarray:
    """s_r [N]: each reference's highest global similarity to a reference beyond exclusion.

    global_desc: [N, Dp] (unit vectors); positions: [N, 3]; similarity = 1 - d / 2 with d
    the squared L2 distance (the cosine for unit vectors, as :func:`confidence_features`).
    nan where no reference lies farther than exclusion (metres).
    """
    g = np.asarray(global_desc, np.float64)
    pos = np.asarray(positions, np.float64)
    norms = (g ** 2).sum(1)
    out = np.full(len(g), np.nan)
    for a in range(0, len(g), _GATE_BLOCK):
        b = min(a + _GATE_BLOCK, len(g))
        d = norms[a:b, None] + norms[None, :] - 2.0 * g[a:b] @ g.T              # [B, N]
        far = np.linalg.norm(pos[a:b, None, :] - pos[None, :, :], axis=2) > exclusion
        sim = np.where(far, 1.0 - 0.5 * d, -np.inf)
        best = sim.max(1)
        out[a:b] = np.where(np.isfinite(best), best, np.nan)
    return out


def hub_similarity(global_desc: np.ndarray, positions: np.ndarray,
                   place_radius: float) -> np.ndarray:
    """Return s_r [N] of the ``distinct`` feature (0 where a reference has none).

    :func:`environment_similarity` beyond the novelty gate's exclusion
    (:data:`GATE_EXCLUSION` place radii). global_desc: [N, Dp] unit vectors; positions:
    [N, 3].
    """
    s = environment_similarity(global_desc, positions, GATE_EXCLUSION * place_radius)
    return np.where(np.isfinite(s), s, 0.0)


def hubs_for(features: Sequence[str], global_desc: np.ndarray, positions: np.ndarray,
             place_radius: float) -> Optional[np.ndarray]:
    """Return :func:`hub_similarity` [N] when ``features`` use it (``distinct``), else None.

    global_desc: [N, Dp] the map's (read once, here); positions: [N, 3].
    """
    if 'distinct' not in features:
        return None
    return hub_similarity(np.asarray(global_desc), positions, place_radius)


def fit_novelty_gate(global_desc: np.ndarray, positions: np.ndarray,
                     place_radius: float) -> Optional[NoveltyGate]:
    """Fit the novelty gate on a map's descriptors [N, Dp] and positions [N, 3] (module doc).

    None when it cannot be fitted: fewer than 2 references with a reference farther than
    :data:`GATE_EXCLUSION` place radii, or the median of {s_r} not above its low quantile.
    """
    s = environment_similarity(global_desc, positions, GATE_EXCLUSION * place_radius)
    s = s[np.isfinite(s)]
    return gate_from_similarities(s, {'references': int(len(s)),
                                      'exclusion_m': GATE_EXCLUSION * float(place_radius)},
                                  'map alone: 0.5 at the {quantile:g} quantile of {n} '
                                  "references' highest similarity to another place "
                                  '({centre:.3f}), {high:g} at their median ({median:.3f})')


def gate_from_similarities(similarities: np.ndarray, fitted_on: Dict[str, Any],
                           description: str) -> Optional[NoveltyGate]:
    """Return the novelty gate of in-environment similarities [S] (module doc's rule).

    0.5 at their :data:`GATE_QUANTILE` quantile, :data:`GATE_HIGH` at their median. None
    when fewer than 2 are finite or the median is not above the quantile. fitted_on: what
    they are, stored with the gate; description: formatted with quantile, n, centre, high
    and median.
    """
    s = np.asarray(similarities, np.float64)
    s = s[np.isfinite(s)]
    if len(s) < 2:
        return None
    centre = float(np.quantile(s, GATE_QUANTILE))
    median = float(np.median(s))
    if not median > centre:
        return None
    slope = math.log(GATE_HIGH / (1.0 - GATE_HIGH)) / (median - centre)
    return NoveltyGate(centre, slope, {
        **fitted_on, 'quantile': GATE_QUANTILE, 'high': GATE_HIGH, 'median_similarity': median,
        'description': description.format(quantile=GATE_QUANTILE, n=len(s), centre=centre,
                                          high=GATE_HIGH, median=median)})


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = DEFAULT_L2,
                 weights: Optional[np.ndarray] = None,
                 iterations: int = 100) -> Tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method: (coef [F], intercept).

    x: [M, F] (standardise first); y: [M] in {0, 1}; weights: [M] sample weights (default
    1). The intercept is not penalised. Deterministic; converges for any data because of
    the penalty (l2 > 0).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    a = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(a.shape[1], float(l2))
    penalty[-1] = 0.0
    beta = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = _sigmoid(a @ beta)
        grad = a.T @ (w * (p - y)) + penalty * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(
            a.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta[:-1], float(beta[-1])


def fit_calibration(x: np.ndarray, right: np.ndarray, place_radius: float, fusion: Fusion,
                    features: Sequence[str] = DEFAULT_FEATURES, l2: float = DEFAULT_L2,
                    weights: Optional[np.ndarray] = None,
                    fitted_on: Optional[Dict[str, Any]] = None) -> Calibration:
    """Fit a :class:`Calibration` on features [M, len(ALL_FEATURES)] and labels [M]."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    right = np.asarray(right, bool)
    if len(x) != len(right) or len(x) == 0:
        raise MapError(f'cannot calibrate on {len(x)} feature rows and {len(right)} labels')
    unknown = sorted(set(features) - set(ALL_FEATURES))
    if unknown:
        raise MapError(f'unknown calibration features {unknown}; known: {ALL_FEATURES}')
    cols = [ALL_FEATURES.index(f) for f in features]
    sub = x[:, cols]
    mean = sub.mean(0)
    scale = sub.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    coef, intercept = fit_logistic((sub - mean) / scale, right, l2, weights)
    return Calibration(tuple(features), tuple(mean), tuple(scale), tuple(coef), intercept,
                       float(place_radius), fusion_identity(fusion),
                       fitted_on=dict(fitted_on or {}))


def reliability_bins(probability: Sequence[float], right: Sequence[bool],
                     bins: int = DEFAULT_BINS) -> Dict[str, np.ndarray]:
    """Equal-width bins of [0, 1]: count, mean probability and frequency of right per bin.

    The last bin includes 1. Empty bins have count 0 and nan means.
    """
    p = np.asarray(probability, np.float64).reshape(-1)
    y = np.asarray(right, bool).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f'{p.size} probabilities for {y.size} labels')
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        mean_p = np.bincount(which, p, bins) / count
        freq = np.bincount(which, y.astype(np.float64), bins) / count
    return {'count': count, 'confidence': mean_p, 'frequency': freq,
            'edges': np.linspace(0.0, 1.0, bins + 1)}


def expected_calibration_error(probability: Sequence[float], right: Sequence[bool],
                               bins: int = DEFAULT_BINS) -> float:
    """Return ECE: sum over equal-width bins of |frequency - mean probability| x share."""
    b = reliability_bins(probability, right, bins)
    used = b['count'] > 0
    if not used.any():
        raise ValueError('no probabilities to evaluate')
    share = b['count'][used] / b['count'].sum()
    return float((share * np.abs(b['frequency'][used] - b['confidence'][used])).sum())


def recall_at_full_precision(confidence: Sequence[float], right: Sequence[bool]) -> float:
    """Fraction of all answers accepted, by decreasing confidence, before the first wrong one.

    The largest recall at 100% precision over confidence thresholds (answers tied with a
    wrong one are not accepted); 0 when the most confident answer is wrong.
    """
    c = np.asarray(confidence, np.float64).reshape(-1)
    y = np.asarray(right, bool).reshape(-1)
    if c.shape != y.shape or c.size == 0:
        raise ValueError(f'{c.size} confidences for {y.size} labels')
    wrong = c[~y]
    cut = wrong.max() if wrong.size else -np.inf
    return float((c[y] > cut).sum() / c.size)


def reliability_diagram(probability: Sequence[float], right: Sequence[bool],
                        path: Union[str, Path], bins: int = DEFAULT_BINS,
                        title: str = 'Confidence calibration') -> Path:
    """Write a reliability diagram (frequency of right vs confidence per bin) as a PNG.

    The bars show each bin's frequency of right answers and the marks its mean
    confidence (the gap between them is the bin's error), the diagonal perfect
    calibration, the lower panel how many answers fall in each bin; the title carries
    the ECE.
    """
    from matplotlib.figure import Figure          # optional at import: plotting only
    b = reliability_bins(probability, right, bins)
    ece = expected_calibration_error(probability, right, bins)
    fig = Figure(figsize=(6.0, 6.5), dpi=100, layout='constrained')
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    width = 1.0 / bins
    centres = b['edges'][:-1] + 0.5 * width
    used = b['count'] > 0
    top.bar(centres[used], b['frequency'][used], width=0.9 * width, color='tab:blue',
            label='frequency of right answers')
    # the gap between a bar's top and its marker is the bin's calibration error
    top.plot(centres[used], b['confidence'][used], '_', color='tab:orange', markersize=18,
             markeredgewidth=3, label='mean confidence of the bin')
    top.plot([0, 1], [0, 1], '--', color='grey', label='perfect calibration')
    top.set(ylim=(0, 1), ylabel='frequency right',
            title=f'{title} (ECE {ece:.3f}, {int(b["count"].sum())} answers)')
    top.legend(loc='upper left')
    bottom.bar(centres, b['count'], width=0.9 * width, color='tab:grey')
    bottom.set(xlim=(0, 1), xlabel='confidence', ylabel='answers')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
