# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The ROS 2 workspace install: `colcon build` of both packages, as the README says.

A copy of this checkout goes into a fresh workspace's src/ with the README's symlink to
its nested interfaces package; colcon (colcon-core, colcon-ros, colcon-cmake from PyPI)
builds patch_netvlad_ros_interfaces (rosidl) and patch_netvlad_ros (ament_cmake_python,
C helpers for each CPU level) against the PyPI ROS wheels of this venv into a fresh
install prefix, and `colcon test` runs pep257 and a pytest of the install. Then, with
install/setup.bash sourced and no compiler (CC=false), the installed descriptor_node
answers an ImageBatch of a real corridor image over DDS from a fresh interpreter, which
also round-trips a PlaceMatch: the installed messages, Python package and prebuilt
helpers at work.
"""

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
from typing import Dict, List

import numpy as np
import pytest

from patch_netvlad_ros.core.model.checkpoint import model_digest
from patch_netvlad_ros.core.model.image import load_image, to_tensor
from patch_netvlad_ros.core.native import variants

pytestmark = [pytest.mark.slow, pytest.mark.ros]

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
NODES = ('camera_batcher', 'descriptor_node', 'localizer_node', 'localize_graph')
#: pytest options that run test_native_dispatch's prebuilt-helpers test alone. The globs
#: leave out every other test module (absolute, since pytest anchors a relative one at the
#: working directory: the build folder); ctest fails if nothing is left to run (exit 5).
PREBUILT_TEST_ONLY = ' '.join(
    ['-k prebuilt_helpers_load'] + [f'--ignore-glob=/*/{name}' for name in (
        'test_[!n]*.py', 'test_n[!a]*.py', 'test_navigation.py', 'test_native_[!d]*.py')])
#: Left out of the workspace copy: build outputs and the venv (as a fresh clone has them).
IGNORE = ('.git', '.venv', 'build', 'install', 'log', 'out', '.pytest_cache', '__pycache__',
          '*.egg-info', 'prebuilt', '*.pyc')


def _colcon() -> str:
    exe = shutil.which('colcon') or str(VENV / 'bin' / 'colcon')
    if not os.access(exe, os.X_OK):
        pytest.skip('colcon is not installed (requirements-ros.txt has it)')
    return exe


def _run(cmd: List[str], env: Dict[str, str], cwd: Path) -> None:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, (f'{" ".join(cmd)}\n{result.stdout[-4000:]}\n'
                                    f'{result.stderr[-4000:]}')


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """A workspace with src/patch_netvlad_ros, built by colcon into install/."""
    colcon = _colcon()
    ws = tmp_path_factory.mktemp('ws')
    shutil.copytree(ROOT, ws / 'src' / 'patch_netvlad_ros', symlinks=True,
                    ignore=shutil.ignore_patterns(*IGNORE))
    # The README's set-up: colcon does not look for packages inside another package.
    (ws / 'src' / 'patch_netvlad_ros_interfaces').symlink_to(
        Path('patch_netvlad_ros') / 'patch_netvlad_ros_interfaces')
    # The wheels are an ament prefix in the venv: what a sourced /opt/ros/<distro> gives.
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
               PATH=f'{VENV / "bin"}{os.pathsep}{os.environ["PATH"]}')
    _run([colcon, 'build', '--event-handlers', 'console_direct-', '--cmake-args',
          f'-DPython3_EXECUTABLE={sys.executable}', '-DPython3_FIND_VIRTUALENV=ONLY'],
         env, ws)
    # colcon test: one linter and, of the suite, the test that loads the install's prebuilt
    # helpers (the whole suite is `make test`'s), collected from its own module only: the
    # whole suite's collection took 15 s of the 2-core CI machine, that module's 2 s.
    _run([colcon, 'test', '--packages-select', 'patch_netvlad_ros', '--event-handlers',
          'console_direct-', '--ctest-args', '-R', 'pep257|pytest'],
         dict(env, PYTEST_ADDOPTS=PREBUILT_TEST_ONLY), ws)
    _run([colcon, 'test-result', '--test-result-base', 'build/patch_netvlad_ros'], env, ws)
    return ws


@pytest.fixture(scope='module')
def sourced(workspace) -> Dict[str, str]:
    """The environment after `source install/setup.bash`, the venv's bin/ first in PATH."""
    out = subprocess.run(['bash', '-c', f'source {workspace / "install" / "setup.bash"} '
                          '&& env -0'], capture_output=True, check=True).stdout
    env = dict(item.split('=', 1) for item in out.decode().split('\0') if '=' in item)
    # no compiler at run time: the helpers must be the prebuilt ones
    env.update(PATH=f'{VENV / "bin"}{os.pathsep}{env["PATH"]}', CC='false')
    return env


