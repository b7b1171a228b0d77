"""UnicastServer rules with injected time (no clock, no sockets)."""

from __future__ import annotations

import pytest

from controlplane.core.unicast import (
    NS_PER_S,
    AcknowledgeCancel,
    Cancel,
    DenialReason,
    DueTransmission,
    Grant,
    NegotiationEvent,
    Request,
    SendSignaling,
    ServerPolicy,
    UnicastConfigError,
    UnicastMessageType as MT,
    UnicastUsageError,
)
from controlplane.core.unicast_server import UnicastServer, records_as_dicts

PID = (bytes.fromhex("0011223344556677"), 1)
C1 = "10.0.0.2"
T0 = 1_000 * NS_PER_S


def grants_of(actions) -> list[Grant]:
    sends = [a for a in actions if isinstance(a, SendSignaling)]
    assert len(sends) <= 1, "one Signaling reply per request message"
    return [t for s in sends for t in s.tlvs if isinstance(t, Grant)]


def due(actions) -> list[DueTransmission]:
    return [a for a in actions if isinstance(a, DueTransmission)]


def request(server, addr, *reqs, now=T0):
    return server.handle_signaling(addr, PID, list(reqs), now)


def run_until(server, end_ns):
    """Drive the server exactly at each deadline; collect due transmissions."""
    out = []
    while (d := server.next_deadline_ns()) is not None and d <= end_ns:
        out.extend(server.poll(d))
    return out


def test_multi_tlv_request_gets_one_signaling_with_grants_in_order():
    s = UnicastServer(ServerPolicy())
    acts = request(s, C1, Request(MT.ANNOUNCE, 1, 300), Request(MT.SYNC, 0, 300), Request(MT.DELAY_RESP, 0, 300))
    g = grants_of(acts)
    assert [x.message_type for x in g] == [MT.ANNOUNCE, MT.SYNC, MT.DELAY_RESP]
    assert all(x.duration_s == 300 and x.renewal_invited for x in g)
    send = next(a for a in acts if isinstance(a, SendSignaling))
    assert send.address == C1 and send.target_port_identity == PID
    assert s.client_count == 1 and len(s.grant_table(T0)) == 3


def test_duration_above_maximum_is_capped_and_counted():
    s = UnicastServer(ServerPolicy(min_duration_s=60, max_duration_s=1000))
    (g,) = grants_of(request(s, C1, Request(MT.SYNC, 0, 3600)))
    assert g.duration_s == 1000 and not g.denied
    assert s.counters["capped"] == 1


@pytest.mark.parametrize(
    "policy,addr,req,reason",
    [
        (ServerPolicy(), C1, Request(MT.SYNC, 0, 30), DenialReason.DURATION_TOO_SHORT),
        (ServerPolicy(), C1, Request(MT.SYNC, 0, 0), DenialReason.DURATION_TOO_SHORT),
        (ServerPolicy(min_log_inter_message_period=((0, -4),)), C1, Request(MT.SYNC, -5, 300), DenialReason.RATE_TOO_HIGH),
        (ServerPolicy(allow=("10.1.0.0/16", "fd00::/8")), C1, Request(MT.SYNC, 0, 300), DenialReason.NOT_ALLOWED),
        (ServerPolicy(allow=("10.0.0.0/24",)), "fd00::2", Request(MT.SYNC, 0, 300), DenialReason.NOT_ALLOWED),
        (ServerPolicy(), C1, Request(MT.PDELAY_RESP, 0, 300), DenialReason.UNSUPPORTED_MESSAGE_TYPE),
        (ServerPolicy(), C1, Request(0x8, 0, 300), DenialReason.UNSUPPORTED_MESSAGE_TYPE),
    ],
)
def test_denials_are_grants_of_duration_zero_with_a_counted_reason(policy, addr, req, reason):
    s = UnicastServer(policy)
    acts = request(s, addr, req)
    (g,) = grants_of(acts)
    assert g.duration_s == 0 and g.denied and not g.renewal_invited
    assert g.message_type == req.message_type
    assert s.denials[reason] == 1 and s.counters["denied"] == 1
    ev = [a for a in acts if isinstance(a, NegotiationEvent)]
    assert ev and ev[0].kind == "denied" and ev[0].detail == reason.name.lower()
    assert s.grant_table(T0) == ()


