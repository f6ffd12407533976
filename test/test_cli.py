# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Command-line tools: real runs on shipped images; every argument checked before any work.

A bad argument ends a CLI with one line 'error: argument --x: <what is allowed>; got <v>'
and exit status 2, before it opens a bag or loads a model or a map; errors start on a
line of their own even while a progress bar is showing.
"""

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
from pose_data import KITTI_IMAGES, kitti_z_up, write_folder_drive
import pytest
import torch

from benchmarks import bench, bench_map
from patch_netvlad_ros.cli import bootstrap, build_map, evaluate
from patch_netvlad_ros.cli.common import (config_from_args, DEFAULT_PRESET, network_size,
                                          NetworkSize, resolve_size)
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.drives.datasets import DATA_DIR
from patch_netvlad_ros.core.errors import ConfigError
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.model.checkpoint import load_model

DRIVES = DATA_DIR / 'corridor_drives'
TOPIC = '/camera/image_raw/compressed'


def run(*args):
    return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True)


def one_error_line(err: str) -> str:
    """The only line of err, which must start with 'error: '."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('error: '), err
    return lines[0]


def test_bootstrap_cli_writes_a_loadable_authors_checkpoint(corridor_set, tmp_path):
    folder = tmp_path / 'refs'
    folder.mkdir()
    for path in corridor_set.references[:6]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / 'model.pth.tar'
    result = run('patch_netvlad_ros.cli.bootstrap', '--images', str(folder), '--preset',
                 'storage', '--image-size', '320x240', '--output', str(out))
    assert result.returncode == 0, result.stderr
    assert 'wrote' in result.stdout and '320x240' in result.stdout
    assert 'k-means' in result.stderr
    model = load_model(out, get_config('storage', image_height=240, image_width=320))
    w = model.pca_weight
    assert w.shape == (128, 32768) and torch.isfinite(w).all()


def test_bootstrap_cli_errors_exit_non_zero(tmp_path):
    result = run('patch_netvlad_ros.cli.bootstrap', '--images', str(tmp_path), '--output',
                 str(tmp_path / 'm.pth.tar'))
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith('error: no images')
    result = run('patch_netvlad_ros.cli.bootstrap', '--images', str(tmp_path), '--output',
                 str(tmp_path / 'm.pth.tar'), '--image-size', '640by480')
    assert result.returncode == 2
    assert 'argument --image-size: must look like 640' in one_error_line(result.stderr)


def test_demo_cli_rejects_bad_mode():
    result = run('patch_netvlad_ros.cli.demo', '--mode', 'fastest')
    assert result.returncode == 2 and "invalid choice: 'fastest'" in result.stderr


# ------------------------------------------------------------------ argument checks

@pytest.fixture
def place(tmp_path):
    """Paths for bad-argument runs: a folder that is no bag and no map, a plain file."""
    (tmp_path / 'not_a_bag').mkdir()
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'a_file').write_text('x')
    return {'T': str(tmp_path), 'BAG': str(tmp_path / 'not_a_bag'),
            'DIR': str(tmp_path / 'empty'), 'FILE': str(tmp_path / 'a_file'),
            'OUT': str(tmp_path / 'out'), 'NONE': str(tmp_path / 'missing')}


EVALUATE = ['--map', '{DIR}', '--bag', '{BAG}', '--output', '{OUT}']
BUILD = ['{OUT}', '--bag', '{BAG}']
BOOTSTRAP = ['--images', '{DIR}', '--output', '{OUT}/m.pth.tar']
BENCH = ['--output', '{OUT}/b.json']
BENCH_MAP = ['--output', '{OUT}/b.json', '--parts', 'latency']
POSITIVE = 'must be a finite number > 0'
NON_NEGATIVE = 'must be a finite number >= 0'
COUNT = 'must be a whole number >= 1'
INDEX = 'must be a whole number >= 0'
STRIDE = 'must be a positive multiple of 16 pixels (the backbone stride)'
SIDES = 'sides must be positive multiples of 16 pixels (the backbone stride)'


def bad(cli, base, option, value, allowed):
    """A case: option=value added to base must give 'argument option: allowed; got value'."""
    return (cli, base + [option, value], f"argument {option}: {allowed}; got '{value}'")


