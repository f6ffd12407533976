# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The C helpers, prebuilt for several CPU levels: the screened matchers, Winograd, patch boxes.

Each source here (``mutual_nn.c``: the bf16-screened mutual-nearest-neighbour matcher,
which needs AVX-512; ``int_mnn.c``: the integer-screened one (int8 or int16), which needs
AVX2 and F16C; ``winograd.c``: the backbone's Winograd convolution transforms, and
``patch_vlad.c``: the IntegralVLAD patch boxes, both for any x86 or ARM CPU) is compiled
when the package is built (``colcon build``, or ``scripts/setup.sh`` for the venv: see
``CMakeLists.txt`` here) once per CPU level it can use, into ``prebuilt/`` beside this
file (``$PATCH_NETVLAD_NATIVE_DIR`` overrides). :func:`library` loads the best build this
CPU runs (:mod:`.variants`: its /proc/cpuinfo flags) with ctypes (no Python headers
needed); no compiler runs on the robot.

A source checkout without a build has no ``prebuilt/`` (and a helper whose source was
edited since the build no longer matches the digest its builds recorded): then the best
level for this CPU is compiled on first use with the system C compiler (``$CC``, else
``cc``; about a second, with the same flags as the build, never ``-march=native``) into
the cache directory, and a warning says so. Without a build and a compiler, on a CPU no build
runs on (``mutual_nn`` without AVX-512), or with ``PATCH_NETVLAD_NATIVE=0``,
:func:`library` returns None and the callers use their plain torch paths (same results,
slower); the reason is in :func:`unavailable_reason`.

