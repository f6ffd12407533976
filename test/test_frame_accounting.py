# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Frame accounting (ROS-free): loss detectors, the batcher's ledger, the graph ledger.

The batcher's counters are checked against a brute-force record of every frame's fate in
a random simulation; the detectors against losses the test makes itself.
"""

import cv2
import numpy as np
import pytest

from patch_netvlad_ros.core.errors import ImageError
from patch_netvlad_ros.core.graph.accounting import (DROP_REASONS, ERROR, graph_ledger,
                                                     LevelTracker, node_balance, OK, SequenceGaps,
                                                     StampGaps, UpstreamLoss, WARN)
from patch_netvlad_ros.core.graph.batching import FrameBatcher
from patch_netvlad_ros.core.graph.image_limits import (check_pixels, compressed_dimensions,
                                                       DEFAULT_MAX_PIXELS, OversizedImage)
from patch_netvlad_ros.core.model.image import load_image


def test_sequence_gaps_count_missed_messages_per_publisher():
    """Gaps per publisher; a new or restarted publisher starts afresh; None: unsupported."""
    gaps = SequenceGaps()
    assert gaps.supported is None
    got = [gaps.update('a', s) for s in (5, 6, 9, 10)]  # joined late at 5: 7, 8 missed
    assert got == [0, 0, 2, 0]
    assert [gaps.update('b', s) for s in (1, 4)] == [0, 2]  # interleaved, own numbering
    assert gaps.update('a', 1) == 0  # restarted publisher: no gap, no negative count
    assert gaps.update('a', 3) == 1
    assert gaps.missed == 5 and gaps.supported is True
    unsupported = SequenceGaps()
    assert unsupported.update('a', None) == 0 and unsupported.update('a', 2 ** 64 - 1) == 0
    assert unsupported.supported is False and unsupported.missed == 0


def test_stamp_gaps_estimate_missing_frames_of_a_steady_camera(rng):
    """30 Hz with jitter: the frames the test removed are estimated; none before warm-up."""
    period = 1 / 30
    stamps = 100.0 + np.arange(600) * period + rng.uniform(-0.003, 0.003, 600)
    removed = set(rng.choice(np.arange(20, 600), 60, replace=False).tolist())
    removed |= {300, 301, 302, 303}  # a burst of four
    est = StampGaps()
    for i, t in enumerate(stamps):
        if i not in removed:
            est.update(float(t))
    assert est.missing == len(removed)
    assert est.period == pytest.approx(period, abs=0.002)
    # Stamps going back (a looped bag) restart the estimate instead of counting.
    assert est.update(50.0) == 0 and est.period is None
    early = StampGaps(warmup=8)
    for t in (0.0, 0.1, 0.3):  # a gap before any period is known: not estimated
        early.update(t)
    assert early.missing == 0


def test_upstream_loss_takes_the_larger_exact_count():
    """Sequence gaps see every cause but not trailing losses; DDS events see those."""
    up = UpstreamLoss()
    for s in (1, 2, 5):
        up.sequence.update('cam', s)
    assert up.lost == 2
    # Every later frame lost in fragments: no sequence gap shows, DDS events do. Fast DDS
    # reported 2^31 - 1 for one lost sample here: an implausible change counts as one.
    assert [up.add_dds_event(n) for n in (3, 2 ** 31 - 1, 1, 2 ** 64 - 2 ** 31, 2)] == \
        [3, 1, 1, 1, 2]
    assert up.lost == 8 and up.dds_events == 5
    c = up.counters()
    assert (c['upstream_lost'], c['upstream_lost_sequence'], c['upstream_lost_dds']) == (8, 2, 8)
    assert 'sequence' in c['upstream_method']


def _simulate(rng, steps, lose_batch, late_ack, invalid, oversized):
    """Random frames, acks, lost and late acks; returns the batcher and each frame's fate."""
    b = FrameBatcher(batch_size=3, max_age_s=0.25, capacity=7, max_in_flight=2,
                     ack_timeout_s=1.0)
    fate = {}
    batches = {}
    pending = []    # (ack time, sequence)
    frame = 0
    for step in range(steps):
        now = step / 32
        r = rng.random()
        if r < invalid:
            b.count_invalid()
            fate[frame] = 'invalid'
        elif r < invalid + oversized:
            b.count_oversized()
            fate[frame] = 'oversized'
        else:
            b.push(frame, now)
            fate[frame] = 'buffered'
        frame += 1
        for _, seq in [p for p in pending if p[0] <= now]:
            pending.remove((_, seq))
            b.ack(seq)
            for f in batches[seq]:
                fate[f] = 'acked'
        taken = b.take(now)
        if taken is not None:
            seq, frames = taken
            batches[seq] = frames
            for f in frames:
                fate[f] = 'sent'
            u = rng.random()
            if u < lose_batch:
                pass  # never acknowledged
            elif u < lose_batch + late_ack:
                pending.append((now + 1.5, seq))   # after the 1 s timeout
            else:
                pending.append((now + rng.uniform(0.05, 0.5), seq))
        # Frames pushed out of the buffer are the oldest buffered ones.
        buffered = sorted(f for f, s in fate.items() if s == 'buffered')
        for f in buffered[:len(buffered) - len(b)]:
            fate[f] = 'backpressure'
        assert node_balance('camera_batcher', b.counters()) == 0
    return b, fate, batches


