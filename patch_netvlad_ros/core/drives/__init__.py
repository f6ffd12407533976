# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Recorded drives.

Bags (read only), image encodings, the image sets shipped with the package,
and timed poses.
"""
