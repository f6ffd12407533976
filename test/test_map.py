# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Map folder round trip, identity checks and corruption errors; Localizer on a map."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.localization.localizer import descriptor_identity, Localizer
from patch_netvlad_ros.core.maps.database import MapWriter, Reference, ReferenceMap
from patch_netvlad_ros.core.maps.extraction import build_reference_map, describe_batches
from patch_netvlad_ros.core.maps.retrieval import build_index, index_kind_of, top_k
from patch_netvlad_ros.core.model.bootstrap import seeded_model

CFG = get_config('speed', image_height=16 * 8, image_width=16 * 10, num_pcs=64)


@pytest.fixture(scope='module')
def small(corridor_images):
    model = seeded_model(CFG, seed=2, imagenet_encoder=True)
    refs = [Reference(id=f'r{i}', source=f'img{i}.jpg', stamp=1e9 + i / 3, frame_id='map',
                      x=0.5 * i, y=-0.25 * i, z=0.1, qx=0.0, qy=0.0, qz=0.3826834323650898,
                      qw=0.9238795325112867) for i in range(12)]
    ref_map = build_reference_map(model, corridor_images[0][:12], refs)
    return model, ref_map, corridor_images[1][:12]


def test_round_trip_same_search_results(small, tmp_path):
    model, ref_map, queries = small
    path = ref_map.save(tmp_path / 'map')
    loaded = ReferenceMap.load(path, expect=descriptor_identity(model))
    assert loaded.references == ref_map.references          # ids, stamps, poses exact
    assert np.array_equal(loaded.global_desc, ref_map.global_desc)
    assert np.array_equal(np.asarray(loaded.patches[0]), ref_map.patches[0])
    assert loaded.patches[0].dtype == np.float16
    a, b = Localizer(ref_map, model), Localizer(loaded, model)
    for q in queries[:4]:
        ra, rb = a.localize(q), b.localize(q)
        assert ra.retrieval_order == rb.retrieval_order
        assert ra.reference == rb.reference and ra.confidence == rb.confidence


def test_incremental_build_and_overwrite(small, corridor_images, tmp_path):
    model, ref_map, _ = small
    more = build_reference_map(model, corridor_images[0][12:15],
                               [Reference(id=f's{i}', x=10.0 + i) for i in range(3)],
                               base=ref_map)
    assert len(more) == 15 and [r.id for r in more.references[-3:]] == ['s0', 's1', 's2']
    ref_map.save(tmp_path / 'map')
    more.save(tmp_path / 'map')                     # replaces the old map atomically
    assert len(ReferenceMap.load(tmp_path / 'map')) == 15
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
    with pytest.raises(MapError, match='reference ids already in the map'):
        build_reference_map(model, corridor_images[0][:1], [Reference(id='r0')], base=ref_map)


def test_map_from_another_model_is_refused(small, tmp_path):
    model, ref_map, _ = small
    other = seeded_model(CFG, seed=99, imagenet_encoder=True)
    with pytest.raises(MapError, match='built with another model or preset .*model_digest'):
        Localizer(ref_map, other)
    path = ref_map.save(tmp_path / 'map')
    with pytest.raises(MapError, match='num_pcs: map 64 vs model 128'):
        ReferenceMap.load(path, expect={**descriptor_identity(model), 'num_pcs': 128})


