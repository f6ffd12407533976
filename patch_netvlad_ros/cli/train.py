# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""pnv-train: train NetVLAD on recorded drives, weakly supervised by their poses.

    pnv-train out/train --bag drive.mcap --image-topic /camera/image_raw \
        --pose-topic /odom --epochs 10
    pnv-train out/train --image-topic /cam --pose-topic /odom --bag a.mcap --bag b.bag \
        --images DIR --poses poses.csv --pos-radius 5 --neg-radius 15   # three drives
    pnv-train out/train ... --resume                              # after an interruption

Drives are named as pnv-build-map takes them; each --bag or --images starts a drive, the
drive options after it are that drive's, and those before the first drive apply to all.
Images within --pos-radius metres of an image (of another drive, when there are several)
are its potential positives, images farther than --neg-radius its negatives. The triplet
margin loss trains conv5 and NetVLAD on pool4 maps cached once per image (--feature-cache),
with hard negatives mined from descriptors refreshed every --refresh-every steps; then the
whitened PCA is fitted again. OUTPUT gets model.pth.tar (authors' layout: pnv-build-map
--checkpoint takes it), training.json and state.pt (what --resume continues from). The
same command runs on a GPU (--device cuda); seeded runs on a CPU repeat bit for bit.
Every argument is checked before a drive is read; bad input ends with one 'error:' line
and exit status 2.
"""

import argparse
import math
from pathlib import Path
import re
import sys
from typing import List, Optional, Sequence, Tuple

from .build_map import (add_drive_options, check_drive_args, heading_deg, read_drive,
                        source_image_shape)
from .common import (add_model_options, CliParser, config_from_args, DEFAULT_PRESET,
                     end_progress, non_negative_float, non_negative_int, output_dir,
                     positive_float, positive_int, progress_bar, run_main, say)
from ..core.errors import ConfigError
from ..core.training.options import OPTIMIZERS, STATE_FILE, TrainOptions

#: Options that start a new drive.
SOURCES = ('--bag', '--images')


def device_name(text: str) -> str:
    """Parse --device: auto, cpu, cuda or cuda:N (availability is checked with torch)."""
    if not re.fullmatch(r'auto|cpu|cuda(:\d+)?', text):
        raise argparse.ArgumentTypeError(f'must be auto, cpu, cuda or cuda:N; got {text!r}')
    return text


def momentum(text: str) -> float:
    """Parse --momentum: a number in [0, 1)."""
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f'must be in [0, 1); got {text!r}')
    return value


def decay_factor(text: str) -> float:
    """Parse --lr-gamma: a number in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f'must be in (0, 1]; got {text!r}')
    return value


def _drive_parser() -> CliParser:
    parser = CliParser(prog='pnv-train', add_help=False, allow_abbrev=False)
    add_drive_options(parser, 'training')
    return parser


