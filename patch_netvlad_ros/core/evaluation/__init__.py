# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Evaluation.

Recall@N and ground truth, offline localisation of a whole drive, and the
``evaluate`` report.
"""
