/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * Exact mutual nearest neighbours from an integer similarity screen, for AVX2 CPUs without
 * bf16 units (e.g. AMD Zen 3). Python: core/matching/int_screen.py.
 *
 * Each row x (query q_i or candidate d_j) is rounded to x~ = s * h with integers h and one
 * scale s per row, in one of two widths:
 * - int8 (bits 8): query h in [-127, 127], candidate h in [-63, 63] (vpmaddubsw adds two
 *   u8 x s8 products into a saturating int16: 2 * 127 * 127 fits, 2 * 255 * 127 does
 *   not), s = max|x| / 127 or / 63; 32 multiply-adds per vpmaddubsw + vpmaddwd pair.
 * - int16 (bits 16): |h_k| <= 32767 (vpmaddwd's pair sums fit an int32) and |h| <= 46340,
 *   so |h_q . h_d| <= |h_q| |h_d| < 2^31 for every partial sum the int32 accumulators see
 *   (Cauchy-Schwarz over any subset of the dims): no overflow, whatever the vectors
 *   (row_scale); 16 multiply-adds per vpmaddwd.
 * The integer dot products are exact, so the screened similarity s~ = sd_j sq_i
 * (dh_j . qh_i), rounded to float, differs from the exact d_j . q_i by at most
 *   in_err = |d~_j| |q_i - q~_i| + |d_j - d~_j| |q~_i| + |d_j - d~_j| |q_i - q~_i|
 * plus out_rel |s~| for the float roundings. From there on it is the bf16 screen's
 * argument (mutual_nn.c): a row's exact argmax lies among its entries within 2E of its
 * screened maximum; rows and columns whose runner-up is further down are decided by the
 * screen, the rest by dot products over their window, only where the outcome can change
 * the mutual match. Those are float32 (8 FMA lanes, with a rigorous rounding bound,
 * dot_error); a window whose best two come within twice that bound is recomputed in
 * float64.
 *
 * The trade: int8's GEMM issues fewer instructions per multiply-add (3 per 32 against 2
 * per 16), int16's windows are about 80 times narrower. On patch descriptors the int8
 * windows are wide (2E ~ 0.05 against a typical gap of 0.01 between a row's best two):
 * at 128 and 512 dims most rows are refined over a few percent of their entries, which
 * still pays; at 4096 dims 65-90% of the similarities would need a dot product. The
 * int16 windows (a rounded unit row lies within about sqrt(d) / 160000 of itself) leave
 * 2-7% of the rows of 4096-dim descriptors to refine.
 *
 * Each OpenMP thread takes whole candidates and keeps its similarities in its own buffer.
 *
 * Result: match[c, j] = i when i is row j's exact argmax and j is column i's exact argmax
 * (ties: lowest index, as torch.argmax), else -1.
 *
 * Any values: rows that are not usable (usable.h: a NaN, an infinity or a value beyond
 * float16's range) are rounded to zero rows and flagged; their similarities are -inf, so
 * they take no part in any row's or column's maximum, and they match nothing. Scales are
 * at least FLT_MIN (no division by zero, no 0 * inf for denormal rows). Sizes and the
 * panels' alignment are checked: refused arguments return PNV_BAD_ARGS.
 */
#if !defined(__AVX2__) || !defined(__F16C__)
#error "the integer screen needs AVX2 and F16C"
#endif
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "usable.h"

/* Query columns per GEMM panel (two 8-lane int32 accumulators) and db rows per tile. */
#define NR 16
#define MR 4
/* int8: offset that makes the candidate's signed 7-bit values unsigned for vpmaddubsw. */
#define OFFSET 64
/* Bytes of query panels kept in the L2 cache per pass over the candidate rows. */
#ifndef PANEL_BYTES
#define PANEL_BYTES (1 << 20)
#endif

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Element k of a db row, float16 or float32. */
static inline float db_at(const void *row, int is_half, int64_t k) {
  return is_half ? _cvtsh_ss(((const uint16_t *)row)[k]) : ((const float *)row)[k];
}

/* Largest |h| of a rounded row: vpmaddwd's pair sums 2 * 32767^2 fit an int32. */
#define HMAX 32767.0f
/* Largest |h| (2-norm) of a rounded row: |h_q . h_d| <= |h_q| |h_d| < 2^31 for every
 * partial sum of the int32 accumulators (Cauchy-Schwarz over any subset of dims). */
#define NMAX 46340.0

/* Scale of a row with max |x| = mx and |x| <= nrm (d values): |x / s| <= HMAX and
 * |round(x / s)| <= |x| / s + sqrt(d) / 2 <= NMAX. */
static inline float row_scale(float mx, double nrm, int64_t d) {
  const double cap = NMAX - 0.5 * sqrt((double)d) - 2.0;
  double s = fmax((double)mx / HMAX, nrm * 1.001 / cap);
  return s > 0.0 ? (float)fmax(s * (1.0 + 1e-6), FLT_MIN) : 1.0f;
}

/* Scale of an int8 row with max |x| = mx: mx / top, at least FLT_MIN (a denormal row's
 * mx / top would round to 0, and x / 0 to inf or NaN); 1 for a zero row. */
static inline float int8_scale(float mx, float top) {
  return mx > 0.0f ? fmaxf(mx / top, FLT_MIN) : 1.0f;
}

/* The query q [pq, d] float32 as int8 (bits 8) or int16 (bits 16) GEMM panels
 * [ldq / 16][dk / g][16][g], g = 32 / bits values per 32-bit group (zero padding past pq
 * and d), with per row the scale sq (int8: int8_scale; int16: row_scale), the column
 * correction OFFSET * sum_k qh_ik (int8; 0 for int16), the norms of q~ and of q - q~,
 * each rounded up by 1e-3 (far above float64's summation error), and colmask[i] = -1 for a
 * usable row, 0 for an unusable one (a zero column, scale 1, norms 0) and past pq.
 * ldq = pq rounded up to 16, dk = d rounded up to 4; panels 32-byte aligned. Once per
 * query, so plain scalar code. Returns 0, or PNV_BAD_ARGS for refused sizes, bits or
 * alignment (nothing written then). */
int pnv_int_query(const float *q, int64_t pq, int64_t d, int bits, void *panels, float *scale,
                  int32_t *corr, float *norm, float *err, int32_t *colmask) {
  if (pq < 0 || pq > PNV_MAX_ROWS || d < 1 || d > PNV_MAX_DIM || (bits != 8 && bits != 16) ||
      ((uintptr_t)panels & 31))
    return PNV_BAD_ARGS;
  const int64_t ldq = round_up(pq, NR), dk = round_up(d, 4), g = 32 / bits;
  const float top = bits == 8 ? 127.0f : HMAX;
  memset(panels, 0, (size_t)(ldq * dk * (bits / 8)));
  for (int64_t i = 0; i < ldq; ++i) {
    scale[i] = 1.0f;
    corr[i] = 0;
    norm[i] = err[i] = 0.0f;
    colmask[i] = 0;
  }
  for (int64_t i = 0; i < pq; ++i) {
    const float *row = q + i * d;
    const int64_t base = (i / NR) * dk * NR + (i % NR) * g;
    float mx = 0.0f;
    double n2 = 0.0;
    int usable = 1;
    for (int64_t k = 0; k < d; ++k) {
      usable &= fabsf(row[k]) <= PNV_USABLE_LIMIT;      /* false for NaN */
      mx = fmaxf(mx, fabsf(row[k]));
      n2 += (double)row[k] * row[k];
    }
    if (!usable) continue;                               /* a zero column, masked */
    const float s = bits == 8 ? int8_scale(mx, 127.0f) : row_scale(mx, sqrt(n2), d);
    double nn = 0.0, ee = 0.0;
    int32_t sum = 0;
    for (int64_t k = 0; k < d; ++k) {
      const float h = fminf(fmaxf(nearbyintf(row[k] / s), -top), top);
      const double r = (double)s * (double)h;
      nn += r * r;
      ee += ((double)row[k] - r) * ((double)row[k] - r);
      const int64_t at = base + (k / g) * NR * g + k % g;
      if (bits == 8) ((int8_t *)panels)[at] = (int8_t)h;
      else ((int16_t *)panels)[at] = (int16_t)h;
      sum += (int32_t)h;
    }
    scale[i] = s;
    norm[i] = (float)(sqrt(nn) * 1.001);
    err[i] = (float)(sqrt(ee) * 1.001);
    corr[i] = bits == 8 ? OFFSET * sum : 0;
    colmask[i] = -1;
  }
  return 0;
}

static inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

/* 8 elements of a db row (float16 or float32) from k. */
static inline __m256 load8(const void *row, int is_half, int64_t k) {
  return is_half ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)))
                 : _mm256_loadu_ps((const float *)row + k);
}

