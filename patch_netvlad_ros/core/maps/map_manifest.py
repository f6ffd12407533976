# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The map folder's manifest.json: what it holds, how it is made and checked.

Keys (a hand-written schema; every error names the key and what it must be):
    format           'patch_netvlad_ros.map'
    format_version   integer: 1, 2 or 3 (what this package reads; it writes 3)
    created_unix     number (seconds), optional
    num_references   integer >= 0: rows of references.csv and of every array
    config           object: fields of PatchNetVLADConfig (a known preset; any field
                     missing takes the default)
    identity         object: model_digest (non-empty string) and the config's identity
                     fields, equal to the config's
    patch_dtype      'float16'
    index_kind       null or 'flat' / 'ivf' / 'ivfpq' (formats 2 and 3; null: no
                     global.faiss, an empty map)
    files            object: plain file name -> {sha256: 64 hex digits, bytes: integer >= 0};
                     global.npy, patches_<i>.npy per scale and references.csv always,
                     global.faiss exactly when index_kind is not null
    meta             object, optional (drives, ENU origin)
Format 3 lists every file of the folder in ``files``, the map's model (model.pth.tar)
included; formats 1 and 2 did not list the model (it is then not checked).
"""

import hashlib
import json
import os
from pathlib import Path
import re
from typing import Any, Dict, List, Optional, Tuple

from ..config import PatchNetVLADConfig, PRESETS
from ..errors import ConfigError, MapError

FORMAT = 'patch_netvlad_ros.map'
FORMAT_VERSION = 3
#: Map format versions :meth:`.database.ReferenceMap.load` reads.
READABLE_VERSIONS = (1, 2, 3)
MANIFEST = 'manifest.json'
MODEL_FILE = 'model.pth.tar'
INDEX_FILE = 'global.faiss'
REFERENCES_FILE = 'references.csv'
GLOBAL_FILE = 'global.npy'
PATCH_DTYPE_NAME = 'float16'
SAVED_INDEX_KINDS = ('flat', 'ivf', 'ivfpq')
_HEX64 = re.compile(r'[0-9a-f]{64}')


def patch_file(scale: int) -> str:
    """File name of the patch descriptors of one scale."""
    return f'patches_{scale}.npy'


def descriptor_files(config: PatchNetVLADConfig) -> List[str]:
    """Name the descriptor arrays' files: global, then one per scale."""
    return [GLOBAL_FILE] + [patch_file(i) for i in range(len(config.patch_sizes))]


def file_record(path: Path, sync: bool = True) -> Dict[str, Any]:
    """{'sha256', 'bytes'} of a file, read in 1 MiB blocks; flushed to disk first (sync)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, 'rb') as handle:
        if sync:
            os.fsync(handle.fileno())
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
            size += len(block)
    return {'sha256': digest.hexdigest(), 'bytes': size}


def make_manifest(count: int, config: PatchNetVLADConfig, identity: Dict[str, Any],
                  index_kind: Optional[str], files: Dict[str, Dict[str, Any]],
                  meta: Optional[Dict[str, Any]], created: float) -> Dict[str, Any]:
    """Make a format-:data:`FORMAT_VERSION` manifest (files: every file of the folder)."""
    return {
        'format': FORMAT,
        'format_version': FORMAT_VERSION,
        'created_unix': created,
        'num_references': int(count),
        'config': config.to_dict(),
        'identity': identity,
        'patch_dtype': PATCH_DTYPE_NAME,
        'index_kind': index_kind,
        'files': {name: files[name] for name in sorted(files)},
        'meta': dict(meta or {}),
    }


# ------------------------------------------------------------------------- checking
def read_manifest(folder: Path) -> Tuple[Dict[str, Any], int, PatchNetVLADConfig]:
    """Read and check ``folder/manifest.json``: (the manifest, its version, its config).

    For callers that need only what a map says about itself (its model, preset, size)
    without loading it; raises :class:`MapError` as :func:`check_manifest` does.
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MapError(f'no map at {folder}: {MANIFEST} missing') from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise MapError(f'{path} is not valid JSON: {exc}') from exc
    version, config = check_manifest(manifest, str(folder))
    return manifest, version, config


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'the string {value[:60]!r}'
    text = repr(value)
    return f'{type(value).__name__} {text[:60]}{"..." if len(text) > 60 else ""}'


