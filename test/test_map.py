# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Map folder round trip, identity checks and corruption errors; Localizer on a map."""

import json

import numpy as np
import pytest

from patch_netvlad_ros.core.bootstrap import seeded_model
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.database import Reference, ReferenceMap
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.extraction import build_reference_map
from patch_netvlad_ros.core.localizer import descriptor_identity, Localizer

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