/* Round 8 values x to hf = round(x / s), clamped to +-top; add the squares of s * hf and
 * of the error x - s * hf (one fused multiply-add: one rounding, relative 2^-24) to the
 * lane sums nn and ee. */
static inline __m256 round8(__m256 x, __m256 sv, __m256 iv, __m256 top, __m256 *nn,
                            __m256 *ee) {
  __m256 hf = _mm256_round_ps(_mm256_mul_ps(x, iv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  hf = _mm256_min_ps(_mm256_max_ps(hf, _mm256_sub_ps(_mm256_setzero_ps(), top)), top);
  const __m256 r = _mm256_mul_ps(sv, hf), e = _mm256_fnmadd_ps(sv, hf, x);
  *nn = _mm256_fmadd_ps(r, r, *nn);
  *ee = _mm256_fmadd_ps(e, e, *ee);
  return hf;
}

/* Round the tail [dv, d) of a row as round8 into tail[k - dv], and set the row's norms of
 * s * h and of its rounding error from the lane sums nn, ee plus the tail's, rounded up by
 * 1e-3 (the 8 float lanes' relative error is under d / 8 * 2^-24, well inside it for the
 * dimensions a map can have, at most 32768). */
static void finish_row(const void *row, int is_half, int64_t dv, int64_t d, float s, float top,
                       __m256 nn, __m256 ee, int32_t *tail, float *norm, float *err) {
  float lanes_n[8], lanes_e[8];
  _mm256_storeu_ps(lanes_n, nn);
  _mm256_storeu_ps(lanes_e, ee);
  double nsum = 0.0, esum = 0.0;
  for (int l = 0; l < 8; ++l) { nsum += lanes_n[l]; esum += lanes_e[l]; }
  const float inv = 1.0f / s;
  for (int64_t k = dv; k < d; ++k) {
    const float x = db_at(row, is_half, k);
    const float hf = fminf(fmaxf(nearbyintf(x * inv), -top), top);
    const double r = (double)s * (double)hf;
    nsum += r * r;
    esum += ((double)x - r) * ((double)x - r);
    tail[k - dv] = (int32_t)hf;
  }
  *norm = (float)(sqrt(nsum) * 1.001);
  *err = (float)(sqrt(esum) * 1.001);
}

/* An unusable row (usable.h) as the value of zero in out [dk] (fill: the stored zero), with
 * scale 1 and norms 0. Returns 0, quantize_db_row*'s answer for such a row. */
static int zero_row(void *out, int64_t dk, int bits, int fill, float *scale, float *norm,
                    float *err) {
  if (bits == 8) memset(out, fill, (size_t)dk);
  else memset(out, 0, (size_t)(2 * dk));
  *scale = 1.0f;
  *norm = *err = 0.0f;
  return 0;
}

/* Lanes of x that make a row unusable (usable.h): |x| > the limit, or NaN. */
static inline __m256 unusable8(__m256 ax) {
  return _mm256_cmp_ps(ax, _mm256_set1_ps(PNV_USABLE_LIMIT), _CMP_NLE_UQ);
}

/* One db row x [d] as u8 (dh + OFFSET, dh in [-63, 63]) in out [dk] (OFFSET past d), with
 * its scale int8_scale(max|x|, 63), norm and error norm (finish_row). Returns 1, or 0 for an
 * unusable row (zero_row). */
static int quantize_db_row8(const void *row, int is_half, int64_t d, int64_t dk, uint8_t *out,
                            float *scale, float *norm, float *err) {
  const int64_t dv = d / 32 * 32;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mxv = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int64_t k = 0; k < dv; k += 8) {
    const __m256 ax = _mm256_andnot_ps(sign, load8(row, is_half, k));
    bad = _mm256_or_ps(bad, unusable8(ax));
    mxv = _mm256_max_ps(mxv, ax);
  }
  float mx = hmax8(mxv);
  int usable = !_mm256_movemask_ps(bad);
  for (int64_t k = dv; k < d; ++k) {
    const float ax = fabsf(db_at(row, is_half, k));
    usable &= ax <= PNV_USABLE_LIMIT;
    mx = fmaxf(mx, ax);
  }
  if (!usable) return zero_row(out, dk, 8, OFFSET, scale, norm, err);
  const float s = int8_scale(mx, 63.0f);
  const __m256 sv = _mm256_set1_ps(s), iv = _mm256_set1_ps(1.0f / s), top = _mm256_set1_ps(63.0f);
  const __m256i off = _mm256_set1_epi32(OFFSET), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256 nn = _mm256_setzero_ps(), ee = _mm256_setzero_ps();
  for (int64_t k = 0; k < dv; k += 32) {
    __m256i h[4];
    for (int u = 0; u < 4; ++u)
      h[u] = _mm256_add_epi32(
          _mm256_cvtps_epi32(round8(load8(row, is_half, k + 8 * u), sv, iv, top, &nn, &ee)), off);
    const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(h[0], h[1]),
                                              _mm256_packs_epi32(h[2], h[3]));
    _mm256_storeu_si256((__m256i *)(out + k), _mm256_permutevar8x32_epi32(bytes, order));
  }
  int32_t tail[32];
  finish_row(row, is_half, dv, d, s, 63.0f, nn, ee, tail, norm, err);
  for (int64_t k = dv; k < d; ++k) out[k] = (uint8_t)(tail[k - dv] + OFFSET);
  for (int64_t k = d; k < dk; ++k) out[k] = OFFSET;
  *scale = s;
  return 1;
}

