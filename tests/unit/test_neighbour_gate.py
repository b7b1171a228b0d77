"""controlplane/runtime/neighbours.py, pure parts: rtnetlink parsing and building, and the gate's
decisions (time is an argument; no socket is opened here)."""

from __future__ import annotations

import socket
import struct

import pytest

from controlplane.runtime import neighbours as nb
from controlplane.runtime.neighbours import (
    NOT_JUDGED,
    DumpDone,
    NeighbourGate,
    NeighbourRecord,
    NetlinkError,
    NudState,
    RouteRecord,
    Verdict,
    pack_address,
    parse_messages,
    state_name,
)

S = 1_000_000_000
V4 = socket.AF_INET
V6 = socket.AF_INET6
IFX = 7
FORGED = pack_address(V4, "10.251.1.77")
REAL = pack_address(V4, "10.251.1.2")


def _nlmsg(kind: int, body: bytes, seq: int = 1) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _neigh(kind: int, family: int, ifindex: int, state: int, dst: bytes, lladdr: bytes = b"\x02" * 6) -> bytes:
    body = struct.pack("=BBHiHBB", family, 0, 0, ifindex, state, 0, 1) + _attr(nb.NDA_DST, dst) + _attr(2, lladdr)
    return _nlmsg(kind, body)


def _route(family: int, rtype: int, oif: int | None, gw: bytes | None, kind: int = nb.RTM_NEWROUTE) -> bytes:
    body = struct.pack("=BBBBBBBBI", family, 32, 0, 0, 254, 0, 0, rtype, 0)
    if oif is not None:
        body += _attr(nb.RTA_OIF, struct.pack("=I", oif))
    if gw is not None:
        body += _attr(nb.RTA_GATEWAY, gw)
    return _nlmsg(kind, body)


# --- parsing -------------------------------------------------------------------------------------
def test_parse_neighbour_route_done_and_error_records():
    data = (_neigh(nb.RTM_NEWNEIGH, V4, IFX, NudState.REACHABLE, REAL)
            + _neigh(nb.RTM_DELNEIGH, V6, IFX, NudState.FAILED, pack_address(V6, "fd00::9"))
            + _route(V4, nb.RTN_UNICAST, IFX, pack_address(V4, "10.0.0.254"))
            + _nlmsg(nb.NLMSG_DONE, struct.pack("=i", 0), seq=5)
            + _nlmsg(nb.NLMSG_ERROR, struct.pack("=i", -13) + b"\0" * 16, seq=6))
    assert parse_messages(data) == [
        NeighbourRecord(V4, IFX, REAL, NudState.REACHABLE, False),
        NeighbourRecord(V6, IFX, pack_address(V6, "fd00::9"), NudState.FAILED, True),
        RouteRecord(V4, nb.RTN_UNICAST, IFX, pack_address(V4, "10.0.0.254"), False),
        DumpDone(5),
        NetlinkError(6, 13),
    ]


@pytest.mark.parametrize("cut", range(0, 60))
def test_parse_never_raises_on_truncated_or_garbage_input(cut):
    data = _neigh(nb.RTM_NEWNEIGH, V4, IFX, NudState.REACHABLE, REAL) + _route(V4, 1, IFX, None)
    assert isinstance(parse_messages(data[:cut]), list)
    assert isinstance(parse_messages(bytes(range(cut))), list)


def test_parse_skips_a_neighbour_record_without_a_usable_destination():
    body = struct.pack("=BBHiHBB", V4, 0, 0, IFX, 2, 0, 1) + _attr(nb.NDA_DST, b"\x01\x02\x03")
    assert parse_messages(_nlmsg(nb.RTM_NEWNEIGH, body)) == []
    # a length field that runs past the datagram ends the parse
    assert parse_messages(struct.pack("=IHHII", 400, nb.RTM_NEWNEIGH, 0, 1, 0)) == []