def test_allow_list_admits_ipv6_and_ipv4_members():
    s = UnicastServer(ServerPolicy(allow=("10.0.0.0/24", "fd00::/8")))
    assert not grants_of(request(s, "10.0.0.9", Request(MT.SYNC, 0, 300)))[0].denied
    assert not grants_of(request(s, "fd00::0009", Request(MT.SYNC, 0, 300)))[0].denied
    # the same client written differently is one client
    assert s.grant_of("fd00::9", MT.SYNC) is not None


def test_max_clients_counts_addresses_and_lets_existing_clients_renew():
    s = UnicastServer(ServerPolicy(max_clients=2))
    for a in ("10.0.0.1", "10.0.0.2"):
        assert not grants_of(request(s, a, Request(MT.SYNC, 0, 300)))[0].denied
    assert grants_of(request(s, "10.0.0.3", Request(MT.SYNC, 0, 300)))[0].denied
    assert s.denials[DenialReason.TOO_MANY_CLIENTS] == 1
    # an existing client may add a message type and renew
    assert not grants_of(request(s, "10.0.0.1", Request(MT.ANNOUNCE, 0, 300)))[0].denied
    assert not grants_of(request(s, "10.0.0.1", Request(MT.SYNC, 0, 300), now=T0 + NS_PER_S))[0].denied


def test_sync_schedule_and_exact_expiry():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, -1, 2))  # 2 Sync/s for 2 s
    out = due(run_until(s, T0 + 10 * NS_PER_S))
    times = [d.scheduled_ns for d in out]
    assert times == [T0 + k * NS_PER_S // 2 for k in range(4)]  # 0, .5, 1, 1.5 s; none at 2.0 s
    assert [d.sequence_id for d in out] == [0, 1, 2, 3]
    assert all(d.log_message_interval == -1 and d.address == C1 for d in out)
    assert s.grant_table(T0 + 2 * NS_PER_S) == ()
    assert s.counters["expired"] == 1
    assert s.next_deadline_ns() is None


def test_expiry_exact_to_the_nanosecond_for_delay_resp():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.DELAY_RESP, 0, 5))
    end = T0 + 5 * NS_PER_S
    assert s.may_respond(C1, MT.DELAY_RESP, end - 1)
    assert not s.may_respond(C1, MT.DELAY_RESP, end)
    assert s.next_deadline_ns() == end
    assert [a.kind for a in s.poll(end) if isinstance(a, NegotiationEvent)] == ["expired"]


def test_no_transmission_when_polled_late_past_expiry():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, 0, 3))
    s.poll(T0)
    assert due(s.poll(T0 + 10 * NS_PER_S)) == []


def test_renewal_keeps_phase_and_extends():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, 0, 4))
    first = due(run_until(s, T0 + 3 * NS_PER_S))
    assert len(first) == 4
    acts = request(s, C1, Request(MT.SYNC, 0, 4), now=T0 + 3 * NS_PER_S + 250_000_000)
    assert grants_of(acts)[0].duration_s == 4 and s.counters["renewed"] == 1
    rest = due(run_until(s, T0 + 20 * NS_PER_S))
    # phase kept (whole seconds), continues to the new expiry at 7.25 s: 4, 5, 6, 7
    assert [d.scheduled_ns for d in rest] == [T0 + k * NS_PER_S for k in (4, 5, 6, 7)]
    assert [d.sequence_id for d in rest] == [4, 5, 6, 7]


