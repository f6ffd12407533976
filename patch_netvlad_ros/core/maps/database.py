# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The reference map: descriptors and poses of reference images, on disk and in memory.

On disk a map is one folder:
    manifest.json      format version, model/preset identity, counts, size and SHA-256 of
                       every other file (schema: :mod:`.map_manifest`)
    references.csv     id, source, stamp, frame_id, x, y, z, qx, qy, qz, qw
    global.npy         [N, Dp] float32 global descriptors (unit rows), memory-mapped
    global.faiss       faiss index over them (format >= 2), its kind chosen by N
                       (manifest ``index_kind``; see :mod:`.retrieval`): loaded as saved,
                       so a large map's IVF training is not repeated at every start
    patches_<i>.npy    [N, P_i, Dp] float16 patch descriptors of scale i, memory-mapped
    model.pth.tar      the model it was built with (maps from :mod:`.map_building`)
It is written to a temporary sibling folder, flushed to disk and swapped into place
(:mod:`.map_folder`), so a crash never leaves a half-written map where a map is expected;
a commit interrupted where the system cannot swap is put back by :func:`recover_map`.
Descriptor values are checked when written (:meth:`MapWriter.append`) and when loaded
(:meth:`ReferenceMap.load`: finite values, unit-length global rows, read in bounded
chunks). Formats 1 (no global.faiss: its exact index is built in memory on first use)
and 2 (the model not checksummed) are still read.
"""

import csv
from dataclasses import astuple, dataclass, field, fields
import json
import logging
import os
from pathlib import Path
import shutil
import struct
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .map_folder import clean_leftovers, fsync_path, Leftover, leftovers, publish, \
    temp_folder
from .map_manifest import descriptor_files, file_record, FORMAT_VERSION, GLOBAL_FILE, \
    INDEX_FILE, make_manifest, MANIFEST, MODEL_FILE, read_manifest, READABLE_VERSIONS, \
    REFERENCES_FILE
from ..config import PatchNetVLADConfig
from ..errors import MapError
from ..model.backbone import sha256_file

# FORMAT_VERSION, READABLE_VERSIONS and INDEX_FILE are also read from here
__all__ = ['FORMAT_VERSION', 'READABLE_VERSIONS', 'INDEX_FILE', 'PATCH_DTYPE', 'Reference',
           'ReferenceMap', 'MapWriter', 'check_map_file', 'recover_map', 'tidy_map_folder',
           'read_index', 'check_identity', 'map_identity', 'bad_global_rows',
           'bad_patch_rows']

PATCH_DTYPE = np.float16
PathLike = Union[str, Path]
Log = Optional[Callable[[str], None]]
_LOG = logging.getLogger(__name__)
#: Largest |length - 1| of a global descriptor row. The model L2-normalises them in
#: float32 (float32 rounding: ~1e-6; rows from a bf16/fp16 encoder are normalised after
#: it); a zero, unnormalised or garbled row is far outside.
NORM_TOLERANCE = 1e-2
#: Bytes of descriptor rows read per step when a map's values are checked on load.
CHECK_BYTES = 16 << 20


def map_identity(model_digest: str, config: PatchNetVLADConfig) -> Dict[str, Any]:
    """Identity that descriptors and the map they are matched against must share."""
    return {'model_digest': model_digest, **config.identity()}


def bad_global_rows(global_desc: np.ndarray) -> np.ndarray:
    """Return the rows of global_desc [b, Dp] that are not finite unit vectors (float32)."""
    g = np.asarray(global_desc, np.float32).reshape(len(global_desc), -1)
    norms = np.sqrt(np.einsum('ij,ij->i', g, g))      # NaN or Inf anywhere makes it so
    return np.flatnonzero(~(np.abs(norms - 1.0) <= NORM_TOLERANCE))


def bad_patch_rows(patches: np.ndarray) -> np.ndarray:
    """Return the references of patches [b, P, Dp] (as float16) holding a NaN or an Inf.

    A float16 is NaN or Inf exactly when its 5 exponent bits are all set, i.e. when its
    bits without the sign are at least 0x7C00: one max per batch when all are finite.
    """
    bits = np.ascontiguousarray(patches, PATCH_DTYPE).view(np.uint16).reshape(len(patches), -1)
    bits = np.bitwise_and(bits, 0x7FFF)
    if bits.max(initial=0) < 0x7C00:
        return np.zeros(0, np.int64)
    return np.flatnonzero((bits >= 0x7C00).any(axis=1))


def _rows_text(rows: Sequence[int], refs: Optional[Sequence['Reference']] = None,
               limit: int = 5) -> str:
    """'row 3 (id r3), row 9 (id r9) and 4 more'."""
    shown = [f'row {r}' + (f' (id {refs[r].id!r})' if refs is not None else '')
             for r in rows[:limit]]
    more = f' and {len(rows) - limit} more' if len(rows) > limit else ''
    return ', '.join(shown) + more


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
    def save(self, path: PathLike, index_kind: str = 'auto', log: Log = None) -> Path:
        """Write the map folder atomically (temporary folder + rename); return its path.

        index_kind: the faiss index written to global.faiss: 'flat', 'ivf', 'ivfpq' or
        'auto' (by the number of references, see :func:`.retrieval.index_kind_for`).
        The map's current index is written as is when it has that kind; else one is
        built (and kept as :attr:`index` if the map had none yet). An empty map has no
        index file. log: see :class:`MapWriter`.
        """
        from .retrieval import resolve_kind
        kind = resolve_kind(index_kind, len(self)) if len(self) else None
        index = self._index_for_save(kind)
        with MapWriter(path, self.config, self.model_digest, len(self), log) as writer:
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
             expect: Optional[Dict[str, Any]] = None, check_values: bool = True,
             recover: bool = True, log: Log = None) -> 'ReferenceMap':
        """Load and validate a map folder; descriptor arrays are memory-mapped read-only.

        Always checked: the manifest's schema, every listed file's size, references.csv
        against the counts, the arrays' dtypes and shapes, and the faiss index header.
        verify: check every file's SHA-256 against the manifest, the model's included.
        check_values: read the descriptors (in chunks of :data:`CHECK_BYTES`, never the
        whole array) and refuse NaN/Inf values and global rows of other than unit length.
        With verify the same read also hashes them (one pass); without it, this is the
        only full read: 1.9 s for a 2.4 GB map from the page cache, 4.1 s cold, against 8.2
        and 16 s with verify (2 shared CPU cores; benchmarks/bench_map_checks.py), and the
        resident set does not grow. False skips it, for a map known to be good.
        expect: an identity (see :attr:`identity`) the map must have, e.g. the running
        model's. recover: where there is no map at ``path`` but an interrupted commit
        left one beside it, put it back first (:func:`recover_map`). log: warnings
        (recovery, folders left by interrupted builds, unchecked files); default: this
        module's logger.
        """
        path = Path(path)
        log = log or _LOG.warning
        if recover and not os.path.lexists(path):
            recover_map(path, log)
        ref_map = cls._read(path, verify, check_values, log)
        for left in leftovers(path):
            log(f'{path}: an interrupted build left {left.describe()} beside the map: '
                f'`pnv-map clean {path}` (or the next build of this map) removes it')
        if expect is not None:
            check_identity(ref_map.identity, expect, str(path))
        return ref_map

    @classmethod
    def _read(cls, path: Path, verify: bool, check_values: bool, log) -> 'ReferenceMap':
        """Read the map folder at path (no recovery, no leftovers, no identity check)."""
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise MapError(f'no map at {path}: {MANIFEST} missing{_leftover_hint(path)}; '
                           'build one with `pnv-build-map`')
        manifest, version, config = read_manifest(path)
        files = manifest['files']
        for name, info in files.items():
            f = path / name
            if not f.is_file():
                raise MapError(f'{path}: {_what(name)} is missing: rebuild the map')
            if f.stat().st_size != info['bytes']:
                raise MapError(f'{path}: {_what(name)} has {f.stat().st_size} bytes, the '
                               f"manifest says {info['bytes']} (truncated or replaced): "
                               f'{_fix(name)}')
        _check_unlisted(path, version, files, log)
        if verify:
            _check_sha(path, REFERENCES_FILE, files)
        refs = read_references(path / REFERENCES_FILE, manifest['num_references'])
        arrays = _open_arrays(path, config, len(refs))
        if verify or check_values:
            for name, arr in zip(descriptor_files(config), arrays):
                _scan_array(path / name, arr, files[name]['sha256'] if verify else None,
                            check_values, refs)
        if verify:
            for name in files:
                if name not in descriptor_files(config) and name != REFERENCES_FILE:
                    _check_sha(path, name, files)
        ref_map = cls(config, manifest['identity']['model_digest'], refs, arrays[0],
                      arrays[1:], manifest.get('meta', {}))
        if version == 1:
            ref_map._index_kind = 'flat'                # what format 1 always searched with
        elif INDEX_FILE in files:
            ref_map._index = read_index(path / INDEX_FILE, len(refs), config.num_pcs,
                                        manifest['index_kind'])
        return ref_map


def _what(name: str) -> str:
    return f"the map's model {name}" if name == MODEL_FILE else name


def _fix(name: str) -> str:
    if name == MODEL_FILE:
        return ('copy the checkpoint the map was built with over it (model_digest in '
                'manifest.json), or rebuild the map')
    return 'rebuild the map'


def check_map_file(path: PathLike, name: str) -> bool:
    """Check one file of the map folder against its manifest (size and SHA-256).

    Returns False when the manifest does not list it (formats 1 and 2 do not list the
    model); raises :class:`MapError` naming the file when it differs or is missing.
    """
    path = Path(path)
    try:
        files = json.loads((path / MANIFEST).read_text())['files']
        info = files[name]
        size = info['bytes']
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (path / name).is_file():
        raise MapError(f'{path}: {_what(name)} is missing: {_fix(name)}')
    if (path / name).stat().st_size != size:
        raise MapError(f'{path}: {_what(name)} has {(path / name).stat().st_size} bytes, the '
                       f'manifest says {size} (truncated or replaced): {_fix(name)}')
    _check_sha(path, name, files)
    return True


def _check_sha(path: Path, name: str, files: Dict[str, Any]) -> None:
    if sha256_file(path / name) != files[name]['sha256']:
        raise MapError(f'{path}: {_what(name)} fails its SHA-256 check (corrupted): '
                       f'{_fix(name)}')


def _check_unlisted(path: Path, version: int, files: Dict[str, Any], log) -> None:
    """Warn about files the manifest does not cover (they are not checked)."""
    listed = set(files) | {MANIFEST}
    for extra in sorted(p.name for p in path.iterdir() if p.name not in listed):
        if version < 3 and extra == MODEL_FILE:
            log(f'{path}: {MODEL_FILE} is not covered by the checksums of this format-'
                f'{version} map (format {FORMAT_VERSION} maps cover it): a damaged model '
                'would read as another model; rebuild the map to have it checked')
        else:
            log(f'{path}: {extra} is not listed in {MANIFEST}: ignored and not checked')


def read_references(path: Path, count: int) -> List[Reference]:
    """Rows of references.csv (the manifest says ``count``), checked: columns, numbers, ids."""
    types = {f.name: f.type for f in fields(Reference)}
    try:
        with open(path, newline='') as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MapError(f'{path}: unreadable ({exc}): rebuild the map') from exc
    unknown = [c for c in columns if c not in types]
    if 'id' not in columns or unknown:
        raise MapError(f'{path}: columns {columns}; expected {_REF_FIELDS}: rebuild the map')
    if len(rows) != count:
        raise MapError(f'{path}: {len(rows)} references, the manifest says {count}: '
                       'rebuild the map')
    refs, seen = [], set()
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise MapError(f'{path}: line {line} does not have {len(columns)} fields: '
                           'rebuild the map')
        try:
            ref = Reference(**{k: (float(v) if types[k] in (float, 'float') else v)
                               for k, v in row.items()})
        except ValueError as exc:
            raise MapError(f'{path}: line {line}: {exc}: rebuild the map') from exc
        if not ref.id or ref.id in seen:
            raise MapError(f'{path}: line {line}: reference id {ref.id!r} is '
                           f"{'empty' if not ref.id else 'not unique'}: rebuild the map")
        seen.add(ref.id)
        refs.append(ref)
    return refs


def _open_arrays(path: Path, config: PatchNetVLADConfig, n: int) -> List[np.ndarray]:
    """Open the descriptor arrays as read-only memory maps, dtype and shape checked."""
    arrays = []
    for i, name in enumerate(descriptor_files(config)):
        dtype = np.float32 if i == 0 else PATCH_DTYPE
        shape = ((n, config.num_pcs) if i == 0 else
                 (n, config.num_patches(i - 1), config.num_pcs))
        try:
            arr = np.load(path / name, mmap_mode='r')
        except (ValueError, OSError) as exc:
            raise MapError(f'{path}: unreadable descriptor array {name}: {exc}') from exc
        if arr.dtype != np.dtype(dtype).newbyteorder('<') or arr.shape != shape or \
                np.isfortran(arr):
            raise MapError(f'{path}: {name} holds {arr.dtype} {arr.shape}, expected '
                           f'{np.dtype(dtype).name} {shape} (C order): rebuild the map')
        arrays.append(arr)
    return arrays


def _scan_array(path: Path, arr: np.memmap, sha256: Optional[str], check_values: bool,
                refs: Sequence[Reference]) -> None:
    """Hash (sha256 given) and/or check the values of one descriptor file in one read.

    The rows are read with plain reads into one reused buffer of about
    :data:`CHECK_BYTES` (the only memory it takes), not through the memory map, so neither
    the process' memory nor its resident set grows with the map.
    """
    import hashlib
    digest = hashlib.sha256() if sha256 else None
    n = len(arr)
    row_items = int(np.prod(arr.shape[1:]))
    row_bytes = row_items * arr.dtype.itemsize
    step = max(1, CHECK_BYTES // max(row_bytes, 1))
    buf = bytearray(max(min(n, step) * row_bytes, 1 << 16))
    view = memoryview(buf)
    is_global = arr.ndim == 2
    bad: List[int] = []
    with open(path, 'rb') as handle:
        header = handle.read(arr.offset)
        if digest:
            digest.update(header)
        for start in range(0, n, step):
            k = min(step, n - start)
            chunk = view[:k * row_bytes]
            if handle.readinto(chunk) != len(chunk):
                raise MapError(f'{path}: shorter than its array header says: rebuild the map')
            if digest:
                digest.update(chunk)
            if check_values:
                bad.extend(int(start + r) for r in _bad_rows_in_place(buf, arr, k))
        while digest and (got := handle.readinto(view)):         # bytes after the array
            digest.update(view[:got])
    if digest and digest.hexdigest() != sha256:
        raise MapError(f'{path.parent}: {path.name} fails its SHA-256 check (corrupted): '
                       'rebuild the map')
    if bad:
        what = ('NaN or Inf values or a length other than 1' if is_global
                else 'NaN or Inf values')
        raise MapError(f'{path.parent}: {path.name}: {len(bad)} reference(s) hold {what}: '
                       f'{_rows_text(bad, refs)}; maps written by this package never do '
                       '(the file was written or edited elsewhere): rebuild the map')


def _bad_rows_in_place(buf: bytearray, arr: np.ndarray, k: int) -> np.ndarray:
    """Rows among the first k of ``buf`` (laid out like arr's rows) with bad values.

    Patches: the float16 bits are masked in place (the buffer is scratch once hashed),
    so the common all-finite case allocates nothing and takes one max per chunk.
    """
    items = k * int(np.prod(arr.shape[1:]))
    if arr.ndim == 2:
        return bad_global_rows(np.frombuffer(buf, arr.dtype, items).reshape(k, -1))
    bits = np.frombuffer(buf, np.uint16, items)
    np.bitwise_and(bits, 0x7FFF, out=bits)
    if bits.max(initial=0) < 0x7C00:
        return np.zeros(0, np.int64)
    return np.flatnonzero((bits.reshape(k, -1) >= 0x7C00).any(axis=1))


def _leftover_hint(path: Path) -> str:
    found = leftovers(path)
    if not found:
        return ''
    return (' (an interrupted build left a temporary folder beside it: '
            + '; '.join(left.describe() for left in found)
            + f'; `pnv-map recover {path}` puts back a complete map from there if one '
            'verifies)')


def _created(folder: Path) -> float:
    try:
        return float(json.loads((folder / MANIFEST).read_text()).get('created_unix'))
    except (OSError, ValueError, TypeError, AttributeError):
        return folder.stat().st_mtime


def recover_map(path: PathLike, log: Log = None) -> Optional[Path]:
    """Put back a map that an interrupted commit left beside a missing ``path``.

    Only when nothing is at ``path`` and only folders of writers that are gone (a live
    writer finishes its own commit). The new map of the commit wins when it verifies in
    full (checksums, values, index): its manifest is written last, after every file is
    flushed, so it is the map that was being committed; else the old map it replaced,
    verified likewise. The newest of several wins. Returns the path, or None when
    there is nothing complete to put back (reasons go to ``log``). Loudly logged.
    """
    path = Path(path)
    log = log or _LOG.warning
    if os.path.lexists(path):
        return None
    found = [left for left in leftovers(path) if not left.alive]
    ranked = ([(left, 'the new map of a commit interrupted before it was renamed into '
                'place') for left in sorted(found, key=lambda x: -_created(x.folder))
               if left.kind == 'tmp' and (left.folder / MANIFEST).is_file()]
              + [(left, 'the previous map, moved aside by a commit interrupted before the '
                  'new map was renamed into place') for left in
                 sorted(found, key=lambda x: -_created(x.folder)) if left.kind == 'old'])
    for left, what in ranked:
        try:
            ReferenceMap._read(left.folder, True, True, lambda msg: None)
        except MapError as exc:
            log(f'{path}: not recovering {left.folder.name}: {exc}')
            continue
        try:
            os.rename(left.folder, path)
        except OSError:
            if path.is_dir():
                return path                     # another process recovered it meanwhile
            raise
        fsync_path(path.parent)
        log(f'RECOVERED the map at {path} from {left.folder.name}: {what}; its checksums '
            'and values verify')
        return path
    return None


def tidy_map_folder(path: PathLike, log: Log = None
                    ) -> Tuple[Optional[Path], List[Leftover]]:
    """Recover a missing map at ``path`` (:func:`recover_map`), then remove dead writers' folders.

    Returns (the recovered path or None, the folders removed). Each is logged.
    """
    log = log or _LOG.warning
    recovered = recover_map(path, log)
    return recovered, clean_leftovers(path, log)


class MapWriter:
    """Write a map folder row by row, so that a map never has to fit in memory.

    The descriptor files are created at their final size ([count, ...] .npy memory maps)
    in a temporary sibling folder (``.NAME.tmp-PID``) and filled by :meth:`append`, which
    refuses rows with NaN/Inf values or global rows of other than unit length.
    :meth:`commit` adds references.csv, the faiss index and the manifest (size and
    SHA-256 of every file in the folder, so also of extra files such as the model put
    into :attr:`folder` before the commit), flushes them to disk and swaps the folder
    into place (:func:`.map_folder.publish`). Used as a context manager, an exception (or
    a missing commit) removes the temporary folder, and any previous map at ``path``
    stays as it was. Starting a writer first puts back a map an interrupted commit left
    beside ``path`` and removes folders that dead writers left there, reporting both to
    ``log`` (default: this module's logger).
    """

    #: references copied per step by :meth:`append_map` (bounds the memory of a copy)
    COPY_ROWS = 64

    def __init__(self, path: PathLike, config: PatchNetVLADConfig, model_digest: str,
                 count: int, log: Log = None) -> None:
        self.path = Path(path)
        self.config = config
        self.model_digest = model_digest
        self.count = int(count)
        self.filled = 0
        self.log = log or _LOG.warning
        self.folder = temp_folder(self.path)
        tidy_map_folder(self.path, self.log)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self._arrays: Dict[str, np.ndarray] = {}
        for i, name in enumerate(descriptor_files(config)):
            shape = ((self.count, config.num_pcs) if i == 0 else
                     (self.count, config.num_patches(i - 1), config.num_pcs))
            dtype = np.float32 if i == 0 else PATCH_DTYPE
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
        """Write the next rows: global_desc [b, Dp]; patches per scale [b, P_s, Dp].

        Raises :class:`MapError` naming the map rows whose global descriptor is not a
        finite unit vector or whose patches (as stored, float16) hold NaN or Inf;
        nothing of the batch is written then.
        """
        b = len(global_desc)
        if self.filled + b > self.count:
            raise MapError(f'map writer for {self.count} references got '
                           f'{self.filled + b}')
        if len(patches) != len(self.config.patch_sizes):
            raise MapError(f'{len(patches)} patch arrays for '
                           f'{len(self.config.patch_sizes)} scales')
        rows = slice(self.filled, self.filled + b)
        try:
            g = np.asarray(global_desc, np.float32)
            with np.errstate(over='ignore', invalid='ignore'):   # out of float16: Inf
                ps = [np.asarray(p, PATCH_DTYPE) for p in patches]
        except (ValueError, TypeError) as exc:
            raise MapError(f'descriptor rows are not numeric arrays ({exc})') from exc
        want = [(b, self.config.num_pcs)] + [(b, self.config.num_patches(i), self.config.num_pcs)
                                             for i in range(len(ps))]
        have = [g.shape] + [p.shape for p in ps]
        if have != want:
            raise MapError(f'descriptor rows do not fit the map (shapes {have}, expected '
                           f'{want})')
        bad = bad_global_rows(g)
        if len(bad):
            raise MapError(f'global descriptors of map {_rows_text(list(self.filled + bad))} '
                           f'are not finite unit vectors (lengths '
                           f'{np.linalg.norm(g[bad[:5]], axis=1).tolist()}): the extraction '
                           'went wrong; nothing of this batch was written')
        for scale, p in enumerate(ps):
            bad = bad_patch_rows(p)
            if len(bad):
                raise MapError(f'patch descriptors (scale {scale}) of map '
                               f'{_rows_text(list(self.filled + bad))} hold NaN or Inf '
                               '(as float16): the extraction went wrong; nothing of this '
                               'batch was written')
        self._arrays[GLOBAL_FILE][rows] = g
        for name, p in zip(descriptor_files(self.config)[1:], ps):
            self._arrays[name][rows] = p
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
        the written global descriptors when None). Every file is flushed to disk before
        the manifest, and the manifest before the swap, so the folder at ``path`` (or,
        after a crash, the one :func:`recover_map` puts back) is complete.
        """
        from .retrieval import build_index, resolve_kind
        if self.filled != self.count or len(references) != self.count:
            raise MapError(f'map writer for {self.count} references has {self.filled} rows '
                           f'and {len(references)} references')
        ids = [r.id for r in references]
        if len(set(ids)) != len(ids) or '' in ids:
            raise MapError('reference ids must be unique and non-empty; repeated: '
                           f'{sorted({i for i in ids if ids.count(i) > 1})[:5]}')
        for arr in self._arrays.values():
            arr.flush()
        kind = resolve_kind(index_kind, self.count) if self.count else None
        if kind is not None and index is None:
            index = build_index(np.asarray(self._arrays[GLOBAL_FILE]), kind)
        self._arrays.clear()                   # unmap before the rename
        with open(self.folder / REFERENCES_FILE, 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(_REF_FIELDS)
            for ref in references:
                writer.writerow([repr(v) if isinstance(v, float) else v for v in astuple(ref)])
        if index is not None:
            import faiss
            faiss.write_index(index, str(self.folder / INDEX_FILE))
        files = {}
        for entry in sorted(self.folder.iterdir()):
            if not entry.is_file() or entry.is_symlink():
                raise MapError(f'{entry} is not a plain file: a map folder holds only files')
            files[entry.name] = file_record(entry)
        manifest = make_manifest(self.count, self.config,
                                 map_identity(self.model_digest, self.config), kind, files,
                                 meta, time.time())
        with open(self.folder / MANIFEST, 'w') as handle:
            handle.write(json.dumps(manifest, indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        fsync_path(self.folder)
        publish(self.folder, self.path)
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
