# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Localising a query against a map.

Retrieval + rerank, fusion of the scores, calibrated confidence and the
sequence filter over odometry.
"""