/* One db row x [d] as int16 h in out [dk] (0 past d), with its scale (row_scale), norm and
 * error norm (finish_row). Returns 1, or 0 for an unusable row (zero_row). */
static int quantize_db_row16(const void *row, int is_half, int64_t d, int64_t dk, int16_t *out,
                             float *scale, float *norm, float *err) {
  const int64_t dv = d / 16 * 16;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mxv = _mm256_setzero_ps(), n2v = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int64_t k = 0; k < dv; k += 8) {
    const __m256 x = load8(row, is_half, k), ax = _mm256_andnot_ps(sign, x);
    bad = _mm256_or_ps(bad, unusable8(ax));
    mxv = _mm256_max_ps(mxv, ax);
    n2v = _mm256_fmadd_ps(x, x, n2v);
  }
  float mx = hmax8(mxv), lanes[8];
  int usable = !_mm256_movemask_ps(bad);
  _mm256_storeu_ps(lanes, n2v);
  double n2 = 0.0;
  for (int l = 0; l < 8; ++l) n2 += lanes[l];
  for (int64_t k = dv; k < d; ++k) {
    const float x = db_at(row, is_half, k);
    usable &= fabsf(x) <= PNV_USABLE_LIMIT;
    mx = fmaxf(mx, fabsf(x));
    n2 += (double)x * x;
  }
  if (!usable) return zero_row(out, dk, 16, 0, scale, norm, err);
  const float s = row_scale(mx, sqrt(n2), d);
  const __m256 sv = _mm256_set1_ps(s), iv = _mm256_set1_ps(1.0f / s), top = _mm256_set1_ps(HMAX);
  __m256 nn = _mm256_setzero_ps(), ee = _mm256_setzero_ps();
  for (int64_t k = 0; k < dv; k += 16) {
    const __m256i h0 = _mm256_cvtps_epi32(round8(load8(row, is_half, k), sv, iv, top, &nn, &ee));
    const __m256i h1 =
        _mm256_cvtps_epi32(round8(load8(row, is_half, k + 8), sv, iv, top, &nn, &ee));
    _mm256_storeu_si256((__m256i *)(out + k),
                        _mm256_permute4x64_epi64(_mm256_packs_epi32(h0, h1), 0xD8));
  }
  int32_t tail[16];
  finish_row(row, is_half, dv, d, s, HMAX, nn, ee, tail, norm, err);
  for (int64_t k = dv; k < d; ++k) out[k] = (int16_t)tail[k - dv];
  for (int64_t k = d; k < dk; ++k) out[k] = 0;
  *scale = s;
  return 1;
}

