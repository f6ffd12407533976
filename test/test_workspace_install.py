# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The ament_cmake install a ROS 2 workspace gets, built here against the PyPI ROS wheels.

colcon is not installable here; what `colcon build` runs for an ament_cmake package is
CMake configure, build and install, which this test runs with the same CMakeLists.txt
into a fresh prefix (with the Python package and executables, unlike the venv set-up),
then checks the installed layout, imports the installed messages in a fresh interpreter
and runs an installed executable far enough to validate its parameters.
"""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
SOURCES = ('CMakeLists.txt', 'package.xml', 'setup.py', 'setup.cfg', 'msg', 'bin', 'launch',
           'config', 'resource', 'patch_netvlad_ros')
NODES = ('camera_batcher', 'descriptor_node', 'localizer_node', 'localize_graph')


@pytest.fixture(scope='module')
def prefix(tmp_path_factory) -> Path:
    """Configure, build and install the package into a temporary prefix."""
    if shutil.which('cmake') is None and not (VENV / 'bin' / 'cmake').exists():
        pytest.skip('cmake is not installed (scripts/setup.sh installs it when missing)')
    tmp = tmp_path_factory.mktemp('ws')
    # A workspace's src/ copy: the venv lives inside this checkout, and CMake refuses to
    # export include paths (the venv's numpy) from inside the source tree.
    source, build, install = tmp / 'src' / 'patch_netvlad_ros', tmp / 'build', tmp / 'install'
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV),
               PATH=f'{VENV / "bin"}{os.pathsep}{os.environ["PATH"]}')
    steps = [
        ['cmake', '-S', str(source), '-B', str(build), '-DBUILD_TESTING=OFF',
         f'-DCMAKE_PREFIX_PATH={VENV}', f'-DCMAKE_INSTALL_PREFIX={install}',
         f'-DPython3_EXECUTABLE={sys.executable}', '-DPython3_FIND_VIRTUALENV=ONLY'],
        ['cmake', '--build', str(build), '-j', str(os.cpu_count() or 1)],
        ['cmake', '--install', str(build)],
    ]
    for step in steps:
        result = subprocess.run(step, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return install


def test_installed_layout(prefix):
    """Executables, launch, config, package.xml, ament index and both Python halves."""
    share = prefix / 'share' / 'patch_netvlad_ros'
    for name in NODES:
        exe = prefix / 'lib' / 'patch_netvlad_ros' / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    assert (share / 'launch' / 'localize.launch.py').is_file()
    assert (share / 'config' / 'localize.yaml').is_file()
    assert (share / 'package.xml').is_file()
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
            / 'patch_netvlad_ros').is_file()
    site = list(prefix.glob('lib/python3*/site-packages/patch_netvlad_ros'))
    assert len(site) == 1, 'the Python package and the generated messages share one folder'
    assert (site[0] / 'nodes' / 'localizer_node.py').is_file()
    assert (site[0] / 'msg' / '_place_descriptors.py').is_file()
    assert list(prefix.glob('lib/libpatch_netvlad_ros__rosidl_typesupport_c.so'))
    # the C helpers' sources and the header they share, built on first use
    native = {p.name for p in (ROOT / 'patch_netvlad_ros' / 'core' / 'native').glob('*.[ch]')}
    assert 'vector.h' in native
    assert native <= {p.name for p in (site[0] / 'core' / 'native').iterdir()}


def test_installed_c_helpers_build(prefix, tmp_path):
    """The portable helpers compile from the installed sources (with their header)."""
    if shutil.which(os.environ.get('CC', 'cc')) is None and shutil.which('gcc') is None:
        pytest.skip('no C compiler here')
    code = ('from patch_netvlad_ros.core import native\n'
            'for name in ("winograd", "patch_vlad"):\n'
            '    print(name, native.library(name) is not None, native.unavailable_reason(name))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=dict(_env(prefix), PATCH_NETVLAD_CACHE=str(tmp_path)), check=True)
    assert out.stdout.split('\n')[:2] == ['winograd True ', 'patch_vlad True ']


def _env(prefix: Path) -> dict:
    site = next(prefix.glob('lib/python3*/site-packages'))
    return dict(os.environ, PYTHONPATH=str(site),
                LD_LIBRARY_PATH=f'{prefix / "lib"}{os.pathsep}'
                + os.environ.get('LD_LIBRARY_PATH', ''),
                AMENT_PREFIX_PATH=f'{prefix}{os.pathsep}{VENV}',
                # The installed copy, not the venv's generated messages, must answer.
                PATCH_NETVLAD_ROS_INTERFACES=str(prefix / 'nowhere'))


def test_installed_messages_round_trip(prefix, tmp_path):
    """A fresh interpreter imports the installed package and serializes its messages."""
    code = (
        'import patch_netvlad_ros, patch_netvlad_ros.msg as m\n'
        'from rclpy.serialization import serialize_message, deserialize_message\n'
        'from ament_index_python.packages import get_package_share_directory as share\n'
        'x = m.PlaceMatch(best_reference_id="r7", confidence=0.25)\n'
        'x.candidates.append(m.MatchCandidate(reference_id="r7", map_index=7))\n'
        'y = deserialize_message(serialize_message(x), m.PlaceMatch)\n'
        'print(patch_netvlad_ros.__file__, m.__file__, share("patch_netvlad_ros"))\n'
        'print(y.best_reference_id, y.confidence, y.candidates[0].map_index)\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=_env(prefix),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    paths, values = result.stdout.strip().splitlines()
    package, messages, share = paths.split()
    assert package.startswith(str(prefix)) and messages.startswith(str(prefix))
    assert share == str(prefix / 'share' / 'patch_netvlad_ros')
    assert values == 'r7 0.25 7'


def test_installed_executable_validates_parameters(prefix, tmp_path):
    """`ros2 run`'s target starts, and a bad parameter stops it with the reason."""
    exe = prefix / 'lib' / 'patch_netvlad_ros' / 'camera_batcher'
    result = subprocess.run([sys.executable, str(exe), '--ros-args', '-p', 'batch_size:=9',
                             '-p', 'buffer_capacity:=4'], cwd=tmp_path, env=_env(prefix),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "'buffer_capacity' = 4: must hold at least one batch" in result.stderr
