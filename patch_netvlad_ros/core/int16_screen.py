# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Exact mutual nearest neighbours on AVX2 CPUs from an int16 similarity screen.

Where the CPU has no bf16 units (:mod:`.screened_mnn` cannot run: e.g. AMD Zen 3), the
float32 matcher's GEMMs run at the float32 FMA rate, as the authors' code does. The C
helper ``native/int16_mnn.c`` rounds the query and each candidate to int16 (one scale per
row, chosen so that no int32 partial sum can overflow), multiplies them exactly in int32
at about twice the float32 rate (vpmaddwd), and bounds how far each screened similarity
can be from the exact one by the norms of the rounded rows and of their rounding errors.
A row's exact argmax is then among its entries within 2E of the screened maximum, and only
rows and columns whose window holds a second entry (and whose outcome can change the
mutual match) are refined, as in the bf16 screen: by float32 dot products with a rigorous
rounding bound, and in float64 where the best two of a window come within twice it.

The int16 windows are narrow (a rounded unit row lies within about sqrt(d) / 160000 of
itself: 1.4e-4 at 512 dims, 4e-4 at 4096, against a typical gap of 0.01 between a row's
best two): on corridor images at 640x480 under 1% of the speed and storage presets' rows
and columns are refined and 2-7% of the performance preset's, so the GEMM is nearly all
of the time. (An int8 screen before it had windows 80 times wider: the
speed preset refined most rows, and the performance preset's 4096-dim descriptors could
not be screened.)

The result is the exact mutual nearest neighbours of the stored vectors: the same as the
float32 path except where two similarities tie within float32 rounding (~1e-7), which
float32 itself resolves arbitrarily.
"""

import functools
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import native
from .candidate_blocks import (as_store, blocks_of, candidate_indices, float32_matches,
                               reads_in_place)

#: Query columns per GEMM panel of the helper (pq is padded to a multiple of this).
PANEL_COLUMNS = 16
#: Candidates gathered per call when the store is not read in place (float32 bytes).
GATHER_BYTES = 64 << 20
#: Dot products allowed per candidate, as a fraction of its Pd x Pq similarities; past
#: this the candidate is cheaper on the float32 path, which then computes it. A float32
#: dot product of the refinement costs about 13 entries of the screen's GEMM (speed
#: preset, 640x480, Zen 3) and the float32 matcher about 3, so the break-even lies near 1/6.
MAX_EXACT_FRACTION = 1 / 6


def available() -> bool:
    """Whether the int16 screen can run here (an AVX2 + F16C CPU and a C compiler)."""
    return native.library('int16_mnn') is not None


@functools.lru_cache(maxsize=None)  # asked on every match: read /proc/cpuinfo once
def _has_avx512() -> bool:
    try:
        return 'avx512f' in Path('/proc/cpuinfo').read_text()
    except OSError:
        return False


def preferred(dim: Optional[int] = None) -> bool:
    """Whether 'auto' should match ``dim``-dimensional descriptors with the int16 screen.

    Where the screen runs and the CPU has no AVX-512 (any dim): without it the 256-bit
    int16 products (vpmaddwd) run at twice the rate of the float32 GEMM's 256-bit FMAs;
    with AVX-512 the float32 GEMM is as wide as the int16 kernel, so the screen would not
    pay for its rounding and refinement (not measured, so not chosen). dim is accepted for
    the callers' sake; every preset's dimension is screened.
    """
    return available() and not _has_avx512()


class Int16Query:
    """One query's patches [Pq, D], rounded to int16 once for many candidate blocks."""

    def __init__(self, query: torch.Tensor) -> None:
        """Prepare query [Pq, D] (float; unit rows as the descriptors are)."""
        self.lib = native.library('int16_mnn')
        if self.lib is None:
            raise RuntimeError('int16 screen unavailable: '
                               f'{native.unavailable_reason("int16_mnn")}')
        self.q = np.ascontiguousarray(query.detach().cpu().numpy(), dtype=np.float32)
        if self.q.ndim != 2 or self.q.shape[1] == 0:
            raise ValueError(f'query patches must be [Pq, D] with D >= 1; got shape '
                             f'{self.q.shape}')
        pq, d = self.q.shape
        ldq = -(-pq // PANEL_COLUMNS) * PANEL_COLUMNS
        dk = -(-d // 2) * 2
        # torch's allocator aligns to 64 bytes: the GEMM loads panels with aligned loads
        self.panels = torch.empty(max(ldq * dk, 1), dtype=torch.int16)
        # per column (padded to ldq): scale, norm, error norm
        self.scale = np.zeros(ldq, np.float32)
        self.norm = np.zeros(ldq, np.float32)
        self.err = np.zeros(ldq, np.float32)
        self.lib.pnv_int16_query(self.q.ctypes.data, pq, d, self.panels.data_ptr(),
                                 self.scale.ctypes.data, self.norm.ctypes.data,
                                 self.err.ctypes.data)
        #: rows refined, columns refined, float32 dot products, float64 dot products
        #: (near ties of the float32 ones), over all blocks
        self.counts = np.zeros(4, dtype=np.int64)
        #: candidates handed to the float32 path (screen too coarse for them)
        self.fallbacks = 0

    def match(self, store, indices: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Mutual matches [c, Pd] of candidates ``indices`` of store [N, Pd, D].

        store: float16/float32 array, memory map or tensor (a C-contiguous float16/float32
        array is read in place; anything else is gathered and converted in chunks).
        indices: rows of the store (default: all). Same meaning as
        :func:`patch_netvlad_ros.core.matching.mutual_nn`.
        """
        store = as_store(store)
        if store.ndim != 3:
            raise ValueError(f'candidate patches must be [N, Pd, D]; got shape {store.shape}')
        n_store, pd, d = store.shape
        pq = self.q.shape[0]
        if d != self.q.shape[1]:
            raise ValueError(f'candidate dimension {d} != query dimension {self.q.shape[1]}')
        indices = candidate_indices(indices, n_store)
        c = len(indices)
        match = np.full((c, pd), -1, dtype=np.int64)
        if pd == 0 or pq == 0 or c == 0:          # nothing to match
            return torch.from_numpy(match)
        fallback = np.zeros(c, dtype=np.uint8)
        max_dots = int(MAX_EXACT_FRACTION * pd * pq)
        in_place = reads_in_place(store)
        step = c if in_place else max(1, GATHER_BYTES // (4 * pd * d))
        for c0 in range(0, c, step):
            blocks, ptrs = blocks_of(store, indices[c0:c0 + step], in_place)
            rc = self.lib.pnv_int16_mutual_nn(
                ptrs.ctypes.data, int(blocks.dtype == np.float16), self.q.ctypes.data,
                self.panels.data_ptr(), self.scale.ctypes.data, self.norm.ctypes.data,
                self.err.ctypes.data, len(ptrs), pd, pq, d, max_dots,
                match[c0:].ctypes.data, self.counts.ctypes.data, fallback[c0:].ctypes.data)
            if rc != 0:
                raise MemoryError('int16 screen: out of memory')
            del blocks
        redo = np.flatnonzero(fallback)
        if len(redo):
            self.fallbacks += len(redo)
            match[redo] = float32_matches(self.q, store, indices[redo])
        return torch.from_numpy(match)
