# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Map folders that cannot silently go wrong: descriptor values, the manifest's schema,
crash-safe commits (real processes killed in the commit window) and leftover folders."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from patch_netvlad_ros.cli import map_tool
from patch_netvlad_ros.core.config import get_config
from patch_netvlad_ros.core.errors import MapError
from patch_netvlad_ros.core.maps import database, map_folder
from patch_netvlad_ros.core.maps.database import MapWriter, Reference, ReferenceMap
from patch_netvlad_ros.core.model.backbone import sha256_file

CFG = get_config('storage', image_height=16 * 8, image_width=16 * 10, num_pcs=32)
TEST_DIR = Path(__file__).resolve().parent


def synthetic_map(n: int, seed: int = 0) -> ReferenceMap:
    """A map of n references: unit-norm random global rows, unit-norm random patches."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, CFG.num_pcs))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = rng.normal(size=(n, CFG.num_patches(0), CFG.num_pcs))
    p /= np.linalg.norm(p, axis=2, keepdims=True)
    refs = [Reference(id=f's{seed}-{i}', stamp=float(i), x=float(i), y=-0.5 * i)
            for i in range(n)]
    return ReferenceMap(CFG, f'digest{seed}', refs, g.astype(np.float32),
                        [p.astype(np.float16)])


def assert_same_map(loaded: ReferenceMap, expected: ReferenceMap) -> None:
    assert loaded.references == expected.references
    assert loaded.model_digest == expected.model_digest
    np.testing.assert_array_equal(loaded.global_desc, expected.global_desc)
    np.testing.assert_array_equal(loaded.patches[0], expected.patches[0])


def rewrite_with_checksums(path: Path, name: str, change) -> None:
    """Edit one array of a saved map in place and update its manifest entry to match."""
    arr = np.load(path / name, mmap_mode='r+')
    change(arr)
    arr.flush()
    del arr
    manifest = json.loads((path / 'manifest.json').read_text())
    manifest['files'][name] = {'sha256': sha256_file(path / name),
                               'bytes': (path / name).stat().st_size}
    (path / 'manifest.json').write_text(json.dumps(manifest))


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


# ------------------------------------------------------------------ descriptor values
@pytest.mark.parametrize('verify', [True, False])
def test_nan_in_patches_with_updated_checksums_is_refused_on_load(tmp_path, verify):
    """The reported map: one NaN in the patches, checksums updated: named, not loaded."""
    path = synthetic_map(12).save(tmp_path / 'map')

    def one_nan(arr):
        arr[7, 3, 5] = np.nan
    rewrite_with_checksums(path, 'patches_0.npy', one_nan)
    with pytest.raises(MapError, match=r'patches_0.npy: 1 reference\(s\) hold NaN or Inf '
                                       r"values: row 7 \(id 's0-7'\).*rebuild the map"):
        ReferenceMap.load(path, verify=verify)
    # explicitly skipped (a map known to be good): loads, the NaN is there
    loaded = ReferenceMap.load(path, verify=verify, check_values=False)
    assert np.isnan(loaded.patches[0][7, 3, 5])


def test_bad_global_rows_are_named_on_load(tmp_path):
    path = synthetic_map(12).save(tmp_path / 'map')

    def damage(arr):
        arr[2] *= 1.5                               # not unit length
        arr[9, 0] = np.inf
        arr[11] = 0.0
    rewrite_with_checksums(path, 'global.npy', damage)
    with pytest.raises(MapError, match=r'global.npy: 3 reference\(s\) hold NaN or Inf values '
                                       r"or a length other than 1: row 2 \(id 's0-2'\), "
                                       r"row 9 \(id 's0-9'\), row 11"):
        ReferenceMap.load(path, verify=False)


def test_values_are_checked_in_bounded_chunks(tmp_path, monkeypatch):
    """Bad rows in every chunk are found; memory stays at one chunk, not the array."""
    ref_map = synthetic_map(3000, seed=1)
    path = ref_map.save(tmp_path / 'map')
    arrays = database._open_arrays(path, CFG, 3000)
    patch_bytes = arrays[1].nbytes
    sha = json.loads((path / 'manifest.json').read_text())['files']['patches_0.npy']['sha256']

    def scan_peak(chunk_bytes):
        """Traced peak (bytes) of hashing and checking the patch file in chunks."""
        monkeypatch.setattr(database, 'CHECK_BYTES', chunk_bytes)
        tracemalloc.start()
        try:
            database._scan_array(path / 'patches_0.npy', arrays[1], sha, True,
                                 ref_map.references)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    small, whole = scan_peak(64 << 10), scan_peak(64 << 20)
    print(f'peak {small / 1e3:.0f} kB in 64 kB chunks, {whole / 1e6:.1f} MB in one, checking '
          f'{patch_bytes / 1e6:.1f} MB of patches')
    assert patch_bytes > 4e6 and whole > patch_bytes and small < 2 * (64 << 10)
    monkeypatch.setattr(database, 'CHECK_BYTES', 64 << 10)
    row_bytes = CFG.num_patches(0) * CFG.num_pcs * 2
    per_chunk = (64 << 10) // row_bytes
    bad = [0, per_chunk - 1, per_chunk, 3 * per_chunk + 1, 2999]

    def spread(arr):
        for r in bad:
            arr[r, r % CFG.num_patches(0), 0] = -np.inf
    rewrite_with_checksums(path, 'patches_0.npy', spread)
    with pytest.raises(MapError, match=r'5 reference\(s\) hold NaN or Inf values: '
                       + ', '.join(rf"row {r} \(id 's1-{r}'\)" for r in bad)):
        ReferenceMap.load(path, verify=False)


def test_writer_refuses_bad_rows_naming_them_and_writes_nothing_of_the_batch(tmp_path):
    ref_map = synthetic_map(8)
    g, p = np.array(ref_map.global_desc), np.array(ref_map.patches[0], np.float32)
    with MapWriter(tmp_path / 'map', CFG, 'digest0', 8) as writer:
        writer.append(g[:3], [p[:3]])
        bad_g = g[3:6].copy()
        bad_g[1] *= 2.0
        with pytest.raises(MapError, match=r'global descriptors of map row 4 are not finite '
                                           r'unit vectors \(lengths \[2.0'):
            writer.append(bad_g, [p[3:6]])
        bad_p = p[3:6].copy()
        bad_p[2, 0, 0] = 1e5                        # finite in float32, Inf as float16
        bad_p[0, 1, 1] = np.nan
        with pytest.raises(MapError, match=r'patch descriptors \(scale 0\) of map row 3, '
                                           r'row 5 hold NaN or Inf \(as float16\)'):
            writer.append(g[3:6], [bad_p])
        assert writer.filled == 3
        writer.append(g[3:], [p[3:]])
        path = writer.commit(ref_map.references)
    assert_same_map(ReferenceMap.load(path), ref_map)
    with pytest.raises(MapError, match='global descriptors of map row 0'):
        ReferenceMap(CFG, 'd', ref_map.references[:1], np.zeros((1, CFG.num_pcs), np.float32),
                     [p[:1].astype(np.float16)]).save(tmp_path / 'zero')
    assert sorted(x.name for x in tmp_path.iterdir()) == ['map']


# ------------------------------------------------------------------ manifest schema
def edit(path, change):
    manifest = json.loads((path / 'manifest.json').read_text())
    change(manifest)
    (path / 'manifest.json').write_text(json.dumps(manifest))


def _set(*keys_value):
    *keys, value = keys_value

    def change(m):
        for k in keys[:-1]:
            m = m[k]
        m[keys[-1]] = value
    return change


def _delete(*keys):
    def change(m):
        for k in keys[:-1]:
            m = m[k]
        del m[keys[-1]]
    return change


@pytest.mark.parametrize('change,message', [
    (_delete('files'), r"'files' must be an object: file name -> \{sha256, bytes\}; it is "
                       'missing'),
    (_set('format_version', '2'), r"'format_version' must be an integer \(one of 1, 2, 3\); "
                                  r"got the string '2'"),
    (_set('format_version', True), r"'format_version' must be an integer"),
    (_set('config', 'preset', 'fast'), r"'config.preset' must be a known preset \(one of "
                                       r"\['performance', 'speed', 'storage'\]\); got the "
                                       "string 'fast'"),
    (_set('config', 'colour', 1), r"'config.colour' must be a PatchNetVLADConfig field"),
    (_set('config', 'num_pcs', -3), r'config is not a valid configuration \(num_pcs must be '
                                    'a positive integer'),
    (_set('config', 'patch_sizes', 5), r"'config.patch_sizes' must be a list of numbers; got "
                                       'int 5'),
    (_set('identity', 'num_pcs', 64), r"'identity.num_pcs' must be the config's num_pcs 32 "
                                      r'\(the two disagree\); got int 64'),
    (_delete('identity', 'model_digest'), r"'identity.model_digest' must be a non-empty "
                                          'string; it is missing'),
    (_set('num_references', 13), r'references.csv: 12 references, the manifest says 13'),
    (_set('num_references', -1), r"'num_references' must be an integer >= 0; got int -1"),
    (_set('index_kind', 'hnsw'), r"'index_kind' must be null or one of \['flat', 'ivf', "
                                 r"'ivfpq'\]; got the string 'hnsw'"),
    (_delete('files', 'patches_0.npy'), r"'files.patches_0.npy' must be listed \(every map "
                                        'has patches_0.npy'),
    (_delete('files', 'global.faiss'), r"'files.global.faiss' must be listed .*index_kind "
                                       "'flat' needs it"),
    (_set('files', '../x.npy', {'sha256': '0' * 64, 'bytes': 0}),
     r"'files\['../x.npy'\]' must be named by a plain file name of the folder"),
    (_set('files', 'global.npy', 'sha256', 'abc'), r"'files.global.npy.sha256' must be 64 "
                                                   'lowercase hex digits'),
    (_set('files', 'global.npy', 'bytes', '12'), r"'files.global.npy.bytes' must be an "
                                                 "integer >= 0; got the string '12'"),
    (_set('patch_dtype', 'float32'), r"'patch_dtype' must be 'float16'"),
    (_set('meta', []), r"'meta' must be an object; got list"),
])
def test_manifest_schema_errors_name_the_key(tmp_path, change, message):
    path = synthetic_map(12).save(tmp_path / 'map')
    edit(path, change)
    with pytest.raises(MapError, match=message):
        ReferenceMap.load(path)


def test_manifest_that_is_not_an_object_and_a_bad_references_table(tmp_path):
    path = synthetic_map(3).save(tmp_path / 'map')
    (path / 'manifest.json').write_text('[1, 2]')
    with pytest.raises(MapError, match=r"'\(top level\)' must be a JSON object; got list"):
        ReferenceMap.load(path)
    path = synthetic_map(3).save(tmp_path / 'map')
    table = path / 'references.csv'
    rows = table.read_text().splitlines()
    for lines, message in (([rows[0], rows[1], rows[1], rows[3]], 'line 3: reference id '
                            "'s0-0' is not unique"),
                           ([rows[0], rows[1], rows[2], ','.join(
                               rows[3].split(',')[:2] + ['soon'] + rows[3].split(',')[3:])],
                            r"line 4: could not convert string to float: 'soon'"),
                           ([rows[0], rows[1], rows[2]], '2 references, the manifest says 3')):
        table.write_text('\n'.join(lines) + '\n')

        def update(m):
            m['files']['references.csv'] = {'sha256': sha256_file(table),
                                            'bytes': table.stat().st_size}
        edit(path, update)
        with pytest.raises(MapError, match=message):
            ReferenceMap.load(path)


def test_format_2_map_still_loads_and_says_its_model_is_unchecked(tmp_path):
    ref_map = synthetic_map(5)
    path = ref_map.save(tmp_path / 'map')
    (path / 'model.pth.tar').write_bytes(b'not covered by format 2')

    def to_v2(m):
        m['format_version'] = 2
    edit(path, to_v2)
    said = []
    assert_same_map(ReferenceMap.load(path, log=said.append), ref_map)
    assert said == [f'{path}: model.pth.tar is not covered by the checksums of this format-2 '
                    'map (format 3 maps cover it): a damaged model would read as another '
                    'model; rebuild the map to have it checked']


def test_every_file_of_the_folder_is_in_the_manifest(tmp_path):
    """Files put into the writer's folder (the model) are listed with size and SHA-256."""
    ref_map = synthetic_map(4)
    with MapWriter(tmp_path / 'map', CFG, 'digest0', 4) as writer:
        writer.append_map(ref_map)
        (writer.folder / 'model.pth.tar').write_bytes(b'weights' * 100)
        path = writer.commit(ref_map.references)
    manifest = json.loads((path / 'manifest.json').read_text())
    assert manifest['format_version'] == database.FORMAT_VERSION == 3
    assert sorted(manifest['files']) == sorted(p.name for p in path.iterdir()
                                               if p.name != 'manifest.json')
    assert manifest['files']['model.pth.tar'] == {'sha256': sha256_file(path / 'model.pth.tar'),
                                                  'bytes': 700}
    data = bytearray((path / 'model.pth.tar').read_bytes())
    data[3] ^= 1
    (path / 'model.pth.tar').write_bytes(bytes(data))
    with pytest.raises(MapError, match="the map's model model.pth.tar fails its SHA-256 check "
                                       r'\(corrupted\): copy the checkpoint'):
        ReferenceMap.load(path)
    with pytest.raises(MapError, match="the map's model model.pth.tar fails its SHA-256"):
        database.check_map_file(path, 'model.pth.tar')