def test_batcher_counters_match_every_frames_fate(rng):
    """Brute force: each frame's fate tracked by the test equals the batcher's counters."""
    b, fate, batches = _simulate(rng, 4000, lose_batch=0.1, late_ack=0.1, invalid=0.05,
                                 oversized=0.02)
    b.expire(10_000.0)  # anything still unacknowledged has timed out by now
    given_up = {f for seq, frames in batches.items() for f in frames if fate[f] == 'sent'}
    states = {s: sum(1 for v in fate.values() if v == s) for s in set(fate.values())}
    c = b.counters()
    assert c['received'] == len(fate) == 4000
    assert c['dropped_invalid'] == states['invalid']
    assert c['dropped_oversized'] == states['oversized']
    assert c['dropped_backpressure'] == states['backpressure']
    assert c['acked'] == states['acked']   # late acks included
    assert c['dropped_ack_timeout'] == len(given_up) > 0
    assert c['late_acks'] > 0
    assert c['buffered'] == states.get('buffered', 0) == len(b)
    assert c['in_flight'] == 0


def _counters(b_received=100, answered=60, **over):
    """A consistent set of node counters (every stage settled) with losses at each stage."""
    batcher = {'received': b_received, 'dropped_invalid': 3, 'dropped_oversized': 2,
               'dropped_backpressure': 20, 'buffered': 0, 'sent': 75, 'in_flight': 0,
               'acked': 70, 'dropped_ack_timeout': 5, 'upstream_lost': 4,
               'upstream_lost_sequence': 4, 'upstream_lost_dds': 0,
               'upstream_lost_stamps_estimate': 3, 'upstream_method': 'seq'}
    descriptor = {'batches': 20, 'frames': 70, 'described': 66, 'failed': 4, 'describing': 0,
                  'batches_missed': 1}
    localizer = {'received': 65, 'answered': answered, 'rejected': 65 - answered, 'missed': 1}
    for key, value in over.items():
        node, name = key.split('__')
        {'b': batcher, 'd': descriptor, 'l': localizer}[node][name] = value
    return {'camera_batcher': batcher, 'descriptor_node': descriptor,
            'localizer_node': localizer}


def test_graph_ledger_adds_up_and_names_every_reason():
    """Settled graph: received = answered + drops; each reason read from its node."""
    ledger = graph_ledger(_counters())
    assert ledger['received'] == 100 and ledger['answered'] == 60
    assert ledger['dropped'] == {'invalid_encoding': 3, 'oversized': 2, 'backpressure': 20,
                                 'ack_timeout': 5, 'descriptor_failure': 4,
                                 'descriptor_transport': 1, 'localizer_rejection': 5}
    assert set(ledger['dropped']) == set(DROP_REASONS)
    assert ledger['received'] == ledger['answered'] + ledger['dropped_total']
    assert ledger['in_flight'] == 0 and ledger['settled'] and ledger['unexplained'] == 0
    assert ledger['node_balance'] == {'camera_batcher': 0, 'descriptor_node': 0,
                                      'localizer_node': 0}
    assert ledger['before_batcher']['upstream_lost'] == 4


