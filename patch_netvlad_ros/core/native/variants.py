# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The builds of each C helper for CPU levels, and which one a CPU runs (runtime dispatch).

Each helper is compiled ahead of time (CMakeLists.txt beside this file, run by
``colcon build`` and by ``scripts/setup.sh``) once per instruction-set level it can use,
never for the build machine's own CPU (no ``-march=native``): one install serves a Zen 3
(AVX2) and a Sapphire Rapids (AVX-512, bf16, AMX) alike. At run time :func:`select` picks
the best build whose CPU flags (``/proc/cpuinfo``) are all present.

Pure standard library, no package imports: CMake runs this file as a script
(``python3 variants.py <processor>``) to learn the builds, so the table below is the one
list of levels and flags for both the build and the fallback compile of a source checkout,
and (``--digest``) to record which sources the builds were made from.
"""

from dataclasses import dataclass
import hashlib
from pathlib import Path
import platform
import sys
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

#: Flags of every build: optimised, the C dialect the helpers are written in.
COMMON_FLAGS = ('-O3', '-std=gnu11')

# x86-64 micro-architecture levels (psABI) as /proc/cpuinfo names their features: a build
# for a level may use any instruction of it, so a CPU must have every one ('pni' is SSE3,
# 'abm' LZCNT).
_X86_V2 = ('cx16', 'lahf_lm', 'popcnt', 'pni', 'sse4_1', 'sse4_2', 'ssse3')
_X86_V3 = _X86_V2 + ('avx', 'avx2', 'bmi1', 'bmi2', 'f16c', 'fma', 'abm', 'movbe', 'xsave')
_X86_V4 = _X86_V3 + ('avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl')


@dataclass(frozen=True)
class Variant:
    """One build of a helper: its name (in the file name), compiler flags, CPU needs."""

    name: str
    arch: str                  # 'x86_64' or 'aarch64' (normalised machine name)
    flags: Tuple[str, ...]     # on top of COMMON_FLAGS
    requires: FrozenSet[str]   # /proc/cpuinfo flags (x86) the CPU must all have


VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    # (-Wno-psabi: GCC notes that 32-byte vectors change the ABI of the static helpers)
    Variant('x86-64', 'x86_64', ('-march=x86-64', '-mtune=generic', '-Wno-psabi'),
            frozenset()),
    Variant('x86-64-v3', 'x86_64', ('-march=x86-64-v3', '-mtune=generic'),
            frozenset(_X86_V3)),
    Variant('x86-64-v4', 'x86_64', ('-march=x86-64-v4', '-mtune=generic'),
            frozenset(_X86_V4)),
    # the fused screen of mutual_nn.c: AMX tiles with bf16 (Sapphire Rapids and later)
    Variant('x86-64-v4-amx', 'x86_64',
            ('-march=x86-64-v4', '-mtune=generic', '-mavx512bf16', '-mamx-tile', '-mamx-bf16'),
            frozenset(_X86_V4 + ('avx512_bf16', 'amx_tile', 'amx_bf16'))),
    # every AArch64 CPU has NEON (Advanced SIMD), which the portable helpers use
    Variant('armv8-a', 'aarch64', ('-march=armv8-a',), frozenset()),
)}

#: Helper -> its builds, best first. mutual_nn.c needs AVX-512 (#error without it),
#: int_mnn.c AVX2 + F16C; winograd.c and patch_vlad.c are portable (vector.h).
HELPERS: Dict[str, Tuple[str, ...]] = {
    'mutual_nn': ('x86-64-v4-amx', 'x86-64-v4'),
    'int_mnn': ('x86-64-v3',),
    'winograd': ('x86-64-v4', 'x86-64-v3', 'x86-64', 'armv8-a'),
    'patch_vlad': ('x86-64-v4', 'x86-64-v3', 'x86-64', 'armv8-a'),
}


def normalise_arch(machine: str) -> str:
    """Map platform.machine() / CMAKE_SYSTEM_PROCESSOR spellings to x86_64 or aarch64."""
    machine = machine.lower()
    if machine in ('x86_64', 'amd64', 'x64'):
        return 'x86_64'
    if machine in ('aarch64', 'arm64'):
        return 'aarch64'
    return machine


def builds(helper: str, arch: str) -> List[Variant]:
    """Return the builds of ``helper`` for ``arch``, best first (empty: none for it)."""
    arch = normalise_arch(arch)
    return [VARIANTS[n] for n in HELPERS[helper] if VARIANTS[n].arch == arch]


def library_name(helper: str, variant: str) -> str:
    """Return the file name of one build: ``<helper>-<variant>.so``."""
    return f'{helper}-{variant}.so'


def cpu_flags(cpuinfo: Optional[str] = None) -> FrozenSet[str]:
    """Return the CPU's feature flags: the first ``flags`` line of /proc/cpuinfo (x86).

    Empty where there is none (no /proc, or AArch64, whose builds need no flags).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path('/proc/cpuinfo').read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(':')
        if key.strip() == 'flags':
            return frozenset(value.split())
    return frozenset()


def supported(helper: str, flags: Iterable[str], arch: str) -> List[Variant]:
    """Return the builds of ``helper`` this CPU (``flags``, ``arch``) runs, best first."""
    have = frozenset(flags)
    return [v for v in builds(helper, arch) if v.requires <= have]


def select(helper: str, flags: Iterable[str], arch: str,
           available: Optional[Sequence[str]] = None) -> Optional[Variant]:
    """Return the best build of ``helper`` this CPU runs among ``available`` (None: all)."""
    for variant in supported(helper, flags, arch):
        if available is None or variant.name in available:
            return variant
    return None


def missing(helper: str, flags: Iterable[str], arch: str) -> str:
    """Say why no build of ``helper`` runs on this CPU: the flags its least build lacks."""
    options = builds(helper, arch)
    if not options:
        return f'no build of {helper} for {normalise_arch(arch)} CPUs'
    lacks = sorted(options[-1].requires - frozenset(flags))
    return f'this CPU lacks {", ".join(lacks)} (the {options[-1].name} build needs them)'


def source_digest(helper: str, folder: Path) -> str:
    """Return the SHA-256 of ``helper``'s C source and the headers beside it.

    Each build writes it next to the libraries (``<helper>.sha256``); a source edited since
    (a developer's checkout) no longer matches, and its prebuilt libraries are not used.
    """
    digest = hashlib.sha256()
    for path in [folder / f'{helper}.c', *sorted(folder.glob('*.h'))]:
        digest.update(path.name.encode() + b'\0' + path.read_bytes() + b'\0')
    return digest.hexdigest()


def host_arch() -> str:
    """Return this machine's architecture, normalised."""
    return normalise_arch(platform.machine())


def _cmake(arch: str) -> str:
    """Return the builds for ``arch`` as CMakeLists.txt reads them: helper|variant|flags."""
    lines = []
    for helper in HELPERS:
        for variant in builds(helper, arch):
            flags = ' '.join(COMMON_FLAGS + variant.flags)
            lines.append(f'{helper}|{variant.name}|{flags}')
    return '\n'.join(lines)


if __name__ == '__main__':
    if sys.argv[1:2] == ['--digest']:  # --digest HELPER OUTPUT: write the helper's digest
        Path(sys.argv[3]).write_text(source_digest(sys.argv[2], Path(__file__).parent) + '\n')
    else:                              # [PROCESSOR]: the builds, for CMakeLists.txt
        print(_cmake(sys.argv[1] if len(sys.argv) > 1 else host_arch()))
