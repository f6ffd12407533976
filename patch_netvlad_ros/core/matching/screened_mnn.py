# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Exact mutual nearest neighbours on the CPU from a bfloat16 similarity screen.

The plain matcher spends nearly all its time in float32 GEMMs (C x P^2 x D
multiply-adds per query). CPUs with bf16 matrix units (AMX, AVX512-BF16) run the same
GEMM about 4x faster in bf16 with float32 accumulation. Rounding the inputs and the
result to bf16 moves each similarity by at most a bound E computed from the norms of
the vectors and of their rounding errors, so the exact argmax of a row (or column) is
among its entries within 2E of the screened maximum. The C helper
(``native/mutual_nn.c``) finds every row's and column's maximum and runner-up in one
pass and recomputes exact (float64) dot products only for the few rows and columns
whose window holds more than one entry and whose outcome can change the mutual match.
On CPUs with AMX tiles the GEMM and the pass are one C kernel (``fused``, for D <= 1024):
each thread takes whole candidates, multiplies 32 x 32 blocks on the tile unit and folds
each block into the row and column statistics while the next one computes. The similarity
matrix never leaves the cache and the bf16 conversion of the candidate runs beside the
multiplications; the whole match of the speed preset's top-100 takes about 2/3 of the
time of the oneDNN GEMM path, the storage preset's about half.

