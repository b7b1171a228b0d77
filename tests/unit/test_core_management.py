"""Management policy of the core (controlplane/core/management.py): SET and COMMAND change the clock,
so from a PTP port they are refused (NOT_SUPPORTED, as ptp4l) unless allow_network_management_set 1;
on the local UNIX socket (``local=True``) they are obeyed. GET is answered from anywhere."""

from __future__ import annotations

import random

import pytest

from controlplane.codec import management as cm
from controlplane.codec import messages as m
from controlplane.codec.enums import ManagementAction, ManagementErrorId, ManagementId, PortState
from controlplane.codec.header import Header
from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS, PortIdentity
from controlplane.core import management
from controlplane.core.actions import SendMessage
from controlplane.core.clock import Clock
from controlplane.core.config import ConfigError, parse

GM_ID = bytes.fromhex("001122fffe334455")
ASKER = PortIdentity(bytes.fromhex("0666666666666666"), 7)
FAST = {"logAnnounceInterval": "-2", "logSyncInterval": "-3", "announceReceiptTimeout": "2"}
A = ManagementAction
MID = ManagementId


class _Local:
    """Port 0 as the daemon hands it to the core (number and identity only)."""

    def __init__(self) -> None:
        self.number = 0
        self.identity = PortIdentity(GM_ID, 0)


def clock(**extra: str) -> Clock:
    c = Clock(parse({"global": {**FAST, **extra}}), GM_ID, ["eth0", "eth1"] if extra.get("clock_type") == "BC" else ["eth0"],
              rng=random.Random(1))
    c.start(0)
    return c


def mgmt(action: ManagementAction, mid: int, data: object = None) -> m.Management:
    msg = m.Management(header=Header(sequence_id=5, source_port_identity=ASKER),
                       target_port_identity=PortIdentity(ALL_CLOCKS, ALL_PORTS), starting_boundary_hops=1,
                       boundary_hops=1, action_field=action, tlvs=(cm.ManagementTlv(mid, data),))
    return m.decode(m.encode(msg))  # as it arrives off the wire


def answers(out: list) -> list[m.Management]:
    msgs = [a.message for a in out if isinstance(a, SendMessage)]
    return [m.decode(m.encode(x)) for x in msgs]


def error_of(out: list) -> ManagementErrorId | None:
    (rsp,) = answers(out)
    tlv = rsp.tlvs[0]
    return tlv.management_error_id if isinstance(tlv, cm.ManagementErrorStatusTlv) else None


def test_option_is_in_the_table_and_off_by_default() -> None:
    assert parse({}).allow_network_management_set is False
    assert parse({"global": {"allow_network_management_set": "1"}}).allow_network_management_set is True
    with pytest.raises(ConfigError, match="allow_network_management_set"):
        parse({"global": {"allow_network_management_set": "2"}})
    with pytest.raises(ConfigError, match="global option"):
        parse({"eth0": {"allow_network_management_set": "1"}})


@pytest.mark.parametrize("action,mid,data", [
    (A.SET, MID.PRIORITY1, cm.Priority1(0)),
    (A.SET, MID.PRIORITY2, cm.Priority2(1)),
    (A.SET, MID.USER_DESCRIPTION, None),
    (A.SET, MID.DOMAIN, cm.Domain(3)),  # not settable at all: still the policy answer first
    (A.COMMAND, MID.DISABLE_PORT, None),
    (A.COMMAND, MID.ENABLE_PORT, None),
])
def test_network_set_and_command_refused_by_default(action: ManagementAction, mid: ManagementId, data: object) -> None:
    c = clock()
    before = (c.default_ds.priority1, c.default_ds.priority2, c.user_description, c.port(1).state)
    out = c.handle_message(1, mgmt(action, mid, data), None, 10)
    assert error_of(out) is ManagementErrorId.NOT_SUPPORTED
    (rsp,) = answers(out)
    assert "allow_network_management_set" in rsp.tlvs[0].display_data.text.decode()
    assert rsp.action_field is (A.ACKNOWLEDGE if action is A.COMMAND else A.RESPONSE)
    assert rsp.target_port_identity == ASKER and rsp.header.sequence_id == 5
    assert [a for a in out if not isinstance(a, SendMessage)] == []  # no state change, no BMCA
    assert (c.default_ds.priority1, c.default_ds.priority2, c.user_description, c.port(1).state) == before


def test_network_get_and_null_management_answered_by_default() -> None:
    c = clock()
    (rsp,) = answers(c.handle_message(1, mgmt(A.GET, MID.PRIORITY1), None, 10))
    assert rsp.tlvs[0].data.priority1 == 128
    assert error_of(c.handle_message(1, mgmt(A.COMMAND, MID.NULL_MANAGEMENT), None, 10)) is None