def test_graph_ledger_in_flight_stages_and_vanished_frames():
    """Frames on their way show per stage; a frame that vanished never settles."""
    moving = graph_ledger(_counters(b__buffered=2, b__received=102, d__described=64,
                                    d__describing=2, l__received=63, l__rejected=3))
    assert moving['in_flight_by_stage'] == {'batcher_buffer': 2, 'to_descriptor': 2,
                                            'to_localizer': 0}
    assert moving['in_flight'] == 4 and not moving['settled']
    assert moving['received'] == moving['answered'] + moving['dropped_total'] + 4
    # descriptor_node published a frame that localizer_node neither got nor saw missing.
    vanished = graph_ledger(_counters(l__missed=0))
    assert vanished['in_flight_by_stage']['to_localizer'] == 1 and not vanished['settled']


def test_level_tracker_warns_on_losses_and_errors_when_all_are_lost():
    """OK without new losses, WARN with some, ERROR when nothing was passed on for 10 s."""
    level = LevelTracker('camera_batcher', error_after=10.0)
    c = _counters()['camera_batcher']
    assert level(c, 0.0)[0] == WARN  # first report: the losses since start are new
    assert level(dict(c), 1.0)[0] == OK
    more = dict(c, dropped_backpressure=c['dropped_backpressure'] + 3)
    lvl, msg = level(more, 2.0)   # nothing sent for 2 s (a slow batch): still WARN
    assert lvl == WARN and 'dropped_backpressure 3' in msg
    sent = dict(more, dropped_backpressure=more['dropped_backpressure'] + 3,
                sent=more['sent'] + 4)
    assert level(sent, 9.0)[0] == WARN
    lost_all = dict(sent, upstream_lost=sent['upstream_lost'] + 30)
    assert level(lost_all, 18.0)[0] == WARN   # 9 s since a frame was passed on
    lost_more = dict(lost_all, upstream_lost=lost_all['upstream_lost'] + 30)
    lvl, msg = level(lost_more, 19.5)
    assert lvl == ERROR and 'upstream_lost 30' in msg and 'none passed on for 10 s' in msg
    assert level(dict(lost_more), 30.0)[0] == OK   # nothing lost in the last period
    with pytest.raises(ValueError, match='unknown node'):
        LevelTracker('camera')


@pytest.mark.parametrize('ext,flags', [('.jpg', []), ('.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                       ('.png', [])])
def test_compressed_dimensions_from_headers(corridor_set, ext, flags):
    """JPEG (baseline, progressive) and PNG sizes from their headers, as decoded."""
    bgr = load_image(corridor_set.queries[5])[:, :, ::-1]
    for w, h in ((160, 120), (1283, 77), (4100, 4100)):
        ok, data = cv2.imencode(ext, cv2.resize(bgr, (w, h)), flags)
        assert ok
        assert compressed_dimensions(data.tobytes()) == (h, w)
        assert compressed_dimensions(bytearray(data.tobytes())) == (h, w)
    assert compressed_dimensions(b'GIF89a' + bytes(30)) is None
    assert compressed_dimensions(b'\xff\xd8\xff\xda' + bytes(10)) is None  # scan, no frame
    assert compressed_dimensions(b'\xff\xd8') is None


def test_check_pixels_names_the_limit():
    """Frames above the limit raise OversizedImage (an ImageError) naming the parameter."""
    check_pixels(4096, 4096, DEFAULT_MAX_PIXELS)
    with pytest.raises(OversizedImage, match=r'8000x8000 .*max_image_pixels = 16777216'):
        check_pixels(8000, 8000, DEFAULT_MAX_PIXELS)
    assert issubclass(OversizedImage, ImageError)
