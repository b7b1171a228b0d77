"""tshark as an independent judge: every message type and TLV the codec encodes is written to a
pcap (UDPv4, UDPv6, L2 with 0/1/2 VLAN tags), dissected by tshark, and must show no malformed or
expert mark and the same field values. The golden linuxptp captures are compared the same way.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from controlplane.codec import (
    AcknowledgeCancelUnicastTransmissionTlv,
    Announce,
    CancelUnicastTransmissionTlv,
    DelayReq,
    DelayResp,
    FollowUp,
    GrantUnicastTransmissionTlv,
    Management,
    ManagementErrorStatusTlv,
    ManagementTlv,
    OrganizationExtensionTlv,
    PathTraceTlv,
    PdelayReq,
    PdelayResp,
    PdelayRespFollowUp,
    RequestUnicastTransmissionTlv,
    Signaling,
    Sync,
    UnknownTlv,
    decode,
    encode,
)
from controlplane.codec import management as mg
from controlplane.codec.frames import build_l2_frame, build_udp4_frame, build_udp6_frame, parse_frame
from controlplane.codec.pcap import read_capture, write_pcap
from controlplane.codec.samples import all_samples, event_and_general

from tests.conftest import in_ci  # type: ignore[import-not-found]

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden"
TSHARK = shutil.which("tshark")
MAC = bytes.fromhex("02005e770001")

pytestmark = pytest.mark.skipif(
    TSHARK is None and not in_ci(), reason="tshark is not installed (apt-get install tshark; `make setup` does)"
)


def test_tshark_present_in_ci() -> None:
    if in_ci():
        assert TSHARK, "CI=true: tshark must be installed (scripts/setup.sh installs it)"


def _hook(pairs: list[tuple[str, object]]) -> dict[str, list[object]]:
    d: dict[str, list[object]] = {}
    for k, v in pairs:
        d.setdefault(k, []).append(v)
    return d


def _flatten(obj: object, acc: dict[str, list[str]], key: str = "") -> dict[str, list[str]]:
    if isinstance(obj, dict):
        for k, vs in obj.items():
            for v in vs:
                _flatten(v, acc, k)
    elif isinstance(obj, list):
        for v in obj:
            _flatten(v, acc, key)
    else:
        acc.setdefault(key, []).append(str(obj))
    return acc


def tshark_fields(pcap: pathlib.Path) -> list[dict[str, list[str]]]:
    """One flat {field: [values in order]} per frame (tshark repeats keys; all are kept)."""
    assert TSHARK
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), "-T", "json", "-o", "ptp.analyze_ptp_messages:FALSE"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0 and "analyze_ptp_messages" in out.stderr:  # older tshark: no such preference
        out = subprocess.run([TSHARK, "-n", "-r", str(pcap), "-T", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    frames = json.loads(out.stdout, object_pairs_hook=_hook)
    return [_flatten(f["_source"][0]["layers"][0], {}) for f in frames[0]] if isinstance(frames, dict) else [
        _flatten(f["_source"][0]["layers"][0], {}) for f in frames
    ]


def no_marks(f: dict[str, list[str]], what: str) -> None:
    bad = {k: v for k, v in f.items() if k.startswith("_ws.malformed") or k.startswith("_ws.expert")}
    assert not bad, f"{what}: tshark marks {bad}"
    assert "ptp.v2.messagetype" in f, f"{what}: tshark did not dissect PTP ({sorted(f)[:20]})"


def one(f: dict[str, list[str]], key: str) -> str:
    assert key in f, f"tshark has no {key}"
    return f[key][0]


def check_ts(f: dict[str, list[str]], prefix: str, ts: object) -> None:
    assert int(one(f, prefix + ".seconds")) == ts.seconds  # type: ignore[attr-defined]
    assert int(one(f, prefix + ".nanoseconds")) == ts.nanoseconds  # type: ignore[attr-defined]


def check_pid(f: dict[str, list[str]], cid_key: str, port_key: str, pid: object) -> None:
    assert int(one(f, cid_key), 16) == int.from_bytes(pid.clock_identity, "big")  # type: ignore[attr-defined]
    assert int(one(f, port_key)) == pid.port_number  # type: ignore[attr-defined]


def check_header(f: dict[str, list[str]], msg: object) -> None:
    h = msg.header  # type: ignore[attr-defined]
    assert int(one(f, "ptp.v2.messagetype"), 16) == int(type(msg).MESSAGE_TYPE)
    assert int(one(f, "ptp.v2.versionptp")) == h.version_ptp
    assert int(one(f, "ptp.v2.minorversionptp")) == h.minor_version_ptp
    assert int(one(f, "ptp.v2.majorsdoid"), 16) == h.transport_specific
    assert int(one(f, "ptp.v2.messagelength")) == len(encode(msg, with_trailer=False))  # type: ignore[arg-type]
    assert int(one(f, "ptp.v2.domainnumber")) == h.domain_number
    assert int(one(f, "ptp.v2.minorsdoid")) == h.minor_sdo_id
    assert int(one(f, "ptp.v2.flags"), 16) == h.flag_field
    for key, name in (
        ("ptp.v2.flags.twostep", "two_step"),
        ("ptp.v2.flags.unicast", "unicast"),
        ("ptp.v2.flags.alternatemaster", "alternate_master"),
        ("ptp.v2.flags.li61", "leap61"),
        ("ptp.v2.flags.li59", "leap59"),
        ("ptp.v2.flags.utcreasonable", "current_utc_offset_valid"),
        ("ptp.v2.flags.timescale", "ptp_timescale"),
        ("ptp.v2.flags.timetraceable", "time_traceable"),
        ("ptp.v2.flags.frequencytraceable", "frequency_traceable"),
    ):
        assert int(one(f, key)) == int(getattr(h, name)), key
    # tshark prints correctionField as (unsigned 64-bit) whole ns and a sub-ns fraction
    assert int(one(f, "ptp.v2.correction.ns")) == (h.correction_scaled_ns >> 16) % (1 << 64)
    assert float(one(f, "ptp.v2.correction.subns")) == pytest.approx((h.correction_scaled_ns & 0xFFFF) / 65536)
    check_pid(f, "ptp.v2.clockidentity", "ptp.v2.sourceportid", h.source_port_identity)
    assert int(one(f, "ptp.v2.sequenceid")) == h.sequence_id
    assert int(one(f, "ptp.v2.controlfield")) == int(encode(msg)[32])  # type: ignore[arg-type]
    assert int(one(f, "ptp.v2.logmessageperiod")) == h.log_message_interval


MGMT_FIELDS = {  # data class -> [(tshark field, function of the data giving the expected value)]
    mg.Priority1: [("ptp.v2.mm.priority1", lambda d: d.priority1)],
    mg.Priority2: [("ptp.v2.mm.priority2", lambda d: d.priority2)],
    mg.Domain: [("ptp.v2.mm.domainNumber", lambda d: d.domain_number)],
    mg.SlaveOnly: [("ptp.v2.mm.SlavOnly", lambda d: int(d.slave_only))],
    mg.LogAnnounceInterval: [("ptp.v2.mm.logAnnounceInterval", lambda d: d.log_announce_interval)],
    mg.AnnounceReceiptTimeout: [("ptp.v2.mm.announceReceiptTimeout", lambda d: d.announce_receipt_timeout)],
    mg.LogSyncInterval: [("ptp.v2.mm.logSyncInterval", lambda d: d.log_sync_interval)],
    mg.VersionNumber: [("ptp.v2.mm.versionNumber", lambda d: d.version_number)],
    mg.DelayMechanismData: [("ptp.v2.mm.delayMechanism", lambda d: int(d.delay_mechanism))],
    mg.LogMinPdelayReqInterval: [("ptp.v2.mm.logMinPdelayReqInterval", lambda d: d.log_min_pdelay_req_interval)],
    mg.DefaultDataSet: [
        ("ptp.v2.mm.twoStep", lambda d: int(d.two_step_flag)),
        ("ptp.v2.mm.SlavOnly", lambda d: int(d.slave_only)),
        ("ptp.v2.mm.numberPorts", lambda d: d.number_ports),
        ("ptp.v2.mm.priority1", lambda d: d.priority1),
        ("ptp.v2.mm.clockclass", lambda d: d.clock_quality.clock_class),
        ("ptp.v2.mm.clockvariance", lambda d: d.clock_quality.offset_scaled_log_variance),
        ("ptp.v2.mm.priority2", lambda d: d.priority2),
        ("ptp.v2.mm.domainNumber", lambda d: d.domain_number),
    ],
    mg.CurrentDataSet: [
        ("ptp.v2.mm.stepsRemoved", lambda d: d.steps_removed),
        ("ptp.v2.mm.offset.ns", lambda d: (d.offset_from_master_scaled_ns >> 16) % (1 << 64)),
        ("ptp.v2.mm.pathDelay.ns", lambda d: (d.mean_path_delay_scaled_ns >> 16) % (1 << 64)),
    ],
    mg.ParentDataSet: [
        ("ptp.v2.mm.parentsourceportid", lambda d: d.parent_port_identity.port_number),
        ("ptp.v2.mm.parentstats", lambda d: int(d.parent_stats)),
        ("ptp.v2.mm.observedParentOffsetScaledLogVariance", lambda d: d.observed_parent_offset_scaled_log_variance),
        ("ptp.v2.mm.observedParentClockPhaseChangeRate", lambda d: d.observed_parent_clock_phase_change_rate),
        ("ptp.v2.mm.grandmasterPriority1", lambda d: d.grandmaster_priority1),
        ("ptp.v2.mm.grandmasterclockclass", lambda d: d.grandmaster_clock_quality.clock_class),
        ("ptp.v2.mm.grandmasterPriority2", lambda d: d.grandmaster_priority2),
    ],
    mg.TimePropertiesDataSet: [
        ("ptp.v2.mm.currentutcoffset", lambda d: d.current_utc_offset),
        ("ptp.v2.mm.li61", lambda d: int(d.leap61)),
        ("ptp.v2.mm.li59", lambda d: int(d.leap59)),
        ("ptp.v2.mm.CurrentUTCOffsetValid", lambda d: int(d.current_utc_offset_valid)),
        ("ptp.v2.mm.ptptimescale", lambda d: int(d.ptp_timescale)),
        ("ptp.v2.mm.timeTraceable", lambda d: int(d.time_traceable)),
        ("ptp.v2.mm.frequencyTraceable", lambda d: int(d.frequency_traceable)),
    ],
    mg.PortDataSet: [
        ("ptp.v2.mm.PortNumber", lambda d: d.port_identity.port_number),
        ("ptp.v2.mm.portState", lambda d: int(d.port_state)),
        ("ptp.v2.mm.logMinDelayReqInterval", lambda d: d.log_min_delay_req_interval),
        ("ptp.v2.mm.peerMeanPathDelay.ns", lambda d: d.peer_mean_path_delay_scaled_ns >> 16),
        ("ptp.v2.mm.logAnnounceInterval", lambda d: d.log_announce_interval),
        ("ptp.v2.mm.announceReceiptTimeout", lambda d: d.announce_receipt_timeout),
        ("ptp.v2.mm.logSyncInterval", lambda d: d.log_sync_interval),
        ("ptp.v2.mm.delayMechanism", lambda d: int(d.delay_mechanism)),
        ("ptp.v2.mm.logMinPdelayReqInterval", lambda d: d.log_min_pdelay_req_interval),
        ("ptp.v2.mm.versionNumber", lambda d: d.version_number),
    ],
    mg.ClockDescription: [
        ("ptp.v2.mm.clockType", lambda d: d.clock_type),
        ("ptp.v2.mm.physicalLayerProtocol", lambda d: str(d.physical_layer_protocol)),
        ("ptp.v2.mm.physicalAddressLength", lambda d: len(d.physical_address)),
        ("ptp.v2.mm.networkProtocol", lambda d: d.protocol_address.network_protocol),
        ("ptp.v2.mm.productDescription", lambda d: str(d.product_description)),
        ("ptp.v2.mm.revisionData", lambda d: str(d.revision_data)),
        ("ptp.v2.mm.userDescription", lambda d: str(d.user_description)),
    ],
    mg.UserDescription: [("ptp.v2.mm.userDescription", lambda d: str(d.user_description))],
    mg.Time: [
        ("ptp.v2.mm.currentTime.seconds", lambda d: d.current_time.seconds),
        ("ptp.v2.mm.currentTime.nanoseconds", lambda d: d.current_time.nanoseconds),
    ],
    mg.TransparentClockDefaultDataSet: [
        ("ptp.v2.mm.numberPorts", lambda d: d.number_ports),
        ("ptp.v2.mm.delayMechanism", lambda d: int(d.delay_mechanism)),
        ("ptp.v2.mm.primaryDomain", lambda d: d.primary_domain),
    ],
    mg.TransparentClockPortDataSet: [
        ("ptp.v2.mm.PortNumber", lambda d: d.port_identity.port_number),
        ("ptp.v2.mm.faultyFlag", lambda d: int(d.faulty_flag)),
        ("ptp.v2.mm.logMinPdelayReqInterval", lambda d: d.log_min_pdelay_req_interval),
        ("ptp.v2.mm.peerMeanPathDelay.ns", lambda d: d.peer_mean_path_delay_scaled_ns >> 16),
    ],
}


def _num(s: str) -> int:
    return int(s, 16) if s.startswith("0x") else int(s)


def check_body(f: dict[str, list[str]], msg: object) -> None:
    if isinstance(msg, (Sync, DelayReq)):
        check_ts(f, "ptp.v2.sdr.origintimestamp", msg.origin_timestamp)
    elif isinstance(msg, FollowUp):
        check_ts(f, "ptp.v2.fu.preciseorigintimestamp", msg.precise_origin_timestamp)
    elif isinstance(msg, DelayResp):
        check_ts(f, "ptp.v2.dr.receivetimestamp", msg.receive_timestamp)
        check_pid(f, "ptp.v2.dr.requestingsourceportidentity", "ptp.v2.dr.requestingsourceportid", msg.requesting_port_identity)
    elif isinstance(msg, PdelayReq):
        check_ts(f, "ptp.v2.pdrq.origintimestamp", msg.origin_timestamp)
    elif isinstance(msg, PdelayResp):
        check_ts(f, "ptp.v2.pdrs.requestreceipttimestamp", msg.request_receipt_timestamp)
        check_pid(f, "ptp.v2.pdrs.requestingportidentity", "ptp.v2.pdrs.requestingsourceportid", msg.requesting_port_identity)
    elif isinstance(msg, PdelayRespFollowUp):
        check_ts(f, "ptp.v2.pdfu.responseorigintimestamp", msg.response_origin_timestamp)
        check_pid(f, "ptp.v2.pdfu.requestingportidentity", "ptp.v2.pdfu.requestingsourceportid", msg.requesting_port_identity)
    elif isinstance(msg, Announce):
        check_ts(f, "ptp.v2.an.origintimestamp", msg.origin_timestamp)
        assert int(one(f, "ptp.v2.an.origincurrentutcoffset")) == msg.current_utc_offset
        assert int(one(f, "ptp.v2.an.priority1")) == msg.grandmaster_priority1
        assert int(one(f, "ptp.v2.an.priority2")) == msg.grandmaster_priority2
        q = msg.grandmaster_clock_quality
        assert int(one(f, "ptp.v2.an.grandmasterclockclass")) == q.clock_class
        assert int(one(f, "ptp.v2.an.grandmasterclockaccuracy"), 16) == q.clock_accuracy
        assert int(one(f, "ptp.v2.an.grandmasterclockvariance")) == q.offset_scaled_log_variance
        assert int(one(f, "ptp.v2.an.grandmasterclockidentity"), 16) == int.from_bytes(msg.grandmaster_identity, "big")
        assert int(one(f, "ptp.v2.an.localstepsremoved")) == msg.steps_removed
        assert int(one(f, "ptp.v2.timesource"), 16) == int(msg.time_source)
        for t in msg.tlvs:
            assert isinstance(t, PathTraceTlv)
            assert [int(x, 16) for x in f["ptp.v2.an.pathsequence"]] == [int.from_bytes(c, "big") for c in t.path_sequence]
    elif isinstance(msg, Signaling):
        check_pid(f, "ptp.v2.sig.targetportidentity", "ptp.v2.sig.targetportid", msg.target_port_identity)
        assert [int(x) for x in f["ptp.v2.sig.tlv.tlvType"]] == [int(t.tlv_type) for t in msg.tlvs]
        assert [int(x) for x in f["ptp.v2.sig.tlv.lengthField"]] == [len(t.value_bytes()) for t in msg.tlvs]
        uni = [t for t in msg.tlvs if hasattr(t, "message_type")]
        if uni:
            assert [int(x, 16) for x in f["ptp.v2.sig.tlv.messageType"]] == [int(t.message_type) for t in uni]
        timed = [t for t in uni if isinstance(t, (RequestUnicastTransmissionTlv, GrantUnicastTransmissionTlv))]
        if timed:
            assert [int(x) for x in f["ptp.v2.sig.tlv.durationField"]] == [t.duration_field for t in timed]
            assert [int(x) for x in f["ptp.v2.sig.tlv.logInterMessagePeriod"]] == [t.log_inter_message_period for t in timed]
        grants = [t for t in uni if isinstance(t, GrantUnicastTransmissionTlv)]
        if grants:
            assert [int(x) for x in f["ptp.v2.sig.tlv.renewalInvited"]] == [int(t.renewal_invited) for t in grants]
        for t in msg.tlvs:
            if isinstance(t, OrganizationExtensionTlv):
                assert _num(one(f, "ptp.v2.an.oe.organizationId")) == int.from_bytes(t.organization_id, "big")
                assert _num(one(f, "ptp.v2.an.oe.organizationSubType")) == t.organization_sub_type
            elif isinstance(t, UnknownTlv):
                assert bytes.fromhex(f["ptp.v2.sig.tlv.data"][-1].replace(":", "")) == t.value
            else:
                assert isinstance(
                    t,
                    (RequestUnicastTransmissionTlv, GrantUnicastTransmissionTlv, CancelUnicastTransmissionTlv,
                     AcknowledgeCancelUnicastTransmissionTlv),
                )
    elif isinstance(msg, Management):
        check_pid(f, "ptp.v2.mm.targetportidentity", "ptp.v2.mm.targetportid", msg.target_port_identity)
        assert int(one(f, "ptp.v2.mm.startingboundaryhops")) == msg.starting_boundary_hops
        assert int(one(f, "ptp.v2.mm.boundaryhops")) == msg.boundary_hops
        assert int(one(f, "ptp.v2.mm.action")) == int(msg.action_field)
        (t,) = msg.tlvs
        assert int(one(f, "ptp.v2.mm.tlvType")) == int(t.tlv_type)
        assert int(one(f, "ptp.v2.mm.lengthField")) == len(t.value_bytes())
        assert int(one(f, "ptp.v2.mm.managementId")) == int(t.management_id)
        if isinstance(t, ManagementErrorStatusTlv):
            assert int(one(f, "ptp.v2.mm.managementErrorId")) == int(t.management_error_id)
            if t.display_data is not None:
                assert one(f, "ptp.v2.mm.displayData") == str(t.display_data)
        elif isinstance(t, ManagementTlv) and t.data is not None:
            checks = MGMT_FIELDS.get(type(t.data))
            assert checks is not None, f"no tshark field table for {type(t.data).__name__}"
            for key, fn in checks:
                got, want = one(f, key), fn(t.data)
                if isinstance(want, str):
                    assert got == want, key
                else:
                    assert _num(got) == int(want), key
    else:  # pragma: no cover
        raise AssertionError(type(msg))


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, object, dict[str, list[str]]]]:
    """Every sample over UDPv4; the non-management ones also over L2 (0, 1, 2 VLAN tags) and UDPv6."""
    cases: list[tuple[str, object, bytes]] = []
    for name, msg in all_samples().items():
        cases.append((f"{name}/udpv4", msg, build_udp4_frame(encode(msg), "10.77.0.1", src_mac=MAC)))
    for name, msg in event_and_general().items():
        ptp = encode(msg)
        cases.append((f"{name}/l2", msg, build_l2_frame(ptp, MAC)))
        cases.append((f"{name}/l2-vlan", msg, build_l2_frame(ptp, MAC, vlan_ids=(42,), pcp=7)))
        cases.append((f"{name}/l2-qinq", msg, build_l2_frame(ptp, MAC, vlan_ids=(100, 42))))
        cases.append((f"{name}/udpv6", msg, build_udp6_frame(ptp + b"\x00\x00", "fd77::1", src_mac=MAC)))
    path = tmp_path_factory.mktemp("tshark") / "samples.pcap"
    path.write_bytes(write_pcap([c[2] for c in cases]))
    fields = tshark_fields(path)
    assert len(fields) == len(cases)
    return [(name, msg, f) for (name, msg, _frame), f in zip(cases, fields)]


def test_every_sample_is_clean_and_agrees_with_tshark(judged) -> None:  # type: ignore[no-untyped-def]
    seen_types = set()
    for name, msg, f in judged:
        no_marks(f, name)
        check_header(f, msg)
        check_body(f, msg)
        seen_types.add(type(msg).MESSAGE_TYPE)
        if "vlan" in name or "qinq" in name:
            assert "42" in f.get("vlan.id", []), name
    assert len(seen_types) == 10, "all ten message types judged"


def test_udp_checksums_verified_by_tshark(tmp_path: pathlib.Path) -> None:
    msg = next(iter(event_and_general().values()))
    frames = [build_udp4_frame(encode(msg), "10.77.0.1"), build_udp6_frame(encode(msg), "fd77::1")]
    p = tmp_path / "ck.pcap"
    p.write_bytes(write_pcap(frames))
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(p), "-T", "fields", "-e", "udp.checksum.status", "-e", "ip.checksum.status",
         "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    rows = [line.split("\t") for line in out.stdout.strip().splitlines()]
    assert rows[0] == ["1", "1"], f"IPv4: udp/ip checksum status {rows[0]} (1 = good)"
    assert rows[1][0] == "1", f"IPv6: udp checksum status {rows[1]}"


@pytest.mark.parametrize("name", ["udpv4_e2e", "l2_e2e", "l2_p2p", "udpv6_e2e", "unicast"])
def test_golden_captures_agree_with_tshark(name: str) -> None:
    path = GOLDEN / f"{name}.pcap"
    fields = tshark_fields(path)
    records = read_capture(path.read_bytes())
    assert len(fields) == len(records)
    for rec, f in zip(records, fields):
        frame = parse_frame(rec.data, rec.linktype)
        assert frame is not None
        msg = decode(frame.ptp)
        no_marks(f, f"{name} #{rec.index}")
        check_header(f, msg)
        check_body(f, msg)
