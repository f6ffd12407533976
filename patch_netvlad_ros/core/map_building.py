# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Build (or extend) a map database from a recorded drive.

The model comes from a checkpoint, from the map being extended, or is bootstrapped from
the drive's own keyframes (k-means clusters and whitened PCA on ImageNet VGG16
features) when none is given. Either way the map folder keeps the model it was built
with as ``model.pth.tar``, so the localizer and the evaluation can run the same model.
"""

from pathlib import Path
from typing import Callable, Optional, Tuple, Union

from .bootstrap import bootstrap_model
from .checkpoint import load_model, model_digest, save_checkpoint
from .config import PatchNetVLADConfig
from .database import check_map_file, MapWriter, Reference, ReferenceMap
from .drives import Drive, Origin
from .errors import MapError
from .extraction import describe_batches
from .map_manifest import MODEL_FILE
from .model import PatchNetVLAD

PathLike = Union[str, Path]
Log = Optional[Callable[[str], None]]


def map_model_path(map_dir: PathLike) -> Path:
    """Path of the model a map folder keeps (may not exist for maps built elsewhere)."""
    return Path(map_dir) / MODEL_FILE


def map_origin(ref_map: ReferenceMap) -> Optional[Origin]:
    """ENU origin (lat, lon, alt) of a map built from NavSatFix poses, else None."""
    origin = ref_map.meta.get('enu_origin')
    return tuple(origin) if origin else None


def resolve_map_model(map_dir: PathLike, config: PatchNetVLADConfig,
                      checkpoint: Optional[PathLike] = None) -> PatchNetVLAD:
    """Load ``checkpoint`` or the map's own model; the caller checks the identity.

    The map's own model is first checked against the manifest's size and SHA-256 (format
    3 maps list it), so a damaged file is named as such rather than read as another model.
    """
    path = Path(checkpoint) if checkpoint else map_model_path(map_dir)
    if not path.is_file():
        raise MapError(f'{map_dir} keeps no model ({MODEL_FILE}) and no checkpoint was '
                       'given: pass the checkpoint the map was built with')
    if not checkpoint:
        check_map_file(map_dir, MODEL_FILE)
    return load_model(path, config)


def build_map(drive: Drive, output: PathLike, config: Optional[PatchNetVLADConfig] = None,
              checkpoint: Optional[PathLike] = None, base: Optional[ReferenceMap] = None,
              map_frame: str = 'map', batch_size: int = 4, seed: int = 0, log: Log = None,
              progress: Optional[Callable[[int], None]] = None
              ) -> Tuple[ReferenceMap, PatchNetVLAD]:
    """Describe the drive's keyframes into a new map at ``output`` (or append to ``base``).

    config: the preset for a new map (ignored when extending: the base map's is used).
    Written atomically; an interrupted build leaves any previous map at ``output`` intact.
    log: progress, and what is found beside ``output`` before writing (a map an
    interrupted commit left, put back; folders of dead builds, removed; see
    :class:`.database.MapWriter`).
    """
    # what is found beside the map goes to the caller's log, else to the module's logger
    found_log = (lambda msg: log(f'warning: {msg}')) if log else None
    log = log or (lambda msg: None)
    if not drive.frames:
        raise MapError(f'drive {drive.name} has no posed keyframes ({drive.summary()}): '
                       'check the topics, the pose source and the keyframe thresholds')
    if base is not None:
        model = resolve_map_model(output, base.config, checkpoint)
        if drive.origin is not None and map_origin(base) not in (None, drive.origin):
            raise MapError(f'drive {drive.name} was read around ENU origin {drive.origin}, '
                           f'the map uses {map_origin(base)}: read it with the map origin')
        log(f'extending {output} ({len(base)} references)')
    elif config is None:
        raise MapError('give the preset (config) of a new map: a checkpoint does not say '
                       'which patch sizes and image size to use')
    elif checkpoint:
        model = load_model(checkpoint, config)
        log(f'model: {checkpoint}')
    else:
        log(f'no checkpoint: bootstrapping {config.preset} clusters and PCA from '
            f'{len(drive.frames)} keyframes of {drive.name}')
        # bootstrapping encodes every keyframe at once (k-means and PCA samples)
        model = bootstrap_model(config, list(drive.frame_images()), seed=seed, log=log)
    refs = [Reference(id=f'{drive.name}#{f.index:06d}', source=f.source, stamp=f.stamp,
                      frame_id=map_frame, x=f.pose.x, y=f.pose.y, z=f.pose.z, qx=f.pose.qx,
                      qy=f.pose.qy, qz=f.pose.qz, qw=f.pose.qw) for f in drive.frames]
    digest = model_digest(model)
    meta = {}
    if base is not None:
        base.check_extension(digest, model.config, refs)
        meta = dict(base.meta)
    if drive.origin is not None:
        meta['enu_origin'] = list(drive.origin)
    meta['drives'] = [*meta.get('drives', []), {'name': drive.name, **drive.summary()}]
    old_refs = base.references if base is not None else []
    # images and descriptors stream batch by batch: a performance-preset keyframe alone is
    # 23 MB of patches, so a long drive would not fit in memory (a drive read without
    # holding its images reads them again from its source here)
    with MapWriter(output, model.config, digest, len(old_refs) + len(refs),
                   log=found_log) as writer:
        if base is not None:
            writer.append_map(base)
        for desc in describe_batches(model, drive.frame_images(), batch_size,
                                     progress=progress):
            writer.append(desc.global_desc.cpu().numpy(),
                          [p.cpu().numpy() for p in desc.patches])
        save_checkpoint(model, writer.folder / MODEL_FILE)   # renamed in with the map
        path = writer.commit(old_refs + refs, meta)
    # every row was checked as it was written (MapWriter.append): no second read
    ref_map = ReferenceMap.load(path, verify=False, check_values=False, log=found_log)
    log(f'map {path}: {len(ref_map)} references')
    return ref_map, model
