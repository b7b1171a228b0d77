"""UnicastClient rules with injected time: requests, renewal timing, denial back-off, failover,
cancel both ways, R flag, single-server re-negotiation."""

from __future__ import annotations

import pytest

from controlplane.core.unicast import (
    NS_PER_S,
    AcknowledgeCancel,
    ActiveServerChanged,
    Cancel,
    Grant,
    NegotiationEvent,
    Request,
    SendSignaling,
    UnicastConfigError,
    UnicastMessageType as MT,
    UnicastUsageError,
)
from controlplane.core.unicast_client import AnnounceInfo, ClientConfig, UnicastClient

A, B = "10.0.1.1", "fd00:2::1"
T0 = 5_000 * NS_PER_S
CFG = ClientConfig(unicast_req_duration_s=60, log_query_interval=0, log_announce_interval=0,
                   log_sync_interval=-1, log_min_delay_req_interval=0, announce_receipt_timeout=3)


def ann(prio1: int, ident: int, log: int = 0) -> AnnounceInfo:
    cid = ident.to_bytes(8, "big")
    return AnnounceInfo(prio1, 248, 0xFE, 0xFFFF, 128, cid, 0, (cid, 1), log)


def sends(actions, addr=None) -> list[SendSignaling]:
    return [a for a in actions if isinstance(a, SendSignaling) and (addr is None or a.address == addr)]


def requested(actions, addr) -> set[int]:
    return {t.message_type for s in sends(actions, addr) for t in s.tlvs if isinstance(t, Request)}


def changes(actions) -> list[ActiveServerChanged]:
    return [a for a in actions if isinstance(a, ActiveServerChanged)]


def grant_all(c: UnicastClient, actions, now, duration=60, r=True):
    """Answer every request in ``actions`` with a grant; return the client's reactions."""
    out = []
    for s in sends(actions):
        g = [Grant(t.message_type, t.log_inter_message_period, duration, r) for t in s.tlvs if isinstance(t, Request)]
        if g:
            out.extend(c.handle_signaling(s.address, None, g, now))
    return out


def two_server_client(now=T0):
    """Both servers granted Announce and announcing; A (priority1 10) selected with Sync+Delay_Resp."""
    c = UnicastClient([A, B], CFG)
    acts = c.start(now)
    assert requested(acts, A) == {MT.ANNOUNCE} and requested(acts, B) == {MT.ANNOUNCE}
    grant_all(c, acts, now)
    out = c.handle_announce(B, ann(20, 2), now + 1)
    out += c.handle_announce(A, ann(10, 1), now + 2)
    assert c.selected == A
    out += grant_all(c, out, now + 3)
    assert c.granted(A, MT.SYNC) and c.granted(A, MT.DELAY_RESP)
    assert not c.granted(B, MT.SYNC)
    return c


def feed_announces(c, addrs, start, end, step=NS_PER_S):
    out = []
    t = start
    while t <= end:
        for addr, info in addrs:
            out += c.handle_announce(addr, info, t)
        while (d := c.next_deadline_ns()) is not None and d <= t:
            out += c.handle_timer(d)
        t += step
    return out


def test_announce_requested_from_every_server_sync_only_from_best():
    c = two_server_client()
    assert c.accepts(A, MT.SYNC) and not c.accepts(B, MT.SYNC) and c.accepts(B, MT.ANNOUNCE)
    assert not c.accepts("10.9.9.9", MT.ANNOUNCE)
    rows = {r.address: r for r in c.master_table(T0 + 4)}
    assert rows[A].selected and rows[B].qualified and not rows[B].selected


def test_renewal_at_three_quarters_of_granted_duration_in_one_message():
    c = UnicastClient([A], CFG)
    acts = c.start(T0)
    grant_all(c, acts, T0, duration=40)
    out = c.handle_announce(A, ann(10, 1), T0 + 1)
    grant_all(c, out, T0 + 2, duration=40)
    # Announce granted at T0 for 40 s -> renew at T0 + 30 s; Sync/Delay_Resp (T0+2ns) go along.
    early = feed_announces(c, [(A, ann(10, 1))], T0 + NS_PER_S, T0 + 29 * NS_PER_S)
    early += c.handle_timer(T0 + 30 * NS_PER_S - 1)
    assert requested(early, A) == set()
    assert c.next_deadline_ns() == T0 + 30 * NS_PER_S
    due = c.handle_timer(T0 + 30 * NS_PER_S)
    assert len(sends(due, A)) == 1
    assert requested(due, A) == {MT.ANNOUNCE, MT.SYNC, MT.DELAY_RESP}
    evs = grant_all(c, due, T0 + 30 * NS_PER_S + 5, duration=40)
    assert c.counters["renewed"] == 3
    assert [e.kind for e in evs if isinstance(e, NegotiationEvent)] == ["renewed"] * 3


