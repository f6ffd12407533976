# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Benchmarks, measurements and the authors' harness; not installed.

Run from the repository root: ``python -m benchmarks.bench`` (``make bench``),
``python -m benchmarks.bench_map``, ... Each prints a table and writes JSON.
"""
