# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The reference map: descriptors and poses of reference images, on disk and in memory.

On disk a map is one folder:
    manifest.json      format version, model/preset identity, counts, file checksums
    references.csv     id, source, stamp, frame_id, x, y, z, qx, qy, qz, qw
    global.npy         [N, Dp] float32 global descriptors, memory-mapped
    global.faiss       faiss index over them (format 2), its kind chosen by N
                       (manifest ``index_kind``; see :mod:`.retrieval`): loaded as saved,
                       so a large map's IVF training is not repeated at every start
    patches_<i>.npy    [N, P_i, Dp] float16 patch descriptors of scale i, memory-mapped
It is written to a temporary sibling folder and renamed into place, so a crash never
leaves a half-written map where a map is expected. Format 1 (no global.faiss) is still
read: its exact index is built in memory on first use.
"""

import csv
from dataclasses import astuple, dataclass, field, fields
import json
import os
from pathlib import Path
import shutil
import struct
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .backbone import sha256_file
from .config import PatchNetVLADConfig
from .errors import MapError

FORMAT_VERSION = 2
#: Map format versions :meth:`ReferenceMap.load` reads.
READABLE_VERSIONS = (1, 2)
INDEX_FILE = 'global.faiss'
PATCH_DTYPE = np.float16
PathLike = Union[str, Path]


def map_identity(model_digest: str, config: PatchNetVLADConfig) -> Dict[str, Any]:
    """Identity that descriptors and the map they are matched against must share."""
    return {'model_digest': model_digest, **config.identity()}


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

    global_desc: [N, Dp] float32. patches: per scale [N, P_s, Dp] float16. Both are
    read-only memory maps when loaded from disk. identity: the model/preset identity the
    map was built with. The faiss index over global_desc is :attr:`index`.
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
        self._index_kind = 'auto'          # what :attr:`index` builds when there is none

    def __len__(self) -> int:
        """Return the number of references."""
        return len(self.references)

    @property
    def identity(self) -> Dict[str, Any]:
        """What a query's descriptors must share with this map."""
        return map_identity(self.model_digest, self.config)

    @property
    def index(self):
        """Faiss index over the global descriptors: as loaded from disk, else built.

        A map built in memory (or extended) gets the kind 'auto' picks for its size on
        first use; a format-1 map from disk gets the exact (flat) index it always had.
        """
        if self._index is None:
            from .retrieval import build_index
            self._index = build_index(self.global_desc, self._index_kind)
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
        """Return a new map with more references appended (an incremental build).

        The new map has no index yet: it is built for the new size on first use or save.
        """
        self.check_extension(self.model_digest, self.config, references)
        return ReferenceMap(
            self.config, self.model_digest, self.references + list(references),
            np.concatenate([self.global_desc, np.asarray(global_desc, np.float32)]),
            [np.concatenate([old, np.asarray(new, PATCH_DTYPE)])
             for old, new in zip(self.patches, patches)], dict(self.meta))

    def check_extension(self, model_digest: str, config: PatchNetVLADConfig,
                        references: Sequence[Reference]) -> None:
        """Raise :class:`MapError` unless these references of this model may be appended."""
        if model_digest != self.model_digest or config.identity() != self.config.identity():
            raise MapError('cannot extend a map built with another model or preset')
        ids = {r.id for r in self.references}
        clash = [r.id for r in references if r.id in ids]
        if clash:
            raise MapError(f'reference ids already in the map: {clash[:5]}')

    # ------------------------------------------------------------------- disk
    def save(self, path: PathLike, index_kind: str = 'auto') -> Path:
        """Write the map folder atomically (temporary folder + rename); return its path.

        index_kind: the faiss index written to global.faiss: 'flat', 'ivf', 'ivfpq' or
        'auto' (by the number of references, see :func:`.retrieval.index_kind_for`).
        The map's current index is written as is when it has that kind; else one is
        built (and kept as :attr:`index` if the map had none yet). An empty map has no
        index file.
        """
        from .retrieval import resolve_kind
        kind = resolve_kind(index_kind, len(self)) if len(self) else None
        index = self._index_for_save(kind)
        with MapWriter(path, self.config, self.model_digest, len(self)) as writer:
            writer.append_map(self)
            return writer.commit(self.references, self.meta, index_kind, index)

    def _index_for_save(self, kind: Optional[str]):
        """Index of the given kind to write (None for none): the current one, or a new one."""
        if kind is None:
            return None
        from .retrieval import build_index, index_kind_of
        if (self._index is not None and index_kind_of(self._index) == kind
                and self._index.ntotal == len(self)):
            return self._index
        index = build_index(self.global_desc, kind)
        if self._index is None:
            self._index = index
        return index

    @classmethod
    def load(cls, path: PathLike, verify: bool = True,
             expect: Optional[Dict[str, Any]] = None) -> 'ReferenceMap':
        """Load and validate a map folder; descriptor arrays are memory-mapped read-only.

        verify: check every file's SHA-256 against the manifest (sizes are always
        checked). expect: an identity (see :attr:`identity`) the map must have, e.g. the
        running model's. The faiss index (format 2) is read here, so a broken one fails
        the load rather than the first query.
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
        version = manifest.get('format_version')
        if version not in READABLE_VERSIONS:
            raise MapError(f'{path} has map format version {version}; this package reads '
                           f'versions {", ".join(map(str, READABLE_VERSIONS))}: rebuild the map')
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
            global_desc = np.load(path / 'global.npy', mmap_mode='r')
            patches = [np.load(path / f'patches_{i}.npy', mmap_mode='r')
                       for i in range(len(config.patch_sizes))]
        except ValueError as exc:
            raise MapError(f'{path}: unreadable descriptor array: {exc}') from exc
        ref_map = cls(config, manifest['identity']['model_digest'], refs, global_desc,
                      patches, manifest.get('meta', {}))
        if version == 1:
            ref_map._index_kind = 'flat'                # what format 1 always searched with
        elif INDEX_FILE in manifest['files']:
            ref_map._index = read_index(path / INDEX_FILE, len(refs), config.num_pcs,
                                        manifest.get('index_kind'))
        if expect is not None:
            check_identity(ref_map.identity, expect, str(path))
        return ref_map


class MapWriter:
    """Write a map folder row by row, so that a map never has to fit in memory.

    The descriptor files are created at their final size ([count, ...] .npy memory maps)
    in a temporary sibling folder and filled by :meth:`append`; :meth:`commit` adds
    references.csv, the faiss index and the manifest and renames the folder into place.
    Used as a context manager, an exception (or a missing commit) removes the temporary
    folder, and any previous map at ``path`` stays as it was. Extra files (e.g. the
    model) go into :attr:`folder` before the commit.
    """

    #: references copied per step by :meth:`append_map` (bounds the memory of a copy)
    COPY_ROWS = 64

    def __init__(self, path: PathLike, config: PatchNetVLADConfig, model_digest: str,
                 count: int) -> None:
        self.path = Path(path)
        self.config = config
        self.model_digest = model_digest
        self.count = int(count)
        self.filled = 0
        self.folder = self.path.with_name(f'.{self.path.name}.tmp-{os.getpid()}')
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        shapes = {'global.npy': ((self.count, config.num_pcs), np.float32)}
        for i in range(len(config.patch_sizes)):
            shapes[f'patches_{i}.npy'] = ((self.count, config.num_patches(i), config.num_pcs),
                                          PATCH_DTYPE)
        self._arrays: Dict[str, np.ndarray] = {}
        for name, (shape, dtype) in shapes.items():
            if self.count:
                self._arrays[name] = np.lib.format.open_memmap(
                    self.folder / name, mode='w+', dtype=dtype, shape=shape)
            else:                               # mmap cannot map an empty file
                np.save(self.folder / name, np.zeros(shape, dtype))

    def __enter__(self) -> 'MapWriter':
        """Return the writer; leaving the block without :meth:`commit` aborts it."""
        return self

    def __exit__(self, *exc) -> None:
        """Remove the temporary folder unless the map was committed."""
        self.abort()

    def append(self, global_desc: np.ndarray, patches: Sequence[np.ndarray]) -> None:
        """Write the next rows: global_desc [b, Dp]; patches per scale [b, P_s, Dp]."""
        b = len(global_desc)
        if self.filled + b > self.count:
            raise MapError(f'map writer for {self.count} references got '
                           f'{self.filled + b}')
        if len(patches) != len(self.config.patch_sizes):
            raise MapError(f'{len(patches)} patch arrays for '
                           f'{len(self.config.patch_sizes)} scales')
        rows = slice(self.filled, self.filled + b)
        try:
            self._arrays['global.npy'][rows] = global_desc
            for i, p in enumerate(patches):
                self._arrays[f'patches_{i}.npy'][rows] = p
        except ValueError as exc:
            raise MapError(f'descriptor rows do not fit the map ({exc})') from exc
        self.filled += b

    def append_map(self, ref_map: 'ReferenceMap') -> None:
        """Copy all rows of another map (of the same model), a few at a time."""
        for start in range(0, len(ref_map), self.COPY_ROWS):
            rows = slice(start, start + self.COPY_ROWS)
            self.append(ref_map.global_desc[rows], [p[rows] for p in ref_map.patches])

    def commit(self, references: Sequence['Reference'], meta: Optional[Dict[str, Any]] = None,
               index_kind: str = 'auto', index=None) -> Path:
        """Finish the folder and move it to ``path`` (replacing a map there); return path.

        index_kind: see :meth:`ReferenceMap.save`; index: one to write as is (built from
        the written global descriptors when None).
        """
        from .retrieval import build_index, resolve_kind
        if self.filled != self.count or len(references) != self.count:
            raise MapError(f'map writer for {self.count} references has {self.filled} rows '
                           f'and {len(references)} references')
        for arr in self._arrays.values():
            arr.flush()
        kind = resolve_kind(index_kind, self.count) if self.count else None
        if kind is not None and index is None:
            index = build_index(np.asarray(self._arrays['global.npy']), kind)
        self._arrays.clear()                   # unmap before the rename
        names = ['global.npy'] + [f'patches_{i}.npy'
                                  for i in range(len(self.config.patch_sizes))]
        with open(self.folder / 'references.csv', 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(_REF_FIELDS)
            for ref in references:
                writer.writerow([repr(v) if isinstance(v, float) else v for v in astuple(ref)])
        names.append('references.csv')
        if index is not None:
            import faiss
            faiss.write_index(index, str(self.folder / INDEX_FILE))
            names.append(INDEX_FILE)
        manifest = {
            'format': 'patch_netvlad_ros.map',
            'format_version': FORMAT_VERSION,
            'created_unix': time.time(),
            'num_references': self.count,
            'config': self.config.to_dict(),
            'identity': map_identity(self.model_digest, self.config),
            'patch_dtype': np.dtype(PATCH_DTYPE).name,
            'index_kind': kind,
            'files': {name: {'sha256': sha256_file(self.folder / name),
                             'bytes': (self.folder / name).stat().st_size} for name in names},
            'meta': dict(meta or {}),
        }
        (self.folder / 'manifest.json').write_text(json.dumps(manifest, indent=2))
        backup = self.path.with_name(f'.{self.path.name}.old-{os.getpid()}')
        if self.path.exists():
            os.rename(self.path, backup)
        os.rename(self.folder, self.path)
        if backup.exists():
            shutil.rmtree(backup)
        return self.path

    def abort(self) -> None:
        """Drop the temporary folder (nothing to do after a commit)."""
        self._arrays.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def read_index(path: Path, n: int, d: int, kind: Optional[str] = None):
    """Read a map's faiss index file, which must index n references of d dims.

    kind: the kind the manifest names, if any. The header (signature, d, ntotal) is
    checked before faiss reads the file, so a damaged one (verify=False) becomes a
    :class:`MapError` naming the file instead of a huge allocation or a crash.
    """
    import faiss
    from .retrieval import FOURCC_KINDS, index_kind_of
    try:
        with open(path, 'rb') as handle:
            header = handle.read(16)
        fourcc, have_d, have_n = struct.unpack('<4siq', header)
    except (OSError, struct.error) as exc:
        raise MapError(f'{path}: unreadable faiss index ({exc}): rebuild the map') from exc
    if fourcc not in FOURCC_KINDS:
        raise MapError(f'{path}: not a faiss index of a kind this package writes (signature '
                       f'{fourcc!r}): corrupted; rebuild the map')
    if have_d != d:
        raise MapError(f'{path}: the faiss index has {have_d} dims, the map {d}: rebuild the '
                       'map')
    if have_n != n:
        raise MapError(f'{path}: the faiss index holds {have_n} references, the map {n}: '
                       'rebuild the map')
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:
        detail = ' '.join(str(exc).split()).rsplit('Error: ', 1)[-1][:200]
        raise MapError(f'{path}: unreadable faiss index ({detail}): rebuild the map') from exc
    if index.d != d or index.ntotal != n:
        raise MapError(f'{path}: the faiss index holds {index.ntotal} references of '
                       f'{index.d} dims, the map {n} of {d}: rebuild the map')
    if kind is not None and index_kind_of(index) != kind:
        raise MapError(f'{path}: the faiss index is {index_kind_of(index)}, the manifest '
                       f'says {kind}: rebuild the map')
    return index


def check_identity(have: Dict[str, Any], want: Dict[str, Any], what: str) -> None:
    """Raise :class:`MapError` naming every field where two identities differ."""
    diff = [f'{k}: map {have.get(k)!r} vs model {want.get(k)!r}'
            for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
    if diff:
        raise MapError(f'{what} was built with another model or preset ('
                       + '; '.join(diff) + '): rebuild the map with this model, or load the '
                       'model it was built with')