def test_unanswered_renewal_repeats_every_query_interval_then_grant_expires():
    c = UnicastClient([A], CFG)
    grant_all(c, c.start(T0), T0, duration=8)
    t_renew = T0 + 6 * NS_PER_S
    assert requested(c.handle_timer(t_renew), A) == {MT.ANNOUNCE}
    assert requested(c.handle_timer(t_renew + NS_PER_S), A) == {MT.ANNOUNCE}
    out = c.handle_timer(T0 + 8 * NS_PER_S)
    assert [e.kind for e in out if isinstance(e, NegotiationEvent)][0] == "grant_expired"
    assert not c.granted(A, MT.ANNOUNCE) and c.counters["expired"] == 1


def test_denial_backs_off_exponentially_and_lowers_the_rate():
    c = UnicastClient([A], ClientConfig(log_query_interval=0, log_announce_interval=0, max_backoff_s=8,
                                        max_log_inter_message_period=2))
    acts = c.start(T0)
    now = T0
    retries = []
    periods = []
    for _ in range(5):
        (s,) = sends(acts, A)
        (req,) = s.tlvs
        periods.append(req.log_inter_message_period)
        c.handle_signaling(A, None, [Grant(MT.ANNOUNCE, req.log_inter_message_period, 0, False)], now)
        nxt = c.next_deadline_ns()
        retries.append((nxt - now) // NS_PER_S)
        now = nxt
        acts = c.handle_timer(now)
    assert retries == [2, 4, 8, 8, 8]
    assert periods == [0, 1, 2, 2, 2]
    assert c.counters["denied"] == 5
    # a grant resets the back-off
    (s,) = sends(acts, A)
    c.handle_signaling(A, None, [Grant(MT.ANNOUNCE, 2, 60, True)], now)
    assert c.granted(A, MT.ANNOUNCE)


def test_failover_on_announce_timeout_and_revert_on_return():
    c = two_server_client()
    a_ann, b_ann = ann(10, 1), ann(20, 2)
    # both announce for 5 s
    feed_announces(c, [(A, a_ann), (B, b_ann)], T0 + NS_PER_S, T0 + 5 * NS_PER_S)
    assert c.selected == A
    # A dies at 5 s: announce timeout = 3 intervals of 2^0 s after its last announce
    out = []
    t = T0 + 6 * NS_PER_S
    while c.selected == A:
        out += c.handle_announce(B, b_ann, t)
        out += c.handle_timer(t)
        t += NS_PER_S // 4
    switch_ns = t - NS_PER_S // 4
    assert switch_ns - (T0 + 5 * NS_PER_S) == 3 * NS_PER_S
    (ch,) = changes(out)
    assert (ch.old_address, ch.new_address) == (A, B) and ch.port_identity == b_ann.source_port_identity
    assert requested(out, B) == {MT.SYNC, MT.DELAY_RESP}
    # Sync/Delay_Resp given back to A (cancel), not requested again from it
    cancels = [tl for s in sends(out, A) for tl in s.tlvs if isinstance(tl, Cancel)]
    assert {x.message_type for x in cancels} == {MT.SYNC, MT.DELAY_RESP}
    grant_all(c, out, switch_ns + 1)
    assert c.accepts(B, MT.SYNC) and not c.accepts(A, MT.SYNC)
    # A comes back: once it announces again (its Announce grant still lives) the client reverts
    back = c.handle_announce(A, a_ann, switch_ns + 10 * NS_PER_S)
    assert c.selected == A and changes(back)[0].reason == "announce"


def test_non_revertive_stays_with_working_server():
    c = UnicastClient([A, B], ClientConfig(**{**CFG.__dict__, "revertive": False}))
    grant_all(c, c.start(T0), T0)
    c.handle_announce(B, ann(20, 2), T0 + 1)
    assert c.selected == B
    c.handle_announce(A, ann(10, 1), T0 + 2)
    assert c.selected == B


def test_server_cancel_of_sync_is_acknowledged_and_fails_over():
    c = two_server_client()
    out = c.handle_signaling(A, None, [Cancel(MT.SYNC)], T0 + NS_PER_S)
    ack = sends(out, A)[0]
    assert AcknowledgeCancel(MT.SYNC) in ack.tlvs
    assert c.selected == B and c.counters["canceled_by_server"] == 1
    assert requested(out, B) == {MT.SYNC, MT.DELAY_RESP}


def test_server_cancel_with_maintain_grant_is_only_acknowledged():
    c = two_server_client()
    out = c.handle_signaling(A, None, [Cancel(MT.SYNC, maintain_grant=True)], T0 + NS_PER_S)
    assert sends(out, A)[0].tlvs == (AcknowledgeCancel(MT.SYNC, False, True),)
    assert c.selected == A and c.granted(A, MT.SYNC)


def test_sync_denial_by_best_server_falls_back_to_the_other():
    c = UnicastClient([A, B], CFG)
    grant_all(c, c.start(T0), T0)
    c.handle_announce(B, ann(20, 2), T0 + 1)
    out = c.handle_announce(A, ann(10, 1), T0 + 2)
    assert c.selected == A
    reqs = [t for s in sends(out, A) for t in s.tlvs]
    res = c.handle_signaling(A, None, [Grant(t.message_type, t.log_inter_message_period, 0) for t in reqs], T0 + 3)
    assert c.selected == B and requested(res, B) == {MT.SYNC, MT.DELAY_RESP}


def test_client_cancel_both_ways_on_shutdown():
    c = two_server_client()
    out = c.cancel_all(T0 + NS_PER_S)
    by_addr = {s.address: {t.message_type for t in s.tlvs} for s in sends(out)}
    assert by_addr == {A: {MT.ANNOUNCE, MT.SYNC, MT.DELAY_RESP}, B: {MT.ANNOUNCE}}
    assert changes(out)[0].new_address is None
    c.handle_signaling(A, None, [AcknowledgeCancel(MT.SYNC)], T0 + NS_PER_S + 1)
    assert c.counters["ack_cancel_rx"] == 1


def test_renewal_not_invited_moves_to_other_server_before_expiry():
    c = UnicastClient([A, B], CFG)
    grant_all(c, c.start(T0), T0)
    c.handle_announce(B, ann(20, 2), T0 + 1)
    out = c.handle_announce(A, ann(10, 1), T0 + 2)
    grant_all(c, out, T0 + 3, duration=20, r=False)
    assert c.selected == A
    out = feed_announces(c, [(A, ann(10, 1)), (B, ann(20, 2))], T0 + NS_PER_S, T0 + 16 * NS_PER_S)
    assert c.selected == B, "switched at 3/4 of a grant that will not be renewed"
    assert any(ch.new_address == B for ch in changes(out))


def test_single_server_keeps_renegotiating_until_it_returns():
    c = UnicastClient([A], CFG)
    grant_all(c, c.start(T0), T0, duration=10)
    c.handle_announce(A, ann(10, 1), T0)
    # server gone: no answers at all for 60 s
    t, asked = T0, 0
    while t < T0 + 60 * NS_PER_S:
        t = c.next_deadline_ns()
        asked += len(sends(c.handle_timer(t), A))
    assert c.selected is None and asked >= 40
    # it returns
    last = c.handle_timer(c.next_deadline_ns())
    grant_all(c, last, t + 1)
    out = c.handle_announce(A, ann(10, 1), t + 2)
    assert c.selected == A and requested(out, A) == {MT.SYNC, MT.DELAY_RESP}


def test_rogue_and_unknown_inputs_are_counted_not_raised():
    c = UnicastClient([A], CFG)
    c.start(T0)
    assert c.handle_signaling("10.66.0.1", None, [Grant(MT.SYNC, 0, 10)], T0)[0].kind == "rogue_signaling"
    c.handle_announce("10.66.0.1", ann(1, 9), T0)
    assert c.counters["rogue"] == 2
    c.handle_signaling(A, None, [Grant(0x8, 0, 10)], T0)
    assert c.counters["ignored_tlvs"] == 1


def test_misuse_raises():
    with pytest.raises(UnicastConfigError):
        UnicastClient([])
    with pytest.raises(UnicastConfigError):
        UnicastClient([A, "10.0.1.001" if False else A])
    with pytest.raises(UnicastUsageError):
        UnicastClient(["nonsense"])
    c = UnicastClient([A])
    with pytest.raises(UnicastUsageError):
        c.handle_timer(T0)
    c.start(T0)
    with pytest.raises(UnicastUsageError):
        c.start(T0)
    with pytest.raises(UnicastConfigError):
        ClientConfig(renew_numerator=5, renew_denominator=4)


def test_table_queries_in_table_and_grant_duration():
    c = UnicastClient([A, B], CFG)
    assert c.in_table(A) and c.in_table(B) and not c.in_table("192.0.2.99") and not c.in_table("not an address")
    assert c.grant_duration_s(A, MT.ANNOUNCE) is None
    grant_all(c, c.start(T0), T0 + 1, duration=45)
    assert c.grant_duration_s(A, MT.ANNOUNCE) == 45 and c.grant_duration_s(B, MT.SYNC) is None
