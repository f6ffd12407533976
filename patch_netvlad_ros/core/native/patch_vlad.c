/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * IntegralVLAD patch boxes of one image, intra-normalised, for a range of clusters and
 * one patch scale (core/model/vlad.py, patch_descriptors, explains the method).
 *
 * For cluster k and a size x size window p of the h x w feature map, the unnormalised
 * patch VLAD is V_kp = sum_{n in p} a_kn (x_n - c_k) [D]. This file computes it as the
 * torch path does (the residual, then sums along each row, then down the columns: exact
 * window sums, no running-sum differences), scales it to V_kp / (max(|V_kp| / s^2, eps)
 * s^2) and returns |V_kp| / s^2 (the authors' norm of the window mean) for the global
 * normalisation. The torch path spends most of its time on 0/1 band GEMMs with 30-40
 * long inner dimensions and on whole-tensor passes over memory; here one cluster's
 * residual (N x D floats) stays in cache and each sum is a handful of vector adds.
 *
 * Patches come out column-major (p = col * rows + row), as core/model/vlad.py's box_sums.
 *
 * Any values: the arithmetic is plain float sums, products and one division by a
 * positive normaliser, and no index depends on a value; NaN or Inf inputs give NaN or Inf
 * outputs, never a read or write outside the buffers. Sizes are checked (-2).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "vector.h"

/* Returned for refused sizes (nothing written). */
#define BAD_ARGS (-2)
/* Largest feature map side, feature dimension and cluster count accepted: far above any
 * image the model takes, and small enough that no size product overflows. */
#define MAX_SIDE (1 << 14)
#define MAX_DIM (1 << 16)

/* Whether size x size windows at this stride fit an h x w map. */
static int window_ok(int64_t h, int64_t w, int64_t size, int64_t stride) {
  return size >= 1 && size <= h && size <= w && stride >= 1;
}

/* sum_j v[j]^2 in VL partial sums (a plain loop would be one serial chain: the compiler
 * may not reorder float additions). */
static inline float sum_squares(const float *v, int64_t d) {
  vf acc = {0};
  int64_t j = 0;
  for (; j + VL <= d; j += VL) {
    const vf x = load(v + j);
    acc += x * x;
  }
  float s = 0.0f;
  for (int i = 0; i < VL; ++i) s += acc[i];
  for (; j < d; ++j) s += v[j] * v[j];
  return s;
}

/* out[j] = sum_{t < size} src[t * step + j] for j < width: one window's sum, in order
 * (the same sums as the torch path's band GEMMs, no running-sum differences). */
static inline void window_sum(const float *restrict src, int64_t step, int64_t size,
                              int64_t width, float *restrict out) {
  for (int64_t j = 0; j < width; ++j) out[j] = src[j];
  for (int64_t t = 1; t < size; ++t)
    for (int64_t j = 0; j < width; ++j) out[j] += src[t * step + j];
}

/* Row sums of a [h, w, ld] map for the size x size windows at the given stride:
 * out [h, cols, ld_out], columns j < width. */
static void row_sums(const float *restrict map, int64_t h, int64_t w, int64_t ld,
                     int64_t size, int64_t stride, int64_t width, int64_t ld_out,
                     float *restrict out) {
  const int64_t cols = (w - size) / stride + 1;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t col = 0; col < cols; ++col)
      window_sum(map + (y * w + col * stride) * ld, ld, size, width,
                 out + (y * cols + col) * ld_out);
}

/* xt [h*w, d] unit features (row n = location), a [K, h*w] soft assignments, c [K, d]
 * centroids. For clusters k0 <= k < k1 (kk = k - k0): out [P, (k1-k0)*d] row p holds the
 * intra-normalised V_kp at columns kk*d .. kk*d + d - 1 (out may be NULL: norms only);
 * norms [k1-k0, P] = |V_kp| / s^2. Clusters run in parallel on OpenMP threads. Returns 0,
 * -1 when out of memory, or -2 for refused sizes (the window must fit the map, eps must be
 * positive and finite; k1 must not exceed the clusters of a and c, which this cannot
 * check). */
