# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The float32 mutual nearest neighbours of patch sets: the matches every matcher gives.

A leaf (it imports nothing from the package): :mod:`.rerank` matches with it,
:mod:`.candidate_blocks` hands it the screens' fallback blocks, and the exact screens
(:mod:`.screened_mnn`, :mod:`.int_screen`) are tested against it.

Which rows take part (every matcher; ``native/usable.h`` for the C helpers): a patch row
is usable when all its values are finite and at most :data:`USABLE_LIMIT` in magnitude.
Mutual nearest neighbours are those of the usable rows alone: an unusable candidate row
matches nothing (-1), an unusable query row is nobody's match, and neither changes any
other row's match.
"""

import torch


#: Largest magnitude of a usable patch value: float16's largest finite value, so every
#: finite float16 row is usable, and the similarities, norms and screen scales of usable
#: rows stay far from float32 overflow. Equal to PNV_USABLE_LIMIT in native/usable.h.
USABLE_LIMIT = 65504.0


def usable_rows(x: torch.Tensor) -> torch.Tensor:
    """Which rows of x [..., D] take part in matching (module doc): a bool tensor [...]."""
    if x.shape[-1] == 0:
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    # one fused pass: a row's 2-norm bounds its every value and is NaN or Inf with them
    # (half the limit covers the norm's rounding); only rows above it are looked at
    # value by value (about 1% of the float32 matcher's time, against 3% for amax + amin
    # and 15% for aminmax on the CPU)
    ok = torch.linalg.vector_norm(x, dim=-1) <= USABLE_LIMIT / 2
    if not bool(ok.all()):
        ok = (x.amax(-1) <= USABLE_LIMIT) & (x.amin(-1) >= -USABLE_LIMIT)  # NaN: False
    return ok


def mutual_nn(query: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Mutual nearest neighbours between one query's patches and C candidates' patches.

    query: [Pq, D] unit vectors; db: [C, Pd, D] unit vectors.
    Returns match [C, Pd]: for each candidate patch, the index of the query patch it is
    mutually nearest to (Euclidean on unit vectors = largest dot product), or -1.
    Rows with NaN, Inf or values beyond float16's range take no part (see
    :func:`.mutual_nn.usable_rows`: the same rule as the C matchers').
    """
    c, pd, d = db.shape
    if pd == 0 or query.shape[0] == 0:                         # nothing to match
        return torch.full((c, pd), -1, dtype=torch.long, device=db.device)
    # one 2-D GEMM [C*Pd, D] @ [D, Pq] runs faster than C batched ones
    sim = (db.reshape(c * pd, d) @ query.t().to(db.dtype)).view(c, pd, -1)  # [C, Pd, Pq]
    ok_db, ok_q = usable_rows(db), usable_rows(query).to(db.device)   # [C, Pd], [Pq]
    masked = not (bool(ok_db.all()) and bool(ok_q.all()))
    if masked:
        # unusable rows and columns can be nobody's argmax (a NaN would be everybody's)
        sim = sim.masked_fill(~(ok_db[:, :, None] & ok_q), float('-inf'))
    fw = sim.argmax(dim=2)                                     # nearest query per db patch
    bw = sim.argmax(dim=1)                                     # nearest db patch per query
    mutual = bw.gather(1, fw) == torch.arange(pd, device=db.device)
    if masked:
        mutual &= ok_db & ok_q[fw]                             # all -inf: argmax 0, no match
    return torch.where(mutual, fw, torch.full_like(fw, -1))
