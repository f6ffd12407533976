# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Evaluation report of the ``evaluate`` command: per-query outcomes to numbers and plots.

The same report serves the offline mode (images through the localizer in one process) and
the ROS-graph replay mode (answers read off the localizer's topics): each query becomes a
:class:`QueryOutcome`, :func:`evaluate` turns the list into a JSON-ready dictionary,
:func:`write_report`, :func:`write_plots` and :func:`format_summary` present it.

Ground truth is by distance
(:func:`~patch_netvlad_ros.core.evaluation.evaluation.positives_within`) unless explicit positives
are given (e.g. from a frame tolerance). Recall@N is
:func:`~patch_netvlad_ros.core.evaluation.evaluation.recall_at_n` over all queries: a query without
an answer is a miss. ROS-free: numpy, and matplotlib imported only when plotting.

Stages side by side: an outcome may carry the rankings of the same candidates by other
rankers (:attr:`QueryOutcome.rankings`: 'global' retrieval, 'patches' the authors' order,
'fused' the map's fitted fusion), and a second list of outcomes the sequence filter's
answers; :func:`side_by_side` puts their recall and the confidences' ROC AUC, expected
calibration error and recall at 100% precision in one table (:data:`STAGES`).
"""

from dataclasses import dataclass, field
import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .evaluation import positives_within, recall_at_n
from ..localization.calibration import expected_calibration_error, recall_at_full_precision

#: Default ground-truth radius (m), the paper's 25 m.
DEFAULT_RADIUS = 25.0
#: Default N of the recall@N table.
DEFAULT_NS = (1, 5, 10, 20)
#: Size of every plot, inches at PLOT_DPI dots per inch (800 x 600 pixels).
PLOT_SIZE = (8.0, 6.0)
PLOT_DPI = 100

#: Axis labels and title of the trajectory plot per pose convention. The plot shows the
#: ground plane of z-up positions (:func:`~.poses.to_z_up`): world x-y of z-up poses,
#: world z and -x of camera-convention poses (seen from above, as z-up ones are).
GROUND_AXES = {'z-up': ('x (m)', 'y (m)', 'ground plane x-y (z up)'),
               'camera': ('z (m)', '-x (m)', 'ground plane z-x (camera frame, y down)')}

_RIGHT_COLOUR = 'tab:green'
_WRONG_COLOUR = 'tab:red'

#: Rows of :func:`side_by_side`, in order: key -> label.
STAGES = {'global': 'global (retrieval)', 'patches': "patches (authors')",
          'fused': "fused (map's fit)", 'sequence': 'sequence filter'}


@dataclass
class QueryOutcome:
    """What the localizer answered for one query, with the query's ground truth.

    stamp: query stamp (s).
    position: [3] (or [2]) ground-truth query position in the map frame (m), z-up: the
    first two coordinates are the ground plane (see :func:`~.poses.to_z_up`).
    yaw: ground-truth heading about the up axis (rad), None when unknown.
    ranked: map indices in reranked order, best first; empty when there was no answer.
    confidence: in [0, 1]; nan when there was no answer.
    latency_ms: end to end (graph mode) or total compute (offline), None when not measured.
    stage_ms: per-stage times (ms), e.g. extraction, retrieval, rerank.
    global_ranked: map indices in global-descriptor order (offline mode has it), or None.
    rerank_bytes: {'candidate': bytes of candidate patches the rerank read, 'moved': those
    copied to the rerank device for this query}; empty when not reported.
    rankings: the same query ranked by other rankers (a key of :data:`STAGES` -> map
    indices, best first); empty when not computed (no answer: a miss for every ranker).
    """

    stamp: float
    position: np.ndarray
    yaw: Optional[float]
    ranked: List[int]
    confidence: float
    latency_ms: Optional[float] = None
    stage_ms: Dict[str, float] = field(default_factory=dict)
    global_ranked: Optional[List[int]] = None
    rerank_bytes: Dict[str, int] = field(default_factory=dict)
    rankings: Dict[str, List[int]] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        """Whether the localizer gave an answer (a non-empty ranking)."""
        return len(self.ranked) > 0


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> Optional[float]:
    """Return the ROC AUC of scores separating positive from negative labels.

    scores: [M] finite values, higher meaning more likely positive; labels: [M] booleans.
    scikit-learn's ``roc_auc_score`` (the probability that a random positive scores above
    a random negative, ties counted half); None when either class is empty.
    """
    from sklearn.metrics import roc_auc_score   # about 1 s to import: only when asked
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f'{s.size} scores for {y.size} labels')
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def _stats(values: Iterable[float], keys: Sequence[str]) -> Optional[Dict[str, float]]:
    """Summarise values with the named statistics; None when there are no values.

    keys: any of 'median', 'p50', 'p95', 'mean', 'max' (percentiles linear, as numpy's).
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return None
    out = {}
    for key in keys:
        if key in ('median', 'p50'):
            out[key] = float(np.percentile(v, 50))
        elif key == 'p95':
            out[key] = float(np.percentile(v, 95))
        elif key == 'mean':
            out[key] = float(np.mean(v))
        elif key == 'max':
            out[key] = float(np.max(v))
        else:
            raise ValueError(f'unknown statistic {key!r}')
    return out


def _heading_error_deg(query_yaw: float, ref_yaw: float) -> float:
    """Return the absolute wrapped difference of two headings (rad) in degrees, in [0, 180]."""
    diff = float(query_yaw) - float(ref_yaw)
    return abs(math.degrees(math.atan2(math.sin(diff), math.cos(diff))))


def _finite_or_none(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _check_ranking(ranking: Sequence[int], num_refs: int, what: str, i: int) -> List[int]:
    out = [int(k) for k in ranking]
    bad = [k for k in out if not 0 <= k < num_refs]
    if bad:
        raise ValueError(f'query {i}: {what} index {bad[0]} outside the map of {num_refs}')
    return out


def _pr_curve(confidence: np.ndarray, answered: np.ndarray, right: np.ndarray,
              rightable: int) -> List[Dict[str, Optional[float]]]:
    """Return precision and recall of accepting answers with confidence >= t, per t.

    confidence, answered, right: [M]. t runs over the distinct finite confidences of the
    answers, 0 and 1, ascending. Precision is None when nothing is accepted, recall None
    when no query could be right.
    """
    finite = answered & np.isfinite(confidence)
    thresholds = np.unique(np.concatenate([confidence[finite], [0.0, 1.0]]))
    curve = []
    for t in thresholds:
        accepted = finite & (confidence >= t)
        n_accepted = int(accepted.sum())
        n_right = int((accepted & right).sum())
        curve.append({
            'threshold': float(t),
            'precision': n_right / n_accepted if n_accepted else None,
            'recall': n_right / rightable if rightable else None,
        })
    return curve


def evaluate(outcomes: Sequence[QueryOutcome], ref_positions: np.ndarray,
             ref_yaws: Optional[np.ndarray] = None, radius: float = DEFAULT_RADIUS,
             ns: Sequence[int] = DEFAULT_NS,
             positives: Optional[Sequence[Union[Set[int], Sequence[int], np.ndarray]]] = None
             ) -> Dict[str, Any]:
    """Turn per-query outcomes into the evaluation report (a JSON-ready dictionary).

    outcomes: [M] one per query. ref_positions: [N, 3] (or [N, 2]) map positions (m).
    ref_yaws: [N] map headings about the up axis (rad), or None. radius: ground-truth
    distance (m), used unless positives ([M] sets or arrays of map indices per query) is
    given. Positions and headings of camera-convention poses go through
    :func:`~.poses.to_z_up` and :func:`~.poses.headings` first (pnv-evaluate does), else
    the heading error would be a turn about the optical axis.

    Keys: 'queries', 'answered', 'radius_m' (None when positives are given), 'recall'
    ({N: recall@N over all queries}), 'recall_global' (only when every outcome has a
    global ranking), 'position_error_m' and 'heading_error_deg' ({'median', 'mean', 'p95',
    'max'} over answered queries, None without data), 'latency_ms' ({'p50', 'p95', 'mean',
    'max'} or None), 'stage_ms' ({stage: {'p50', 'p95'}}), 'rerank_mb' ({'candidate',
    'moved'}: {'mean', 'p50', 'max'} MB per query, 1e6 bytes), 'confidence' ({'auc',
    'right_mean', 'wrong_mean', 'pr_curve'}) and 'per_query' (a list of {'stamp', 'best',
    'correct', 'error_m', 'heading_error_deg', 'confidence', 'latency_ms'}).

    A query is right when its top answer is among its positives. The confidence AUC and
    means are over answered queries with a finite confidence; the PR curve accepts answers
    with confidence >= threshold, its recall is over the queries with at least one positive.
    """
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError('no queries to evaluate')
    refs = np.asarray(ref_positions, dtype=np.float64)
    if refs.ndim != 2 or refs.shape[0] == 0:
        raise ValueError(f'reference positions must be [N, 2 or 3], got {refs.shape}')
    num_refs = refs.shape[0]
    yaws_ref = None
    if ref_yaws is not None:
        yaws_ref = np.asarray(ref_yaws, dtype=np.float64).reshape(-1)
        if yaws_ref.size != num_refs:
            raise ValueError(f'{yaws_ref.size} reference headings for {num_refs} references')
    query_positions = np.stack([np.asarray(o.position, dtype=np.float64).reshape(-1)
                                for o in outcomes])
    if query_positions.shape[1] != refs.shape[1]:
        raise ValueError(f'query positions have {query_positions.shape[1]} coordinates, '
                         f'reference positions {refs.shape[1]}')

    if positives is None:
        gt = positives_within(query_positions, refs, radius)
    else:
        if len(positives) != len(outcomes):
            raise ValueError(f'{len(positives)} positive sets for {len(outcomes)} queries')
        # recall_at_n's np.isin needs arrays: a Python set would match nothing.
        gt = [np.asarray(sorted(int(k) for k in p), dtype=np.int64) for p in positives]

    ranked = [_check_ranking(o.ranked, num_refs, 'ranked', i) for i, o in enumerate(outcomes)]
    ns = tuple(int(n) for n in ns)
    report: Dict[str, Any] = {
        'queries': len(outcomes),
        'answered': sum(1 for r in ranked if r),
        'radius_m': float(radius) if positives is None else None,
        'recall': recall_at_n(ranked, gt, ns),
    }
    if all(o.global_ranked is not None for o in outcomes):
        global_ranked = [_check_ranking(o.global_ranked, num_refs, 'global_ranked', i)
                         for i, o in enumerate(outcomes)]
        report['recall_global'] = recall_at_n(global_ranked, gt, ns)
    names = [k for k in STAGES if any(k in o.rankings for o in outcomes)]
    names += sorted({k for o in outcomes for k in o.rankings} - set(names))
    report['stages'] = {name: {'recall': recall_at_n(
        [_check_ranking(o.rankings.get(name, []), num_refs, name, i)
         for i, o in enumerate(outcomes)], gt, ns)} for name in names}

    answered = np.array([bool(r) for r in ranked])
    right = np.array([bool(r) and r[0] in set(p.tolist()) for r, p in zip(ranked, gt)])
    confidence = np.array([np.nan if o.confidence is None else float(o.confidence)
                           for o in outcomes])

    per_query = []
    errors, heading_errors = [], []
    for o, r, ok, q in zip(outcomes, ranked, right, query_positions):
        best = r[0] if r else None
        error = heading = None
        if best is not None:
            error = float(np.linalg.norm(refs[best] - q))
            errors.append(error)
            if yaws_ref is not None and o.yaw is not None and math.isfinite(o.yaw):
                heading = _heading_error_deg(o.yaw, yaws_ref[best])
                heading_errors.append(heading)
        per_query.append({
            'stamp': float(o.stamp),
            'best': best,
            'correct': bool(ok),
            'error_m': error,
            'heading_error_deg': heading,
            'confidence': float(o.confidence) if o.confidence is not None else None,
            'latency_ms': None if o.latency_ms is None else float(o.latency_ms),
        })

    error_keys = ('median', 'mean', 'p95', 'max')
    report['position_error_m'] = _stats(errors, error_keys)
    report['heading_error_deg'] = _stats(heading_errors, error_keys)
    latencies = [o.latency_ms for o in outcomes
                 if o.latency_ms is not None and math.isfinite(o.latency_ms)]
    report['latency_ms'] = _stats(latencies, ('p50', 'p95', 'mean', 'max'))
    stages: Dict[str, List[float]] = {}
    for o in outcomes:
        for stage, ms in o.stage_ms.items():
            if ms is not None and math.isfinite(ms):
                stages.setdefault(str(stage), []).append(float(ms))
    report['stage_ms'] = {stage: _stats(v, ('p50', 'p95')) for stage, v in sorted(stages.items())}
    kinds: Dict[str, List[float]] = {}
    for o in outcomes:
        for kind, n in o.rerank_bytes.items():
            kinds.setdefault(str(kind), []).append(n / 1e6)
    report['rerank_mb'] = {kind: _stats(v, ('mean', 'p50', 'max'))
                           for kind, v in sorted(kinds.items())}

    scored = answered & np.isfinite(confidence)
    right_conf = confidence[scored & right]
    wrong_conf = confidence[scored & ~right]
    accepted = (recall_at_full_precision(confidence[scored], right[scored]) * scored.sum()
                if scored.any() else 0.0)
    report['confidence'] = {
        'auc': roc_auc(confidence[scored], right[scored]),
        'ece': (expected_calibration_error(np.clip(confidence[scored], 0.0, 1.0),
                                           right[scored]) if scored.any() else None),
        'recall_at_full_precision': float(accepted / len(outcomes)),
        'right_mean': float(right_conf.mean()) if right_conf.size else None,
        'wrong_mean': float(wrong_conf.mean()) if wrong_conf.size else None,
        'pr_curve': _pr_curve(confidence, answered, right, sum(1 for p in gt if len(p))),
    }
    report['per_query'] = per_query
    return report


def side_by_side(report: Dict[str, Any], single: str,
                 sequence: Optional[Dict[str, Any]] = None) -> Dict[str, Dict[str, Any]]:
    """Rows of :data:`STAGES` that the reports have: recall@N and confidence measures.

    report: :func:`evaluate` of the single-frame answers, whose ranker is ``single`` (a
    key of :data:`STAGES`): that row takes the answers' own recall and confidence (the
    other rankers have rankings only, in ``report['stages']``). sequence: the
    :func:`evaluate` report of the sequence filter's answers, if any. Each row:
    {'recall': {N: v}, 'auc', 'ece', 'recall_at_full_precision' (None without a
    confidence), 'answer': True for the single-frame answer's row}.
    """
    def row(recall, conf=None, answer=False):
        conf = conf or {}
        return {'recall': dict(recall), 'auc': conf.get('auc'), 'ece': conf.get('ece'),
                'recall_at_full_precision': conf.get('recall_at_full_precision'),
                'answer': answer}

    rows = {}
    stages = report.get('stages') or {}
    for key in STAGES:
        if key == single:
            rows[key] = row(report['recall'], report['confidence'], True)
        elif key == 'sequence' and sequence is not None:
            rows[key] = row(sequence['recall'], sequence['confidence'])
        elif key in stages:
            rows[key] = row(stages[key]['recall'])
    return rows


def _jsonable(value: Any) -> Any:
    """Return value with nan/inf as None, numpy scalars as Python and keys as strings.

    String-keyed dictionaries come out sorted by key; others (recall's N) in numeric order.
    """
    if isinstance(value, dict):
        items = list(value.items())
        if all(isinstance(k, str) for k in value):
            items.sort(key=lambda kv: kv[0])
        else:
            items.sort(key=lambda kv: (float(kv[0]) if _is_number(kv[0]) else math.inf,
                                       str(kv[0])))
        return {str(k): _jsonable(v) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _is_number(key: Any) -> bool:
    try:
        float(key)
    except (TypeError, ValueError):
        return False
    return True


def write_report(report: Dict[str, Any], path: Path) -> Path:
    """Write the report as JSON (nan as null, sorted keys, recall in N order); return path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(_jsonable(report), f, indent=2, allow_nan=False)
        f.write('\n')
    return path


def _by_n(table: Dict[Any, float]) -> List[tuple]:
    """Return (N, value) pairs of a recall table in N order (keys int, or str from JSON)."""
    return sorted(((int(n), v) for n, v in table.items()), key=lambda nv: nv[0])


def _fmt(value: Optional[float], spec: str = '.3f') -> str:
    return '-' if value is None or not math.isfinite(value) else format(value, spec)


def format_summary(report: Dict[str, Any]) -> str:
    """Return a short human-readable table: recall@N, errors, latency and confidence AUC."""
    lines = []
    radius = report.get('radius_m')
    truth = f'within {radius:g} m' if radius is not None else 'given positives'
    lines.append(f"queries {report['queries']}, answered {report['answered']}, "
                 f'ground truth {truth}')
    recall = _by_n(report['recall'])
    lines.append('recall      ' + '  '.join(f'R@{n} {_fmt(v)}' for n, v in recall))
    if 'recall_global' in report:
        lines.append('global only ' + '  '.join(
            f'R@{n} {_fmt(v)}' for n, v in _by_n(report['recall_global'])))
    for key, label, unit in (('position_error_m', 'position error', 'm'),
                             ('heading_error_deg', 'heading error', 'deg')):
        s = report.get(key)
        if s:
            lines.append(f'{label} ({unit}): median {_fmt(s["median"], ".2f")}  '
                         f'mean {_fmt(s["mean"], ".2f")}  p95 {_fmt(s["p95"], ".2f")}  '
                         f'max {_fmt(s["max"], ".2f")}')
    lat = report.get('latency_ms')
    if lat:
        lines.append(f'latency (ms): p50 {_fmt(lat["p50"], ".1f")}  '
                     f'p95 {_fmt(lat["p95"], ".1f")}  mean {_fmt(lat["mean"], ".1f")}  '
                     f'max {_fmt(lat["max"], ".1f")}')
    stages = report.get('stage_ms') or {}
    if stages:
        lines.append('stages p50/p95 (ms): ' + ', '.join(
            f'{name} {_fmt(s["p50"], ".1f")}/{_fmt(s["p95"], ".1f")}'
            for name, s in stages.items()))
    mb = report.get('rerank_mb') or {}
    if mb:
        lines.append('rerank MB per query, mean/max: ' + ', '.join(
            f'{kind} {_fmt(s["mean"], ".2f")}/{_fmt(s["max"], ".2f")}'
            for kind, s in mb.items()))
    conf = report.get('confidence') or {}
    lines.append(f'confidence AUC {_fmt(conf.get("auc"))}  '
                 f'(right mean {_fmt(conf.get("right_mean"))}, '
                 f'wrong mean {_fmt(conf.get("wrong_mean"))})')
    if report.get('side_by_side'):
        lines.append(format_side_by_side(report['side_by_side'],
                                         report.get('sequence_motion')))
    return '\n'.join(lines)


def format_side_by_side(rows: Dict[str, Dict[str, Any]], motion: Optional[str] = None) -> str:
    """Return the :func:`side_by_side` rows as a table (recall@N, confidence measures)."""
    ns = sorted({int(n) for r in rows.values() for n in r['recall']})
    head = (f'{"":24s}' + ''.join(f'{"R@" + str(n):>7s}' for n in ns)
            + f'{"AUC":>7s}{"ECE":>7s}{"R@100%P":>9s}')
    lines = ['stage by stage (same frames; AUC, ECE: the confidence; R@100%P: recall at '
             '100% precision)', head]
    answer = '~/match' if 'sequence' in rows else '~/match, ~/pose'
    for key, r in rows.items():
        label = STAGES.get(key, key)
        if key == 'sequence' and motion:
            label = f'sequence ({motion})'
        recall = {int(n): v for n, v in r['recall'].items()}
        lines.append(f'{label:24s}' + ''.join(f'{_fmt(recall.get(n)):>7s}' for n in ns)
                     + f'{_fmt(r["auc"]):>7s}{_fmt(r["ece"]):>7s}'
                     + f'{_fmt(r["recall_at_full_precision"]):>9s}'
                     + (f'  <- {answer}' if r.get('answer') else
                        '  <- ~/pose' if key == 'sequence' else ''))
    return '\n'.join(lines)


def _save(fig: Any, path: Path) -> Path:
    """Render a matplotlib Figure with the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=PLOT_DPI, format='png')
    return path


def _new_figure(title: str, name: str, ncols: int = 1) -> tuple:
    from matplotlib.figure import Figure
    fig = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI, layout='constrained')
    axes = fig.subplots(1, ncols)
    fig.suptitle(f'{title}: {name}' if title else name)
    return fig, axes


Answers = Tuple[Dict[str, Any], Sequence[QueryOutcome]]


def trajectory_figure(report: Dict[str, Any], outcomes: Sequence[QueryOutcome],
                      ref_positions: np.ndarray, title: str = '',
                      convention: str = 'z-up', sequence: Optional[Answers] = None) -> Any:
    """Return the trajectory plot (a matplotlib Figure) of the ground plane.

    ref_positions: [N, 2 or 3] and the outcomes' positions are z-up (ground plane x-y;
    camera-convention poses go through :func:`~.poses.to_z_up` first); convention names
    the axes (:data:`GROUND_AXES`). The map in grey, query ground truth green when right
    and red when wrong, hollow when unanswered, a thin line to the chosen reference.
    sequence: (report, outcomes) of the sequence filter's answers to the same queries,
    drawn in a second panel beside the single-frame answers.
    """
    if convention not in GROUND_AXES:
        raise ValueError(f'unknown pose convention {convention!r}: use one of '
                         f'{", ".join(GROUND_AXES)}')
    panels = [(report, outcomes, 'single frame')]
    if sequence is not None:
        panels.append((*sequence, 'sequence filter'))
    for rep, outs, _ in panels:
        if len(rep['per_query']) != len(outs):
            raise ValueError(f'report has {len(rep["per_query"])} queries, {len(outs)} '
                             'outcomes given')
    refs = np.asarray(ref_positions, dtype=np.float64)
    fig, axes = _new_figure(title, 'trajectory', ncols=len(panels))
    axes = np.atleast_1d(axes)
    xlabel, ylabel, plane = GROUND_AXES[convention]
    for ax, (rep, outs, name) in zip(axes, panels):
        _draw_answers(ax, rep['per_query'], outs, refs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(plane if len(panels) == 1 else f'{name}: {plane}', fontsize='medium')
        ax.set_aspect('equal', adjustable='datalim')
        ax.legend(loc='best', fontsize='small')
    return fig


def _draw_answers(ax: Any, per_query: Sequence[Dict[str, Any]],
                  outcomes: Sequence[QueryOutcome], refs: np.ndarray) -> None:
    """Draw the map and each query's answer (see :func:`trajectory_figure`) on ``ax``."""
    ax.plot(refs[:, 0], refs[:, 1], '-', color='0.75', lw=1.0, zorder=1)
    ax.plot(refs[:, 0], refs[:, 1], '.', color='0.55', ms=3, label='map', zorder=1)
    for label, want_right, face in (('right', True, True), ('wrong', False, True),
                                    ('no answer', False, False)):
        sel = [i for i, q in enumerate(per_query)
               if q['correct'] == want_right and (q['best'] is not None) == face]
        if not sel:
            continue
        pts = np.stack([np.asarray(outcomes[i].position, dtype=np.float64)[:2] for i in sel])
        colour = _RIGHT_COLOUR if want_right else _WRONG_COLOUR
        ax.scatter(pts[:, 0], pts[:, 1], s=14, zorder=3, label=label,
                   c=colour if face else 'none', edgecolors=colour)
        for i, p in zip(sel, pts):
            best = per_query[i]['best']
            if best is not None:
                ax.plot([p[0], refs[best, 0]], [p[1], refs[best, 1]], '-', color=colour,
                        lw=0.5, alpha=0.7, zorder=2)


def write_plots(report: Dict[str, Any], outcomes: Sequence[QueryOutcome],
                ref_positions: np.ndarray, out_dir: Path, title: str = '',
                convention: str = 'z-up', sequence: Optional[Answers] = None) -> List[Path]:
    """Write the report's PNG plots (each PLOT_SIZE at PLOT_DPI) into out_dir.

    report: from :func:`evaluate` on the same outcomes ([M]); ref_positions: [N, 2 or 3],
    z-up like the outcomes' positions; convention: the poses' own, naming the plot's axes.
    Plots: trajectory.png (:func:`trajectory_figure`; with ``sequence``, (report,
    outcomes) of the sequence filter's answers, beside the single-frame ones),
    recall_at_n.png (with the global-only curve, the other rankers' and the sequence
    filter's when present), confidence_hist.png (right and wrong answers) and
    precision_recall.png (the PR curve, and both against the threshold). Uses
    matplotlib's Agg canvas directly: no pyplot, no change to the global backend.
    Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = list(outcomes)
    per_query = report['per_query']
    written = [_save(trajectory_figure(report, outcomes, ref_positions, title, convention,
                                       sequence), out_dir / 'trajectory.png')]

    fig, ax = _new_figure(title, 'recall@N')
    stages = report.get('stages') or {}
    curves = [(report['recall'], 'single frame (~/match)' if stages else 'reranked', 'o-')]
    if 'recall_global' in report and 'global' not in stages:
        curves.append((report['recall_global'], 'global only', 's--'))
    curves += [(stages[k]['recall'], STAGES.get(k, k), '--') for k in stages]
    if sequence is not None:
        curves.append((sequence[0]['recall'], STAGES['sequence'], 'D-'))
    for table, label, style in curves:
        pairs = _by_n(table)
        ax.plot([n for n, _ in pairs], [np.nan if v is None else v for _, v in pairs],
                style, label=label)
    ax.set_xscale('log')
    ax.set_xlabel('N')
    ax.set_ylabel('recall@N')
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc='lower right')
    written.append(_save(fig, out_dir / 'recall_at_n.png'))

    fig, ax = _new_figure(title, 'confidence')
    conf = np.array([np.nan if q['confidence'] is None else q['confidence'] for q in per_query],
                    dtype=np.float64)
    answered = np.array([q['best'] is not None for q in per_query])
    right = np.array([q['correct'] for q in per_query])
    ok = answered & np.isfinite(conf)
    bins = np.linspace(0.0, 1.0, 21)
    for sel, label, colour in ((ok & right, 'right', _RIGHT_COLOUR),
                               (ok & ~right, 'wrong', _WRONG_COLOUR)):
        ax.hist(np.clip(conf[sel], 0.0, 1.0), bins=bins, alpha=0.6, color=colour,
                label=f'{label} ({int(sel.sum())})')
    ax.set_xlabel('confidence')
    ax.set_ylabel('queries')
    ax.legend(loc='upper center')
    written.append(_save(fig, out_dir / 'confidence_hist.png'))

    fig, (ax_pr, ax_t) = _new_figure(title, 'precision / recall', ncols=2)
    curve = report['confidence']['pr_curve']
    t = np.array([p['threshold'] for p in curve], dtype=np.float64)
    precision = np.array([np.nan if p['precision'] is None else p['precision'] for p in curve],
                         dtype=np.float64)
    recall = np.array([np.nan if p['recall'] is None else p['recall'] for p in curve],
                      dtype=np.float64)
    ax_pr.plot(recall, precision, 'o-', ms=3)
    ax_pr.set_xlabel('recall')
    ax_pr.set_ylabel('precision')
    ax_pr.set_xlim(-0.02, 1.02)
    ax_pr.set_ylim(-0.02, 1.02)
    ax_pr.grid(True, alpha=0.3)
    ax_t.plot(t, precision, '-', drawstyle='steps-pre', label='precision')
    ax_t.plot(t, recall, '-', drawstyle='steps-pre', label='recall')
    ax_t.set_xlabel('confidence threshold')
    ax_t.set_xlim(0.0, 1.0)
    ax_t.set_ylim(-0.02, 1.02)
    ax_t.grid(True, alpha=0.3)
    ax_t.legend(loc='best')
    written.append(_save(fig, out_dir / 'precision_recall.png'))
    return written
