# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Maps from recorded drives: bags in every format, interpolation, keyframes, GNSS, CLI."""

import csv
import json
from pathlib import Path
import shutil
import subprocess
import sys

from bag_writers import write_bag
import numpy as np
import pytest

from patch_netvlad_ros.cli import build_map as build_map_cli
from patch_netvlad_ros.core.drives.bags import read_images
from patch_netvlad_ros.core.drives.drives import KeyframeRule, read_bag_drive, read_folder_drive
from patch_netvlad_ros.core.drives.poses import geodetic_to_enu
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.maps.database import ReferenceMap
from patch_netvlad_ros.core.maps.extraction import build_reference_map, describe_batches
from patch_netvlad_ros.core.maps.map_building import build_map, map_model_path, resolve_map_model
from patch_netvlad_ros.core.model.backbone import sha256_file

#: Poses and both cameras of every sixth KITTI frame (half size; see ATTRIBUTION.md there).
KITTI = Path(__file__).resolve().parent / 'data' / 'kitti_raw_0005'
SIZE = (240, 320)


@pytest.fixture(scope='module')
def five(corridor_images):
    """Five real corridor reference images."""
    return corridor_images[0][:5]


def _odom(stamps, xs):
    return [(t, 'odom', (x, 0.5 * x, 0.0, 0.0, 0.0, 0.0, 1.0)) for t, x in zip(stamps, xs)]


@pytest.mark.parametrize('fmt', ['bag', 'db3', 'mcap'])
@pytest.mark.parametrize('pose_type', ['nav_msgs/msg/Odometry',
                                       'geometry_msgs/msg/PoseStamped',
                                       'geometry_msgs/msg/PoseWithCovarianceStamped'])
def test_bag_to_map_keeps_stamps_and_poses(fmt, pose_type, five, corridor_model, tmp_path):
    """Images at pose stamps: the map's references carry exactly the written values."""
    stamps = [100.0 + 0.25 * i for i in range(5)]
    bag = write_bag(tmp_path / ('d.bag' if fmt == 'bag' else 'd'), fmt,
                    [(t, 'cam', im) for t, im in zip(stamps, five)],
                    poses=_odom(stamps, [2.0 * i for i in range(5)]), pose_type=pose_type)
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE)
    ref_map, _ = build_map(drive, tmp_path / 'map', config=corridor_model.config,
                           checkpoint=corridor_model.checkpoint_path)
    loaded = ReferenceMap.load(tmp_path / 'map')
    assert [r.stamp for r in loaded.references] == pytest.approx(stamps, abs=1e-9)
    assert [r.x for r in loaded.references] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert [r.y for r in loaded.references] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r.source for r in loaded.references] == [
        f'{bag.name}:/camera/image_raw#{i}' for i in range(5)]
    assert len({r.id for r in loaded.references}) == 5
    assert map_model_path(tmp_path / 'map').is_file()
    # Descriptors equal the core's for the same images.
    np.testing.assert_allclose(loaded.global_desc[0], ref_map.global_desc[0])


def test_interpolation_gap_and_no_extrapolation(five, tmp_path):
    """Hand-checked: halfway poses, no pose across a long gap or outside the poses."""
    # Poses at 0, 1 (x 0 -> 2) and 5 (x 10): a 4 s gap; images at 0.5, 1.0, 3.0, 5.5, -1
    # (relative to 10 s); the bag keeps time order, so the image at -1 is index 0.
    poses = _odom([10.0, 11.0, 15.0], [0.0, 2.0, 10.0])
    images = [(t, 'cam', im) for t, im in zip([10.5, 11.0, 13.0, 15.5, 9.0], five)]
    bag = write_bag(tmp_path / 'd', 'mcap', images, poses=poses)
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE, max_gap=1.5)
    assert [(f.index, f.pose.x) for f in drive.frames] == [(1, 1.0), (2, 2.0)]
    assert drive.no_pose == 3
    wide = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE, max_gap=5.0)
    assert [(f.index, f.pose.x) for f in wide.frames] == [(1, 1.0), (2, 2.0), (3, 6.0)]


def test_keyframes_by_distance_and_time(five, corridor_images, tmp_path):
    """1 m apart with min_distance 2 keeps every other frame; time rule independently."""
    images = corridor_images[0][:9]
    stamps = [float(i) for i in range(9)]
    bag = write_bag(tmp_path / 'd', 'db3', [(t, 'cam', im) for t, im in zip(stamps, images)],
                    poses=_odom(stamps, [0.8 * i for i in range(9)]))
    # x = 0, .8, 1.6, 2.4, ... with y = x / 2: distance from the last keyframe = 0.894 * dx.
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE, KeyframeRule(2.0))
    assert [f.index for f in drive.frames] == [0, 3, 6]
    assert drive.not_keyframe == 6
    timed = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE, KeyframeRule(0, 0, 4.0))
    assert [f.index for f in timed.frames] == [0, 4, 8]


