"""Golden captures of real linuxptp traffic (tests/data/golden, see its README): every PTP frame
decodes field by field to the values the lab configured and re-encodes byte-exact."""

from __future__ import annotations

import pathlib
from collections import defaultdict

import pytest

from controlplane.codec import (
    Announce,
    DelayReq,
    DelayResp,
    FollowUp,
    GrantUnicastTransmissionTlv,
    Management,
    ManagementAction,
    ManagementErrorId,
    ManagementErrorStatusTlv,
    ManagementId,
    ManagementTlv,
    MessageType,
    PdelayReq,
    PdelayResp,
    PdelayRespFollowUp,
    RequestUnicastTransmissionTlv,
    Signaling,
    Sync,
    decode,
    encode,
)
from controlplane.codec.enums import DelayMechanism, NetworkProtocol, PortState, TimeSource
from controlplane.codec.frames import Transport, parse_frame
from controlplane.codec.pcap import read_capture

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden"
GM_ID = bytes.fromhex("02005efffe770001")
SLAVE_ID = bytes.fromhex("02005efffe770002")
GM_MAC = bytes.fromhex("02005e770001")
DOMAIN = 24
FILES = ["udpv4_e2e", "l2_e2e", "l2_p2p", "udpv6_e2e", "unicast"]


def load(name: str) -> list[tuple[object, object, object]]:
    """[(record, frame, message)] for every frame of a golden capture."""
    out = []
    for rec in read_capture((GOLDEN / f"{name}.pcap").read_bytes()):
        frame = parse_frame(rec.data, rec.linktype)
        assert frame is not None, f"{name} frame {rec.index} is not PTP (the capture filter only keeps PTP)"
        out.append((rec, frame, decode(frame.ptp)))
    return out


@pytest.fixture(scope="module", params=FILES)
def capture(request: pytest.FixtureRequest) -> tuple[str, list]:  # type: ignore[type-arg]
    return request.param, load(request.param)


def test_every_frame_decodes_and_reencodes_byte_exact(capture) -> None:  # type: ignore[no-untyped-def]
    name, items = capture
    assert len(items) >= 30, f"{name}: only {len(items)} frames captured"
    for rec, frame, msg in items:
        assert encode(msg) == frame.ptp, f"{name} frame {rec.index}"
        h = msg.header
        assert h.version_ptp == 2 and h.domain_number == DOMAIN
        assert h.message_length == len(frame.ptp) - len(msg.trailer)
        assert h.source_port_identity.clock_identity in (GM_ID, SLAVE_ID)


def test_transport_and_addresses(capture) -> None:  # type: ignore[no-untyped-def]
    name, items = capture
    want = {"udpv4": Transport.UDPV4, "l2_": Transport.L2, "udpv6": Transport.UDPV6, "unicast": Transport.UDPV4}
    transport = next(t for k, t in want.items() if name.startswith(k))
    for _rec, frame, msg in items:
        assert frame.transport is transport
        mtype = msg.header.message_type
        if transport is Transport.L2:
            assert frame.dst_mac in (bytes.fromhex("011b19000000"), bytes.fromhex("0180c200000e"))
            pdelay = mtype in (MessageType.PDELAY_REQ, MessageType.PDELAY_RESP, MessageType.PDELAY_RESP_FOLLOW_UP)
            assert (frame.dst_mac == bytes.fromhex("0180c200000e")) == pdelay
        else:
            assert frame.dst_port == (319 if MessageType(mtype).is_event else 320)
        if transport is Transport.UDPV6:
            # linuxptp appends 2 bytes after the message on UDPv6 (room to fix the checksum)
            assert msg.trailer == b"\x00\x00"
            assert frame.src_ip in ("fd77::1", "fd77::2") and frame.dst_ip == "ff0e::181"
        else:
            assert msg.trailer == b""


def test_sequence_ids_increase_per_source_and_type(capture) -> None:  # type: ignore[no-untyped-def]
    name, items = capture
    seqs: dict[tuple[bytes, int], list[int]] = defaultdict(list)
    for _rec, _frame, msg in items:
        if isinstance(msg, (Sync, FollowUp, Announce, DelayReq, PdelayReq)):
            seqs[(msg.header.source_port_identity.clock_identity, int(msg.header.message_type))].append(
                msg.header.sequence_id
            )
    assert seqs, name
    for key, s in seqs.items():
        assert all(b > a for a, b in zip(s, s[1:])), f"{name} {key}: {s}"
    syncs = seqs[(GM_ID, MessageType.SYNC)]
    assert len(syncs) >= 10, f"{name}: {len(syncs)} Syncs in ~7 s at logSyncInterval -2"