/* A candidate's rows db [pd, d] as int8 (u8: dh + OFFSET) or int16 (bits) [round_up(pd, MR),
 * dk] (padding rows and columns hold the value of zero), with per row its scale, norm,
 * error norm and whether it is usable (ok; an unusable row is stored as zeros). */
static void quantize_db(const void *db, int is_half, int bits, int64_t pd, int64_t d,
                        int64_t dk, void *dst, float *scale, float *norm, float *err,
                        uint8_t *ok) {
  const int64_t rows = round_up(pd, MR), row_bytes = dk * (bits / 8);
  if (bits == 8) memset((char *)dst + pd * row_bytes, OFFSET, (size_t)((rows - pd) * row_bytes));
  else memset((char *)dst + pd * row_bytes, 0, (size_t)((rows - pd) * row_bytes));
  for (int64_t j = 0; j < pd; ++j) {
    const void *row = (const char *)db + j * d * (is_half ? 2 : 4);
    void *out = (char *)dst + j * row_bytes;
    ok[j] = (uint8_t)(bits == 8
                          ? quantize_db_row8(row, is_half, d, dk, out, scale + j, norm + j, err + j)
                          : quantize_db_row16(row, is_half, d, dk, out, scale + j, norm + j,
                                              err + j));
  }
}

/* c[4][16] (row stride ldc) = (or +=, when acc) a tile of int32 sums, row r's halves in
 * out[2r] and out[2r + 1]. */
static inline void store_tile(int32_t *c, int64_t ldc, const __m256i *out, int acc) {
  for (int r = 0; r < 4; ++r)
    for (int h = 0; h < 2; ++h) {
      __m256i *p = (__m256i *)(c + r * ldc + 8 * h);
      _mm256_storeu_si256(p, acc ? _mm256_add_epi32(_mm256_loadu_si256(p), out[2 * r + h])
                                 : out[2 * r + h]);
    }
}

/* c[4][16] (row stride ldc) = (or +=, when acc) the int32 products of 4 u8 rows a (stride
 * lda, bytes [0, kn)) with one query panel bp [kn / 4][16][4]. */
static inline void kernel8_4x16(const uint8_t *a, int64_t lda, const int8_t *bp, int64_t kn,
                                int32_t *c, int64_t ldc, int acc) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
          c21 = c00, c30 = c00, c31 = c00;
  const __m256i one = _mm256_set1_epi16(1);
  const uint8_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
  for (int64_t k = 0; k < kn; k += 4) {
    const __m256i b0 = _mm256_load_si256((const __m256i *)(bp + k * NR));
    const __m256i b1 = _mm256_load_si256((const __m256i *)(bp + k * NR + 32));
    __m256i x;
    int32_t four;
#define STEP(ar, ca, cb)                                                       \
  memcpy(&four, (ar) + k, 4);                                                  \
  x = _mm256_set1_epi32(four);                                                 \
  ca = _mm256_add_epi32(ca, _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), one)); \
  cb = _mm256_add_epi32(cb, _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), one));
    STEP(a0, c00, c01)
    STEP(a1, c10, c11)
    STEP(a2, c20, c21)
    STEP(a3, c30, c31)
#undef STEP
  }
  const __m256i out[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
  store_tile(c, ldc, out, acc);
}

/* c[4][16] (row stride ldc) = (or +=, when acc) the int32 products of 4 int16 rows a
 * (stride lda, values [0, kn)) with one query panel bp [kn / 2][16][2]. */
static inline void kernel16_4x16(const int16_t *a, int64_t lda, const int16_t *bp, int64_t kn,
                                int32_t *c, int64_t ldc, int acc) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
          c21 = c00, c30 = c00, c31 = c00;
  const int16_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
  for (int64_t k = 0; k < kn; k += 2) {
    const __m256i b0 = _mm256_load_si256((const __m256i *)(bp + k * NR));
    const __m256i b1 = _mm256_load_si256((const __m256i *)(bp + k * NR + 16));
    __m256i x;
    int32_t two;
#define STEP(ar, ca, cb)                                        \
  memcpy(&two, (ar) + k, 4);                                    \
  x = _mm256_set1_epi32(two);                                   \
  ca = _mm256_add_epi32(ca, _mm256_madd_epi16(x, b0));          \
  cb = _mm256_add_epi32(cb, _mm256_madd_epi16(x, b1));
    STEP(a0, c00, c01)
    STEP(a1, c10, c11)
    STEP(a2, c20, c21)
    STEP(a3, c30, c31)
#undef STEP
  }
  const __m256i out[8] = {c00, c01, c10, c11, c20, c21, c30, c31};
  store_tile(c, ldc, out, acc);
}

/* s [pd4, ldq] int32 = a [pd4, dk] x panels^T, int8 (a as u8) or int16 (bits); blocked over
 * k so that the query panels of a block stay in cache while the candidate rows stream past
 * them. */
static void gemm(const void *a, int bits, int64_t pd4, int64_t dk, const void *panels,
                 int64_t ldq, int32_t *s) {
  const int64_t es = bits / 8;                              /* bytes per value */
  int64_t kc = PANEL_BYTES / (es * ldq) / 4 * 4;
  if (kc < 64) kc = 64;
  if (kc > dk) kc = dk;
  for (int64_t k0 = 0; k0 < dk; k0 += kc) {
    const int64_t kn = dk - k0 < kc ? dk - k0 : kc;
    for (int64_t r = 0; r < pd4; r += MR)
      for (int64_t p = 0; p < ldq / NR; ++p) {
        const char *ar = (const char *)a + (r * dk + k0) * es;
        const char *bp = (const char *)panels + (p * dk * NR + k0 * NR) * es;
        int32_t *c = s + r * ldq + p * NR;
        if (bits == 8)
          kernel8_4x16((const uint8_t *)ar, dk, (const int8_t *)bp, kn, c, ldq, k0 > 0);
        else
          kernel16_4x16((const int16_t *)ar, dk, (const int16_t *)bp, kn, c, ldq, k0 > 0);
      }
  }
}

