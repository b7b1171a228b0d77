"""The two public core methods the unicast client uses when it switches server:
Clock.forget_foreign_masters (drop a port's foreign-master records but one) and
Clock.run_state_decision (BMCA + state decision now)."""

from __future__ import annotations

import random

import pytest

from controlplane.codec import messages as m
from controlplane.codec.enums import PortState
from controlplane.codec.header import Header
from controlplane.codec.types import PortIdentity
from controlplane.core.actions import ParentChanged, StateChanged
from controlplane.core.clock import Clock, CoreUsageError
from controlplane.core.config import parse

S = 1_000_000_000
GM_A = bytes.fromhex("0200000000000001")  # the better one (priority1 10)
GM_B = bytes.fromhex("0200000000000003")  # priority1 20
SL_ID = bytes.fromhex("0200000000000002")


def announce(sender: bytes, seq: int, prio: int) -> m.Announce:
    return m.Announce(header=Header(sequence_id=seq, source_port_identity=PortIdentity(sender, 1), log_message_interval=0),
                      grandmaster_priority1=prio, grandmaster_identity=sender, steps_removed=0)


def slave_of_two() -> Clock:
    sl = Clock(parse({"global": {"slaveOnly": "1", "logAnnounceInterval": "0"}}), SL_ID, ["eth0"], rng=random.Random(2))
    sl.start(0)
    for k in range(2):
        sl.handle_message(1, announce(GM_B, k, 20), None, k * S)
        sl.handle_message(1, announce(GM_A, k, 10), None, k * S + 1)
    assert sl.parent_ds.grandmaster_identity == GM_A
    return sl


def test_forget_all_but_one_then_the_state_decision_moves_the_parent_at_once():
    sl = slave_of_two()
    keep = PortIdentity(GM_B, 1)
    assert sl.forget_foreign_masters(1, keep=keep) == 1
    assert sl.port(1).foreign.senders() == (keep,)
    assert sl.parent_ds.grandmaster_identity == GM_A  # nothing decided yet
    out = sl.run_state_decision(S + 2)
    assert sl.parent_ds.grandmaster_identity == GM_B
    assert any(isinstance(a, ParentChanged) and a.grandmaster_identity == GM_B for a in out)
    assert sl.forget_foreign_masters(1, keep=keep) == 0  # idempotent


def test_forget_everything_leaves_a_slave_only_port_listening():
    sl = slave_of_two()
    assert sl.forget_foreign_masters(1) == 2
    out = sl.run_state_decision(S + 2)
    assert sl.port(1).state is PortState.LISTENING
    assert any(isinstance(a, StateChanged) and a.new is PortState.LISTENING for a in out)


def test_unknown_port_is_a_usage_error():
    sl = slave_of_two()
    with pytest.raises(CoreUsageError):
        sl.forget_foreign_masters(7)


def test_a_new_parent_gets_a_full_announce_receipt_timeout():
    """After a forced switch the old parent's running announce-receipt timer must not expire on the
    new parent (that cost the unicast client's failover a LISTENING detour of 1-2 s)."""
    from controlplane.core.clock import TimerName

    sl = slave_of_two()
    old_deadline = sl.port(1).timers[TimerName.ANNOUNCE_RECEIPT]
    switch_at = old_deadline - S // 2  # half a second before the old parent's timeout
    sl.forget_foreign_masters(1, keep=PortIdentity(GM_B, 1))
    sl.run_state_decision(switch_at)
    assert sl.parent_ds.grandmaster_identity == GM_B
    assert sl.port(1).timers[TimerName.ANNOUNCE_RECEIPT] >= switch_at + 3 * S
    out = []
    while (d := sl.next_deadline_ns()) is not None and d < switch_at + 2 * S:
        out += sl.handle_timer(d)
    assert sl.port(1).state is not PortState.LISTENING, out
