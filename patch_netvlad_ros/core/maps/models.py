# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Where a model comes from: a map folder, a checkpoint file, or the corridor bootstrap.

A map folder keeps the model it was built with (``model.pth.tar``) and names its preset,
image size and model digest in ``manifest.json``: :func:`map_model_info` reads that
without loading the map, :func:`load_map_model` loads the model and checks its digest.
The bootstrapped corridor model is fitted on the shipped corridor references (ImageNet
VGG16 + k-means + WPCA) and cached as an authors' checkpoint; it is built only when asked
for (minutes on a CPU). The demo, the nodes and the tests all get their model here.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from .map_building import map_model_path, resolve_map_model
from .map_manifest import read_manifest
from ..config import cache_dir
from ..config import PatchNetVLADConfig
from ..drives.datasets import corridor
from ..errors import ConfigError, MapError
from ..model.bootstrap import bootstrap_model, RECIPE_VERSION
from ..model.checkpoint import load_model, model_digest, save_checkpoint
from ..model.image import load_image
from ..model.model import PatchNetVLAD

Log = Optional[Callable[[str], None]]
PathLike = Union[str, Path]


def corridor_checkpoint_path(config: PatchNetVLADConfig, seed: int = 0,
                             cache: Optional[Path] = None) -> Path:
    """Cache path of the bootstrapped corridor model for this preset and image size."""
    return (cache or cache_dir()) / (
        f'corridor_{config.preset}_{config.image_width}x{config.image_height}'
        f'_seed{seed}_v{RECIPE_VERSION}.pth.tar')


def corridor_model(config: PatchNetVLADConfig, images: Optional[Sequence[np.ndarray]] = None,
                   seed: int = 0, cache: Optional[Path] = None, log: Log = None,
                   progress: Optional[Callable[[int], None]] = None
                   ) -> Tuple[PatchNetVLAD, Path]:
    """Return the model bootstrapped from the corridor references (built once, cached)."""
    path = corridor_checkpoint_path(config, seed, cache)
    if path.is_file():
        return load_model(path, config), path
    with _exclusive(path.with_name(path.name + '.lock')):  # processes in parallel: one builds
        if path.is_file():
            return load_model(path, config), path
        if images is None:
            images = [load_image(p) for p in corridor().references]
        model = bootstrap_model(config, images, seed=seed, log=log, progress=progress)
        save_checkpoint(model, path)
    return model, path


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` (made if missing) while the body runs."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: parallel builders each build; the save stays atomic
        yield
        return
    with open(lock, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_model(checkpoint: str, config: PatchNetVLADConfig, seed: int = 0,
                  log: Log = None, bootstrap: bool = False) -> Tuple[PatchNetVLAD, str]:
    """Load ``checkpoint``, or the bootstrapped corridor model when ``bootstrap`` asks.

    Nothing is bootstrapped unless asked: with neither, ConfigError. Returns the model and
    a description of where it came from.
    """
    if checkpoint and bootstrap:
        raise ConfigError(f'a checkpoint ({checkpoint}) and the bootstrapped corridor model '
                          'were both asked for: choose one')
    if checkpoint:
        return load_model(checkpoint, config), str(checkpoint)
    if not bootstrap:
        raise ConfigError('no model: give a checkpoint or a map folder (which keeps its '
                          'model), or ask for the bootstrapped corridor model')
    model, path = corridor_model(config, seed=seed, log=log)
    return model, f'bootstrapped corridor model ({path})'


@dataclass(frozen=True)
class MapModelInfo:
    """What a map folder says about the model it was built with.

    config: the map's configuration (preset, image size, patch scales, ...).
    digest: the model digest descriptors must carry to be matched against the map.
    checkpoint: ``<map>/model.pth.tar`` (may be missing for maps built elsewhere).
    """

    config: PatchNetVLADConfig
    digest: str
    checkpoint: Path


def map_model_info(map_dir: PathLike) -> MapModelInfo:
    """Read the map's manifest only (no descriptors, no index); MapError if it is no map."""
    manifest, _, config = read_manifest(Path(map_dir))
    return MapModelInfo(config, manifest['identity']['model_digest'], map_model_path(map_dir))


def load_map_model(map_dir: PathLike, checkpoint: Optional[PathLike] = None,
                   info: Optional[MapModelInfo] = None) -> Tuple[PatchNetVLAD, str]:
    """Load the model a map was built with: its own model.pth.tar, or ``checkpoint``.

    Either must have the map's digest (MapError otherwise: its descriptors would be
    refused by the map). Returns the model and a description of where it came from.
    """
    info = info or map_model_info(map_dir)
    model = resolve_map_model(map_dir, info.config, checkpoint)
    source = str(checkpoint) if checkpoint else f"the map's model ({info.checkpoint})"
    digest = model_digest(model)
    if digest != info.digest:
        fix = ("leave the checkpoint empty to use the map's own model" if checkpoint else
               'the model file was replaced after the map was built: rebuild the map')
        raise MapError(f'{source} is not the model the map {map_dir} was built with (model '
                       f"digest {digest[:12]} vs the map's {info.digest[:12]}): {fix}")
    return model, source