def test_streamed_drive_reads_its_keyframes_again_and_builds_the_same_map(
        corridor_images, corridor_model, tmp_path):
    """hold_images=False: no pixels held; keyframes decoded again, batch by batch."""
    images = corridor_images[0][:9]
    stamps = [float(i) for i in range(9)]
    bag = write_bag(tmp_path / 'd', 'mcap', [(t, 'cam', im) for t, im in zip(stamps, images)],
                    poses=_odom(stamps, [0.8 * i for i in range(9)]))
    held = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE, KeyframeRule(2.0))
    streamed = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE, KeyframeRule(2.0),
                              hold_images=False)
    assert [f.index for f in streamed.frames] == [0, 3, 6]
    assert all(f.rgb is None for f in streamed.frames)
    assert [im.index for im in read_images(bag, '/camera/image_raw', indices={3, 6})] == [3, 6]
    again = list(streamed.frame_images())
    assert len(again) == 3
    for a, b in zip(held.frame_images(), again):
        np.testing.assert_array_equal(a, b)
    # describing takes one batch of images at a time from the drive
    taken = []

    def counted():
        for rgb in streamed.frame_images():
            taken.append(1)
            yield rgb
    batches = describe_batches(corridor_model, counted(), batch_size=2)
    next(batches)
    assert len(taken) == 2
    kwargs = dict(config=corridor_model.config, checkpoint=corridor_model.checkpoint_path)
    a, _ = build_map(held, tmp_path / 'held', **kwargs)
    b, _ = build_map(streamed, tmp_path / 'streamed', **kwargs)
    np.testing.assert_array_equal(a.global_desc, b.global_desc)
    for pa, pb in zip(a.patches, b.patches):
        np.testing.assert_array_equal(np.asarray(pa), np.asarray(pb))
    # the bag lost frames since the drive was read: named, nothing written
    shutil.rmtree(bag)
    write_bag(bag, 'mcap', [(t, 'cam', im) for t, im in zip(stamps[:5], images)],
              poses=_odom(stamps[:5], [0.8 * i for i in range(5)]))
    with pytest.raises(MapError, match=r'frame d:/camera/image_raw#6 cannot be read again'):
        build_map(streamed, tmp_path / 'lost', **kwargs)
    assert not (tmp_path / 'lost').exists()


def test_append_second_drive_and_origin_guard(five, corridor_model, tmp_path):
    """An incremental build adds a drive; the first drive's references stay as they were."""
    out = tmp_path / 'map'
    a = write_bag(tmp_path / 'a', 'mcap', [(float(i), 'cam', im) for i, im in
                                           enumerate(five[:3])],
                  poses=_odom([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]))
    b = write_bag(tmp_path / 'b.bag', 'bag', [(float(i), 'cam', im) for i, im in
                                              enumerate(five[3:])],
                  poses=_odom([0.0, 1.0], [5.0, 6.0]))
    first, _ = build_map(read_bag_drive(a, '/camera/image_raw', '/odom', SIZE), out,
                         config=corridor_model.config,
                         checkpoint=corridor_model.checkpoint_path)
    base = ReferenceMap.load(out)
    both, _ = build_map(read_bag_drive(b, '/camera/image_raw', '/odom', SIZE), out,
                        base=base)
    loaded = ReferenceMap.load(out)
    assert [r.x for r in loaded.references] == [0.0, 1.0, 2.0, 5.0, 6.0]
    assert [r.id for r in loaded.references][:3] == [r.id for r in first.references]
    np.testing.assert_array_equal(loaded.global_desc[:3], first.global_desc)
    drive = read_bag_drive(b, '/camera/image_raw', '/odom', SIZE)
    drive.origin = (49.0, 8.0, 100.0)
    loaded.meta['enu_origin'] = [48.0, 8.0, 100.0]
    with pytest.raises(MapError, match='ENU origin'):
        build_map(drive, out, base=loaded)


