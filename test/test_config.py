# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Presets equal the authors' configs; fields override one by one."""

import configparser
from pathlib import Path

import pytest

from patch_netvlad_ros.core.config import get_config, PRESETS


def authors_ini(name):
    import patchnetvlad
    config = configparser.ConfigParser()
    config.read(Path(patchnetvlad.__file__).parent / 'configs' / f'{name}.ini')
    return config


@pytest.mark.parametrize('name', ['performance', 'speed', 'storage'])
def test_presets_equal_the_authors_ini_files(name):
    ini = authors_ini(name)
    ours = PRESETS[name]
    g, m, e = ini['global_params'], ini['feature_match'], ini['feature_extract']
    assert list(ours.patch_sizes) == [int(v) for v in g['patch_sizes'].split(',')]
    assert list(ours.strides) == [int(v) for v in g['strides'].split(',')]
    assert list(ours.patch_weights) == [float(v) for v in m['patchweights2use'].split(',')]
    assert ours.num_pcs == int(g['num_pcs'])
    assert ours.matcher == {'RANSAC': 'ransac', 'spatialApproximator': 'spatial'}[m['matcher']]
    size = (int(e['imageresizew']), int(e['imageresizeh']))
    assert (ours.image_width, ours.image_height) == size
    assert ours.top_k == 100 and ours.num_clusters == 64


def test_override_one_field_at_a_time():
    base = get_config('performance')
    assert base.override(top_k=10).top_k == 10
    assert base.override(matcher='spatial').matcher == 'spatial'
    assert base.override(num_pcs=512).num_pcs == 512
    assert base.override(patch_weights=[0.2, 0.3, 0.5]).patch_weights == (0.2, 0.3, 0.5)
    sized = base.override(image_height=240, image_width=320)
    assert (sized.feature_height, sized.feature_width) == (15, 20)
    assert base.top_k == 100 and base.num_pcs == 4096        # immutable
    single = base.override(patch_sizes=[4])
    assert (single.patch_sizes, single.strides, single.patch_weights) == ((4,), (1,), (1.0,))
    assert get_config('speed', top_k=5).top_k == 5


def test_identity_ignores_matching_only_fields():
    base = get_config('performance')
    assert base.identity() == base.override(top_k=3, matcher='spatial').identity()
    assert base.identity() != base.override(num_pcs=512).identity()
    assert base.to_dict()['patch_sizes'] == [2, 5, 8]