BAD_ARGUMENTS = [
    # the reported ones
    bad('evaluate', EVALUATE, '--radius', '-5', POSITIVE),
    bad('build_map', BUILD, '--min-distance', '-1', NON_NEGATIVE),
    bad('build_map', BUILD, '--batch', '0', COUNT),
    # ranges
    bad('evaluate', EVALUATE, '--radius', 'nan', POSITIVE),
    bad('evaluate', EVALUATE, '--rate', '0', POSITIVE),
    bad('evaluate', EVALUATE, '--top-k', '0', COUNT),
    bad('evaluate', EVALUATE, '--top-k', '2.5', COUNT),
    bad('evaluate', EVALUATE, '--frame-tolerance', '-1', INDEX),
    bad('evaluate', EVALUATE, '--max-gap', '-0.5', NON_NEGATIVE),
    bad('build_map', BUILD, '--min-interval', 'inf', NON_NEGATIVE),
    bad('build_map', BUILD, '--min-heading', '200', 'must be 0 to 180 degrees (0 = off)'),
    bad('build_map', BUILD, '--seed', '-1', INDEX),
    bad('build_map', BUILD, '--image-topic', '', 'must be a topic name like /camera/image_raw'),
    bad('bootstrap', BOOTSTRAP, '--seed', '-1', INDEX),
    bad('bench', BENCH, '--batch', '0', COUNT),
    bad('bench', BENCH, '--candidates', '-3', COUNT),
    bad('bench', BENCH, '--repeats', '0', COUNT),
    ('bench_map', BENCH_MAP + ['--sizes', '10', '0'], f"argument --sizes: {COUNT}; got '0'"),
    bad('bench_map', BENCH_MAP, '--queries', '0', COUNT),
    # image sizes
    ('build_map', BUILD + ['--image-size', '650x480'],
     f"argument --image-size: {SIDES}; got '650x480', nearest 656x480"),
    ('build_map', BUILD + ['--image-size', '0'], f"argument --image-size: {SIDES}; got '0'"),
    ('build_map', BUILD + ['--image-size', '640by480'],
     "argument --image-size: must look like 640 (width; height from the frames' aspect "
     "ratio) or 640x480 (width x height); got '640by480'"),
    ('bootstrap', BOOTSTRAP + ['--image-size', '640x479'], "got '640x479', nearest 640x480"),
    ('bench_map', BENCH_MAP + ['--latency-image', '330', '240'],
     f"argument --latency-image: {STRIDE}; got '330', nearest 336"),
    ('bench_map', BENCH_MAP + ['--latency-image', '48', '48'],
     'argument --latency-image: image size 48x48 gives a 3x3 feature map, smaller than '
     'the largest patch'),
    # files and folders
    ('evaluate', ['--map', '{NONE}', '--bag', '{BAG}'],
     'argument --map: {NONE} does not exist'),
    ('evaluate', EVALUATE + ['--checkpoint', '{NONE}'],
     'argument --checkpoint: {NONE} does not exist'),
    ('evaluate', ['--map', '{DIR}', '--bag', '{BAG}', '--output', '{FILE}'],
     'argument --output: {FILE} is a file: give a folder'),
    ('build_map', BUILD + ['--checkpoint', '{DIR}'],
     'argument --checkpoint: {DIR} is a folder, not a file'),
    ('build_map', ['{FILE}', '--bag', '{BAG}'],
     'argument output: {FILE} is a file: give a folder'),
    ('bootstrap', ['--images', '{DIR}', '--output', '{DIR}'],
     'argument --output: {DIR} is a folder: give a file name'),
    ('bootstrap', ['--images', '{NONE}', '--output', '{OUT}/m.pth.tar'],
     'argument --images: {NONE} does not exist'),
    ('bench', ['--output', '{DIR}'], 'argument --output: {DIR} is a folder: give a file name'),
    ('bench_map', BENCH_MAP + ['--workdir', '{FILE}'],
     'argument --workdir: {FILE} is a file: give a folder'),
    # choices and combinations
    ('evaluate', EVALUATE + ['--pose-convention', 'ned'],
     "argument --pose-convention: invalid choice: 'ned'"),
    ('bootstrap', BOOTSTRAP + ['--preset', 'fast'], "argument --preset: invalid choice: 'fast'"),
    ('evaluate', ['--bag', '{BAG}'], 'the following arguments are required: --map'),
    ('evaluate', EVALUATE + ['--images', '{DIR}'],
     'give --bag, or --images together with --poses'),
    ('build_map', BUILD + ['--poses', '{FILE}'], '--poses goes with --images'),
    ('build_map', BUILD + ['--append'], '--append: there is no map at {OUT} to extend'),
    ('build_map', ['{DIR}', '--bag', '{BAG}', '--append', '--preset', 'speed'],
     "--append keeps the map's preset, image size and top-k"),
]


