# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Candidates' patch descriptors kept on the rerank device (the GPU) between queries.

A map's patches are float16 memory maps [N, P_s, Dp] per scale in host memory. To rerank
on a GPU, every candidate's patches must be there; copying the top-k for every query
moves k x (bytes per reference) across the bus each time: 2.3 GB a query for the
performance preset's top-100 at 640x480 (23 MB a reference), 96 MB for the speed preset's.

:class:`ResidentPatches` holds up to ``capacity`` references in one preallocated device
tensor per scale, [capacity, P_s, Dp] float16 (as stored: no conversion, no growth), as a
least-recently-used cache. With room for the whole map, everything is copied once at
start-up and nothing moves per query; otherwise a query copies only the candidates not
already there, and along a trajectory consecutive queries share most of their top-k.
Every fetch reports the bytes it copied.
"""

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import MapError

#: Host bytes gathered per copy while filling the cache (bounds the staging memory).
STAGING_BYTES = 256 << 20


def reference_bytes(stores: Sequence) -> int:
    """Bytes of one reference's patches over all scales, float16 (stores: [N, P_s, Dp])."""
    return int(sum(2 * s.shape[1] * s.shape[2] for s in stores))


def capacity_for(stores: Sequence, budget_bytes: int) -> int:
    """Return how many references (at most N) fit in ``budget_bytes`` as float16."""
    return int(min(len(stores[0]), budget_bytes // max(reference_bytes(stores), 1)))


def plan_capacity(stores: Sequence, need: int, budget_bytes: int = 0,
                  free_bytes: Optional[int] = None) -> int:
    """Return the references to keep resident: all (budget_bytes 0), else what fits.

    need: references one query asks for (its top-k); free_bytes: the device memory free
    now, when known. Raises MapError naming the sizes when the plan holds fewer than need
    references or takes more than 90% of free_bytes (the rerank needs room to work).
    """
    per = reference_bytes(stores)
    capacity = len(stores[0]) if budget_bytes <= 0 else capacity_for(stores, budget_bytes)
    mib = 2.0 ** 20
    if capacity < need:
        raise MapError(f'a device cache of {budget_bytes / mib:.0f} MiB holds {capacity} '
                       f'references ({per / mib:.2f} MiB each), fewer than the top-{need} '
                       f'candidates of a query: give it at least {need * per / mib:.0f} MiB '
                       'or lower top_k')
    if free_bytes is not None and capacity * per > 0.9 * free_bytes:
        what = 'the whole map' if budget_bytes <= 0 else 'the device cache'
        raise MapError(f'{what} ({capacity} references) needs {capacity * per / mib:.0f} MiB '
                       f'on the device, which has {free_bytes / mib:.0f} MiB free: set a '
                       f'cache size of at most {0.9 * free_bytes / mib:.0f} MiB (at least '
                       f'{need * per / mib:.0f} MiB for the top-{need}) or rerank on the CPU')
    return capacity


class ResidentPatches:
    """Up to ``capacity`` references' patches on ``device``, least recently used evicted.

    stores: per scale [N, P_s, Dp] arrays (a map's float16 memory maps) or tensors, read
    only when a reference is copied in. capacity: references held (default and at most
    N: the whole map, copied now). ``slots`` are the device tensors, per scale
    [capacity, P_s, Dp] float16; :meth:`fetch` gives each candidate's row in them.
    """

    def __init__(self, stores: Sequence, device: Union[str, torch.device],
                 capacity: Optional[int] = None) -> None:
        if not len(stores) or not len(stores[0]):
            raise MapError('the map holds no references: there is nothing to keep on the '
                           'device; build it from at least one image')
        n = len(stores[0])
        capacity = n if capacity is None else int(capacity)
        if capacity < 1:
            raise MapError(f'a device cache must hold at least one reference; got capacity '
                           f'{capacity} (raise the cache size)')
        self.stores = list(stores)
        self.capacity = min(capacity, n)
        self.device = torch.device(device)
        self.reference_bytes = reference_bytes(self.stores)
        self.slots: List[torch.Tensor] = [
            torch.empty((self.capacity,) + tuple(s.shape[1:]), dtype=torch.float16,
                        device=self.device) for s in self.stores]
        self._slot_of: 'OrderedDict[int, int]' = OrderedDict()   # least recent first
        self._free = list(range(self.capacity - 1, -1, -1))
        self.moved_bytes = 0                # host -> device bytes since construction
        self.hits = 0
        self.misses = 0
        if self.capacity == n:
            self.fetch(np.arange(n))

    def __len__(self) -> int:
        """Return the number of references on the device now."""
        return len(self._slot_of)

    @property
    def nbytes(self) -> int:
        """Device memory the slots take (bytes)."""
        return self.capacity * self.reference_bytes

    def fetch(self, indices: Sequence[int]) -> Tuple[np.ndarray, int]:
        """Make the references ``indices`` resident; return (their slots [k], bytes moved).

        Raises MapError when more distinct references are asked for at once than fit, and
        IndexError for an index outside the map.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.stores[0])
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f'reference indices must lie in [0, {n}); got '
                             f'{idx.min()}..{idx.max()}')
        wanted = list(dict.fromkeys(idx.tolist()))
        if len(wanted) > self.capacity:
            raise MapError(f'{len(wanted)} candidates do not fit in a device cache of '
                           f'{self.capacity} references ({self.reference_bytes / 2**20:.1f} '
                           'MiB each): raise the cache size or lower top_k')
        missing = []
        for i in wanted:
            if i in self._slot_of:
                self._slot_of.move_to_end(i)
            else:
                missing.append(i)
        self.hits += len(wanted) - len(missing)
        self.misses += len(missing)
        # free slots first, then the least recently used references not asked for now
        # (every reference asked for was moved to the end above, and there are at most
        # capacity of them, so the front holds enough others)
        slots = []
        for _ in missing:
            if self._free:
                slots.append(self._free.pop())
            else:
                _, slot = self._slot_of.popitem(last=False)
                slots.append(slot)
        moved = self._copy_in(np.asarray(missing, dtype=np.int64), np.asarray(slots))
        for i, slot in zip(missing, slots):
            self._slot_of[i] = slot
        self.moved_bytes += moved
        return np.array([self._slot_of[i] for i in idx.tolist()], dtype=np.int64), moved

    def _copy_in(self, refs: np.ndarray, slots: np.ndarray) -> int:
        """Copy references refs into slots (sorted by reference: sequential reads)."""
        if not len(refs):
            return 0
        order = np.argsort(refs, kind='stable')
        refs, slots = refs[order], slots[order]
        step = max(1, STAGING_BYTES // self.reference_bytes)
        for start in range(0, len(refs), step):
            part = refs[start:start + step]
            where = torch.from_numpy(slots[start:start + step]).to(self.device)
            for store, dst in zip(self.stores, self.slots):
                block = store[part]
                block = (block.detach().cpu() if torch.is_tensor(block)
                         else torch.from_numpy(np.ascontiguousarray(block)))
                dst[where] = block.to(torch.float16).to(self.device)
        return len(refs) * self.reference_bytes
