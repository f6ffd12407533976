# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A real Patch-NetVLAD model without training: ImageNet VGG16 + k-means + WPCA.

The authors' recipe, run on the user's own reference images:
1. conv5_3 descriptors of the images, L2-normalised per location, ``per_image`` random
   locations each (their get_clusters: 100 per image);
2. K-means (faiss, 100 iterations) gives the centroids; NetVLAD's assignment conv is
   initialised from them (vladv1: alpha from the top-2 assignment gap; vladv2: from
   the distances to the two nearest descriptors);
3. a whitened PCA fitted on normalised VLAD vectors of the images' patches and whole
   images (their add_pca: eigenvectors scaled by 1 / sqrt(lambda + 1e-9)).
The PCA is fitted through the N x N Gram matrix of the N samples (N < K*D), so memory
is O(N * K*D + N^2), never a dense SVD of the sample matrix.
"""

import math
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np
import torch

from . import vlad
from .backbone import imagenet_encoder_state
from .image import to_tensor
from .model import PatchNetVLAD
from ..config import PatchNetVLADConfig
from ..errors import ImageError

#: Bumped whenever the recipe's output changes, so cached bootstrapped models are rebuilt.
RECIPE_VERSION = 2
#: -log(0.01): NetVLAD's alpha makes the top-2 assignment ratio 100 on average.
_ALPHA_LOG = -math.log(0.01)


def _batches(images: Sequence[np.ndarray], size: int) -> Iterable[Sequence[np.ndarray]]:
    for i in range(0, len(images), size):
        yield images[i:i + size]


@torch.inference_mode()
def encode_images(model: PatchNetVLAD, images: Sequence[np.ndarray], batch_size: int = 8,
                  progress: Optional[Callable[[int], None]] = None) -> List[torch.Tensor]:
    """Backbone features [D, h, w] of each RGB image (validated and resized)."""
    out: List[torch.Tensor] = []
    device = next(model.parameters()).device
    for batch in _batches(images, batch_size):
        feats = model.encode(to_tensor(list(batch), model.config).to(device))
        out.extend(f.cpu() for f in feats)
        if progress is not None:
            progress(len(batch))
    return out


def sample_descriptors(features: Sequence[torch.Tensor], per_image: int,
                       rng: np.random.Generator) -> np.ndarray:
    """per_image random L2-normalised local descriptors per feature map: [N, D] float32."""
    rows = []
    for f in features:
        x = torch.nn.functional.normalize(f.flatten(1), dim=0).t()   # [h*w, D]
        take = rng.choice(x.shape[0], min(per_image, x.shape[0]), replace=False)
        rows.append(x[np.sort(take)].numpy())
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)


def fit_centroids(descriptors: np.ndarray, num_clusters: int, niter: int = 100,
                  seed: int = 0) -> np.ndarray:
    """K-means centroids [K, D] of descriptors [N, D] (faiss, like get_clusters)."""
    import faiss
    if descriptors.shape[0] < num_clusters:
        raise ImageError(
            f'{descriptors.shape[0]} local descriptors cannot make {num_clusters} clusters: '
            'give more or larger reference images')
    kmeans = faiss.Kmeans(descriptors.shape[1], num_clusters, niter=niter, seed=seed,
                          verbose=False)
    kmeans.train(descriptors)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def init_netvlad(model: PatchNetVLAD, centroids: np.ndarray, descriptors: np.ndarray) -> float:
    """Set ``pool.centroids`` and the assignment conv from k-means; return alpha.

    vladv1 (the authors' default): conv weight = alpha * c_k / |c_k|, no bias, where alpha
    = -log(0.01) / mean over descriptors of (top1 - top2) of c_k / |c_k| . x.
    vladv2 (NetVLAD paper): weight = 2 alpha c_k, bias = -alpha |c_k|^2, with alpha =
    -log(0.01) / mean over centroids of (d2^2 - d1^2), d1, d2 the distances to the two
    nearest descriptors. (The authors' vladv2 code takes neighbour *indices* where it
    means distances and |c_k| where the paper has |c_k|^2; we follow the paper.)
    """
    pool = model.pool
    c = torch.from_numpy(centroids)
    with torch.no_grad():
        pool.centroids.copy_(c)
        if not model.config.vladv2:
            c_unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
            dots = np.sort(c_unit @ descriptors.T, axis=0)[::-1]
            alpha = float(_ALPHA_LOG / np.mean(dots[0] - dots[1]))
            pool.conv.weight.copy_(torch.from_numpy(alpha * c_unit)[:, :, None, None])
        else:
            import faiss
            index = faiss.IndexFlatL2(descriptors.shape[1])
            index.add(descriptors)
            dist_sq, _ = index.search(centroids, 2)           # squared L2 distances
            alpha = float(_ALPHA_LOG / np.mean(dist_sq[:, 1] - dist_sq[:, 0]))
            pool.conv.weight.copy_((2.0 * alpha * c)[:, :, None, None])
            pool.conv.bias.copy_(-alpha * (c * c).sum(1))
    return alpha


@torch.inference_mode()
def fit_wpca(samples: torch.Tensor, num_pcs: int) -> 'tuple[torch.Tensor, torch.Tensor]':
    """Whitened PCA of samples [N, Dv] (consumed): weight [num_pcs, Dv], bias [num_pcs].

    y = weight @ v + bias = diag(1 / sqrt(lambda + 1e-9)) U^T (v - mu), with U the top
    eigenvectors of the sample covariance. Computed through the Gram matrix
    G = Xc Xc^T / (N - 1) [N, N] when N < Dv (the dual trick of the authors' pca()).
    Needs N > num_pcs samples.
    """
    n, dv = samples.shape
    if n <= num_pcs:
        raise ImageError(
            f'a {num_pcs}-dimensional PCA needs more than {num_pcs} descriptor samples; got '
            f'{n}. Give more reference images, or use a preset with fewer dimensions '
            '(speed: 512, storage: 128)')
    mu = samples.mean(0)
    xc = samples.sub_(mu)                                         # centred in place
    if n < dv:
        gram = (xc @ xc.t()).double() / (n - 1)                   # [N, N]
        lams, vecs = torch.linalg.eigh(gram)
        lams, vecs = lams.flip(0)[:num_pcs], vecs.flip(1)[:, :num_pcs]
        lams = lams.clamp_min(1e-9)
        # Eigenvectors of the covariance: U = Xc^T V / sqrt(lambda (N - 1)).
        u = xc.t() @ (vecs / (lams * (n - 1)).sqrt()).float()    # [Dv, num_pcs]
    else:
        cov = (xc.t() @ xc).double() / (n - 1)
        lams, vecs = torch.linalg.eigh(cov)
        lams, u = lams.flip(0)[:num_pcs].clamp_min(0), vecs.flip(1)[:, :num_pcs].float()
    weight = (u / (lams + 1e-9).sqrt().float()).t().contiguous()  # [num_pcs, Dv]
    bias = -(weight @ mu)
    return weight, bias


@torch.inference_mode()
def vlad_samples(model: PatchNetVLAD, features: Sequence[torch.Tensor], max_samples: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """Collect normalised, unprojected VLADs [N, K*D] to fit the PCA on.

    Every image's global VLAD plus random patches of every scale, spread evenly over
    the images.
    """
    cfg = model.config
    per_image = max(1, (max_samples - len(features)) // max(len(features), 1))
    rows = []
    for f in features:
        d, h, w = f.shape
        x, a = model.assign(f[None])
        rows.append(vlad.normalize_vlad(vlad.global_vlad(x, a, model.pool.centroids))[0:1])
        patches = torch.cat(vlad.patch_vlad_vectors(x[0], a[0], model.pool.centroids, h, w,
                                                    cfg.patch_sizes, cfg.strides))
        take = rng.choice(patches.shape[0], min(per_image, patches.shape[0]), replace=False)
        rows.append(patches[torch.from_numpy(np.sort(take))])
    return torch.cat(rows)


def bootstrap_model(config: PatchNetVLADConfig, images: Sequence[np.ndarray], seed: int = 0,
                    per_image: int = 100, max_pca_samples: Optional[int] = None,
                    log: Optional[Callable[[str], None]] = None,
                    progress: Optional[Callable[[int], None]] = None) -> PatchNetVLAD:
    """Build a full Patch-NetVLAD model from ImageNet VGG16 and reference images.

    images: RGB uint8 arrays (any size; resized to the config's). max_pca_samples:
    VLAD vectors for the PCA (default max(2 * num_pcs, 2048)). Deterministic for a seed.
    log (if given) receives one line per stage; progress(n) is called as n more images
    are encoded.
    """
    log = log or (lambda _msg: None)
    if len(images) == 0:
        raise ImageError('no reference images: bootstrapping needs at least one image')
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = PatchNetVLAD(config).eval()
    model.encoder.load_state_dict(imagenet_encoder_state())
    log(f'encoding {len(images)} reference images')
    features = encode_images(model, images, progress=progress)
    descriptors = sample_descriptors(features, per_image, rng)
    log(f'k-means: {descriptors.shape[0]} descriptors -> {config.num_clusters} clusters')
    centroids = fit_centroids(descriptors, config.num_clusters, seed=seed)
    init_netvlad(model, centroids, descriptors)
    limit = max_pca_samples or max(2 * config.num_pcs, 2048)
    samples = vlad_samples(model, features, limit, rng)
    log(f'whitened PCA: {samples.shape[0]} VLAD vectors of {samples.shape[1]} dims -> '
        f'{config.num_pcs}')
    weight, bias = fit_wpca(samples, config.num_pcs)
    with torch.no_grad():
        model.WPCA[0].weight.copy_(weight[:, :, None, None])
        model.WPCA[0].bias.copy_(bias)
    return model


def seeded_model(config: PatchNetVLADConfig, seed: int = 0,
                 imagenet_encoder: bool = False) -> PatchNetVLAD:
    """Build a model with seeded random but well-conditioned NetVLAD and WPCA weights.

    For benchmarks (timings do not depend on the weights) and tests. Centroids are random
    directions of norm 0.5, the assignment conv is 20 * c_k / |c_k| (vladv1 layout; a
    random bias for vladv2), the WPCA a Gaussian matrix scaled by 1 / sqrt(K*D).
    imagenet_encoder: load the real ImageNet VGG16 conv weights (else random init).
    """
    gen = torch.Generator().manual_seed(seed)
    model = PatchNetVLAD(config).eval()
    k, d = config.num_clusters, config.encoder_dim
    with torch.no_grad():
        c = torch.nn.functional.normalize(torch.randn(k, d, generator=gen), dim=1) * 0.5
        model.pool.centroids.copy_(c)
        assign = 20.0 * torch.nn.functional.normalize(c, dim=1)
        model.pool.conv.weight.copy_(assign[..., None, None])
        if model.pool.conv.bias is not None:
            model.pool.conv.bias.copy_(torch.randn(k, generator=gen))
        w = torch.randn(config.num_pcs, k * d, generator=gen) / (k * d) ** 0.5
        model.WPCA[0].weight.copy_(w[..., None, None])
        model.WPCA[0].bias.copy_(torch.randn(config.num_pcs, generator=gen) * 0.01)
        if imagenet_encoder:
            model.encoder.load_state_dict(imagenet_encoder_state())
    return model
