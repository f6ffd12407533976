/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * Random adversarial driver for the C helpers in patch_netvlad_ros/core/native, linked
 * against objects built with AddressSanitizer and UndefinedBehaviorSanitizer (see
 * fuzz_native.py, which builds and runs it). Every buffer is its own heap block of exactly
 * the size the helper's contract names, so a read or write outside it stops the run.
 *
 * Inputs: random shapes (0 and 1 included), rows of unit vectors mixed with rows holding a
 * NaN, +-Inf, huge values (1e38, 65504, 65505), denormals, zeros, duplicates and near
 * duplicates, float16 or float32, candidate blocks at element-aligned but vector-unaligned
 * addresses, garbage similarities (random bits, NaN included) for the bf16 pass, and
 * arguments the helpers must refuse (-2, nothing written).
 *
 * Checks beyond the sanitizers: every match is -1 or a column index; no column is matched
 * twice; unusable rows and columns (usable.h) are never matched; and where the float64
 * brute force (long double sums over the usable rows) has no near tie, the screens' matches
 * equal it exactly. Built without OpenMP (one thread: the sanitizers see every access in
 * order; the threads only split candidates).
 *
 * Usage: fuzz_native SEED SECONDS MAX_ITERATIONS (0: no limit). Prints one line per helper:
 * calls, candidates checked against the brute force, candidates with near ties, refusals.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "usable.h"
#include "vector.h"

/* ---- the helpers' entry points (see their sources) ---- */
#ifdef HAVE_INT_MNN
int pnv_int_query(const float *q, int64_t pq, int64_t d, int bits, void *panels, float *scale,
                  int32_t *corr, float *norm, float *err, int32_t *colmask);
int pnv_int_mutual_nn(const void *const *db, int is_half, const float *q, int bits,
                      const void *panels, const float *sq, const int32_t *corr,
                      const float *nq, const float *eq, const int32_t *colmask, int64_t n_cand,
                      int64_t pd, int64_t pq, int64_t d, int64_t max_dots, int64_t *match,
                      int64_t *counts, uint8_t *fallback);
#endif
#ifdef HAVE_MUTUAL_NN
void pnv_to_bf16(const void *const *blocks, int is_half, int64_t n_blocks, int64_t n,
                 int64_t d, uint16_t *dst, float *norm, float *err);
int pnv_mutual_nn(uint16_t *sim, const void *const *db, int is_half, const float *q,
                  const float *nd, const float *ed, const float *nq, const float *eq,
                  int64_t n_cand, int64_t pd, int64_t pq, int64_t ld, int64_t d,
                  int64_t max_dots, int64_t *match, int64_t *counts, uint8_t *fallback);
int pnv_mutual_nn_amx(const void *const *db, int is_half, const float *q, const uint16_t *qp,
                      const float *nq, const float *eq, int64_t n_cand, int64_t pd,
                      int64_t pq, int64_t ld, int64_t d, int64_t max_dots, int64_t *match,
                      int64_t *counts, uint8_t *fallback);
int pnv_amx_init(void);
#endif
#ifdef HAVE_PATCH_VLAD
int pnv_patch_vlad(const float *xt, const float *a, const float *c, int64_t h, int64_t w,
                   int64_t d, int64_t k0, int64_t k1, int64_t size, int64_t stride, float eps,
                   float *out, float *norms);
int pnv_patch_project_cells(const float *u, int64_t kc, int64_t dp, int64_t h, int64_t w,
                            int64_t ns, const int64_t *sizes, const int64_t *strides,
                            const float *const *weights, float *const *acc);
#endif
#ifdef HAVE_WINOGRAD
int pnv_wino_input(const float *x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t t0,
                   int64_t nt, float *v);
int pnv_wino_output(const float *m, const float *bias, int relu, int pool, int64_t n,
                    int64_t h, int64_t w, int64_t kc, int64_t t0, int64_t nt, float *y);
int pnv_conv3x3_direct(const float *x, int64_t n, int64_t h, int64_t w, int64_t c,
                       const float *wt, const float *bias, int64_t kc, int relu, float *y);
#endif

/* ---- random numbers ---- */
static uint64_t rng_state;