/* Bounds shared by a candidate's entries. */
typedef struct {
  double out_rel;          /* float rounding of s~ relative to |s~| */
  double nq_max, eq_max;   /* the largest |q~_i| and |q_i - q~_i| */
} Bounds;

/* Thread scratch for one candidate. */
typedef struct {
  void *a;                        /* quantized rows [pd4, dk], int8 or int16 */
  float *sim;                     /* similarities [pd4, ldq] (the GEMM's int32, converted) */
  float *sd, *nd, *ed;            /* per row: scale, norm, error norm */
  uint8_t *ok;                    /* per row: usable (usable.h) */
  float *rmax, *r2, *rthr;        /* per row: maximum, runner-up, window threshold */
  float *cmax, *c2, *cthr;        /* per column */
  uint8_t *need;                  /* per column: its exact argmax is needed */
  int32_t *col_arg;               /* per needed column: its argmax row */
  float *col_best, *col_run;      /* per needed column: best and runner-up float32 dots */
  int32_t *window;                /* the columns of one row's window */
} Scratch;

static void scratch_free(Scratch *w) {
  free(w->a); free(w->sim); free(w->sd); free(w->nd); free(w->ed); free(w->rmax);
  free(w->r2); free(w->rthr); free(w->cmax); free(w->c2); free(w->cthr); free(w->need);
  free(w->col_arg); free(w->col_best); free(w->col_run); free(w->window); free(w->ok);
}

static int scratch_alloc(Scratch *w, int64_t pd, int64_t ldq, int64_t dk) {
  const int64_t pd4 = round_up(pd, MR);
  memset(w, 0, sizeof *w);
  w->a = aligned_alloc(64, (size_t)round_up(2 * pd4 * dk, 64));
  w->sim = aligned_alloc(64, (size_t)round_up(4 * pd4 * ldq, 64));
  w->sd = malloc(4 * pd4); w->nd = malloc(4 * pd4); w->ed = malloc(4 * pd4);
  w->rmax = malloc(4 * pd4); w->r2 = malloc(4 * pd4); w->rthr = malloc(4 * pd4);
  w->cmax = malloc(4 * ldq); w->c2 = malloc(4 * ldq); w->cthr = malloc(4 * ldq);
  w->need = malloc(ldq); w->col_arg = malloc(4 * ldq); w->col_best = malloc(4 * ldq);
  w->col_run = malloc(4 * ldq); w->window = malloc(4 * ldq); w->ok = malloc(pd4);
  return w->a && w->sim && w->sd && w->nd && w->ed && w->rmax && w->r2 && w->rthr && w->cmax &&
         w->c2 && w->cthr && w->need && w->col_arg && w->col_best && w->col_run && w->window &&
         w->ok;
}

/* Lanes [0, left) set (all when left >= 8), as a vector mask. */
static inline __m256 lanes_below(int64_t left) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)),
                                                idx));
}


/* Convert the GEMM's int32 sums to similarities in place and find every row's and
 * column's maximum and runner-up (two equal maxima make the runner-up equal the maximum).
 * Rows: lane-wise top two, then one lane at the maximum gives its second, the others their
 * maximum. Entries of unusable rows (w->ok) and of columns outside colmask (unusable query
 * rows, padding) become -inf: they reach no maximum and no window. */
static void fold(Scratch *w, int64_t pd, int64_t pq, int64_t ldq, const float *sq,
                 const int32_t *corr, const int32_t *colmask) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t i = 0; i < ldq; ++i) { w->cmax[i] = -INFINITY; w->c2[i] = -INFINITY; }
  for (int64_t j = 0; j < pd; ++j) {
    float *row = w->sim + j * ldq;
    if (!w->ok[j]) {
      for (int64_t i = 0; i < ldq; ++i) row[i] = -INFINITY;
      w->rmax[j] = w->r2[j] = -INFINITY;
      continue;
    }
    const __m256 f = _mm256_set1_ps(w->sd[j]);
    __m256 rm = ninf, rs = ninf;
    for (int64_t i = 0; i < pq; i += 8) {
      const __m256i raw = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(row + i)),
                                           _mm256_loadu_si256((const __m256i *)(corr + i)));
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(raw), _mm256_mul_ps(f, _mm256_loadu_ps(sq + i)));
      v = _mm256_blendv_ps(ninf, v, _mm256_loadu_ps((const float *)(colmask + i)));
      _mm256_storeu_ps(row + i, v);
      rs = _mm256_max_ps(rs, _mm256_min_ps(rm, v));
      rm = _mm256_max_ps(rm, v);
      const __m256 cm = _mm256_loadu_ps(w->cmax + i);
      _mm256_storeu_ps(w->c2 + i, _mm256_max_ps(_mm256_loadu_ps(w->c2 + i), _mm256_min_ps(cm, v)));
      _mm256_storeu_ps(w->cmax + i, _mm256_max_ps(cm, v));
    }
    const float mx = hmax8(rm);
    float lm[8], ls[8], second = -INFINITY;
    _mm256_storeu_ps(lm, rm);
    _mm256_storeu_ps(ls, rs);
    int first = 1;
    for (int l = 0; l < 8; ++l) {
      const float v = (lm[l] == mx && first) ? ls[l] : lm[l];
      if (lm[l] == mx) first = 0;
      if (v > second) second = v;
    }
    w->rmax[j] = mx;
    w->r2[j] = second;
  }
}

