/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * Exact mutual nearest neighbours from a bfloat16 similarity screen.
 *
 * Python (core/matching/screened_mnn.py) computes sim = bf16(db) @ bf16(q)^T with a bf16 GEMM
 * (AMX: ~4x the fp32 rate), fp32 accumulation and a bf16 result. Every entry is then
 * within in_err + out_rel |s~| of the exact dot product db_j . q_i (input rounding and
 * accumulation, then the bf16 output rounding), so a row's exact argmax is among the
 * entries within 2E of the row's screened maximum (see window_threshold; likewise per
 * column). One pass over sim finds per row and column the maximum and the runner-up; a
 * row or column whose runner-up is more than 2E below its maximum is decided by the screen
 * (a decided row's argmax is then its one entry at the maximum). The rest are decided by
 * exact dot products in float64 over their window only, and only where the outcome can
 * change the mutual match.
 *
 * On CPUs with AMX tiles, pnv_mutual_nn_amx does the GEMM itself and folds each finished
 * 32 x 32 block of similarities into the row and column statistics while the tile unit
 * computes the next block (see the section at the end of this file).
 *
 * Result: match[c, j] = i when i is row j's exact argmax and j is column i's exact
 * argmax (ties: lowest index, as torch.argmax), else -1.
 *
 * Any values: a row that is not usable (usable.h: a NaN, an infinity or a value beyond
 * float16's range) is converted to a zero row with norm -1 (the mark the later passes
 * read); its similarities are set to -inf before the fold, so it takes no part in any
 * row's or column's maximum, and it matches nothing. Every index the passes use comes
 * from the similarities' own positions, never from a comparison that NaN could fail, and
 * sizes are checked (PNV_BAD_ARGS). Built with the package for AVX-512 and for AVX-512
 * with AMX (CMakeLists.txt here; OpenMP when the compiler has it) and loaded with ctypes
 * by core/native/__init__.py; no Python headers needed.
 */
#ifndef __AVX512F__
#error "the screened matcher needs AVX-512 (CPUs with bf16 matrix units have it)"
#endif
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "usable.h"
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define PNV_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#endif

static inline float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* Lanes [0, left) of 16 (none for left <= 0: a block of padding columns past pq, which the
 * fused fold meets when ld is pq rounded up by more than one block). */
static inline __mmask16 tail_mask(int64_t left) {
  if (left <= 0) return 0;
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

/* bf16 (RNE) of 16 floats x, as 32-bit lanes; adds x^2 and the rounding error^2 to nn, ee. */
static inline __m512i round_measured(__m512 x, __m512 *nn, __m512 *ee) {
  const __m512i b = round_bf16(x);
  const __m512 e = _mm512_sub_ps(x, _mm512_castsi512_ps(b));     /* exact (Sterbenz) */
  *nn = _mm512_fmadd_ps(x, x, *nn);
  *ee = _mm512_fmadd_ps(e, e, *ee);
  return b;
}

/* A row's norm and rounding-error norm from its sums of squares, rounded up by 1e-3: far
 * more than float's summation error for d <= 65536. An unusable row (bad: the lanes that
 * made it so) gets norm -1, the mark of a row that takes no part, and error 0. Returns
 * whether the row is usable. */
static inline int store_norms(__m512 nn, __m512 ee, __mmask16 bad, float *norm, float *err) {
  if (bad) {
    *norm = -1.0f;
    *err = 0.0f;
    return 0;
  }
  *norm = sqrtf(_mm512_reduce_add_ps(nn)) * 1.001f;
  *err = sqrtf(_mm512_reduce_add_ps(ee)) * 1.001f;
  return 1;
}

/* Lanes of x (within m) that make a row unusable (usable.h): |x| > the limit, or NaN. */
static inline __mmask16 unusable16(__m512 x, __mmask16 m) {
  return _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(x), _mm512_set1_ps(PNV_USABLE_LIMIT),
                                 _CMP_NLE_UQ);
}

static void to_bf16_rows(const void *src, int is_half, int64_t n, int64_t d, uint16_t *dst,
                         float *norm, float *err) {
  for (int64_t r = 0; r < n; ++r) {
    __m512 nn = _mm512_setzero_ps(), ee = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t k = 0; k < d; k += 16) {
      __mmask16 m = tail_mask(d - k);
      const __m512 x = load16(src, is_half, r * d + k, m);
      bad |= unusable16(x, m);
      __m512i b = round_measured(x, &nn, &ee);
      _mm256_mask_storeu_epi16(dst + r * d + k, m,
                               _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
    }
    if (!store_norms(nn, ee, bad, norm + r, err + r))
      memset(dst + r * d, 0, (size_t)(2 * d));             /* a zero row, marked unusable */
  }
}

#ifdef PNV_AMX
/* Rows [r0, r1) of the 32-row block at row0 of src [pd, d] (float16/float32, d % 32 == 0)
 * to bf16 (RNE) in the tile unit's A layout dst [d / 32][32 rows][32]; rows past pd are
 * zero. Per row the norm of the value and of its rounding error, as to_bf16_rows. */
static void to_bf16_tiles(const void *src, int is_half, int64_t row0, int r0, int r1,
                          int64_t pd, int64_t d, uint16_t *dst, float *norm, float *err) {
  const __m512i high_halves = _mm512_set_epi16(
      63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,
      31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  for (int64_t r = r0; r < r1; ++r) {
    if (row0 + r >= pd) {
      for (int64_t k = 0; k < d; k += 32) memset(dst + k * 32 + r * 32, 0, 64);
      continue;
    }
    __m512 nn = _mm512_setzero_ps(), ee = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t k = 0; k < d; k += 32) {
      const __m512 x0 = load16(src, is_half, (row0 + r) * d + k, 0xFFFF);
      const __m512 x1 = load16(src, is_half, (row0 + r) * d + k + 16, 0xFFFF);
      bad |= unusable16(x0, 0xFFFF) | unusable16(x1, 0xFFFF);
      const __m512i b0 = round_measured(x0, &nn, &ee), b1 = round_measured(x1, &nn, &ee);
      /* the high halves of b0, b1: 32 bf16 in column order */
      _mm512_store_si512(dst + k * 32 + r * 32, _mm512_permutex2var_epi16(b0, high_halves, b1));
    }
    if (!store_norms(nn, ee, bad, norm + row0 + r, err + row0 + r))
      for (int64_t k = 0; k < d; k += 32) memset(dst + k * 32 + r * 32, 0, 64);
  }
}
#endif

/* n_blocks blocks (src[b]: n rows of d values, float16 if is_half, else float32) to bf16
 * (RNE) in dst [n_blocks * n, d]; per row the norm of the value and of its rounding error
 * (store_norms: -1 and a zero row for an unusable row).
 * Blocks are candidates read in place from a patch store (no gather copy). */
void pnv_to_bf16(const void *const *blocks, int is_half, int64_t n_blocks, int64_t n,
                 int64_t d, uint16_t *dst, float *norm, float *err) {
  if (n_blocks < 0 || n < 0 || d < 0) return;           /* nothing to convert */
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

/* 32 consecutive columns, some of them needed by exact_cols. */
typedef struct {
  float lowest;       /* the lowest window threshold of its needed columns */
  int32_t at;         /* first column */
  __mmask32 want;     /* its needed columns */
} NeededChunk;

typedef struct {
  const uint16_t *sim;   /* [pd, ld] of this candidate (pq columns used) */
  const void *db;        /* [pd, d] of this candidate */
  int is_half;
  const float *q;        /* [pq, d] */
  int64_t pd, pq, ld, d;
  const float *cthr;     /* per column: window threshold cmax - 2E_col */
  const int16_t *rkey, *ckey;  /* row and column window thresholds as bf16 keys */
  const float *rmax;     /* per row: its screened maximum */
  uint8_t *need;         /* per column: 1 when its exact argmax is needed */
  int32_t *col_arg;      /* per needed column: exact argmax row (exact_cols) */
  double *col_best;      /* per needed column: its exact maximum (exact_cols) */
  int32_t *window;       /* [pq]: the columns of one row's window (exact_row) */
  NeededChunk *chunks;   /* [(pq + 31) / 32]: exact_cols' chunks */
  int64_t *counts;       /* rows refined, columns refined, exact dot products */
} Candidate;

/* 16 screened similarities of a row as floats (-inf outside the mask). */
static inline __m512 sim16(const uint16_t *row, int64_t i, __mmask16 m) {
  __m512i b = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + i));
  return _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), m,
                            _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)));
}

