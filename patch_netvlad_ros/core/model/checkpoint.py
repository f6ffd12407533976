# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Loading and saving checkpoints in the authors' layout, without running pickles.

The official files (``mapillary_WPCA{128,512,4096}.pth.tar``, ``pittsburgh_WPCA*``)
hold ``{'state_dict': {...}, ...}`` with keys ``encoder.<i>.weight|bias``,
``pool.centroids`` [K, D], ``pool.conv.weight`` [K, D, 1, 1] (+ ``pool.conv.bias``
for vladv2), ``WPCA.0.weight`` [Dp, K*D, 1, 1] and ``WPCA.0.bias`` [Dp]. They are
read with torch's tensor-only unpickler: tensors and plain containers only; nothing
else in a file is ever unpickled (see :func:`read_state_dict`).
"""

import hashlib
import os
from pathlib import Path
import re
from typing import Any, Dict, Mapping, Optional, Union
import warnings

import torch

from .model import PatchNetVLAD
from ..config import PatchNetVLADConfig
from ..errors import CheckpointError

PathLike = Union[str, Path]


#: What to do with a checkpoint that holds more than tensors (no hint to unpickle it here).
CONVERT_HINT = (
    'If the file comes from a source you trust, convert it once, in a trusted environment '
    'with the code that wrote it: load the model there and save only its tensors, e.g. '
    "torch.save({'state_dict': model.state_dict()}, 'clean.pth.tar'); then give the "
    'clean file')


def _refusal(path: Path, exc: BaseException) -> CheckpointError:
    """Return the error for a file that the tensor-only unpickler refused or could not read.

    torch's own message is not passed on: it suggests unpickling the file anyway.
    """
    text = str(exc)
    found = re.search(r'GLOBAL (\S+) was not an allowed global', text)
    if found:
        return CheckpointError(
            f'checkpoint {path} holds pickled Python objects besides tensors (it refers to '
            f'{found.group(1)}); they are not loaded, since unpickling them can run any '
            f'code. {CONVERT_HINT}')
    found = re.search(r'Unsupported operand (\d+)', text)
    if found or 'Weights only load failed' in text:
        what = f' (pickle opcode {found.group(1)})' if found else ''
        return CheckpointError(
            f'checkpoint {path} is a pickle that the tensor-only loader does not '
            f'read{what}: not the format torch.save writes, or it holds more than tensors; '
            f'nothing in it was run. {CONVERT_HINT}')
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if 'weights_only' in first:
        first = type(exc).__name__
    return CheckpointError(
        f'cannot read checkpoint {path}: {first}. The file may be truncated or not a '
        'PyTorch checkpoint; only tensors and plain containers are accepted')


def read_state_dict(path: PathLike, mmap: bool = False) -> Dict[str, torch.Tensor]:
    """Load the ``state_dict`` of a checkpoint file safely onto the CPU.

    Only tensors and plain containers are read (torch's tensor-only unpickler); a file
    that holds other pickled objects is refused without running anything, with a message
    that says how to convert a trusted file (:data:`CONVERT_HINT`). mmap: map the tensors
    instead of reading them (zip checkpoints, torch >= 1.6; older ones are read whole).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Give the path of an authors' checkpoint "
            '(e.g. mapillary_WPCA4096.pth.tar) or bootstrap one from your reference '
            'images with `pnv-bootstrap`')
    try:
        with warnings.catch_warnings():
            # a plain pickle makes torch warn about its protocol before refusing it
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            try:
                blob = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
            except RuntimeError as exc:
                if not (mmap and 'mmap can only be used' in str(exc)):
                    raise
                blob = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many kinds here (UnpicklingError, KeyError...)
        raise _refusal(path, exc) from None
    state = blob.get('state_dict', blob) if isinstance(blob, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f'{path} holds no state_dict of tensors')
    # Checkpoints saved from nn.DataParallel carry 'module.' inside their names.
    return {k.replace('module.', ''): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def config_from_state(state: Mapping[str, torch.Tensor],
                      config: PatchNetVLADConfig) -> PatchNetVLADConfig:
    """Check that a state dict fits the configuration; return the config (vladv2 adopted).

    Raises :class:`CheckpointError` naming the mismatch (PCA dims, clusters, dims).
    """
    for key in ('pool.centroids', 'pool.conv.weight', 'WPCA.0.weight', 'WPCA.0.bias'):
        if key not in state:
            raise CheckpointError(
                f"checkpoint lacks '{key}': it is not a Patch-NetVLAD checkpoint with a WPCA "
                "layer (the authors' *_WPCA<dims>.pth.tar files have one)")
    k, d = state['pool.centroids'].shape
    if k != config.num_clusters or d != config.encoder_dim:
        raise CheckpointError(
            f'checkpoint has {k} clusters of dimension {d}; the configuration expects '
            f'{config.num_clusters} x {config.encoder_dim} (override num_clusters to match)')
    dp = state['WPCA.0.bias'].shape[0]
    if dp != config.num_pcs:
        raise CheckpointError(
            f"checkpoint has {dp} PCA dimensions but preset '{config.preset}' uses "
            f'{config.num_pcs}: use the WPCA{config.num_pcs} checkpoint, or override '
            f'num_pcs={dp}')
    return config.override(vladv2='pool.conv.bias' in state)


def check_checkpoint(path: PathLike, config: PatchNetVLADConfig) -> PatchNetVLADConfig:
    """Check, cheaply, that a checkpoint is readable and fits config; return the config.

    The file is mapped, not read (:func:`read_state_dict` with mmap), so a CLI can refuse
    a bad checkpoint in milliseconds before it reads a drive. Raises CheckpointError.
    """
    return config_from_state(read_state_dict(path, mmap=True), config)


def load_model(path: PathLike, config: PatchNetVLADConfig,
               device: Optional[Union[str, torch.device]] = None) -> PatchNetVLAD:
    """Build a :class:`PatchNetVLAD` for config and fill it from an authors' checkpoint."""
    state = read_state_dict(path)
    config = config_from_state(state, config)
    model = PatchNetVLAD(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f'{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})'
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f'missing {missing[:6]}{" ..." if len(missing) > 6 else ""}')
        if unexpected:
            parts.append(f'unexpected {unexpected[:6]}{" ..." if len(unexpected) > 6 else ""}')
        if wrong:
            parts.append('wrong shapes ' + '; '.join(wrong[:6]))
        raise CheckpointError(f'checkpoint {path} does not fit a VGG16 Patch-NetVLAD model: '
                              + ', '.join(parts))
    model.load_state_dict({k: state[k].float() for k in expected})
    model.eval()
    if device is not None:
        model.to(device)
    return model


def save_checkpoint(model: PatchNetVLAD, path: PathLike,
                    extra: Optional[Dict[str, Any]] = None) -> str:
    """Write model in the authors' layout, atomically; return the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob: Dict[str, Any] = {'num_pcs': model.config.num_pcs,
                            'state_dict': {k: v.detach().cpu().contiguous()
                                           for k, v in model.state_dict().items()}}
    blob.update(extra or {})
    tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')  # a writer's own: processes race
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return model_digest(model)


def model_digest(model: PatchNetVLAD) -> str:
    """SHA-256 over the model's NetVLAD and WPCA parameters: the model identity of maps."""
    digest = hashlib.sha256()
    for key in ('pool.centroids', 'pool.conv.weight', 'WPCA.0.weight', 'WPCA.0.bias',
                'encoder.28.weight'):
        digest.update(model.state_dict()[key].detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()
