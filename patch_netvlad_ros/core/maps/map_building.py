# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Build (or extend) a map database from a recorded drive, and fit it on itself.

The model comes from a checkpoint, from the map being extended, or is bootstrapped from
the drive's own keyframes (k-means clusters and whitened PCA on ImageNet VGG16
features) when none is given. Either way the map folder keeps the model it was built
with as ``model.pth.tar``, so the localizer and the evaluation can run the same model.

After describing, the map's fusion of global and patch scores and its confidence
calibration are fitted on the map's own references (:func:`.map_fit.fit_map`, no query
labels) and stored in its meta (``meta['localization']``), inside the same atomic
commit: the localizer, the node and pnv-evaluate use them by default. A map without a
fit (built with ``fit=False``, too small to fit, or by an older version) keeps the
authors' order and the heuristic confidence; :func:`refit_map` fits it in place.

A model trained (pnv-train) on the images the map is built from finds every one of them
(self-query R@1 1.0), so a self-fit puts all weight on global similarity and gives every
frame confidence 1.0 (docs/training.md). The checkpoint's training record names its
images (pixel keys); the fraction of the map's keyframes among them is stored as
``meta['localization']['fitted_on_training_images']``, and the fit summary warns. Such a
self-fit also stores the novelty gate unless told not to (:func:`gate_for`): without it
places not in the map get confidence 1.0 too, and a pose (docs/accuracy.md, "the trained
model").
"""

import dataclasses
import itertools
import json
from pathlib import Path
import shutil
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .database import check_map_file, MapWriter, Reference, ReferenceMap
from .drive_fit import DRIVE_NOVELTY_GATE, fit_drive
from .extraction import describe_batches
from .map_fit import fit_map, MAX_QUERIES, MAX_SECOND_VISITS, NOVELTY_GATE, sample_queries
from .map_manifest import descriptor_files, MODEL_FILE
from .retrieval import index_kind_of
from ..config import PatchNetVLADConfig
from ..drives.drives import Drive, Origin
from ..errors import MapError
from ..localization.localizer import DEFAULT_PLACE_RADIUS, fitted_parameters, META_KEY
from ..model.bootstrap import bootstrap_model
from ..model.checkpoint import load_model, model_digest, save_checkpoint
from ..model.model import PatchNetVLAD
from ..training.features import pixel_key

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


#: How to fit a map that has no fit (log lines point here).
FIT_HINT = 'fit it with `pnv-map fit MAP` (or rebuild it with pnv-build-map)'


#: meta[META_KEY] entry: the fraction of the map's keyframes its model was trained on
#: (and, in a drive fit's 'drive' summary, of the first frames of that drive).
TRAINED_ON_KEY = 'fitted_on_training_images'
#: Frames of a fit drive checked against the model's training images (pixel keys).
TRAINING_CHECK_FRAMES = 50


def training_record(checkpoint: PathLike) -> Optional[Dict[str, Any]]:
    """Return the ``training`` record pnv-train writes into a checkpoint, else None."""
    try:
        blob = torch.load(checkpoint, map_location='cpu', weights_only=True, mmap=True)
        record = json.loads(blob['training'])
    except Exception:  # noqa: B902 - any other checkpoint simply has no record
        return None
    return record if isinstance(record, dict) else None


def training_overlap(record: Mapping[str, Any], config: PatchNetVLADConfig,
                     drives: Sequence[Mapping[str, Any]],
                     images: Optional[Mapping[int, np.ndarray]] = None) -> float:
    """Fraction of a map's keyframes that a model with this training record was trained on.

    images: a sample of the keyframes (read at the map's image size); when the record lists
    pixel keys of images of that size, the fraction of the sample among them. Otherwise
    (older checkpoints, another size) the keyframes of ``drives`` (meta records: name and
    counts) recorded identically among the training drives.
    """
    keys = set(str(record.get('image_keys', '')).split())
    same_size = list(record.get('image_size', [])) == [config.image_width,
                                                       config.image_height]
    if keys and same_size and images:
        return float(np.mean([pixel_key(im) in keys for im in images.values()]))
    trained = list(record.get('drives', []))
    total = sum(int(d.get('kept', 0)) for d in drives)
    same = sum(int(d.get('kept', 0)) for d in drives if d in trained)
    return same / total if total else 0.0


def training_warning(meta: Mapping[str, Any]) -> Optional[str]:
    """Return the warning for a map fitted on its model's training images, else None."""
    fitted = meta.get(META_KEY)
    share = fitted.get(TRAINED_ON_KEY, 0.0) if isinstance(fitted, dict) else 0.0
    drive = fitted.get('drive') if isinstance(fitted, dict) else None
    if isinstance(drive, dict) and drive.get(TRAINED_ON_KEY):
        return (f"the map's model was trained on {100 * drive[TRAINED_ON_KEY]:.0f}% of the "
                f"frames of the drive the map was fitted on ({drive.get('name', '?')}): the "
                'fit learned from images the model knows, so the calibrated confidence is '
                'too high on new frames; fit on a drive not used in training (pnv-map fit '
                'MAP --bag ...)')
    if not share:
        return None
    text = (f"the map's model was trained on {100 * share:.0f}% of the map's keyframes: it "
            'finds its own training images, so the fusion weights and calibrated confidence '
            'fitted on this map are not trustworthy')
    if fitted.get('novelty_gate'):
        # Measured (docs/accuracy.md, trained model): the gate keeps places not in the
        # environment low, but the confidence orders right and wrong answers poorly
        # (ROC AUC 0.76-0.80).
        return (text + ' (the novelty gate keeps places outside the environment low, but '
                'the confidence tells right from wrong answers poorly); for a better one fit '
                'on another drive (pnv-map fit MAP --bag ...)')
    return (text + ' (confidence near 1.0 for any frame, places not in the map too); refit '
            'with the novelty gate (pnv-map fit MAP --novelty-gate, or --novelty-gate at the '
            'build), or on another drive (pnv-map fit MAP --bag ...), or use a model trained '
            'on other drives')


def gate_for(novelty_gate: Optional[bool], trained_on: float) -> bool:
    """Return whether a self-fit stores the novelty gate.

    As asked, else (None) when it fits on its model's training images (module doc), else
    :data:`.map_fit.NOVELTY_GATE`.
    """
    if novelty_gate is not None:
        return novelty_gate
    return NOVELTY_GATE or trained_on > 0


def fit_summary(meta: Dict[str, Any]) -> str:
    """One line on what a map's meta holds: its fitted fusion and confidence, or none."""
    fitted = meta.get(META_KEY)
    if not isinstance(fitted, dict) or 'fusion' not in fitted:
        return ("not fitted: the authors' order (patch scores alone) and the heuristic "
                f'confidence; {FIT_HINT}')
    fusion, cal = fitted['fusion'], fitted.get('calibration') or {}
    r1 = fusion.get('fitted_on', {})
    text = (f"fitted for place radius {fitted['place_radius']:g} m: fusion "
            f"{fusion['method']} (w_global {fusion['global_weight']:.3g}, w_patches "
            f"{fusion['patch_weight']:.3g}, temperature {fusion['temperature']:.3g})")
    drive = fitted.get('drive')
    if isinstance(drive, dict):
        text += (f"; drive {drive.get('name')} R@1 global "
                 f"{drive.get('recall_at_1_global', float('nan')):.3f}, patches "
                 f"{drive.get('recall_at_1_patches', float('nan')):.3f}, fused "
                 f"{drive.get('recall_at_1_fused', float('nan')):.3f}")
    elif 'recall_at_1' in r1:
        text += (f"; self-query R@1 global {r1['recall_at_1_global']:.3f}, patches "
                 f"{r1['recall_at_1_patches']:.3f}, fused {r1['recall_at_1']:.3f}")
    if cal:
        source = cal.get('fitted_on', {}).get('description', 'self-queries')
        if 'second visits' not in source and not isinstance(drive, dict):
            source += ' only (no images: no simulated second visits)'
        text += (f"; calibrated confidence ({', '.join(cal['features'])}) on {source}, "
                 f"threshold {cal['threshold']:g}")
        gate = fitted.get('novelty_gate')
        if isinstance(gate, dict):
            source = (gate.get('fitted_on') or {}).get('drive')
            text += (f"; novelty gate from {f'drive {source}' if source else 'the map'} (0.5 "
                     f"at global similarity {gate.get('centre', float('nan')):.3f})")
    warning = training_warning(meta)
    return f'{text}; WARNING: {warning}' if warning else text


def _written_map(writer: MapWriter, references: Sequence[Reference],
                 meta: Dict[str, Any]) -> ReferenceMap:
    """Return the rows a writer holds as a map (read-only views of its files, uncommitted).

    The writer's arrays are shared memory maps: what it wrote is what these read.
    """
    arrays = [np.load(writer.folder / name, mmap_mode='r')
              for name in descriptor_files(writer.config)]
    return ReferenceMap(writer.config, writer.model_digest, list(references), arrays[0],
                        arrays[1:], meta)


def _fit_in_writer(writer: MapWriter, references: Sequence[Reference], meta: Dict[str, Any],
                   place_radius: float, fit_queries: int, log: Callable[[str], None],
                   progress: Optional[Callable[[int], None]],
                   images: Optional[Mapping[int, np.ndarray]] = None,
                   model: Optional[PatchNetVLAD] = None,
                   trained_on: float = 0.0,
                   novelty_gate: Optional[bool] = None) -> Tuple[Dict[str, Any], Any]:
    """Fit the written rows on themselves; return the meta to commit and the index built.

    images, model: map index -> image of references to simulate second visits of, and
    the map's model (:func:`.map_fit.fit_map`); None: self-queries alone.
    trained_on: the fraction of the references the model was trained on (module doc).
    novelty_gate: also fit and store the map's novelty gate (:func:`.map_fit.fit_map`);
    None: :func:`gate_for` decides. A map that cannot be fitted (too few references, none
    near another) is committed without a fit, with a warning: it works as an unfitted map
    does.
    """
    meta = {k: v for k, v in meta.items() if k != META_KEY}
    view = _written_map(writer, references, meta)
    gate = gate_for(novelty_gate, trained_on)
    if gate and novelty_gate is None and not NOVELTY_GATE:
        log(f"the map's model was trained on {100 * trained_on:.0f}% of these keyframes: "
            'fitting the novelty gate too, so that places not in the map stay below the '
            'threshold (--no-novelty-gate: without)')
    log(f'fitting the fusion and confidence on the map itself (self-queries of up to '
        f'{min(fit_queries, len(references))} references, place radius {place_radius:g} m'
        + (f', and simulated second visits of {len(images)}' if images else
           ', no images: no simulated second visits') + ')')
    try:
        fitted = fit_map(view, place_radius, max_queries=fit_queries, progress=progress,
                         images=images or None, model=model if images else None,
                         novelty_gate=gate)
    except MapError as exc:
        log(f"warning: the map was not fitted ({exc}); it keeps the authors' order and the "
            'heuristic confidence')
        return meta, view.index
    if trained_on:
        view.meta[META_KEY][TRAINED_ON_KEY] = float(trained_on)
    log(f'map {fit_summary(view.meta)} ({fitted["queries"]} self-queries per level)')
    warning = training_warning(view.meta)
    if warning:
        log(f'warning: {warning}')
    return view.meta, view.index


def build_map(drive: Drive, output: PathLike, config: Optional[PatchNetVLADConfig] = None,
              checkpoint: Optional[PathLike] = None, base: Optional[ReferenceMap] = None,
              map_frame: str = 'map', batch_size: int = 4, seed: int = 0, log: Log = None,
              progress: Optional[Callable[[int], None]] = None, fit: bool = True,
              place_radius: float = DEFAULT_PLACE_RADIUS, fit_queries: int = MAX_QUERIES,
              fit_progress: Optional[Callable[[int], None]] = None,
              novelty_gate: Optional[bool] = None) -> Tuple[ReferenceMap, PatchNetVLAD]:
    """Describe the drive's keyframes into a new map at ``output`` (or append to ``base``).

    config: the preset for a new map (ignored when extending: the base map's is used).
    Written atomically; an interrupted build leaves any previous map at ``output`` intact.
    log: progress, and what is found beside ``output`` before writing (a map an
    interrupted commit left, put back; folders of dead builds, removed; see
    :class:`.database.MapWriter`).
    fit: fit the fusion and confidence on the map itself (module doc) for ``place_radius``
    metres, on at most ``fit_queries`` self-queries (``fit_progress`` counts them); an
    extended map is fitted again (its old fit was for fewer references), or loses its fit
    with ``fit=False``. novelty_gate: the fit also stores the map's novelty gate
    (:func:`.map_fit.fit_map`); None: only when the model was trained on the map's
    keyframes (:func:`gate_for`; off otherwise, docs/accuracy.md says why).
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
    # what the model was trained on travels with the map's copy of it
    record = training_record(checkpoint or map_model_path(output)) if (
        checkpoint or base is not None) else None
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
        save_checkpoint(model, writer.folder / MODEL_FILE,   # renamed in with the map
                        {'training': json.dumps(record)} if record else None)
        index = None
        if fit:
            # the second visits' images: a sample of this drive's keyframes (read again
            # where the drive does not hold them), by map index
            picked = sample_queries(len(refs), MAX_SECOND_VISITS, seed)
            sample = dataclasses.replace(drive, frames=[drive.frames[k] for k in picked])
            images = dict(zip((len(old_refs) + picked).tolist(), sample.frame_images()))
            trained_on = 0.0
            if record:       # the new drive's share, and the base map's as it was fitted
                old_share = ((fitted_parameters(base) or {}).get(TRAINED_ON_KEY, 0.0)
                             if base is not None else 0.0)
                new_share = training_overlap(record, model.config, meta['drives'][-1:],
                                             images)
                trained_on = (old_share * len(old_refs) + new_share * len(refs)) / (
                    len(old_refs) + len(refs))
            meta, index = _fit_in_writer(writer, old_refs + refs, meta, place_radius,
                                         fit_queries, log, fit_progress, images, model,
                                         trained_on, novelty_gate)
        elif META_KEY in meta:
            del meta[META_KEY]
            log(f'warning: the old fit of {output} was dropped (it was for the map before '
                f'this drive); {FIT_HINT}')
        path = writer.commit(old_refs + refs, meta, index=index)
    # every row was checked as it was written (MapWriter.append): no second read
    ref_map = ReferenceMap.load(path, verify=False, check_values=False, log=found_log)
    log(f'map {path}: {len(ref_map)} references')
    return ref_map, model


def refit_map(map_dir: PathLike, place_radius: Optional[float] = None,
              fit_queries: int = MAX_QUERIES, log: Log = None,
              progress: Optional[Callable[[int], None]] = None,
              drive: Optional[Drive] = None,
              novelty_gate: Optional[bool] = None) -> ReferenceMap:
    """Fit (or fit again) a map folder on itself and commit it atomically in place.

    drive: a labelled second drive (read at the map's image size, poses in its frame) to
    fit on instead (:func:`.drive_fit.fit_drive`, with the map's model; fit_queries is
    then unused); fitted before anything is written, so a drive that cannot be fitted
    on leaves the map as it was. novelty_gate: the fit also stores the map's novelty
    gate (:func:`.map_fit.fit_map`, :func:`.drive_fit.fit_drive`); None: a fit on the
    map itself as :func:`gate_for` decides, a drive fit with one
    (:data:`.drive_fit.DRIVE_NOVELTY_GATE`, :data:`.drive_fit.DRIVE_GATE_FROM`).

    place_radius: metres (default: the radius of the map's current fit, else
    :data:`~.localizer.DEFAULT_PLACE_RADIUS`). The descriptors, references, index and
    model are copied into the new folder unchanged; only the meta changes. Returns the
    map as loaded from its new folder.
    """
    log = log or (lambda msg: None)
    ref_map = ReferenceMap.load(map_dir)
    if place_radius is None:
        fitted = fitted_parameters(ref_map) or {}
        place_radius = fitted.get('place_radius', DEFAULT_PLACE_RADIUS)
    model_file = map_model_path(map_dir)
    record = training_record(model_file) if model_file.is_file() else None
    if drive is not None:
        fit_drive(ref_map, drive, resolve_map_model(map_dir, ref_map.config),
                  float(place_radius), progress=progress,
                  novelty_gate=DRIVE_NOVELTY_GATE if novelty_gate is None else novelty_gate)
        if record:  # a drive the model was trained on labels itself too well
            share = training_overlap(record, ref_map.config, [], dict(
                enumerate(itertools.islice(drive.frame_images(), TRAINING_CHECK_FRAMES))))
            if share:
                ref_map.meta[META_KEY]['drive'][TRAINED_ON_KEY] = share
    with MapWriter(map_dir, ref_map.config, ref_map.model_digest, len(ref_map),
                   log=lambda msg: log(f'warning: {msg}')) as writer:
        writer.append_map(ref_map)
        if model_file.is_file():
            shutil.copyfile(model_file, writer.folder / MODEL_FILE)
        # the same model and references: what it was trained on is as it was measured
        # (a map fitted before that was measured: from its model's training record)
        trained_on = (fitted_parameters(ref_map) or {}).get(TRAINED_ON_KEY)
        if trained_on is None:
            trained_on = training_overlap(record, ref_map.config, ref_map.meta.get(
                'drives', [])) if record else 0.0
        if drive is not None:
            meta = dict(ref_map.meta)
            log(f'map {fit_summary(meta)}')
        else:
            meta, _ = _fit_in_writer(writer, ref_map.references, dict(ref_map.meta),
                                     float(place_radius), fit_queries, log, progress,
                                     trained_on=trained_on, novelty_gate=novelty_gate)
        # the index as it was (a format-1 map keeps its flat one)
        writer.commit(ref_map.references, meta, index_kind_of(ref_map.index), ref_map.index)
    return ReferenceMap.load(map_dir, verify=False, check_values=False)
