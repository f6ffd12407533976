/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * Exact mutual nearest neighbours from a bfloat16 similarity screen.
 *
 * Python (core/screened_mnn.py) computes sim = bf16(db) @ bf16(q)^T with a bf16 GEMM
 * (AMX: ~4x the fp32 rate), fp32 accumulation and a bf16 result. Every entry is then
 * within in_err + out_rel |s~| of the exact dot product db_j . q_i (input rounding and
 * accumulation, then the bf16 output rounding), so a row's exact argmax is among the
 * entries within 2E of the row's screened maximum (see window_threshold; likewise per
 * column). One pass over sim finds per row and column the maximum, its first index and
 * the runner-up; a row or column whose runner-up is more than 2E below its maximum is
 * decided by the screen. The rest are decided by exact dot products in float64 over
 * their window only, and only where the outcome can change the mutual match.
 *
 * Result: match[c, j] = i when i is row j's exact argmax and j is column i's exact
 * argmax (ties: lowest index, as torch.argmax), else -1. Compiled on first use by
 * core/native/__init__.py (with OpenMP when the compiler has it); no Python headers
 * needed (ctypes).
 */
#ifndef __AVX512F__
#error "the screened matcher needs AVX-512 (CPUs with bf16 matrix units have it)"
#endif
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* 16 floats from float16 or float32, masked (zeros outside the mask). */
static inline __m512 load16(const void *base, int is_half, int64_t index, __mmask16 m) {
  if (is_half)
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + index));
  return _mm512_maskz_loadu_ps(m, (const float *)base + index);
}

/* bf16 (round to nearest even, finite input) of 16 floats, as 32-bit lanes (low half 0). */
static inline __m512i round_bf16(__m512 x) {
  __m512i u = _mm512_castps_si512(x);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  return _mm512_and_si512(u, _mm512_set1_epi32((int)0xFFFF0000u));
}

static void to_bf16_rows(const void *src, int is_half, int64_t n, int64_t d, uint16_t *dst,
                         float *norm, float *err) {
  for (int64_t r = 0; r < n; ++r) {
    __m512 nn = _mm512_setzero_ps(), ee = _mm512_setzero_ps();
    for (int64_t k = 0; k < d; k += 16) {
      __mmask16 m = tail_mask(d - k);
      __m512 x = load16(src, is_half, r * d + k, m);
      __m512i b = round_bf16(x);
      __m512 e = _mm512_sub_ps(x, _mm512_castsi512_ps(b));     /* exact (Sterbenz) */
      nn = _mm512_fmadd_ps(x, x, nn);
      ee = _mm512_fmadd_ps(e, e, ee);
      _mm256_mask_storeu_epi16(dst + r * d + k, m,
                               _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
    }
    norm[r] = sqrtf(_mm512_reduce_add_ps(nn)) * 1.001f;
    err[r] = sqrtf(_mm512_reduce_add_ps(ee)) * 1.001f;
  }
}

/* n_blocks blocks (src[b]: n rows of d values, float16 if is_half, else float32) to bf16
 * (RNE) in dst [n_blocks * n, d]; per row the norm of the value and of its rounding error
 * (float sums, rounded up by 1e-3: far more than float's summation error for d <= 65536).
 * Blocks are candidates read in place from a patch store (no gather copy). */
void pnv_to_bf16(const void *const *blocks, int is_half, int64_t n_blocks, int64_t n,
                 int64_t d, uint16_t *dst, float *norm, float *err) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n_blocks; ++b)
    to_bf16_rows(blocks[b], is_half, n, d, dst + b * n * d, norm + b * n, err + b * n);
}

/* Exact dot product of db row (float16/float32) and query row (float32) in float64. */
static double exact_dot(const void *db, int is_half, int64_t row, const float *q, int64_t d) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t k = 0; k < d; k += 16) {
    __mmask16 m = tail_mask(d - k);
    __m512 x = load16(db, is_half, row * d + k, m);
    __m512 y = _mm512_maskz_loadu_ps(m, q + k);
    lo = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)),
                         _mm512_cvtps_pd(_mm512_castps512_ps256(y)), lo);
    hi = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                             _mm512_castps_pd(x), 1))),
                         _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                             _mm512_castps_pd(y), 1))), hi);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