# ------------------------------------------------------------ crash-safe commits
CHILD = '''
import os, signal, sys
sys.path.insert(0, {test_dir!r})
from test_map_safety import synthetic_map
from patch_netvlad_ros.core.maps import map_folder
mode, path = {mode!r}, {path!r}
if mode in ('between renames', 'first commit'):
    map_folder._RENAMEAT2 = None          # as on a file system that cannot swap folders
    real_rename = os.rename

    def rename(src, dst):                 # SIGKILL where the new map would be renamed in
        if os.fspath(dst) == path:
            os.kill(os.getpid(), signal.SIGKILL)
        real_rename(src, dst)
    os.rename = rename
elif mode == 'after swap':
    import shutil
    real_rmtree = shutil.rmtree

    def rmtree(folder, *args, **kwargs):  # SIGKILL before the swapped-out old map is removed
        if '.tmp-' in os.fspath(folder):
            os.kill(os.getpid(), signal.SIGKILL)
        real_rmtree(folder, *args, **kwargs)
    shutil.rmtree = rmtree
elif mode == 'mid build':
    from patch_netvlad_ros.core.maps import database
    real_append = database.MapWriter.append

    def append(self, *args):              # SIGKILL after the first rows were written
        real_append(self, *args)
        os.kill(os.getpid(), signal.SIGKILL)
    database.MapWriter.append = append
    database.MapWriter.COPY_ROWS = 4
synthetic_map(20, seed=2).save(path)
'''


