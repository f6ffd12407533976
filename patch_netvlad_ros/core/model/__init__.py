# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The network and what feeds it.

VGG16 backbone (Winograd convolutions on the CPU), NetVLAD and patch descriptors,
checkpoints, the bootstrap without training, and the images it takes.
"""
