"""bench.unicast_load's missed-message count from kernel arrival times (pure arithmetic)."""

from __future__ import annotations

from bench.unicast_load import slot_count

S = 1_000_000_000
T0, T1 = 100 * S, 110 * S  # a 10 s window


def arrivals(phase_ns: int, skip: frozenset[int] = frozenset(), lag_ns=lambda k: 0) -> list[int]:
    """What the generator records: slots -1..11 around the window (it reads a little past t1)."""
    return [T0 + phase_ns + k * S + lag_ns(k) for k in range(0, 11) if k not in skip and T0 + phase_ns + k * S <= T1 + S // 2]


def test_every_message_on_time_is_no_miss_whatever_the_phase_and_lag():
    for phase in (0, 1, S // 2, S - 10_000_000):  # (within a network delay of an edge, either answer is right)
        for lag in (lambda k: 0, lambda k: 40_000_000 * (k % 3), lambda k: 300_000_000 if k == 9 else 1000):
            expected, got = slot_count(arrivals(phase, lag_ns=lag), T0, T1)
            assert expected == got and expected in (10, 11), (phase, expected, got)


def test_a_slot_sent_before_t1_but_arriving_after_it_still_counts():
    expected, got = slot_count(arrivals(S - 1_000_000, lag_ns=lambda k: 30_000_000 if k == 9 else 0), T0, T1)
    assert (expected, got) == (10, 10)


def test_losses_anywhere_are_counted_also_at_the_edges():
    for skip in ({3}, {3, 4, 7}, {0}, {9}, {0, 9}):
        expected, got = slot_count(arrivals(S // 2, frozenset(skip)), T0, T1)
        assert (expected, expected - got) == (10, len(skip)), skip


def test_silent_client_missed_the_whole_window():
    assert slot_count([], T0, T1) == (10, 0)
