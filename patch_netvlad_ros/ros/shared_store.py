# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Process-local hand-over of patch descriptors when the nodes share a process.

With patch_transport 'shared', descriptor_node keeps a frame's patch tensors here and
sends only their key; localizer_node in the same process takes them out. Bounded: the
oldest entries go when more than ``capacity`` wait (a localizer that fell behind).
"""

from collections import OrderedDict
import threading
from typing import List, Optional

import torch

_LOCK = threading.Lock()
_STORE: 'OrderedDict[str, List[torch.Tensor]]' = OrderedDict()
_COUNTER = [0]


def put(patches: List[torch.Tensor], capacity: int = 64) -> str:
    """Keep ``patches`` (one [P_s, Dp] tensor per scale); return their key."""
    with _LOCK:
        _COUNTER[0] += 1
        key = f'pnv-{id(_STORE):x}-{_COUNTER[0]}'
        _STORE[key] = patches
        while len(_STORE) > capacity:
            _STORE.popitem(last=False)
    return key


def take(key: str) -> Optional[List[torch.Tensor]]:
    """Remove and return the patches under ``key`` (None: not in this process)."""
    with _LOCK:
        return _STORE.pop(key, None)