/* The windows are scanned on the bf16 bits: as int16 "keys" (magnitude bits flipped for
 * negative values) their signed order is the float order, so one compare takes 32
 * similarities instead of 16 converted ones. */
static inline __m512i keys32(__m512i bits) {
  return _mm512_xor_si512(bits, _mm512_and_si512(_mm512_srai_epi16(bits, 15),
                                                 _mm512_set1_epi16(0x7FFF)));
}

static inline __mmask32 tail32(int64_t left) {
  if (left <= 0) return 0;
  return left >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << left) - 1u);
}

/* Key of the smallest bf16 value >= t (finite or infinite t): a bf16 s is >= t exactly
 * when key(s) >= this key. Both zeros pass a threshold at or below zero. */
static int16_t key_at_least(float t) {
  uint32_t u;
  memcpy(&u, &t, sizeof u);
  uint16_t hi = (uint16_t)(u >> 16);          /* truncation: toward zero */
  if ((u & 0xFFFFu) && !(u >> 31)) hi += 1;   /* positive and below t: the next bf16 up */
  if (hi == 0) hi = 0x8000;                   /* +0 -> -0, which orders below it */
  const int16_t k = (int16_t)hi;
  return (int16_t)(k ^ ((k >> 15) & 0x7FFF));
}

