# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""NetVLAD aggregation: global and IntegralVLAD patch descriptors, with WPCA.

Notation (shapes in brackets): B images, D = 512 channels, K clusters, a feature
map of h x w = N locations, P_s patches at scale s, Dp PCA dimensions.

For unit-normalised features x_n and soft assignments a_kn, the unnormalised
VLAD of a window W is v_k = sum_{n in W} a_kn (x_n - c_k). IntegralVLAD's point:
every window of every size is a box sum of the same per-location residuals
a_kn (x_n - c_k). We take those box sums directly (exact window sums) instead of
from a running-sum integral image, whose float32 cancellation the whitening
amplifies (see test_authors_equivalence). Each v is intra-normalised per cluster
(as a window mean, like the authors), L2 normalised, projected by the whitened PCA
and L2 normalised again.

Patches are kept as columns [K*D, P]: box sums are GEMMs with 0/1 band
matrices, the intra-normalisation is a per-(cluster, patch) scale, and the
whitened PCA is accumulated cluster chunk by cluster chunk as W[:, chunk] @ V,
so no K x D x h x w residual tensor of a whole image is ever held. The PCA GEMM
(sum_s P_s * K * D * Dp multiply-adds) is the dominant cost. Where there are fewer cells
than patches (the performance preset: 1200 against 2826 at 640x480) each cell's residual
is projected once (N * K * D * Dp) and the projections are summed over the windows, the
same sum in another order: 2.3x fewer multiply-adds for the projection (1.75x counting
the box sums of the projections). On the CPU a C helper (native/patch_vlad.c) takes the
boxes (and those sums) instead of the band GEMMs.
"""

import ctypes
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .. import native

_EPS = 1e-12  # F.normalize's epsilon: the authors' normalisation, reproduced exactly.


def soft_assign(x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Soft-assignment a [B, K, N] of unit features x [B, D, N] (1x1 conv + softmax)."""
    logits = torch.einsum('kd,bdn->bkn', weight.reshape(weight.shape[0], -1), x)
    if bias is not None:
        logits = logits + bias.view(1, -1, 1)
    return F.softmax(logits, dim=1)


