# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""FrameBatcher: batches by size and age, credit flow control, bounded buffer (ROS-free)."""

import pytest

from patch_netvlad_ros.core.errors import ConfigError
from patch_netvlad_ros.core.graph.accounting import node_balance
from patch_netvlad_ros.core.graph.batching import FrameBatcher

# Times below are multiples of powers of two, so sums and differences are exact floats.


def check_invariant(b):
    """Every frame received is batched, dropped or still waiting; every batched frame is in
    flight, acknowledged or given up; the counters say the same (node_balance)."""
    s = b.stats
    assert s.received == (s.batched + s.dropped_backpressure + s.dropped_invalid
                          + s.dropped_oversized + len(b))
    assert s.batched == b.in_flight_frames + s.acked + s.dropped_ack_timeout
    assert node_balance('camera_batcher', b.counters()) == 0


def test_batch_by_size_exactly_batch_size_oldest_first():
    """A batch leaves once batch_size frames wait; it holds exactly those, oldest first."""
    b = FrameBatcher(batch_size=3, max_age_s=10.0, capacity=10, max_in_flight=0)
    assert b.take(0.0) is None
    b.push('a', 0.0)
    b.push('b', 0.125)
    assert b.take(0.25) is None
    assert len(b) == 2
    b.push('c', 0.25)
    assert b.take(0.25) == (1, ['a', 'b', 'c'])
    assert len(b) == 0
    for i, name in enumerate('defgh'):
        b.push(name, 1.0 + i / 8)
    assert b.take(1.5) == (2, ['d', 'e', 'f'])
    assert b.take(1.5) is None  # two left, the oldest only 0.25 s old
    assert len(b) == 2
    assert (b.stats.batches, b.stats.batched, b.stats.received) == (2, 6, 8)
    check_invariant(b)


def test_batch_by_age_partial_batch_not_before():
    """A partial batch leaves when the oldest frame has waited max_age_s, not earlier."""
    b = FrameBatcher(batch_size=4, max_age_s=0.5, capacity=8, max_in_flight=0)
    assert b.next_due(0.0) is None
    b.push('a', 1.0)
    b.push('b', 1.25)
    assert b.next_due(1.25) == 0.25
    assert b.next_due(1.375) == 0.125
    assert b.take(1.25) is None
    assert b.take(1.4375) is None
    assert len(b) == 2  # a refused take consumes nothing
    assert b.take(1.5) == (1, ['a', 'b'])
    assert b.next_due(1.5) is None
    # The age clock restarts with the next frame to arrive.
    b.push('c', 2.0)
    assert b.next_due(2.0) == 0.5
    assert b.take(2.25) is None
    assert b.next_due(3.0) == 0.0  # overdue: never negative
    assert b.take(3.0) == (2, ['c'])


def test_batch_by_age_takes_at_most_batch_size():
    """When an old batch is due with more than batch_size frames, only the oldest go."""
    b = FrameBatcher(batch_size=2, max_age_s=0.5, capacity=8, max_in_flight=1)
    for i in range(5):
        b.push(i, i / 16)
    # Blocked by the unacknowledged first batch while the others age.
    assert b.take(0.0) == (1, [0, 1])
    assert b.take(1.0) is None
    assert b.next_due(1.0) == 0.0
    assert b.ack(1)
    assert b.take(1.0) == (2, [2, 3])
    assert b.ack(2)
    assert b.take(1.0) == (3, [4])


def test_age_zero_sends_every_frame_at_once():
    """max_age_s 0: each frame is due as soon as it arrives."""
    b = FrameBatcher(batch_size=4, max_age_s=0.0, capacity=4, max_in_flight=0)
    b.push('x', 5.0)
    assert b.next_due(5.0) == 0.0
    assert b.take(5.0) == (1, ['x'])