def test_requests_are_well_formed():
    dump = nb.neighbour_dump_request(V4, 9)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", dump)
    assert (length, kind, seq) == (len(dump), nb.RTM_GETNEIGH, 9) and flags & nb.NLM_F_DUMP == nb.NLM_F_DUMP
    route = nb.route_request(V4, FORGED, IFX, 3)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", route)
    assert (length, kind, flags) == (len(route), nb.RTM_GETROUTE, nb.NLM_F_REQUEST)
    assert _attr(nb.RTA_DST, FORGED) in route and _attr(nb.RTA_OIF, struct.pack("=I", IFX)) in route
    use = nb.resolve_request(V6, IFX, pack_address(V6, "fd00::5"), 4)
    length, kind, flags, _seq, _pid = struct.unpack_from("=IHHII", use)
    assert (length, kind) == (len(use), nb.RTM_NEWNEIGH) and flags & nb.NLM_F_CREATE
    family, _a, _b, ifindex, _state, ndm_flags, _t = struct.unpack_from("=BBHiHBB", use, 16)
    assert (family, ifindex, ndm_flags) == (V6, IFX, nb.NTF_USE)
    # parse(build) round trip of the NTF_USE message: it is a neighbour message for that address
    assert parse_messages(use)[0].address == pack_address(V6, "fd00::5")


def test_pack_address_and_state_names():
    assert pack_address(V6, "fe80::1%eth0") == socket.inet_pton(V6, "fe80::1")
    assert pack_address(V4, "not an address") is None
    assert state_name(None) == "no entry" and state_name(0) == "NONE"
    assert state_name(NudState.FAILED) == "FAILED" and state_name(NudState.STALE | NudState.NOARP) == "STALE|NOARP"


# --- the gate ------------------------------------------------------------------------------------
def _gate(**kw) -> NeighbourGate:
    g = NeighbourGate(V4, IFX, 0, **kw)
    g.apply(NeighbourRecord(V4, IFX, REAL, NudState.REACHABLE, False))
    return g


@pytest.mark.parametrize("state", [NudState.REACHABLE, NudState.STALE, NudState.DELAY, NudState.PROBE,
                                   NudState.PERMANENT, NudState.NOARP])