/* Exact argmax over row j's window (entries >= rthr[j], key rkey[j]). */
static int64_t exact_row(const Candidate *c, int64_t j) {
  const uint16_t *row = c->sim + j * c->ld;
  const __m512i thr = _mm512_set1_epi16(c->rkey[j]);
  double best = -INFINITY;
  int64_t arg = -1, n = 0;
  int32_t *window = c->window;
  for (int64_t i0 = 0; i0 < c->pq; i0 += 32) {
    const __mmask32 t = tail32(c->pq - i0);
    __mmask32 m = _mm512_mask_cmpge_epi16_mask(t, keys32(_mm512_maskz_loadu_epi16(t, row + i0)),
                                               thr);
    while (m) {
      const int64_t i = i0 + __builtin_ctz(m);
      m &= m - 1;
      window[n++] = (int32_t)i;
      /* the window's query rows, fetched together rather than one miss at a time (their
       * first 2 KB: the hardware prefetcher follows a row once it is being read) */
      for (int64_t o = 0; o < c->d * 4 && o < 2048; o += 64)
        _mm_prefetch((const char *)(c->q + i * c->d) + o, _MM_HINT_T0);
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    const double v = exact_dot(c->db, c->is_half, j, c->q + window[k] * c->d, c->d);
    c->counts[2] += 1;
    if (v > best) { best = v; arg = window[k]; }
  }
  c->counts[0] += 1;
  return arg;
}

/* Whether row j has an entry in both its own window and its column's window. */
static int may_be_mutual(const Candidate *c, int64_t j) {
  const uint16_t *row = c->sim + j * c->ld;
  const __m512i thr = _mm512_set1_epi16(c->rkey[j]);
  for (int64_t i = 0; i < c->pq; i += 32) {
    const __mmask32 t = tail32(c->pq - i);
    const __m512i k = keys32(_mm512_maskz_loadu_epi16(t, row + i));
    if (_mm512_mask_cmpge_epi16_mask(_mm512_mask_cmpge_epi16_mask(t, k, thr), k,
                                     _mm512_maskz_loadu_epi16(t, c->ckey + i)))
      return 1;
  }
  return 0;
}

/* Index of the first of a row's n screened similarities that is >= mx: for a row the
 * screen decided, the one entry at its maximum (every other entry is below the window, so
 * nothing else reaches mx). Found here, once per decided row, rather than tracked per
 * entry in the fold, whose every operation competes with the tile unit. */
static int64_t first_at_least(const uint16_t *row, int64_t n, float mx) {
  const __m512i key = _mm512_set1_epi16(key_at_least(mx));
  for (int64_t i = 0; i < n; i += 32) {
    const __mmask32 t = tail32(n - i);
    const __mmask32 m = _mm512_mask_cmpge_epi16_mask(
        t, keys32(_mm512_maskz_loadu_epi16(t, row + i)), key);
    if (m) return i + __builtin_ctz(m);
  }
  return 0;
}

/* Ascending lowest thresholds; a total order even for NaN (last), as qsort needs. */
static int by_lowest(const void *x, const void *y) {
  const float a = ((const NeededChunk *)x)->lowest, b = ((const NeededChunk *)y)->lowest;
  const int na = a != a, nb = b != b;
  if (na || nb) return na - nb;
  return (a > b) - (a < b);
}

/* Exact argmax of every needed column over its window (entries >= cthr[i]), in one
 * row-major pass: walking a column of sim touches one cache line per row, which cost far
 * more than the dot products. Rows go in increasing order and a later row must be strictly
 * larger, so ties keep the first row (as torch.argmax). Stops once more than max_dots
 * exact products were spent on this candidate; returns 0 then, else 1. */
static int exact_cols(const Candidate *c, int64_t dots_before, int64_t max_dots) {
  NeededChunk *chunks = c->chunks;                /* the 32-column chunks with needed columns */
  int64_t needed = 0, n_want = 0;
  for (int64_t i0 = 0; i0 < c->pq; i0 += 32) {
    NeededChunk k = {INFINITY, (int32_t)i0, 0};
    for (int64_t i = i0; i < c->pq && i < i0 + 32; ++i) {
      c->col_best[i] = -INFINITY;
      c->col_arg[i] = -1;
      if (!c->need[i]) continue;
      k.want |= (__mmask32)1u << (i - i0);
      if (c->cthr[i] < k.lowest) k.lowest = c->cthr[i];
    }
    if (k.want) chunks[n_want++] = k;
    needed += __builtin_popcount(k.want);
  }
  if (!needed) return 1;
  c->counts[1] += needed;
  /* a row takes part in a chunk only if its maximum reaches the chunk's lowest threshold:
   * in ascending order of those, each row visits a prefix of the chunks */
  qsort(chunks, (size_t)n_want, sizeof chunks[0], by_lowest);
  for (int64_t j = 0; j < c->pd; ++j) {
    const float rmax = c->rmax[j];
    const uint16_t *row = c->sim + j * c->ld;
    for (int64_t k = 0; k < n_want && chunks[k].lowest <= rmax; ++k) {
      const int64_t i0 = chunks[k].at;
      const __mmask32 t = chunks[k].want;
      __mmask32 m = _mm512_mask_cmpge_epi16_mask(t, keys32(_mm512_maskz_loadu_epi16(t, row + i0)),
                                                 _mm512_maskz_loadu_epi16(t, c->ckey + i0));
      while (m) {
        const int64_t i = i0 + __builtin_ctz(m);
        m &= m - 1;
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

/* Fold 16 similarities v (-inf where absent) into a running maximum and runner-up. A
 * column's argmax is not tracked: where the screen decides a column, its runner-up is
 * below its maximum, so the one row holding the maximum is the argmax (see decide). */
static inline __attribute__((always_inline)) void top2(__m512 v, __m512 *mx, __m512 *second) {
  *second = _mm512_max_ps(*second, _mm512_min_ps(*mx, v));
  *mx = _mm512_max_ps(*mx, v);
}

/* Fold 16 columns [i, i + 16) of rows j, j + 1 (row0: row j; two = 0: row j only; m: the
 * columns present; ld: the row stride) into the column state arrays and the two rows' lane
 * statistics. */
static inline __attribute__((always_inline)) void fold_block(
    const uint16_t *row0, int64_t ld, int two, int64_t i, __mmask16 m, int full,
    float *cmax, float *c2, __m512 *rm, __m512 *rs) {
  __m512 cm = _mm512_maskz_loadu_ps(m, cmax + i), cs = _mm512_maskz_loadu_ps(m, c2 + i);
  const __m512 v = full ? sim16_full(row0, i) : sim16(row0, i, m);
  top2(v, &cm, &cs);
  top2(v, &rm[0], &rs[0]);
  if (two) {
    const __m512 v1 = full ? sim16_full(row0 + ld, i) : sim16(row0 + ld, i, m);
    top2(v1, &cm, &cs);
    top2(v1, &rm[1], &rs[1]);
  }
  _mm512_mask_storeu_ps(cmax + i, m, cm);
  _mm512_mask_storeu_ps(c2 + i, m, cs);
}

/* Rows j (and j + 1 when two) through all pq columns. */
static inline __attribute__((always_inline)) void fold_rows(
    const uint16_t *row0, int64_t pq, int64_t ld, int two, float *cmax, float *c2, __m512 *rm,
    __m512 *rs) {
  int64_t i = 0;
  for (; i + 16 <= pq; i += 16)
    fold_block(row0, ld, two, i, (__mmask16)0xFFFF, 1, cmax, c2, rm, rs);
  if (i < pq) fold_block(row0, ld, two, i, tail_mask(pq - i), 0, cmax, c2, rm, rs);
}

/* Scratch of one thread: per row and per column statistics of one candidate. */
typedef struct {
  float *rmax, *r2, *rthr, *cmax, *c2, *cthr;
  int16_t *rkey, *ckey;
  int32_t *col_arg;
  double *col_best;
  uint8_t *need;
  int32_t *window;
  NeededChunk *chunks;
} Scratch;

static void scratch_free(Scratch *w) {
  free(w->rmax); free(w->r2); free(w->rthr); free(w->cmax); free(w->c2); free(w->cthr);
  free(w->rkey); free(w->ckey);
  free(w->col_arg); free(w->col_best); free(w->need); free(w->window); free(w->chunks);
}

/* Per-row arrays for pd rows, per-column ones for pq columns (one more of each: malloc(0)
 * may return NULL, which would read as out of memory). */
static int scratch_alloc(Scratch *w, int64_t pd, int64_t pq) {
  pd += 1;
  pq += 1;
  w->rmax = malloc(sizeof(float) * pd); w->r2 = malloc(sizeof(float) * pd);
  w->rthr = malloc(sizeof(float) * pd);
  w->cmax = malloc(sizeof(float) * pq); w->c2 = malloc(sizeof(float) * pq);
  w->cthr = malloc(sizeof(float) * pq);
  w->rkey = malloc(sizeof(int16_t) * pd); w->ckey = malloc(sizeof(int16_t) * pq);
  w->col_arg = malloc(sizeof(int32_t) * pq); w->col_best = malloc(sizeof(double) * pq);
  w->need = malloc(pq);
  w->window = malloc(sizeof(int32_t) * pq);
  w->chunks = malloc(sizeof(NeededChunk) * ((pq + 31) / 32));
  return w->rmax && w->r2 && w->rthr && w->cmax && w->c2 && w->cthr && w->rkey &&
         w->ckey && w->col_arg && w->col_best && w->need && w->window && w->chunks;
}

/* bf16 bits of -inf: the similarity of a row or column that takes no part. */
#define BF16_NEG_INF 0xFF80u

/* Whether any of the n norms marks an unusable row (norm < 0, see store_norms). */
static int any_unusable(const float *norm, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (norm[i] < 0.0f) return 1;
  return 0;
}

/* Set the similarities s [pd, ld] (pq columns used) of unusable rows (nd < 0) and columns
 * (nq < 0) to -inf, so that the fold leaves them out of every maximum. Only for candidates
 * or queries that have such rows: the common case never gets here. */
static void mask_unusable(uint16_t *s, int64_t pd, int64_t pq, int64_t ld, const float *nd,
                          const float *nq) {
  for (int64_t j = 0; j < pd; ++j) {
    uint16_t *row = s + j * ld;
    if (nd[j] < 0.0f) {
      for (int64_t i = 0; i < pq; ++i) row[i] = BF16_NEG_INF;
      continue;
    }
    for (int64_t i = 0; i < pq; ++i)
      if (nq[i] < 0.0f) row[i] = BF16_NEG_INF;
  }
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

/* A row's runner-up from its lane statistics (max and second per column mod 16) and its
 * maximum mx: one lane at mx gives its second, every other lane its maximum. */
static inline float runner_up(__m512 max, __m512 second, float mx) {
  const __mmask16 at_max = _mm512_cmp_ps_mask(max, _mm512_set1_ps(mx), _CMP_EQ_OQ);
  const __mmask16 first = at_max & (__mmask16)(-(int)at_max);
  return _mm512_reduce_max_ps(_mm512_mask_mov_ps(max, first, second));
}

/* Per row and column of one candidate's screened similarities s [pd, ld] (pq columns
 * used): the maximum and the runner-up (w->rmax, r2, cmax, c2), in one pass. Rows two at a
 * time: the column state is loaded and stored once per pair. */
static void fold_screen(const uint16_t *s, int64_t pd, int64_t pq, int64_t ld, Scratch *w) {
  for (int64_t i = 0; i < pq; ++i) {
    w->cmax[i] = -INFINITY; w->c2[i] = -INFINITY;
  }
  for (int64_t j = 0; j < pd; j += 2) {
    const int two = j + 1 < pd;
    __m512 rm[2], rs[2];
    rm[0] = rm[1] = rs[0] = rs[1] = _mm512_set1_ps(-INFINITY);
    if (two)
      fold_rows(s + j * ld, pq, ld, 1, w->cmax, w->c2, rm, rs);
    else
      fold_rows(s + j * ld, pq, ld, 0, w->cmax, w->c2, rm, rs);
    for (int r = 0; r <= two; ++r) {
      const int64_t jr = j + r;
      const float mx = _mm512_reduce_max_ps(rm[r]);
      w->r2[jr] = runner_up(rm[r], rs[r], mx);
      w->rmax[jr] = mx;
    }
  }
}

/* Mutual matches of one candidate from its screen statistics (fold_screen), refining
 * the undecided rows and columns exactly (see pnv_mutual_nn). Returns 0, or 1 when it
 * needs more than max_dots exact products (out undefined then). */
static int decide(const uint16_t *s, const void *db, int is_half, const float *q,
                  const float *ndc, const float *edc, const float *nq, const float *eq,
                  int64_t pd, int64_t pq, int64_t ld, int64_t d, int64_t max_dots,
                  const Bounds *b, Scratch *w, int64_t *out, int64_t *counts) {
  double nd_max = 0.0, ed_max = 0.0;
  const int16_t none = key_at_least(INFINITY);        /* the key of an empty window */
  for (int64_t j = 0; j < pd; ++j) {
    /* an unusable row, or one without a usable column: no entry above -inf (NaN: the
     * screen of a row that takes part is always finite; refused all the same) */
    if (ndc[j] < 0.0f || !(w->rmax[j] > -INFINITY)) {
      w->rthr[j] = INFINITY;
      w->rkey[j] = none;
      continue;
    }
    const double ndj = ndc[j] + edc[j];
    const double in_err = edc[j] * b->nq_max + ndj * b->eq_max
                          + b->gamma * ndj * (b->nq_max + b->eq_max);
    w->rthr[j] = window_threshold(w->rmax[j], in_err, b->out_rel);
    w->rkey[j] = key_at_least(w->rthr[j]);
    if (ndj > nd_max) nd_max = ndj;
    if (edc[j] > ed_max) ed_max = edc[j];
  }
  for (int64_t i = 0; i < pq; ++i) {
    w->need[i] = 0;
    if (nq[i] < 0.0f || !(w->cmax[i] > -INFINITY)) {   /* as for rows: an empty window */
      w->cthr[i] = INFINITY;
      w->ckey[i] = none;
      continue;
    }
    const double in_err = ed_max * nq[i] + nd_max * eq[i] + b->gamma * nd_max * (nq[i] + eq[i]);
    w->cthr[i] = window_threshold(w->cmax[i], in_err, b->out_rel);
    w->ckey[i] = key_at_least(w->cthr[i]);
  }
  Candidate c = {s, db, is_half, q, pd, pq, ld, d, w->cthr, w->rkey, w->ckey, w->rmax, w->need,
                 w->col_arg, w->col_best, w->window, w->chunks, counts};
  const int64_t dots_before = counts[2];
  for (int64_t j = 0; j < pd; ++j) {
    if (counts[2] - dots_before > max_dots) return 1;
    if (w->rthr[j] == INFINITY) { out[j] = -1; continue; }   /* takes no part (above) */
    int64_t i;
    if (w->r2[j] < w->rthr[j]) {
      i = first_at_least(s + j * ld, pq, w->rmax[j]);   /* row decided by the screen */
    } else {
      /* can j be mutual at all? some window entry must also be in its column's window */
      if (!may_be_mutual(&c, j)) { out[j] = -1; continue; }
      i = exact_row(&c, j);
      /* an empty window (defensive: a row that takes part has finite entries); -1 must
       * never index s or need */
      if (i < 0) { out[j] = -1; continue; }
    }
    const float sji = bf16_to_float(s[j * ld + i]);
    if (sji < w->cthr[i]) { out[j] = -1; continue; }
    if (w->c2[i] < w->cthr[i]) {
      /* column decided by the screen: its runner-up is below its maximum, so the one row
       * holding the maximum is its argmax */
      out[j] = sji == w->cmax[i] ? i : -1;
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

/* Error bounds of a d-dimensional screen: fp32 accumulation of d exact bf16 products
 * (gamma_d), and the bf16 output rounding |s~ - s| <= 2^-8 / (1 - 2^-8) |s~|; both with a
 * little slack for float arithmetic. nq_max, eq_max: the largest query norm and error. */
static Bounds screen_bounds(const float *nq, const float *eq, int64_t pq, int64_t d) {
  Bounds b = {(double)d * 0x1p-24 / (1.0 - (double)d * 0x1p-24) * 1.01,
              0x1p-8 / (1.0 - 0x1p-8) * 1.001, 0.0, 0.0};
  for (int64_t i = 0; i < pq; ++i) {
    if (nq[i] > b.nq_max) b.nq_max = nq[i];
    if (eq[i] > b.eq_max) b.eq_max = eq[i];
  }
  return b;
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
 * match row is undefined; the caller computes it another way. The similarities of
 * unusable rows and columns (norm -1) are overwritten with -inf. Any values, even in sim:
 * every index stays inside its buffer.
 * Returns 0, -1 when out of memory, or PNV_BAD_ARGS for refused sizes (nothing written). */
int pnv_mutual_nn(uint16_t *sim, const void *const *db, int is_half, const float *q,
                  const float *nd, const float *ed, const float *nq, const float *eq,
                  int64_t n_cand, int64_t pd, int64_t pq, int64_t ld, int64_t d,
                  int64_t max_dots, int64_t *match, int64_t *counts, uint8_t *fallback) {
  if (n_cand < 0 || n_cand > PNV_MAX_ROWS || pd < 0 || pd > PNV_MAX_ROWS || pq < 0 ||
      pq > PNV_MAX_ROWS || ld < pq || d < 1 || d > PNV_MAX_DIM)
    return PNV_BAD_ARGS;
  const Bounds b = screen_bounds(nq, eq, pq, d);
  const int bad_cols = any_unusable(nq, pq);
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
      uint16_t *s = sim + cand * pd * ld;
      if (bad_cols || any_unusable(nd + cand * pd, pd))
        mask_unusable(s, pd, pq, ld, nd + cand * pd, nq);
      fold_screen(s, pd, pq, ld, &w);
      fallback[cand] = (uint8_t)decide(s, db[cand], is_half, q, nd + cand * pd, ed + cand * pd,
                                       nq, eq, pd, pq, ld, d, max_dots, &b, &w,
                                       match + cand * pd, local);
    }
    scratch_free(&w);
#pragma omp critical
    for (int k = 0; k < 3; ++k) counts[k] += local[k];
  }
  return failed ? -1 : 0;
}

#ifdef PNV_AMX
/* ---- Fused AMX screen: the similarity GEMM and the one-pass fold in one kernel ----
 *
 * On this project's CPU oneDNN's bf16 GEMM ran at a quarter to a half of the tile unit's
 * own rate (pnv_amx_peak), and the fold then re-read all of its output. Here each thread
 * takes whole candidates: it multiplies 32 x 32 blocks on the tile unit (2 A tiles x 2 B
 * tiles -> 4 accumulators), and while the tile unit computes block n + 1 it folds block n
 * into the row and column statistics and converts a few rows of the next 32-row block to
 * bf16. The screened similarities are the same bf16-rounded fp32 sums as the GEMM path's
 * (any summation order obeys the same bound), so decide() refines them unchanged. */

typedef struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} TileConfig;

/* Ask the kernel for the tile state (per process; repeating it is harmless, and torch does
 * the same). Every entry point that uses the tiles asks first: a tile instruction without
 * the permission kills the process. */
int pnv_amx_init(void) { return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                        18 /* XFEATURE_XTILEDATA */) == 0; }

static void amx_configure(void) {
  TileConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
  _tile_loadconfig(&cfg);
}

/* Row statistics of the 32 rows of a block row, per lane (column mod 16). */
typedef struct {
  __m512 max[32], second[32];
} RowLanes;

/* Round a float to bf16 (nearest even) and back: round_bf16 for one value. Monotonic, so
 * the rounded maximum and runner-up of fp32 values are those of their rounded values.
 * Scalar on purpose: calling round_bf16 on a broadcast here made the whole screen about
 * 10% slower. */
static inline float round_bf16_scalar(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* Fold rows [r0, r1) of the finished 32 x 32 block blk (fp32, rows of 32) at rows i0..,
 * columns j0..: store them rounded to bf16 into s [pd, ld], and fold the fp32 values into
 * the column state (cmax, c2: length ld) and the block row's lane statistics (rounded when
 * complete: rounding is monotonic). partial: the block holds columns >= pq, which take no
 * part. Every operation here competes with the tile unit for a vector port, so the fold is
 * kept to 7 per 16 entries (the bf16 conversion and two top-2 updates); rows' argmaxes are
 * found afterwards, only for the rows the screen decides (first_at_least). */
static inline __attribute__((always_inline)) void fold_tile_rows(
    const float *blk, int r0, int r1, int64_t i0, int64_t j0, int64_t pd, int64_t pq,
    int64_t ld, int partial, uint16_t *s, float *cmax, float *c2, RowLanes *rl) {
  __mmask16 m0 = 0xFFFF, m1 = 0xFFFF;
  if (partial) {
    m0 = tail_mask(pq - j0);
    m1 = pq - j0 > 16 ? tail_mask(pq - j0 - 16) : 0;
  }
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  __m512 cm0 = _mm512_loadu_ps(cmax + j0), cs0 = _mm512_loadu_ps(c2 + j0);
  __m512 cm1 = _mm512_loadu_ps(cmax + j0 + 16), cs1 = _mm512_loadu_ps(c2 + j0 + 16);
  if (i0 + r1 > pd) r1 = (int)(pd - i0);
  for (int r = r0; r < r1; ++r) {
    __m512 v0 = _mm512_load_ps(blk + r * 32), v1 = _mm512_load_ps(blk + r * 32 + 16);
    uint16_t *out = s + (i0 + r) * ld + j0;
    _mm256_storeu_si256((__m256i *)out, (__m256i)_mm512_cvtneps_pbh(v0));
    _mm256_storeu_si256((__m256i *)(out + 16), (__m256i)_mm512_cvtneps_pbh(v1));
    if (partial) {
      v0 = _mm512_mask_mov_ps(ninf, m0, v0);
      v1 = _mm512_mask_mov_ps(ninf, m1, v1);
    }
    top2(v0, &cm0, &cs0);
    top2(v1, &cm1, &cs1);
    __m512 rm = rl->max[r], rs = rl->second[r];
    top2(v0, &rm, &rs);
    top2(v1, &rm, &rs);
    rl->max[r] = rm; rl->second[r] = rs;
  }
  _mm512_storeu_ps(cmax + j0, cm0); _mm512_storeu_ps(c2 + j0, cs0);
  _mm512_storeu_ps(cmax + j0 + 16, cm1); _mm512_storeu_ps(c2 + j0 + 16, cs1);
}

/* fold_tile_rows for a block (partial: whether it has columns >= pq). */
static void fold_rows_of(const float *blk, int r0, int r1, int64_t i0, int64_t j0, int64_t pd,
                         int64_t pq, int64_t ld, uint16_t *s, float *cmax, float *c2,
                         RowLanes *rl) {
  if (j0 + 32 <= pq)
    fold_tile_rows(blk, r0, r1, i0, j0, pd, pq, ld, 0, s, cmax, c2, rl);
  else
    fold_tile_rows(blk, r0, r1, i0, j0, pd, pq, ld, 1, s, cmax, c2, rl);
}

/* The tile unit's own rate: each OpenMP thread runs `iters` rounds of 4 bf16 tile products
 * (2 x 2 tiles, as amx_screen) on operands that stay in L1. Returns the FLOPs done, for the
 * caller to time: the ceiling the fused kernel's rate is set against. */
double pnv_amx_peak(int64_t iters) {
  if (!pnv_amx_init()) return 0.0;
  double flops = 0.0;
#pragma omp parallel reduction(+ : flops)
  {
    static _Thread_local uint16_t tiles[2048] __attribute__((aligned(64)));
    float out[256] __attribute__((aligned(64)));
    amx_configure();
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t it = 0; it < iters; ++it) {
      _tile_loadd(4, tiles, 64);
      _tile_loadd(5, tiles + 512, 64);
      _tile_loadd(6, tiles + 1024, 128);
      _tile_loadd(7, tiles + 1056, 128);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    flops += 2.0 * 4 * 16 * 16 * 32 * (double)iters;
  }
  return flops;
}

/* This thread's working memory of at least `bytes` (64-byte aligned), kept between calls:
 * fresh megabyte buffers per call cost more in page faults than the arithmetic (the
 * kernel zeroes every new page). Held until the thread exits (torch's pool: the process). */
static _Thread_local void *arena;
static _Thread_local size_t arena_bytes;

static void *thread_arena(size_t bytes) {
  if (bytes > arena_bytes) {
    free(arena);
    arena = aligned_alloc(64, (bytes + 63) / 64 * 64);
    arena_bytes = arena ? bytes : 0;
  }
  return arena;
}

/* Screen statistics (as fold_screen), screened similarities s [pd, ld] and row norms nd,
 * ed [pd] (as pnv_to_bf16) of one candidate db [pd, d] (float16/float32). qp: the query's
 * bf16 columns in the tile unit's B layout, per 32 columns a panel [d / 2][32][2].
 * d % 32 == 0, ld % 32 == 0. a: 2 x 32 x d bf16 (two blocks of rows: the one multiplied,
 * in L1 while the query panels stream from L2, and the next one, converted meanwhile);
 * blk: 2 x 32 x 32 floats. */
static void amx_screen(const void *db, int is_half, const uint16_t *qp, int64_t pd,
                       int64_t pq, int64_t ld, int64_t d, uint16_t *a, uint16_t *s, float *blk,
                       RowLanes *rl, float *nd, float *ed, Scratch *w) {
  for (int64_t i = 0; i < ld; ++i) {
    w->cmax[i] = -INFINITY; w->c2[i] = -INFINITY;
  }
  const int64_t steps = d / 32;
  /* the previous block is folded 8 rows at a time, at each quarter of this block's tile
   * instructions: the tile unit then runs beside the fold instead of after it */
  const int64_t quarter = steps >= 4 ? steps / 4 : 1;
  /* the next block of rows is converted a few rows per column block, likewise */
  const int64_t col_blocks = ld / 32, conv_rows = (32 + col_blocks - 1) / col_blocks;
  to_bf16_tiles(db, is_half, 0, 0, 32, pd, d, a, nd, ed);
  for (int64_t i0 = 0; i0 < pd; i0 += 32) {
    for (int r = 0; r < 32; ++r) {
      rl->max[r] = rl->second[r] = _mm512_set1_ps(-INFINITY);
    }
    const uint16_t *ai = a + (i0 / 32 % 2) * 32 * d;
    uint16_t *next = a + (i0 / 32 % 2 ? 0 : 32 * d);
    int64_t prev = -1;                        /* column block waiting to be folded */
    for (int64_t j0 = 0; j0 < ld; j0 += 32) {
      float *out = blk + (j0 / 32 % 2) * 1024, *pending = blk + (j0 / 32 % 2 ? 0 : 1024);
      _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
      if (i0 + 32 < pd) {
        const int64_t r0 = j0 / 32 * conv_rows;
        if (r0 < 32)
          to_bf16_tiles(db, is_half, i0 + 32, (int)r0, (int)(r0 + conv_rows < 32 ? r0 + conv_rows
                                                                                 : 32),
                        pd, d, next, nd, ed);
      }
      for (int64_t k = 0; k < steps; ++k) {
        const uint16_t *b = qp + j0 * d + k * 1024;
        _tile_loadd(4, ai + k * 1024, 64);
        _tile_loadd(5, ai + k * 1024 + 512, 64);
        _tile_loadd(6, b, 128);
        _tile_loadd(7, b + 32, 128);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        if (prev >= 0 && k % quarter == 0 && k / quarter < 4) {
          const int r0 = (int)(k / quarter) * 8;
          fold_rows_of(pending, r0, steps >= 4 || k + 1 < steps ? r0 + 8 : 32, i0, prev, pd,
                       pq, ld, s, w->cmax, w->c2, rl);
        }
      }
      _tile_stored(0, out, 128);
      _tile_stored(1, out + 16, 128);
      _tile_stored(2, out + 512, 128);
      _tile_stored(3, out + 528, 128);
      prev = j0;
    }
    fold_rows_of(blk + ((ld / 32 - 1) % 2) * 1024, 0, 32, i0, prev, pd, pq, ld, s, w->cmax,
                 w->c2, rl);
    for (int r = 0; r < 32 && i0 + r < pd; ++r) {
      const int64_t j = i0 + r;
      const float mx = _mm512_reduce_max_ps(rl->max[r]);
      w->r2[j] = round_bf16_scalar(runner_up(rl->max[r], rl->second[r], mx));
      w->rmax[j] = round_bf16_scalar(mx);
    }
  }
  for (int64_t i = 0; i < pq; ++i) {
    w->cmax[i] = round_bf16_scalar(w->cmax[i]);
    w->c2[i] = round_bf16_scalar(w->c2[i]);
  }
}

/* pnv_mutual_nn with the fused AMX screen: the same arguments, except that the caller gives
 * the query's bf16 columns qp [ld / 32][d / 2][32][2] (amx_screen) instead of the
 * similarities and the candidates' norms (computed here). Needs d % 32 == 0, ld % 32 == 0.
 * A candidate with unusable rows, or a query with unusable columns, has its statistics
 * folded again from the stored similarities after masking them (mask_unusable).
 * Returns 0, -1 when out of memory, -2 (PNV_BAD_ARGS) when the shapes do not suit the tile
 * unit or the kernel refuses the tile state. */
int pnv_mutual_nn_amx(const void *const *db, int is_half, const float *q, const uint16_t *qp,
                      const float *nq, const float *eq, int64_t n_cand, int64_t pd,
                      int64_t pq, int64_t ld, int64_t d, int64_t max_dots, int64_t *match,
                      int64_t *counts, uint8_t *fallback) {
  if (d < 32 || d % 32 || d > PNV_MAX_DIM || ld % 32 || ld < pq || pq < 0 ||
      pq > PNV_MAX_ROWS || pd < 1 || pd > PNV_MAX_ROWS || n_cand < 0 ||
      n_cand > PNV_MAX_ROWS || !pnv_amx_init())
    return PNV_BAD_ARGS;
  if (pq == 0) {                       /* nothing to match (and no column block to fold) */
    for (int64_t k = 0; k < n_cand * pd; ++k) match[k] = -1;
    for (int64_t k = 0; k < n_cand; ++k) fallback[k] = 0;
    return 0;
  }
  const Bounds b = screen_bounds(nq, eq, pq, d);
  const int bad_cols = any_unusable(nq, pq);
  const int64_t pd32 = (pd + 31) / 32 * 32;
  int failed = 0;
#pragma omp parallel
  {
    Scratch w;
    int64_t local[3] = {0, 0, 0};
    /* a [2, 32, d] bf16 | s [pd, ld] bf16 | blk 2 x 32 x 32 floats | row lanes | nd, ed */
    const size_t a_bytes = (size_t)(2 * 32 * d * 2), s_bytes = (size_t)(pd32 * ld * 2);
    const size_t nd_at = a_bytes + s_bytes + 8192 + sizeof(RowLanes);
    char *mem = thread_arena(nd_at + (size_t)pd32 * 8);
    uint16_t *a = (uint16_t *)mem, *s = (uint16_t *)(mem + a_bytes);
    float *blk = (float *)(mem + a_bytes + s_bytes);
    RowLanes *rl = (RowLanes *)(mem + a_bytes + s_bytes + 8192);
    float *nd = (float *)(mem + nd_at), *ed = nd + pd32;
    /* column arrays of length ld: the fold runs over whole 32-column blocks */
    const int ok = scratch_alloc(&w, pd, ld) && mem;
    if (!ok) {
#pragma omp atomic write
      failed = 1;
    } else {
      amx_configure();
    }
#pragma omp for schedule(dynamic)
    for (int64_t cand = 0; cand < n_cand; ++cand) {
      if (!ok) continue;
      amx_screen(db[cand], is_half, qp, pd, pq, ld, d, a, s, blk, rl, nd, ed, &w);
      if (bad_cols || any_unusable(nd, pd)) {     /* rare: fold again without them */
        mask_unusable(s, pd, pq, ld, nd, nq);
        fold_screen(s, pd, pq, ld, &w);
      }
      fallback[cand] = (uint8_t)decide(s, db[cand], is_half, q, nd, ed, nq, eq, pd, pq, ld, d,
                                       max_dots, &b, &w, match + cand * pd, local);
    }
    if (ok) _tile_release();
    scratch_free(&w);
#pragma omp critical
    for (int k = 0; k < 3; ++k) counts[k] += local[k];
  }
  return failed ? -1 : 0;
}
#else
int pnv_amx_init(void) { return 0; }

double pnv_amx_peak(int64_t iters) {
  (void)iters;
  return 0.0;
}

int pnv_mutual_nn_amx(const void *const *db, int is_half, const float *q, const uint16_t *qp,
                      const float *nq, const float *eq, int64_t n_cand, int64_t pd,
                      int64_t pq, int64_t ld, int64_t d, int64_t max_dots, int64_t *match,
                      int64_t *counts, uint8_t *fallback) {
  (void)db; (void)is_half; (void)q; (void)qp; (void)nq; (void)eq; (void)n_cand; (void)pd;
  (void)pq; (void)ld; (void)d; (void)max_dots; (void)match; (void)counts; (void)fallback;
  return -2;
}
#endif
