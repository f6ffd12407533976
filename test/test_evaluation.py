# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Recall@N and ground truth by frame tolerance or by distance: hand-computed cases."""

import numpy as np
import pytest

from patch_netvlad_ros.core.evaluation.evaluation import (positives_by_frame, positives_within,
                                                          recall_at_n)


def test_recall_at_n_hand_computed():
    predictions = [[4, 2, 9], [1, 0, 3], [7, 8, 5], [6]]
    positives = [np.array([2]), np.array([1, 3]), np.array([0]), np.array([], int)]
    # query 0 hits at rank 2, query 1 at rank 1, query 2 never, query 3 has no positive
    assert recall_at_n(predictions, positives, (1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 0.5}


def test_positives_by_frame_clips_at_the_ends():
    gt = positives_by_frame(5, 4, 2)
    assert [list(p) for p in gt] == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3], [1, 2, 3], [2, 3]]


def test_positives_within_distance():
    refs = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [0.0, 30.0]])
    queries = np.array([[4.0, 3.0], [15.0, 0.0], [100.0, 100.0]])
    gt = positives_within(queries, refs, 10.0)
    # |(4,3)-(0,0)| = 5, |(4,3)-(10,0)| = sqrt(45) = 6.7; (15,0) is 5 from refs 1 and 2
    assert [list(p) for p in gt] == [[0, 1], [1, 2], []]


def test_recall_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match='2 prediction rows for 1 queries'):
        recall_at_n([[0], [1]], [np.array([0])])
