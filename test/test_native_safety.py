# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Every matcher takes patches with NaN, Inf, huge, denormal or zero rows safely and alike.

The semantics (:mod:`patch_netvlad_ros.core.matching.candidate_blocks`): a row with a NaN, an
infinity or a value beyond float16's range takes no part; the matches are the mutual
nearest neighbours of the usable rows alone. The reference is a float64 brute force of
exactly that; every path (float32, the integer screen in both widths, the bf16 screen on
oneDNN's GEMM and fused on the AMX tiles, each where it runs) must equal it. The crash this
guards against (a NaN patch made the bf16 screen write before a heap block: 'double free
or corruption', exit 134) runs in a subprocess, so a regression fails a test instead of
killing pytest. On the corridor map: poisoned references lose only their own matches.
"""

import copy
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import unit
from patch_netvlad_ros.core import native
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.matching import int_screen, rerank, screened_mnn
from patch_netvlad_ros.core.matching.candidate_blocks import reads_in_place
from patch_netvlad_ros.core.matching.mutual_nn import USABLE_LIMIT, usable_rows

HERE = Path(__file__).resolve().parent


def brute_force_usable(query: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Mutual NN [C, Pd] of the usable rows of query [Pq, D] and db [C, Pd, D] (float64).

    Unusable rows (non-finite, or beyond USABLE_LIMIT) get -1 and are nobody's match;
    ties go to the lowest index, as torch.argmax.
    """
    q, x = query.astype(np.float64), db.astype(np.float64)
    ok_q = np.isfinite(q).all(-1) & (np.abs(q) <= USABLE_LIMIT).all(-1)
    ok_x = np.isfinite(x).all(-1) & (np.abs(x) <= USABLE_LIMIT).all(-1)
    sim = np.einsum('cjd,id->cji', np.where(ok_x[..., None], x, 0.0),
                    np.where(ok_q[:, None], q, 0.0))
    sim[~ok_x] = -np.inf
    sim[:, :, ~ok_q] = -np.inf
    if sim.shape[1] == 0 or sim.shape[2] == 0:
        return np.full(db.shape[:2], -1, dtype=np.int64)
    fw, bw = sim.argmax(2), sim.argmax(1)
    mutual = np.take_along_axis(bw, fw, 1) == np.arange(db.shape[1])
    return np.where(mutual & ok_x & ok_q[fw], fw, -1)


def _has_amx() -> bool:
    return screened_mnn.available() and native.amx()


#: Matcher name -> (query -> match(store, indices)), each where it runs here.
MATCHERS = {
    'float32': lambda q: lambda s, i: rerank.match_candidates(q, s, i, method='float32'),
    'int8': lambda q: int_screen.IntQuery(q, 8).match,
    'int16': lambda q: int_screen.IntQuery(q, 16).match,
    'bf16': lambda q: screened_mnn.ScreenedQuery(q, fused=False).match,
    'amx': lambda q: screened_mnn.ScreenedQuery(q, fused=True).match,
}
_HW = pytest.mark.hardware
_INT = pytest.mark.skipif(not int_screen.available(), reason='integer screen not built here: '
                          f'{native.unavailable_reason("int_mnn")}')
_BF16 = pytest.mark.skipif(not screened_mnn.available(),
                           reason='no bf16 units (or no C helper) here: the bf16 screen '
                                  'cannot run')
_AMX = pytest.mark.skipif(not _has_amx(), reason='no AMX tiles here: the fused screen '
                                                 'cannot run')
MATCHER_PARAMS = [pytest.param('float32'), pytest.param('int8', marks=[_HW, _INT]),
                  pytest.param('int16', marks=[_HW, _INT]),
                  pytest.param('bf16', marks=[_HW, _BF16]),
                  pytest.param('amx', marks=[_HW, _AMX])]


def _match(name: str, query: np.ndarray, store: np.ndarray, indices=None) -> np.ndarray:
    idx = range(len(store)) if indices is None else indices
    return np.asarray(MATCHERS[name](torch.from_numpy(query))(store, idx))


def _corpus(rng, pq=40, pd=36, d=64, c=4):
    """A query [pq, d] and candidates [c, pd, d] whose rows are near query rows."""
    q = unit(rng.standard_normal((pq, d)))
    db = unit(q[rng.integers(0, pq, (c, pd))] + 0.4 * rng.standard_normal((c, pd, d)))
    return q, db


#: Poisons: (value written, whether it is usable in float16, in float32)
POISONS = {'nan': np.nan, 'inf': np.inf, '-inf': -np.inf, 'float16-max': 65504.0,
           'huge': 1e38, 'past-float16': 65505.0}


@pytest.mark.parametrize('dtype', [np.float16, np.float32])
@pytest.mark.parametrize('poison', sorted(POISONS))
@pytest.mark.parametrize('name', MATCHER_PARAMS)
def test_poisoned_rows_match_as_the_usable_brute_force(rng, name, poison, dtype):
    # one value in some rows, whole rows, and two query rows: candidates' other rows match
    # exactly as if the poisoned ones were absent
    q, db = _corpus(rng)
    db = db.astype(dtype)
    value = POISONS[poison]
    with np.errstate(over='ignore'):          # float16 takes 1e38 and 65505 as inf, 65504
        db[0, 3, 5] = value
        db[1, :, 7] = value                   # every row of candidate 1
        db[2, 10:14] = value                  # four whole rows
    q = q.copy()
    q[[4, 21], 9] = value
    got = _match(name, q, db)
    want = brute_force_usable(q, db.astype(np.float32))
    np.testing.assert_array_equal(got, want)
    stored = db.astype(np.float32)[0, 3, 5]
    if not abs(stored) <= USABLE_LIMIT:
        assert got[0, 3] == -1 and (got[1] == -1).all() and (got[2, 10:14] == -1).all()
    if not abs(float(np.float32(value))) <= USABLE_LIMIT:
        assert not np.isin(got, [4, 21]).any()
        assert (got[3] >= 0).sum() >= 10       # the clean candidate still matches


@pytest.mark.parametrize('name', MATCHER_PARAMS)
def test_zero_and_denormal_rows(rng, name):
    # zero rows tie at exactly 0 everywhere (lowest index wins); rows scaled to float32's
    # denormal range: the screens and the brute force order their tiny similarities exactly,
    # float32 GEMMs underflow them to ties, so float32 is held to the other rows only
    q, db = _corpus(rng, pq=34, pd=40, d=96)
    db[:, 5] = 0.0
    db[0, 6] *= 1e-40
    db[1, 8] *= 1e-30
    q = q.copy()
    q[12] = 0.0
    got = _match(name, q, db)
    want = brute_force_usable(q, db)
    tiny = np.zeros(db.shape[:2], bool)
    tiny[0, 6] = tiny[1, 8] = True
    if name == 'float32':
        np.testing.assert_array_equal(got[~tiny], want[~tiny])
    else:
        np.testing.assert_array_equal(got, want)
    assert usable_rows(torch.from_numpy(db)).all()


@pytest.mark.parametrize('name', MATCHER_PARAMS)
def test_one_patch_one_candidate_no_candidates_nothing_usable(rng, name):
    d = 32
    q1 = unit(rng.standard_normal((1, d)))
    db1 = unit(rng.standard_normal((1, 1, d))).astype(np.float16)
    np.testing.assert_array_equal(_match(name, q1, db1), [[0]])      # P = 1: mutual
    q, db = _corpus(rng, pq=9, pd=7, d=d, c=3)
    assert _match(name, q, db, []).shape == (0, 7)                    # no candidates
    none = _match(name, np.zeros((0, d), np.float32), db)             # no query patches
    assert none.shape == (3, 7) and (none == -1).all()
    one = _match(name, q, db, [2])
    np.testing.assert_array_equal(one, brute_force_usable(q, db[2:3]))
    dead = db.copy()
    dead[...] = np.nan                                                # nothing usable
    assert (_match(name, q, dead) == -1).all()
    blind = q.copy()
    blind[:, 0] = np.inf                                              # no usable query row
    assert (_match(name, blind, db) == -1).all()
    lone = np.full_like(db, np.nan)
    lone[1, 4] = db[1, 4]                                             # one usable row
    got = _match(name, q, lone)
    assert (got[[0, 2]] == -1).all() and (got[1, np.arange(7) != 4] == -1).all()
    assert got[1, 4] == brute_force_usable(q, lone)[1, 4] >= 0


def test_unaligned_stores_are_gathered_not_read_in_place(rng):
    # a float16 view one byte into a buffer: the helpers read aligned elements only
    q, db = _corpus(rng, d=32)
    raw = np.zeros(db.astype(np.float16).nbytes + 1, np.uint8)
    odd = np.frombuffer(raw.data, dtype=np.float16, count=db.size, offset=1).reshape(db.shape)
    odd[...] = db
    assert not reads_in_place(odd)
    for name in ('float32', 'int8', 'bf16'):
        if (name == 'int8' and not int_screen.available()) or (
                name == 'bf16' and not screened_mnn.available()):
            continue
        np.testing.assert_array_equal(_match(name, q, odd),
                                      brute_force_usable(q, db.astype(np.float16)))


@_HW
@_AMX
def test_fused_screen_ignores_whole_padding_blocks(rng):
    # Pq = 20 pads to 64 columns: the last 32-column block lies wholly past Pq. Its mask
    # was 1 << (Pq - 32) (a negative shift: undefined; on x86 all lanes), so the padding's
    # zero similarities topped rows whose similarities are all negative: no matches at all
    for pq in (20, 30, 90):
        q = unit(np.abs(rng.standard_normal((pq, 64))))
        db = unit(-np.abs(rng.standard_normal((3, 25, 64))))
        got = _match('amx', q, db)
        want = brute_force_usable(q, db)
        np.testing.assert_array_equal(got, want)
        assert (want >= 0).sum() > 0


def test_integer_screen_refuses_dimensions_past_its_sums():
    if not int_screen.available():
        pytest.skip('integer screen not built here')
    with pytest.raises(ValueError, match='refused'):
        int_screen.IntQuery(torch.zeros(2, 65537), 8)


CRASH_REPRO = '''
import sys
import numpy as np
import torch
sys.path.insert(0, {test!r})
from test_native_safety import brute_force_usable, MATCHERS, _has_amx
from patch_netvlad_ros.core.matching import int_screen, screened_mnn
rng = np.random.default_rng(5)
names = ['float32'] + (['int8', 'int16'] if int_screen.available() else [])
names += (['bf16'] if screened_mnn.available() else []) + (['amx'] if _has_amx() else [])
for d in (64, 128):
    q = (rng.standard_normal((150, d)) / np.sqrt(d)).astype(np.float32)
    store = (q[rng.integers(0, 150, (30, 120))]
             + 0.3 * rng.standard_normal((30, 120, d)) / np.sqrt(d)).astype(np.float16)
    store[7, 40, 3] = np.nan          # the reported map: one NaN patch value
    store[11, :, 0] = np.inf
    store[19, 5] = np.nan
    want = brute_force_usable(q, store.astype(np.float32))
    for name in names:
        got = np.asarray(MATCHERS[name](torch.from_numpy(q))(store, range(30)))
        assert (got == want).all(), (name, d)
print('ok', ' '.join(names))
'''


def test_poisoned_map_does_not_crash_any_matcher():
    # in a fresh interpreter: heap corruption aborts the process (exit 134), which here is a
    # failed assertion with the process's own words
    proc = subprocess.run([sys.executable, '-c', CRASH_REPRO.format(test=str(HERE))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f'matchers crashed or disagreed (exit {proc.returncode}):\n'
                                  f'{proc.stdout}\n{proc.stderr[-3000:]}')
    assert proc.stdout.startswith('ok float32')


def _poison(corridor_map, indices, kind):
    """A copy of the map whose references ``indices`` hold NaN (whole) or Inf (some rows)."""
    patches = [np.array(p) for p in corridor_map.patches]
    for p in patches:
        for n, i in enumerate(indices):
            if kind == 'whole':
                p[i] = np.nan if n % 2 == 0 else np.inf
            else:
                p[i, ::3, n % p.shape[2]] = np.nan if n % 2 == 0 else -np.inf
    poisoned = copy.copy(corridor_map)       # same references and index, patches replaced
    poisoned.patches = patches
    return poisoned


RERANK_METHODS = [pytest.param('float32'), pytest.param('integer', marks=[_HW, _INT]),
                  pytest.param('screened', marks=[_HW, _BF16])]


@pytest.mark.parametrize('method', RERANK_METHODS)
def test_rerank_on_a_poisoned_corridor_map(corridor_map, corridor_query_descriptors, method):
    # the winner of each query poisoned whole, two others in a third of their rows: the
    # winner drops to a score of 0, the others keep scores of their usable rows, and every
    # untouched candidate keeps its raw score exactly (scores are per candidate)
    g, patches = corridor_query_descriptors
    cfg = corridor_map.config
    for qi in (0, 40, 90):
        cands = np.argsort(-(corridor_map.global_desc @ g[qi].numpy()))[:30]
        query = [p[qi] for p in patches]
        clean = rerank.rerank(query, corridor_map.patches, cands, cfg, mnn_method=method)
        winner = int(clean.order[0])
        partial = [int(clean.order[1]), int(clean.order[5])]
        bad = _poison(corridor_map, [cands[winner]], 'whole')
        bad = _poison(bad, [cands[j] for j in partial], 'rows')
        got = rerank.rerank(query, bad.patches, cands, cfg, mnn_method=method)
        assert int(got.order[0]) != winner
        assert (got.per_scale[winner] == 0).all()
        untouched = np.setdiff1d(np.arange(len(cands)), [winner, *partial])
        np.testing.assert_array_equal(got.per_scale[untouched], clean.per_scale[untouched])
        np.testing.assert_array_equal(np.argsort(-got.fused[untouched], kind='stable'),
                                      np.argsort(-clean.fused[untouched], kind='stable'))
        assert np.isfinite(got.fused).all() and np.isfinite(got.quality).all()


@pytest.mark.parametrize('ransac_method', ['opencv', 'batched'])
def test_ransac_scores_on_a_poisoned_corridor_map(corridor_map, corridor_query_descriptors,
                                                  ransac_method):
    g, patches = corridor_query_descriptors
    cfg = corridor_map.config.override(matcher='ransac')
    cands = np.argsort(-(corridor_map.global_desc @ g[10].numpy()))[:20]
    query = [p[10] for p in patches]
    clean = rerank.rerank(query, corridor_map.patches, cands, cfg,
                          ransac_method=ransac_method)
    winner = int(clean.order[0])
    bad = _poison(corridor_map, [cands[winner]], 'whole')
    got = rerank.rerank(query, bad.patches, cands, cfg, ransac_method=ransac_method)
    assert int(got.order[0]) != winner and (got.per_scale[winner] == 0).all()
    others = np.arange(len(cands)) != winner
    np.testing.assert_array_equal(got.per_scale[others], clean.per_scale[others])


def test_localizer_never_answers_a_poisoned_reference(corridor_map,
                                                      corridor_query_descriptors):
    g, patches = corridor_query_descriptors
    clean_loc = Localizer(corridor_map)
    for qi in (3, 60):
        query = [p[qi] for p in patches]
        clean = clean_loc.localize_descriptors(g[qi], query)
        bad = _poison(corridor_map, [clean.best_index], 'whole')
        got = Localizer(bad).localize_descriptors(g[qi], query)
        assert got.best_index != clean.best_index
        quality = {c.index: c.quality for c in got.candidates}
        assert quality[clean.best_index] == 0.0
        for c in clean.candidates:                     # per-candidate scores unchanged
            if c.index != clean.best_index:
                assert quality[c.index] == c.quality