typedef struct {
  const uint16_t *sim;   /* [pd, ld] of this candidate (pq columns used) */
  const void *db;        /* [pd, d] of this candidate */
  int is_half;
  const float *q;        /* [pq, d] */
  int64_t pd, pq, ld, d;
  float *rthr, *cthr;    /* window thresholds: rmax - 2E_row, cmax - 2E_col */
  uint8_t *need;         /* per column: 1 when its exact argmax is needed */
  int32_t *col_arg;      /* per needed column: exact argmax row (exact_cols) */
  double *col_best;      /* per needed column: its exact maximum (exact_cols) */
  int64_t *counts;       /* rows refined, columns refined, exact dot products */
} Candidate;

/* 16 screened similarities of a row as floats (-inf outside the mask). */
static inline __m512 sim16(const uint16_t *row, int64_t i, __mmask16 m) {
  __m512i b = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + i));
  return _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), m,
                            _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)));
}

/* Exact argmax over row j's window (entries >= rthr[j]). */
static int64_t exact_row(const Candidate *c, int64_t j) {
  const uint16_t *row = c->sim + j * c->ld;
  const __m512 thr = _mm512_set1_ps(c->rthr[j]);
  double best = -INFINITY;
  int64_t arg = -1;
  for (int64_t i0 = 0; i0 < c->pq; i0 += 16) {
    __mmask16 m = _mm512_cmp_ps_mask(sim16(row, i0, tail_mask(c->pq - i0)), thr, _CMP_GE_OQ);
    while (m) {
      int64_t i = i0 + __builtin_ctz(m);
      m &= (__mmask16)(m - 1);
      double v = exact_dot(c->db, c->is_half, j, c->q + i * c->d, c->d);
      c->counts[2] += 1;
      if (v > best) { best = v; arg = i; }
    }
  }
  c->counts[0] += 1;
  return arg;
}

/* Whether row j has an entry in both its own window and its column's window. */
static int may_be_mutual(const Candidate *c, int64_t j) {
  const uint16_t *row = c->sim + j * c->ld;
  const __m512 thr = _mm512_set1_ps(c->rthr[j]);
  for (int64_t i = 0; i < c->pq; i += 16) {
    __mmask16 m = tail_mask(c->pq - i);
    __m512 v = sim16(row, i, m);
    if (_mm512_cmp_ps_mask(v, thr, _CMP_GE_OQ) &
        _mm512_cmp_ps_mask(v, _mm512_maskz_loadu_ps(m, c->cthr + i), _CMP_GE_OQ))
      return 1;
  }
  return 0;
}

/* Index of the first entry equal to mx in a row of n screened similarities. */
static int32_t first_index_of(const uint16_t *row, int64_t n, float mx) {
  const __m512 target = _mm512_set1_ps(mx);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = _mm512_cmp_ps_mask(sim16(row, i, tail_mask(n - i)), target, _CMP_EQ_OQ);
    if (m) return (int32_t)(i + __builtin_ctz(m));
  }
  return 0;
}

/* Exact argmax of every needed column over its window (entries >= cthr[i]), in one
 * row-major pass: walking a column of sim touches one cache line per row, which cost far
 * more than the dot products. Rows go in increasing order and a later row must be strictly
 * larger, so ties keep the first row (as torch.argmax). Stops once more than max_dots
 * exact products were spent on this candidate; returns 0 then, else 1. */
static int exact_cols(const Candidate *c, int64_t dots_before, int64_t max_dots) {
  int64_t needed = 0;
  for (int64_t i = 0; i < c->pq; ++i) {
    c->col_best[i] = -INFINITY;
    c->col_arg[i] = -1;
    needed += c->need[i];
  }
  if (!needed) return 1;
  c->counts[1] += needed;
  for (int64_t j = 0; j < c->pd; ++j) {
    const uint16_t *row = c->sim + j * c->ld;
    for (int64_t i0 = 0; i0 < c->pq; i0 += 16) {
      const __mmask16 t = tail_mask(c->pq - i0);
      const __mmask16 want = _mm512_cmpneq_epi32_mask(
          _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(t, c->need + i0)), _mm512_setzero_si512());
      if (!want) continue;
      __mmask16 m = want & _mm512_cmp_ps_mask(sim16(row, i0, t),
                                              _mm512_maskz_loadu_ps(t, c->cthr + i0),
                                              _CMP_GE_OQ);
      while (m) {
        const int64_t i = i0 + __builtin_ctz(m);
        m &= (__mmask16)(m - 1);
        const double v = exact_dot(c->db, c->is_half, j, c->q + i * c->d, c->d);
        c->counts[2] += 1;
        if (v > c->col_best[i]) { c->col_best[i] = v; c->col_arg[i] = (int32_t)j; }
      }
    }
    if (c->counts[2] - dots_before > max_dots) return 0;
  }
  return 1;
}

