# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""pnv-train: loss and mining against brute force, supervision from poses, the feature
cache, resume, the checkpoint, the CLI's argument checks and a short real training run.

Real corridor frames throughout, at small sizes and with small NetVLAD/PCA settings so
the whole file runs in well under a minute on 2 cores.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from patch_netvlad_ros.cli import train as train_cli
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.drives.drives import Drive, DriveFrame
from patch_netvlad_ros.core.drives.poses import PoseSample
from patch_netvlad_ros.core.errors import ConfigError
from patch_netvlad_ros.core.model.checkpoint import load_model, read_state_dict
from patch_netvlad_ros.core.model.image import load_image, resize_rgb, to_tensor
from patch_netvlad_ros.core.training import features as feat
from patch_netvlad_ros.core.training.mining import (distance_margin, mine_triplets,
                                                    triplet_loss)
from patch_netvlad_ros.core.training.options import (MODEL_FILE, REPORT_FILE, STATE_FILE,
                                                     TrainOptions)
from patch_netvlad_ros.core.training.supervision import supervision_from_positions
from patch_netvlad_ros.core.training.trainer import starting_model, train_from_drives

#: Small enough for seconds: 7 x 5 pool4 maps, 8 clusters, 32 PCA dimensions.
TINY = {'image_height': 80, 'image_width': 112, 'num_clusters': 8, 'num_pcs': 32}
SIZE = (TINY['image_height'], TINY['image_width'])


# ----------------------------------------------------------------- loss and mining
def test_triplet_loss_matches_hand_computed_values():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.6, 0.8]])                      # |q - p| = sqrt(0.8)
    n = torch.tensor([[[0.0, 1.0], [-1.0, 0.0], [0.8, 0.6]]])
    valid = torch.tensor([[True, True, False]])         # the third is padding
    m = 0.6
    # |q - n| = sqrt(2), 2: hinges sqrt(0.8) - sqrt(2) + 0.6 = 0.0802 and 0 (negative)
    expected = (max(0.0, math.sqrt(0.8) - math.sqrt(2) + m) + 0.0) / 2
    loss = triplet_loss(q, p, n, valid, m)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.0401, abs=1e-4)
    none = triplet_loss(q, p, n, torch.zeros_like(valid), m)
    assert none.item() == 0.0


def test_triplet_loss_gradient_is_finite_for_identical_vectors():
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = triplet_loss(q, q.detach().clone(), torch.tensor([[[1.0, 0.0]]]),
                        torch.tensor([[True]]), 0.3)
    loss.backward()
    assert loss.item() == pytest.approx(0.3) and torch.isfinite(q.grad).all()


def test_authors_margin_is_a_margin_on_distances():
    assert distance_margin(0.1) == pytest.approx(0.31622776601683794)


