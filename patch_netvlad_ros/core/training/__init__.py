# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Weakly supervised NetVLAD training from recorded drives (the authors' recipe, on a CPU).

- :mod:`.supervision`: positives and negatives of each image from the drives' poses;
- :mod:`.features`: the frozen backbone (up to pool4) split from the trained conv5 block,
  and the on-disk cache of its feature maps;
- :mod:`.mining`: the triplet margin loss, the best positive and the hard negatives;
- :mod:`.trainer`: the loop (cache refresh, resumable state), the WPCA refit and the
  checkpoint in the authors' layout.
"""