def test_both_packages_are_installed(workspace):
    """Messages, Python package, executables, launch, config and one build per CPU level."""
    install = workspace / 'install'
    pkg, msgs = install / 'patch_netvlad_ros', install / 'patch_netvlad_ros_interfaces'
    for name in NODES:
        exe = pkg / 'lib' / 'patch_netvlad_ros' / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    assert (pkg / 'share' / 'patch_netvlad_ros' / 'launch' / 'localize.launch.py').is_file()
    assert (pkg / 'share' / 'patch_netvlad_ros' / 'config' / 'localize.yaml').is_file()
    for prefix, name in ((pkg, 'patch_netvlad_ros'), (msgs, 'patch_netvlad_ros_interfaces')):
        assert (prefix / 'share' / name / 'package.xml').is_file()
        assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
                / name).is_file()
    assert (msgs / 'lib' / 'libpatch_netvlad_ros_interfaces__rosidl_typesupport_c.so').is_file()
    [site] = pkg.glob('lib/python3*/site-packages/patch_netvlad_ros')
    assert (site / 'nodes' / 'localizer_node.py').is_file()
    assert not (site / 'msg').exists(), 'the messages are a package of their own'
    [msg_site] = msgs.glob('lib/python3*/site-packages/patch_netvlad_ros_interfaces/msg')
    assert (msg_site / '_place_match.py').is_file()
    prebuilt = site / 'core' / 'native' / 'prebuilt'
    arch = variants.host_arch()
    expected = {variants.library_name(h, v.name) for h in variants.HELPERS
                for v in variants.builds(h, arch)}
    expected |= {f'{h}.sha256' for h in variants.HELPERS if variants.builds(h, arch)}
    assert {p.name for p in prebuilt.iterdir()} == expected


def test_installed_node_answers_over_dds(workspace, sourced, corridor_model, small_map_dir,
                                         corridor_set, tmp_path):
    """The installed descriptor_node describes a real image for a fresh interpreter."""
    rgb = load_image(corridor_set.queries[20])
    np.save(tmp_path / 'query.npy', rgb)
    install = workspace / 'install'
    ns = f'/install_{os.getpid()}'
    node = subprocess.Popen(
        [str(install / 'patch_netvlad_ros' / 'lib' / 'patch_netvlad_ros' / 'descriptor_node'),
         '--ros-args', '-p', f'map_path:={small_map_dir}', '-r', f'__ns:={ns}'],
        env=sourced, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        probe = subprocess.run(
            [sys.executable, str(ROOT / 'test' / 'install_probe.py'), '--ns', ns,
             '--image', str(tmp_path / 'query.npy'), '--out', str(tmp_path / 'report.json')],
            env=sourced, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        node.send_signal(signal.SIGINT)
        try:
            output, _ = node.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            output, _ = node.communicate()
    assert probe.returncode == 0, probe.stderr + output
    report = json.loads((tmp_path / 'report.json').read_text())
    # what the fresh interpreter imported and loaded: the install, not this checkout
    assert report['package'].startswith(str(install / 'patch_netvlad_ros'))
    assert report['messages'].startswith(str(install / 'patch_netvlad_ros_interfaces'))
    typesupport = [p for p in report['libraries'] if 'patch_netvlad_ros_interfaces__' in p]
    assert typesupport and all(p.startswith(str(install)) for p in typesupport), typesupport
    prebuilt = Path(report['package']).parent / 'core' / 'native' / 'prebuilt'
    for name, (path, reason) in report['native'].items():
        best = variants.select(name, variants.cpu_flags(), variants.host_arch())
        expected = prebuilt / variants.library_name(name, best.name) if best else None
        assert path == str(expected), (name, path, reason)
    assert 'compiling' not in probe.stderr + output
    assert report['round_trip'] == ['map', 'r7', 0.25, True, 'r7', 7]
    # the node's answer: the map's model's descriptor of the image
    assert report['node_found'], output
    assert 'answer' in report, output
    assert report['answer']['stamp'] == 7
    assert report['answer']['digest'] == model_digest(corridor_model)
    expected = corridor_model.extract(to_tensor([rgb], corridor_model.config)).global_desc[0]
    np.testing.assert_allclose(report['answer']['global'], expected.numpy(), atol=1e-4)
    assert node.returncode == 0, output