def global_vlad(x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Unnormalised VLAD [B, K, D] over all N locations of x [B, D, N], a [B, K, N]."""
    return torch.bmm(a, x.transpose(1, 2)) - a.sum(-1, keepdim=True) * centroids.unsqueeze(0)


def normalize_vlad(v: torch.Tensor) -> torch.Tensor:
    """Intra-normalise per cluster, flatten and L2-normalise: [..., K, D] -> [..., K*D]."""
    v = F.normalize(v, p=2, dim=-1, eps=_EPS)
    return F.normalize(v.flatten(-2), p=2, dim=-1, eps=_EPS)


def project(v: torch.Tensor, pca_weight: torch.Tensor, pca_bias: torch.Tensor) -> torch.Tensor:
    """Whitened PCA then L2: v [..., K*D] -> [..., Dp]; pca_weight [Dp, K*D]."""
    return F.normalize(torch.addmm(pca_bias, v.reshape(-1, v.shape[-1]), pca_weight.t())
                       .reshape(*v.shape[:-1], -1), p=2, dim=-1, eps=_EPS)


def grid_shape(h: int, w: int, size: int, stride: int) -> Tuple[int, int]:
    """Rows and columns of the patch grid for a d x d window with stride s."""
    return (h - size) // stride + 1, (w - size) // stride + 1


def band_matrix(length: int, size: int, stride: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """0/1 matrix [length, n_windows]: column j sums elements j*stride .. j*stride+size-1."""
    n = (length - size) // stride + 1
    i = torch.arange(length, device=device)[:, None]
    start = torch.arange(n, device=device)[None, :] * stride
    return ((i >= start) & (i < start + size)).to(dtype)


def box_sums(t: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Sum every size x size window (stride s) of t [C, h, w] -> [C, P].

    Patches come out column-major (patch index = col * rows + row); see
    :func:`column_major_to_row_major`. Two plain GEMMs with 0/1 band matrices (along
    rows, then along columns) compute IntegralVLAD's box sums directly, so no
    float32 cancellation error of a running cumsum creeps in.
    """
    c, h, w = t.shape
    bw = band_matrix(w, size, stride, t.dtype, t.device)                  # [w, cols]
    bh = band_matrix(h, size, stride, t.dtype, t.device)                  # [h, rows]
    along_w = (t.reshape(c * h, w) @ bw).view(c, h, -1)                   # [C, h, cols]
    cols = along_w.shape[2]
    along_h = along_w.transpose(1, 2).reshape(c * cols, h) @ bh           # [C*cols, rows]
    return along_h.view(c, -1)


def column_major_to_row_major(rows: int, cols: int) -> torch.Tensor:
    """Index that reorders column-major patches (from :func:`box_sums`) to row-major."""
    r = torch.arange(rows)[:, None]
    c = torch.arange(cols)[None, :]
    return (c * rows + r).reshape(-1)


def native_boxes_available() -> bool:
    """Whether the C helper for the patch boxes is built here (see :mod:`.native`)."""
    return native.library('patch_vlad') is not None


def _runs_native(native_boxes: Optional[bool], x: torch.Tensor) -> bool:
    """Whether the patch boxes run in C: ``native_boxes``, or where they can when None."""
    fits = x.device.type == 'cpu' and x.dtype == torch.float32
    if native_boxes is None:
        return fits and native_boxes_available()
    if native_boxes and not fits:
        raise ValueError('the C patch boxes take float32 CPU tensors; got '
                         f'{x.dtype} on {x.device}')
    if native_boxes and not native_boxes_available():
        raise RuntimeError('the C patch boxes are not available here: '
                           f'{native.unavailable_reason("patch_vlad")}')
    return native_boxes


def _torch_boxes(residual: torch.Tensor, h: int, w: int, scales: Sequence[Tuple[int, int]]
                 ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Intra-normalised boxes V [kc*D, P] and norms [kc, P] per scale (torch path).

    residual: a_kn (x_n - c_k) [kc, D, N] of a chunk of clusters (:func:`_residual`), made
    once for all scales; P is column-major, as :func:`box_sums`.
    """
    kc, d = residual.shape[:2]
    residual = residual.view(kc * d, h, w)
    for size, stride in scales:
        v = box_sums(residual, size, stride).view(kc, d, -1)
        # The authors normalise the window *mean* (sum / d^2): same direction, but
        # F.normalize's eps then applies to the mean, which matters for clusters
        # with almost no assignment mass in the window.
        area = float(size * size)
        norms = torch.linalg.vector_norm(v, dim=1) / area                   # [kc, P]
        v.mul_((1.0 / (norms.clamp_min(_EPS) * area))[:, None, :])
        yield v.view(kc * d, -1), norms


def _residual(x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor, k0: int,
              k1: int) -> torch.Tensor:
    """Residuals a_kn (x_n - c_k) [kc, D, N] of clusters k0..k1; x [D, N], a [K, N]."""
    return a[k0:k1, None, :] * (x[None] - centroids[k0:k1, :, None])


def _native_boxes(x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor, k0: int, k1: int,
                  h: int, w: int, scales: Sequence[Tuple[int, int]],
                  buffers: List[torch.Tensor]) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """As :func:`_torch_boxes`, by ``native/patch_vlad.c``; x here is x^T [N, D].

    buffers: one [P * step * D] float32 tensor per scale, reused chunk after chunk (fresh
    large blocks would cost page faults each time).
    """
    lib = native.library('patch_vlad')
    kc, d = k1 - k0, centroids.shape[1]
    for (size, stride), buf in zip(scales, buffers):
        rows, cols = grid_shape(h, w, size, stride)
        out = buf[:rows * cols * kc * d].view(rows * cols, kc * d)
        norms = x.new_empty(kc, rows * cols)
        _checked(lib.pnv_patch_vlad(x.data_ptr(), a.data_ptr(), centroids.data_ptr(), h, w, d,
                                    k0, k1, size, stride, _EPS, out.data_ptr(),
                                    norms.data_ptr()), h, w, size, stride)
        yield out.t(), norms


def _checked(rc: int, h: int, w: int, sizes, strides) -> None:
    """Raise for a failed C patch-box call: -1 out of memory, -2 sizes it refused."""
    if rc == -1:
        raise MemoryError("out of memory for the patch boxes' scratch space")
    if rc != 0:
        raise ValueError(f'the C patch boxes refused windows {sizes} (strides {strides}) on a '
                         f'{h} x {w} feature map: each window must fit the map')


def projects_cells(h: int, w: int, sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether :func:`patch_descriptors` projects per cell by default: h*w < patches."""
    return h * w < sum(r * c for r, c in (grid_shape(h, w, s, st)
                                          for s, st in zip(sizes, strides)))


def _project_cells(xt: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor,
                   pca_weight: torch.Tensor, h: int, w: int,
                   scales: Sequence[Tuple[int, int]], chunk_bytes: int
                   ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Accumulated projections [Dp, P] and |intra-normed|^2 [P] per scale, projecting cells.

    W_k V_kp = sum_{n in p} W_k a_kn (x_n - c_k): the projection is taken once per cell
    and cluster (N K D Dp multiply-adds) and summed over each window in C, scaled by the
    window's 1 / |V_kp| (from a first C pass that only takes the norms). Cheaper than
    projecting every patch when N < sum_s P_s (the performance preset: 1200 cells against
    2826 patches at 640x480). xt: x^T [N, D]; other inputs as :func:`patch_descriptors`.
    """
    lib = native.library('patch_vlad')
    k, d = centroids.shape
    dp, n, eps = pca_weight.shape[0], h * w, _EPS
    shapes = [grid_shape(h, w, size, stride) for size, stride in scales]
    weights, sq = [], []
    for (size, stride), (rows, cols) in zip(scales, shapes):
        norms = xt.new_empty(k, rows * cols)
        _checked(lib.pnv_patch_vlad(xt.data_ptr(), a.data_ptr(), centroids.data_ptr(), h, w, d,
                                    0, k, size, stride, eps, None, norms.data_ptr()),
                 h, w, size, stride)
        sq.append(_normed_sq(norms))
        weights.append(1.0 / (norms.clamp_min(eps) * float(size * size)))  # [K, P]
    acc = [xt.new_zeros(rows * cols, dp) for rows, cols in shapes]         # [P, Dp]
    step = max(1, min(k, chunk_bytes // (n * dp * 4)))
    u = xt.new_empty(step, n, dp)
    ns = len(scales)
    sizes = (ctypes.c_int64 * ns)(*(size for size, _ in scales))
    strides = (ctypes.c_int64 * ns)(*(stride for _, stride in scales))
    accs = (ctypes.c_void_p * ns)(*(t.data_ptr() for t in acc))
    for k0 in range(0, k, step):
        k1 = min(k0 + step, k)
        for j in range(k0, k1):
            torch.mm(a[j, :, None] * (xt - centroids[j]), pca_weight[:, j * d:(j + 1) * d].t(),
                     out=u[j - k0])
        rows_of = (ctypes.c_void_p * ns)(*(t[k0].data_ptr() for t in weights))
        _checked(lib.pnv_patch_project_cells(u.data_ptr(), k1 - k0, dp, h, w, ns, sizes,
                                             strides, rows_of, accs), h, w, sizes, strides)
    return [t.t() for t in acc], sq


def _torch_project_cells(x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor,
                         pca_weight: torch.Tensor, h: int, w: int,
                         scales: Sequence[Tuple[int, int]], chunk_bytes: int
                         ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """As :func:`_project_cells`, in torch (any device): x [D, N], the rest the same.

    Per chunk of clusters: u_k = W_k a_kn (x_n - c_k) [kc, Dp, N] by one batched GEMM, its
    box sums per scale (band GEMMs, as :func:`box_sums`), weighted by 1 / |V_kp| from the
    residuals' own box sums and summed over the chunk's clusters.
    """
    k, d = centroids.shape
    dp, n = pca_weight.shape[0], h * w
    shapes = [grid_shape(h, w, size, stride) for size, stride in scales]
    most = max(r * c for r, c in shapes)
    acc = [x.new_zeros(dp, r * c) for r, c in shapes]                      # [Dp, P]
    sq = [x.new_zeros(r * c) for r, c in shapes]
    # per cluster: u and its box sums along rows, then columns, then their weighted copy
    step = max(1, min(k, chunk_bytes // (dp * (2 * n + 2 * most) * x.element_size())))
    for k0 in range(0, k, step):
        k1 = min(k0 + step, k)
        kc = k1 - k0
        residual = _residual(x, a, centroids, k0, k1)                      # [kc, D, N]
        u = torch.bmm(pca_weight[:, k0 * d:k1 * d].view(dp, kc, d).transpose(0, 1),
                      residual)                                             # [kc, Dp, N]
        for i, ((size, stride), (_, norms)) in enumerate(
                zip(scales, _torch_boxes(residual, h, w, scales))):
            sq[i] += _normed_sq(norms)
            boxes = box_sums(u.view(kc * dp, h, w), size, stride).view(kc, dp, -1)
            acc[i] += torch.einsum('kdp,kp->dp', boxes,
                                   1.0 / (norms.clamp_min(_EPS) * float(size * size)))
    return acc, sq


def patch_descriptors(x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor,
                      pca_weight: torch.Tensor, pca_bias: torch.Tensor, h: int, w: int,
                      sizes: Sequence[int], strides: Sequence[int],
                      chunk_bytes: int = 16 << 20,
                      native_boxes: Optional[bool] = None,
                      per_cell: Optional[bool] = None) -> List[torch.Tensor]:
    """Patch descriptors of one image, one [P_s, Dp] tensor per scale, row-major patches.

    x: [D, N] unit features, a: [K, N] soft assignments, centroids: [K, D], N = h * w,
    pca_weight: [Dp, K*D], pca_bias: [Dp].

    Works through chunks of clusters whose boxes (or residuals a_kn (x_n - c_k)
    [kc, D, h, w]) fit in chunk_bytes. Per chunk and scale: box sums V [kc*D, P],
    intra-normalisation V / |V_k|, and the partial projection W[:, chunk] @ V accumulated
    into [Dp, P]. The global L2 normalisation is a per-patch scale, so it is applied after
    the sum: y = (sum_k W_k V_k / |V_k|) / sqrt(sum_k |V_k / |V_k||^2) + b, then y / |y|,
    where |.| is clamped at F.normalize's eps applied to the window mean V_k / d^2.
    native_boxes: the boxes and their normalisation in C (``native/patch_vlad.c``, several
    times faster than the torch GEMMs with 0/1 band matrices, same sums); None: where the
    helper runs (float32 on the CPU, built). per_cell: project each cell's residual and sum
    the projections over the windows (see :func:`_project_cells`) instead of projecting
    each window's VLAD: the same sum in another order; None: as :func:`projects_cells`.
    """
    k, d = centroids.shape
    scales = list(zip(sizes, strides))
    shapes = [grid_shape(h, w, s, st) for s, st in scales]
    native_path = _runs_native(native_boxes, x)
    if per_cell is None:
        per_cell = projects_cells(h, w, sizes, strides)
    if native_path:        # the C helper reads x^T [N, D] and dense a and centroids
        xt, a, centroids = x.t().contiguous(), a.contiguous(), centroids.contiguous()
    if per_cell:
        if native_path:
            acc, sq = _project_cells(xt, a, centroids, pca_weight, h, w, scales, chunk_bytes)
        else:
            acc, sq = _torch_project_cells(x, a, centroids, pca_weight, h, w, scales,
                                           chunk_bytes)
        return _finish(acc, sq, shapes, pca_bias)
    if native_path:
        step = max(1, chunk_bytes // (d * max(r * c for r, c in shapes) * 4))
        buffers = [x.new_empty(r * c * min(step, k) * d) for r, c in shapes]

        def boxes(k0, k1):
            return _native_boxes(xt, a, centroids, k0, k1, h, w, scales, buffers)
    else:
        step = max(1, chunk_bytes // (d * h * w * x.element_size()))

        def boxes(k0, k1):
            return _torch_boxes(_residual(x, a, centroids, k0, k1), h, w, scales)
    acc = [x.new_zeros(pca_weight.shape[0], r * c) for r, c in shapes]   # [Dp, P] per scale
    sq = [x.new_zeros(r * c) for r, c in shapes]                          # |intra-normed|^2
    for k0 in range(0, k, step):
        k1 = min(k0 + step, k)
        for i, (v, norms) in enumerate(boxes(k0, k1)):
            sq[i] += _normed_sq(norms)
            acc[i].addmm_(pca_weight[:, k0 * d:k1 * d], v)
    return _finish(acc, sq, shapes, pca_bias)


def _normed_sq(norms: torch.Tensor) -> torch.Tensor:
    """Return |intra-normalised VLAD|^2 [P] from norms [kc, P] (1 per cluster above eps)."""
    return ((norms / norms.clamp_min(_EPS)) ** 2).sum(0)


def _finish(acc: List[torch.Tensor], sq: List[torch.Tensor], shapes: List[Tuple[int, int]],
            pca_bias: torch.Tensor) -> List[torch.Tensor]:
    """Global normalisation, bias, L2: [Dp, P] sums (column-major P) -> [P, Dp] row-major."""
    out = []
    for (rows, cols), y, total in zip(shapes, acc, sq):
        y = y / total.sqrt().clamp_min(_EPS) + pca_bias[:, None]
        desc = F.normalize(y.t(), p=2, dim=-1, eps=_EPS)
        out.append(desc[column_major_to_row_major(rows, cols).to(desc.device)])
    return out


def patch_vlad_vectors(x: torch.Tensor, a: torch.Tensor, centroids: torch.Tensor, h: int,
                       w: int, sizes: Sequence[int],
                       strides: Sequence[int]) -> List[torch.Tensor]:
    """Normalised, unprojected patch VLADs of one image: one [P_s, K*D] per scale.

    The vectors the whitened PCA is fitted on (row-major patches); inputs as for
    :func:`patch_descriptors`. Holds [K*D, P_s] per scale: use on small images or
    few scales (bootstrap and tests), not in the extraction hot path.
    """
    k, d = centroids.shape
    residual = (a[:, None, :] * (x[None] - centroids[:, :, None])).view(k * d, h, w)
    out = []
    for size, stride in zip(sizes, strides):
        rows, cols = grid_shape(h, w, size, stride)
        v = box_sums(residual, size, stride).view(k, d, -1).permute(2, 0, 1)  # [P, K, D]
        v = normalize_vlad(v / float(size * size))       # window mean, as the authors
        out.append(v[column_major_to_row_major(rows, cols).to(v.device)])
    return out