def run_killed_child(path: Path, mode: str) -> int:
    """Save synthetic_map(20, seed=2) at path in a child process SIGKILLed at ``mode``."""
    code = textwrap.dedent(CHILD.format(test_dir=str(TEST_DIR), mode=mode, path=str(path)))
    child = subprocess.Popen([sys.executable, '-c', code], stderr=subprocess.PIPE, text=True)
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    return child.pid


def test_kill_between_the_two_renames_recovers_the_new_map(tmp_path):
    """Fallback commit killed with no map in place: load puts the complete new map back."""
    path = tmp_path / 'map'
    synthetic_map(12).save(path)
    pid = run_killed_child(path, 'between renames')
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'.map.old-{pid}', f'.map.tmp-{pid}']
    said = []
    loaded = ReferenceMap.load(path, log=said.append)
    assert_same_map(loaded, synthetic_map(20, seed=2))
    assert said[0] == (f'RECOVERED the map at {path} from .map.tmp-{pid}: the new map of a '
                       'commit interrupted before it was renamed into place; its checksums '
                       'and values verify')
    assert said[1].startswith(f'{path}: an interrupted build left .map.old-{pid} (replaced '
                              'map, ') and f'its writer, process {pid}, is gone' in said[1]
    # the map command removes what is left
    assert map_tool.main(['clean', str(path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map']


def test_kill_between_the_two_renames_with_a_damaged_new_map_keeps_the_old(tmp_path):
    path = tmp_path / 'map'
    old = synthetic_map(12)
    old.save(path)
    pid = run_killed_child(path, 'between renames')
    new = tmp_path / f'.map.tmp-{pid}'
    data = bytearray((new / 'patches_0.npy').read_bytes())
    data[-3] ^= 0x10
    (new / 'patches_0.npy').write_bytes(bytes(data))
    said = []
    assert_same_map(ReferenceMap.load(path, log=said.append), old)
    assert said[0].startswith(f'{path}: not recovering .map.tmp-{pid}: ')
    assert 'patches_0.npy fails its SHA-256 check' in said[0]
    assert said[1].startswith(f'RECOVERED the map at {path} from .map.old-{pid}: the '
                              'previous map')


def test_kill_before_a_first_commit_is_renamed_recovers_it_with_the_command(tmp_path, capsys):
    path = tmp_path / 'map'
    pid = run_killed_child(path, 'first commit')
    assert [p.name for p in tmp_path.iterdir()] == [f'.map.tmp-{pid}']
    assert map_tool.main(['check', str(path)]) == 2        # check only reads
    err = capsys.readouterr().err
    assert err.startswith(f'error: no map at {path}: manifest.json missing (an interrupted '
                          f'build left a temporary folder beside it: .map.tmp-{pid}')
    assert f'`pnv-map recover {path}`' in err
    assert map_tool.main(['recover', str(path)]) == 0
    assert f'RECOVERED the map at {path} from .map.tmp-{pid}' in capsys.readouterr().err
    assert_same_map(ReferenceMap.load(path), synthetic_map(20, seed=2))
    assert map_tool.main(['check', str(path)]) == 0
    assert capsys.readouterr().out.startswith(f'{path}: ok (schema, sizes, SHA-256, '
                                              'descriptor values): format 3, 20 references')


def test_kill_after_the_atomic_swap_leaves_the_new_map_in_place(tmp_path):
    path = tmp_path / 'map'
    synthetic_map(12).save(path)
    pid = run_killed_child(path, 'after swap')
    assert_same_map(ReferenceMap.load(path, log=lambda msg: None), synthetic_map(20, seed=2))
    # the old map, swapped out under the temporary name, is removed by the next writer
    assert_same_map(ReferenceMap.load(tmp_path / f'.map.tmp-{pid}', log=lambda m: None),
                    synthetic_map(12))
    size = map_folder._folder_bytes(tmp_path / f'.map.tmp-{pid}')
    said = []
    synthetic_map(5, seed=3).save(path, log=said.append)
    assert said == [f'removing .map.tmp-{pid} (temporary folder, {size / 1e6:.1f} MB; its '
                    f'writer, process {pid}, is gone)']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map']


def test_killed_build_leaves_a_folder_the_next_build_removes_but_not_a_live_ones(tmp_path):
    path = tmp_path / 'map'
    synthetic_map(12).save(path)
    pid = run_killed_child(path, 'mid build')
    half = tmp_path / f'.map.tmp-{pid}'
    assert half.is_dir() and not (half / 'manifest.json').exists()
    live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        running = tmp_path / f'.map.tmp-{live.pid}'
        running.mkdir()
        (running / 'global.npy').write_bytes(b'being written')
        said = []
        assert_same_map(ReferenceMap.load(path, log=said.append), synthetic_map(12))
        assert said == [
            f'{path}: an interrupted build left .map.tmp-{pid} (temporary folder, '
            f'{map_folder._folder_bytes(half) / 1e6:.1f} MB; its writer, process {pid}, is '
            f'gone) beside the map: `pnv-map clean {path}` (or the next build of this map) '
            'removes it',
            f'{path}: an interrupted build left .map.tmp-{live.pid} (temporary folder, 0.0 MB; '
            f'process {live.pid} still runs) beside the map: `pnv-map clean {path}` (or the next '
            'build of this map) removes it']
        said = []
        synthetic_map(6, seed=4).save(path, log=said.append)
        assert said[0].startswith(f'removing .map.tmp-{pid} (temporary folder, ')
        assert said[1].startswith(f'kept .map.tmp-{live.pid} (temporary folder, ')
        assert sorted(p.name for p in tmp_path.iterdir()) == [f'.map.tmp-{live.pid}', 'map']
        assert len(ReferenceMap.load(path, log=lambda m: None)) == 6
    finally:
        live.kill()
        live.wait()
    assert map_tool.main(['clean', str(path)]) == 0         # now its writer is gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map']


def test_commit_swaps_atomically_and_falls_back_without_leftovers(tmp_path, monkeypatch):
    path = tmp_path / 'map'
    synthetic_map(3).save(path)
    inode = path.stat().st_ino
    folder = map_folder.temp_folder(path)
    folder.mkdir()
    (folder / 'x').write_text('new')
    if sys.platform == 'linux':
        assert map_folder.publish(folder, path) == 'exchange'
        assert (path / 'x').read_text() == 'new' and path.stat().st_ino != inode
    monkeypatch.setattr(map_folder, '_RENAMEAT2', None)
    folder.mkdir()
    (folder / 'x').write_text('newer')
    assert map_folder.publish(folder, path) == 'two renames'
    assert (path / 'x').read_text() == 'newer'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map']
    # the fallback's second rename fails: the old map is put back
    folder.mkdir()
    (folder / 'x').write_text('lost')
    real = os.rename

    def fail_second(src, dst):
        if Path(src) == folder:
            raise OSError(28, 'No space left on device')
        real(src, dst)
    monkeypatch.setattr(os, 'rename', fail_second)
    with pytest.raises(OSError, match='No space left'):
        map_folder.publish(folder, path)
    monkeypatch.undo()
    assert (path / 'x').read_text() == 'newer'


def test_leftovers_of_other_maps_and_unknown_names_are_not_touched(tmp_path):
    path = tmp_path / 'map'
    synthetic_map(3).save(path)
    pid = dead_pid()
    for name in (f'.map2.tmp-{pid}', f'.map.tmp-{pid}x', f'.map.new-{pid}', f'map.tmp-{pid}'):
        (tmp_path / name).mkdir()
    (tmp_path / f'.map.old-{pid}').write_text('a file, not a folder')
    assert map_folder.leftovers(path) == []
    assert map_tool.main(['clean', str(path)]) == 0
    assert len(list(tmp_path.iterdir())) == 6


def test_a_live_process_that_reuses_a_dead_writers_id_does_not_keep_its_folder(tmp_path):
    """After a reboot a writer's PID may be another process's: its start time tells."""
    path = tmp_path / 'map'
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        old = tmp_path / f'.map.tmp-{other.pid}'
        old.mkdir()
        an_hour_ago = old.stat().st_mtime - 3600
        os.utime(old, (an_hour_ago, an_hour_ago))   # made before that process started
        fresh = map_folder.leftovers(path)
        assert [(x.pid, x.alive) for x in fresh] == [(other.pid, False)]
        os.utime(old)                               # made now, while it runs: its own
        assert [x.alive for x in map_folder.leftovers(path)] == [True]
        os.utime(old, (an_hour_ago, an_hour_ago))
        assert [x.folder for x in map_folder.clean_leftovers(path)] == [old]
        assert other.poll() is None                 # the process itself is untouched
    finally:
        other.kill()
        other.wait()


def test_saving_over_a_link_replaces_the_link_and_keeps_its_target(tmp_path):
    target = synthetic_map(3).save(tmp_path / 'office_v1')
    (tmp_path / 'current').symlink_to(target)
    synthetic_map(4, seed=5).save(tmp_path / 'current')
    assert not (tmp_path / 'current').is_symlink()
    assert_same_map(ReferenceMap.load(tmp_path / 'current'), synthetic_map(4, seed=5))
    assert_same_map(ReferenceMap.load(target), synthetic_map(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['current', 'office_v1']