def test_two_step_sync_follow_up_and_timestamps(capture) -> None:  # type: ignore[no-untyped-def]
    name, items = capture
    sync_seq = {}
    n_fu = 0
    for rec, _frame, msg in items:
        if isinstance(msg, Sync):
            assert msg.header.two_step and msg.header.source_port_identity.clock_identity == GM_ID
            # multicast Sync carries logSyncInterval; unicast Sync 0x7F (1588-2019 13.3.2.14)
            assert msg.header.log_message_interval == (0x7F if msg.header.unicast else -2)
            sync_seq[msg.header.sequence_id] = rec.timestamp_ns
        elif isinstance(msg, FollowUp):
            n_fu += 1
            assert msg.header.sequence_id in sync_seq
            # free-running ptp4l stamps with the (shared) system clock that tcpdump also uses
            t = msg.precise_origin_timestamp.to_ns()
            assert abs(t - sync_seq[msg.header.sequence_id]) < 50_000_000, (name, rec.index)
            assert msg.precise_origin_timestamp.nanoseconds < 1_000_000_000
    assert n_fu >= 10


def test_announce_names_the_gm(capture) -> None:  # type: ignore[no-untyped-def]
    name, items = capture
    anns = [m for _r, _f, m in items if isinstance(m, Announce)]
    assert len(anns) >= 5
    for a in anns:
        assert a.grandmaster_identity == GM_ID == a.header.source_port_identity.clock_identity
        assert a.grandmaster_priority1 == 10 and a.grandmaster_priority2 == 128
        assert a.grandmaster_clock_quality.clock_class == 248
        assert a.steps_removed == 0 and a.current_utc_offset == 37
        assert a.time_source == TimeSource.INTERNAL_OSCILLATOR
        assert a.header.log_message_interval == -1


@pytest.mark.parametrize("name", ["udpv4_e2e", "l2_e2e", "udpv6_e2e", "unicast"])
def test_delay_request_response(name: str) -> None:
    items = load(name)
    reqs = {m.header.sequence_id: r.timestamp_ns for r, _f, m in items if isinstance(m, DelayReq)}
    resps = [(r, m) for r, _f, m in items if isinstance(m, DelayResp)]
    assert len(resps) >= 5
    for rec, m in resps:
        assert m.requesting_port_identity.clock_identity == SLAVE_ID and m.requesting_port_identity.port_number == 1
        assert m.header.sequence_id in reqs
        assert abs(m.receive_timestamp.to_ns() - reqs[m.header.sequence_id]) < 50_000_000
        assert rec.timestamp_ns >= reqs[m.header.sequence_id]


def test_peer_delay_exchange() -> None:
    items = load("l2_p2p")
    reqs = {(m.header.source_port_identity, m.header.sequence_id) for _r, _f, m in items if isinstance(m, PdelayReq)}
    resps = [m for _r, _f, m in items if isinstance(m, PdelayResp)]
    fups = [m for _r, _f, m in items if isinstance(m, PdelayRespFollowUp)]
    assert len(reqs) >= 10 and len(resps) >= 10 and len(fups) >= 10
    for m in resps + fups:
        # the responder answers the requester's port identity and sequence id; both ends measure
        assert (m.requesting_port_identity, m.header.sequence_id) in reqs
        assert m.requesting_port_identity.clock_identity != m.header.source_port_identity.clock_identity
    assert {m.requesting_port_identity.clock_identity for m in resps} == {GM_ID, SLAVE_ID}
    assert all(m.header.two_step for m in resps)


