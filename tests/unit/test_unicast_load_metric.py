"""bench.unicast_load's missed-message count from kernel arrival times (pure arithmetic)."""

from __future__ import annotations

from bench.unicast_load import missed_syncs

S = 1_000_000_000
T0, T1 = 100 * S, 110 * S  # a 10 s window


def arrivals(phase_ns: int, skip: set[int] = frozenset(), jitter_ns: int = 0) -> list[int]:
    return [T0 + phase_ns + k * S + (jitter_ns if k % 2 else -jitter_ns) for k in range(-1, 11) if k not in skip]


def test_every_sync_on_time_is_no_miss_whatever_the_phase_and_jitter():
    for phase in (0, 1, S // 2, S - 1):
        assert missed_syncs(arrivals(phase, jitter_ns=30_000_000), T0, T1) == 0


def test_inner_and_edge_losses_are_counted():
    assert missed_syncs(arrivals(S // 2, skip={3}), T0, T1) == 1
    assert missed_syncs(arrivals(S // 2, skip={3, 4, 7}), T0, T1) == 3
    assert missed_syncs(arrivals(S // 2, skip={0}), T0, T1) == 1  # first of the window
    assert missed_syncs(arrivals(S // 2, skip={9}), T0, T1) == 1  # last of the window


def test_silent_client_missed_the_whole_window_and_outside_arrivals_do_not_count():
    assert missed_syncs([], T0, T1) == 10
    assert missed_syncs([T0 - 1, T1 + 1], T0, T1) == 10