/* Window threshold of a row or column whose screened maximum is mx: every entry s~ is
 * within in_err + out_rel |s~| of its exact value, so entries below mx - 2E, with
 * E = (in_err + out_rel |mx|) / (1 - out_rel), are below the exact value of the maximum's
 * entry (as mutual_nn.c). */
static inline float window_threshold(float mx, double in_err, double out_rel) {
  const double e = (in_err + out_rel * fabs((double)mx)) / (1.0 - out_rel);
  return (float)(mx - 2.0 * e * 1.001 - 1e-7);
}

/* Exact dot product of db row j (float16/float32) and query row q (float32) in float64. */
static double exact_dot(const void *db, int is_half, int64_t j, const float *q, int64_t d) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t k = 0;
  for (; k + 8 <= d; k += 8) {
    const __m256 x = is_half
        ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)db + j * d + k)))
        : _mm256_loadu_ps((const float *)db + j * d + k);
    const __m256 y = _mm256_loadu_ps(q + k);
    lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                         _mm256_cvtps_pd(_mm256_castps256_ps128(y)), lo);
    hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),
                         _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)), hi);
  }
  double t[4], sum;
  _mm256_storeu_pd(t, _mm256_add_pd(lo, hi));
  sum = (t[0] + t[1]) + (t[2] + t[3]);
  const char *row = (const char *)db + j * d * (is_half ? 2 : 4);
  for (; k < d; ++k) sum += (double)db_at(row, is_half, k) * (double)q[k];
  return sum;
}

/* Mask of the entries i0..i0+7 of row that are >= thr (lanes past n cleared). */
static inline unsigned at_least(const float *row, int64_t i0, int64_t n, __m256 thr) {
  const __m256 m = _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + i0), thr, _CMP_GE_OQ),
                                 lanes_below(n - i0));
  return (unsigned)_mm256_movemask_ps(m);
}

typedef struct {
  const void *db;
  int is_half;
  const float *q;
  int64_t pd, pq, ldq, d;
  Scratch *w;
  double dot_err;        /* bound on a float32 dot product's error (dot_error) */
  int64_t *counts;       /* rows refined, columns refined, float32 and float64 dots */
} Candidate;

/* Float32 dot product of db row j and query row q: 16 products a step in two 8-lane fused
 * multiply-add chains. Within gamma_n |db_j| |q| of the exact value, n = d / 16 + 16 (see
 * dot_error). */
static inline float dot32(const void *db, int is_half, int64_t j, const float *q, int64_t d) {
  const char *row = (const char *)db + j * d * (is_half ? 2 : 4);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= d; k += 16) {
    a0 = _mm256_fmadd_ps(load8(row, is_half, k), _mm256_loadu_ps(q + k), a0);
    a1 = _mm256_fmadd_ps(load8(row, is_half, k + 8), _mm256_loadu_ps(q + k + 8), a1);
  }
  float t[8];
  _mm256_storeu_ps(t, _mm256_add_ps(a0, a1));
  float sum = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; k < d; ++k) sum += db_at(row, is_half, k) * q[k];
  return sum;
}

/* Bound on |dot32 - exact| for rows of norm at most x and y: a product passes through at
 * most d / 16 roundings in its lane, 1 + 3 to combine the lanes and 2 per tail element (at
 * most 15), so the error is within gamma_n sum |x_k y_k| <= gamma_n |x| |y| with
 * n = d / 16 + 34. */
static inline double dot_error(int64_t d, double x, double y) {
  const double nu = (double)(d / 16 + 34) * 0x1p-24;
  return nu / (1.0 - nu) * x * y * 1.01;
}

/* Start fetching the query rows of a window (their first 2 KB; the hardware prefetcher
 * follows a row once it is being read), so their misses overlap instead of queueing. */
static inline void prefetch_rows(const Candidate *c, const int32_t *rows, int64_t n) {
  for (int64_t k = 0; k < n; ++k)
    for (int64_t o = 0; o < c->d * 4 && o < 2048; o += 64)
      _mm_prefetch((const char *)(c->q + rows[k] * c->d) + o, _MM_HINT_T0);
}

/* Exact argmax over row j's window (entries >= rthr[j]); ties keep the lowest index.
 * Float32 dot products decide it when the best is more than 2 dot_err above the rest;
 * otherwise the window is recomputed in float64. */
static int64_t exact_row(const Candidate *c, int64_t j) {
  const float *row = c->w->sim + j * c->ldq;
  const __m256 thr = _mm256_set1_ps(c->w->rthr[j]);
  int32_t *window = c->w->window;
  int64_t n = 0;
  for (int64_t i0 = 0; i0 < c->pq; i0 += 8) {
    unsigned m = at_least(row, i0, c->pq, thr);
    while (m) {
      window[n++] = (int32_t)(i0 + __builtin_ctz(m));
      m &= m - 1;
    }
  }
  prefetch_rows(c, window, n);
  float best = -INFINITY, runner = -INFINITY;
  int64_t arg = -1;
  for (int64_t k = 0; k < n; ++k) {
    const float v = dot32(c->db, c->is_half, j, c->q + window[k] * c->d, c->d);
    if (v > best) { runner = best; best = v; arg = window[k]; }
    else if (v > runner) runner = v;
  }
  c->counts[2] += n;
  c->counts[0] += 1;
  if ((double)runner < (double)best - 2.0 * c->dot_err) return arg;
  double exact = -INFINITY;                   /* a near tie: float64 decides it */
  for (int64_t k = 0; k < n; ++k) {
    const double v = exact_dot(c->db, c->is_half, j, c->q + window[k] * c->d, c->d);
    if (v > exact) { exact = v; arg = window[k]; }
  }
  c->counts[3] += n;
  return arg;
}

