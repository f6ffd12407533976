# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""How the C matchers (:mod:`.screened_mnn`, :mod:`.int_screen`) read candidates.

A patch store [N, Pd, D] (array, memory map or tensor) is read in place when it is a
C-contiguous, aligned float16/float32 array: the helpers get the address of each
candidate's [Pd, D] block, with no gather copy. Anything else is gathered and converted
per chunk.

Which rows take part is the rule of :mod:`.mutual_nn` (the float32 matcher), which
``native/usable.h`` mirrors for the C helpers. A map whose patches picked up a NaN (a
corrupt file, a bad extraction) thus loses those patches, nothing else, and the answers
stay deterministic.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .mutual_nn import mutual_nn

#: Largest descriptor dimension, and patches or candidates per call, the C matchers accept
#: (PNV_MAX_DIM, PNV_MAX_ROWS in native/usable.h).
MAX_DIM = 65536
MAX_ROWS = 1 << 24


def as_store(store) -> np.ndarray:
    """Return the store as a numpy array (tensors moved to the CPU; float16/float32 kept)."""
    if torch.is_tensor(store):
        store = store.detach().cpu()
        return (store.numpy() if store.dtype in (torch.float16, torch.float32)
                else store.float().numpy())
    return store if isinstance(store, np.ndarray) else np.asarray(store)


def candidate_indices(indices: Optional[Sequence[int]], n_store: int) -> np.ndarray:
    """Candidate rows [c] of a store of n_store (default: all), negatives wrapped.

    Raises IndexError for a row outside the store: the C helpers read rows in place, so
    such an index must never reach them.
    """
    if indices is None:
        return np.arange(n_store)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) and (indices.min() < -n_store or indices.max() >= n_store):
        raise IndexError(f'candidate indices must lie in [0, {n_store}); got '
                         f'{indices.min()}..{indices.max()}')
    return np.where(indices < 0, indices + n_store, indices)


def reads_in_place(store: np.ndarray) -> bool:
    """Whether the helpers can read the store's blocks where they are."""
    return (store.dtype in (np.float16, np.float32) and store.flags.c_contiguous
            and store.flags.aligned)


def block_pointers(blocks: np.ndarray, ids: Optional[np.ndarray] = None) -> np.ndarray:
    """Addresses [n] of the [P, D] blocks ids (default: all) of a C-contiguous [n, P, D]."""
    ids = np.arange(blocks.shape[0]) if ids is None else ids
    return np.uint64(blocks.ctypes.data) + ids.astype(np.uint64) * np.uint64(blocks.strides[0])


def blocks_of(store: np.ndarray, ids: np.ndarray, in_place: bool
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Candidates ids of store as (array holding them, addresses [n] of their blocks).

    Keep the array alive while the addresses are in use.
    """
    if in_place:
        return store, block_pointers(store, ids)
    blocks = np.ascontiguousarray(store[ids])
    if blocks.dtype not in (np.float16, np.float32):
        blocks = blocks.astype(np.float32)
    return blocks, block_pointers(blocks)


def float32_matches(query: np.ndarray, store: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mutual matches [n, Pd] of candidates ids by the float32 path (screens' fallback)."""
    return mutual_nn(torch.from_numpy(query),
                     torch.from_numpy(np.asarray(store[ids], dtype=np.float32))).numpy()
