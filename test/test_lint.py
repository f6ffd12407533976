# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ament-style lint: flake8 (99 columns, ament plugins' rules) and pep257 (pydocstyle)."""

from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent
# bin/ holds the `ros2 run` executables: Python without a .py suffix, named one by one.
TARGETS = ['patch_netvlad_ros', 'benchmarks', 'test', 'launch', 'setup.py',
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'bin').glob('*'))]


def run(module, *args):
    return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_flake8():
    result = run('flake8', *[t for t in TARGETS if (ROOT / t).exists()])
    assert result.returncode == 0, 'flake8 found problems:\n' + result.stdout + result.stderr


def test_pep257():
    result = run('pydocstyle', 'patch_netvlad_ros', 'benchmarks', 'launch')
    assert result.returncode == 0, 'pep257 found problems:\n' + result.stdout + result.stderr