def brute_force_mining(q, c, pos, neg, margin, k):
    """Loops in float64: nearest positive, then violating negatives nearest first."""
    best, negs = [], []
    for i in range(len(q)):
        d = [float(np.linalg.norm(q[i].astype(np.float64) - c[j])) for j in range(len(c))]
        cands = [j for j in range(len(c)) if pos[i, j]]
        if not cands:
            best.append(-1)
            negs.append([-1] * k)
            continue
        bp = min(cands, key=lambda j: (d[j], j))
        best.append(bp)
        viol = sorted((j for j in range(len(c)) if neg[i, j] and d[j] < d[bp] + margin),
                      key=lambda j: (d[j], j))[:k]
        negs.append(viol + [-1] * (k - len(viol)))
    return np.array(best), np.array(negs)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_mining_chooses_what_brute_force_chooses(seed):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(30, 16)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = c[:7] + 0.3 * rng.normal(size=(7, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    pos = rng.random((7, 30)) < 0.2
    pos[3] = False                                      # a query without a positive
    neg = (rng.random((7, 30)) < 0.6) & ~pos
    margin, k = 0.4, 4
    got = mine_triplets(torch.from_numpy(q), torch.from_numpy(c), torch.from_numpy(pos),
                        torch.from_numpy(neg), margin, k)
    best, negs = brute_force_mining(q, c, pos, neg, margin, k)
    np.testing.assert_array_equal(got.positive.numpy(), best)
    np.testing.assert_array_equal(got.negatives.numpy(), negs)
    assert got.positive[3] == -1 and not got.active[3]
    # the case exercises real choices: several positives and fewer violators than k
    assert (pos.sum(1) > 1).any() and ((negs == -1).sum(1) > 0).any() and (negs[:, 0] >= 0).any()


def test_supervision_from_poses():
    x = np.array([0.0, 1.0, 2.0, 3.6, 10.0, 30.0])
    positions = np.stack([x, np.zeros_like(x), np.zeros_like(x)], 1)
    sup = supervision_from_positions(positions, 1.5, 5.0)
    assert [p.tolist() for p in sup.positives] == [[1], [0, 2], [1], [], [], []]
    assert [n.tolist() for n in sup.negatives] == [
        [4, 5], [4, 5], [4, 5], [4, 5], [0, 1, 2, 3, 5], [0, 1, 2, 3, 4]]
    assert sup.queries.tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match='at least the positive radius'):
        supervision_from_positions(positions, 5.0, 2.0)


def test_with_several_drives_positives_come_from_the_other_drives():
    # drive 0 at x = 0, 1, 2.1; drive 1 at x = 0.5, 8: image 0's same-drive neighbour 1 is
    # nearer than 1.5 m but not a positive; image 3 (x = 0.5) of the other drive is
    x = np.array([0.0, 1.0, 2.1, 0.5, 8.0])
    positions = np.stack([x, np.zeros_like(x)], 1)
    sup = supervision_from_positions(positions, 1.5, 5.0, drives=[0, 0, 0, 1, 1])
    assert [p.tolist() for p in sup.positives] == [[3], [3], [], [0, 1], []]
    assert [n.tolist() for n in sup.negatives] == [[4], [4], [4], [4], [0, 1, 2, 3]]
    assert sup.queries.tolist() == [0, 1, 3]


# ------------------------------------------------------------------------ the data
def corridor_drive(corridor_set, count, size=SIZE, name='ref'):
    frames = []
    paths = corridor_set.references if name == 'ref' else corridor_set.queries
    for i, path in enumerate(paths[:count]):
        pose = PoseSample(float(i), float(i), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        frames.append(DriveFrame(i, float(i), 'map', path.name, pose,
                                 resize_rgb(load_image(path), *size)))
    return Drive(name, frames, images=count)


@pytest.fixture(scope='module')
def tiny_config():
    return get_config('speed', **TINY)


@pytest.fixture(scope='module')
def feature_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('features')


def test_feature_cache_is_reused_and_invalidated(corridor_set, tiny_config, tmp_path):
    model, _ = starting_model(tiny_config)
    images = [f.rgb for f in corridor_drive(corridor_set, 3).frames]
    cache = feat.FeatureCache(tmp_path, model, SIZE)
    paths = cache.ensure(images)
    assert cache.computed == 3 and all(p.is_file() for p in paths)
    with torch.inference_mode():                        # the maps are the trunk's output
        direct = feat.trunk(model)(to_tensor(images, tiny_config))
    for p, d in zip(paths, direct):                     # Winograd's rounding: ~1e-6 of scale
        assert np.abs(np.load(p) - d.numpy()).max() < 1e-4 * np.abs(d.numpy()).max()
    again = feat.FeatureCache(tmp_path, model, SIZE)
    assert again.ensure(images) == paths and again.computed == 0            # reused
    paths[0].write_bytes(paths[0].read_bytes()[:100])                       # truncated
    assert again.ensure(images) == paths and again.computed == 1
    brighter = [np.clip(images[0].astype(int) + 9, 0, 255).astype(np.uint8)]
    assert again.ensure(brighter)[0] not in paths                           # other pixels
    other_size = feat.FeatureCache(tmp_path, model, (96, 128))
    assert not set(other_size.ensure(images)) & set(paths)                  # other size
    with torch.no_grad():
        model.encoder[0].bias[0] += 1e-3                                    # other weights
    changed = feat.FeatureCache(tmp_path, model, SIZE)
    assert not set(changed.ensure(images)) & set(paths) and changed.computed == 3
    with torch.no_grad():
        model.encoder[26].bias[0] += 1.0                    # conv5 is trained, not cached
    assert feat.FeatureCache(tmp_path, model, SIZE).key(images[0]) == \
        changed.key(images[0])


def test_augmented_views_are_fixed_by_seed_copy_and_index(corridor_set):
    from patch_netvlad_ros.core.training.augment import augment_image
    image = resize_rgb(load_image(corridor_set.references[5]), *SIZE)
    view = augment_image(image, 0, 1, 5)
    assert view.shape == image.shape and view.dtype == np.uint8
    assert np.array_equal(view, augment_image(image, 0, 1, 5))       # the same pixels again
    for other in (augment_image(image, 1, 1, 5), augment_image(image, 0, 2, 5),
                  augment_image(image, 0, 1, 6)):
        assert not np.array_equal(view, other)
    # a real change of view and exposure, yet the same scene: closer to its own image
    # than to a frame 60 m along the corridor
    far = resize_rgb(load_image(corridor_set.references[65]), *SIZE)
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert 5 < diff(view, image) < diff(far, image)


# ------------------------------------------------------------------------ training
#: A few steps per epoch on two drives of 8 frames 1 m apart (the corridor's two
#: traversals, camera at x = i m): the same place and neighbours are positives, 3 m+ negatives.
FAST = {'epochs': 2, 'batch_size': 2, 'num_negatives': 3, 'pos_radius': 1.5,
        'neg_radius': 3.0, 'refresh_every': 3, 'optimizer': 'adam', 'lr': 1e-4,
        'weight_decay': 0.0}


@pytest.fixture(scope='module')
def drives8(corridor_set):
    return [corridor_drive(corridor_set, 8), corridor_drive(corridor_set, 8, name='query')]


def train(drives, out, config, feature_dir, resume=False, **options):
    return train_from_drives(drives, out, config, TrainOptions(**{**FAST, **options}),
                             feature_cache=feature_dir, resume=resume)


@pytest.fixture(scope='module')
def trained(drives8, tiny_config, feature_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('trained')
    return out, train(drives8, out, tiny_config, feature_dir)


def test_training_lowers_the_loss_of_the_mined_triplets(trained):
    _, result = trained
    losses = [result.initial_loss] + [r.mined_loss for r in result.epochs]
    assert result.initial_loss > 0.05                    # there is something to learn
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.epochs[0].triplets > 0 and all(r.seconds > 0 for r in result.epochs)


def test_resumed_run_ends_with_the_uninterrupted_run_s_bits(
        trained, drives8, tiny_config, feature_dir, tmp_path):
    out, whole = trained
    train(drives8, tmp_path, tiny_config, feature_dir, epochs=1)     # interrupted after 1
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state['epoch'] == 1 and state['optimizer']['state']
    resumed = train(drives8, tmp_path, tiny_config, feature_dir, resume=True)
    assert resumed.resumed_from == 1 and len(resumed.epochs) == 2
    ours, theirs = read_state_dict(tmp_path / MODEL_FILE), read_state_dict(out / MODEL_FILE)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert resumed.digest == whole.digest
    with pytest.raises(ConfigError, match='differs in options'):
        train(drives8, tmp_path, tiny_config, feature_dir, resume=True, margin=0.2)


def test_checkpoint_has_the_authors_layout_and_loads(trained, tiny_config):
    out, result = trained
    blob = torch.load(out / MODEL_FILE, weights_only=True)
    state = blob['state_dict']
    assert {'pool.centroids', 'pool.conv.weight', 'WPCA.0.weight', 'WPCA.0.bias',
            'encoder.28.weight', 'encoder.0.weight'} <= set(state)
    assert blob['num_pcs'] == 32 and blob['epoch'] == 2
    model = load_model(out / MODEL_FILE, tiny_config)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    start, _ = starting_model(tiny_config)
    # frozen layers kept, trained ones moved
    assert torch.equal(state['encoder.21.weight'], start.state_dict()['encoder.21.weight'])
    assert not torch.equal(state['encoder.28.weight'], start.state_dict()['encoder.28.weight'])
    report = json.loads((out / REPORT_FILE).read_text())
    assert report['model_digest'] == result.digest and len(report['history']) == 2
    authors = pytest.importorskip('patchnetvlad.models.models_generic')
    from benchmarks.authors import authors_config
    theirs = authors.get_model(feat.trunk(start).__class__(*start.encoder), 512,
                               authors_config(model.config)['global_params'],
                               append_pca_layer=True)
    theirs.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- CLI
def test_split_drives_gives_shared_options_to_every_drive():
    rest, drives = train_cli.split_drives(
        ['out', '--image-topic', '/cam', '--epochs', '3', '--bag', 'a.mcap', '--pose-topic',
         '/gps', '--bag=b.bag', '--images', 'dir', '--poses', 'p.csv', '--seed', '1'])
    assert rest == ['out', '--epochs', '3', '--seed', '1']
    assert drives == [['--image-topic', '/cam', '--bag', 'a.mcap', '--pose-topic', '/gps'],
                      ['--image-topic', '/cam', '--bag=b.bag'],
                      ['--image-topic', '/cam', '--images', 'dir', '--poses', 'p.csv']]


@pytest.fixture
def folder_drive(corridor_set, tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    rows = ['image,stamp,x,y']
    for i, path in enumerate(corridor_set.references[:8]):
        (folder / path.name).write_bytes(path.read_bytes())
        rows.append(f'{path.name},{i},{i},0')
    (tmp_path / 'poses.csv').write_text('\n'.join(rows) + '\n')
    return ['--images', str(folder), '--poses', str(tmp_path / 'poses.csv')]


@pytest.mark.parametrize('extra, message', [
    (['--pos-radius', '5', '--neg-radius', '2'], 'at least the positive radius'),
    (['--epochs', '0'], "argument --epochs: must be a whole number >= 1; got '0'"),
    (['--margin', '-1'], 'argument --margin: must be a finite number > 0'),
    (['--momentum', '1.5'], "argument --momentum: must be in [0, 1); got '1.5'"),
    (['--lr-gamma', '2'], "argument --lr-gamma: must be in (0, 1]; got '2'"),
    (['--lr-gamma', '0'], 'argument --lr-gamma: must be a finite number > 0'),
    (['--resume'], 'holds no state.pt'),
    (['--checkpoint', '/nonexistent/model.pth.tar'], 'does not exist'),
    (['--pca-samples', '100'], 'must exceed the 512 PCA dimensions'),
    (['--device', 'tpu'], 'argument --device: must be auto, cpu, cuda or cuda:N'),
    (['--bag', '/nonexistent.mcap'], 'argument --bag: /nonexistent.mcap does not exist'),
    (['--images', '/'], 'give --bag, or --images together with --poses'),  # 2nd drive
])
def test_cli_refuses_bad_arguments_before_reading_anything(folder_drive, tmp_path, capsys,
                                                           monkeypatch, extra, message):
    # spies, not doubles: reading a frame or a drive at all would be the failure
    def no_reading(*args, **kwargs):
        raise AssertionError('the data were read before the arguments were checked')
    monkeypatch.setattr(train_cli, 'read_drive', no_reading)
    monkeypatch.setattr(train_cli, 'source_image_shape', no_reading)
    status = train_cli.main([str(tmp_path / 'out'), *folder_drive, *extra])
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert [line for line in err.splitlines() if line.strip()] == [
        next(line for line in err.splitlines() if line.startswith('error:'))], err
    assert not (tmp_path / 'out').exists()


def test_cli_refuses_no_drive_and_a_second_run_in_one_folder(folder_drive, tmp_path, capsys):
    assert train_cli.main([str(tmp_path / 'out')]) == 2
    assert 'error: give at least one drive' in capsys.readouterr().err
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / STATE_FILE).write_bytes(b'')
    assert train_cli.main([str(tmp_path / 'out'), *folder_drive]) == 2
    assert 'add --resume' in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the message for no GPU')
def test_cli_on_a_missing_gpu_exits_with_a_clear_error(folder_drive, tmp_path, capsys):
    assert train_cli.main([str(tmp_path / 'out'), *folder_drive, '--device', 'cuda']) == 2
    assert 'no CUDA device is available' in capsys.readouterr().err


def test_cli_trains_a_folder_drive(folder_drive, tmp_path, feature_dir, capsys):
    out = tmp_path / 'out'
    status = train_cli.main([str(out), *folder_drive, '--preset', 'storage', '--image-size',
                             '160', '--epochs', '1', '--pos-radius', '1.5',
                             '--neg-radius', '3', '--negatives', '2', '--device', 'cpu',
                             '--feature-cache', str(feature_dir)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert 'epoch 1/1' in captured.err and 's per epoch on cpu' in captured.out
    # the 160x120 frames at width 160 keep their aspect ratio: 160x128 (multiples of 16)
    model = load_model(out / MODEL_FILE, get_config('storage', image_height=128,
                                                    image_width=160))
    assert model.pca_weight.shape == (128, 32768) and torch.isfinite(model.pca_weight).all()
    assert {STATE_FILE, MODEL_FILE, REPORT_FILE} <= {p.name for p in Path(out).iterdir()}