static uint64_t next_u64(void) {          /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int64_t below(int64_t n) { return n > 0 ? (int64_t)(next_u64() % (uint64_t)n) : 0; }

static double uniform(void) { return (double)(next_u64() >> 11) * 0x1p-53; }

static double normal(void) {
  const double u = uniform() + 1e-300, v = uniform();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* A size: mostly small, often at the edges of the helpers' blocking (0, 1, 7, 8, 9, 15,
 * 16, 17, 31, 32, 33), up to top. */
static int64_t any_size(int64_t lo, int64_t top) {
  static const int64_t edges[] = {0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65};
  int64_t v = below(3) ? edges[below(sizeof edges / sizeof edges[0])] : below(top + 1);
  if (v < lo) v = lo;
  return v > top ? top : v;
}

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "fuzz_native: check failed at %s:%d: %s: ", __FILE__,   \
              __LINE__, #cond);                                               \
      fprintf(stderr, __VA_ARGS__);                                           \
      fprintf(stderr, "\n");                                                  \
      abort();                                                                \
    }                                                                         \
  } while (0)

/* malloc of exactly n bytes (never NULL for n = 0, so that every buffer is a heap block
 * the sanitizer guards). */
static void *block(size_t n) {
  void *p = malloc(n ? n : 1);
  CHECK(p != NULL, "out of memory (%zu bytes)", n);
  return p;
}

/* ---- adversarial rows ---- */
enum { ROW_UNIT, ROW_NAN, ROW_INF, ROW_NEG_INF, ROW_HUGE, ROW_LIMIT, ROW_OVER, ROW_DENORMAL,
       ROW_ZERO, ROW_CONST, ROW_DUP, ROW_NEAR, ROW_KINDS };

/* Fill row [d] with a kind of row (dup/near: of prev, when there is one). */
static void fill_row(float *row, int64_t d, int kind, const float *prev) {
  double n2 = 0.0;
  for (int64_t k = 0; k < d; ++k) {
    row[k] = (float)normal();
    n2 += (double)row[k] * row[k];
  }
  const float inv = n2 > 0.0 ? (float)(1.0 / sqrt(n2)) : 1.0f;
  for (int64_t k = 0; k < d; ++k) row[k] *= inv;
  if (d == 0) return;
  const int64_t at = below(d);
  switch (kind) {
    case ROW_NAN: row[at] = NAN; break;
    case ROW_INF: row[at] = INFINITY; break;
    case ROW_NEG_INF: row[at] = -INFINITY; break;
    case ROW_HUGE: row[at] = below(2) ? 1e38f : -3.4e38f; break;
    case ROW_LIMIT:                            /* usable: float16's largest finite value */
      for (int64_t k = 0; k < d; ++k) if (below(2)) row[k] = below(2) ? 65504.0f : -65504.0f;
      break;
    case ROW_OVER: row[at] = 65505.0f; break;   /* unusable in float32, 65504 in float16 */
    case ROW_DENORMAL:
      for (int64_t k = 0; k < d; ++k) row[k] *= below(2) ? 1e-40f : 1e-7f;  /* f16 too */
      break;
    case ROW_ZERO: memset(row, 0, sizeof(float) * (size_t)d); break;
    case ROW_CONST: for (int64_t k = 0; k < d; ++k) row[k] = 0.25f; break;
    case ROW_DUP: if (prev) memcpy(row, prev, sizeof(float) * (size_t)d); break;
    case ROW_NEAR:
      if (prev)
        for (int64_t k = 0; k < d; ++k) row[k] = prev[k] + (float)(1e-4 * normal());
      break;
    default: break;
  }
}

/* A row kind: mostly unit rows, with a chance (bad, 0..1) of another kind. */
static int any_kind(double bad) {
  return uniform() < bad ? (int)(1 + below(ROW_KINDS - 1)) : ROW_UNIT;
}

static uint16_t to_half(float x) {
  _Float16 h = (_Float16)x;
  uint16_t b;
  memcpy(&b, &h, 2);
  return b;
}

static float from_half(uint16_t b) {
  _Float16 h;
  memcpy(&h, &b, 2);
  return (float)h;
}

static int usable(const float *row, int64_t d) {
  for (int64_t k = 0; k < d; ++k)
    if (!(fabsf(row[k]) <= PNV_USABLE_LIMIT)) return 0;
  return 1;
}

/* n_cand candidates of pd rows [d]: the values as floats (what the helpers read, float16
 * rounded when half) in vals [n_cand][pd * d], and each candidate's block in its own heap
 * block at an element-aligned, vector-unaligned address (ptr[c]; base[c] to free). */