The result is the exact mutual nearest neighbours of the stored vectors: the same as
the float32 path except where two similarities tie within float32 rounding (~1e-7),
which float32 itself resolves arbitrarily. Rows that are not usable (NaN, Inf, beyond
float16's range: :func:`.mutual_nn.usable_rows`) match nothing and move no other
match, as on every path; the helper checks its sizes and reads and writes only inside its
buffers whatever the values (a NaN patch once made it write before a buffer).
"""

import functools
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .candidate_blocks import (as_store, block_pointers, blocks_of, candidate_indices,
                               float32_matches, MAX_DIM, MAX_ROWS, reads_in_place)
from .. import native

#: Screened similarities per chunk of candidates (bf16 bytes): small enough to stay in
#: the L2 cache between the GEMM and the C pass.
CHUNK_BYTES = 2 << 20
#: The similarity matrix's columns are padded to a multiple of this.
GEMM_COLUMNS = 64
#: Gathered candidate bytes per call of the fused kernel (stores not read in place).
FUSED_CHUNK_BYTES = 64 << 20
#: The fused kernel multiplies whole 32-wide tiles along the descriptor dimension.
FUSED_DIM_MULTIPLE = 32
#: Above this dimension a block of query columns no longer fits the L1/L2 caches the fused
#: kernel is blocked for, and oneDNN's cache-blocked GEMM wins (measured: fused 7-10%
#: faster at D=1024, 15-20% slower at 2048 and 4096).
FUSED_MAX_DIM = 1024
#: Exact dot products allowed per candidate, as a fraction of its Pd x Pq similarities.
#: An exact (float64, gathered) dot costs a few times a GEMM entry, so past this the
#: candidate is cheaper on the float32 path, which then computes it.
MAX_EXACT_FRACTION = 1 / 16


@functools.lru_cache(maxsize=None)  # asked on every match: read /proc/cpuinfo once
def bf16_is_fast() -> bool:
    """Whether this CPU has bf16 matrix/dot-product instructions (else bf16 is emulated)."""
    try:
        flags = Path('/proc/cpuinfo').read_text()
    except OSError:
        return False
    return 'amx_bf16' in flags or 'avx512_bf16' in flags


def available() -> bool:
    """Whether the screened matcher can run here (bf16 hardware and the C helper)."""
    return bf16_is_fast() and native.library() is not None


def fused_ok(d: int) -> bool:
    """Whether the fused AMX kernel can screen D-dimensional descriptors here."""
    return d % FUSED_DIM_MULTIPLE == 0 and d <= FUSED_MAX_DIM and native.amx()


def _to_bf16(lib, rows: np.ndarray) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """bf16 copy [N, D] of float16/float32 rows [N, D], their norms and error norms [N]."""
    n, d = rows.shape
    rows = np.ascontiguousarray(rows)
    out = torch.empty((n, d), dtype=torch.bfloat16)
    norm = np.empty(n, dtype=np.float32)
    err = np.empty(n, dtype=np.float32)
    lib.pnv_to_bf16(block_pointers(rows[None]).ctypes.data, int(rows.dtype == np.float16),
                    1, n, d, out.data_ptr(), norm.ctypes.data, err.ctypes.data)
    return out, norm, err


#: bf16 rows [R, D], bf16 similarities [R, ld], norms [R], error norms [R]
_Scratch = Tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]


class ScreenedQuery:
    """One query's patches [Pq, D], prepared once for many candidate blocks."""

    def __init__(self, query: torch.Tensor, lib=None, fused: Optional[bool] = None) -> None:
        """Prepare query [Pq, D].

        fused: use the fused AMX kernel (None: wherever it can run, see :func:`fused_ok`);
        True where it cannot raises ValueError.
        """
        self.lib = lib or native.library()
        if self.lib is None:
            raise RuntimeError(f'screened matcher unavailable: {native.unavailable_reason()}')
        self.q = np.ascontiguousarray(query.detach().cpu().numpy(), dtype=np.float32)
        qb, self.nq, self.eq = _to_bf16(self.lib, self.q)
        # zero columns pad the similarities to whole GEMM tiles (15-25% faster on oneDNN);
        # the C helper reads only the first Pq
        pq = qb.shape[0]
        self.ld = -(-pq // GEMM_COLUMNS) * GEMM_COLUMNS
        padded = torch.zeros((self.ld, qb.shape[1]), dtype=torch.bfloat16)
        padded[:pq] = qb
        self.qb_t = padded.t()                   # [D, ld]
        d = qb.shape[1]
        can_fuse = fused_ok(d)
        if fused and not can_fuse:
            raise ValueError(f'the fused AMX screen cannot run here: it needs AMX tiles '
                             f'({"present" if native.amx() else "absent"}) and a descriptor '
                             f'dimension divisible by {FUSED_DIM_MULTIPLE} and at most '
                             f'{FUSED_MAX_DIM} (got {d})')
        self.fused = can_fuse if fused is None else bool(fused)
        #: the query's bf16 columns in the tile unit's B layout: per 32 columns a panel of
        #: column pairs [ld / 32, D / 2, 32, 2]
        self.qp = (padded.view(self.ld // 32, 32, d // 2, 2).permute(0, 2, 1, 3).contiguous()
                   if self.fused else None)
        #: rows refined, columns refined, exact dot products (over all blocks)
        self.counts = np.zeros(3, dtype=np.int64)
        #: candidates handed to the float32 path (screen too coarse for them)
        self.fallbacks = 0
        self._buffers: Dict[Tuple[int, int], _Scratch] = {}

    def _scratch(self, rows: int, d: int) -> _Scratch:
        """Reused bf16 rows [rows, D], similarities [rows, ld], norms and error norms."""
        key = (rows, d)
        if key not in self._buffers:
            # torch's allocator aligns to 64 bytes: oneDNN's bf16 GEMM runs at less than
            # half speed on numpy's 16-byte-aligned buffers
            self._buffers = {key: (torch.empty((rows, d), dtype=torch.bfloat16),
                                   torch.empty((rows, self.ld), dtype=torch.bfloat16),
                                   np.empty(rows, np.float32), np.empty(rows, np.float32))}
        return self._buffers[key]

    def match(self, store, indices: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Mutual matches [c, Pd] of candidates ``indices`` of store [N, Pd, D] (float16/32).

        indices: rows of the store (default: all). A C-contiguous float16/float32 array or
        memory map is read in place; anything else is gathered and converted per chunk.
        Same meaning as :func:`patch_netvlad_ros.core.matching.mutual_nn.mutual_nn`.
        """
        store = as_store(store)
        n_store, pd, d = store.shape
        indices = candidate_indices(indices, n_store)
        c = len(indices)
        pq = self.q.shape[0]
        if d != self.q.shape[1]:
            raise ValueError(f'candidate dimension {d} != query dimension {self.q.shape[1]}')
        in_place = reads_in_place(store)
        match = np.full((c, pd), -1, dtype=np.int64)
        fallback = np.zeros(c, dtype=np.uint8)
        if pd == 0 or pq == 0 or c == 0:         # nothing to match
            return torch.from_numpy(match)
        max_dots = int(MAX_EXACT_FRACTION * pd * pq)
        if self.fused:
            self._match_fused(store, indices, in_place, match, fallback, max_dots)
        else:
            self._match_gemm(store, indices, in_place, match, fallback, max_dots)
        redo = np.flatnonzero(fallback)
        if len(redo):
            self.fallbacks += len(redo)
            match[redo] = float32_matches(self.q, store, indices[redo])
        return torch.from_numpy(match)

    def _match_fused(self, store: np.ndarray, indices: np.ndarray, in_place: bool,
                     match: np.ndarray, fallback: np.ndarray, max_dots: int) -> None:
        """Fill match [c, Pd] and fallback [c] with the fused AMX kernel."""
        _, pd, d = store.shape
        c, pq = len(indices), self.q.shape[0]
        # in place: one call for all candidates; gathered: chunks of FUSED_CHUNK_BYTES
        step = max(c, 1) if in_place else max(1, FUSED_CHUNK_BYTES // (4 * pd * d))
        for c0 in range(0, c, step):
            blocks, ptrs = blocks_of(store, indices[c0:c0 + step], in_place)
            rc = self.lib.pnv_mutual_nn_amx(
                ptrs.ctypes.data, int(blocks.dtype == np.float16), self.q.ctypes.data,
                self.qp.data_ptr(), self.nq.ctypes.data, self.eq.ctypes.data, len(ptrs), pd,
                pq, self.ld, d, max_dots, match[c0:].ctypes.data, self.counts.ctypes.data,
                fallback[c0:].ctypes.data)
            if rc == -1:
                raise MemoryError('screened matcher: out of memory')
            if rc != 0:
                raise RuntimeError(f'fused AMX screen refused {len(ptrs)} candidates, Pd={pd} '
                                   f'Pq={pq} D={d} (or the kernel refused the AMX tile state)')
            del blocks

    def _match_gemm(self, store: np.ndarray, indices: np.ndarray, in_place: bool,
                    match: np.ndarray, fallback: np.ndarray, max_dots: int) -> None:
        """Fill match [c, Pd] and fallback [c] with oneDNN's bf16 GEMM and the C pass."""
        _, pd, d = store.shape
        c, pq = len(indices), self.q.shape[0]
        # each OpenMP thread takes whole candidates; its similarities stay cache-sized
        step = max(1, torch.get_num_threads()) * max(1, CHUNK_BYTES // (2 * pd * self.ld))
        step = min(step, max(c, 1))
        bf16, sim, nd, ed = self._scratch(step * pd, d)
        for c0 in range(0, c, step):
            blocks, ptrs = blocks_of(store, indices[c0:c0 + step], in_place)
            n = len(ptrs)
            is_half = int(blocks.dtype == np.float16)
            # both C calls spread the candidates over OpenMP threads
            self.lib.pnv_to_bf16(ptrs.ctypes.data, is_half, n, pd, d, bf16.data_ptr(),
                                 nd.ctypes.data, ed.ctypes.data)
            torch.mm(bf16[:n * pd], self.qb_t, out=sim[:n * pd])  # bf16, fp32 accumulation
            rc = self.lib.pnv_mutual_nn(
                sim.data_ptr(), ptrs.ctypes.data, is_half, self.q.ctypes.data, nd.ctypes.data,
                ed.ctypes.data, self.nq.ctypes.data, self.eq.ctypes.data, n, pd, pq, self.ld, d,
                max_dots, match[c0:].ctypes.data, self.counts.ctypes.data,
                fallback[c0:].ctypes.data)
            if rc == -1:
                raise MemoryError('screened matcher: out of memory')
            if rc != 0:
                raise ValueError(f'screened matcher: {n} candidates of {pd} x {d} refused (at '
                                 f'most {MAX_ROWS} of each, {MAX_DIM} dims)')
            del blocks