/* 16 screened similarities of a row as floats (no mask: a full block). */
static inline __m512 sim16_full(const uint16_t *row, int64_t i) {
  __m512i b = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(row + i)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
}

/* Fold 16 similarities v of row j (-inf where absent) into the column state (max, first
 * argmax by strict >, runner-up) and the row's lane maxima and runners-up. */
static inline __attribute__((always_inline)) void update(
    __m512 v, __m512i j, __m512 *cm, __m512 *cs, __m512i *ca, __m512 *rm, __m512 *rs) {
  const __mmask16 gt = _mm512_cmp_ps_mask(v, *cm, _CMP_GT_OQ);
  *cs = _mm512_mask_mov_ps(_mm512_max_ps(v, *cs), gt, *cm);
  *cm = _mm512_mask_mov_ps(*cm, gt, v);
  *ca = _mm512_mask_mov_epi32(*ca, gt, j);
  *rs = _mm512_max_ps(*rs, _mm512_min_ps(*rm, v));
  *rm = _mm512_max_ps(*rm, v);
}

/* Fold 16 columns [i, i + 16) of rows j, j + 1 (two = 0: row j only; m: the columns
 * present; ld: the row stride) into the column state arrays and the two rows' lane
 * statistics. */
static inline __attribute__((always_inline)) void fold_block(
    const uint16_t *row0, int64_t ld, int64_t j, int two, int64_t i, __mmask16 m, int full,
    float *cmax, float *c2, int32_t *carg, __m512 *rm, __m512 *rs) {
  __m512 cm = _mm512_maskz_loadu_ps(m, cmax + i), cs = _mm512_maskz_loadu_ps(m, c2 + i);
  __m512i ca = _mm512_maskz_loadu_epi32(m, carg + i);
  update(full ? sim16_full(row0, i) : sim16(row0, i, m), _mm512_set1_epi32((int)j), &cm, &cs,
         &ca, &rm[0], &rs[0]);
  if (two)
    update(full ? sim16_full(row0 + ld, i) : sim16(row0 + ld, i, m),
           _mm512_set1_epi32((int)j + 1), &cm, &cs, &ca, &rm[1], &rs[1]);
  _mm512_mask_storeu_ps(cmax + i, m, cm);
  _mm512_mask_storeu_ps(c2 + i, m, cs);
  _mm512_mask_storeu_epi32(carg + i, m, ca);
}

/* Rows j (and j + 1 when two) through all pq columns. */
static inline __attribute__((always_inline)) void fold_rows(
    const uint16_t *row0, int64_t pq, int64_t ld, int64_t j, int two, float *cmax, float *c2,
    int32_t *carg, __m512 *rm, __m512 *rs) {
  int64_t i = 0;
  for (; i + 16 <= pq; i += 16)
    fold_block(row0, ld, j, two, i, (__mmask16)0xFFFF, 1, cmax, c2, carg, rm, rs);
  if (i < pq) fold_block(row0, ld, j, two, i, tail_mask(pq - i), 0, cmax, c2, carg, rm, rs);
}

/* Scratch of one thread: per row and per column statistics of one candidate. */
typedef struct {
  float *rmax, *r2, *rthr, *cmax, *c2, *cthr;
  int32_t *rarg, *carg, *col_arg;
  double *col_best;
  uint8_t *need;
} Scratch;

static void scratch_free(Scratch *w) {
  free(w->rmax); free(w->r2); free(w->rthr); free(w->cmax); free(w->c2); free(w->cthr);
  free(w->rarg); free(w->carg); free(w->col_arg); free(w->col_best); free(w->need);
}