typedef struct {
  int64_t n_cand, pd, d;
  int is_half;
  float **vals;
  void **base;
  const void **ptr;
} Candidates;

static Candidates make_candidates(int64_t n_cand, int64_t pd, int64_t d, int is_half,
                                  double bad) {
  Candidates c = {n_cand, pd, d, is_half, block(sizeof(float *) * (size_t)n_cand),
                  block(sizeof(void *) * (size_t)n_cand),
                  block(sizeof(void *) * (size_t)n_cand)};
  const size_t es = is_half ? 2 : 4;
  for (int64_t b = 0; b < n_cand; ++b) {
    float *v = block(sizeof(float) * (size_t)(pd * d));
    for (int64_t j = 0; j < pd; ++j)
      fill_row(v + j * d, d, any_kind(bad), j ? v + (j - 1) * d : NULL);
    const int64_t shift = below(4);            /* elements: unaligned for the vectors */
    char *mem = block(es * (size_t)(pd * d + shift));
    void *at = mem + es * (size_t)shift;
    for (int64_t k = 0; k < pd * d; ++k) {
      if (is_half) {
        const uint16_t h = to_half(v[k]);
        memcpy((char *)at + 2 * k, &h, 2);
        v[k] = from_half(h);
      } else {
        memcpy((char *)at + 4 * k, v + k, 4);
      }
    }
    c.vals[b] = v;
    c.base[b] = mem;
    c.ptr[b] = at;
  }
  return c;
}

static void free_candidates(Candidates *c) {
  for (int64_t b = 0; b < c->n_cand; ++b) { free(c->vals[b]); free(c->base[b]); }
  free(c->vals); free(c->base); free(c->ptr);
}

/* Brute force: exact mutual nearest neighbours of the usable rows of db [pd, d] and q
 * [pq, d] (long double sums, lowest index on ties) into want [pd]. Returns 1 when some
 * row's or column's best two (over usable entries) are within a rounding tolerance but not
 * equal: float64 sums may order them either way. */
static int brute_force(const float *db, const float *q, int64_t pd, int64_t pq, int64_t d,
                       int64_t *want) {
  long double *sim = block(sizeof(long double) * (size_t)(pd * pq + 1));
  uint8_t *okd = block((size_t)pd), *okq = block((size_t)pq);
  double *nd = block(sizeof(double) * (size_t)pd), *nq = block(sizeof(double) * (size_t)pq);
  for (int64_t j = 0; j < pd; ++j) okd[j] = (uint8_t)usable(db + j * d, d);
  for (int64_t i = 0; i < pq; ++i) okq[i] = (uint8_t)usable(q + i * d, d);
  for (int64_t j = 0; j < pd; ++j) {
    nd[j] = 0.0;
    if (okd[j]) for (int64_t k = 0; k < d; ++k) nd[j] += (double)db[j * d + k] * db[j * d + k];
    nd[j] = sqrt(nd[j]);
  }
  for (int64_t i = 0; i < pq; ++i) {
    nq[i] = 0.0;
    if (okq[i]) for (int64_t k = 0; k < d; ++k) nq[i] += (double)q[i * d + k] * q[i * d + k];
    nq[i] = sqrt(nq[i]);
  }
  for (int64_t j = 0; j < pd; ++j)
    for (int64_t i = 0; i < pq; ++i) {
      long double s = 0.0L;
      if (okd[j] && okq[i])
        for (int64_t k = 0; k < d; ++k) s += (long double)db[j * d + k] * q[i * d + k];
      sim[j * pq + i] = s;
    }
  /* float64 sums of d exact products err by at most d 2^-53 |x| |q|: gaps within a few
   * times that may come out either way in the helpers' float64 refinement */
  double nd_max = 0.0, nq_max = 0.0;
  for (int64_t j = 0; j < pd; ++j) nd_max = nd[j] > nd_max ? nd[j] : nd_max;
  for (int64_t i = 0; i < pq; ++i) nq_max = nq[i] > nq_max ? nq[i] : nq_max;
  const long double rel = 16.0L * (long double)d * 0x1p-53L;
  int ambiguous = 0;
  int64_t *col_arg = block(sizeof(int64_t) * (size_t)pq);
  for (int64_t i = 0; i < pq; ++i) {
    long double best = -INFINITY, second = -INFINITY;
    col_arg[i] = -1;
    if (!okq[i]) continue;
    for (int64_t j = 0; j < pd; ++j) {
      if (!okd[j]) continue;
      const long double v = sim[j * pq + i];
      if (v > best) { second = best; best = v; col_arg[i] = j; }
      else if (v > second) second = v;
    }
    const long double tol = rel * (long double)nq[i] * (long double)nd_max;
    if (best != second && best - second <= tol) ambiguous = 1;
  }
  for (int64_t j = 0; j < pd; ++j) {
    want[j] = -1;
    if (!okd[j]) continue;
    long double best = -INFINITY, second = -INFINITY;
    int64_t arg = -1;
    for (int64_t i = 0; i < pq; ++i) {
      if (!okq[i]) continue;
      const long double v = sim[j * pq + i];
      if (v > best) { second = best; best = v; arg = i; }
      else if (v > second) second = v;
    }
    const long double tol = rel * (long double)nd[j] * (long double)nq_max;
    if (best != second && best - second <= tol) ambiguous = 1;
    if (arg >= 0 && col_arg[arg] == j) want[j] = arg;
  }
  free(col_arg); free(sim); free(okd); free(okq); free(nd); free(nq);
  return ambiguous;
}