CLIS = {'evaluate': evaluate, 'build_map': build_map, 'bootstrap': bootstrap,
        'bench': bench, 'bench_map': bench_map}


def call(name, argv):
    """Run a CLI's main in this process; return its exit status (SystemExit included)."""
    try:
        return CLIS[name].main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize('name,args,message', BAD_ARGUMENTS)
def test_bad_arguments_are_refused_before_any_work(name, args, message, place, capsys):
    """One error line naming the argument, the value and what is allowed; nothing done.

    The bag is a folder that is no bag and the map an empty folder: had either been
    opened, the error would be about them. No output folder is made.
    """
    status = call(name, [a.format(**place) for a in args])
    out, err = capsys.readouterr()
    assert status == 2
    line = one_error_line(err)
    assert message.format(**place) in line
    assert out == ''
    assert not os.path.exists(place['OUT'])
    assert sorted(os.listdir(place['T'])) == ['a_file', 'empty', 'not_a_bag']
    assert os.listdir(place['DIR']) == []


def test_bad_arguments_import_nothing_heavy(place):
    """pnv-build-map and pnv-bootstrap refuse bad arguments before torch, OpenCV, faiss or
    rosbags are even imported (the reported --min-distance -1 read the whole bag first)."""
    code = ('import sys\n'
            'from patch_netvlad_ros.cli import {cli}\n'
            'status = {cli}.main(sys.argv[1:])\n'
            'heavy = [m for m in ("torch", "cv2", "faiss", "rosbags") if m in sys.modules]\n'
            'print(status, heavy)\n')
    for cli, args in (('build_map', BUILD + ['--min-distance', '-1']),
                      ('bootstrap', BOOTSTRAP + ['--seed', '-1'])):
        result = subprocess.run([sys.executable, '-c', code.format(cli=cli),
                                 *[a.format(**place) for a in args]],
                                capture_output=True, text=True)
        assert result.stdout.strip() == '2 []', result.stdout + result.stderr
        assert 'must be a' in one_error_line(result.stderr)
    assert not os.path.exists(place['OUT'])


def test_reported_negative_radius_is_refused(place):
    """pnv-evaluate --radius -5 used to run and report R@1 0.000."""
    result = run('patch_netvlad_ros.cli.evaluate', '--map', str(DRIVES / 'reference'),
                 '--bag', str(DRIVES / 'query'), '--image-topic', TOPIC, '--radius', '-5',
                 '--output', place['OUT'])
    assert result.returncode == 2 and result.stdout == ''
    assert one_error_line(result.stderr) == (
        "error: argument --radius: must be a finite number > 0; got '-5' "
        '(see pnv-evaluate --help)')
    assert not os.path.exists(place['OUT'])


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the message for no GPU')
def test_bench_on_a_missing_gpu_exits_with_a_clear_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench.main(['--device', 'cuda', '--output', str(tmp_path / 'bench.json')])
    assert exc.value.code == 2
    assert 'no CUDA device is available to torch here' in one_error_line(
        capsys.readouterr().err)


def test_bench_case_that_dies_is_reported_not_waited_for():
    # each case runs in a fresh process; one that exits without a result (here: an
    # unknown kind raises in the worker) must not leave the benchmark waiting forever
    with pytest.raises(RuntimeError, match=r'nope case ours/speed died \(exit code 1\)'):
        bench.run_case('nope', 'ours', 'speed', 1, 1)


