# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The training loop: triplets mined from a refreshed cache, conv5 + NetVLAD trained, WPCA.

The authors' recipe (Patch-NetVLAD ``train.py`` with ``train.ini``), on cached pool4 maps
(:mod:`.features`) so that an epoch is practical on a CPU:

1. NetVLAD starts from k-means on the training images' conv5_3 descriptors (their
   get_clusters), or from a given checkpoint;
2. each epoch visits the queries (images with a positive and a negative, see
   :mod:`.supervision`) in a seeded random order; every ``refresh_every`` steps the
   descriptors of the next queries, their positives and ``cache_negatives`` random images
   are computed with the current model (the authors' cache refresh), and each query's best
   positive and hard negatives are mined from them (:mod:`.mining`);
3. a step runs conv5 and NetVLAD on ``batch_size`` queries with their positive and
   negatives, and the triplet margin loss moves conv5_1..conv5_3, the centroids and the
   assignment conv (SGD, lr 1e-4, momentum 0.9, weight decay 1e-3, halved every 5 epochs);
4. after the last epoch the whitened PCA is fitted again (:func:`..bootstrap.fit_wpca` on
   VLADs of patches and whole images of the training images) and the model is written in
   the authors' layout.

After every epoch the state (trained weights, optimizer, scheduler, epoch, RNG states)
is written atomically to ``state.pt`` in the output folder: a resumed run continues from
the last finished epoch and ends with the same bits as an uninterrupted one (on the same
device). Everything runs on one device: the cached maps, the model and the mining.
"""

from dataclasses import asdict, dataclass, field
import hashlib
import json
import os
from pathlib import Path
import time
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import torch

from .augment import augmented
from .features import (conv5_block, FeatureCache, FeatureStore, pixel_key,
                       trainable_parameters, trunk_digest, TRUNK_END)
from .mining import distance_margin, mine_triplets, triplet_loss
from .options import MODEL_FILE, REPORT_FILE, STATE_FILE, TrainOptions
from .supervision import concat_positions, Supervision, supervision_from_positions
from ..config import cache_dir
from ..config import PatchNetVLADConfig
from ..drives.drives import Drive, positions_of
from ..errors import ConfigError
from ..model import vlad
from ..model.backbone import imagenet_encoder_state
from ..model.bootstrap import (fit_centroids, fit_wpca, init_netvlad, sample_descriptors,
                               vlad_samples)
from ..model.checkpoint import load_model, model_digest, save_checkpoint
from ..model.model import PatchNetVLAD

#: Bumped when the state file's contents change.
STATE_FORMAT = 1
#: Default VLAD vectors for the final WPCA: four times bootstrapping's 2048. A 512-dim
#: whitening fitted on 2048 amplifies noise directions: on the corridor the bootstrapped
#: model's global R@1 was 0.820 / 0.901 / 0.910 with 2048 / 4096 / 8192 samples.
PCA_SAMPLES = 8192
PathLike = Union[str, Path]
Log = Callable[[str], None]
#: progress(total, description) -> update(n): makes a progress bar (see cli.common).
ProgressFactory = Callable[[Optional[int], str], Callable[[int], None]]


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when torch sees a GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}': use auto, cpu or cuda[:N]") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda: no CUDA device is available to torch here; use '
                          '--device cpu (or auto)')
    if device.type not in ('cpu', 'cuda'):
        raise ConfigError(f"unsupported device '{name}': use auto, cpu or cuda[:N]")
    return device


# ------------------------------------------------------------------------- the network
def conv5(model: PatchNetVLAD, maps: torch.Tensor) -> torch.Tensor:
    """conv5_3 features [B, 512, h, w] of pool4 maps [B, 512, h, w] (differentiable)."""
    return conv5_block(model)(maps.contiguous(memory_format=torch.channels_last)).contiguous()


def global_vlads(model: PatchNetVLAD, features: torch.Tensor) -> torch.Tensor:
    """Normalised global VLADs [B, K*D] of conv5_3 features [B, 512, h, w]."""
    x, a = model.assign(features)
    return vlad.normalize_vlad(vlad.global_vlad(x, a, model.pool.centroids))


def vlad_vectors(model: PatchNetVLAD, maps: torch.Tensor) -> torch.Tensor:
    """Normalised global VLADs [B, K*D] of pool4 maps [B, 512, h, w] (differentiable)."""
    return global_vlads(model, conv5(model, maps))


@torch.no_grad()
def describe(model: PatchNetVLAD, store: FeatureStore, indices: Sequence[int],
             batch_size: int = 32) -> torch.Tensor:
    """Return the VLADs [len(indices), K*D] (on the store's device) of the current weights."""
    out = [vlad_vectors(model, store.batch(indices[i:i + batch_size]))
           for i in range(0, len(indices), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.config.vlad_dim)


@torch.no_grad()
def conv5_features(model: PatchNetVLAD, store: FeatureStore, indices: Sequence[int],
                   batch_size: int = 32) -> List[torch.Tensor]:
    """conv5_3 maps [512, h, w] of the given stored images (for k-means and the WPCA)."""
    out: List[torch.Tensor] = []
    for i in range(0, len(indices), batch_size):
        maps = store.batch(indices[i:i + batch_size])
        out.extend(conv5_block(model)(maps.contiguous(memory_format=torch.channels_last))
                   .contiguous())
    return out


def init_clusters(model: PatchNetVLAD, store: FeatureStore, indices: Sequence[int],
                  seed: int, per_image: int = 100) -> float:
    """Initialise NetVLAD by k-means on conv5_3 descriptors of the images; return alpha."""
    rng = np.random.default_rng([seed, 1])
    features = [f.cpu() for f in conv5_features(model, store, indices)]
    descriptors = sample_descriptors(features, per_image, rng)
    centroids = fit_centroids(descriptors, model.config.num_clusters, seed=seed)
    return init_netvlad(model, centroids, descriptors)


def refit_wpca(model: PatchNetVLAD, store: FeatureStore, indices: Sequence[int], seed: int,
               max_samples: Optional[int] = None) -> int:
    """Fit the whitened PCA again on the given images; return the number of samples."""
    rng = np.random.default_rng([seed, 2])
    limit = max_samples or max(2 * model.config.num_pcs, PCA_SAMPLES)
    samples = vlad_samples(model, conv5_features(model, store, indices), limit, rng)
    weight, bias = fit_wpca(samples, model.config.num_pcs)
    with torch.no_grad():
        model.WPCA[0].weight.copy_(weight[:, :, None, None])
        model.WPCA[0].bias.copy_(bias)
    return int(samples.shape[0])


# --------------------------------------------------------------------------- the state
def trained_state(model: PatchNetVLAD) -> Dict[str, torch.Tensor]:
    """Return the trained tensors (conv5 block, NetVLAD) of the state dict, on the CPU."""
    keep = tuple(f'encoder.{i}.' for i in range(TRUNK_END, len(model.encoder))) + ('pool.',)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k.startswith(keep)}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class EpochRecord:
    """One finished epoch: mean step loss, mined loss after it, triplets, time, lr."""

    epoch: int
    step_loss: float
    mined_loss: float
    triplets: int
    skipped: int
    steps: int
    seconds: float
    lr: float


@dataclass
class TrainingResult:
    """What :func:`train` made: the checkpoint, its digest and the history."""

    checkpoint: Path
    digest: str
    initial_loss: float
    epochs: List[EpochRecord] = field(default_factory=list)
    pca_samples: int = 0
    resumed_from: int = 0


class Trainer:
    """Train a model's conv5 block and NetVLAD on cached maps (see the module doc).

    model: on ``store.device``, NetVLAD initialised (see :func:`init_clusters`).
    supervision: positives and negatives of the store's images (same order).
    identity: what the training data and starting model are (image keys, digests...): a
    resumed run must have the same. originals: the stored images that are not augmented
    copies (the WPCA is fitted on them; default all).
    """

    def __init__(self, model: PatchNetVLAD, store: FeatureStore, supervision: Supervision,
                 options: TrainOptions, output: PathLike, identity: Dict[str, Any],
                 log: Optional[Log] = None, progress: Optional[ProgressFactory] = None,
                 originals: Optional[Sequence[int]] = None) -> None:
        if len(supervision) != len(store):
            raise ConfigError(f'{len(supervision)} supervised images for {len(store)} maps')
        self.model = model
        self.store = store
        self.originals = list(range(len(store)) if originals is None else originals)
        self.sup = supervision
        self.options = options
        self.output = Path(output)
        self.log = log or (lambda _msg: None)
        self.progress = progress
        self.device = store.device
        self.margin = distance_margin(options.margin)
        self.queries = supervision.queries
        if len(self.queries) == 0:
            raise ConfigError(
                f'no training image has both a positive (within {options.pos_radius} m) and '
                f'a negative (beyond {options.neg_radius} m): give a longer drive, more '
                'drives, or other radii')
        self.identity = {'options': options.fingerprint(), **identity}
        for p in model.parameters():
            p.requires_grad_(False)
        self.params = trainable_parameters(model)
        for p in self.params:
            p.requires_grad_(True)
        if options.optimizer == 'sgd':
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                self.params, lr=options.lr, momentum=options.momentum,
                weight_decay=options.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(self.params, lr=options.lr,
                                              weight_decay=options.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, options.lr_step,
                                                         options.lr_gamma)
        self.rng = np.random.default_rng(options.seed)
        self.epoch = 0
        self.resumed_from = 0
        self.history: List[EpochRecord] = []
        self.initial_loss = float('nan')

    # ------------------------------------------------------------------ state file
    @property
    def state_path(self) -> Path:
        """The resumable state in the output folder."""
        return self.output / STATE_FILE

    def save_state(self) -> None:
        """Write the state after an epoch (atomic: a crash leaves the previous one)."""
        self.output.mkdir(parents=True, exist_ok=True)
        _atomic_save({'format': STATE_FORMAT, 'identity': json.dumps(self.identity),
                      'epoch': self.epoch, 'model': trained_state(self.model),
                      'optimizer': self.optimizer.state_dict(),
                      'scheduler': self.scheduler.state_dict(),
                      'numpy_rng': json.dumps(self.rng.bit_generator.state),
                      'torch_rng': torch.get_rng_state(),
                      'initial_loss': self.initial_loss,
                      'history': json.dumps([asdict(r) for r in self.history])},
                     self.state_path)

    def load_state(self) -> None:
        """Continue from the state file; ConfigError when it belongs to another run."""
        try:
            state = torch.load(self.state_path, map_location='cpu', weights_only=True)
        except Exception as exc:  # noqa: B902 - any unreadable file gets the same message
            raise ConfigError(f'cannot read the training state {self.state_path}: {exc}; '
                              'start again in an empty folder') from exc
        if state.get('format') != STATE_FORMAT:
            raise ConfigError(f'{self.state_path} was written by another version of '
                              'pnv-train: start again in an empty folder')
        theirs = json.loads(state['identity'])
        ours = json.loads(json.dumps(self.identity))
        differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if differ:
            raise ConfigError(
                f'cannot resume {self.output}: its run differs in {", ".join(differ)} (the '
                'drives, image size, starting model and options other than --epochs must be '
                'the same); use another output folder for a new run')
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, value in state['model'].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.rng.bit_generator.state = json.loads(state['numpy_rng'])
        torch.set_rng_state(state['torch_rng'])
        self.epoch = int(state['epoch'])
        self.resumed_from = self.epoch
        self.initial_loss = float(state['initial_loss'])
        self.history = [EpochRecord(**r) for r in json.loads(state['history'])]

    # -------------------------------------------------------------------- training
    def _bar(self, total: Optional[int], desc: str) -> Callable[[int], None]:
        return self.progress(total, desc) if self.progress else (lambda _n: None)

    def _masks(self, queries: np.ndarray, cache: np.ndarray) -> tuple:
        """Positive and negative masks [M, C] of queries against cache images (by pose)."""
        pos = np.zeros((len(queries), len(cache)), dtype=bool)
        neg = np.zeros_like(pos)
        for row, q in enumerate(queries):
            pos[row] = np.isin(cache, self.sup.positives[q], assume_unique=True)
            neg[row] = np.isin(cache, self.sup.negatives[q], assume_unique=True)
        return (torch.from_numpy(pos).to(self.device), torch.from_numpy(neg).to(self.device))

    def _mine(self, queries: np.ndarray, cache: np.ndarray) -> tuple:
        """Describe the cache images, mine each query's triplet among them.

        Returns the triplets (indices into cache) and the cache's descriptors [C, K*D].
        """
        desc = describe(self.model, self.store, cache)
        where = {int(c): i for i, c in enumerate(cache)}
        q_desc = desc[torch.tensor([where[int(q)] for q in queries], device=self.device)]
        pos, neg = self._masks(queries, cache)
        triplets = mine_triplets(q_desc, desc, pos, neg, self.margin,
                                 self.options.num_negatives)
        return triplets, desc

    def _cache_images(self, queries: np.ndarray) -> np.ndarray:
        """Return the queries, their positives and cache_negatives random images (sorted)."""
        n = len(self.store)
        extra = self.rng.choice(n, min(self.options.cache_negatives, n), replace=False)
        positives = [self.sup.positives[q] for q in queries]
        return np.unique(np.concatenate([queries, extra, *positives]).astype(np.int64))

    def _step(self, queries: np.ndarray, cache: np.ndarray, triplets, rows: np.ndarray) -> float:
        """One optimiser step on the given mined rows; returns the loss."""
        pos = triplets.positive[rows].cpu().numpy()
        neg = triplets.negatives[rows].cpu().numpy()                 # [B, M], -1 padded
        valid = neg >= 0
        q_img, p_img = queries[rows], cache[pos]
        n_img = cache[np.where(valid, neg, 0)]                         # padding: any image
        b, m = neg.shape
        maps = self.store.batch(np.concatenate([q_img, p_img, n_img.reshape(-1)]))
        features = conv5(self.model, maps)
        v = global_vlads(self.model, features)
        q, p, n = v[:b], v[b:2 * b], v[2 * b:].view(b, m, -1)
        loss = triplet_loss(q, p, n, torch.from_numpy(valid).to(self.device), self.margin)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def mined_loss(self) -> float:
        """Mean triplet loss of every query, mined among all images with the current model.

        A query's loss is the mean over its hard negatives; a query without any counts as
        0. The measure of progress the epochs report (no step is taken).
        """
        cache = np.arange(len(self.store))
        triplets, desc = self._mine(self.queries, cache)
        valid = (triplets.negatives >= 0) & (triplets.positive >= 0)[:, None]
        q = desc[torch.from_numpy(self.queries).to(self.device)]
        d_pos = torch.linalg.vector_norm(q - desc[triplets.positive.clamp(min=0)], dim=-1)
        d_neg = torch.linalg.vector_norm(q[:, None] - desc[triplets.negatives.clamp(min=0)],
                                         dim=-1)
        hinge = torch.clamp(d_pos[:, None] - d_neg + self.margin, min=0) * valid
        return float((hinge.sum(1) / valid.sum(1).clamp(min=1)).mean())

    def run_epoch(self) -> EpochRecord:
        """Train one epoch (see the module doc); returns its record."""
        opts = self.options
        start = time.perf_counter()
        order = self.rng.permutation(self.queries)
        per_refresh = opts.refresh_every * opts.batch_size
        losses: List[float] = []
        triplets_used = skipped = 0
        bar = self._bar(len(order), f'epoch {self.epoch + 1}/{opts.epochs}')
        for s in range(0, len(order), per_refresh):
            segment = order[s:s + per_refresh]
            cache = self._cache_images(segment)
            mined, _ = self._mine(segment, cache)
            active = mined.active.cpu().numpy()
            for b in range(0, len(segment), opts.batch_size):
                rows = np.arange(b, min(b + opts.batch_size, len(segment)))
                rows_active = rows[active[rows]]
                skipped += len(rows) - len(rows_active)
                if len(rows_active):
                    losses.append(self._step(segment, cache, mined, rows_active))
                    triplets_used += len(rows_active)
                bar(len(rows))
        lr = self.optimizer.param_groups[0]['lr']
        self.scheduler.step()
        self.epoch += 1
        mined = self.mined_loss()
        record = EpochRecord(self.epoch, float(np.mean(losses)) if losses else 0.0, mined,
                             triplets_used, skipped, len(losses),
                             time.perf_counter() - start, lr)
        self.history.append(record)
        return record

    def train(self, resume: bool = False) -> None:
        """Run the remaining epochs, saving the state after each."""
        if resume:
            self.load_state()
            self.log(f'resumed {self.output} after epoch {self.epoch}')
        else:
            self.initial_loss = self.mined_loss()
            self.log(f'{len(self.queries)} queries of {len(self.store)} images; mined loss '
                     f'before training {self.initial_loss:.4f}')
        while self.epoch < self.options.epochs:
            r = self.run_epoch()
            self.save_state()
            self.log(f'epoch {r.epoch}/{self.options.epochs}: step loss {r.step_loss:.4f}, '
                     f'mined loss {r.mined_loss:.4f}, {r.triplets} triplets ({r.skipped} '
                     f'queries without a violating negative), lr {r.lr:.3g}, '
                     f'{r.seconds:.1f} s on {self.device}')


def identity_of(keys: Sequence[str], model: PatchNetVLAD,
                extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Return what a resumed run must share: the images' cache keys, the starting model."""
    return {'images': hashlib.sha256('\n'.join(keys).encode()).hexdigest(),
            'config': model.config.identity(), 'trunk': trunk_digest(model),
            'start': model_digest(model), **(extra or {})}


def write_outputs(trainer: Trainer, output: PathLike, extra: Dict[str, Any]) -> TrainingResult:
    """Refit the WPCA, write the checkpoint and the JSON report; return the result."""
    output = Path(output)
    model = trainer.model
    samples = refit_wpca(model, trainer.store, trainer.originals, trainer.options.seed,
                         trainer.options.pca_samples)
    for p in model.parameters():
        p.requires_grad_(False)
    summary = {'epochs': trainer.epoch, 'initial_loss': trainer.initial_loss,
               'history': [asdict(r) for r in trainer.history], 'pca_samples': samples,
               'options': asdict(trainer.options), **extra}
    path = output / MODEL_FILE
    digest = save_checkpoint(model, path, {'epoch': trainer.epoch,
                                           'training': json.dumps(summary)})
    summary['model_digest'] = digest
    (output / REPORT_FILE).write_text(json.dumps(summary, indent=2) + '\n')
    return TrainingResult(path, digest, trainer.initial_loss, list(trainer.history), samples,
                          trainer.resumed_from)


# ------------------------------------------------------------------------ from drives
def starting_model(config: PatchNetVLADConfig,
                   checkpoint: Optional[PathLike] = None) -> Tuple[PatchNetVLAD, str]:
    """Return the model training starts from, and what it is.

    checkpoint: an authors'-layout model (its encoder and NetVLAD are fine-tuned); None:
    ImageNet VGG16 (NetVLAD then comes from k-means, :func:`init_clusters`).
    """
    if checkpoint:
        model = load_model(checkpoint, config)
        return model, f'checkpoint {model_digest(model)}'
    model = PatchNetVLAD(config).eval()
    model.encoder.load_state_dict(imagenet_encoder_state())
    return model, 'imagenet+kmeans'


def default_feature_cache() -> Path:
    """Where pool4 maps are cached by default: <model cache>/training_features."""
    return cache_dir() / 'training_features'


def _keyed(images: Iterable[np.ndarray], keys: List[str]) -> Iterator[np.ndarray]:
    """Yield the images, appending each one's :func:`.features.pixel_key` to keys."""
    for image in images:
        keys.append(pixel_key(image))
        yield image


def train_from_drives(drives: Sequence[Drive], output: PathLike, config: PatchNetVLADConfig,
                      options: TrainOptions, checkpoint: Optional[PathLike] = None,
                      device: Union[str, torch.device] = 'cpu',
                      feature_cache: Optional[PathLike] = None, resume: bool = False,
                      winograd: Optional[bool] = None, log: Optional[Log] = None,
                      progress: Optional[ProgressFactory] = None) -> TrainingResult:
    """Train on the keyframes of one or more drives; write ``output``/model.pth.tar.

    The drives' poses must share one map frame. Their images are read once more, to name
    (and, the first time, compute) their cached pool4 maps. The checkpoint's ``training``
    record lists the keyframes' pixel keys (``image_keys``, space-separated), so that a map
    built of them can warn that its self-fit is not to be trusted.
    """
    log = log or (lambda _msg: None)
    device = torch.device(device)
    output = Path(output)
    frames = sum(len(d.frames) for d in drives)
    if frames < 2:
        raise ConfigError(f'training needs at least two posed keyframes; the drives have '
                          f'{frames}')
    model, start = starting_model(config, checkpoint)
    model.to(device)
    cache = FeatureCache(feature_cache or default_feature_cache(), model,
                         (config.image_height, config.image_width), device, winograd)
    total = frames * (1 + options.augment)
    update = progress(total, 'cache features') if progress else None
    began = time.perf_counter()
    paths: List[Path] = []
    drive_ids: List[int] = []
    pixel_keys: List[str] = []
    for copy in range(options.augment + 1):
        first = 0               # a view's parameters depend on (seed, copy, image index)
        for d, drive in enumerate(drives):
            images = drive.frame_images()
            if copy:
                images = augmented(images, options.seed, copy, first)
            else:
                images = _keyed(images, pixel_keys)
            paths.extend(cache.ensure(images, progress=update))
            drive_ids.extend([copy * len(drives) + d] * len(drive.frames))
            first += len(drive.frames)
    log(f'pool4 maps of {frames} keyframes and {frames * options.augment} augmented views: '
        f'{cache.computed} computed, {total - cache.computed} from the cache '
        f'({cache.folder}), {time.perf_counter() - began:.1f} s')
    positions = concat_positions([positions_of(d.frames) for d in drives] *
                                 (1 + options.augment))
    sup = supervision_from_positions(positions, options.pos_radius, options.neg_radius,
                                     drive_ids)
    store = FeatureStore(paths, device)
    originals = list(range(frames))
    identity = identity_of([p.stem for p in paths], model, {'start': start})
    if not resume:
        alpha = init_clusters(model, store, originals, options.seed) if not checkpoint else None
        if alpha is not None:
            log(f'NetVLAD from k-means: {config.num_clusters} clusters, alpha {alpha:.1f}')
    trainer = Trainer(model, store, sup, options, output, identity, log, progress, originals)
    trainer.train(resume)
    return write_outputs(trainer, output, {
        'device': str(device), 'images': frames, 'queries': int(len(sup.queries)),
        'drives': [{'name': d.name, **d.summary()} for d in drives], 'start': start,
        'preset': config.preset, 'image_size': [config.image_width, config.image_height],
        'image_keys': ' '.join(pixel_keys)})
