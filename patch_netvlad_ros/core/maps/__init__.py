# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The reference map.

Its folder, manifest and database, the global index (first stage), extraction
into it, building and fitting a map from a drive, and where a map's model comes
from.
"""
