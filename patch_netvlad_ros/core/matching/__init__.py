# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Second stage: patch matching and the rerank of a candidate list.

Mutual nearest neighbours between patch sets (the float32 leaf
:mod:`.mutual_nn`, the exact bf16 and integer screens with their C helpers)
and the spatial / RANSAC scores that rerank the candidates (:mod:`.rerank`).
"""
