# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Command-line tools: real runs on shipped images; bad input exits non-zero, clearly."""

import shutil
import subprocess
import sys

import pytest
import torch

from patch_netvlad_ros.core.checkpoint import load_model
from patch_netvlad_ros.core.config import get_config


def run(*args):
    return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True)


def test_bootstrap_cli_writes_a_loadable_authors_checkpoint(corridor_set, tmp_path):
    folder = tmp_path / 'refs'
    folder.mkdir()
    for path in corridor_set.references[:6]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / 'model.pth.tar'
    result = run('patch_netvlad_ros.cli.bootstrap', '--images', str(folder), '--preset',
                 'storage', '--image-size', '320x240', '--output', str(out))
    assert result.returncode == 0, result.stderr
    assert 'wrote' in result.stdout and 'k-means' in result.stderr
    model = load_model(out, get_config('storage', image_height=240, image_width=320))
    w = model.pca_weight
    assert w.shape == (128, 32768) and torch.isfinite(w).all()


def test_bootstrap_cli_errors_exit_non_zero(tmp_path):
    result = run('patch_netvlad_ros.cli.bootstrap', '--images', str(tmp_path), '--output',
                 str(tmp_path / 'm.pth.tar'))
    assert result.returncode == 2
    assert result.stderr.startswith('error: no images')
    result = run('patch_netvlad_ros.cli.bootstrap', '--images', str(tmp_path), '--output',
                 str(tmp_path / 'm.pth.tar'), '--image-size', '640by480')
    assert result.returncode == 2 and 'image size must look like 640x480' in result.stderr


def test_demo_cli_rejects_bad_mode():
    result = run('patch_netvlad_ros.cli.demo', '--mode', 'fastest')
    assert result.returncode == 2 and "invalid choice: 'fastest'" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the message for no GPU')
def test_bench_on_a_missing_gpu_exits_with_a_clear_error(capsys):
    from patch_netvlad_ros.cli import bench
    with pytest.raises(SystemExit) as exc:
        bench.main(['--device', 'cuda', '--output', '/nonexistent/bench.json'])
    assert exc.value.code == 2
    assert 'no CUDA device is available to torch here' in capsys.readouterr().err


def test_bench_case_that_dies_is_reported_not_waited_for():
    # each case runs in a fresh process; one that exits without a result (here: an
    # unknown kind raises in the worker) must not leave the benchmark waiting forever
    from patch_netvlad_ros.cli import bench
    with pytest.raises(RuntimeError, match=r'nope case ours/speed died \(exit code 1\)'):
        bench.run_case('nope', 'ours', 'speed', 1, 1)


def test_bench_amx_peak_case_runs_in_a_fresh_process():
    # the worker never asked for the tile state itself: the helper must (else SIGILL)
    from patch_netvlad_ros.cli import bench
    from patch_netvlad_ros.core import native
    if not native.amx():
        pytest.skip('no AMX tiles here')
    result = bench.run_case('peak', 'amx', '-', 0, 1)
    assert result['tflops'] > 0