def corrupt(path, name, how):
    f = path / name
    data = bytearray(f.read_bytes())
    if how == 'truncate':
        f.write_bytes(data[:len(data) // 2])
    else:
        data[-10] ^= 0xFF
        f.write_bytes(bytes(data))


@pytest.mark.parametrize('name,how,message', [
    ('patches_0.npy', 'truncate', 'patches_0.npy has .* bytes, the manifest says'),
    ('global.npy', 'flip', 'global.npy fails its SHA-256 check'),
    ('references.csv', 'flip', 'references.csv fails its SHA-256 check'),
    ('global.faiss', 'truncate', 'global.faiss has .* bytes, the manifest says'),
    ('global.faiss', 'flip', 'global.faiss fails its SHA-256 check'),
])
def test_corruption_is_named(small, tmp_path, name, how, message):
    _, ref_map, _ = small
    path = ref_map.save(tmp_path / 'map')
    corrupt(path, name, how)
    with pytest.raises(MapError, match=message):
        ReferenceMap.load(path)


def test_wrong_version_and_half_written_folder(small, tmp_path):
    _, ref_map, _ = small
    path = ref_map.save(tmp_path / 'map')
    manifest = json.loads((path / 'manifest.json').read_text())
    manifest['format_version'] = 99
    (path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(MapError, match='map format version 99'):
        ReferenceMap.load(path)
    (tmp_path / '.new.tmp-123').mkdir()            # what an interrupted build leaves
    with pytest.raises(MapError, match='an interrupted build left a temporary folder'):
        ReferenceMap.load(tmp_path / 'new')


def test_localizer_rejects_bad_descriptors(small):
    model, ref_map, _ = small
    loc = Localizer(ref_map, model)
    import torch
    good = model.extract(torch.zeros(1, 3, 128, 160))
    with pytest.raises(MapError, match='descriptor has 32 dims'):
        loc.localize_descriptors(torch.zeros(32), good.patches)
    bad = good.patches[0][0].clone()
    bad[0, 0] = float('nan')
    from patch_netvlad_ros.core.errors import ImageError
    with pytest.raises(ImageError, match='NaN or Inf'):
        loc.localize_descriptors(good.global_desc[0], [bad])
    with pytest.raises(MapError, match='place_radius must be positive'):
        Localizer(ref_map, model, place_radius=0)


# ------------------------------------------------------------ the global index on disk
def synthetic_map(n, seed=0):
    """A map of n references with clustered unit-norm random descriptors (CFG's shapes)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, CFG.num_pcs))
    g = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, CFG.num_pcs))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    patches = rng.normal(size=(n, CFG.num_patches(0), CFG.num_pcs)).astype(np.float16)
    refs = [Reference(id=f'r{i}', x=float(i)) for i in range(n)]
    return ReferenceMap(CFG, 'digest', refs, g.astype(np.float32), [patches])


def brute_force(db, queries, k):
    """Indices [M, k] of the k nearest rows of db [N, D] per query [M, D] (numpy, exact)."""
    d2 = ((queries[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    return np.argsort(d2, axis=1, kind='stable')[:, :k]


def edit_manifest(path, change):
    manifest = json.loads((path / 'manifest.json').read_text())
    change(manifest)
    (path / 'manifest.json').write_text(json.dumps(manifest))


def test_saved_index_is_loaded_and_exact(small, tmp_path):
    model, ref_map, queries = small
    path = ref_map.save(tmp_path / 'map')
    manifest = json.loads((path / 'manifest.json').read_text())
    assert manifest['format_version'] == 3 and manifest['index_kind'] == 'flat'
    assert set(manifest['files']) == {'global.npy', 'patches_0.npy', 'references.csv',
                                      'global.faiss'}
    loaded = ReferenceMap.load(path)
    assert loaded._index is not None and index_kind_of(loaded.index) == 'flat'
    q = np.concatenate([b.global_desc.numpy() for b in describe_batches(model, queries)])
    _, idx = top_k(loaded.index, q, 12)
    assert np.array_equal(idx, brute_force(np.asarray(ref_map.global_desc), q, 12))


def test_ivf_map_round_trip(tmp_path):
    ref_map = synthetic_map(3000)
    path = ref_map.save(tmp_path / 'map', index_kind='ivf')
    assert json.loads((path / 'manifest.json').read_text())['index_kind'] == 'ivf'
    loaded = ReferenceMap.load(path)
    assert index_kind_of(loaded.index) == 'ivf'
    assert loaded.index.nprobe == ref_map.index.nprobe == 16
    rng = np.random.default_rng(1)
    q = np.asarray(loaded.global_desc[rng.choice(3000, 50)]) + 0.05 * rng.normal(size=(50, 64))
    _, a = top_k(ref_map.index, q, 10)
    _, b = top_k(loaded.index, q, 10)
    assert np.array_equal(a, b)                     # the very index that was saved
    truth = brute_force(np.asarray(ref_map.global_desc), q, 10)
    assert np.mean([len(set(x) & set(t)) / 10 for x, t in zip(b, truth)]) >= 0.95
    ivfpq = ReferenceMap.load(ref_map.save(tmp_path / 'pq', index_kind='ivfpq'))
    _, c = top_k(ivfpq.index, q, 10)
    assert index_kind_of(ivfpq.index) == 'ivfpq' and c.min() >= 0 and c.max() < 3000
    with pytest.raises(MapError, match="unknown index kind 'hnsw'"):
        ref_map.save(tmp_path / 'bad', index_kind='hnsw')
    assert not (tmp_path / 'bad').exists()


def test_version_1_map_still_loads(small, tmp_path):
    model, ref_map, queries = small
    path = ref_map.save(tmp_path / 'map')
    (path / 'global.faiss').unlink()

    def to_v1(manifest):
        manifest['format_version'] = 1
        del manifest['files']['global.faiss'], manifest['index_kind']
    edit_manifest(path, to_v1)
    loaded = ReferenceMap.load(path, expect=descriptor_identity(model))
    assert loaded._index is None                    # built on first use, exact
    q = np.asarray(ref_map.global_desc[:4]) + 0.01
    _, idx = top_k(loaded.index, q, 12)
    assert index_kind_of(loaded.index) == 'flat'
    assert np.array_equal(idx, brute_force(np.asarray(ref_map.global_desc), q, 12))
    a, b = Localizer(ref_map, model), Localizer(loaded, model)
    for query in queries[:2]:
        assert a.localize(query).retrieval_order == b.localize(query).retrieval_order
    resaved = ReferenceMap.load(loaded.save(tmp_path / 'again'))     # upgraded to 2
    assert index_kind_of(resaved.index) == 'flat'


def garbage(path, name):
    f = path / name
    f.write_bytes(np.random.default_rng(0).integers(0, 256, f.stat().st_size,
                                                    dtype=np.uint8).tobytes())


def keep_header_garble_rest(path, name):
    f = path / name
    data = f.read_bytes()
    f.write_bytes(data[:41] + bytes(b ^ 0x5A for b in data[41:]))


@pytest.mark.parametrize('damage', [garbage, keep_header_garble_rest])
def test_unreadable_index_without_verify_names_the_file(small, tmp_path, damage):
    _, ref_map, _ = small
    path = ref_map.save(tmp_path / 'map')
    damage(path, 'global.faiss')
    with pytest.raises(MapError, match='fails its SHA-256 check'):
        ReferenceMap.load(path)
    with pytest.raises(MapError, match=r'map/global\.faiss: .*rebuild the map'):
        ReferenceMap.load(path, verify=False)


def replace_index(path, index):
    import faiss
    faiss.write_index(index, str(path / 'global.faiss'))
    f = path / 'global.faiss'
    from patch_netvlad_ros.core.model.backbone import sha256_file

    def update(manifest):
        manifest['files']['global.faiss'] = {'sha256': sha256_file(f),
                                             'bytes': f.stat().st_size}
    edit_manifest(path, update)


def test_index_of_another_map_is_refused(small, tmp_path):
    _, ref_map, _ = small
    path = ref_map.save(tmp_path / 'map')
    g = np.asarray(ref_map.global_desc)
    replace_index(path, build_index(g[:5]))
    with pytest.raises(MapError, match='global.faiss: the faiss index holds 5 references, '
                                       'the map 12'):
        ReferenceMap.load(path)
    replace_index(path, build_index(np.ascontiguousarray(g[:, :32])))
    with pytest.raises(MapError, match='the faiss index has 32 dims, the map 64'):
        ReferenceMap.load(path)
    replace_index(path, build_index(g, 'ivf'))
    with pytest.raises(MapError, match='the faiss index is ivf, the manifest says flat'):
        ReferenceMap.load(path)


def test_extended_map_rebuilds_its_index(small, corridor_images, tmp_path):
    model, ref_map, _ = small
    loaded = ReferenceMap.load(ref_map.save(tmp_path / 'map'))
    assert loaded.index.ntotal == 12
    more = build_reference_map(model, corridor_images[0][12:14],
                               [Reference(id=f's{i}') for i in range(2)], base=loaded)
    assert more.index.ntotal == 14
    again = ReferenceMap.load(more.save(tmp_path / 'map'))
    assert again.index.ntotal == 14 and len(again) == 14
    q = np.asarray(more.global_desc[12:14])
    assert list(top_k(again.index, q, 1)[1][:, 0]) == [12, 13]


def test_interrupted_saves_leave_the_good_map(small, tmp_path, monkeypatch):
    model, ref_map, queries = small
    path = ref_map.save(tmp_path / 'map')
    before = Localizer(ReferenceMap.load(path), model).localize(queries[0]).retrieval_order
    # a build killed mid-way leaves its temporary folder (half written) beside the map
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()
    partial = tmp_path / f'.map.tmp-{gone.pid}'
    partial.mkdir()
    (partial / 'global.npy').write_bytes(b'\x93NUMPY half')
    said = []
    loaded = ReferenceMap.load(path, log=said.append)
    assert Localizer(loaded, model).localize(queries[0]).retrieval_order == before
    assert len(said) == 1 and f'left .map.tmp-{gone.pid} (temporary folder' in said[0]
    # a save that fails part-way cleans up after itself and keeps the previous map

    def fail(*args):
        raise OSError('disk full')
    import faiss
    monkeypatch.setattr(faiss, 'write_index', fail)
    bigger = synthetic_map(20)
    said = []
    with pytest.raises(OSError, match='disk full'):
        bigger.save(path, log=said.append)          # (it first removes the dead build's)
    monkeypatch.undo()
    assert len(ReferenceMap.load(path)) == 12
    assert said == [f'removing .map.tmp-{gone.pid} (temporary folder, 0.0 MB; its writer, '
                    f'process {gone.pid}, is gone)']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map']
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(f'-{os.getpid()}')]


def test_map_writer_streams_rows_into_the_same_map_as_save(tmp_path):
    ref_map = synthetic_map(30, seed=3)
    saved = ReferenceMap.load(ref_map.save(tmp_path / 'saved'))
    with MapWriter(tmp_path / 'streamed', CFG, 'digest', 30) as writer:
        for start, stop in ((0, 7), (7, 8), (8, 30)):            # uneven batches
            writer.append(ref_map.global_desc[start:stop],
                          [p[start:stop].astype(np.float32) for p in ref_map.patches])
        path = writer.commit(ref_map.references)
    streamed = ReferenceMap.load(path)
    np.testing.assert_array_equal(streamed.global_desc, saved.global_desc)
    np.testing.assert_array_equal(streamed.patches[0], saved.patches[0])
    assert streamed.references == saved.references
    assert streamed.identity == saved.identity
    q = np.asarray(ref_map.global_desc[:5])
    np.testing.assert_array_equal(top_k(streamed.index, q, 3)[1], top_k(saved.index, q, 3)[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['saved', 'streamed']


def test_map_writer_rejects_wrong_rows_and_leaves_nothing_behind(tmp_path):
    ref_map = synthetic_map(4)
    rows = (ref_map.global_desc[:3], [p[:3] for p in ref_map.patches])
    with pytest.raises(MapError, match='has 3 rows and 4 references'):
        with MapWriter(tmp_path / 'map', CFG, 'digest', 4) as writer:
            writer.append(*rows)
            writer.commit(ref_map.references)
    with pytest.raises(MapError, match='map writer for 4 references got 6'):
        with MapWriter(tmp_path / 'map', CFG, 'digest', 4) as writer:
            writer.append(*rows)
            writer.append(*rows)
    with pytest.raises(MapError, match='do not fit the map'):
        with MapWriter(tmp_path / 'map', CFG, 'digest', 4) as writer:
            writer.append(ref_map.global_desc[:2], [ref_map.patches[0][:2, :3]])
    assert list(tmp_path.iterdir()) == []