typedef struct {
  const char *name;
  int64_t calls, checked, near_ties, refused, fallbacks;
} Tally;

/* Checks on one candidate's matches got [pd] against its rows and the query's: indices in
 * range, no column twice, unusable rows and columns unmatched, and (when compare) equal to
 * the brute force. */
static void check_matches(Tally *t, const int64_t *got, const float *db, const float *q,
                          int64_t pd, int64_t pq, int64_t d, int compare) {
  uint8_t *taken = block((size_t)pq);
  memset(taken, 0, (size_t)pq);
  for (int64_t j = 0; j < pd; ++j) {
    const int64_t i = got[j];
    CHECK(i >= -1 && i < pq, "%s: match %lld of row %lld outside [-1, %lld)", t->name,
          (long long)i, (long long)j, (long long)pq);
    if (i < 0) continue;
    CHECK(!taken[i], "%s: column %lld matched twice", t->name, (long long)i);
    taken[i] = 1;
    CHECK(usable(db + j * d, d), "%s: unusable row %lld matched", t->name, (long long)j);
    CHECK(usable(q + i * d, d), "%s: unusable column %lld matched", t->name, (long long)i);
  }
  free(taken);
  if (!compare) return;
  int64_t *want = block(sizeof(int64_t) * (size_t)pd);
  if (brute_force(db, q, pd, pq, d, want)) {
    t->near_ties += 1;
  } else {
    t->checked += 1;
    for (int64_t j = 0; j < pd; ++j)
      CHECK(got[j] == want[j], "%s: row %lld matched %lld, the brute force %lld (pd %lld pq "
            "%lld d %lld)", t->name, (long long)j, (long long)got[j], (long long)want[j],
            (long long)pd, (long long)pq, (long long)d);
  }
  free(want);
}

/* A query [pq, d] float32 of adversarial rows (bad: the chance of a non-unit row). */
static float *make_query(int64_t pq, int64_t d, double bad) {
  float *q = block(sizeof(float) * (size_t)(pq * d));
  for (int64_t i = 0; i < pq; ++i)
    fill_row(q + i * d, d, any_kind(bad), i ? q + (i - 1) * d : NULL);
  return q;
}

/* Candidates whose rows are near the query's (so that many rows match). */
static void near_query(Candidates *c, const float *q, int64_t pq) {
  if (pq == 0) return;
  for (int64_t b = 0; b < c->n_cand; ++b)
    for (int64_t j = 0; j < c->pd; ++j) {
      if (below(3) == 0) continue;
      const float *src = q + below(pq) * c->d;
      if (!usable(src, c->d)) continue;
      float *v = c->vals[b] + j * c->d;
      char *at = (char *)c->ptr[b];
      for (int64_t k = 0; k < c->d; ++k) {
        float x = src[k] + (float)(0.2 * normal() / sqrt((double)c->d));
        if (c->is_half) {
          const uint16_t h = to_half(x);
          memcpy(at + 2 * (j * c->d + k), &h, 2);
          x = from_half(h);
        } else {
          memcpy(at + 4 * (j * c->d + k), &x, 4);
        }
        v[k] = x;
      }
    }
}

