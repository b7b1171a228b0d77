"""Hypothesis: virtual-clock maths and delay formulas recover what they should."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.clocks import VirtualClockMath
from controlplane.core.delay import e2e_mean_path_delay, offset_from_master, p2p_mean_link_delay
from controlplane.core.fsm import Event, transition
from controlplane.codec.enums import PortState

ns = st.integers(min_value=0, max_value=10**18)
small = st.integers(min_value=0, max_value=10**7)


@settings(max_examples=300)
@given(ns, st.integers(min_value=-10**9, max_value=10**9), st.lists(st.tuples(st.integers(1, 10**12), st.floats(-1e6, 1e6)), max_size=8))
def test_virtual_clock_continuous_and_monotonic(base0: int, offset: int, steps: list[tuple[int, float]]) -> None:
    c = VirtualClockMath(base0, offset_ns=offset)
    base = base0
    for dt, freq in steps:
        before = c.time(base)
        c.adjust_frequency(freq, base)
        assert abs(c.time(base) - before) <= 1  # a frequency change never jumps the time
        nxt = base + dt
        assert c.time(nxt) >= c.time(base)  # |freq| << 1e9 ppb: time runs forward
        assert abs(c.time(c.to_base(c.time(nxt))) - c.time(nxt)) <= 2
        base = nxt


@settings(max_examples=500)
@given(ns, small, small, st.integers(-10**6, 10**6), st.integers(-10**6, 10**6), small, small)
def test_e2e_recovers_offset_when_symmetric(t1: int, delay: int, gap: int, offset: int, corr: int, tc1: int, tc2: int) -> None:
    """Any symmetric delay plus TC residences (in correction) -> exact offset and path delay."""
    t2 = t1 + delay + tc1 + offset
    t3 = t2 + gap
    t4 = t3 + delay + tc2 - offset
    mpd = e2e_mean_path_delay(t1, t2, t3, t4, tc1, tc2)
    assert abs(mpd - delay) <= 1
    assert abs(offset_from_master(t1, t2, tc1, mpd) - offset) <= 1


@settings(max_examples=500)
@given(ns, small, st.integers(1, 10**8), st.floats(-1e-4, 1e-4))
def test_p2p_recovers_link_delay(t1: int, delay: int, turnaround: int, y: float) -> None:
    """Neighbour clock runs at (1 + y); with the right rate ratio the link delay is exact up to the
    delay's own scale difference (the formula yields it in the responder's time base: delay * y)."""
    r = 1.0 + y
    t4 = t1 + 2 * delay + round(turnaround / r)
    assert abs(p2p_mean_link_delay(t1, 0, turnaround, t4, 0, 0, rate_ratio=r) - delay) <= 2 + delay * abs(y)


@given(st.sampled_from(list(PortState)), st.lists(st.sampled_from(list(Event)), max_size=30), st.booleans())
def test_fsm_slave_only_never_masters(state: PortState, events: list[Event], slave_only: bool) -> None:
    s = PortState.LISTENING
    for e in events:
        s = transition(s, e, slave_only=slave_only)
        if slave_only:
            assert s not in (PortState.MASTER, PortState.PRE_MASTER, PortState.PASSIVE)