class _Checker:
    """Raise MapError naming ``where``, the key, what it must be and what it is."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, expected: str, got: Any = None, missing: bool = False,
             fix: str = 'rebuild the map (or restore its manifest.json)') -> None:
        have = 'it is missing' if missing else f'got {_shown(got)}'
        raise MapError(f"{self.where}: {MANIFEST}: '{key}' must be {expected}; {have}: {fix}")

    def get(self, obj: Dict[str, Any], key: str, name: str, expected: str, kind,
            required: bool = True) -> Any:
        """obj[key] checked against ``kind`` (a type, tuple of types, or a predicate)."""
        if key not in obj:
            if required:
                self.fail(name, expected, missing=True)
            return None
        value = obj[key]
        if isinstance(kind, (type, tuple)):
            ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (
                kind if isinstance(kind, tuple) else (kind,)))
        else:
            ok = kind(value)
        if not ok:
            self.fail(name, expected, value)
        return value


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest: Any, where: str) -> Tuple[int, PatchNetVLADConfig]:
    """Check a parsed manifest against the schema above; return (version, config).

    Raises :class:`MapError` naming the first key that is wrong and what it must be.
    """
    c = _Checker(where)
    if not isinstance(manifest, dict):
        c.fail('(top level)', 'a JSON object', manifest)
    if manifest.get('format') != FORMAT:
        raise MapError(f"{where} is not a patch_netvlad_ros map ({MANIFEST}: 'format' is "
                       f"{_shown(manifest.get('format'))}, not {FORMAT!r})")
    versions = ', '.join(map(str, READABLE_VERSIONS))
    version = c.get(manifest, 'format_version', 'format_version',
                    f'an integer (one of {versions})', int)
    if version not in READABLE_VERSIONS:
        raise MapError(f'{where} has map format version {version}; this package reads '
                       f'versions {versions}: rebuild the map')
    c.get(manifest, 'created_unix', 'created_unix', 'a number of seconds', (int, float),
          required=False)
    c.get(manifest, 'num_references', 'num_references', 'an integer >= 0', _count)
    config = _check_config(c, c.get(manifest, 'config', 'config', 'an object', dict))
    identity = c.get(manifest, 'identity', 'identity', 'an object', dict)
    c.get(identity, 'model_digest', 'identity.model_digest', 'a non-empty string',
          lambda v: isinstance(v, str) and v != '')
    for key, value in config.identity().items():
        if identity.get(key, value) != value:
            c.fail(f'identity.{key}', f"the config's {key} {value!r} (the two disagree)",
                   identity[key])
    c.get(manifest, 'patch_dtype', 'patch_dtype', repr(PATCH_DTYPE_NAME),
          lambda v: v == PATCH_DTYPE_NAME)
    kind = None
    if version >= 2:
        kind = c.get(manifest, 'index_kind', 'index_kind',
                     f'null or one of {list(SAVED_INDEX_KINDS)}',
                     lambda v: v is None or v in SAVED_INDEX_KINDS)
    files = c.get(manifest, 'files', 'files', 'an object: file name -> {sha256, bytes}', dict)
    for name, info in files.items():
        if name in ('', '.', '..', MANIFEST) or '/' in name or '\\' in name or '\0' in name:
            c.fail(f'files[{name!r}]', 'named by a plain file name of the folder '
                   f'(not {MANIFEST})', name)
        record = c.get(files, name, f'files.{name}', 'an object {sha256, bytes}', dict)
        c.get(record, 'sha256', f'files.{name}.sha256', '64 lowercase hex digits',
              lambda v: isinstance(v, str) and _HEX64.fullmatch(v) is not None)
        c.get(record, 'bytes', f'files.{name}.bytes', 'an integer >= 0', _count)
    needed = descriptor_files(config) + [REFERENCES_FILE]
    if kind is not None:
        needed.append(INDEX_FILE)
    for name in needed:
        if name not in files:
            c.fail(f'files.{name}', f'listed (every map has {name}'
                   + (f', index_kind {kind!r} needs it)' if name == INDEX_FILE else ')'),
                   missing=True)
    if version >= 2 and kind is None and INDEX_FILE in files:
        c.fail('index_kind', f'the kind of the listed {INDEX_FILE}', None)
    c.get(manifest, 'meta', 'meta', 'an object', dict, required=False)
    return version, config


def _check_config(c: _Checker, raw: Dict[str, Any]) -> PatchNetVLADConfig:
    """Check the manifest's config: known fields, a known preset; return it."""
    from dataclasses import fields
    known = sorted(f.name for f in fields(PatchNetVLADConfig))
    unknown = sorted(set(raw) - set(known))
    if unknown:
        c.fail(f'config.{unknown[0]}', f'a PatchNetVLADConfig field (one of {known})',
               raw[unknown[0]])
    c.get(raw, 'preset', 'config.preset', f'a known preset (one of {sorted(PRESETS)})',
          lambda v: v in PRESETS, required=False)
    for name in ('patch_sizes', 'strides', 'patch_weights'):
        c.get(raw, name, f'config.{name}', 'a list of numbers',
              lambda v: isinstance(v, list) and all(
                  isinstance(x, (int, float)) and not isinstance(x, bool) for x in v),
              required=False)
    try:
        return PatchNetVLADConfig(**raw)
    except (ConfigError, TypeError, ValueError) as exc:
        raise MapError(f'{c.where}: {MANIFEST}: config is not a valid configuration '
                       f'({exc}): rebuild the map (or restore its manifest.json)') from exc