int pnv_patch_vlad(const float *restrict xt, const float *restrict a, const float *restrict c,
                   int64_t h, int64_t w, int64_t d, int64_t k0, int64_t k1, int64_t size,
                   int64_t stride, float eps, float *restrict out, float *restrict norms) {
  if (h < 1 || h > MAX_SIDE || w < 1 || w > MAX_SIDE || d < 1 || d > MAX_DIM || k0 < 0 ||
      k1 < k0 || k1 - k0 > MAX_DIM || !window_ok(h, w, size, stride) || !(eps > 0.0f) ||
      eps == INFINITY)
    return BAD_ARGS;
  const int64_t rows = (h - size) / stride + 1, cols = (w - size) / stride + 1;
  const int64_t np = rows * cols, ld = (k1 - k0) * d, n = h * w;
  const float area = (float)(size * size);
  int failed = 0;
#pragma omp parallel
  {
    float *r = malloc(sizeof(float) * n * d);           /* residual [h, w, d] */
    float *hs = malloc(sizeof(float) * h * cols * d);   /* row sums [h, cols, d] */
    float *tmp = out ? NULL : malloc(sizeof(float) * d);  /* one box, when not kept */
    const int ok = r && hs && (out || tmp);
    if (!ok) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(dynamic)
    for (int64_t k = k0; k < k1; ++k) {
      if (!ok) continue;
      const float *restrict ck = c + k * d, *restrict ak = a + k * n;
      for (int64_t i = 0; i < n; ++i) {
        const float *restrict xi = xt + i * d;
        float *restrict ri = r + i * d;
        const float ai = ak[i];
        for (int64_t j = 0; j < d; ++j) ri[j] = ai * (xi[j] - ck[j]);
      }
      row_sums(r, h, w, d, size, stride, d, d, hs);
      float *restrict nk = norms + (k - k0) * np;
      for (int64_t col = 0; col < cols; ++col)
        for (int64_t row = 0; row < rows; ++row) {
          const int64_t p = col * rows + row;
          float *restrict v = out ? out + p * ld + (k - k0) * d : tmp;
          window_sum(hs + (row * stride * cols + col) * d, cols * d, size, d, v);
          const float norm = sqrtf(sum_squares(v, d)) / area;
          const float scale = 1.0f / ((norm > eps ? norm : eps) * area);
          nk[p] = norm;
          if (out)
            for (int64_t j = 0; j < d; ++j) v[j] *= scale;
        }
    }
    free(r);
    free(hs);
    free(tmp);
  }
  return failed ? -1 : 0;
}

/* Width of the blocks of projected dimensions one thread sums at a time: a block of one
 * cluster's cells (h*w x BLOCK floats) and its row sums stay in L2. */
#define BLOCK 64

/* Per-cell projection (core/model/vlad.py explains when it is used): u [kc, h*w, dp] holds the
 * projected residuals W_k a_kn (x_n - c_k) of kc clusters, weights[s] [kc, P_s] their
 * per-(cluster, patch) scales 1 / (max(|V_kp| / s^2, eps) s^2), and for each of the ns
 * scales acc[s] [P_s, dp] += sum_k weights[s][k, p] * (sum over window p of u[k, n, :]):
 * the same sum as the projection of the intra-normalised boxes, with the projection
 * taken per cell (h*w of them) instead of per patch. Window sums as above (rows, then
 * columns); patches column-major. Blocks of dimensions run in parallel on OpenMP
 * threads. Returns 0, -1 when out of memory, or -2 for refused sizes (every window must
 * fit the map). */
int pnv_patch_project_cells(const float *restrict u, int64_t kc, int64_t dp, int64_t h,
                            int64_t w, int64_t ns, const int64_t *sizes, const int64_t *strides,
                            const float *const *weights, float *const *acc) {
  if (kc < 0 || kc > MAX_DIM || dp < 1 || dp > MAX_DIM || h < 1 || h > MAX_SIDE || w < 1 ||
      w > MAX_SIDE || ns < 0 || ns > 64)
    return BAD_ARGS;
  for (int64_t s = 0; s < ns; ++s)
    if (!window_ok(h, w, sizes[s], strides[s])) return BAD_ARGS;
  const int64_t n = h * w;
  int64_t max_cols = 1;
  for (int64_t s = 0; s < ns; ++s) {
    const int64_t cols = (w - sizes[s]) / strides[s] + 1;
    if (cols > max_cols) max_cols = cols;
  }
  int failed = 0;
#pragma omp parallel
  {
    float *hs = malloc(sizeof(float) * h * max_cols * BLOCK);   /* row sums [h, cols, BLOCK] */
    if (!hs) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(dynamic)
    for (int64_t b0 = 0; b0 < dp; b0 += BLOCK) {
      if (!hs) continue;
      const int64_t bw = dp - b0 < BLOCK ? dp - b0 : BLOCK;
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t s = 0; s < ns; ++s) {
          const int64_t size = sizes[s], stride = strides[s];
          const int64_t rows = (h - size) / stride + 1, cols = (w - size) / stride + 1;
          row_sums(u + k * n * dp + b0, h, w, dp, size, stride, bw, BLOCK, hs);
          const float *restrict wk = weights[s] + k * rows * cols;
          float *restrict as = acc[s] + b0;
          for (int64_t col = 0; col < cols; ++col)
            for (int64_t row = 0; row < rows; ++row) {
              const int64_t p = col * rows + row;
              float v[BLOCK];
              window_sum(hs + (row * stride * cols + col) * BLOCK, cols * BLOCK, size, bw, v);
              const float wp = wk[p];
              float *restrict o = as + p * dp;
              for (int64_t j = 0; j < bw; ++j) o[j] += wp * v[j];
            }
        }
    }
    free(hs);
  }
  return failed ? -1 : 0;
}