def test_renewal_after_last_transmission_before_expiry_restarts_chain():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, 1, 3))  # every 2 s: at 0, 2; chain stops (4 >= 3)
    assert len(due(run_until(s, T0 + 2 * NS_PER_S))) == 2
    request(s, C1, Request(MT.SYNC, 1, 3), now=T0 + 2_500_000_000)
    rest = due(run_until(s, T0 + 20 * NS_PER_S))
    assert [d.scheduled_ns for d in rest] == [T0 + 4 * NS_PER_S]


def test_interval_change_on_renewal():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, 0, 10))
    run_until(s, T0 + 1 * NS_PER_S)
    request(s, C1, Request(MT.SYNC, -2, 10), now=T0 + 1_100_000_000)
    nxt = due(run_until(s, T0 + 1_700_000_000))
    assert [d.scheduled_ns - T0 for d in nxt] == [1_100_000_000, 1_350_000_000, 1_600_000_000]


def test_late_runtime_skips_missed_slots_but_keeps_phase():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, 0, 100))
    s.poll(T0)
    out = due(s.poll(T0 + 3_500_000_000))  # slept through 1, 2, 3 s
    assert [d.scheduled_ns for d in out] == [T0 + NS_PER_S]
    assert s.counters["late_skipped"] == 2
    assert s.next_deadline_ns() == T0 + 4 * NS_PER_S


def test_client_cancel_stops_service_and_is_acknowledged():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, 0, 100), Request(MT.ANNOUNCE, 0, 100))
    acts = s.handle_signaling(C1, PID, [Cancel(MT.SYNC)], T0 + NS_PER_S // 2)
    send = next(a for a in acts if isinstance(a, SendSignaling))
    assert send.tlvs == (AcknowledgeCancel(MT.SYNC),)
    out = due(run_until(s, T0 + 3 * NS_PER_S))
    assert {d.message_type for d in out if d.scheduled_ns > T0} == {MT.ANNOUNCE}
    assert s.counters["canceled_by_client"] == 1 and s.client_count == 1


def test_server_cancel_is_retransmitted_until_acknowledged():
    s = UnicastServer(ServerPolicy(min_duration_s=1, cancel_retries=2, cancel_retry_ns=NS_PER_S))
    request(s, C1, Request(MT.SYNC, 0, 100))
    acts = s.cancel(C1, MT.SYNC, T0)
    assert any(isinstance(a, SendSignaling) and a.tlvs == (Cancel(MT.SYNC),) for a in acts)
    assert not s.may_respond(C1, MT.SYNC, T0)
    again = s.poll(T0 + NS_PER_S)
    assert [a.tlvs for a in again if isinstance(a, SendSignaling)] == [(Cancel(MT.SYNC),)]
    assert not due(again)
    s.handle_signaling(C1, PID, [AcknowledgeCancel(MT.SYNC)], T0 + NS_PER_S + 1)
    assert s.counters["ack_cancel_rx"] == 1 and s.next_deadline_ns() is None


def test_server_cancel_gives_up_after_retries():
    s = UnicastServer(ServerPolicy(min_duration_s=1, cancel_retries=1))
    request(s, C1, Request(MT.DELAY_RESP, 0, 100))
    s.cancel(C1, MT.DELAY_RESP, T0)
    evs = run_until(s, T0 + 10 * NS_PER_S)
    assert sum(isinstance(a, SendSignaling) for a in evs) == 1
    assert s.counters["cancel_unacknowledged"] == 1
    with pytest.raises(UnicastUsageError):
        s.cancel(C1, MT.DELAY_RESP, T0)


def test_unavailable_cancels_everything_and_denies_new():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.SYNC, 0, 100), Request(MT.ANNOUNCE, 0, 100))
    acts = s.set_available(False, T0 + 1)
    assert sum(isinstance(a, SendSignaling) for a in acts) == 2 and s.client_count == 0
    assert grants_of(request(s, C1, Request(MT.SYNC, 0, 100), now=T0 + 2))[0].denied
    assert s.denials[DenialReason.SERVICE_UNAVAILABLE] == 1