def test_local_socket_set_and_command_obeyed() -> None:
    c = clock()
    out = management.handle(c, _Local(), mgmt(A.SET, MID.PRIORITY1, cm.Priority1(3)), 10, "/tmp/pmc", local=True)
    assert error_of(out) is None and c.default_ds.priority1 == 3
    assert c.parent_ds.grandmaster_priority1 == 3  # own GM data follows
    out = management.handle(c, _Local(), mgmt(A.COMMAND, MID.DISABLE_PORT), 10, "/tmp/pmc", local=True)
    assert c.port(1).state is PortState.DISABLED
    assert all(r.action_field is A.ACKNOWLEDGE for r in answers(out))


def test_network_set_and_command_obeyed_with_the_option() -> None:
    c = clock(allow_network_management_set="1")
    out = c.handle_message(1, mgmt(A.SET, MID.PRIORITY2, cm.Priority2(9)), None, 10)
    assert error_of(out) is None and c.default_ds.priority2 == 9
    c.handle_message(1, mgmt(A.COMMAND, MID.DISABLE_PORT), None, 10)
    assert c.port(1).state is PortState.DISABLED
    # the other checks still apply with the option
    assert error_of(c.handle_message(1, mgmt(A.SET, MID.DOMAIN, cm.Domain(3)), None, 10)) is ManagementErrorId.NOT_SETABLE


def test_ptp_timescale_is_a_clock_option() -> None:
    cfg = parse({"global": FAST})
    tai = Clock(cfg, GM_ID, ["eth0"], rng=random.Random(1))
    utc = Clock(cfg, GM_ID, ["eth0"], rng=random.Random(1), ptp_timescale=False)
    assert tai.time_properties_ds.ptp_timescale is True
    assert utc.time_properties_ds.ptp_timescale is False
    # the GM's Announce carries it
    utc.start(0)
    out = utc.handle_timer(utc.next_deadline_ns())
    out += utc.handle_timer(utc.next_deadline_ns())
    anns = [a.message for a in out if isinstance(a, SendMessage) and isinstance(a.message, m.Announce)]
    assert anns and all(not a.header.ptp_timescale for a in anns)
    (rsp,) = answers(management.handle(utc, _Local(), mgmt(A.GET, MID.TIME_PROPERTIES_DATA_SET), 10, "/x", local=True))
    assert rsp.tlvs[0].data.ptp_timescale is False


# --- forwarding (boundaryHops), as ptp4l's clock_forward_mgmt_msg ------------------------------
def _with_hops(msg: m.Management, hops: int, action: ManagementAction | None = None) -> m.Management:
    import dataclasses

    return dataclasses.replace(msg, starting_boundary_hops=hops, boundary_hops=hops,
                               action_field=action if action is not None else msg.action_field)


def _bc_with_states(*states: PortState) -> Clock:
    c = Clock(parse({"global": {**FAST, "clock_type": "BC"}}), GM_ID, [f"eth{i}" for i in range(len(states))],
              rng=random.Random(1))
    c.start(0)
    for p, st in zip(c.ports, states):
        p.ds.port_state = st
    return c


def test_forward_local_request_goes_to_every_active_port_with_one_hop_less() -> None:
    c = _bc_with_states(PortState.SLAVE, PortState.LISTENING, PortState.DISABLED)
    out = management.forward(c, _with_hops(mgmt(A.GET, MID.CURRENT_DATA_SET), 2), 0)
    assert [a.port for a in out] == [1, 2]
    for a in out:
        back = m.decode(m.encode(a.message))
        assert back.boundary_hops == 1 and back.starting_boundary_hops == 2
        assert back.header.source_port_identity == ASKER and back.header.sequence_id == 5  # pmc's own
    assert management.forward(c, _with_hops(mgmt(A.GET, MID.CURRENT_DATA_SET), 0), 0) == []


def test_forward_network_messages() -> None:
    c = _bc_with_states(PortState.SLAVE, PortState.MASTER, PortState.LISTENING)
    req = _with_hops(mgmt(A.GET, MID.CURRENT_DATA_SET), 1)
    # a request from the network: other forwarding ports only, never the local socket
    assert [a.port for a in management.forward(c, req, 1)] == [2]
    # a response from the network: other forwarding ports and the local socket (dest filled in by the daemon)
    rsp = _with_hops(req, 1, ManagementAction.RESPONSE)
    out = management.forward(c, rsp, 2)
    assert [(a.port, a.dest) for a in out] == [(1, management.Dest.PRIMARY), (0, None)]
    # a transparent clock's bridge forwards on the network itself: only the local socket gets it
    tc = Clock(parse({"global": {**FAST, "clock_type": "E2E_TC"}}), GM_ID, ["p1", "p2"], rng=random.Random(1))
    tc.start(0)
    assert [a.port for a in management.forward(tc, rsp, 1)] == [0]
    assert management.forward(tc, req, 1) == []