#ifdef HAVE_INT_MNN
static void fuzz_int(Tally *t) {
  const int64_t pq = any_size(0, 70), pd = any_size(0, 70), d = any_size(1, 200);
  const int64_t n_cand = below(4), bits = below(2) ? 8 : 16;
  const double bad = below(2) ? 0.0 : uniform() * 0.5;
  float *q = make_query(pq, d, below(3) ? 0.0 : bad);
  Candidates c = make_candidates(n_cand, pd, d, (int)below(2), bad);
  near_query(&c, q, pq);
  const int64_t ldq = (pq + 15) / 16 * 16, dk = (d + 3) / 4 * 4;
  const size_t panel_bytes = (size_t)((ldq * dk * (bits / 8) + 63) / 64 * 64) + 64;
  char *panels = aligned_alloc(64, panel_bytes);
  float *sq = block(4 * (size_t)ldq), *nq = block(4 * (size_t)ldq), *eq = block(4 * (size_t)ldq);
  int32_t *corr = block(4 * (size_t)ldq), *colmask = block(4 * (size_t)ldq);
  t->calls += 1;
  /* refused: panels not 32-byte aligned, or sizes out of range; nothing written */
  if (below(8) == 0) {
    const int which = (int)below(3);
    const int rc = pnv_int_query(q, which == 1 ? -1 : pq, which == 2 ? PNV_MAX_DIM + 1 : d,
                                 (int)bits, which == 0 ? panels + 16 : panels, sq, corr, nq, eq,
                                 colmask);
    CHECK(rc == PNV_BAD_ARGS, "int query: refused arguments returned %d", rc);
    t->refused += 1;
  }
  CHECK(pnv_int_query(q, pq, d, (int)bits, panels, sq, corr, nq, eq, colmask) == 0,
        "int query refused pq %lld d %lld", (long long)pq, (long long)d);
  int64_t *match = block(sizeof(int64_t) * (size_t)(n_cand * pd)), counts[4] = {0, 0, 0, 0};
  uint8_t *fallback = block((size_t)n_cand);
  const int64_t max_dots = below(4) == 0 ? (int64_t)below(3) - 1 : pd * pq;
  if (below(8) == 0) {
    const int rc = pnv_int_mutual_nn(c.ptr, c.is_half, q, (int)bits, panels, sq, corr, nq, eq,
                                     colmask, -1, pd, pq, d, max_dots, match, counts, fallback);
    CHECK(rc == PNV_BAD_ARGS, "int match: a negative count returned %d", rc);
    t->refused += 1;
  }
  const int rc = pnv_int_mutual_nn(c.ptr, c.is_half, q, (int)bits, panels, sq, corr, nq, eq,
                                   colmask, n_cand, pd, pq, d, max_dots, match, counts,
                                   fallback);
  CHECK(rc == 0, "int match returned %d", rc);
  for (int64_t b = 0; b < n_cand; ++b) {
    if (fallback[b]) { t->fallbacks += 1; continue; }
    check_matches(t, match + b * pd, c.vals[b], q, pd, pq, d, 1);
  }
  free(match); free(fallback); free(panels); free(sq); free(nq); free(eq); free(corr);
  free(colmask); free(q);
  free_candidates(&c);
}
#endif