@pytest.mark.hardware
def test_bench_amx_peak_case_runs_in_a_fresh_process():
    # the worker never asked for the tile state itself: the helper must (else SIGILL)
    from patch_netvlad_ros.core import native
    if not native.amx():
        pytest.skip('no AMX tiles here')
    result = bench.run_case('peak', 'amx', '-', 0, 1)
    assert result['tflops'] > 0


# ------------------------------------------------------------------ checkpoints

class Payload:
    """Unpickling this creates a file: the loader must refuse to run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickled_checkpoint_is_refused_before_the_drive_is_read(tmp_path, capsys):
    marker = tmp_path / 'this_must_never_exist'
    evil = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': {'pool.centroids': torch.zeros(1)}, 'x': Payload(marker)}, evil)
    out = tmp_path / 'map'
    (tmp_path / 'not_a_bag').mkdir()
    status = build_map.main([str(out), '--bag', str(tmp_path / 'not_a_bag'),
                             '--checkpoint', str(evil)])
    line = one_error_line(capsys.readouterr().err)
    assert status == 2 and not marker.exists() and not out.exists()
    assert line.startswith(f'error: checkpoint {evil} holds pickled Python objects')
    assert "torch.save({'state_dict': model.state_dict()}" in line
    assert 'weights_only' not in line and 'False' not in line


# ------------------------------------------------------------------ image size

def test_image_size_keeps_the_frames_aspect_ratio():
    kitti = (375, 1242)
    assert resolve_size(None, kitti) == (192, 640)                  # default: 640 wide
    assert resolve_size(NetworkSize(320), kitti) == (96, 320)       # 96.6 -> 6 cells
    assert resolve_size(NetworkSize(640), (720, 1280)) == (368, 640)  # 22.5 -> 23 cells
    assert resolve_size(NetworkSize(640), (480, 640)) == (480, 640)
    assert resolve_size(None, None) == (480, 640)                   # no frames: 4:3
    warned = []
    assert resolve_size(network_size('640x480'), kitti, warned.append) == (480, 640)
    assert warned == [
        'warning: --image-size 640x480 (1.33:1) changes the aspect ratio of the 1242x375 '
        'frames (3.31:1): they are stretched vertically by 2.48x; --image-size 640 keeps '
        'their aspect ratio (640x192)']
    assert resolve_size(network_size('640x192'), kitti, warned.append) == (192, 640)
    assert len(warned) == 1                                          # within 10%: quiet


def test_image_size_the_preset_cannot_use_names_the_option():
    class Args:
        preset, image_size, top_k = 'performance', NetworkSize(640), None
    with pytest.raises(ConfigError, match=r'--image-size 640 \(640x64 for these frames\) '
                       'with preset performance: image size 640x64 gives a 40x4 feature'):
        config_from_args(Args, (200, 2000))                          # a 10:1 panorama
    Args.preset = None
    assert config_from_args(Args, (375, 1242)).preset == DEFAULT_PRESET == 'speed'


def test_every_cli_defaults_to_one_preset_and_width():
    """pnv-bootstrap and pnv-build-map (and so the maps pnv-evaluate reads) default to the
    speed preset, 640 pixels wide with the frames' aspect ratio (4:3 frames: 640x480)."""
    assert DEFAULT_PRESET == 'speed'
    for parser, argv in ((bootstrap.make_parser(), ['--images', '.', '--output', 'm.pth']),
                         (build_map.make_parser(), ['out', '--bag', '.'])):
        args = parser.parse_args(argv)
        assert args.preset is None and args.image_size is None
        for frames, size in (((480, 640), (640, 480)), ((375, 1242), (640, 192))):
            config = config_from_args(args, frames)
            assert config.preset == 'speed'
            assert (config.image_width, config.image_height) == size
        assert 'default: speed' in parser.format_help()


