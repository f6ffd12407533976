# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Crash-safe publishing of a map folder, and what interrupted writers leave beside it.

A map at ``DIR/NAME`` is written into ``DIR/.NAME.tmp-PID`` (PID: the writer's process)
and published by :func:`publish`:
- no map at ``NAME`` yet: one rename;
- a map there: an atomic swap (Linux ``renameat2(RENAME_EXCHANGE)``), after which the
  temporary name holds the old map, which is then removed. ``NAME`` always holds a
  complete map, whenever the process dies;
- where the file system cannot swap (not Linux, some network or FUSE file systems): two
  renames, ``NAME -> .NAME.old-PID`` and ``.NAME.tmp-PID -> NAME``. A process killed
  between them leaves no map at ``NAME`` and both complete maps beside it, which
  :func:`.database.recover_map` puts back.
Folders of writers that died (:func:`leftovers`, process ids of this machine) are removed
by :func:`clean_leftovers`; a live writer's never are.
"""

import ctypes
from dataclasses import dataclass
import errno
import os
from pathlib import Path
import re
import shutil
from typing import Callable, List, Optional, Union

PathLike = Union[str, Path]
Log = Callable[[str], None]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
#: errno values that mean "this system or file system cannot swap": use two renames
_NO_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV)


def temp_folder(path: PathLike, pid: Optional[int] = None) -> Path:
    """``.NAME.tmp-PID`` beside the map folder ``path``: where a writer builds it."""
    path = Path(path)
    return path.with_name(f'.{path.name}.tmp-{os.getpid() if pid is None else pid}')


def backup_folder(path: PathLike, pid: Optional[int] = None) -> Path:
    """``.NAME.old-PID`` beside ``path``: the old map during a two-rename commit."""
    path = Path(path)
    return path.with_name(f'.{path.name}.old-{os.getpid() if pid is None else pid}')


def _libc_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2      # glibc >= 2.28
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _libc_renameat2()


def exchange(a: PathLike, b: PathLike) -> None:
    """Swap two existing paths atomically; OSError (errno in _NO_EXCHANGE) if unsupported."""
    if _RENAMEAT2 is None:
        raise OSError(errno.ENOSYS, 'renameat2 is not available')
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        raise OSError(code, f'renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(code)}')


def fsync_path(path: PathLike) -> None:
    """Flush a file or a folder (its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(folder: Path, path: Path) -> str:
    """Move the finished map ``folder`` to ``path``, replacing a map there; return how.

    Returns 'rename' (no map there before), 'exchange' (atomic swap) or 'two renames'
    (the fallback whose crash window :func:`.database.recover_map` closes).
    """
    how = 'rename'
    if os.path.lexists(path):
        try:
            exchange(folder, path)
            how = 'exchange'
        except FileNotFoundError:
            pass                                # the old map went away meanwhile
        except OSError as exc:
            if exc.errno not in _NO_EXCHANGE:
                raise
            backup = backup_folder(path)
            os.rename(path, backup)
            try:
                os.rename(folder, path)
            except OSError:
                os.rename(backup, path)         # put the old map back
                raise
            how = 'two renames'
            _remove(backup)
    if how == 'rename':
        os.rename(folder, path)
    fsync_path(path.parent)
    if how == 'exchange':
        _remove(folder)                         # the old map, now under the temporary name
        fsync_path(path.parent)
    return how


def _remove(path: Path) -> None:
    """Remove a folder, or the link or file that stood at the map's path."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def _boot_time() -> Optional[float]:
    try:
        with open('/proc/stat') as handle:
            for line in handle:
                if line.startswith('btime '):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def process_start(pid: int) -> Optional[float]:
    """Unix time a process started (Linux /proc, to about a second), None if unknown."""
    boot = _boot_time()
    try:
        with open(f'/proc/{pid}/stat') as handle:
            stat = handle.read()
        ticks = int(stat.rsplit(')', 1)[1].split()[19])      # field 22, starttime
    except (OSError, ValueError, IndexError):
        return None
    return None if boot is None else boot + ticks / os.sysconf('SC_CLK_TCK')


def pid_alive(pid: int, since: Optional[float] = None) -> bool:
    """Whether the process with this id that may have written at time ``since`` still runs.

    Another user's process counts. since: a time the writer was already running (a
    folder's modification time: its writer made it). A process that started later
    only reuses the id (after a reboot, say), so the writer is gone.
    """
    if pid <= 0:
        return True                             # never a writer's: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = process_start(pid) if since is not None else None
    return start is None or start <= since + 2.0      # start is rounded down to ~1 s


@dataclass
class Leftover:
    """A writer's folder beside a map: ``kind`` 'tmp' (a new map) or 'old' (a replaced one)."""

    folder: Path
    kind: str
    pid: int
    alive: bool
    nbytes: int

    def describe(self) -> str:
        """One line: name, size, whose."""
        owner = (f'process {self.pid} still runs' if self.alive
                 else f'its writer, process {self.pid}, is gone')
        what = 'temporary folder' if self.kind == 'tmp' else 'replaced map'
        return f'{self.folder.name} ({what}, {self.nbytes / 1e6:.1f} MB; {owner})'


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def leftovers(path: PathLike) -> List[Leftover]:
    """Writers' folders beside the map folder ``path`` (``.NAME.tmp-PID``, ``.NAME.old-PID``)."""
    path = Path(path)
    pattern = re.compile(rf'\.{re.escape(path.name)}\.(tmp|old)-(\d+)')
    try:
        entries = sorted(path.parent.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            pid = int(match.group(2))
            alive = pid_alive(pid, since=entry.stat().st_mtime)
            out.append(Leftover(entry, match.group(1), pid, alive, _folder_bytes(entry)))
    return out


def clean_leftovers(path: PathLike, log: Optional[Log] = None) -> List[Leftover]:
    """Remove the folders that dead writers left beside ``path``; return those removed.

    Live writers' folders are reported and kept. The caller recovers a missing map first
    (:func:`.database.recover_map`): a dead writer's folder may hold its only copy.
    """
    log = log or (lambda msg: None)
    removed = []
    for left in leftovers(path):
        if left.alive:
            log(f'kept {left.describe()}: a build may be running')
            continue
        log(f'removing {left.describe()}')
        shutil.rmtree(left.folder, ignore_errors=True)
        if not left.folder.exists():
            removed.append(left)
    return removed
