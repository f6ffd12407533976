# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Build the C helpers under AddressSanitizer + UBSan and fuzz them with fuzz_native.c.

Each helper in ``patch_netvlad_ros/core/native`` is compiled for the CPU level whose
prebuilt build the package loads on this CPU (``variants.py``: the same instruction-set
flags) with ``-fsanitize=address,undefined,float-cast-overflow,float-divide-by-zero
-fno-sanitize-recover=all`` and linked into the driver; a helper no build of which runs
on this CPU, or that the compiler cannot build (``mutual_nn.c`` needs AVX-512,
``int_mnn.c`` AVX2), is left out and named in the output. The AMX part of
``mutual_nn.c`` runs only where the kernel grants the tile state. The test suite runs a
few seconds of it (``test/test_native_fuzz.py``); a long run by hand::

    python test/fuzz/fuzz_native.py --seconds 600 --seed 7

Exit status: 0 when every run passed, 1 on a sanitizer report or a failed check (the
report is printed), 77 when the sanitizer runtime is missing.
"""

import argparse
import importlib.util
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
NATIVE = HERE.parent.parent / 'patch_netvlad_ros' / 'core' / 'native'
#: Helper -> the macro that tells the driver it is linked.
HELPERS = {'int_mnn': 'HAVE_INT_MNN', 'mutual_nn': 'HAVE_MUTUAL_NN',
           'patch_vlad': 'HAVE_PATCH_VLAD', 'winograd': 'HAVE_WINOGRAD'}
SANITIZE = ('-fsanitize=address,undefined,float-cast-overflow,float-divide-by-zero',
            '-fno-sanitize-recover=all', '-fno-omit-frame-pointer')
FLAGS = ('-O1', '-g', '-std=gnu11', *SANITIZE)
#: Stop at the first report; leaks are not this harness's concern (the driver frees all).
ENV = {'ASAN_OPTIONS': 'abort_on_error=1:detect_leaks=0',
       'UBSAN_OPTIONS': 'print_stacktrace=1:halt_on_error=1'}


def _load_variants():
    """Import core/native/variants.py (standard library only) without the package."""
    spec = importlib.util.spec_from_file_location('pnv_native_variants', NATIVE / 'variants.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


VARIANTS = _load_variants()


def level_flags(name: str) -> Tuple[Optional[Tuple[str, ...]], str]:
    """Return the instruction-set flags of the build of ``name`` loaded on this CPU.

    (None, why) when no build of it runs here.
    """
    flags, arch = VARIANTS.cpu_flags(), VARIANTS.host_arch()
    best = VARIANTS.select(name, flags, arch)
    return (None, VARIANTS.missing(name, flags, arch)) if best is None else (best.flags, '')


def compiler() -> Optional[str]:
    """Return the C compiler to use ($CC, else cc, else gcc), or None."""
    return shutil.which(os.environ.get('CC', 'cc')) or shutil.which('gcc')


def sanitizer_missing() -> str:
    """Return why the sanitizers cannot run here ('' when they can)."""
    cc = compiler()
    if cc is None:
        return 'no C compiler found'
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / 'probe.c', Path(tmp) / 'probe'
        src.write_text('int main(void) { return 0; }\n')
        proc = subprocess.run([cc, *SANITIZE, '-o', str(exe), str(src)], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            return f'{cc} cannot link the ASan/UBSan runtime: {proc.stderr.strip()[-300:]}'
        run = subprocess.run([str(exe)], capture_output=True, text=True, check=False,
                             env={**os.environ, **ENV})
        if run.returncode != 0:
            return f'a sanitized program does not run here: {run.stderr.strip()[-300:]}'
    return ''


def build(out_dir: Path) -> Tuple[Path, List[str], Dict[str, str]]:
    """Compile the driver and every helper that builds here into out_dir.

    Returns the driver, the helpers linked, and helper -> why it was left out.
    """
    cc = compiler()
    objects, linked, skipped = [], [], {}
    levels = {name: level_flags(name) for name in HELPERS}
    jobs = {name: subprocess.Popen([cc, *FLAGS, *level, '-fPIC', '-c', '-o',
                                    str(out_dir / f'{name}.o'), str(NATIVE / f'{name}.c')],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for name, (level, _) in levels.items() if level is not None}  # side by side
    for name, macro in HELPERS.items():
        if name not in jobs:
            skipped[name] = levels[name][1]
            continue
        _, stderr = jobs[name].communicate()
        if jobs[name].returncode != 0:
            errors = [ln for ln in stderr.splitlines() if 'error' in ln]
            skipped[name] = (errors[0] if errors else stderr.strip()[-200:]).strip()
            continue
        objects.append(str(out_dir / f'{name}.o'))
        linked.append(macro)
    exe = out_dir / 'fuzz_native'
    defines = [f'-D{m}' for m in linked]
    # the driver shares vector.h's register width with the portable helpers: their level
    driver_level = levels['winograd'][0] or ()
    proc = subprocess.run([cc, *FLAGS, *driver_level, *defines, f'-I{NATIVE}', '-o', str(exe),
                           str(HERE / 'fuzz_native.c'), *objects, '-lm'],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f'building the fuzz driver failed:\n{proc.stderr}')
    return exe, [n for n, m in HELPERS.items() if m in linked], skipped


def run(exe: Path, seed: int, seconds: float, iterations: int = 0
        ) -> subprocess.CompletedProcess:
    """Run the driver (sanitizer reports abort it: a non-zero status)."""
    return subprocess.run([str(exe), str(seed), str(seconds), str(iterations)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **ENV})


def main(argv: Optional[List[str]] = None) -> int:
    """Build, then run the driver for --seconds (or --iterations) from --seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=60.0, help='how long to run')
    parser.add_argument('--iterations', type=int, default=0,
                        help='stop after this many inputs (0: only --seconds)')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--keep', type=Path, default=None,
                        help='build into this folder (kept) instead of a temporary one')
    args = parser.parse_args(argv)
    reason = sanitizer_missing()
    if reason:
        print(f'error: {reason}', file=sys.stderr)
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        exe, linked, skipped = build(out_dir)
        print(f'helpers under ASan + UBSan: {", ".join(linked)}')
        for name, why in skipped.items():
            print(f'not built here (not fuzzed): {name}: {why}')
        proc = run(exe, args.seed, args.seconds, args.iterations)
        print(proc.stdout, end='')
        if proc.returncode != 0:
            print(proc.stderr[-20000:], file=sys.stderr)
            print(f'error: the fuzz driver failed with status {proc.returncode} '
                  f'(seed {args.seed})', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