/* Exact argmax of column i over its window (entries >= cthr[i]) in float64, walking the
 * column (only for near ties of the float32 pass). */
static int32_t exact_col_f64(const Candidate *c, int64_t i) {
  double best = -INFINITY;
  int32_t arg = -1;
  for (int64_t j = 0; j < c->pd; ++j) {
    if (c->w->sim[j * c->ldq + i] < c->w->cthr[i]) continue;
    const double v = exact_dot(c->db, c->is_half, j, c->q + i * c->d, c->d);
    c->counts[3] += 1;
    if (v > best) { best = v; arg = (int32_t)j; }
  }
  return arg;
}

/* Whether row j has an entry in both its own window and its column's window. */
static int may_be_mutual(const Candidate *c, int64_t j) {
  const float *row = c->w->sim + j * c->ldq;
  const __m256 thr = _mm256_set1_ps(c->w->rthr[j]);
  for (int64_t i = 0; i < c->pq; i += 8) {
    const __m256 v = _mm256_loadu_ps(row + i);
    const __m256 both = _mm256_and_ps(_mm256_cmp_ps(v, thr, _CMP_GE_OQ),
                                      _mm256_cmp_ps(v, _mm256_loadu_ps(c->w->cthr + i),
                                                    _CMP_GE_OQ));
    if (_mm256_movemask_ps(_mm256_and_ps(both, lanes_below(c->pq - i)))) return 1;
  }
  return 0;
}

/* Index of the first entry of row j that is >= its maximum. */
static int64_t first_at_max(const Candidate *c, int64_t j) {
  const float *row = c->w->sim + j * c->ldq;
  const __m256 mx = _mm256_set1_ps(c->w->rmax[j]);
  for (int64_t i0 = 0; i0 < c->pq; i0 += 8) {
    const unsigned m = at_least(row, i0, c->pq, mx);
    if (m) return i0 + __builtin_ctz(m);
  }
  return 0;
}

/* Exact argmax of every needed column over its window (entries >= cthr[i]), in one
 * row-major pass of float32 dot products (walking a column would touch a cache line per
 * row); a column whose runner-up comes within 2 dot_err of its best is recomputed in
 * float64. Rows go in increasing order and a later row must be strictly larger, so ties
 * keep the first row. Returns 0 once more than max_dots products were spent on this
 * candidate, else 1. */
static int exact_cols(const Candidate *c, int64_t dots_before, int64_t max_dots) {
  Scratch *w = c->w;
  int64_t needed = 0;
  float lowest = INFINITY;
  for (int64_t i = 0; i < c->ldq; ++i) {
    w->col_best[i] = -INFINITY;
    w->col_run[i] = -INFINITY;
    w->col_arg[i] = -1;
    if (i < c->pq && w->need[i]) {
      needed += 1;
      if (w->cthr[i] < lowest) lowest = w->cthr[i];
    }
  }
  if (!needed) return 1;
  c->counts[1] += needed;
  for (int64_t j = 0; j < c->pd; ++j) {
    if (w->rmax[j] < lowest) continue;        /* no entry of this row reaches any window */
    const float *row = w->sim + j * c->ldq;
    int64_t n = 0;
    for (int64_t i0 = 0; i0 < c->pq; i0 += 8) {
      const __m256 v = _mm256_loadu_ps(row + i0);
      const __m256 in = _mm256_cmp_ps(v, _mm256_loadu_ps(w->cthr + i0), _CMP_GE_OQ);
      unsigned m = (unsigned)_mm256_movemask_ps(_mm256_and_ps(in, lanes_below(c->pq - i0)));
      while (m) {
        const int64_t i = i0 + __builtin_ctz(m);
        m &= m - 1;
        if (w->need[i]) w->window[n++] = (int32_t)i;
      }
    }
    prefetch_rows(c, w->window, n);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = w->window[k];
      const float x = dot32(c->db, c->is_half, j, c->q + i * c->d, c->d);
      if (x > w->col_best[i]) {
        w->col_run[i] = w->col_best[i];
        w->col_best[i] = x;
        w->col_arg[i] = (int32_t)j;
      } else if (x > w->col_run[i]) {
        w->col_run[i] = x;
      }
    }
    c->counts[2] += n;
    if (c->counts[2] - dots_before > max_dots) return 0;
  }
  for (int64_t i = 0; i < c->pq; ++i)
    if (w->need[i] && (double)w->col_run[i] >= (double)w->col_best[i] - 2.0 * c->dot_err)
      w->col_arg[i] = exact_col_f64(c, i);
  return 1;
}

/* Mutual matches of one candidate from its folded screen. Returns 0, or 1 when it needs
 * more than max_dots exact products (out undefined then). */