def test_credit_flow_control_blocks_until_ack():
    """No batch while max_in_flight are unacknowledged; an ack releases the next one."""
    b = FrameBatcher(batch_size=2, max_age_s=100.0, capacity=10, max_in_flight=1,
                     ack_timeout_s=5.0)
    for i in range(6):
        b.push(i, 0.0)
    assert b.take(0.0) == (1, [0, 1])
    assert b.in_flight == 1
    assert b.take(0.0) is None
    assert b.take(1.0) is None
    assert len(b) == 4
    assert b.ack(1) is True
    assert b.in_flight == 0
    assert b.ack(1) is False  # already acknowledged
    assert b.ack(99) is False  # never sent
    assert b.take(1.0) == (2, [2, 3])
    assert b.in_flight == 1
    assert b.ack(3) is False  # not sent yet
    assert b.take(1.0) is None
    assert b.ack(2) is True
    assert b.take(1.0) == (3, [4, 5])
    assert b.stats.acks_timed_out == 0


def test_credit_flow_control_two_in_flight():
    """With max_in_flight 2, two batches leave, the third waits for any ack."""
    b = FrameBatcher(batch_size=1, max_age_s=100.0, capacity=10, max_in_flight=2)
    for i in range(4):
        b.push(i, 0.0)
    assert b.take(0.0) == (1, [0])
    assert b.take(0.0) == (2, [1])
    assert b.in_flight == 2
    assert b.take(0.0) is None
    assert b.ack(2)  # out of order is fine
    assert b.take(0.0) == (3, [2])
    assert b.take(0.0) is None
    assert b.ack(1)
    assert b.take(0.0) == (4, [3])


def test_max_in_flight_zero_disables_flow_control():
    """max_in_flight 0: batches leave without waiting; acks still account for the frames."""
    b = FrameBatcher(batch_size=1, max_age_s=100.0, capacity=10, max_in_flight=0,
                     ack_timeout_s=5.0)
    for i in range(5):
        b.push(i, 0.0)
    got = [b.take(0.0) for _ in range(5)]
    assert got == [(i + 1, [i]) for i in range(5)]
    assert (b.in_flight, b.in_flight_frames) == (5, 5)
    assert b.ack(1) is True and b.ack(1) is False
    check_invariant(b)
    assert b.take(100.0) is None  # the four unacknowledged batches are given up
    assert (b.in_flight, b.stats.acked, b.stats.dropped_ack_timeout) == (0, 1, 4)
    check_invariant(b)


def test_ack_timeout_frees_the_slot():
    """An ack that never comes is given up after ack_timeout_s and counted."""
    b = FrameBatcher(batch_size=2, max_age_s=100.0, capacity=10, max_in_flight=1,
                     ack_timeout_s=2.0)
    b.push('a', 0.0)
    b.push('b', 0.0)
    assert b.take(0.0) == (1, ['a', 'b'])
    b.push('c', 1.0)
    b.push('d', 1.0)
    assert b.take(1.0) is None
    assert b.take(1.75) is None
    assert b.stats.acks_timed_out == 0
    assert b.take(2.5) == (2, ['c', 'd'])
    assert b.stats.acks_timed_out == 1
    assert b.in_flight == 1  # batch 2 now
    assert (b.stats.dropped_ack_timeout, b.stats.acked) == (2, 0)
    check_invariant(b)
    assert b.ack(1) is False  # the late ack of the given-up batch: it held no slot...
    # ...but its frames were delivered after all: they move back from given up to acked.
    assert (b.stats.dropped_ack_timeout, b.stats.acked, b.stats.late_acks) == (0, 2, 1)
    assert b.ack(1) is False and b.stats.acked == 2  # counted once
    assert b.ack(2) is True
    assert b.stats.acks_timed_out == 1
    assert (b.stats.acked, b.stats.dropped_ack_timeout) == (4, 0)
    check_invariant(b)


def test_acknowledged_batches_never_time_out():
    """Acked batches do not count as timed out however long after."""
    b = FrameBatcher(batch_size=1, max_age_s=100.0, capacity=4, max_in_flight=1,
                     ack_timeout_s=1.0)
    b.push(0, 0.0)
    assert b.take(0.0) == (1, [0])
    assert b.ack(1)
    b.push(1, 50.0)
    assert b.take(50.0) == (2, [1])
    assert b.stats.acks_timed_out == 0