def test_image_folder_with_poses_csv(five, corridor_set, tmp_path):
    """Folder + CSV: rows in stamp order, optional columns defaulted, bad files named."""
    rows = [('0000002.jpg', 3.0, 2.0, 0.0), ('0000000.jpg', 1.0, 0.0, 0.0),
            ('0000001.jpg', 2.0, 1.0, 0.5)]
    poses = tmp_path / 'poses.csv'
    with open(poses, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['image', 'stamp', 'x', 'y'])
        writer.writerows(rows)
    folder = corridor_set.references[0].parent
    drive = read_folder_drive(folder, poses, SIZE)
    assert [(f.source, f.stamp, f.pose.x, f.pose.y) for f in drive.frames] == [
        ('0000000.jpg', 1.0, 0.0, 0.0), ('0000001.jpg', 2.0, 1.0, 0.5),
        ('0000002.jpg', 3.0, 2.0, 0.0)]
    assert drive.frames[0].rgb.shape == (240, 320, 3)
    streamed = read_folder_drive(folder, poses, SIZE, hold_images=False)
    assert [f.rgb for f in streamed.frames] == [None] * 3
    for a, b in zip(drive.frame_images(), streamed.frame_images(), strict=True):
        np.testing.assert_array_equal(a, b)
    copy = tmp_path / 'copy'
    shutil.copytree(folder, copy)
    moved = read_folder_drive(copy, poses, SIZE, hold_images=False)
    (copy / '0000001.jpg').unlink()
    with pytest.raises(MapError, match='frame 0000001.jpg cannot be read again'):
        list(moved.frame_images())
    poses.write_text('image,stamp\nx.jpg,1\n')
    with pytest.raises(MapError, match='columns image, stamp, x, y'):
        read_folder_drive(folder, poses, SIZE)


def _kitti_rows():
    with open(KITTI / 'gps_poses_derived.csv', newline='') as handle:
        return list(csv.DictReader(handle))


def _kitti_image(camera: str, frame: int):
    from patch_netvlad_ros.core.model.image import load_image
    return load_image(KITTI / camera / 'data' / f'{frame:010d}.jpg')


def test_kitti_navsatfix_map_and_right_camera_queries(corridor_model, tmp_path):
    """NavSatFix -> local metres; map from the left camera, queries from the right one."""
    from patch_netvlad_ros.core.localization.localizer import Localizer
    rows = _kitti_rows()[::6]  # 16 frames, about 2.2 m apart
    frames = [int(r['frame']) for r in rows]
    stamps = [100.0 + 0.1 * f for f in frames]
    fixes = [(t, 'gps', float(r['lat_deg']), float(r['lon_deg']), float(r['alt_m']))
             for t, r in zip(stamps, rows)]
    left = write_bag(tmp_path / 'left.bag', 'bag',
                     [(t, 'cam2', _kitti_image('image_02', f)) for t, f in zip(stamps, frames)],
                     fixes=fixes, compressed=True)
    drive = read_bag_drive(left, '/camera/image_raw', '/gps/fix', SIZE)
    ref_map, model = build_map(drive, tmp_path / 'map',
                               config=corridor_model.config,
                               checkpoint=corridor_model.checkpoint_path)
    # Within centimetres of the derived poses (SOURCE.txt: devkit Mercator x/y).
    xy = ref_map.positions()[:, :2]
    derived = np.array([[float(r['x_east_m']), float(r['y_north_m'])] for r in rows])
    assert np.abs(xy - derived).max() < 0.05
    first = rows[0]
    enu = geodetic_to_enu([float(r['lat_deg']) for r in rows],
                          [float(r['lon_deg']) for r in rows], [float(r['alt_m']) for r in rows],
                          float(first['lat_deg']), float(first['lon_deg']),
                          float(first['alt_m']))
    np.testing.assert_allclose(ref_map.positions(), enu, atol=1e-6)
    loaded = ReferenceMap.load(tmp_path / 'map')
    assert loaded.meta['enu_origin'] == pytest.approx(
        [float(first['lat_deg']), float(first['lon_deg']), float(first['alt_m'])])
    # Right camera, same instants, read with the map's origin: the same place comes first.
    right = write_bag(tmp_path / 'right', 'mcap',
                      [(t, 'cam3', _kitti_image('image_03', f)) for t, f in zip(stamps, frames)],
                      fixes=fixes)
    queries = read_bag_drive(right, '/camera/image_raw', '/gps/fix', SIZE,
                             origin=tuple(loaded.meta['enu_origin']))
    np.testing.assert_allclose([f.pose.x for f in queries.frames], xy[:, 0], atol=1e-9)
    localizer = Localizer(loaded, model)
    best = [localizer.localize(f.rgb).best_index for f in queries.frames]
    right_place = np.mean([abs(b - i) <= 1 for i, b in enumerate(best)])
    assert right_place >= 0.8, best


