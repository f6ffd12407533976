# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The C helpers, each built on first use: the screened matchers, Winograd, patch boxes.

Each source here (``mutual_nn.c``: the bf16-screened mutual-nearest-neighbour matcher,
which needs AVX-512; ``int_mnn.c``: the integer-screened one (int8 or int16), which needs
AVX2 and F16C; ``winograd.c``: the backbone's Winograd convolution transforms, and
``patch_vlad.c``: the IntegralVLAD patch boxes, both for any x86 or ARM CPU) is compiled
with the system C
compiler (``$CC``, else ``cc``) for this CPU (``-O3 -march=native``) into the cache
directory, keyed by the source, the flags, the compiler and the CPU, and loaded with
ctypes (no Python headers needed). Building takes about a second, once per machine.
Without a compiler, or with ``PATCH_NETVLAD_NATIVE=0``, :func:`library` returns None and
the callers use their plain torch paths (same results, slower); the reason is in
:func:`unavailable_reason`.

Every helper checks its sizes (returning -2 for what it refuses, writing nothing) and
reads and writes only inside its buffers whatever the float values: NaN, Inf, huge or
denormal inputs change results, never memory (``usable.h``: which patch rows the matchers
use). ``test/fuzz/fuzz_native.py`` runs them under AddressSanitizer and UBSan.
"""

import ctypes
import hashlib
import os
from pathlib import Path
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import Optional

from ..backbone import cache_dir

#: Helper name -> its C source.
SOURCES = {name: Path(__file__).with_name(f'{name}.c')
           for name in ('mutual_nn', 'int_mnn', 'winograd', 'patch_vlad')}
FLAGS = ('-O3', '-march=native', '-shared', '-fPIC', '-std=gnu11')
#: OpenMP: candidates run on parallel threads. Inside a torch process the helper binds to
#: the libgomp torch already loaded (same soname), so it shares torch's thread pool instead
#: of competing with it. A compiler without OpenMP builds a single-threaded helper.
OPENMP = ('-fopenmp',)

_lock = threading.Lock()
_state = {name: {'lib': None, 'tried': False, 'reason': ''} for name in SOURCES}


def _cpu_id() -> str:
    """CPU model and flags (a binary built with -march=native runs only on such CPUs)."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(('model name', 'flags'))]
    return '\n'.join(sorted(set(keep)))


def _compiler() -> Optional[str]:
    return shutil.which(os.environ.get('CC', 'cc')) or shutil.which('gcc')


def _build(compiler: str, name: str) -> Path:
    source = SOURCES[name]
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             check=False).stdout
    headers = [h.read_text() for h in sorted(source.parent.glob('*.h'))]  # e.g. vector.h
    key = hashlib.sha256('\0'.join([source.read_text(), *headers, ' '.join(FLAGS + OPENMP),
                                    version, _cpu_id()]).encode()).hexdigest()[:16]
    target = cache_dir() / 'native' / f'{name}-{key}.so'
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        for extra in (OPENMP, ()):
            proc = subprocess.run([compiler, *FLAGS, *extra, '-o', str(out), str(source), '-lm'],
                                  capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ': error' in ln]
            raise RuntimeError(f'{compiler} failed: '
                               f'{" ".join(errors[:3]) or proc.stderr.strip()[-500:]}')
        os.replace(out, target)  # atomic: parallel processes may race to build
    return target


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
    """Return the loaded helper ``name``, or None when it cannot be built here (module doc)."""
    state = _state[name]
    with _lock:
        if not state['tried']:
            state['tried'] = True
            if os.environ.get('PATCH_NETVLAD_NATIVE', '1') == '0':
                state['reason'] = 'disabled by PATCH_NETVLAD_NATIVE=0'
            elif (compiler := _compiler()) is None:
                state['reason'] = 'no C compiler found (set CC, or install gcc)'
            else:
                try:
                    state['lib'] = _declare(ctypes.CDLL(str(_build(compiler, name))), name)
                except (OSError, RuntimeError) as exc:
                    state['reason'] = f'building {SOURCES[name].name} failed: {exc}'
        return state['lib']


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
