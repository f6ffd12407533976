# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Shared command-line plumbing: checked arguments, progress bars, error reporting.

Every CLI checks all its arguments while parsing them, before it reads a bag or loads a
model or a map: a bad value ends the run at once with one line on stderr,
``error: argument --radius: must be a number > 0; got '-5'``, and exit status 2. Errors
raised later (:class:`PatchNetVLADError`) end the same way. Whatever goes to stderr while
a progress bar is showing starts on a line of its own (:func:`say`); an error closes the
bars first.
"""

import argparse
from dataclasses import dataclass
import functools
import math
import os
from pathlib import Path
import sys
from typing import Any, Callable, List, Optional, Tuple

from ..core.config import (BACKBONE_STRIDE, DEFAULT_PRESET, get_config, PatchNetVLADConfig,
                           PRESETS)
from ..core.errors import ConfigError, PatchNetVLADError

#: Network input width of every CLI; the height follows the camera's aspect ratio.
DEFAULT_WIDTH = 640
#: An explicit WIDTHxHEIGHT whose aspect ratio differs from the frames' by more than this
#: fraction is warned about.
ASPECT_TOLERANCE = 0.10


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one 'error: ...' line and exit status 2."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse's hook
        end_progress()
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


# ------------------------------------------------------------------ argument types
# Each raises ArgumentTypeError; argparse names the argument: 'argument --radius: ...'.

def _number(text: str, kind: type, least: float, strict: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be {what}; got {text!r}') from None
    if not math.isfinite(value) or value < least or (strict and value == least):
        raise argparse.ArgumentTypeError(f'must be {what}; got {text!r}')
    return value


def positive_int(text: str) -> int:
    """Parse a whole number >= 1."""
    return _number(text, int, 1, False, 'a whole number >= 1')


def non_negative_int(text: str) -> int:
    """Parse a whole number >= 0."""
    return _number(text, int, 0, False, 'a whole number >= 0')


def positive_float(text: str) -> float:
    """Parse a finite number > 0."""
    return _number(text, float, 0.0, True, 'a finite number > 0')


def non_negative_float(text: str) -> float:
    """Parse a finite number >= 0."""
    return _number(text, float, 0.0, False, 'a finite number >= 0')


def stride_multiple(text: str) -> int:
    """Parse an image side in pixels: a positive multiple of the backbone stride (16)."""
    value = _number(text, int, 1, False, f'a positive multiple of {BACKBONE_STRIDE} pixels')
    if value % BACKBONE_STRIDE:
        near = max(1, round(value / BACKBONE_STRIDE)) * BACKBONE_STRIDE
        raise argparse.ArgumentTypeError(
            f'must be a positive multiple of {BACKBONE_STRIDE} pixels (the backbone stride); '
            f'got {text!r}, nearest {near}')
    return value


def existing_file(text: str) -> Path:
    """Parse the path of a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f'{text} is a folder, not a file' if path.is_dir()
            else f'{text} does not exist: give the path of an existing file')
    return path


def existing_dir(text: str) -> Path:
    """Parse the path of a folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f'{text} is a file, not a folder' if path.exists()
            else f'{text} does not exist: give the path of an existing folder')
    return path


def existing_path(text: str) -> Path:
    """Parse the path of a file or folder that exists (a bag: file or ROS 2 bag folder)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f'{text} does not exist')
    return path


def _creatable(path: Path, text: str) -> None:
    """Raise unless path's nearest existing ancestor is a folder we may write into."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f'cannot create {text}: {parent} is not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f'cannot create {text}: {parent} is not writable')


def output_file(text: str) -> Path:
    """Parse the path of a file to write (its folders are made when missing)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f'{text} is a folder: give a file name')
    if path.exists():
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f'{text} exists and is not writable')
    else:
        _creatable(path, text)
    return path


def output_dir(text: str) -> Path:
    """Parse the path of a folder to write into (made when missing)."""
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f'{text} is a file: give a folder')
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f'folder {text} is not writable')
    else:
        _creatable(path, text)
    return path


def image_size(text: str) -> Tuple[int, int]:
    """Parse 'WIDTHxHEIGHT' (e.g. 640x480) into (height, width), multiples of 16."""
    size = network_size(text)
    if size.height is None:
        raise argparse.ArgumentTypeError(
            f'must look like 640x480 (width x height); got {text!r}')
    return size.height, size.width


