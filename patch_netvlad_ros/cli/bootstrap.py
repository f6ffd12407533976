# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-bootstrap: build a Patch-NetVLAD checkpoint (authors' layout) from reference images.

Usage:
  pnv-bootstrap --images DIR --preset speed --output model.pth.tar
  pnv-bootstrap --convert-only        # only convert/verify the ImageNet VGG16 weights
"""

import argparse
from pathlib import Path
import sys
from typing import Optional

from .common import add_model_options, config_from_args, progress_bar, run_main
from ..core.backbone import cache_dir, CACHE_NAME, imagenet_encoder_state
from ..core.bootstrap import bootstrap_model
from ..core.checkpoint import save_checkpoint
from ..core.errors import ImageError
from ..core.image import load_image

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm')


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--convert-only', action='store_true',
                        help='convert and verify the ImageNet VGG16 weights, then exit')
    parser.add_argument('--images', type=Path, help='folder of reference images')
    parser.add_argument('--output', type=Path, help='checkpoint to write (.pth.tar)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    add_model_options(parser, 'performance')
    args = parser.parse_args(argv)
    if args.convert_only:
        imagenet_encoder_state()
        print(f'ImageNet VGG16 weights ready in {cache_dir() / CACHE_NAME}')
        return 0
    if args.images is None or args.output is None:
        parser.error('--images and --output are required (or --convert-only)')
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if args.images.is_dir() else []
    if not files:
        raise ImageError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {args.images}')
    config = config_from_args(args)
    model = bootstrap_model(config, [load_image(f) for f in files], seed=args.seed,
                            log=lambda msg: print(msg, file=sys.stderr),
                            progress=progress_bar(len(files), 'encode'))
    save_checkpoint(model, args.output)
    print(f'wrote {args.output} ({config.preset}, {config.num_pcs} dims, {len(files)} images)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