#ifdef HAVE_MUTUAL_NN
static float bf16_value(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint16_t bf16_round(float x) {        /* nearest even, as the GEMM's output */
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);   /* NaN */
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* The bf16 screen: pnv_to_bf16 of query and candidates, a bf16 GEMM with float32
 * accumulation (as oneDNN's; or random bits when garbage), pnv_mutual_nn; and where the
 * tile unit is granted, pnv_mutual_nn_amx on the same inputs. */
static void fuzz_bf16(Tally *t, Tally *tamx, int amx) {
  int64_t pq = any_size(0, 70), pd = any_size(0, 70), d = any_size(1, 200);
  const int fused = amx && below(2);
  if (fused) {                                     /* the tile unit: d % 32, pd >= 1 */
    d = (d + 31) / 32 * 32;
    if (pd == 0) pd = 1;
  }
  const int64_t n_cand = below(4);
  const int garbage = below(6) == 0;
  const double bad = below(2) ? 0.0 : uniform() * 0.5;
  float *q = make_query(pq, d, below(3) ? 0.0 : bad);
  Candidates c = make_candidates(n_cand, pd, d, (int)below(2), bad);
  near_query(&c, q, pq);
  const int64_t ld = fused ? (pq + 31) / 32 * 32 + 32 * below(2) : pq + below(5);
  uint16_t *qb = block(2 * (size_t)(pq * d));
  float *nq = block(4 * (size_t)pq), *eq = block(4 * (size_t)pq);
  const void *qptr = q;
  pnv_to_bf16(&qptr, 0, 1, pq, d, qb, nq, eq);
  for (int64_t i = 0; i < pq; ++i)
    CHECK((nq[i] < 0.0f) == !usable(q + i * d, d), "to_bf16: query row %lld mark",
          (long long)i);
  int64_t *match = block(sizeof(int64_t) * (size_t)(n_cand * pd)), counts[3] = {0, 0, 0};
  uint8_t *fallback = block((size_t)n_cand);
  const int64_t max_dots = below(4) == 0 ? (int64_t)below(3) - 1 : pd * pq;
  if (!fused) {
    uint16_t *db = block(2 * (size_t)(n_cand * pd * d));
    float *nd = block(4 * (size_t)(n_cand * pd)), *ed = block(4 * (size_t)(n_cand * pd));
    pnv_to_bf16(c.ptr, c.is_half, n_cand, pd, d, db, nd, ed);
    uint16_t *sim = block(2 * (size_t)(n_cand * pd * ld));
    for (int64_t r = 0; r < n_cand * pd; ++r)
      for (int64_t i = 0; i < ld; ++i) {
        float acc = 0.0f;
        if (garbage) {
          sim[r * ld + i] = (uint16_t)next_u64();
          continue;
        }
        if (i < pq)
          for (int64_t k = 0; k < d; ++k)
            acc += bf16_value(db[r * d + k]) * bf16_value(qb[i * d + k]);
        sim[r * ld + i] = bf16_round(acc);
      }
    t->calls += 1;
    if (below(8) == 0) {
      const int rc = pnv_mutual_nn(sim, c.ptr, c.is_half, q, nd, ed, nq, eq, n_cand, pd, pq,
                                   pq - 1, d, max_dots, match, counts, fallback);
      CHECK(rc == PNV_BAD_ARGS || pq == 0, "bf16 match: ld < pq returned %d", rc);
      t->refused += 1;
    }
    const int rc = pnv_mutual_nn(sim, c.ptr, c.is_half, q, nd, ed, nq, eq, n_cand, pd, pq, ld,
                                 d, max_dots, match, counts, fallback);
    CHECK(rc == 0, "bf16 match returned %d", rc);
    for (int64_t b = 0; b < n_cand; ++b) {
      if (fallback[b]) { t->fallbacks += 1; continue; }
      check_matches(t, match + b * pd, c.vals[b], q, pd, pq, d, !garbage);
    }
    free(db); free(nd); free(ed); free(sim);
  } else {
    /* the query's bf16 columns in the tile unit's layout [ld / 32][d / 2][32][2] */
    const size_t qp_bytes = (size_t)(ld * d * 2 + 63) / 64 * 64;
    uint16_t *qp = aligned_alloc(64, qp_bytes ? qp_bytes : 64);
    for (int64_t b = 0; b < ld / 32; ++b)
      for (int64_t k2 = 0; k2 < d / 2; ++k2)
        for (int64_t col = 0; col < 32; ++col)
          for (int p = 0; p < 2; ++p) {
            const int64_t i = b * 32 + col;
            qp[((b * (d / 2) + k2) * 32 + col) * 2 + p] = i < pq ? qb[i * d + 2 * k2 + p] : 0;
          }
    tamx->calls += 1;
    const int rc = pnv_mutual_nn_amx(c.ptr, c.is_half, q, qp, nq, eq, n_cand, pd, pq, ld, d,
                                     max_dots, match, counts, fallback);
    CHECK(rc == 0, "amx match returned %d (pd %lld pq %lld ld %lld d %lld)", rc,
          (long long)pd, (long long)pq, (long long)ld, (long long)d);
    for (int64_t b = 0; b < n_cand; ++b) {
      if (fallback[b]) { tamx->fallbacks += 1; continue; }
      check_matches(tamx, match + b * pd, c.vals[b], q, pd, pq, d, 1);
    }
    if (below(8) == 0) {
      const int bad_rc = pnv_mutual_nn_amx(c.ptr, c.is_half, q, qp, nq, eq, n_cand, pd, pq,
                                           ld, d + 1, max_dots, match, counts, fallback);
      CHECK(bad_rc == PNV_BAD_ARGS, "amx match: d %% 32 != 0 returned %d", bad_rc);
      tamx->refused += 1;
    }
    free(qp);
  }
  free(match); free(fallback); free(qb); free(nq); free(eq); free(q);
  free_candidates(&c);
}
#endif

/* n adversarial floats: mostly normal values, some NaN, Inf, huge, denormal. */
static float *any_floats(int64_t n) {
  float *x = block(sizeof(float) * (size_t)n);
  const double bad = below(2) ? 0.0 : uniform() * 0.3;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = (float)normal();
    if (uniform() < bad) {
      static const float odd[] = {NAN, INFINITY, -INFINITY, 3.4e38f, -1e38f, 1e-40f, 0.0f};
      x[i] = odd[below(sizeof odd / sizeof odd[0])];
    }
  }
  return x;
}

#ifdef HAVE_PATCH_VLAD
static void fuzz_patch_vlad(Tally *t) {
  const int64_t h = any_size(1, 9), w = any_size(1, 9), d = any_size(1, 40), k = any_size(1, 3);
  const int64_t k0 = below(k + 1), k1 = k0 + below(k - k0 + 1);
  const int64_t size = 1 + below(h < w ? h : w), stride = 1 + below(3);
  const int64_t rows = (h - size) / stride + 1, cols = (w - size) / stride + 1, np = rows * cols;
  float *xt = any_floats(h * w * d), *a = any_floats(k * h * w), *c = any_floats(k * d);
  float *out = below(2) ? block(sizeof(float) * (size_t)(np * (k1 - k0) * d)) : NULL;
  float *norms = block(sizeof(float) * (size_t)((k1 - k0) * np));
  t->calls += 1;
  CHECK(pnv_patch_vlad(xt, a, c, h, w, d, k0, k1, size, stride, 1e-12f, out, norms) == 0,
        "patch_vlad refused h %lld w %lld size %lld", (long long)h, (long long)w,
        (long long)size);
  /* refused: a window larger than the map, a zero stride, eps <= 0 */
  const int which = (int)below(3);
  const int rc = pnv_patch_vlad(xt, a, c, h, w, d, k0, k1, which == 0 ? (h > w ? h : w) + 1 : size,
                                which == 1 ? 0 : stride, which == 2 ? 0.0f : 1e-12f, out, norms);
  CHECK(rc == PNV_BAD_ARGS, "patch_vlad: refused arguments returned %d", rc);
  t->refused += 1;
  /* per-cell projection: u [kc, h*w, dp], weights and acc per scale */
  const int64_t kc = below(3), dp = any_size(1, 70), ns = 1 + below(2);
  int64_t sizes[2], strides[2];
  float *weights[2], *acc[2];
  float *u = any_floats(kc * h * w * dp);
  for (int64_t s = 0; s < ns; ++s) {
    sizes[s] = 1 + below(h < w ? h : w);
    strides[s] = 1 + below(3);
    const int64_t p = ((h - sizes[s]) / strides[s] + 1) * ((w - sizes[s]) / strides[s] + 1);
    weights[s] = any_floats(kc * p);
    acc[s] = any_floats(p * dp);
  }
  CHECK(pnv_patch_project_cells(u, kc, dp, h, w, ns, sizes, strides,
                                (const float *const *)weights, acc) == 0,
        "project_cells refused");
  const int64_t keep = sizes[0];
  sizes[0] = (h > w ? h : w) + 1;
  CHECK(pnv_patch_project_cells(u, kc, dp, h, w, ns, sizes, strides,
                                (const float *const *)weights, acc) == PNV_BAD_ARGS,
        "project_cells: a window larger than the map was not refused");
  sizes[0] = keep;
  t->refused += 1;
  for (int64_t s = 0; s < ns; ++s) { free(weights[s]); free(acc[s]); }
  free(u); free(xt); free(a); free(c); free(out); free(norms);
}
#endif

#ifdef HAVE_WINOGRAD
static void fuzz_winograd(Tally *t) {
  const int64_t n = 1 + below(2), h = any_size(1, 13), w = any_size(1, 13);
  const int64_t c = VL * (1 + below(2)), kc = VL * (1 + below(2));
  const int64_t tiles = n * ((h + 3) / 4) * ((w + 3) / 4);
  const int64_t t0 = below(tiles), nt = below(tiles - t0 + 1);
  float *x = any_floats(n * h * w * c), *v = block(sizeof(float) * (size_t)(36 * nt * c));
  t->calls += 1;
  CHECK(pnv_wino_input(x, n, h, w, c, t0, nt, v) == 0, "wino_input refused");
  CHECK(pnv_wino_input(x, n, h, w, c, t0, tiles - t0 + 1, v) == PNV_BAD_ARGS,
        "wino_input: tiles past the batch were not refused");
  CHECK(pnv_wino_input(x, n, h, w, c + 1, t0, nt, v) == PNV_BAD_ARGS,
        "wino_input: a partial vector of channels was not refused");
  const int pool = (int)below(2);
  const int64_t oh = pool ? h / 2 : h, ow = pool ? w / 2 : w;
  float *m = any_floats(36 * nt * kc), *bias = any_floats(kc);
  float *y = block(sizeof(float) * (size_t)(n * oh * ow * kc));
  CHECK(pnv_wino_output(m, bias, (int)below(2), pool, n, h, w, kc, t0, nt, y) == 0,
        "wino_output refused");
  CHECK(pnv_wino_output(m, bias, 1, pool, n, h, w, kc, -1, nt, y) == PNV_BAD_ARGS,
        "wino_output: a negative first tile was not refused");
  const int64_t cd = 1 + below(5), kd = 4 * VL * (1 + below(2));
  float *xd = any_floats(n * h * w * cd), *wt = any_floats(9 * cd * kd), *bd = any_floats(kd);
  float *yd = block(sizeof(float) * (size_t)(n * h * w * kd));
  const int relu = (int)below(2);
  CHECK(pnv_conv3x3_direct(xd, n, h, w, cd, wt, bd, kd, relu, yd) == 0, "direct refused");
  if (relu)
    for (int64_t i = 0; i < n * h * w * kd; ++i)
      CHECK(!(yd[i] < 0.0f), "direct: ReLU output %g < 0", (double)yd[i]);
  CHECK(pnv_conv3x3_direct(xd, n, h, w, cd, wt, bd, kd + VL, relu, yd) == PNV_BAD_ARGS,
        "direct: a partial block of output channels was not refused");
  t->refused += 4;
  free(x); free(v); free(m); free(bias); free(y); free(xd); free(wt); free(bd); free(yd);
}
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SEED SECONDS MAX_ITERATIONS\n", argv[0]);
    return 2;
  }
  rng_state = strtoull(argv[1], NULL, 10);
  const double seconds = atof(argv[2]);
  const long long max_iter = atoll(argv[3]);
  Tally ti = {"int_mnn", 0, 0, 0, 0, 0}, tb = {"mutual_nn_bf16", 0, 0, 0, 0, 0};
  Tally ta = {"mutual_nn_amx", 0, 0, 0, 0, 0}, tv = {"patch_vlad", 0, 0, 0, 0, 0};
  Tally tw = {"winograd", 0, 0, 0, 0, 0};
  int amx = 0;