@dataclass(frozen=True)
class NetworkSize:
    """Network input size: width, and height or None for "the frames' aspect ratio"."""

    width: int
    height: Optional[int] = None

    def __str__(self) -> str:
        """Return '640x480' or '640'."""
        return f'{self.width}' if self.height is None else f'{self.width}x{self.height}'


def network_size(text: str) -> NetworkSize:
    """Parse 'WIDTH' (height from the frames' aspect) or 'WIDTHxHEIGHT', multiples of 16."""
    parts = text.lower().split('x')
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(
            f"must look like 640 (width; height from the frames' aspect ratio) or 640x480 "
            f'(width x height); got {text!r}')
    bad = [v for v in values if v < BACKBONE_STRIDE or v % BACKBONE_STRIDE]
    if bad:
        near = 'x'.join(str(max(1, round(v / BACKBONE_STRIDE)) * BACKBONE_STRIDE)
                        for v in values)
        raise argparse.ArgumentTypeError(
            f'sides must be positive multiples of {BACKBONE_STRIDE} pixels (the backbone '
            f'stride); got {text!r}, nearest {near}')
    return NetworkSize(*values)


# ------------------------------------------------------------------ model options

def add_model_options(parser: argparse.ArgumentParser, top_k: bool = True) -> None:
    """--preset, --image-size and (unless top_k is False) --top-k."""
    parser.add_argument('--preset', choices=sorted(PRESETS), default=None,
                        help=f'Patch-NetVLAD preset (default: {DEFAULT_PRESET}, as the ROS '
                        'nodes)')
    parser.add_argument('--image-size', type=network_size, default=None, metavar='W[xH]',
                        help='network input size, multiples of 16. W alone (the default is '
                        f"{DEFAULT_WIDTH}) keeps the frames' aspect ratio: height = W x frame "
                        'height / frame width, rounded to a multiple of 16 (1242x375 KITTI '
                        'frames: 640x192). WxH resizes to exactly that, with a warning when it '
                        "changes the frames' aspect ratio by more than "
                        f'{ASPECT_TOLERANCE * 100:.0f}%%')
    if top_k:
        parser.add_argument('--top-k', type=positive_int, default=None,
                            help="candidates reranked per query (default: the preset's 100)")


def resolve_size(spec: Optional[NetworkSize], frame_hw: Optional[Tuple[int, int]],
                 warn: Optional[Callable[[str], None]] = None) -> Tuple[int, int]:
    """Return the network (height, width) for --image-size given the frames' (h, w).

    W alone: height = W * h / w rounded to a multiple of 16 (at least 16); without frames
    (frame_hw None) the height is 3/4 of W. WxH: as given; warn() when its aspect ratio
    differs from the frames' by more than ASPECT_TOLERANCE.
    """
    spec = spec or NetworkSize(DEFAULT_WIDTH)
    width = spec.width
    if spec.height is not None:
        if frame_hw is not None and warn is not None:
            ratio, theirs = width / spec.height, frame_hw[1] / frame_hw[0]
            if abs(ratio / theirs - 1.0) > ASPECT_TOLERANCE:
                kept = resolve_size(NetworkSize(width), frame_hw)
                warn(f'warning: --image-size {spec} ({ratio:.2f}:1) changes the aspect ratio '
                     f'of the {frame_hw[1]}x{frame_hw[0]} frames ({theirs:.2f}:1): they are '
                     f'stretched {"vertically" if ratio < theirs else "horizontally"} by '
                     f'{max(ratio, theirs) / min(ratio, theirs):.2f}x; --image-size {width} '
                     f'keeps their aspect ratio ({width}x{kept[0]})')
        return spec.height, width
    h, w = frame_hw if frame_hw is not None else (3, 4)
    cells = math.floor(width * h / (w * BACKBONE_STRIDE) + 0.5)
    return max(1, cells) * BACKBONE_STRIDE, width