def test_grant_table_is_data():
    s = UnicastServer(ServerPolicy(min_duration_s=1))
    request(s, C1, Request(MT.ANNOUNCE, 1, 60))
    rows = records_as_dicts(s.grant_table(T0 + NS_PER_S))
    assert rows == [{
        "address": C1, "message_type": "ANNOUNCE", "port_identity": "0011223344556677-1",
        "log_inter_message_period": 1, "duration_s": 60, "remaining_ns": 59 * NS_PER_S,
        "renewal_invited": True, "renewals": 0, "sent": 0, "late_skipped": 0,
    }]


def test_bad_address_and_bad_policy_are_typed_errors():
    s = UnicastServer()
    with pytest.raises(UnicastUsageError):
        s.handle_signaling("not-an-ip", PID, [Request(MT.SYNC, 0, 100)], T0)
    with pytest.raises(UnicastConfigError):
        ServerPolicy(min_duration_s=100, max_duration_s=10)
    with pytest.raises(UnicastConfigError):
        ServerPolicy(allow=("10.0.0.0/33",))
    with pytest.raises(UnicastConfigError):
        ServerPolicy.from_options({"unicast_max_duration": "x"})
    with pytest.raises(UnicastConfigError):
        ServerPolicy.from_options({"nonsense": 1})


def test_policy_from_options():
    p = ServerPolicy.from_options({
        "unicast_min_duration": "5", "unicast_max_duration": 20, "unicast_allow": "10.0.0.0/8, fd00::/8",
        "unicast_min_logSyncInterval": -3, "unicast_serve_pdelay": 1,
    })
    assert (p.min_duration_s, p.max_duration_s) == (5, 20)
    assert p.allows("10.9.9.9") and p.allows("fd00::1") and not p.allows("192.168.0.1")
    assert p.min_log_for(MT.SYNC) == -3 and MT.PDELAY_RESP in p.message_types


def test_many_clients_scale():
    s = UnicastServer(ServerPolicy(min_duration_s=1, max_clients=20_000))
    for i in range(5000):
        s.handle_signaling(f"10.{i // 250}.{i % 250}.1", None, [Request(MT.SYNC, 0, 10)], T0 + i * 1000)
    out = due(run_until(s, T0 + 3 * NS_PER_S - 1))
    assert len(out) == 5000 * 3


def test_poll_with_a_limit_hands_out_the_earliest_due_and_keeps_the_rest_due():
    s = UnicastServer(ServerPolicy(max_clients=100))
    addrs = [f"10.0.1.{i}" for i in range(1, 11)]
    for i, a in enumerate(addrs):  # phases 0..9 ms apart
        request(s, a, Request(MT.SYNC, 0, 300), now=T0 + i * 1_000_000)
    late = T0 + 20_000_000  # the loop was late: all ten first Syncs are due at once
    first = due(s.poll(late, max_transmissions=4))
    assert [d.address for d in first] == addrs[:4]
    assert s.next_deadline_ns() is not None and s.next_deadline_ns() <= late  # the rest is still due
    rest = due(s.poll(late, max_transmissions=4)) + due(s.poll(late, max_transmissions=4))
    assert [d.address for d in rest] == addrs[4:]
    assert s.next_deadline_ns() == T0 + NS_PER_S  # next period, phases kept
    assert all(d.sequence_id == 0 for d in first + rest)
    with pytest.raises(UnicastUsageError):
        s.poll(late, max_transmissions=0)


def test_poll_limit_does_not_delay_expiry():
    s = UnicastServer(ServerPolicy(min_duration_s=1, max_clients=100))
    for i in range(5):
        request(s, f"10.0.2.{i + 1}", Request(MT.SYNC, 0, 1))
    acts = s.poll(T0 + NS_PER_S, max_transmissions=1)  # every grant expires exactly now
    assert not due(acts)
    assert sum(1 for a in acts if isinstance(a, NegotiationEvent) and a.kind == "expired") == 5
    assert s.client_count == 0 and s.next_deadline_ns() is None
