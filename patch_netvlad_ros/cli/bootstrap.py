# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-bootstrap: build a Patch-NetVLAD checkpoint (authors' layout) from reference images.

Usage:
  pnv-bootstrap --images DIR --output model.pth.tar      # speed preset, 640 wide
  pnv-bootstrap --images DIR --preset performance --image-size 640x480 --output m.pth.tar
  pnv-bootstrap --convert-only        # only convert/verify the ImageNet VGG16 weights

The network input is 640 pixels wide with the height from the images' aspect ratio
unless --image-size says otherwise; build the map with the same preset and size.
Every argument is checked before an image is read; bad input ends with one 'error:'
line and exit status 2.
"""

import argparse
import sys
from typing import Optional

from .common import (add_model_options, CliParser, config_from_args, end_progress,
                     existing_dir, non_negative_int, output_file, progress_bar, run_main, say)
from ..core.errors import ImageError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm')


def make_parser() -> CliParser:
    """Return the command's argument parser."""
    parser = CliParser(prog='pnv-bootstrap', description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('--convert-only', action='store_true',
                        help='convert and verify the ImageNet VGG16 weights, then exit')
    parser.add_argument('--images', type=existing_dir, help='folder of reference images')
    parser.add_argument('--output', type=output_file, help='checkpoint to write (.pth.tar)')
    parser.add_argument('--seed', type=non_negative_int, default=0,
                        help='random seed (default 0)')
    add_model_options(parser, top_k=False)
    return parser


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.convert_only and (args.images is None or args.output is None):
        parser.error('--images and --output are required (or --convert-only)')
    files = sorted(p for p in args.images.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES) if args.images else []
    if not files and not args.convert_only:
        raise ImageError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {args.images}')
    # torch and OpenCV load once the arguments are known to be good
    from ..core.config import cache_dir
    from ..core.model.backbone import CACHE_NAME, imagenet_encoder_state
    from ..core.model.bootstrap import bootstrap_model
    from ..core.model.checkpoint import save_checkpoint
    from ..core.model.image import load_image
    if args.convert_only:
        imagenet_encoder_state()
        print(f'ImageNet VGG16 weights ready in {cache_dir() / CACHE_NAME}')
        return 0
    images = [load_image(files[0])]
    config = config_from_args(args, images[0].shape[:2], warn=say)
    images += [load_image(f) for f in files[1:]]
    model = bootstrap_model(config, images, seed=args.seed, log=say,
                            progress=progress_bar(len(files), 'encode'))
    save_checkpoint(model, args.output)
    end_progress()
    print(f'wrote {args.output} ({config.preset}, {config.num_pcs} dims, '
          f'{config.image_width}x{config.image_height}, {len(files)} images)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
