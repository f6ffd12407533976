# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Checkpoints in the authors' layout: written by the tests, loaded safely, checked."""

import pickle

import pytest
import torch

from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.errors import CheckpointError
from patch_netvlad_ros.core.model.bootstrap import seeded_model
from patch_netvlad_ros.core.model.checkpoint import load_model, save_checkpoint

SMALL = {'image_height': 16 * 9, 'image_width': 16 * 11}


def authors_blob(model, **extra):
    """What the authors' add_pca/train scripts torch.save: state_dict plus bookkeeping."""
    blob = {'epoch': 7, 'best_score': 0.81, 'num_pcs': model.config.num_pcs,
            'state_dict': {k: v.clone() for k, v in model.state_dict().items()}}
    blob.update(extra)
    return blob


@pytest.mark.parametrize('vladv2', [False, True])
def test_authors_layout_round_trip(tmp_path, vladv2):
    cfg = get_config('storage', vladv2=vladv2, **SMALL)
    model = seeded_model(cfg, seed=4)
    keys = set(model.state_dict())
    assert {'pool.centroids', 'pool.conv.weight', 'WPCA.0.weight', 'WPCA.0.bias',
            'encoder.0.weight', 'encoder.28.bias'} <= keys
    assert ('pool.conv.bias' in keys) == vladv2
    path = tmp_path / 'mapillary_WPCA128.pth.tar'
    torch.save(authors_blob(model), path)
    # the loader adopts vladv2 from the file even when the config says otherwise
    loaded = load_model(path, get_config('storage', **SMALL))
    assert loaded.config.vladv2 == vladv2
    images = torch.randn(2, 3, 144, 176, generator=torch.Generator().manual_seed(0))
    a, b = model.extract(images), loaded.extract(images)
    assert torch.equal(a.global_desc, b.global_desc)
    assert torch.equal(a.patches[0], b.patches[0])


def test_save_checkpoint_writes_authors_layout(tmp_path):
    model = seeded_model(get_config('storage', **SMALL))
    save_checkpoint(model, tmp_path / 'm.pth.tar')
    blob = torch.load(tmp_path / 'm.pth.tar', weights_only=True)
    assert blob['num_pcs'] == 128
    assert blob['state_dict']['WPCA.0.weight'].shape == (128, 32768, 1, 1)
    assert blob['state_dict']['pool.centroids'].shape == (64, 512)


def test_data_parallel_prefix_is_accepted(tmp_path):
    model = seeded_model(get_config('storage', **SMALL))
    blob = authors_blob(model)
    blob['state_dict'] = {k.replace('encoder.', 'encoder.module.'): v
                          for k, v in blob['state_dict'].items()}
    torch.save(blob, tmp_path / 'dp.pth.tar')
    loaded = load_model(tmp_path / 'dp.pth.tar', get_config('storage', **SMALL))
    assert torch.equal(loaded.encoder[0].weight, model.encoder[0].weight)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nope.pth.tar'):
        load_model(tmp_path / 'nope.pth.tar', get_config('speed'))


def test_pca_dims_differing_from_preset(tmp_path):
    model = seeded_model(get_config('storage', **SMALL))
    torch.save(authors_blob(model), tmp_path / 'm.pth.tar')
    with pytest.raises(CheckpointError, match="128 PCA dimensions but preset 'speed' uses 512"):
        load_model(tmp_path / 'm.pth.tar', get_config('speed', **SMALL))


def test_wrong_shapes_are_listed(tmp_path):
    model = seeded_model(get_config('storage', **SMALL))
    blob = authors_blob(model)
    blob['state_dict']['encoder.0.weight'] = torch.zeros(64, 1, 3, 3)
    del blob['state_dict']['encoder.2.bias']
    torch.save(blob, tmp_path / 'm.pth.tar')
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / 'm.pth.tar', get_config('storage', **SMALL))
    assert 'encoder.0.weight: (64, 1, 3, 3) (expected (64, 3, 3, 3))' in str(err.value)
    assert "missing ['encoder.2.bias']" in str(err.value)


def test_cluster_mismatch_and_missing_wpca(tmp_path):
    model = seeded_model(get_config('storage', **SMALL))
    blob = authors_blob(model)
    blob['state_dict']['pool.centroids'] = torch.zeros(16, 512)
    torch.save(blob, tmp_path / 'k.pth.tar')
    with pytest.raises(CheckpointError, match='16 clusters of dimension 512'):
        load_model(tmp_path / 'k.pth.tar', get_config('storage', **SMALL))
    blob = authors_blob(model)
    del blob['state_dict']['WPCA.0.weight']
    torch.save(blob, tmp_path / 'n.pth.tar')
    with pytest.raises(CheckpointError, match="lacks 'WPCA.0.weight'"):
        load_model(tmp_path / 'n.pth.tar', get_config('storage', **SMALL))


class Payload:
    """An object whose unpickling would create a file: the loader must refuse to run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _refusal(path):
    with pytest.raises(CheckpointError) as err:
        load_model(path, get_config('speed'))
    return str(err.value)


@pytest.mark.parametrize('writer', ['torch.save', 'pickle.dump'])
def test_arbitrary_pickles_are_not_executed(tmp_path, writer):
    marker = tmp_path / 'this_must_never_exist'
    path = tmp_path / 'evil.pth.tar'
    blob = {'state_dict': {'pool.centroids': torch.zeros(2, 2)}, 'x': Payload(marker)}
    if writer == 'torch.save':
        torch.save(blob, path)
    else:
        with open(path, 'wb') as handle:
            pickle.dump(blob, handle, protocol=4)
    message = _refusal(path)
    assert not marker.exists()
    assert str(path) in message
    # what to do instead, and never torch's hint to unpickle the file anyway
    assert "torch.save({'state_dict': model.state_dict()}" in message
    assert 'trusted environment' in message
    assert 'weights_only' not in message and 'False' not in message
    assert 'safe_globals' not in message and '\n' not in message
    if writer == 'torch.save':
        assert 'holds pickled Python objects besides tensors (it refers to io.open)' in message


def test_not_a_checkpoint_at_all(tmp_path):
    path = tmp_path / 'notes.pth.tar'
    path.write_bytes(b'hello world, not a checkpoint\n' * 4)
    message = _refusal(path)
    assert message.startswith(f'cannot read checkpoint {path}: ')
    assert 'not a PyTorch checkpoint' in message and 'weights_only' not in message


def test_truncated_checkpoint(tmp_path):
    model = seeded_model(get_config('storage', **SMALL))
    torch.save(authors_blob(model), tmp_path / 'm.pth.tar')
    data = (tmp_path / 'm.pth.tar').read_bytes()
    (tmp_path / 't.pth.tar').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='cannot read checkpoint'):
        load_model(tmp_path / 't.pth.tar', get_config('storage', **SMALL))