static int scratch_alloc(Scratch *w, int64_t pd, int64_t pq) {
  w->rmax = malloc(sizeof(float) * pd); w->r2 = malloc(sizeof(float) * pd);
  w->rthr = malloc(sizeof(float) * pd); w->rarg = malloc(sizeof(int32_t) * pd);
  w->cmax = malloc(sizeof(float) * pq); w->c2 = malloc(sizeof(float) * pq);
  w->cthr = malloc(sizeof(float) * pq); w->carg = malloc(sizeof(int32_t) * pq);
  w->col_arg = malloc(sizeof(int32_t) * pq); w->col_best = malloc(sizeof(double) * pq);
  w->need = malloc(pq);
  return w->rmax && w->r2 && w->rthr && w->rarg && w->cmax && w->c2 && w->cthr && w->carg &&
         w->col_arg && w->col_best && w->need;
}

/* Bounds shared by all entries: see pnv_mutual_nn. */
typedef struct {
  double gamma, out_rel, nq_max, eq_max;
} Bounds;

/* Window half-width E of a row or column whose screened maximum is mx and whose entries
 * carry input error at most in_err: every entry s~ of it is within in_err + out_rel |s~|
 * of the exact value, so entries below mx - 2E, with E = (in_err + out_rel |mx|) /
 * (1 - out_rel), are below the exact value of the maximum's entry. */
static inline float window_threshold(float mx, double in_err, double out_rel) {
  const double e = (in_err + out_rel * fabs((double)mx)) / (1.0 - out_rel);
  return (float)(mx - 2.0 * e * 1.001 - 1e-7);
}

/* Mutual matches of one candidate (see pnv_mutual_nn). Returns 0, or 1 when it needs more
 * than max_dots exact products (out undefined then). */
static int mutual_one(const uint16_t *s, const void *db, int is_half, const float *q,
                      const float *ndc, const float *edc, const float *nq, const float *eq,
                      int64_t pd, int64_t pq, int64_t ld, int64_t d, int64_t max_dots,
                      const Bounds *b,
                      Scratch *w, int64_t *out, int64_t *counts) {
  for (int64_t i = 0; i < pq; ++i) {
    w->cmax[i] = -INFINITY; w->c2[i] = -INFINITY; w->carg[i] = 0; w->need[i] = 0;
  }
  double nd_max = 0.0, ed_max = 0.0;
  /* one pass: per row max, first argmax and runner-up; per column the same. Rows two at a
   * time: the column state is loaded and stored once per pair */
  for (int64_t j = 0; j < pd; j += 2) {
    const int two = j + 1 < pd;
    __m512 rm[2], rs[2];
    rm[0] = rm[1] = rs[0] = rs[1] = _mm512_set1_ps(-INFINITY);
    if (two)
      fold_rows(s + j * ld, pq, ld, j, 1, w->cmax, w->c2, w->carg, rm, rs);
    else
      fold_rows(s + j * ld, pq, ld, j, 0, w->cmax, w->c2, w->carg, rm, rs);
    for (int r = 0; r <= two; ++r) {
      const int64_t jr = j + r;
      const float mx = _mm512_reduce_max_ps(rm[r]);
      /* runner-up: the best lane's second, or any other lane's maximum */
      const __mmask16 at_max = _mm512_cmp_ps_mask(rm[r], _mm512_set1_ps(mx), _CMP_EQ_OQ);
      const __mmask16 first = at_max & (__mmask16)(-(int)at_max);
      w->r2[jr] = _mm512_reduce_max_ps(_mm512_mask_mov_ps(rm[r], first, rs[r]));
      w->rmax[jr] = mx;
      w->rarg[jr] = first_index_of(s + jr * ld, pq, mx);
      const double ndj = ndc[jr] + edc[jr];
      const double in_err = edc[jr] * b->nq_max + ndj * b->eq_max
                            + b->gamma * ndj * (b->nq_max + b->eq_max);
      w->rthr[jr] = window_threshold(mx, in_err, b->out_rel);
      if (ndj > nd_max) nd_max = ndj;
      if (edc[jr] > ed_max) ed_max = edc[jr];
    }
  }
  for (int64_t i = 0; i < pq; ++i) {
    const double in_err = ed_max * nq[i] + nd_max * eq[i] + b->gamma * nd_max * (nq[i] + eq[i]);
    w->cthr[i] = window_threshold(w->cmax[i], in_err, b->out_rel);
  }
  Candidate c = {s, db, is_half, q, pd, pq, ld, d, w->rthr, w->cthr, w->need, w->col_arg,
                 w->col_best, counts};
  const int64_t dots_before = counts[2];
  for (int64_t j = 0; j < pd; ++j) {
    if (counts[2] - dots_before > max_dots) return 1;
    int64_t i;
    if (w->r2[j] < w->rthr[j]) {
      i = w->rarg[j];                             /* row decided by the screen */
    } else {
      /* can j be mutual at all? some window entry must also be in its column's window */
      if (!may_be_mutual(&c, j)) { out[j] = -1; continue; }
      i = exact_row(&c, j);
    }
    if (bf16_to_float(s[j * ld + i]) < w->cthr[i]) { out[j] = -1; continue; }
    if (w->c2[i] < w->cthr[i]) {
      out[j] = w->carg[i] == j ? i : -1;          /* column decided by the screen */
    } else {
      w->need[i] = 1;                             /* decided after exact_cols */
      out[j] = i;
    }
  }
  if (!exact_cols(&c, dots_before, max_dots)) return 1;
  for (int64_t j = 0; j < pd; ++j)
    if (out[j] >= 0 && w->need[out[j]] && w->col_arg[out[j]] != j) out[j] = -1;
  return 0;
}

