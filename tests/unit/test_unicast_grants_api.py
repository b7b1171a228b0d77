"""The control API's grant list (gRPC ListUnicastGrants) reads the daemon's unicast service through
clock.unicast.grant_rows — no hook to install (core Clock + UnicastService, no sockets)."""

from __future__ import annotations

import random

import pytest

from controlplane.codec.header import Header
from controlplane.codec.messages import Signaling
from controlplane.codec.tlv import RequestUnicastTransmissionTlv
from controlplane.codec.types import PortIdentity
from controlplane.core.clock import Clock
from controlplane.core.config import parse
from controlplane.core.unicast import ServerPolicy
from controlplane.core.unicast_service import UnicastService
from controlplane.services import api as A

S = 1_000_000_000
CLIENT_ID = bytes.fromhex("0a0000fffe000002")


def serving_clock():
    clock = Clock(parse({"global": {"priority1": "10", "unicast_listen": "1", "logAnnounceInterval": "0"}}),
                  bytes.fromhex("0200000000000001"), ["eth0"], rng=random.Random(1))
    svc = UnicastService(clock, clock, servers={1: ServerPolicy(min_duration_s=10, max_duration_s=100)})
    t = 0
    svc.start(t)
    while clock.port(1).state.name != "MASTER":
        t = svc.next_deadline_ns()
        svc.handle_timer(t)
    return clock, svc, t


def test_list_grants_shows_the_servers_grant_table():
    clock, svc, t = serving_clock()
    backend = A.ClockBackend(clock, lambda actions: None, monotonic_ns=lambda: t + 5 * S)
    api = A.ControlApi(backend)
    assert api.list_grants() == []
    req = Signaling(Header(message_type=0xC, source_port_identity=PortIdentity(CLIENT_ID, 1), unicast=True,
                           log_message_interval=0x7F), PortIdentity(b"\xff" * 8, 0xFFFF),
                    (RequestUnicastTransmissionTlv(0x0, -3, 300), RequestUnicastTransmissionTlv(0xB, 0, 300)))
    svc.handle_message(1, req, None, t, ("10.0.0.2", 320))
    grants = sorted(api.list_grants("eth0"), key=lambda g: g.message_type)
    assert [(g.role, g.address, g.message_type, g.log_inter_message_period, g.duration_s) for g in grants] == [
        ("SERVER", "10.0.0.2", 0x0, -3, 100), ("SERVER", "10.0.0.2", 0xB, 0, 100)]  # capped at 100 s
    assert all(g.remaining_ns == 95 * S and g.renewal_invited for g in grants)
    assert grants[0].peer_port_identity == (A.clock_identity_text(CLIENT_ID), 1)
    with pytest.raises(A.NotFound):
        api.list_grants("nosuch")
    from controlplane.services.grpc_server import grant_to_pb  # what ListUnicastGrants returns per row

    pb = grant_to_pb(grants[0])
    assert (pb.underlying_interface, pb.role, pb.address, pb.duration_s, pb.remaining_ns) == (
        "eth0", "SERVER", "10.0.0.2", 100, 95 * S)
    assert pb.peer_port_identity.clock_identity == A.clock_identity_text(CLIENT_ID)
