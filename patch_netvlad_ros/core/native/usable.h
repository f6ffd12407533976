/* Copyright 2026 The patch_netvlad_ros Authors
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * Which patch rows the matchers (int_mnn.c, mutual_nn.c) take part with, and the sizes they
 * accept. Python: core/matching/mutual_nn.py (USABLE_LIMIT, usable_rows) states the same rule
 * for the float32 path.
 *
 * A row (a query patch or a candidate patch) is usable when every value is finite and at
 * most PNV_USABLE_LIMIT in magnitude (float16's largest finite value: every finite float16
 * row is usable). An unusable row takes no part in the matching: a candidate row gets -1,
 * a query row is nobody's match, and neither moves any other row's or column's argmax (the
 * mutual nearest neighbours of the usable rows alone). The limit keeps every similarity,
 * norm and screen scale of usable rows far from float32 overflow (d * 65504^2 < 2^48 for
 * d <= PNV_MAX_DIM), so the screens' error bounds hold for every row that takes part.
 */
#ifndef PNV_USABLE_H
#define PNV_USABLE_H

#define PNV_USABLE_LIMIT 65504.0f
/* Largest descriptor dimension (int8 sums: 127 * 63 * d < 2^31), patches per image and
 * candidates per call the matchers accept; larger sizes are refused (-2). */
#define PNV_MAX_DIM 65536
#define PNV_MAX_ROWS (1 << 24)
/* Returned by the helpers for arguments they refuse (sizes, alignment). */
#define PNV_BAD_ARGS (-2)

#endif
