# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Exact mutual nearest neighbours on AVX2 CPUs from an integer similarity screen.

Where the CPU has no bf16 units (:mod:`.screened_mnn` cannot run: e.g. AMD Zen 3), the
float32 matcher's GEMMs run at the float32 FMA rate, as the authors' code does. The C
helper ``native/int_mnn.c`` rounds the query and each candidate to integers (one scale per
row), multiplies them exactly in int32 and bounds how far each screened similarity can be
from the exact one by the norms of the rounded rows and of their rounding errors. A row's
exact argmax is then among its entries within 2E of the screened maximum, and only rows
and columns whose window holds a second entry (and whose outcome can change the mutual
match) are refined, as in the bf16 screen: by float32 dot products with a rigorous
rounding bound, and in float64 where the best two of a window come within twice it.

Two widths (:func:`bits_for`): int8 (vpmaddubsw: the fewest instructions per
multiply-add, windows of about 0.05) for descriptors of up to :data:`INT8_MAX_DIM` dims,
int16 (vpmaddwd, with a per-row norm cap that rules out int32 overflow; windows about 80
times narrower) above. On corridor images at 640x480 (Zen 3, 2 threads, one candidate):
the int8 screen refines most of the speed preset's rows over about 4% of their entries
and still ran 7.4 ms a candidate against int16's 8.4 (storage 2.0 against 2.4 ms); on the
performance preset's 4096-dim descriptors int8 would need dot products for 65-90% of the
similarities, int16 refines 2-7% of the rows and runs 1.8-2.1x the float32 matcher.

The result is the exact mutual nearest neighbours of the stored vectors: the same as the
float32 path except where two similarities tie within float32 rounding (~1e-7), which
float32 itself resolves arbitrarily. Rows that are not usable (NaN, Inf, beyond float16's
range: :func:`.mutual_nn.usable_rows`) match nothing and move no other match, as on
every path; the helper checks its sizes and reads and writes only inside its buffers
whatever the values.
"""

import functools
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .candidate_blocks import (as_store, blocks_of, candidate_indices, float32_matches,
                               MAX_DIM, MAX_ROWS, reads_in_place)
from .. import native

#: Query columns per GEMM panel of the helper (pq is padded to a multiple of this).
PANEL_COLUMNS = 16
#: Candidates gathered per call when the store is not read in place (float32 bytes).
GATHER_BYTES = 64 << 20
#: Largest descriptor dimension screened in int8 (int16 above): see the module doc.
INT8_MAX_DIM = 1024
#: Dot products allowed per candidate, as a fraction of its Pd x Pq similarities; past
#: this the candidate is cheaper on the float32 path, which then computes it. A float32
#: dot product of the refinement costs about 13 entries of the screen's GEMM (speed
#: preset, 640x480, Zen 3) and the float32 matcher about 3, so the break-even lies near 1/6.
MAX_EXACT_FRACTION = 1 / 6


def available() -> bool:
    """Whether the integer screen can run here (an AVX2 + F16C CPU and a C compiler)."""
    return native.library('int_mnn') is not None


def bits_for(dim: int) -> int:
    """Return the integer width (8 or 16) that screens ``dim``-dimensional descriptors."""
    return 8 if dim <= INT8_MAX_DIM else 16


@functools.lru_cache(maxsize=None)  # asked on every match: read /proc/cpuinfo once
def _has_avx512() -> bool:
    try:
        return 'avx512f' in Path('/proc/cpuinfo').read_text()
    except OSError:
        return False


def preferred(dim: Optional[int] = None) -> bool:
    """Whether 'auto' should match ``dim``-dimensional descriptors with the integer screen.

    Where the screen runs and the CPU has no AVX-512 (any dim: :func:`bits_for` picks the
    width): without it the 256-bit integer products run at twice the rate of the float32
    GEMM's 256-bit FMAs; with AVX-512 the float32 GEMM is as wide as the integer kernels,
    so the screen would not pay for its rounding and refinement (not measured, so not
    chosen). dim is accepted for the callers' sake; every preset's dimension is screened.
    """
    return available() and not _has_avx512()


class IntQuery:
    """One query's patches [Pq, D], rounded to integers once for many candidate blocks."""

    def __init__(self, query: torch.Tensor, bits: Optional[int] = None) -> None:
        """Prepare query [Pq, D] (float; unit rows as the descriptors are).

        bits: 8 or 16 (default :func:`bits_for` D); every width gives the same matches.
        """
        self.lib = native.library('int_mnn')
        if self.lib is None:
            raise RuntimeError('integer screen unavailable: '
                               f'{native.unavailable_reason("int_mnn")}')
        self.q = np.ascontiguousarray(query.detach().cpu().numpy(), dtype=np.float32)
        if self.q.ndim != 2 or self.q.shape[1] == 0:
            raise ValueError(f'query patches must be [Pq, D] with D >= 1; got shape '
                             f'{self.q.shape}')
        pq, d = self.q.shape
        self.bits = bits_for(d) if bits is None else bits
        if self.bits not in (8, 16):
            raise ValueError(f'bits must be 8 or 16; got {bits}')
        ldq = -(-pq // PANEL_COLUMNS) * PANEL_COLUMNS
        dk = -(-d // 4) * 4
        # torch's allocator aligns to 64 bytes: the GEMM loads panels with aligned loads
        self.panels = torch.empty(max(ldq * dk, 1),
                                  dtype=torch.int8 if self.bits == 8 else torch.int16)
        # per column (padded to ldq): scale, offset correction (int8), norm, error norm,
        # and -1 where the query row is usable (0: unusable, or padding)
        self.scale = np.zeros(ldq, np.float32)
        self.corr = np.zeros(ldq, np.int32)
        self.norm = np.zeros(ldq, np.float32)
        self.err = np.zeros(ldq, np.float32)
        self.colmask = np.zeros(ldq, np.int32)
        if self.lib.pnv_int_query(self.q.ctypes.data, pq, d, self.bits, self.panels.data_ptr(),
                                  self.scale.ctypes.data, self.corr.ctypes.data,
                                  self.norm.ctypes.data, self.err.ctypes.data,
                                  self.colmask.ctypes.data):
            raise ValueError(f'integer screen: query of shape {self.q.shape} refused (at most '
                             f'{MAX_ROWS} patches of {MAX_DIM} dims)')
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
        :func:`patch_netvlad_ros.core.matching.mutual_nn.mutual_nn`.
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
            rc = self.lib.pnv_int_mutual_nn(
                ptrs.ctypes.data, int(blocks.dtype == np.float16), self.q.ctypes.data,
                self.bits, self.panels.data_ptr(), self.scale.ctypes.data,
                self.corr.ctypes.data, self.norm.ctypes.data, self.err.ctypes.data,
                self.colmask.ctypes.data, len(ptrs), pd, pq, d, max_dots,
                match[c0:].ctypes.data, self.counts.ctypes.data, fallback[c0:].ctypes.data)
            if rc == -1:
                raise MemoryError('integer screen: out of memory')
            if rc != 0:
                raise ValueError(f'integer screen: {len(ptrs)} candidates of {pd} x {d} '
                                 f'refused (at most {MAX_ROWS} of each, {MAX_DIM} dims)')
            del blocks
        redo = np.flatnonzero(fallback)
        if len(redo):
            self.fallbacks += len(redo)
            match[redo] = float32_matches(self.q, store, indices[redo])
        return torch.from_numpy(match)
