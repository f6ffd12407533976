# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The reference map: descriptors and poses of reference images, on disk and in memory.

On disk a map is one folder:
    manifest.json      format version, model/preset identity, counts, file checksums
    references.csv     id, source, stamp, frame_id, x, y, z, qx, qy, qz, qw
    global.npy         [N, Dp] float32 global descriptors (the faiss index is rebuilt
                       from them on load: exact search, no second copy to keep in sync)
    patches_<i>.npy    [N, P_i, Dp] float16 patch descriptors of scale i, memory-mapped
It is written to a temporary sibling folder and renamed into place, so a crash never
leaves a half-written map where a map is expected.
"""

import csv
from dataclasses import astuple, dataclass, field, fields
import json
import os
from pathlib import Path
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .backbone import sha256_file
from .config import PatchNetVLADConfig
from .errors import MapError

FORMAT_VERSION = 1
PATCH_DTYPE = np.float16
PathLike = Union[str, Path]


@dataclass
class Reference:
    """One reference image: where it came from and the pose it was taken at (REP 103)."""

    id: str
    source: str = ''
    stamp: float = 0.0
    frame_id: str = 'map'
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    qx: float = 0.0
    qy: float = 0.0
    qz: float = 0.0
    qw: float = 1.0

    @property
    def position(self) -> np.ndarray:
        """[x, y, z] in metres."""
        return np.array([self.x, self.y, self.z])


_REF_FIELDS = [f.name for f in fields(Reference)]


@dataclass
class ReferenceMap:
    """Descriptors of N reference images and their :class:`Reference` records.

    global_desc: [N, Dp] float32. patches: per scale [N, P_s, Dp] (float16, possibly a
    read-only memory map). identity: the model/preset identity the map was built with.
    """

    config: PatchNetVLADConfig
    model_digest: str
    references: List[Reference]
    global_desc: np.ndarray
    patches: List[np.ndarray]
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.references)
        if self.global_desc.shape != (n, self.config.num_pcs):
            raise MapError(f'global descriptors {self.global_desc.shape} do not match '
                           f'{n} references x {self.config.num_pcs} dims')
        if len(self.patches) != len(self.config.patch_sizes):
            raise MapError(f'{len(self.patches)} patch arrays for '
                           f'{len(self.config.patch_sizes)} scales')
        for i, arr in enumerate(self.patches):
            want = (n, self.config.num_patches(i), self.config.num_pcs)
            if arr.shape != want:
                raise MapError(f'patch array {i} has shape {arr.shape}, expected {want}')
        self._index = None

    def __len__(self) -> int:
        """Return the number of references."""
        return len(self.references)

    @property
    def identity(self) -> Dict[str, Any]:
        """What a query's descriptors must share with this map."""
        return {'model_digest': self.model_digest, **self.config.identity()}

    @property
    def index(self):
        """Exact faiss index over the global descriptors, built on first use."""
        if self._index is None:
            from .retrieval import build_index
            self._index = build_index(self.global_desc)
        return self._index

    def positions(self) -> np.ndarray:
        """[N, 3] reference positions."""
        return np.array([r.position for r in self.references]).reshape(-1, 3)

    # ---------------------------------------------------------------- building
    @classmethod
    def empty(cls, config: PatchNetVLADConfig, model_digest: str) -> 'ReferenceMap':
        """Make a map with no references yet."""
        return cls(config, model_digest, [], np.zeros((0, config.num_pcs), np.float32),
                   [np.zeros((0, config.num_patches(i), config.num_pcs), PATCH_DTYPE)
                    for i in range(len(config.patch_sizes))])

    def extended(self, references: Sequence[Reference], global_desc: np.ndarray,
                 patches: Sequence[np.ndarray]) -> 'ReferenceMap':
        """Return a new map with more references appended (an incremental build)."""
        ids = {r.id for r in self.references}
        clash = [r.id for r in references if r.id in ids]
        if clash:
            raise MapError(f'reference ids already in the map: {clash[:5]}')
        return ReferenceMap(
            self.config, self.model_digest, self.references + list(references),
            np.concatenate([self.global_desc, np.asarray(global_desc, np.float32)]),
            [np.concatenate([old, np.asarray(new, PATCH_DTYPE)])
             for old, new in zip(self.patches, patches)], dict(self.meta))

    # ------------------------------------------------------------------- disk
    def save(self, path: PathLike) -> Path:
        """Write the map folder atomically (temporary folder + rename); return its path."""
        path = Path(path)
        tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        files = {'global.npy': self.global_desc.astype(np.float32)}
        for i, arr in enumerate(self.patches):
            files[f'patches_{i}.npy'] = arr
        checksums = {}
        for name, arr in files.items():
            np.save(tmp / name, np.ascontiguousarray(arr, dtype=(
                np.float32 if name == 'global.npy' else PATCH_DTYPE)))
        with open(tmp / 'references.csv', 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(_REF_FIELDS)
            for ref in self.references:
                writer.writerow([repr(v) if isinstance(v, float) else v for v in astuple(ref)])
        for name in list(files) + ['references.csv']:
            checksums[name] = {'sha256': sha256_file(tmp / name),
                               'bytes': (tmp / name).stat().st_size}
        manifest = {
            'format': 'patch_netvlad_ros.map',
            'format_version': FORMAT_VERSION,
            'created_unix': time.time(),
            'num_references': len(self),
            'config': self.config.to_dict(),
            'identity': self.identity,
            'patch_dtype': np.dtype(PATCH_DTYPE).name,
            'files': checksums,
            'meta': self.meta,
        }
        (tmp / 'manifest.json').write_text(json.dumps(manifest, indent=2))
        backup = path.with_name(f'.{path.name}.old-{os.getpid()}')
        if path.exists():
            os.rename(path, backup)
        os.rename(tmp, path)
        if backup.exists():
            shutil.rmtree(backup)
        return path

    @classmethod
    def load(cls, path: PathLike, verify: bool = True,
             expect: Optional[Dict[str, Any]] = None) -> 'ReferenceMap':
        """Load and validate a map folder; patch arrays are memory-mapped read-only.

        verify: check every file's SHA-256 against the manifest. expect: an identity
        (see :attr:`identity`) the map must have, e.g. the running model's.
        """
        path = Path(path)
        manifest_path = path / 'manifest.json'
        if not manifest_path.is_file():
            hint = ''
            if path.parent.is_dir() and any(p.name.startswith(f'.{path.name}.')
                                            for p in path.parent.iterdir()):
                hint = ' (an interrupted build left a temporary folder beside it)'
            raise MapError(f'no map at {path}: manifest.json missing{hint}; build one with '
                           '`pnv-build-map`')
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise MapError(f'{manifest_path} is not valid JSON: {exc}') from exc
        if manifest.get('format') != 'patch_netvlad_ros.map':
            raise MapError(f'{path} is not a patch_netvlad_ros map')
        if manifest.get('format_version') != FORMAT_VERSION:
            raise MapError(f"{path} has map format version {manifest.get('format_version')}; "
                           f'this package reads version {FORMAT_VERSION}: rebuild the map')
        config = PatchNetVLADConfig(**manifest['config'])
        for name, info in manifest['files'].items():
            f = path / name
            if not f.is_file():
                raise MapError(f'{path}: {name} is missing')
            if f.stat().st_size != info['bytes']:
                raise MapError(f'{path}: {name} has {f.stat().st_size} bytes, the manifest '
                               f"says {info['bytes']} (truncated or replaced): rebuild the map")
            if verify and sha256_file(f) != info['sha256']:
                raise MapError(f'{path}: {name} fails its SHA-256 check (corrupted): rebuild '
                               'the map')
        with open(path / 'references.csv', newline='') as handle:
            rows = list(csv.DictReader(handle))
        types = {f.name: f.type for f in fields(Reference)}
        refs = [Reference(**{k: (float(v) if types[k] in (float, 'float') else v)
                             for k, v in row.items()}) for row in rows]
        try:
            global_desc = np.load(path / 'global.npy')
            patches = [np.load(path / f'patches_{i}.npy', mmap_mode='r')
                       for i in range(len(config.patch_sizes))]
        except ValueError as exc:
            raise MapError(f'{path}: unreadable descriptor array: {exc}') from exc
        ref_map = cls(config, manifest['identity']['model_digest'], refs, global_desc,
                      patches, manifest.get('meta', {}))
        if expect is not None:
            check_identity(ref_map.identity, expect, str(path))
        return ref_map


def check_identity(have: Dict[str, Any], want: Dict[str, Any], what: str) -> None:
    """Raise :class:`MapError` naming every field where two identities differ."""
    diff = [f'{k}: map {have.get(k)!r} vs model {want.get(k)!r}'
            for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
    if diff:
        raise MapError(f'{what} was built with another model or preset ('
                       + '; '.join(diff) + '): rebuild the map with this model, or load the '
                       'model it was built with')