static int decide(Candidate *c, const float *nq, const float *eq, const int32_t *colmask,
                  const Bounds *b, int64_t max_dots, int64_t *out) {
  Scratch *w = c->w;
  double nd_max = 0.0, ed_max = 0.0;
  for (int64_t j = 0; j < c->pd; ++j) {
    const double in_err = w->nd[j] * b->eq_max + w->ed[j] * b->nq_max + w->ed[j] * b->eq_max;
    w->rthr[j] = window_threshold(w->rmax[j], in_err, b->out_rel);
    if (w->nd[j] > nd_max) nd_max = w->nd[j];
    if (w->ed[j] > ed_max) ed_max = w->ed[j];
  }
  c->dot_err = dot_error(c->d, nd_max + ed_max, b->nq_max + b->eq_max);
  for (int64_t i = 0; i < c->ldq; ++i) {
    w->need[i] = 0;
    /* padding, unusable columns and columns without a usable row: an empty window */
    if (i >= c->pq || !colmask[i] || !(w->cmax[i] > -INFINITY)) {
      w->cthr[i] = INFINITY;
      continue;
    }
    const double in_err = nd_max * eq[i] + ed_max * nq[i] + ed_max * eq[i];
    w->cthr[i] = window_threshold(w->cmax[i], in_err, b->out_rel);
  }
  const int64_t dots_before = c->counts[2];
  for (int64_t j = 0; j < c->pd; ++j) {
    if (c->counts[2] - dots_before > max_dots) return 1;
    /* an unusable row, or a row without a usable column: no entry above -inf */
    if (!(w->rmax[j] > -INFINITY)) { out[j] = -1; continue; }
    int64_t i;
    if (w->r2[j] < w->rthr[j]) {
      i = first_at_max(c, j);                           /* row decided by the screen */
    } else {
      if (!may_be_mutual(c, j)) { out[j] = -1; continue; }
      i = exact_row(c, j);
      if (i < 0) { out[j] = -1; continue; }   /* an empty window (defensive: rows that take
                                                 part have finite entries) */
    }
    const float sji = w->sim[j * c->ldq + i];
    if (sji < w->cthr[i]) { out[j] = -1; continue; }
    if (w->c2[i] < w->cthr[i]) {
      /* column decided by the screen: the one row at its maximum is its argmax */
      out[j] = sji == w->cmax[i] ? i : -1;
    } else {
      w->need[i] = 1;                                   /* decided after exact_cols */
      out[j] = i;
    }
  }
  if (!exact_cols(c, dots_before, max_dots)) return 1;
  for (int64_t j = 0; j < c->pd; ++j)
    if (out[j] >= 0 && w->need[out[j]] && w->col_arg[out[j]] != j) out[j] = -1;
  return 0;
}

/* Mutual nearest neighbours of n_cand candidates db[cand] ([pd, d] float16/float32, read in
 * place, aligned to their element size) against the query q [pq, d] float32 prepared by
 * pnv_int_query with the same bits (panels, sq, corr, nq, eq, colmask). Candidates run in
 * parallel on OpenMP threads (torch's own pool when loaded into a torch process).
 * match [n_cand, pd] out; counts [4] accumulates rows refined, columns refined, float32 dot
 * products and float64 ones (near ties). A candidate that needs more than max_dots exact
 * products (descriptors the screen cannot separate) is abandoned: fallback[cand] = 1, its
 * match row undefined. Any values (see the file comment). Returns 0, -1 when out of memory,
 * or PNV_BAD_ARGS for refused sizes, bits or alignment (nothing written then). */
int pnv_int_mutual_nn(const void *const *db, int is_half, const float *q, int bits,
                      const void *panels, const float *sq, const int32_t *corr,
                      const float *nq, const float *eq, const int32_t *colmask, int64_t n_cand,
                      int64_t pd, int64_t pq, int64_t d, int64_t max_dots, int64_t *match,
                      int64_t *counts, uint8_t *fallback) {
  if (n_cand < 0 || n_cand > PNV_MAX_ROWS || pd < 0 || pd > PNV_MAX_ROWS || pq < 0 ||
      pq > PNV_MAX_ROWS || d < 1 || d > PNV_MAX_DIM || (bits != 8 && bits != 16) ||
      ((uintptr_t)panels & 31))
    return PNV_BAD_ARGS;
  if (pd == 0 || pq == 0) {                 /* nothing to match (and no GEMM of width 0) */
    for (int64_t k = 0; k < n_cand * pd; ++k) match[k] = -1;
    for (int64_t k = 0; k < n_cand; ++k) fallback[k] = 0;
    return 0;
  }
  const int64_t ldq = round_up(pq, NR), dk = round_up(d, 4), pd4 = round_up(pd, MR);
  /* the int32 sum is exact (int8: |sum| <= 127 * 63 * d; int16: row_scale); then three
   * float roundings (int32 -> float, sd * sq, the product), each 2^-24 relative */
  Bounds b = {3.0 * 0x1p-24 * 1.01, 0.0, 0.0};
  for (int64_t i = 0; i < pq; ++i) {
    if (nq[i] > b.nq_max) b.nq_max = nq[i];
    if (eq[i] > b.eq_max) b.eq_max = eq[i];
  }
  int failed = 0;
#pragma omp parallel
  {
    Scratch w;
    int64_t local[4] = {0, 0, 0, 0};
    const int ok = scratch_alloc(&w, pd, ldq, dk);
    if (!ok) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(dynamic)
    for (int64_t cand = 0; cand < n_cand; ++cand) {
      if (!ok) continue;
      quantize_db(db[cand], is_half, bits, pd, d, dk, w.a, w.sd, w.nd, w.ed, w.ok);
      gemm(w.a, bits, pd4, dk, panels, ldq, (int32_t *)w.sim);
      fold(&w, pd, pq, ldq, sq, corr, colmask);
      Candidate c = {db[cand], is_half, q, pd, pq, ldq, d, &w, 0.0, local};
      fallback[cand] = (uint8_t)decide(&c, nq, eq, colmask, &b, max_dots, match + cand * pd);
    }
    scratch_free(&w);
#pragma omp critical
    for (int k = 0; k < 4; ++k) counts[k] += local[k];
  }
  return failed ? -1 : 0;
}
