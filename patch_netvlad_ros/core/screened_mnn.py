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

The result is the exact mutual nearest neighbours of the stored vectors: the same as
the float32 path except where two similarities tie within float32 rounding (~1e-7),
which float32 itself resolves arbitrarily.
"""

import functools
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from . import native

#: Screened similarities per chunk of candidates (bf16 bytes): small enough to stay in
#: the L2 cache between the GEMM and the C pass.
CHUNK_BYTES = 2 << 20
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


def _to_bf16(lib, rows: np.ndarray) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """bf16 copy [N, D] of float16/float32 rows [N, D], their norms and error norms [N]."""
    n, d = rows.shape
    out = np.empty((n, d), dtype=np.int16)
    norm = np.empty(n, dtype=np.float32)
    err = np.empty(n, dtype=np.float32)
    lib.pnv_to_bf16(rows.ctypes.data, int(rows.dtype == np.float16), n, d, out.ctypes.data,
                    norm.ctypes.data, err.ctypes.data)
    return torch.from_numpy(out).view(torch.bfloat16), norm, err


class ScreenedQuery:
    """One query's patches [Pq, D], prepared once for many candidate blocks."""

    def __init__(self, query: torch.Tensor, lib=None) -> None:
        self.lib = lib or native.library()
        if self.lib is None:
            raise RuntimeError(f'screened matcher unavailable: {native.unavailable_reason()}')
        self.q = np.ascontiguousarray(query.detach().cpu().numpy(), dtype=np.float32)
        qb, self.nq, self.eq = _to_bf16(self.lib, self.q)
        self.qb_t = qb.t()                       # [D, Pq]
        #: rows refined, columns refined, exact dot products (over all blocks)
        self.counts = np.zeros(3, dtype=np.int64)
        #: candidates handed to the float32 path (screen too coarse for them)
        self.fallbacks = 0

    def match(self, block: np.ndarray) -> torch.Tensor:
        """Mutual matches [c, Pd] of candidate patches block [c, Pd, D] (float16/32).

        Same meaning as :func:`patch_netvlad_ros.core.matching.mutual_nn`.
        """
        block = np.asarray(block)
        if block.dtype not in (np.float16, np.float32):
            block = block.astype(np.float32)
        block = np.ascontiguousarray(block)
        c, pd, d = block.shape
        pq = self.q.shape[0]
        if d != self.q.shape[1]:
            raise ValueError(f'candidate dimension {d} != query dimension {self.q.shape[1]}')
        match = np.empty((c, pd), dtype=np.int64)
        fallback = np.zeros(c, dtype=np.uint8)
        max_dots = int(MAX_EXACT_FRACTION * pd * pq)
        step = max(1, CHUNK_BYTES // (2 * pd * pq))
        for c0 in range(0, c, step):
            part = block[c0:c0 + step]
            n = part.shape[0]
            db_b, nd, ed = _to_bf16(self.lib, part.reshape(n * pd, d))
            sim = (db_b @ self.qb_t).contiguous()       # [n*Pd, Pq] bf16, fp32 accumulation
            rc = self.lib.pnv_mutual_nn(
                sim.data_ptr(), part.ctypes.data, int(part.dtype == np.float16),
                self.q.ctypes.data, nd.ctypes.data, ed.ctypes.data, self.nq.ctypes.data,
                self.eq.ctypes.data, n, pd, pq, d, max_dots, match[c0:].ctypes.data,
                self.counts.ctypes.data, fallback[c0:].ctypes.data)
            if rc != 0:
                raise MemoryError('screened matcher: out of memory')
        redo = np.flatnonzero(fallback)
        if len(redo):
            from .matching import mutual_nn
            self.fallbacks += len(redo)
            match[redo] = mutual_nn(torch.from_numpy(self.q),
                                    torch.from_numpy(block[redo]).float()).numpy()
        return torch.from_numpy(match)
