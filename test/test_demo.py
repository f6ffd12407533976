# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The demo on the shipped drives, offline: what it prints a new user, stage by stage.

The demo's map is built once per run with the cached corridor model (demo_drives.py; the
demo itself bootstraps one from the drive, which takes minutes) and copied where the demo
looks for it, so the demo reuses it. The demo runs once per test run (conftest's
demo_offline): its pnv-evaluate report is also test_evaluate.py's offline side, and graph
mode is covered there.
"""

import json
import re

ROWS = {'global': 'global (retrieval)', 'patches': "patches (authors')",
        'fused': "fused (map's fit)", 'sequence': 'sequence (odometry)'}
NUMBER = r'(-|\d\.\d{3})'


def table_rows(text: str) -> dict:
    """Return the printed stage table: row key -> [R@1, R@5, R@10, R@20, AUC, ECE, R@100%P]."""
    rows = {}
    for key, label in ROWS.items():
        match = re.search(re.escape(label) + r'\s+' + r'\s+'.join([NUMBER] * 7), text)
        assert match, f'no row {label!r} in:\n{text}'
        rows[key] = [None if v == '-' else float(v) for v in match.groups()]
    return rows


def test_demo_offline_prints_every_stage_side_by_side(demo_offline):
    """One table: global, patches, fused (~/match) and sequence (~/pose) on the same frames,
    the numbers of report.json, the sequence best; and what each stage is."""
    status, text, out = demo_offline
    assert status == 0, text
    assert '[1/2] reusing' in text and '[2/2] localising' in text
    rows = table_rows(text)
    report = json.loads((out / 'report.json').read_text())
    for key, row in rows.items():
        want = report['side_by_side'][key]
        assert row[:4] == [round(want['recall'][n], 3) for n in ('1', '5', '10', '20')]
        for value, name in zip(row[4:], ('auc', 'ece', 'recall_at_full_precision')):
            assert value == (None if want[name] is None else round(want[name], 3))
    r1 = {key: row[0] for key, row in rows.items()}
    assert r1['patches'] < r1['global'] < r1['fused'] <= r1['sequence']
    assert r1['fused'] >= 0.90 and r1['sequence'] >= 0.97
    # the answer rows say which topic carries them; the legend explains every row
    assert re.search(re.escape(ROWS['fused']) + r'.*<- ~/match', text)
    assert re.search(re.escape(ROWS['sequence']) + r'.*<- ~/pose', text)
    legend = text[text.index('the stages:'):]
    assert all(f'\n{word} ' in legend for word in ('global', 'patches', 'fused', 'sequence'))
    for plot in ('trajectory', 'recall_at_n', 'reliability', 'reliability_sequence'):
        assert (out / f'{plot}.png').stat().st_size > 1000