#ifdef HAVE_MUTUAL_NN
  amx = pnv_amx_init();
#endif
  const double start = now();
  long long it = 0;
  for (; (max_iter <= 0 || it < max_iter) && now() - start < seconds; ++it) {
    switch (it % 4) {
#ifdef HAVE_INT_MNN
      case 0: fuzz_int(&ti); break;
#endif
#ifdef HAVE_MUTUAL_NN
      case 1: fuzz_bf16(&tb, &ta, amx); break;
#endif
#ifdef HAVE_PATCH_VLAD
      case 2: fuzz_patch_vlad(&tv); break;
#endif
#ifdef HAVE_WINOGRAD
      case 3: fuzz_winograd(&tw); break;
#endif
      default: break;
    }
  }
  const Tally *all[] = {&ti, &tb, &ta, &tv, &tw};
  printf("fuzz_native: %lld iterations in %.1f s (seed %s)\n", it, now() - start, argv[1]);
  for (int k = 0; k < 5; ++k)
    printf("%-18s calls %-7lld checked %-7lld near_ties %-5lld fallbacks %-5lld refused %lld\n",
           all[k]->name, (long long)all[k]->calls, (long long)all[k]->checked,
           (long long)all[k]->near_ties, (long long)all[k]->fallbacks,
           (long long)all[k]->refused);
  return 0;
}