Every helper checks its sizes (returning -2 for what it refuses, writing nothing) and
reads and writes only inside its buffers whatever the float values: NaN, Inf, huge or
denormal inputs change results, never memory (``usable.h``: which patch rows the matchers
use). ``test/fuzz/fuzz_native.py`` runs them under AddressSanitizer and UBSan.
"""

import ctypes
import hashlib
import logging
import os
from pathlib import Path
import shutil
import subprocess
import tempfile
import threading
from typing import Optional

from . import variants
from ..config import cache_dir

#: Helper name -> its C source.
SOURCES = {name: Path(__file__).with_name(f'{name}.c') for name in variants.HELPERS}
#: OpenMP: candidates run on parallel threads. Inside a torch process the helper binds to
#: the libgomp torch already loaded (same soname), so it shares torch's thread pool instead
#: of competing with it. A compiler without OpenMP builds a single-threaded helper.
OPENMP = ('-fopenmp',)

_LOG = logging.getLogger(__name__)
_lock = threading.Lock()
_state = {name: {'lib': None, 'tried': False, 'reason': '', 'path': None}
          for name in SOURCES}


def prebuilt_dir() -> Path:
    """Folder of the prebuilt helpers: $PATCH_NETVLAD_NATIVE_DIR, else prebuilt/ here."""
    env = os.environ.get('PATCH_NETVLAD_NATIVE_DIR')
    return Path(env) if env else Path(__file__).with_name('prebuilt')


def _compiler() -> Optional[str]:
    return shutil.which(os.environ.get('CC', 'cc')) or shutil.which('gcc')


def _build(compiler: str, name: str, variant: variants.Variant) -> Path:
    """Compile helper ``name`` for ``variant`` into the cache (a checkout without a build)."""
    source = SOURCES[name]
    flags = (*variants.COMMON_FLAGS, *variant.flags, '-shared', '-fPIC')
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             check=False).stdout
    headers = [h.read_text() for h in sorted(source.parent.glob('*.h'))]  # e.g. vector.h
    key = hashlib.sha256('\0'.join([source.read_text(), *headers, ' '.join(flags + OPENMP),
                                    version]).encode()).hexdigest()[:16]
    target = cache_dir() / 'native' / f'{name}-{variant.name}-{key}.so'
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        for extra in (OPENMP, ()):
            proc = subprocess.run([compiler, *flags, *extra, '-o', str(out), str(source), '-lm'],
                                  capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ': error' in ln]
            raise RuntimeError(f'{compiler} failed: '
                               f'{" ".join(errors[:3]) or proc.stderr.strip()[-500:]}')
        os.replace(out, target)  # atomic: parallel processes may race to build
    return target


def _up_to_date(name: str, folder: Path) -> bool:
    """Whether the prebuilt builds of ``name`` were made from the sources beside this file."""
    recorded = folder / f'{name}.sha256'
    if not (recorded.is_file() and SOURCES[name].is_file()):
        return True  # nothing to compare with: trust the build
    return recorded.read_text().strip() == variants.source_digest(name, SOURCES[name].parent)


def _locate(name: str) -> Path:
    """Return the library file of helper ``name`` for this CPU: prebuilt, else compiled now."""
    flags, arch = variants.cpu_flags(), variants.host_arch()
    options = variants.supported(name, flags, arch)
    if not options:
        raise RuntimeError(f'no build of {SOURCES[name].name} runs here: '
                           f'{variants.missing(name, flags, arch)}')
    folder = prebuilt_dir()
    built = [v.name for v in variants.builds(name, arch)
             if (folder / variants.library_name(name, v.name)).is_file()]
    if built and _up_to_date(name, folder):
        chosen = variants.select(name, flags, arch, built)
        if chosen is None:
            raise RuntimeError(f'none of the prebuilt {name} builds in {folder} '
                               f'({", ".join(built)}) runs on this CPU')
        return folder / variants.library_name(name, chosen.name)
    why = (f'the prebuilt {name} libraries in {folder} were built from another '
           f'{SOURCES[name].name} (edited since)' if built
           else f'no prebuilt {name} library in {folder}')
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError(f'{why} (colcon build, or scripts/setup.sh, builds them) and no C '
                           'compiler found to build it now (set CC, or install gcc)')
    _LOG.warning('%s (colcon build or scripts/setup.sh builds them): compiling %s for %s '
                 'now with %s', why, SOURCES[name].name, options[0].name, compiler)
    errors = []
    for variant in options:  # best first; a compiler too old for a level tries the next
        try:
            return _build(compiler, name, variant)
        except RuntimeError as exc:
            errors.append(f'{variant.name}: {exc}')
    raise RuntimeError(f'building {SOURCES[name].name} failed: {"; ".join(errors)}')


def _declare(lib: ctypes.CDLL, name: str) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    if name == 'winograd':
        lib.pnv_wino_input.argtypes = [p, i64, i64, i64, i64, i64, i64, p]
        lib.pnv_wino_input.restype = ctypes.c_int
        lib.pnv_wino_output.argtypes = [p, p, i32, i32, i64, i64, i64, i64, i64, i64, p]
        lib.pnv_wino_output.restype = ctypes.c_int
        lib.pnv_conv3x3_direct.argtypes = [p, i64, i64, i64, i64, p, p, i64, i32, p]
        lib.pnv_conv3x3_direct.restype = ctypes.c_int
        return lib
    if name == 'patch_vlad':
        lib.pnv_patch_vlad.argtypes = [p, p, p, i64, i64, i64, i64, i64, i64, i64,
                                       ctypes.c_float, p, p]
        lib.pnv_patch_vlad.restype = ctypes.c_int
        lib.pnv_patch_project_cells.argtypes = [p, i64, i64, i64, i64, i64, p, p, p, p]
        lib.pnv_patch_project_cells.restype = ctypes.c_int
        return lib
    if name == 'int_mnn':
        lib.pnv_int_query.argtypes = [p, i64, i64, i32, p, p, p, p, p, p]
        lib.pnv_int_query.restype = ctypes.c_int
        lib.pnv_int_mutual_nn.argtypes = [p, i32, p, i32, p, p, p, p, p, p, i64, i64, i64, i64,
                                          i64, p, p, p]
        lib.pnv_int_mutual_nn.restype = ctypes.c_int
        return lib
    lib.pnv_to_bf16.argtypes = [p, i32, i64, i64, i64, p, p, p]
    lib.pnv_to_bf16.restype = None
    lib.pnv_mutual_nn.argtypes = [p, p, i32, p, p, p, p, p, i64, i64, i64, i64, i64, i64, p, p,
                                  p]
    lib.pnv_mutual_nn.restype = ctypes.c_int
    lib.pnv_mutual_nn_amx.argtypes = [p, i32, p, p, p, p, i64, i64, i64, i64, i64, i64, p, p, p]
    lib.pnv_mutual_nn_amx.restype = ctypes.c_int
    lib.pnv_amx_init.argtypes = []
    lib.pnv_amx_init.restype = ctypes.c_int
    lib.pnv_amx_peak.argtypes = [i64]
    lib.pnv_amx_peak.restype = ctypes.c_double
    return lib


def library(name: str = 'mutual_nn') -> Optional[ctypes.CDLL]:
    """Return the loaded helper ``name``, or None when it cannot run here (module doc)."""
    state = _state[name]
    with _lock:
        if not state['tried']:
            state['tried'] = True
            if os.environ.get('PATCH_NETVLAD_NATIVE', '1') == '0':
                state['reason'] = 'disabled by PATCH_NETVLAD_NATIVE=0'
            else:
                try:
                    path = _locate(name)
                    state['lib'] = _declare(ctypes.CDLL(str(path)), name)
                    state['path'] = path
                except (OSError, RuntimeError) as exc:
                    state['reason'] = str(exc)
        return state['lib']


def library_path(name: str = 'mutual_nn') -> Optional[Path]:
    """Return the file :func:`library` loaded for ``name`` (None when it loaded none)."""
    library(name)
    return _state[name]['path']


def amx() -> bool:
    """Whether the helper's fused AMX screen can run (compiled for AMX, tiles granted)."""
    lib = library()
    state = _state['mutual_nn']
    with _lock:
        if 'amx' not in state:
            state['amx'] = bool(lib is not None and lib.pnv_amx_init())
        return state['amx']


def unavailable_reason(name: str = 'mutual_nn') -> str:
    """Why :func:`library` returned None for ``name`` ('' when available or not tried)."""
    return _state[name]['reason']
