# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Shared command-line plumbing: options, progress bars, error reporting."""

import argparse
import functools
import sys
from typing import Callable, Optional, Tuple

from ..core.config import get_config, PatchNetVLADConfig, PRESETS
from ..core.errors import PatchNetVLADError


def image_size(text: str) -> Tuple[int, int]:
    """Parse 'WIDTHxHEIGHT' (e.g. 640x480) into (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"image size must look like 640x480 (width x height); got '{text}'") from None
    return h, w


def add_model_options(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """--preset, --image-size and --top-k."""
    parser.add_argument('--preset', choices=sorted(PRESETS), default=default_preset,
                        help=f'Patch-NetVLAD preset (default: {default_preset})')
    parser.add_argument('--image-size', type=image_size, default=None, metavar='WxH',
                        help="resize images to this size (default: the preset's 640x480)")
    parser.add_argument('--top-k', type=int, default=None,
                        help="candidates reranked per query (default: the preset's 100)")


def config_from_args(args: argparse.Namespace) -> PatchNetVLADConfig:
    """Build the configuration that the model options name."""
    overrides = {}
    if args.image_size is not None:
        overrides['image_height'], overrides['image_width'] = args.image_size
    if getattr(args, 'top_k', None) is not None:
        overrides['top_k'] = args.top_k
    return get_config(args.preset, **overrides)


def progress_bar(total: Optional[int], desc: str) -> Callable[[int], None]:
    """Start a tqdm bar on stderr (total None or 0: a counter); return its update callable."""
    from tqdm.auto import tqdm
    bar = tqdm(total=total or None, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    return bar.update


def run_main(body: Callable[[Optional[list]], int]) -> Callable[[Optional[list]], int]:
    """Turn package errors into one 'error: ...' line and exit status 2."""
    @functools.wraps(body)
    def wrapper(argv: Optional[list] = None) -> int:
        try:
            return body(argv)
        except PatchNetVLADError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print('interrupted', file=sys.stderr)
            return 130
    return wrapper
