"""Core fuzzing (a sample; `make fuzz` runs >= 1,000,000 inputs): OC, slave-only, P2P, 3-port BC and
both TCs driven by random sequences of decoded messages (well-formed masters, forged Announces,
mutated bytes, other domains, own identity), timers, TX timestamps (on time, late, twice, never),
faults, port enable/disable and priority changes, with injected time. After every input: no
exception, actions from the closed set and encodable, sequenceIds in range, port states valid, at
most one SLAVE/UNCALIBRATED port, no timer left due after handle_timer, slaveOnly never MASTER,
free_running never adjusts, token table bounded."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bench import fuzz as Z


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(Z.CORE_KINDS), st.integers(0, 2**32 - 1))
def test_clock_random_inputs_keep_invariants(kind, rseed):
    s = Z.CoreStats()
    Z.fuzz_core_clock(random.Random(rseed), 150, s, kind=kind)
    assert not s.failures, "\n".join(s.failures[:5])


def test_seeded_core_run_reaches_every_state():
    s = Z.fuzz_core(random.Random(10), 40_000)
    assert not s.failures, "\n".join(s.failures[:5])
    # the run is not trivially shallow: BMCA, servo and faults were all exercised
    assert {"LISTENING", "MASTER", "SLAVE", "UNCALIBRATED", "FAULTY", "DISABLED"} <= s.states_seen, s.states_seen
    assert s.adjusts > 10 and s.sends > 1000, (s.adjusts, s.sends)


def test_invariant_checker_can_fail():
    """Two SLAVE ports and a due timer are reported (the checker is not vacuous)."""
    from controlplane.codec.enums import PortState

    clock = Z.make_clock("bc3", random.Random(1))
    clock.start(0)
    clock.port(1).ds.port_state = PortState.SLAVE
    clock.port(2).ds.port_state = PortState.SLAVE
    clock.port(3).timers["announce"] = 5
    s = Z.CoreStats()
    Z.check_core_invariants(clock, [], 10, s, ["hand-made"], after_timer=True)
    text = "\n".join(s.failures)
    assert "more than one SLAVE" in text and "still due" in text, text