def test_a_usable_next_hop_is_always_sent(state):
    g = NeighbourGate(V4, IFX, 0)
    g.apply(NeighbourRecord(V4, IFX, FORGED, state, False))
    assert all(g.decide(FORGED, ev, t) is Verdict.SEND for t in range(0, 10 * S, S // 100) for ev in (True, False))
    assert g.stats.probes == 0 and g.stats.held_event == 0


def test_not_judged_destinations_are_sent():
    g = _gate()
    assert all(g.decide(NOT_JUDGED, ev, 0) is Verdict.SEND for ev in (True, False) for _ in range(100))


def test_event_messages_to_an_unresolved_next_hop_wait_once_then_are_held():
    g = _gate()
    assert g.decide(FORGED, True, 0) is Verdict.WAIT
    assert [g.decide(FORGED, True, i) for i in range(1, 100)] == [Verdict.HOLD] * 99
    assert g.decide(FORGED, True, S) is Verdict.WAIT  # a new window
    g.apply(NeighbourRecord(V4, IFX, FORGED, NudState.FAILED, False))
    assert g.decide(FORGED, True, 3 * S) is Verdict.HOLD  # FAILED: no wait, ARP said no
    assert g.stats.waits == 2 and g.stats.held_event == 100


def test_waits_are_rate_limited_across_addresses():
    g = _gate(wait_rate_per_s=5, wait_burst=10)
    verdicts = [g.decide(pack_address(V4, f"10.251.2.{i}"), True, i) for i in range(200)]
    assert verdicts.count(Verdict.WAIT) == 10  # the burst; the rest of the second is held
    later = [g.decide(pack_address(V4, f"10.251.3.{i}"), True, S + i) for i in range(200)]
    assert later.count(Verdict.WAIT) == 5


def test_general_messages_probe_within_the_per_address_and_global_budgets():
    g = _gate(probe_burst=3, probe_rate_per_s=16, probe_global_burst=32)
    one = [g.decide(FORGED, False, i) for i in range(10)]
    assert one == [Verdict.SEND] * 3 + [Verdict.HOLD] * 7
    assert g.decide(FORGED, False, S) is Verdict.SEND  # next window
    # many forged addresses: the global bucket bounds the total (burst 32 + 16/s)
    sent = 0
    for t in range(0, 10 * S, S // 50):
        for i in range(250):
            sent += g.decide(pack_address(V4, f"10.9.{i}.1"), False, 2 * S + t) is Verdict.SEND
    assert sent <= 32 + 16 * 10 + 1, sent
    assert g.stats.held_general > 0


def test_the_neighbour_queue_bound_holds_for_any_number_of_forged_addresses():
    """What the gate promises the socket: datagrams handed to the kernel for unresolved next hops
    within any 3 s (the time an INCOMPLETE entry keeps its queue) stay under burst + 3 s x rate."""
    g = _gate()
    sends: list[int] = []
    for t in range(0, 20 * S, S // 200):
        for i in range(0, 4000, 37):
            a = pack_address(V4, f"10.{i % 250}.{i // 250}.9")
            for ev in (True, False):
                if g.decide(a, ev, t) is not Verdict.HOLD:
                    sends.append(t)
    worst = max(sum(1 for s in sends if t0 <= s < t0 + 3 * S) for t0 in range(0, 17 * S, S // 2))
    assert worst <= 32 + 16 * 3 + 10 + 5 * 3 + 1, worst  # probes + waits (which send only once resolved)


def test_wants_resolve_once_per_window_and_not_while_a_probe_waits():
    g = _gate()
    assert g.wants_resolve(FORGED, 0) is True
    assert g.wants_resolve(FORGED, S // 2) is False
    assert g.wants_resolve(FORGED, S) is True
    other = pack_address(V4, "10.251.1.88")
    assert g.decide(other, False, 0) is Verdict.SEND  # a probe went out: the kernel is resolving already
    assert g.wants_resolve(other, 1) is False


def test_a_resolved_record_clears_the_probe_state_and_deletes_forget():
    g = _gate()
    for i in range(5):
        g.decide(FORGED, False, i)
    g.apply(NeighbourRecord(V4, IFX, FORGED, NudState.REACHABLE, False))
    assert g.decide(FORGED, True, 10) is Verdict.SEND
    g.apply(NeighbourRecord(V4, IFX, FORGED, NudState.REACHABLE, True))
    assert g.state(FORGED) is None and g.decide(FORGED, True, 11) is Verdict.WAIT


def test_records_of_other_interfaces_and_families_are_ignored():
    g = NeighbourGate(V4, IFX, 0)
    g.apply(NeighbourRecord(V4, IFX + 1, FORGED, NudState.REACHABLE, False))
    g.apply(NeighbourRecord(V6, IFX, pack_address(V6, "fd00::1"), NudState.REACHABLE, False))
    assert g.state(FORGED) is None and g.stats.updates == 0


def test_route_notifications_clear_the_next_hop_cache():
    g = _gate()
    g.set_next_hop(FORGED, pack_address(V4, "10.251.1.254"))
    g.apply(RouteRecord(V6, nb.RTN_UNICAST, IFX, None, False))
    assert g.next_hop(FORGED) == pack_address(V4, "10.251.1.254")
    g.apply(RouteRecord(V4, nb.RTN_UNICAST, IFX, None, False))
    assert g.next_hop(FORGED) is None


def test_memory_is_bounded():
    g = NeighbourGate(V4, IFX, 0, max_entries=100)
    for i in range(5000):
        a = i.to_bytes(4, "big")
        g.apply(NeighbourRecord(V4, IFX, a, NudState.FAILED, False))
        g.set_next_hop(a, a)
        g.decide(a, False, i)
        g.decide(a, True, i)
    assert len(g._states) <= 100 and len(g._hops) <= 100 and len(g._probes) <= 100


@pytest.mark.parametrize("kw", [{"probe_interval_ns": 0}, {"probe_burst": 0}, {"max_entries": 0}])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ValueError):
        NeighbourGate(V4, IFX, 0, **kw)
    with pytest.raises(ValueError):
        NeighbourGate(socket.AF_PACKET, IFX, 0)


def test_usable_is_true_only_for_not_judged_or_resolved_next_hops():
    g = _gate()
    assert g.usable(NOT_JUDGED) and g.usable(REAL)
    assert not g.usable(FORGED)
    g.apply(NeighbourRecord(V4, IFX, FORGED, NudState.INCOMPLETE, False))
    assert not g.usable(FORGED)
    g.apply(NeighbourRecord(V4, IFX, FORGED, NudState.STALE, False))
    assert g.usable(FORGED)
