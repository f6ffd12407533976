# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""RANSAC homography inlier counts for many candidates at once, in torch (CPU or GPU).

OpenCV's ``findHomography`` runs one candidate at a time, one hypothesis after another.
Here every candidate draws the same number of minimal samples (4 matches) and all
hypotheses of all candidates are fitted and scored together as batched tensor
operations, which is what a GPU needs. The model follows OpenCV's RANSAC: a sample is
rejected when three of its points are collinear (in either image) or when its four
triangles do not keep one orientation between the images (Marquez-Neila et al., "Speeding-up
homography estimation in mobile devices", 2013); the homography is the exact fit of the
4 matches (DLT with h33 = 1, on coordinates normalised per sample); a match is an inlier
when its reprojection error is below the threshold; the answer is the hypothesis with the
most inliers. OpenCV stops once its adaptive iteration count is reached (confidence
0.995, at most 2000), so the two find the same maximum on clean data and may differ by a
few inliers on hard candidates (``test/test_batched_ransac.py`` states the tolerance on
real matches).
"""

from typing import Optional, Tuple

import torch

#: Hypotheses drawn per candidate: OpenCV's iteration cap.
HYPOTHESES = 2000
#: Samples drawn per hypothesis kept (the rest replace degenerate samples).
OVERSAMPLE = 2
#: Hypotheses scored at once (bounds the [C, chunk, M] error tensor).
CHUNK = 256


def _distinct_samples(counts: torch.Tensor, hypotheses: int,
                      generator: torch.Generator) -> torch.Tensor:
    """Draw indices [C, H, 4] of 4 distinct matches per hypothesis, uniform in [0, counts[c]).

    Candidates with fewer than 4 matches get indices too (all 0); the caller drops them.
    """
    c = counts.shape[0]
    u = torch.rand((c, hypotheses, 4), generator=generator, dtype=torch.float64,
                   device=generator.device).to(counts.device)
    n = counts.clamp_min(4).to(torch.float64)[:, None]
    chosen = []
    for k in range(4):
        # uniform over the n - k matches not chosen yet: draw an index among them, then
        # step over the chosen ones in increasing order
        idx = (u[..., k] * (n - k)).floor().long().clamp_max((n - k - 1).long())
        for prev in (torch.stack(chosen, -1).sort(-1).values.unbind(-1) if chosen else ()):
            idx = idx + (idx >= prev).long()
        chosen.append(idx)
    return torch.stack(chosen, -1)


def _cross(o: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return the z component of (a - o) x (b - o) for points [..., 2]."""
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - \
        (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def _good_samples(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Mask [...] of 4-point samples src, dst [..., 4, 2] that can define a homography."""
    ok = torch.ones(src.shape[:-2], dtype=torch.bool, device=src.device)
    for pts in (src, dst):                     # no three points collinear
        for i, j, k in ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)):
            d1, d2 = pts[..., j, :] - pts[..., i, :], pts[..., k, :] - pts[..., i, :]
            scale = d1.abs().sum(-1) + d2.abs().sum(-1)
            area = (d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]).abs()
            ok &= area > torch.finfo(torch.float32).eps * scale
    negative = torch.zeros_like(ok, dtype=torch.int64)
    for i, j, k in ((0, 1, 2), (1, 2, 3), (0, 2, 3), (0, 1, 3)):
        s = _cross(src[..., i, :], src[..., j, :], src[..., k, :])
        d = _cross(dst[..., i, :], dst[..., j, :], dst[..., k, :])
        negative += (s * d < 0).long()
    return ok & ((negative == 0) | (negative == 4))


def _normaliser(pts: torch.Tensor) -> torch.Tensor:
    """Similarity transforms [..., 3, 3] taking points [..., n, 2] to mean 0, mean |x| 1."""
    mean = pts.mean(-2)
    scale = 1.0 / (pts - mean[..., None, :]).abs().mean(-2).clamp_min(1e-12)
    t = torch.zeros(pts.shape[:-2] + (3, 3), dtype=pts.dtype, device=pts.device)
    t[..., 0, 0], t[..., 1, 1], t[..., 2, 2] = scale[..., 0], scale[..., 1], 1.0
    t[..., 0, 2], t[..., 1, 2] = -scale[..., 0] * mean[..., 0], -scale[..., 1] * mean[..., 1]
    return t


def _apply(t: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Points [..., n, 2] through affine transforms t [..., 3, 3]."""
    return pts @ t[..., :2, :2].transpose(-1, -2) + t[..., None, :2, 2]


def fit_homographies(src: torch.Tensor, dst: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Homographies [..., 3, 3] mapping src [..., 4, 2] exactly to dst [..., 4, 2].

    Returns (H, ok): ok is False where the 4 matches define no homography.
    """
    ts, td = _normaliser(src), _normaliser(dst)
    s, d = _apply(ts, src), _apply(td, dst)
    x, y, u, v = s[..., 0], s[..., 1], d[..., 0], d[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    # u (h31 x + h32 y + 1) = h11 x + h12 y + h13, likewise v: 8 equations in 8 unknowns
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], -2)                          # [..., 8, 8]
    b = torch.cat([u, v], -1)[..., None]                         # [..., 8, 1]
    h, info = torch.linalg.solve_ex(a, b)
    hn = torch.cat([h[..., 0], torch.ones_like(h[..., :1, 0])], -1).reshape(
        src.shape[:-2] + (3, 3))
    homography = torch.linalg.solve(td, hn @ ts)                 # undo the normalisation
    ok = (info == 0) & torch.isfinite(homography).flatten(-2).all(-1)
    return homography, ok


def ransac_inlier_counts(src: torch.Tensor, dst: torch.Tensor, valid: torch.Tensor,
                         threshold: float, hypotheses: int = HYPOTHESES, seed: int = 0,
                         chunk: int = CHUNK) -> Tuple[torch.Tensor, torch.Tensor]:
    """Most inliers of a RANSAC homography per candidate, and that hypothesis' inlier mask.

    src, dst: [C, M] matched points (x, y) in pixels, padded; valid: [C, M] which are real
    matches, packed first (row c holds its n_c matches in columns 0..n_c - 1).
    threshold: reprojection error in pixels. Candidates with fewer than 4 matches, or no
    good sample, get 0 inliers. Returns counts [C] (int64) and inliers [C, M] (bool).
    """
    c, m = valid.shape
    device = src.device
    counts = valid.sum(1)
    best = torch.zeros(c, dtype=torch.int64, device=device)
    best_mask = torch.zeros((c, m), dtype=torch.bool, device=device)
    if (valid[:, 1:] & ~valid[:, :-1]).any():
        raise ValueError('valid matches must be packed first in each row')
    if c == 0 or m < 4:
        return best, best_mask
    work = torch.float64 if device.type == 'cpu' else torch.float32
    src_w, dst_w = src.to(work), dst.to(work)
    generator = torch.Generator(device='cpu').manual_seed(seed)
    # like OpenCV, a degenerate sample does not use up an iteration: draw extra samples
    # and keep each candidate's first `hypotheses` good ones (patch centres lie on a
    # grid, so collinear triples are common)
    idx = _distinct_samples(counts, OVERSAMPLE * hypotheses, generator)   # [C, kH, 4]
    rows = torch.arange(c, device=device)[:, None, None]
    s, d = src_w[rows, idx], dst_w[rows, idx]                     # [C, kH, 4, 2]
    homography, ok = fit_homographies(s, d)
    ok &= _good_samples(s, d) & (counts >= 4)[:, None]
    keep = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)[:, :hypotheses]
    homography = homography[rows[..., 0], keep]                   # [C, H, 3, 3]
    ok = torch.gather(ok, 1, keep)
    thr2 = float(threshold) ** 2
    p = torch.cat([src_w, torch.ones_like(src_w[..., :1])], -1)   # [C, M, 3]
    for h0 in range(0, hypotheses, chunk):
        hs = homography[:, h0:h0 + chunk]                        # [C, h, 3, 3]
        proj = torch.einsum('chij,cmj->chmi', hs, p)             # [C, h, M, 3]
        xy = proj[..., :2] / proj[..., 2:]
        err = ((xy - dst_w[:, None]) ** 2).sum(-1)               # [C, h, M]
        inl = (err <= thr2) & valid[:, None] & ok[:, h0:h0 + chunk, None]
        n = inl.sum(-1)                                          # [C, h]
        top, arg = n.max(1)
        better = top > best                                      # first maximum wins
        best = torch.where(better, top, best)
        pick = inl[torch.arange(c, device=device), arg]
        best_mask = torch.where(better[:, None], pick, best_mask)
    return best, best_mask


def pack_matches(match: torch.Tensor, centres: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Pack the matched patch centres of C candidates for :func:`ransac_inlier_counts`.

    match: [C, P] mutual matches (query index or -1, see matching.mutual_nn);
    centres: [P, 2] pixel centres of the patches (the same grid for query and database).
    Returns src [C, M, 2] (database centres), dst [C, M, 2] (query centres), valid [C, M]
    with M the most matches of any candidate, and the db patch index [C, M] (or None).
    """
    c, p = match.shape
    valid_full = match >= 0
    m = int(valid_full.sum(1).max()) if c else 0
    # stable sort puts each row's matches first, in patch order
    order = torch.argsort((~valid_full).to(torch.int8), dim=1, stable=True)[:, :m]
    valid = torch.gather(valid_full, 1, order)
    q_idx = torch.gather(match, 1, order).clamp_min(0)
    src = centres[order]
    dst = centres[q_idx]
    return src, dst, valid, (order if m else None)
