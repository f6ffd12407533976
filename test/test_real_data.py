# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Recall on real images with the bootstrapped model; floors set from measurement.

Measured (speed preset, 320x240, ImageNet VGG16 + k-means + WPCA bootstrapped from the
corridor references, seed 0): global R@1 0.874, R@5 0.982; Patch-NetVLAD reranking of
the top-100 with spatial scoring R@1 0.568, R@5 0.89 (with untrained NetVLAD weights the
spatial rerank does not beat global retrieval on this corridor; with the performance
preset it does: R@1 0.586 -> 0.775, measured offline); confidence ROC AUC 0.878.
Tokyo 24/7 pair among ten KITTI street frames: global rank 1, reranked rank 8 of 11.
"""

import numpy as np
import pytest
import torch

from conftest import TEST_DATA
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.evaluation.evaluation import recall_at_n
from patch_netvlad_ros.core.localization.localizer import Localizer
from patch_netvlad_ros.core.maps.database import Reference
from patch_netvlad_ros.core.maps.extraction import build_reference_map
from patch_netvlad_ros.core.model.checkpoint import load_model
from patch_netvlad_ros.core.model.image import load_image


@pytest.fixture(scope='module')
def corridor_results(corridor_model, corridor_map, corridor_query_descriptors):
    localizer = Localizer(corridor_map, corridor_model)
    g, patches = corridor_query_descriptors
    return [localizer.localize_descriptors(g[i], [p[i] for p in patches])
            for i in range(g.shape[0])]


def test_corridor_recall(corridor_set, corridor_results):
    by_global = [[c.index for c in sorted(r.candidates, key=lambda c: c.global_distance)]
                 for r in corridor_results]
    reranked = [r.retrieval_order for r in corridor_results]
    global_recall = recall_at_n(by_global, corridor_set.positives, (1, 5, 10))
    rerank_recall = recall_at_n(reranked, corridor_set.positives, (1, 5, 10))
    print(f'corridor global {global_recall}, reranked {rerank_recall}')
    assert global_recall[1] >= 0.83 and global_recall[5] >= 0.95
    assert rerank_recall[1] >= 0.50 and rerank_recall[5] >= 0.85
    assert rerank_recall[10] >= 0.93


def test_confidence_separates_right_from_wrong(corridor_set, corridor_results):
    ok = np.array([r.best_index in pos for r, pos in zip(corridor_results,
                                                         corridor_set.positives)])
    conf = np.array([r.confidence for r in corridor_results])
    assert np.all((conf >= 0) & (conf <= 1))
    # ROC AUC as the probability that a right match outranks a wrong one
    right, wrong = conf[ok], conf[~ok]
    auc = ((right[:, None] > wrong[None]).mean() + 0.5 * (right[:, None] == wrong[None]).mean())
    print(f'confidence: right {right.mean():.3f}, wrong {wrong.mean():.3f}, AUC {auc:.3f}')
    assert auc >= 0.8
    assert right.mean() > wrong.mean() + 0.25


def test_tokyo_pair_among_street_distractors(corridor_model):
    # The corridor-bootstrapped weights at the authors' 640x480: the Tokyo database image
    # must be found for its night query among ten KITTI street frames.
    model = load_model(corridor_model.checkpoint_path, get_config('speed'))
    db = [load_image(TEST_DATA / 'tokyo_pair' / 'tokyo_db.png')]
    db += [load_image(p) for p in sorted((TEST_DATA / 'kitti_distractors').glob('*.jpg'))]
    refs = [Reference(id=f'r{i}', x=10.0 * i) for i in range(len(db))]
    ref_map = build_reference_map(model, db, refs)
    result = Localizer(ref_map, model).localize(
        load_image(TEST_DATA / 'tokyo_pair' / 'tokyo_query_640x480.jpg'))
    by_global = [c.index for c in sorted(result.candidates, key=lambda c: c.global_distance)]
    print(f'tokyo: global rank {by_global.index(0) + 1}, '
          f'reranked rank {result.retrieval_order.index(0) + 1}, conf {result.confidence:.3f}')
    # Measured: global rank 1; the speed preset's spatial rerank with corridor (indoor)
    # clusters ranks the day/night pair 8th of 11, and the confidence says so (0.03).
    assert recall_at_n([by_global], [np.array([0])], (1, 5)) == {1: 1.0, 5: 1.0}
    assert recall_at_n([result.retrieval_order], [np.array([0])], (1, 5)) == {1: 0.0, 5: 0.0}
    assert result.reference.id != 'r0'
    assert result.confidence < 0.25
    assert torch.isfinite(torch.tensor(result.confidence))