@pytest.mark.parametrize("name,empty_gets", [("udpv4_e2e", False), ("l2_p2p", True)])
def test_management_get_and_response(name: str, empty_gets: bool) -> None:
    items = [m for _r, _f, m in load(name) if isinstance(m, Management)]
    gets = {m.header.sequence_id: m for m in items if m.action_field == ManagementAction.GET}
    resps = {m.header.sequence_id: m for m in items if m.action_field == ManagementAction.RESPONSE}
    assert len(gets) == 18 and len(resps) == 19
    for seq, g in gets.items():
        tlv = g.tlvs[0]
        assert isinstance(tlv, ManagementTlv)
        assert g.header.source_port_identity.clock_identity == SLAVE_ID
        assert g.target_port_identity.clock_identity == b"\xff" * 8
        if empty_gets or tlv.management_id == ManagementId.NULL_MANAGEMENT:
            assert tlv.data is None  # an empty dataField survives the round trip
        else:
            assert tlv.data is not None
        r = resps[seq]
        assert r.tlvs[0].management_id == tlv.management_id
        assert r.header.source_port_identity.clock_identity == GM_ID
        assert r.target_port_identity == g.header.source_port_identity
    data = {int(r.tlvs[0].management_id): r.tlvs[0].data for r in resps.values() if isinstance(r.tlvs[0], ManagementTlv)}
    dds = data[ManagementId.DEFAULT_DATA_SET]
    assert (dds.clock_identity, dds.priority1, dds.priority2, dds.domain_number, dds.number_ports) == (GM_ID, 10, 128, 24, 1)
    assert dds.two_step_flag and not dds.slave_only
    cds = data[ManagementId.CURRENT_DATA_SET]
    assert cds.steps_removed == 0 and cds.offset_from_master_scaled_ns == 0
    pds = data[ManagementId.PARENT_DATA_SET]
    assert pds.grandmaster_identity == GM_ID and pds.parent_port_identity.clock_identity == GM_ID
    assert pds.grandmaster_priority1 == 10
    tpds = data[ManagementId.TIME_PROPERTIES_DATA_SET]
    assert tpds.current_utc_offset == 37 and tpds.time_source == TimeSource.INTERNAL_OSCILLATOR
    port = data[ManagementId.PORT_DATA_SET]
    assert port.port_identity.clock_identity == GM_ID and port.port_identity.port_number == 1
    assert port.port_state == PortState.MASTER
    assert port.delay_mechanism == (DelayMechanism.P2P if "p2p" in name else DelayMechanism.E2E)
    assert (port.log_sync_interval, port.log_announce_interval, port.announce_receipt_timeout) == (-2, -1, 2)
    assert (port.log_min_delay_req_interval, port.log_min_pdelay_req_interval, port.version_number) == (-2, -2, 2)
    if "p2p" in name:
        assert 0 < port.peer_mean_path_delay_scaled_ns >> 16 < 10_000_000  # a measured veth delay, < 10 ms
    cd = data[ManagementId.CLOCK_DESCRIPTION]
    assert cd.clock_type == 0x8000 and str(cd.physical_layer_protocol) == "IEEE 802.3"
    assert cd.physical_address == GM_MAC
    if "udp" in name:
        assert cd.protocol_address.network_protocol == NetworkProtocol.UDP_IPV4
        assert cd.protocol_address.address == bytes([10, 77, 0, 1])
    else:
        assert cd.protocol_address.network_protocol == NetworkProtocol.IEEE_802_3
        assert cd.protocol_address.address == GM_MAC
    assert str(data[ManagementId.USER_DESCRIPTION].user_description) == ""
    assert data[ManagementId.PRIORITY1].priority1 == 10
    assert data[ManagementId.PRIORITY2].priority2 == 128
    assert data[ManagementId.DOMAIN].domain_number == 24
    assert data[ManagementId.SLAVE_ONLY].slave_only is False
    assert data[ManagementId.LOG_ANNOUNCE_INTERVAL].log_announce_interval == -1
    assert data[ManagementId.ANNOUNCE_RECEIPT_TIMEOUT].announce_receipt_timeout == 2
    assert data[ManagementId.LOG_SYNC_INTERVAL].log_sync_interval == -2
    assert data[ManagementId.VERSION_NUMBER].version_number == 2
    assert data[ManagementId.DELAY_MECHANISM].delay_mechanism == port.delay_mechanism
    assert data[ManagementId.LOG_MIN_PDELAY_REQ_INTERVAL].log_min_pdelay_req_interval == -2
    assert data[ManagementId.NULL_MANAGEMENT] is None
    # the SET PRIORITY2 over the network is refused with MANAGEMENT_ERROR_STATUS
    sets = [m for m in items if m.action_field == ManagementAction.SET]
    assert len(sets) == 1 and sets[0].tlvs[0].data.priority2 == 127
    err = resps[sets[0].header.sequence_id].tlvs[0]
    assert isinstance(err, ManagementErrorStatusTlv)
    assert err.management_id == ManagementId.PRIORITY2 and err.management_error_id == ManagementErrorId.NOT_SUPPORTED


def test_unicast_negotiation() -> None:
    items = load("unicast")
    sig = [(f, m) for _r, f, m in items if isinstance(m, Signaling)]
    reqs = [(f, t) for f, m in sig for t in m.tlvs if isinstance(t, RequestUnicastTransmissionTlv)]
    grants = [(f, t) for f, m in sig for t in m.tlvs if isinstance(t, GrantUnicastTransmissionTlv)]
    assert {t.message_type for _f, t in reqs} == {MessageType.ANNOUNCE, MessageType.SYNC, MessageType.DELAY_RESP}
    assert any(len(m.tlvs) >= 2 for _f, m in sig), "linuxptp asks for Sync and Delay_Resp in one Signaling"
    for f, t in reqs:
        assert f.src_ip == "10.77.0.2" and f.dst_ip == "10.77.0.1" and t.duration_field == 30
    for f, t in grants:
        assert f.src_ip == "10.77.0.1" and f.dst_ip == "10.77.0.2"
        assert t.duration_field == 30 and t.renewal_invited
    assert {t.message_type for _f, t in grants} == {MessageType.ANNOUNCE, MessageType.SYNC, MessageType.DELAY_RESP}
    for _f, m in sig:
        assert m.header.unicast
    req_lim = {t.message_type: t.log_inter_message_period for _f, t in reqs}
    for _f, t in grants:
        assert t.log_inter_message_period == req_lim[t.message_type]
    anns = [(f, m) for _r, f, m in items if isinstance(m, Announce)]
    assert any(m.header.unicast and f.dst_ip == "10.77.0.2" for f, m in anns), "granted unicast Announce"
    # after the grant the server sends Sync by unicast to the client
    assert any(isinstance(m, Sync) and m.header.unicast and f.dst_ip == "10.77.0.2" for _r, f, m in items)