def test_explicit_size_that_squashes_kitti_frames_is_warned_about(
        corridor_model, tmp_path, capsys):
    stamps, pos, quats, _, _ = kitti_z_up()
    poses = write_folder_drive(tmp_path / 'kitti', (0, 10), pos, quats, stamps)
    out = tmp_path / 'map'
    status = build_map.main([str(out), '--images', str(tmp_path / 'kitti'), '--poses',
                             str(poses), '--checkpoint', str(corridor_model.checkpoint_path),
                             '--image-size', '320x240'])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    warnings = [line for line in captured.err.split('\n') if 'changes the aspect' in line]
    assert warnings == [
        'warning: --image-size 320x240 (1.33:1) changes the aspect ratio of the 1242x375 '
        'frames (3.31:1): they are stretched vertically by 2.48x; --image-size 320 keeps '
        'their aspect ratio (320x96)']
    cfg = ReferenceMap.load(out).config
    assert (cfg.image_width, cfg.image_height) == (320, 240)
    assert KITTI_IMAGES.is_dir()


# ------------------------------------------------------------------ progress bars

def test_warnings_start_on_their_own_line_mid_progress(corridor_set, corridor_model,
                                                       tmp_path):
    """A real build that warns while its 'read' bar shows, and still builds.

    Images 0-5 are corridor frames, one file is not an image and the last is 8x8 pixels:
    both are skipped with a warning on a line of its own while the drive is read (an image
    too small for the network is refused there, not later when it is described); the
    map holds the six others. (Errors use the same path: test_say_and_end_progress_...)
    """
    folder = tmp_path / 'drive'
    folder.mkdir()
    names = []
    for i, path in enumerate(corridor_set.references[:6]):
        shutil.copy(path, folder / path.name)
        names.append(path.name)
        if i == 2:
            (folder / 'garbage.jpg').write_bytes(b'not a jpeg' * 10)
            names.append('garbage.jpg')
    cv2.imwrite(str(folder / 'tiny.png'), np.full((8, 8, 3), 128, np.uint8))
    names.append('tiny.png')
    (folder / 'poses.csv').write_text('image,stamp,x,y\n' + ''.join(
        f'{n},{i},{i},0\n' for i, n in enumerate(names)))
    out = tmp_path / 'map'
    # bytes: text mode would turn the bars' carriage returns into newlines
    result = subprocess.run([sys.executable, '-m', 'patch_netvlad_ros.cli.build_map', str(out),
                             '--images', str(folder), '--poses', str(folder / 'poses.csv'),
                             '--checkpoint', str(corridor_model.checkpoint_path),
                             '--image-size', '320x240', '--batch', '2', '--no-fit'],
                            capture_output=True)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    lines = stderr.split('\n')
    assert not [line for line in lines if 'error:' in line]
    warned = [line for line in lines if 'warning:' in line]
    assert len(warned) == 2, stderr
    assert warned[0].startswith('warning: frame 3 skipped') and 'garbage.jpg' in warned[0]
    assert warned[1].startswith('warning: frame 7 skipped: tiny.png: image 8x8 is too small')
    assert "'invalid': 2" in stderr and 'read:' in stderr
    assert len(ReferenceMap.load(out)) == 6


def test_say_and_end_progress_on_a_terminal_and_a_pipe(monkeypatch):
    """A pipe gets a newline after a bar; on a terminal the bar line is cleared and reused
    (and the bar drawn again below a message)."""
    import io
    from patch_netvlad_ros.cli import common

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, tty in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, 'stderr', stream)
        update = common.progress_bar(10, 'work')
        update(3)
        common.say('warning: something')
        update(3)
        common.end_progress()
        print('error: done', file=sys.stderr)
        text = stream.getvalue()
        at = text.index('warning: something\n')
        assert text[at - 1] == ('\r' if tty else '\n')
        assert 'work:' in text[:at] and ('work:' in text[at:]) == tty   # tty: redrawn
        assert text[:text.index('error: done')].endswith('\r' if tty else '\n')
    # a bar whose stream was closed (a test's capture) does not break the next error
    closed = io.StringIO()
    monkeypatch.setattr(sys, 'stderr', closed)
    common.progress_bar(None, 'gone')(1)
    closed.close()
    monkeypatch.setattr(sys, 'stderr', io.StringIO())
    common.end_progress()
    common.say('error: next')
    assert sys.stderr.getvalue() == 'error: next\n'