/* Mutual nearest neighbours of n_cand candidates; see the file comment. Candidates run in
 * parallel on OpenMP threads (torch's own pool when loaded into a torch process).
 *
 * sim [n_cand, pd, ld] bf16 bits (columns pq..ld-1 unused: padding that lets the GEMM run
 * on whole tiles); db[cand]: [pd, d] float16/float32; q [pq, d] float32;
 * nd, ed [n_cand, pd] and nq, eq [pq]: norms and bf16 rounding-error norms (pnv_to_bf16).
 * match [n_cand, pd] out; counts [3] accumulates rows refined, columns refined, exact dots.
 * A candidate that needs more than max_dots exact dot products (a screen too coarse for
 * these descriptors, e.g. all nearly parallel) is abandoned: fallback[cand] = 1 and its
 * match row is undefined; the caller computes it another way.
 * Returns 0, or -1 when out of memory. */
int pnv_mutual_nn(const uint16_t *sim, const void *const *db, int is_half, const float *q,
                  const float *nd, const float *ed, const float *nq, const float *eq,
                  int64_t n_cand, int64_t pd, int64_t pq, int64_t ld, int64_t d,
                  int64_t max_dots, int64_t *match, int64_t *counts, uint8_t *fallback) {
  /* fp32 accumulation of d exact bf16 products: gamma_d, and the bf16 output rounding
   * |s~ - s| <= 2^-8 / (1 - 2^-8) |s~|; both with a little slack for float arithmetic */
  Bounds b = {(double)d * 0x1p-24 / (1.0 - (double)d * 0x1p-24) * 1.01,
              0x1p-8 / (1.0 - 0x1p-8) * 1.001, 0.0, 0.0};
  for (int64_t i = 0; i < pq; ++i) {
    if (nq[i] > b.nq_max) b.nq_max = nq[i];
    if (eq[i] > b.eq_max) b.eq_max = eq[i];
  }
  int failed = 0;
#pragma omp parallel
  {
    Scratch w;
    int64_t local[3] = {0, 0, 0};
    const int ok = scratch_alloc(&w, pd, pq);
    if (!ok) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(dynamic)
    for (int64_t cand = 0; cand < n_cand; ++cand) {
      if (!ok) continue;
      fallback[cand] = (uint8_t)mutual_one(sim + cand * pd * ld, db[cand], is_half, q,
                                           nd + cand * pd, ed + cand * pd, nq, eq, pd, pq, ld,
                                           d, max_dots, &b, &w, match + cand * pd, local);
    }
    scratch_free(&w);
#pragma omp critical
    for (int k = 0; k < 3; ++k) counts[k] += local[k];
  }
  return failed ? -1 : 0;
}
