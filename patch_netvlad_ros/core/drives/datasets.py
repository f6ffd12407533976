# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Real image sets shipped with the package (see patch_netvlad_ros/data/ATTRIBUTION.md)."""

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[2] / 'data'


@dataclass
class ImageSet:
    """A reference traversal and a query traversal with per-query positives."""

    name: str
    references: List[Path]
    queries: List[Path]
    positives: List[np.ndarray]


def corridor() -> ImageSet:
    """Corridor (Milford 2013, via VPR-Bench): 111 + 111 images, 160x120.

    Query i matches references i-2 .. i+2 (ground_truth.csv, from the dataset's
    ground_truth_new.npy).
    """
    root = DATA_DIR / 'corridor'
    refs = sorted((root / 'ref').glob('*.jpg'))
    queries = sorted((root / 'query').glob('*.jpg'))
    positives: List[np.ndarray] = [np.zeros(0, np.int64)] * len(queries)
    with open(root / 'ground_truth.csv', newline='') as handle:
        for row in csv.DictReader(handle):
            positives[int(row['query_index'])] = np.array(
                [int(v) for v in row['positive_ref_indices'].split(';') if v], np.int64)
    return ImageSet('corridor', refs, queries, positives)