def test_bounded_buffer_newest_win_under_back_pressure():
    """1000 frames, no acks: memory stays bounded, the oldest are dropped, counts add up."""
    capacity = 8
    b = FrameBatcher(batch_size=4, max_age_s=0.25, capacity=capacity, max_in_flight=1,
                     ack_timeout_s=1e9)
    sent = []
    for i in range(1000):
        now = i / 128
        b.push(i, now)
        assert len(b) <= capacity
        taken = b.take(now)
        if taken is not None:
            sent.append(taken)
        check_invariant(b)
    # Only the first batch (the first 4 frames, full at i = 3) left; it is never acked.
    assert sent == [(1, [0, 1, 2, 3])]
    s = b.stats
    assert len(b) == capacity
    assert s.received == 1000
    assert s.batched == 4
    assert s.dropped_backpressure == s.received - capacity - s.batched == 988
    assert s.dropped_invalid == 0
    # The frames still waiting are the newest ones, oldest first.
    assert b.ack(1)
    assert b.take(1000.0) == (2, [992, 993, 994, 995])
    assert b.ack(2)
    assert b.take(1000.0) == (3, [996, 997, 998, 999])
    assert len(b) == 0
    check_invariant(b)


def test_back_pressure_with_timeouts_and_invalid_frames():
    """With timeouts releasing batches and invalid frames, every frame is accounted for."""
    capacity = 6
    b = FrameBatcher(batch_size=3, max_age_s=0.5, capacity=capacity, max_in_flight=1,
                     ack_timeout_s=1.0)
    batched = []
    invalid = 0
    for i in range(1000):
        now = i / 64
        if i % 7 == 0:
            b.count_invalid()
            invalid += 1
        else:
            b.push(i, now)
        assert len(b) <= capacity
        taken = b.take(now)
        if taken is not None:
            batched.extend(taken[1])
        check_invariant(b)
    s = b.stats
    assert s.dropped_invalid == invalid == 143
    assert s.batched == len(batched)
    assert s.acks_timed_out == s.batches - 1  # nothing is ever acked
    # FIFO: batched frames keep their order and the waiting ones are the newest valid ones.
    assert batched == sorted(batched)
    valid = [i for i in range(1000) if i % 7]
    waiting = valid[len(valid) - len(b):]
    assert not set(waiting) & set(batched)
    assert s.dropped_backpressure == len(valid) - len(batched) - len(b)
    drained = []
    now = 10_000.0  # any batch still in flight has timed out by then
    while len(b):
        taken = b.take(now)
        assert taken is not None
        drained.extend(taken[1])
        b.ack(taken[0])
    assert drained == waiting


def test_count_invalid():
    """count_invalid counts a received, dropped frame and buffers nothing."""
    b = FrameBatcher(batch_size=2, max_age_s=1.0, capacity=2)
    b.count_invalid()
    b.count_invalid()
    b.push('a', 0.0)
    assert len(b) == 1
    assert (b.stats.received, b.stats.dropped_invalid, b.stats.dropped_backpressure) == (3, 2, 0)
    check_invariant(b)


def test_capacity_equal_to_batch_size_is_allowed():
    """The smallest buffer holds exactly one batch."""
    b = FrameBatcher(batch_size=3, max_age_s=1.0, capacity=3)
    assert (b.batch_size, b.capacity, b.max_in_flight) == (3, 3, 1)


@pytest.mark.parametrize('kwargs,name', [
    ({'batch_size': 0}, 'batch_size'),
    ({'batch_size': -2}, 'batch_size'),
    ({'max_age_s': -0.1}, 'max_age_s'),
    ({'max_age_s': float('nan')}, 'max_age_s'),
    ({'capacity': 3}, 'capacity'),
    ({'capacity': 0}, 'capacity'),
    ({'max_in_flight': -1}, 'max_in_flight'),
    ({'ack_timeout_s': 0.0}, 'ack_timeout_s'),
    ({'ack_timeout_s': -5.0}, 'ack_timeout_s'),
    ({'ack_timeout_s': float('nan')}, 'ack_timeout_s'),
])
def test_constructor_errors_name_the_parameter(kwargs, name):
    """Invalid settings raise ConfigError naming the parameter."""
    args = {'batch_size': 4, 'max_age_s': 0.25, 'capacity': 8, 'max_in_flight': 1,
            'ack_timeout_s': 5.0}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=name):
        FrameBatcher(**args)
