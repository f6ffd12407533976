/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * Exact mutual nearest neighbours from a bfloat16 similarity screen.
 *
 * Python (core/screened_mnn.py) computes sim = bf16(db) @ bf16(q)^T with a bf16 GEMM
 * (AMX: ~4x the fp32 rate), fp32 accumulation and a bf16 result. Every entry is then
 * within a rigorous bound E of the exact dot product db_j . q_i (see row_bound and
 * col_bound), so a row's exact argmax is among the entries within 2E of the row's
 * screened maximum (likewise per column). One pass over sim finds per row and column
 * the maximum, its first index, the runner-up and the largest magnitude; a row or
 * column whose runner-up is more than 2E below its maximum is decided by the screen.
 * The rest are decided by exact dot products in float64 over their window only, and
 * only where the outcome can change the mutual match.
 *
 * Result: match[c, j] = i when i is row j's exact argmax and j is column i's exact
 * argmax (ties: lowest index, as torch.argmax), else -1. Compiled on first use by
 * core/native.py; no Python headers needed (ctypes).
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

/* n rows of d values (float16 if is_half, else float32) to bf16 (RNE); per row the norm of
 * the value and of its rounding error (float sums, rounded up by 1e-3: far more than
 * float's summation error for d <= 65536). */
void pnv_to_bf16(const void *src, int is_half, int64_t n, int64_t d, uint16_t *dst,
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
  const uint16_t *sim;   /* [pd, pq] of this candidate */
  const void *db;        /* [pd, d] of this candidate */
  int is_half;
  const float *q;        /* [pq, d] */
  int64_t pd, pq, d;
  float *rthr, *cthr;    /* window thresholds: rmax - 2E_row, cmax - 2E_col */
  int32_t *bw_exact;     /* per column: exact argmax row, -2 = not computed yet */
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
  const uint16_t *row = c->sim + j * c->pq;
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
  const uint16_t *row = c->sim + j * c->pq;
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

/* Exact argmax over column i's window (entries >= cthr[i]); cached. */
static int64_t exact_col(const Candidate *c, int64_t i) {
  if (c->bw_exact[i] != -2) return c->bw_exact[i];
  double best = -INFINITY;
  int64_t arg = -1;
  for (int64_t j = 0; j < c->pd; ++j) {
    if (bf16_to_float(c->sim[j * c->pq + i]) < c->cthr[i]) continue;
    double v = exact_dot(c->db, c->is_half, j, c->q + i * c->d, c->d);
    c->counts[2] += 1;
    if (v > best) { best = v; arg = j; }
  }
  c->counts[1] += 1;
  c->bw_exact[i] = (int32_t)arg;
  return arg;
}

typedef struct {
  __m512 vmax, vsec, vabs;  /* per lane: top two and largest |s| of a row */
} RowStats;

static inline void row_stats_init(RowStats *r) {
  r->vmax = r->vsec = _mm512_set1_ps(-INFINITY);
  r->vabs = _mm512_setzero_ps();
}

/* Fold 16 similarities v of row j (-inf outside the row) into the column state (max, first
 * argmax by strict >, runner-up, largest |s|) and the row's lane statistics. */
static inline void update(__m512 v, __mmask16 m, __m512i j, __m512 *cm, __m512 *cs, __m512 *cb,
                          __m512i *ca, RowStats *r) {
  __m512 av = _mm512_abs_ps(_mm512_maskz_mov_ps(m, v));
  __mmask16 gt = _mm512_cmp_ps_mask(v, *cm, _CMP_GT_OQ);
  *cs = _mm512_mask_mov_ps(_mm512_max_ps(v, *cs), gt, *cm);
  *cm = _mm512_mask_mov_ps(*cm, gt, v);
  *ca = _mm512_mask_mov_epi32(*ca, gt, j);
  *cb = _mm512_max_ps(*cb, av);
  r->vsec = _mm512_max_ps(r->vsec, _mm512_min_ps(r->vmax, v));
  r->vmax = _mm512_max_ps(r->vmax, v);
  r->vabs = _mm512_max_ps(r->vabs, av);
}

/* Mutual nearest neighbours of n_cand candidates; see the file comment.
 *
 * sim [n_cand, pd, pq] bf16 bits; db [n_cand, pd, d] float16/float32; q [pq, d] float32;
 * nd, ed [n_cand, pd] and nq, eq [pq]: norms and bf16 rounding-error norms (pnv_to_bf16).
 * match [n_cand, pd] out; counts [3] accumulates rows refined, columns refined, exact dots.
 * A candidate that needs more than max_dots exact dot products (a screen too coarse for
 * these descriptors, e.g. all nearly parallel) is abandoned: fallback[cand] = 1 and its
 * match row is undefined; the caller computes it another way.
 * Returns 0, or -1 when out of memory. */
int pnv_mutual_nn(const uint16_t *sim, const void *db, int is_half, const float *q,
                  const float *nd, const float *ed, const float *nq, const float *eq,
                  int64_t n_cand, int64_t pd, int64_t pq, int64_t d, int64_t max_dots,
                  int64_t *match, int64_t *counts, uint8_t *fallback) {
  float *rmax = malloc(sizeof(float) * pd), *r2 = malloc(sizeof(float) * pd);
  float *rthr = malloc(sizeof(float) * pd), *cmax = malloc(sizeof(float) * pq);
  float *c2 = malloc(sizeof(float) * pq), *cabs = malloc(sizeof(float) * pq);
  float *cthr = malloc(sizeof(float) * pq);
  int32_t *rarg = malloc(sizeof(int32_t) * pd), *carg = malloc(sizeof(int32_t) * pq);
  int32_t *bw_exact = malloc(sizeof(int32_t) * pq);
  int ok = rmax && r2 && rthr && cmax && c2 && cabs && cthr && rarg && carg && bw_exact;
  if (ok) {
    /* fp32 accumulation of d exact bf16 products: gamma_d, and the bf16 output rounding
     * |s~ - s| <= 2^-8 / (1 - 2^-8) |s~|; both with a little slack for float arithmetic */
    const double gamma = (double)d * 0x1p-24 / (1.0 - (double)d * 0x1p-24) * 1.01;
    const double out_rel = 0x1p-8 / (1.0 - 0x1p-8) * 1.001;
    double nq_max = 0.0, eq_max = 0.0;
    for (int64_t i = 0; i < pq; ++i) {
      if (nq[i] > nq_max) nq_max = nq[i];
      if (eq[i] > eq_max) eq_max = eq[i];
    }
    for (int64_t cand = 0; cand < n_cand; ++cand) {
      const uint16_t *s = sim + cand * pd * pq;
      const float *ndc = nd + cand * pd, *edc = ed + cand * pd;
      for (int64_t i = 0; i < pq; ++i) {
        cmax[i] = -INFINITY; c2[i] = -INFINITY; cabs[i] = 0.0f; carg[i] = 0;
        bw_exact[i] = -2;
      }
      double nd_max = 0.0, ed_max = 0.0;
      /* one pass: per row max, first argmax, runner-up, largest |s|; per column the same */
      /* rows two at a time: the column state is loaded and stored once per pair */
      for (int64_t j = 0; j < pd; j += 2) {
        const int nrows = j + 1 < pd ? 2 : 1;
        RowStats rs[2];
        const uint16_t *row0 = s + j * pq, *row1 = row0 + (nrows == 2 ? pq : 0);
        const __m512i j0 = _mm512_set1_epi32((int)j), j1 = _mm512_set1_epi32((int)j + 1);
        row_stats_init(&rs[0]);
        row_stats_init(&rs[1]);
        for (int64_t i = 0; i < pq; i += 16) {
          __mmask16 m = tail_mask(pq - i);
          __m512 cm = _mm512_maskz_loadu_ps(m, cmax + i), cs = _mm512_maskz_loadu_ps(m, c2 + i);
          __m512 cb = _mm512_maskz_loadu_ps(m, cabs + i);
          __m512i ca = _mm512_maskz_loadu_epi32(m, carg + i);
          update(sim16(row0, i, m), m, j0, &cm, &cs, &cb, &ca, &rs[0]);
          const __mmask16 m1 = nrows == 2 ? m : 0;     /* no second row: no-op */
          update(sim16(row1, i, m1), m1, j1, &cm, &cs, &cb, &ca, &rs[1]);
          _mm512_mask_storeu_ps(cmax + i, m, cm);
          _mm512_mask_storeu_ps(c2 + i, m, cs);
          _mm512_mask_storeu_ps(cabs + i, m, cb);
          _mm512_mask_storeu_epi32(carg + i, m, ca);
        }
        for (int r = 0; r < nrows; ++r) {
          const int64_t jr = j + r;
          float mx = _mm512_reduce_max_ps(rs[r].vmax), mabs = _mm512_reduce_max_ps(rs[r].vabs);
          /* runner-up: the best lane's second, or any other lane's maximum */
          __mmask16 at_max = _mm512_cmp_ps_mask(rs[r].vmax, _mm512_set1_ps(mx), _CMP_EQ_OQ);
          __mmask16 first = at_max & (__mmask16)(-(int)at_max);
          r2[jr] = _mm512_reduce_max_ps(_mm512_mask_mov_ps(rs[r].vmax, first, rs[r].vsec));
          rmax[jr] = mx;
          rarg[jr] = first_index_of(s + jr * pq, pq, mx);
          double ndj = ndc[jr] + edc[jr];
          double e = edc[jr] * nq_max + ndj * eq_max + gamma * ndj * (nq_max + eq_max)
                     + out_rel * mabs;
          rthr[jr] = (float)(mx - 2.0 * e * 1.001 - 1e-7);
          if (ndj > nd_max) nd_max = ndj;
          if (edc[jr] > ed_max) ed_max = edc[jr];
        }
      }
      for (int64_t i = 0; i < pq; ++i) {
        double e = ed_max * nq[i] + nd_max * eq[i] + gamma * nd_max * (nq[i] + eq[i])
                   + out_rel * cabs[i];
        cthr[i] = (float)(cmax[i] - 2.0 * e * 1.001 - 1e-7);
      }
      Candidate c = {s, (const char *)db + cand * pd * d * (is_half ? 2 : 4), is_half, q,
                     pd, pq, d, rthr, cthr, bw_exact, counts};
      int64_t *out = match + cand * pd;
      const int64_t dots_before = counts[2];
      fallback[cand] = 0;
      for (int64_t j = 0; j < pd; ++j) {
        if (counts[2] - dots_before > max_dots) { fallback[cand] = 1; break; }
        int64_t i;
        if (r2[j] < rthr[j]) {
          i = rarg[j];                              /* row decided by the screen */
        } else {
          /* can j be mutual at all? some window entry must also be in its column's window */
          if (!may_be_mutual(&c, j)) { out[j] = -1; continue; }
          i = exact_row(&c, j);
        }
        if (bf16_to_float(s[j * pq + i]) < cthr[i]) { out[j] = -1; continue; }
        int64_t back = c2[i] < cthr[i] ? carg[i] : exact_col(&c, i);
        out[j] = back == j ? i : -1;
      }
    }
  }
  free(rmax); free(r2); free(rthr); free(cmax); free(c2); free(cabs); free(cthr);
  free(rarg); free(carg); free(bw_exact);
  return ok ? 0 : -1;
}
