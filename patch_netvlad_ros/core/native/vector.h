/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * One vector register of floats for the portable helpers (winograd.c, patch_vlad.c), with
 * GCC vector extensions: 16 lanes with AVX-512, else 8 (AVX2, or NEON pairs; the compiler
 * splits wider vectors into several registers, which spills Winograd's 36-vector tile).
 */
#ifndef PNV_VECTOR_H
#define PNV_VECTOR_H

#include <stdint.h>
#include <string.h>

#ifdef __AVX512F__
#define VL 16
#else
#define VL 8
#endif
typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));

static inline vf load(const float *p) {
  vf v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

#endif