def test_build_map_cli_errors(tmp_path, capsys):
    """The CLI exits 2 with one clear line for a missing bag, a wrong topic, no frames."""
    assert build_map_cli.main([str(tmp_path / 'm'), '--bag', str(tmp_path / 'none.bag')]) == 2
    assert 'none.bag does not exist' in capsys.readouterr().err
    shipped = Path(__file__).resolve().parent.parent / 'patch_netvlad_ros' / 'data' / \
        'corridor_drives' / 'reference'
    assert build_map_cli.main([str(tmp_path / 'm'), '--bag', str(shipped),
                               '--image-topic', '/nope']) == 2
    err = capsys.readouterr().err
    assert '/nope' in err and '/camera/image_raw/compressed' in err
    assert build_map_cli.main([str(tmp_path / 'm'), '--bag', str(shipped), '--image-topic',
                               '/camera/image_raw/compressed', '--append']) == 2
    assert 'no map at' in capsys.readouterr().err
    assert not (tmp_path / 'm').exists()


def test_map_building_streams_descriptors_to_disk(corridor_images, corridor_model, tmp_path):
    """Memory does not grow with the drive: each batch goes to disk before the next."""
    import tracemalloc
    images = corridor_images[0][:16]
    bag = write_bag(tmp_path / 'd', 'mcap', [(float(i), 'cam', im) for i, im in
                                             enumerate(images)],
                    poses=_odom([float(i) for i in range(16)], [float(i) for i in range(16)]))
    drive = read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE)
    assert len(drive.frames) == 16
    traced = []                       # numpy memory in use after each batch of 2

    def progress(n):
        traced.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.start()
    try:
        ref_map, _ = build_map(drive, tmp_path / 'map', config=corridor_model.config,
                               checkpoint=corridor_model.checkpoint_path, batch_size=2,
                               progress=progress)
    finally:
        tracemalloc.stop()
    patch_bytes = sum(p.nbytes for p in ref_map.patches)
    growth = traced[-1] - traced[0]
    print(f'memory growth over {len(traced)} batches: {growth / 1e6:.2f} MB '
          f'({patch_bytes / 1e6:.1f} MB of patches)')
    assert len(traced) == 8 and growth < patch_bytes / 4
    expected = build_reference_map(corridor_model, [f.rgb for f in drive.frames],
                                   list(ref_map.references))
    np.testing.assert_array_equal(ref_map.patches[0], expected.patches[0])
    np.testing.assert_allclose(ref_map.global_desc, expected.global_desc, rtol=0, atol=1e-6)


def test_built_map_checksums_its_model_and_the_next_build_clears_dead_leftovers(
        five, corridor_model, tmp_path, capsys):
    """model.pth.tar is in the manifest: a flipped byte is named as a damaged model, not read
    as another model; the CLI's next build reports and removes a dead build's folder."""
    bag = write_bag(tmp_path / 'd', 'mcap', [(float(i), 'cam', im) for i, im in
                                             enumerate(five[:3])],
                    poses=_odom([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]))
    out = tmp_path / 'map'
    build_map(read_bag_drive(bag, '/camera/image_raw', '/odom', SIZE), out,
              config=corridor_model.config, checkpoint=corridor_model.checkpoint_path)
    manifest = json.loads((out / 'manifest.json').read_text())
    model_file = map_model_path(out)
    assert manifest['files'][model_file.name] == {'sha256': sha256_file(model_file),
                                                  'bytes': model_file.stat().st_size}
    ReferenceMap.load(out)
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01                   # inside a weight tensor
    model_file.write_bytes(bytes(data))
    with pytest.raises(MapError, match="the map's model model.pth.tar fails its SHA-256 check"):
        ReferenceMap.load(out)
    loaded = ReferenceMap.load(out, verify=False)  # the node's fast start: sizes only ...
    with pytest.raises(MapError, match="the map's model model.pth.tar fails its SHA-256 check"):
        resolve_map_model(out, loaded.config)      # ... the model is still checked
    # a build killed mid-way: the next build of this map says so and frees the disk
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()
    dead = tmp_path / f'.map.tmp-{gone.pid}'
    dead.mkdir()
    (dead / 'patches_0.npy').write_bytes(b'\0' * 3_000_000)
    assert build_map_cli.main([str(out), '--bag', str(bag), '--checkpoint',
                               str(corridor_model.checkpoint_path), '--image-size', '320x240',
                               '--min-distance', '0']) == 0
    err = capsys.readouterr().err
    assert (f'warning: removing .map.tmp-{gone.pid} (temporary folder, 3.0 MB; its writer, '
            f'process {gone.pid}, is gone)') in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['d', 'map']
    ReferenceMap.load(out)                         # its own model again, checksummed
