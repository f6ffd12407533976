/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * Winograd F(4x4, 3x3) transforms for 3x3 stride-1 pad-1 float32 convolutions in NHWC
 * (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
 *
 * Each 4 x 4 output tile is computed from a 6 x 6 input tile d as A^T [(G g G^T) . (B^T d B)] A:
 * 36 products per input and output channel pair instead of 144. Python (core/model/winograd.py)
 * transforms the weights once (U = G g G^T, [36, C, K]), this file transforms the input
 * tiles into V [36, T, C], torch multiplies the 36 matrices M = V U [36, T, K] on its GEMM,
 * and this file transforms M back to the output tiles, adding the bias and the ReLU.
 *
 * Tiles are numbered t = (image * tiles_h + tile_row) * tiles_w + tile_col over the whole
 * batch; a call handles tiles [t0, t0 + nt) so the caller can bound V and M in size.
 * Channels are processed one vector register at a time with GCC vector extensions (16 with
 * AVX-512, else 8); C and K must be multiples of 16.
 *
 * Any values: only float arithmetic and lane masks (ReLU, max), no index depends on a value;
 * NaN or Inf inputs give NaN or Inf outputs, never a read or write outside the buffers.
 * Sizes are checked: each entry returns 0, or -2 (nothing written) for channel counts that
 * are not whole vectors or a tile range outside the batch.
 */
#include <stdint.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#include "vector.h"

#define BAD_ARGS (-2)
/* Largest batch and map side accepted: no size product overflows. */
#define MAX_SIDE (1 << 16)

/* Whether n images of h x w with tiles [t0, t0 + nt) of 4 x 4 and ch channels are valid. */
static int tiles_ok(int64_t n, int64_t h, int64_t w, int64_t ch, int64_t t0, int64_t nt) {
  if (n < 0 || n > MAX_SIDE || h < 1 || h > MAX_SIDE || w < 1 || w > MAX_SIDE || ch < VL ||
      ch > MAX_SIDE || ch % VL || t0 < 0 || nt < 0)
    return 0;
  return t0 + nt <= n * ((h + 3) / 4) * ((w + 3) / 4);
}

/* Lane-wise max (GCC's C has no vector ?:); the backbone never sees NaN (inputs are
 * checked), so how a NaN would propagate does not matter here. */
static inline vf vmax(vf a, vf b) {
  const vi gt = a > b;
  return (vf)(((vi)a & gt) | ((vi)b & ~gt));
}

/* B^T applied to six vectors (one row or column of a tile). */
static inline void bt6(const vf d[6], vf r[6]) {
  r[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
  r[1] = -4.0f * (d[1] + d[2]) + d[3] + d[4];
  r[2] = 4.0f * (d[1] - d[2]) - d[3] + d[4];
  r[3] = 2.0f * (d[3] - d[1]) - d[2] + d[4];
  r[4] = 2.0f * (d[1] - d[3]) - d[2] + d[4];
  r[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

/* A^T applied to six vectors. */
static inline void at6(const vf m[6], vf o[4]) {
  vf s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  o[0] = m[0] + s12 + s34;
  o[1] = d12 + 2.0f * d34;
  o[2] = s12 + 4.0f * s34;
  o[3] = d12 + 8.0f * d34 + m[5];
}

/* x [n, h, w, c] -> v [36, nt, c] for tiles t0 .. t0 + nt - 1 (zero padding outside). */
int pnv_wino_input(const float *x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t t0,
                   int64_t nt, float *v) {
  if (!tiles_ok(n, h, w, c, t0, nt)) return BAD_ARGS;
  const int64_t th = (h + 3) / 4, tw = (w + 3) / 4;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nt; k++) {
    const int64_t t = t0 + k, img = t / (th * tw), ty = t / tw % th, tx = t % tw;
    const int64_t y0 = 4 * ty - 1, x0 = 4 * tx - 1;
    const float *base = x + img * h * w * c;
    for (int64_t ch = 0; ch < c; ch += VL) {
      vf d[6][6], tmp[6][6], col[6], out[6];
      for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
          const int64_t yy = y0 + i, xx = x0 + j;
          d[i][j] = (yy >= 0 && yy < h && xx >= 0 && xx < w)
                        ? load(base + (yy * w + xx) * c + ch)
                        : (vf){0};
        }
      for (int j = 0; j < 6; j++) { /* columns: tmp[:, j] = B^T d[:, j] */
        for (int i = 0; i < 6; i++) col[i] = d[i][j];
        bt6(col, out);
        for (int i = 0; i < 6; i++) tmp[i][j] = out[i];
      }
      for (int i = 0; i < 6; i++) { /* rows: V[i, :] = B^T tmp[i, :] */
        bt6(tmp[i], out);
        for (int j = 0; j < 6; j++) store(v + ((i * 6 + j) * nt + k) * c + ch, out[j]);
      }
    }
  }
  return 0;
}

/* m [36, nt, kc] -> y [n, h, w, kc] for tiles t0 .. t0 + nt - 1, plus bias, then ReLU
 * when relu != 0 (outputs outside the image are not written). pool != 0 fuses the 2x2
 * stride-2 max-pool that follows (floor mode): y is then [n, h / 2, w / 2, kc], each 4 x 4
 * tile giving 2 x 2 outputs (4-aligned tiles hold whole pooling windows; max is exact, so
 * the result is the unfused one bit for bit, without writing the full-size map). */
int pnv_wino_output(const float *m, const float *bias, int relu, int pool, int64_t n,
                    int64_t h, int64_t w, int64_t kc, int64_t t0, int64_t nt, float *y) {
  if (!tiles_ok(n, h, w, kc, t0, nt)) return BAD_ARGS;
  const int64_t th = (h + 3) / 4, tw = (w + 3) / 4;
  const int64_t oh = pool ? h / 2 : h, ow = pool ? w / 2 : w;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nt; k++) {
    const int64_t t = t0 + k, img = t / (th * tw), ty = t / tw % th, tx = t % tw;
    float *base = y + img * oh * ow * kc;
    for (int64_t ch = 0; ch < kc; ch += VL) {
      vf tmp[4][6], row[6], out[4][4];
      const vf b = load(bias + ch);
      for (int j = 0; j < 6; j++) { /* columns: tmp[:, j] = A^T M[:, j] */
        for (int i = 0; i < 6; i++) row[i] = load(m + ((i * 6 + j) * nt + k) * kc + ch);
        at6(row, out[0]);
        for (int i = 0; i < 4; i++) tmp[i][j] = out[0][i];
      }
      for (int i = 0; i < 4; i++) { /* rows: Y[i, :] = A^T tmp[i, :] */
        at6(tmp[i], out[i]);
        for (int j = 0; j < 4; j++) {
          vf r = out[i][j] + b;
          if (relu) r = (vf)((vi)r & (r > 0.0f)); /* lanes of -1 where positive */
          out[i][j] = r;
        }
      }
      if (!pool) {
        for (int i = 0; i < 4 && 4 * ty + i < h; i++)
          for (int j = 0; j < 4 && 4 * tx + j < w; j++)
            store(base + ((4 * ty + i) * w + 4 * tx + j) * kc + ch, out[i][j]);
        continue;
      }
      for (int i = 0; i < 2 && 2 * ty + i < oh; i++)
        for (int j = 0; j < 2 && 2 * tx + j < ow; j++) {
          const vf top = vmax(out[2 * i][2 * j], out[2 * i][2 * j + 1]);
          const vf bottom = vmax(out[2 * i + 1][2 * j], out[2 * i + 1][2 * j + 1]);
          store(base + ((2 * ty + i) * ow + 2 * tx + j) * kc + ch, vmax(top, bottom));
        }
    }
  }
  return 0;
}

/* Store bypassing the cache where the CPU can (an output map too large to stay cached,
 * read back by the next layer: saves reading each line before writing it). */
static inline void stream(float *p, vf v) {
#if defined(__AVX512F__)
  if (((uintptr_t)p & 63) == 0) {
    _mm512_stream_ps(p, (__m512)v);
    return;
  }
#elif defined(__AVX__)
  if (((uintptr_t)p & 31) == 0) {
    _mm256_stream_ps(p, (__m256)v);
    return;
  }
#endif
  store(p, v);
}

/* Order the streamed stores before the caller (another thread) reads them. */
static inline void fence(void) {
#ifdef __AVX__
  _mm_sfence();
#endif
}

/* Direct 3x3 stride-1 pad-1 convolution for few input channels (conv1_1: 3), where
 * Winograd's GEMMs would have an inner dimension of c: x [n, h, w, c], wt [3, 3, c, kc]
 * (kc a multiple of 4 * VL), bias [kc] -> y [n, h, w, kc], then ReLU when relu != 0. Two
 * output pixels at a time share each weight load (in L1: 9 c kc floats), their kc channels
 * taken 4 vectors at a time; inputs outside the image count as zero. Returns 0, or -2 for
 * refused sizes (kc not a multiple of 4 * VL). */
int pnv_conv3x3_direct(const float *x, int64_t n, int64_t h, int64_t w, int64_t c,
                       const float *wt, const float *bias, int64_t kc, int relu, float *y) {
  if (n < 0 || n > MAX_SIDE || h < 0 || h > MAX_SIDE || w < 0 || w > MAX_SIDE || c < 1 ||
      c > MAX_SIDE || kc < 4 * VL || kc > MAX_SIDE || kc % (4 * VL))
    return BAD_ARGS;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n * h; row++) {
    const int64_t img = row / h, yy = row % h;
    const float *base = x + img * h * w * c;
    float *out = y + row * w * kc;
    for (int64_t x0 = 0; x0 < w; x0 += 2) {
      const int pair = x0 + 1 < w;
      for (int64_t k0 = 0; k0 < kc; k0 += 4 * VL) {
        vf acc[2][4] = {{0}};
        for (int dy = 0; dy < 3; dy++) {
          const int64_t sy = yy + dy - 1;
          if (sy < 0 || sy >= h) continue;
          for (int dx = 0; dx < 3; dx++) {
            const float *g = wt + (dy * 3 + dx) * c * kc + k0;
            const int64_t sx = x0 + dx - 1;
            const int in0 = sx >= 0 && sx < w, in1 = pair && sx + 1 < w;
            const float *p0 = base + (sy * w + sx) * c;
            for (int64_t ci = 0; ci < c; ci++, g += kc) {
              const vf s0 = (vf){0} + (in0 ? p0[ci] : 0.0f);
              const vf s1 = (vf){0} + (in1 ? p0[c + ci] : 0.0f);
              for (int j = 0; j < 4; j++) {
                const vf wj = load(g + j * VL);
                acc[0][j] += s0 * wj;
                acc[1][j] += s1 * wj;
              }
            }
          }
        }
        for (int p = 0; p <= pair; p++)
          for (int j = 0; j < 4; j++) {
            vf r = acc[p][j] + load(bias + k0 + j * VL);
            if (relu) r = (vf)((vi)r & (r > 0.0f));
            stream(out + (x0 + p) * kc + k0 + j * VL, r);
          }
      }
    }
    fence();
  }
  return 0;
}