def split_drives(argv: Sequence[str]) -> Tuple[List[str], List[List[str]]]:
    """Split argv into the other options and one argument list per drive.

    Each --bag / --images starts a drive; the drive options that follow belong to it, and
    those before the first drive are given to every drive (shared topics).
    """
    options = {s for a in _drive_parser()._actions for s in a.option_strings}
    rest: List[str] = []
    shared: List[str] = []
    drives: List[List[str]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.split('=', 1)[0]
        if name not in options:
            rest.append(token)
            i += 1
            continue
        pair = [token] if '=' in token else list(argv[i:i + 2])
        i += len(pair)
        if name in SOURCES:
            drives.append(list(shared))
        (drives[-1] if drives else shared).extend(pair)
    if shared and not drives:
        drives.append(shared)
    return rest, drives


def parse_drives(parser: CliParser, drives: List[List[str]]) -> List[argparse.Namespace]:
    """One namespace per drive, each checked as pnv-build-map checks its drive."""
    if not drives:
        parser.error('give at least one drive: --bag (with --image-topic and --pose-topic) '
                     'or --images with --poses')
    out = []
    for args in drives:
        drive_parser = _drive_parser()
        ns = drive_parser.parse_args(args)
        check_drive_args(drive_parser, ns)
        out.append(ns)
    return out


def make_parser() -> CliParser:
    """Return the parser (drive options listed for --help; see split_drives)."""
    parser = CliParser(prog='pnv-train', description=__doc__.splitlines()[0],
                       allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('output', type=output_dir,
                        help='folder for the model, report and training state')
    add_drive_options(parser, 'training (repeatable)')
    add_model_options(parser, top_k=False)
    parser.add_argument('--checkpoint', type=Path, help="start from this model (authors' "
                        'layout); default: ImageNet VGG16 + k-means on the drives')
    d = TrainOptions()
    sup = parser.add_argument_group("supervision and mining (defaults: the authors')")
    sup.add_argument('--pos-radius', type=positive_float, default=d.pos_radius,
                     help=f'metres: potential positives within (default {d.pos_radius:g})')
    sup.add_argument('--neg-radius', type=positive_float, default=d.neg_radius,
                     help=f'metres: negatives beyond (default {d.neg_radius:g})')
    sup.add_argument('--margin', type=positive_float, default=d.margin,
                     help="triplet margin as in the authors' train.ini; the loss uses its "
                     f'square root, a margin on distances (default {d.margin:g})')
    sup.add_argument('--negatives', type=positive_int, default=d.num_negatives,
                     help=f'hard negatives per query (default {d.num_negatives})')
    sup.add_argument('--refresh-every', type=positive_int, default=d.refresh_every,
                     help=f'steps between mining-cache refreshes (default {d.refresh_every})')
    sup.add_argument('--cache-negatives', type=positive_int, default=d.cache_negatives,
                     help=f'random images described per refresh (default {d.cache_negatives})')
    sup.add_argument('--augment', type=non_negative_int, default=d.augment,
                     help='augmented copies of the drives (warped, re-exposed views), each '
                     f'trained as another drive (default {d.augment}: none)')
    opt = parser.add_argument_group('optimisation')
    opt.add_argument('--epochs', type=positive_int, default=d.epochs,
                     help=f'(default {d.epochs})')
    opt.add_argument('--batch-size', type=positive_int, default=d.batch_size,
                     help=f'queries per step (default {d.batch_size})')
    opt.add_argument('--optimizer', choices=OPTIMIZERS, default=d.optimizer,
                     help=f'(default {d.optimizer})')
    opt.add_argument('--lr', type=positive_float, default=d.lr, help=f'(default {d.lr:g})')
    opt.add_argument('--momentum', type=momentum, default=d.momentum,
                     help=f'SGD momentum, below 1 (default {d.momentum:g})')
    opt.add_argument('--weight-decay', type=non_negative_float, default=d.weight_decay,
                     help=f'(default {d.weight_decay:g})')
    opt.add_argument('--lr-step', type=positive_int, default=d.lr_step,
                     help=f'epochs between learning-rate decays (default {d.lr_step})')
    opt.add_argument('--lr-gamma', type=decay_factor, default=d.lr_gamma,
                     help=f'learning-rate decay factor, at most 1 (default {d.lr_gamma:g})')
    opt.add_argument('--pca-samples', type=positive_int, default=None,
                     help='VLAD vectors the final whitened PCA is fitted on (default '
                     'max(2 x PCA dims, 8192))')
    opt.add_argument('--seed', type=non_negative_int, default=d.seed,
                     help=f'(default {d.seed})')
    run = parser.add_argument_group('running')
    run.add_argument('--device', type=device_name, default='auto',
                     help='auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N '
                     '(default auto)')
    run.add_argument('--feature-cache', type=output_dir, default=None,
                     help='folder of cached pool4 maps (default: training_features in the '
                     'model cache, ~/.cache/patch_netvlad_ros)')
    run.add_argument('--resume', action='store_true',
                     help=f'continue the run in OUTPUT from its {STATE_FILE}')
    key = parser.add_argument_group('keyframes (relative to the last keyframe; 0 = off)')
    key.add_argument('--min-distance', type=non_negative_float, default=0.0,
                     help='metres travelled')
    key.add_argument('--min-heading', type=heading_deg, default=0.0,
                     help='degrees turned about the up axis (0 to 180)')
    key.add_argument('--min-interval', type=non_negative_float, default=0.0,
                     help='seconds elapsed')
    return parser


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """Return the training options, validated (ConfigError names a bad one)."""
    return TrainOptions(
        epochs=args.epochs, batch_size=args.batch_size, num_negatives=args.negatives,
        margin=args.margin, pos_radius=args.pos_radius, neg_radius=args.neg_radius,
        refresh_every=args.refresh_every, cache_negatives=args.cache_negatives,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
        pca_samples=args.pca_samples, augment=args.augment, seed=args.seed)


def check_output(output: Path, resume: bool) -> None:
    """Refuse a new run in a folder with a state, and --resume without one."""
    state = output / STATE_FILE
    if resume and not state.is_file():
        raise ConfigError(f'--resume: {output} holds no {STATE_FILE} to continue from')
    if not resume and state.exists():
        raise ConfigError(f'{output} already holds a training run ({STATE_FILE}): add '
                          '--resume to continue it, or give another folder')


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser()
    rest, drive_argv = split_drives(argv)
    args = parser.parse_args(rest)
    drive_args = parse_drives(parser, drive_argv)
    options = options_from_args(args)
    from ..core.config import get_config
    num_pcs = get_config(args.preset or DEFAULT_PRESET).num_pcs
    if options.pca_samples is not None and options.pca_samples <= num_pcs:
        parser.error(f'argument --pca-samples: must exceed the {num_pcs} PCA dimensions of '
                     f'the preset; got {options.pca_samples}')
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f'argument --checkpoint: {args.checkpoint} does not exist')
    check_output(args.output, args.resume)
    # every argument is valid: now torch, the checkpoint (mapped), one frame, the drives
    from ..core.model.checkpoint import check_checkpoint
    from ..core.drives.drives import KeyframeRule
    from ..core.training.trainer import resolve_device, train_from_drives
    device = resolve_device(args.device)
    if args.checkpoint:
        check_checkpoint(args.checkpoint, get_config(args.preset or DEFAULT_PRESET))
    config = config_from_args(args, source_image_shape(drive_args[0]), warn=say)
    rule = KeyframeRule(args.min_distance, math.radians(args.min_heading), args.min_interval)
    size = (config.image_height, config.image_width)
    drives = []
    for i, ns in enumerate(drive_args):
        drive = read_drive(ns, size, rule, desc=f'read drive {i + 1}', hold_images=False)
        say(f'{drive.name}: {drive.summary()}; network input {size[1]}x{size[0]}')
        drives.append(drive)
    result = train_from_drives(drives, args.output, config, options, args.checkpoint, device,
                               args.feature_cache, args.resume, log=say,
                               progress=lambda total, desc: progress_bar(total, desc))
    end_progress()
    ran = result.epochs[result.resumed_from:]
    per_epoch = (f'{sum(r.seconds for r in ran) / len(ran):.1f} s per epoch on {device}'
                 if ran else 'no epoch left to run')
    last = result.epochs[-1].mined_loss if result.epochs else result.initial_loss
    print(f'wrote {result.checkpoint} (digest {result.digest[:16]}): {len(result.epochs)} '
          f'epochs, mined loss {result.initial_loss:.4f} -> {last:.4f}, {per_epoch}; '
          f'WPCA fitted on {result.pca_samples} VLADs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
