"""ClockBackend over the real core Clock: every SetPortConfig field applies live, refusals change
nothing, per-port slave-only, path-delay events, the unicast hooks (no sockets, no daemon)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controlplane.codec import messages as m
from controlplane.codec.enums import PortState
from controlplane.core.actions import OffsetSample, ProgramDataplane, SendMessage
from controlplane.core.clock import Clock
from controlplane.core.config import DelayMechanismOption, NetworkTransport, parse
from controlplane.services import api as A

S = 1_000_000_000
FAST = {"logSyncInterval": "-3", "logAnnounceInterval": "0", "logMinDelayReqInterval": "-3",
        "logMinPdelayReqInterval": "-3"}
ID = bytes.fromhex("001122fffe334455")


class Node:
    """A clock, a fake monotonic time and the actions the backend executed."""

    def __init__(self, clock_type: str = "OC", ports: tuple[str, ...] = ("eth0",), **extra: str) -> None:
        self.clock = Clock(parse({"global": {**FAST, "clock_type": clock_type, **extra}}), ID, list(ports),
                           rng=random.Random(1))
        self.now = 0
        self.executed: list[Any] = []
        self.clock.start(self.now)
        self.backend = A.ClockBackend(self.clock, self.executed.extend, monotonic_ns=lambda: self.now)
        self.api = A.ControlApi(self.backend)

    def run_until(self, t_ns: int) -> list[Any]:
        out = []
        while (d := self.clock.next_deadline_ns()) is not None and d <= t_ns:
            self.now = d
            out += self.clock.handle_timer(d)
        self.now = t_ns
        return out


def sends(actions: list[Any], cls: type) -> list[Any]:
    return [a for a in actions if isinstance(a, SendMessage) and isinstance(a.message, cls)]


def test_e2e_to_p2p_live_restarts_port_and_sends_pdelay() -> None:
    n = Node()
    out = n.run_until(10 * S)
    assert n.clock.port(1).state is PortState.MASTER and not sends(out, m.PdelayReq)
    r = n.api.set_port_config("eth0", A.PortChange(delay_mechanism="P2P", log_sync_interval=-2))
    assert r.port.settings.delay_mechanism is DelayMechanismOption.P2P and r.port.settings.log_sync_interval == -2
    states = [(a.old, a.new) for a in n.executed if type(a).__name__ == "StateChanged"]
    assert (PortState.MASTER, PortState.INITIALIZING) in states  # the port restarted
    out = n.run_until(20 * S)
    assert sends(out, m.PdelayReq), "P2P port sends Pdelay_Req"
    assert n.clock.port(1).state is PortState.MASTER
    # intervals: 4 Syncs/s now (logSyncInterval -2), measured over the last 5 s
    syncs = [a for a in sends(out, m.Sync)]
    assert 15 <= len(syncs) <= 45
    # back to E2E
    n.api.set_port_config("eth0", A.PortChange(delay_mechanism=DelayMechanismOption.E2E))
    n.run_until(22 * S)
    out = n.run_until(30 * S)
    assert not sends(out, m.PdelayReq) and n.clock.port(1).state is PortState.MASTER


def test_invalid_and_refused_requests_change_nothing() -> None:
    n = Node()
    n.run_until(10 * S)
    before = n.api.get_port("eth0")
    with pytest.raises(A.InvalidArgument, match=r"out of range.*\[-128, 127\]") as err:
        n.api.set_port_config("eth0", A.PortChange(delay_mechanism="P2P", log_min_pdelay_req_interval=500))
    assert err.value.field == "log_min_pdelay_req_interval"
    with pytest.raises(A.NotFound):
        n.api.set_port_config("nope", A.PortChange(delay_mechanism="P2P"))
    with pytest.raises(A.ApplyFailed, match="unicast"):  # no unicast glue in this backend
        n.api.set_port_config("eth0", A.PortChange(
            delay_mechanism="P2P", unicast_master_table=(A.UnicastMaster(NetworkTransport.UDPV4, "10.0.0.1"),)))
    assert n.api.get_port("eth0") == before
    assert not n.executed


def test_per_port_slave_only_live() -> None:
    n = Node()
    n.run_until(10 * S)
    assert n.clock.port(1).state is PortState.MASTER
    r = n.api.set_port_config("eth0", A.PortChange(slave_only=True))
    assert r.port.settings.slave_only and r.port.port_state is PortState.LISTENING
    n.run_until(40 * S)  # no master heard: a slave-only port never masters
    assert n.clock.port(1).state is PortState.LISTENING
    with pytest.raises(A.InvalidArgument, match="master_only and slave_only"):
        n.api.set_port_config("eth0", A.PortChange(master_only=True))
    n.api.set_port_config("eth0", A.PortChange(slave_only=False))
    n.run_until(60 * S)
    assert n.clock.port(1).state is PortState.MASTER


def test_clock_wide_slave_only_cannot_be_left_per_port() -> None:
    n = Node(slaveOnly="1")
    assert n.api.get_port("eth0").settings.slave_only
    with pytest.raises(A.InvalidArgument, match="slave-only"):
        n.api.set_port_config("eth0", A.PortChange(slave_only=False))


def test_tc_disable_programs_dataplane_off_and_mechanism_is_fixed() -> None:
    class Dp:
        def __init__(self) -> None:
            self.calls: list[tuple[str, bool]] = []

        def set_port(self, ifname: str, *, enabled: bool) -> None:
            self.calls.append((ifname, enabled))

        def stats(self) -> dict[str, Any]:
            return {"p1": {"event": {"corrected": 3}}}

    n = Node("E2E_TC", ("p1", "p2"))
    dp = Dp()
    n.backend.dataplane = dp
    r = n.api.set_port_config("p1", A.PortChange(port_enable=False))
    assert r.port.port_state is PortState.DISABLED and dp.calls == [("p1", False)]
    assert any(isinstance(a, ProgramDataplane) and a.port == 1 and not a.enabled for a in n.executed)
    assert n.api.get_port("p1").dataplane_counters == {"event_corrected": 3}
    with pytest.raises(A.InvalidArgument, match="clock_type"):
        n.api.set_port_config("p2", A.PortChange(delay_mechanism="P2P"))
    r = n.api.set_port_config("p1", A.PortChange(port_enable=True))
    assert r.port.port_state is PortState.LISTENING and dp.calls[-1] == ("p1", True)


def test_unicast_hooks() -> None:
    n = Node()
    got: list[Any] = []
    n.backend.unicast_table_setter = lambda name, table, lqi: got.append((name, table, lqi)) or []
    grant = A.GrantSnapshot("eth0", "CLIENT", "10.0.0.1", 0x0, -3, 60)
    n.backend.grants_source = lambda: [grant]
    table = (A.UnicastMaster(NetworkTransport.UDPV4, "10.0.0.1"),)
    r = n.api.set_port_config("eth0", A.PortChange(unicast_master_table=table, log_query_interval=1))
    assert got == [("eth0", table, 1)] and r.port.settings.unicast_master_table == table
    assert n.api.list_grants() == [grant] and n.api.list_grants("eth0") == [grant]


def test_action_events_publish_path_delay() -> None:
    ev = A.ActionEvents({1: "eth0", 2: "eth1"}, mechanism_of=lambda n: DelayMechanismOption.P2P if n == 2 else
                        DelayMechanismOption.E2E)
    out = ev(OffsetSample(1, -40, 1500, 12.5, 2))
    assert out == [A.OffsetSample(-40, 1500, 12.5, "s2"), A.PathDelaySample("eth0", DelayMechanismOption.E2E, 1500)]
    assert ev(ProgramDataplane(2, 800, 0, 1.0, True)) == [A.PathDelaySample("eth1", DelayMechanismOption.P2P, 800)]
    assert ev(ProgramDataplane(2, 0, 0, 1.0, True)) == [] and ev(ProgramDataplane(2, 800, 0, 1.0, False)) == []