def config_from_args(args: argparse.Namespace,
                     frame_hw: Optional[Tuple[int, int]] = None,
                     warn: Optional[Callable[[str], None]] = None) -> PatchNetVLADConfig:
    """Build the configuration the model options name, for frames of size frame_hw.

    An image size the preset cannot use (smaller than its largest patch) is a ConfigError
    naming --image-size.
    """
    preset = args.preset or DEFAULT_PRESET
    height, width = resolve_size(args.image_size, frame_hw, warn)
    overrides = {'image_height': height, 'image_width': width}
    if getattr(args, 'top_k', None) is not None:
        overrides['top_k'] = args.top_k
    try:
        return get_config(preset, **overrides)
    except ConfigError as exc:
        given = args.image_size or NetworkSize(DEFAULT_WIDTH)
        raise ConfigError(f'--image-size {given} ({width}x{height} for these frames) '
                          f'with preset {preset}: {exc}') from None


# ------------------------------------------------------------------ output on stderr

class _Tracked:
    """A text stream that remembers the last character written to it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.last = '\n'

    def write(self, text: str) -> int:
        if text:
            self.last = text[-1]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def at_line_start(self) -> bool:
        # a terminal shows a cleared bar's '\r' as column 0; a log file or pipe does not
        return self.last == '\n' or (self.last == '\r' and _isatty(self.stream))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


_BARS: List[Tuple[Any, _Tracked]] = []   # open tqdm bars and their streams, newest last
_STREAMS: List[_Tracked] = []  # streams that bars have written to


def _tracked(stream: Any) -> _Tracked:
    for tracked in _STREAMS:
        if tracked.stream is stream:
            return tracked
    tracked = _Tracked(stream)
    _STREAMS.append(tracked)
    return tracked


def progress_bar(total: Optional[int], desc: str) -> Callable[[int], None]:
    """Start a tqdm bar on stderr (total None or 0: a counter); return its update callable.

    One bar at a time: starting one ends the previous stage's bar.
    """
    from tqdm.auto import tqdm
    end_progress()
    stream = _tracked(sys.stderr)
    bar = tqdm(total=total or None, desc=desc, file=stream, leave=False, dynamic_ncols=True)
    _BARS.append((bar, stream))
    return bar.update


def end_progress() -> None:
    """Close the open bars and leave stderr at the start of a line."""
    while _BARS:
        bar, _ = _BARS.pop()
        try:
            bar.close()
        except (OSError, ValueError):  # its stream was closed (a test's capture)
            pass
    for tracked in _STREAMS:
        try:
            if not tracked.at_line_start():
                tracked.write('\n')
                tracked.flush()
        except (OSError, ValueError):  # a stream closed since (a test's capture)
            pass
    _STREAMS.clear()   # at a line start now; plain prints keep it so


def say(text: str) -> None:
    """Print a line on stderr that starts on its own line, even under a progress bar."""
    stream = sys.stderr
    tracked = next((t for t in _STREAMS if t.stream is stream), None)
    if tracked is None:
        print(text, file=stream, flush=True)
        return
    bars = [b for b, s in _BARS if s is tracked] if _isatty(stream) else []
    for bar in bars:
        bar.clear()
    if not tracked.at_line_start():
        tracked.write('\n')
    tracked.write(text + '\n')
    tracked.flush()
    for bar in bars:
        bar.refresh()


def one_line(exc: BaseException) -> str:
    """Return the exception's message on one line."""
    return ' '.join(line.strip() for line in str(exc).splitlines() if line.strip())


def run_main(body: Callable[[Optional[list]], int]) -> Callable[[Optional[list]], int]:
    """Turn package errors into one 'error: ...' line on its own line and exit status 2.

    The wrapped main returns the exit status, for argparse's exits too (--help: 0).
    """
    @functools.wraps(body)
    def wrapper(argv: Optional[list] = None) -> int:
        try:
            status = body(argv)
        except PatchNetVLADError as exc:
            end_progress()
            print(f'error: {one_line(exc)}', file=sys.stderr, flush=True)
            return 2
        except KeyboardInterrupt:
            end_progress()
            print('interrupted', file=sys.stderr)
            return 130
        except SystemExit as exc:   # argparse: --help (0) or a bad argument (2)
            end_progress()
            if exc.code is None or isinstance(exc.code, int):
                return exc.code or 0
            print(f'error: {exc.code}', file=sys.stderr, flush=True)
            return 2
        except BaseException:
            end_progress()     # a traceback starts on its own line too
            raise
        end_progress()
        return status
    return wrapper
