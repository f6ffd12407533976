# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Which prebuilt C helper each CPU runs, and the fallbacks when there is none.

The selection is checked against the /proc/cpuinfo flags of CPUs this machine is not
(Zen 3, Skylake-SP, Zen 4, Sandy Bridge, an AArch64 board): flag sets written here, the
only way to test a dispatch for hardware that cannot be had. The loading itself runs
for real: the prebuilt libraries of this checkout (scripts/setup.sh builds them) in fresh
interpreters without a compiler, and the compile-on-first-use fallback of a source
checkout without a build or with an edited source.
"""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from patch_netvlad_ros.core import native
from patch_netvlad_ros.core.native import variants

_V2 = 'cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3'
_V3 = 'avx avx2 bmi1 bmi2 f16c fma abm movbe xsave'
_V4 = 'avx512f avx512bw avx512cd avx512dq avx512vl'
_COMMON = ('fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat clflush mmx fxsr '
           'sse sse2')
#: CPU -> its flags (the subset of the real flag lines that the levels look at, plus noise).
CPUS = {
    'zen3': f'{_COMMON} {_V2} {_V3} aes sha_ni vaes vpclmulqdq clzero rdpru',
    'skylake-sp': f'{_COMMON} {_V2} {_V3} {_V4} clwb avx512_vnni',
    'zen4': f'{_COMMON} {_V2} {_V3} {_V4} avx512_bf16 avx512vbmi avx512_vnni',
    'sapphire-rapids': f'{_COMMON} {_V2} {_V3} {_V4} avx512_bf16 avx512_fp16 amx_bf16 '
                       'amx_tile amx_int8',
    'sandy-bridge': f'{_COMMON} {_V2} avx xsave',
    # a v3 CPU whose hypervisor hides MOVBE: no v3 build may run (the compiler may use it)
    'v3-without-movbe': f'{_COMMON} {_V2} {_V3}'.replace(' movbe', ''),
    'aarch64': '',
}
ARCH = {'aarch64': 'aarch64'}
#: CPU -> helper -> the build it must run (None: none runs there).
EXPECTED = {
    'zen3': {'mutual_nn': None, 'int_mnn': 'x86-64-v3', 'winograd': 'x86-64-v3',
             'patch_vlad': 'x86-64-v3'},
    'skylake-sp': {'mutual_nn': 'x86-64-v4', 'int_mnn': 'x86-64-v3', 'winograd': 'x86-64-v4',
                   'patch_vlad': 'x86-64-v4'},
    'zen4': {'mutual_nn': 'x86-64-v4', 'int_mnn': 'x86-64-v3', 'winograd': 'x86-64-v4',
             'patch_vlad': 'x86-64-v4'},
    'sapphire-rapids': {'mutual_nn': 'x86-64-v4-amx', 'int_mnn': 'x86-64-v3',
                        'winograd': 'x86-64-v4', 'patch_vlad': 'x86-64-v4'},
    'sandy-bridge': {'mutual_nn': None, 'int_mnn': None, 'winograd': 'x86-64',
                     'patch_vlad': 'x86-64'},
    'v3-without-movbe': {'mutual_nn': None, 'int_mnn': None, 'winograd': 'x86-64',
                         'patch_vlad': 'x86-64'},
    'aarch64': {'mutual_nn': None, 'int_mnn': None, 'winograd': 'armv8-a',
                'patch_vlad': 'armv8-a'},
}
NATIVE_DIR = Path(native.__file__).parent


@pytest.mark.parametrize('cpu', sorted(CPUS))
@pytest.mark.parametrize('helper', sorted(variants.HELPERS))
def test_each_cpu_runs_its_best_build(cpu, helper):
    flags = CPUS[cpu].split()
    chosen = variants.select(helper, flags, ARCH.get(cpu, 'x86_64'))
    assert (chosen.name if chosen else None) == EXPECTED[cpu][helper]


def test_a_build_missing_from_the_install_falls_to_the_next():
    flags = CPUS['sapphire-rapids'].split()
    # e.g. a compiler without AMX support built only the AVX-512 matcher
    assert variants.select('mutual_nn', flags, 'x86_64', ['x86-64-v4']).name == 'x86-64-v4'
    assert variants.select('winograd', flags, 'amd64', ['x86-64', 'x86-64-v3']).name \
        == 'x86-64-v3'
    assert variants.select('mutual_nn', flags, 'x86_64', []) is None


def test_the_reason_names_the_missing_flags():
    reason = variants.missing('mutual_nn', CPUS['zen3'].split(), 'x86_64')
    assert reason == ('this CPU lacks avx512bw, avx512cd, avx512dq, avx512f, avx512vl '
                      '(the x86-64-v4 build needs them)')
    assert variants.missing('int_mnn', [], 'arm64') == 'no build of int_mnn for aarch64 CPUs'


def test_cpu_flags_come_from_the_flags_line():
    text = ('processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma\n'
            'bugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: fpu avx2 fma\n')
    assert variants.cpu_flags(text) == {'fpu', 'avx2', 'fma'}
    assert variants.cpu_flags('processor : 0\nFeatures : fp asimd\n') == frozenset()


def test_build_list_for_cmake():
    """CMakeLists.txt runs variants.py; each line is helper|level|flags, never native."""
    def lines(arch):
        out = subprocess.run([sys.executable, str(NATIVE_DIR / 'variants.py'), arch],
                             capture_output=True, text=True, check=True).stdout
        return [line.split('|') for line in out.splitlines()]

    x86 = lines('x86_64')
    assert [(h, v) for h, v, _ in x86] == [
        (h, v.name) for h in variants.HELPERS for v in variants.builds(h, 'x86_64')]
    assert len(x86) == 9
    assert all(f.startswith('-O3 -std=gnu11 -march=x86-64') for _, _, f in x86)
    assert ['-mamx-tile' in f for h, v, f in x86 if h == 'mutual_nn'] == [True, False]
    assert [(h, v) for h, v, _ in lines('aarch64')] == [
        ('winograd', 'armv8-a'), ('patch_vlad', 'armv8-a')]
    assert not any('native' in f for _, _, f in x86 + lines('aarch64'))


def _prebuilt() -> Path:
    folder = native.prebuilt_dir()
    if not list(folder.glob('*.so')):
        pytest.skip(f'no prebuilt helpers in {folder} (scripts/setup.sh or colcon build)')
    return folder


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


LOAD_ALL = ('from patch_netvlad_ros.core import native\n'
            'for name in native.SOURCES:\n'
            '    print(name, native.library_path(name), native.unavailable_reason(name))\n')


def test_prebuilt_helpers_load_without_a_compiler(tmp_path):
    """The best prebuilt build for this CPU loads with no compiler on the PATH or in CC."""
    folder = _prebuilt()
    for helper in variants.HELPERS:
        if (folder / f'{helper}.sha256').is_file():  # CMake's digest equals the package's
            assert (folder / f'{helper}.sha256').read_text().strip() \
                == variants.source_digest(helper, NATIVE_DIR)
    out = _run(LOAD_ALL, CC='false', PATH=str(tmp_path), PATCH_NETVLAD_CACHE=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert 'compiling' not in out.stderr
    flags, arch = variants.cpu_flags(), variants.host_arch()
    for line in out.stdout.splitlines():
        name, path, *reason = line.split(' ', 2)
        best = variants.select(name, flags, arch)
        if best is None:
            assert path == 'None' and reason[0].startswith(f'no build of {name}.c runs here')
        else:
            assert path == str(folder / variants.library_name(name, best.name)), line
    assert not (tmp_path / 'native').exists()  # nothing compiled into the cache


def test_source_checkout_without_a_build_compiles_on_first_use(tmp_path):
    """No prebuilt/: the best level is compiled into the cache, with a warning."""
    if native._compiler() is None:
        pytest.skip('no C compiler here')
    out = _run(LOAD_ALL, PATCH_NETVLAD_NATIVE_DIR=str(tmp_path / 'no-build'),
               PATCH_NETVLAD_CACHE=str(tmp_path / 'cache'))
    assert out.returncode == 0, out.stderr
    best = variants.select('winograd', variants.cpu_flags(), variants.host_arch())
    paths = dict(line.split(' ')[:2] for line in out.stdout.splitlines())
    assert Path(paths['winograd']).parent == tmp_path / 'cache' / 'native'
    assert Path(paths['winograd']).name.startswith(f'winograd-{best.name}-')
    assert (f'no prebuilt winograd library in {tmp_path / "no-build"} (colcon build or '
            f'scripts/setup.sh builds them): compiling winograd.c for {best.name} now') \
        in out.stderr


def test_edited_source_is_not_served_a_stale_build(tmp_path):
    """A prebuilt/ made from another source is skipped for a fresh compile."""
    if native._compiler() is None:
        pytest.skip('no C compiler here')
    stale = tmp_path / 'prebuilt'
    shutil.copytree(_prebuilt(), stale)
    (stale / 'patch_vlad.sha256').write_text('0' * 64 + '\n')
    out = _run(LOAD_ALL, PATCH_NETVLAD_NATIVE_DIR=str(stale),
               PATCH_NETVLAD_CACHE=str(tmp_path / 'cache'))
    assert out.returncode == 0, out.stderr
    paths = dict(line.split(' ')[:2] for line in out.stdout.splitlines())
    assert Path(paths['patch_vlad']).parent == tmp_path / 'cache' / 'native'
    assert Path(paths['winograd']).parent == stale  # its digest still matches
    assert 'were built from another patch_vlad.c (edited since)' in out.stderr
