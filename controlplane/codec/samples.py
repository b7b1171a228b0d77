"""One constructed example of every message type and TLV this codec encodes, with non-trivial
field values. Tests (round trip, tshark judge), demos and the dataplane tests use them. Pure.
"""

from __future__ import annotations

from controlplane.codec import management as m
from controlplane.codec.enums import (
    ClockAccuracy,
    DelayMechanism,
    ManagementAction,
    ManagementErrorId,
    ManagementId,
    MessageType,
    NetworkProtocol,
    PortState,
    TimeSource,
)
from controlplane.codec.header import Header
from controlplane.codec.messages import (
    Announce,
    DelayReq,
    DelayResp,
    FollowUp,
    Management,
    Message,
    PdelayReq,
    PdelayResp,
    PdelayRespFollowUp,
    Signaling,
    Sync,
)
from controlplane.codec.tlv import (
    AcknowledgeCancelUnicastTransmissionTlv,
    CancelUnicastTransmissionTlv,
    GrantUnicastTransmissionTlv,
    OrganizationExtensionTlv,
    PathTraceTlv,
    RequestUnicastTransmissionTlv,
    UnknownTlv,
)
from controlplane.codec.types import ClockQuality, PortAddress, PortIdentity, PTPText, Timestamp

GM_ID = bytes.fromhex("02005efffe770001")
SLAVE_ID = bytes.fromhex("02005efffe770002")
GM_PORT = PortIdentity(GM_ID, 1)
SLAVE_PORT = PortIdentity(SLAVE_ID, 1)
TS = Timestamp(1_700_000_123, 456_789_012)


def _h(seq: int, src: PortIdentity = GM_PORT, **kw: object) -> Header:
    base: dict[str, object] = {"sequence_id": seq, "domain_number": 24, "source_port_identity": src, "log_message_interval": -3}
    base.update(kw)
    return Header(**base)  # type: ignore[arg-type]


def event_and_general() -> dict[str, Message]:
    """The nine non-management message types."""
    return {
        "sync": Sync(_h(101, two_step=True, correction_scaled_ns=1234567 << 16, unicast=True), TS),
        "delay_req": DelayReq(_h(102, SLAVE_PORT, correction_scaled_ns=-(5 << 16)), TS),
        "pdelay_req": PdelayReq(_h(103, SLAVE_PORT), TS),
        "pdelay_resp": PdelayResp(_h(104, two_step=True, correction_scaled_ns=0x1_8000), TS, SLAVE_PORT),
        "follow_up": FollowUp(_h(101, correction_scaled_ns=987 << 16), Timestamp(1_700_000_123, 999_999_999)),
        "delay_resp": DelayResp(_h(102, correction_scaled_ns=7 << 16), TS, SLAVE_PORT),
        "pdelay_resp_follow_up": PdelayRespFollowUp(_h(104, correction_scaled_ns=3 << 16), TS, SLAVE_PORT),
        "announce": Announce(
            _h(
                105,
                log_message_interval=1,
                current_utc_offset_valid=True,
                ptp_timescale=True,
                time_traceable=True,
                frequency_traceable=True,
                leap61=True,
            ),
            Timestamp(0, 0),
            37,
            10,
            ClockQuality(6, ClockAccuracy.WITHIN_100_NS, 0x4E5D),
            20,
            GM_ID,
            1,
            TimeSource.GNSS,
            tlvs=(PathTraceTlv((GM_ID, bytes.fromhex("aabbccfffe000001"))),),
        ),
        "signaling_unicast": Signaling(
            _h(106, SLAVE_PORT, unicast=True),
            GM_PORT,
            tlvs=(
                RequestUnicastTransmissionTlv(MessageType.ANNOUNCE, 1, 300),
                RequestUnicastTransmissionTlv(MessageType.SYNC, -4, 300),
                RequestUnicastTransmissionTlv(MessageType.DELAY_RESP, -4, 300),
            ),
        ),
        "signaling_grant": Signaling(
            _h(107, unicast=True),
            SLAVE_PORT,
            tlvs=(
                GrantUnicastTransmissionTlv(MessageType.ANNOUNCE, 1, 300, renewal_invited=True),
                GrantUnicastTransmissionTlv(MessageType.SYNC, -4, 0),
            ),
        ),
        "signaling_cancel": Signaling(
            _h(108, SLAVE_PORT, unicast=True),
            GM_PORT,
            tlvs=(
                CancelUnicastTransmissionTlv(MessageType.SYNC),
                AcknowledgeCancelUnicastTransmissionTlv(MessageType.ANNOUNCE),
            ),
        ),
        "signaling_org": Signaling(
            _h(109),
            PortIdentity(b"\xff" * 8, 0xFFFF),
            tlvs=(
                OrganizationExtensionTlv(bytes.fromhex("0080c2"), 2, bytes(range(12))),
                UnknownTlv(0x7F55, b"\x01\x02\x03\x04"),
            ),
        ),
    }


MANAGEMENT_DATA: dict[str, object] = {
    "default_data_set": m.DefaultDataSet(True, False, 1, 10, ClockQuality(248, 0xFE, 0xFFFF), 128, GM_ID, 24),
    "current_data_set": m.CurrentDataSet(1, -(1500 << 16), 2345 << 16),
    "parent_data_set": m.ParentDataSet(GM_PORT, True, 0x4321, -12, 10, ClockQuality(6, 0x21, 0x4E5D), 20, GM_ID),
    "time_properties_data_set": m.TimePropertiesDataSet(37, False, True, True, True, False, True, TimeSource.PTP),
    "port_data_set": m.PortDataSet(SLAVE_PORT, PortState.SLAVE, -3, 1234 << 16, 1, 3, -3, DelayMechanism.E2E, 0, 2),
    "clock_description": m.ClockDescription(
        0x8000,
        PTPText.of("IEEE 802.3"),
        bytes.fromhex("02005e770002"),
        PortAddress(NetworkProtocol.UDP_IPV4, bytes([10, 77, 0, 2])),
        bytes.fromhex("001122"),
        0,
        PTPText.of("ptp-switch;codec;1"),
        PTPText.of("1;2;3"),
        PTPText.of("lab"),
        bytes.fromhex("000c8f000100"),
    ),
    "user_description": m.UserDescription(PTPText.of("rack 3;switch 7")),
    "priority1": m.Priority1(10),
    "priority2": m.Priority2(20),
    "domain": m.Domain(24),
    "slave_only": m.SlaveOnly(True),
    "log_announce_interval": m.LogAnnounceInterval(-1),
    "announce_receipt_timeout": m.AnnounceReceiptTimeout(4),
    "log_sync_interval": m.LogSyncInterval(-4),
    "version_number": m.VersionNumber(2, 1),
    "time": m.Time(TS),
    "delay_mechanism": m.DelayMechanismData(DelayMechanism.P2P),
    "log_min_pdelay_req_interval": m.LogMinPdelayReqInterval(-2),
    "transparent_clock_default_data_set": m.TransparentClockDefaultDataSet(GM_ID, 4, DelayMechanism.E2E, 24),
    "transparent_clock_port_data_set": m.TransparentClockPortDataSet(PortIdentity(GM_ID, 3), False, -3, 812 << 16),
}


def management_messages() -> dict[str, Message]:
    out: dict[str, Message] = {}
    seq = 200
    for name, data in MANAGEMENT_DATA.items():
        mid = data.MANAGEMENT_ID  # type: ignore[attr-defined]
        out[f"mgmt_get_{name}"] = Management(
            _h(seq, SLAVE_PORT, log_message_interval=0x7F), PortIdentity(b"\xff" * 8, 0xFFFF), 1, 1, ManagementAction.GET,
            tlvs=(m.ManagementTlv(mid, None),),
        )
        out[f"mgmt_response_{name}"] = Management(
            _h(seq, log_message_interval=0x7F), SLAVE_PORT, 1, 0, ManagementAction.RESPONSE,
            tlvs=(m.ManagementTlv(mid, data),),
        )
        seq += 1
    for name, mid in (
        ("null_management", ManagementId.NULL_MANAGEMENT),
        ("enable_port", ManagementId.ENABLE_PORT),
        ("disable_port", ManagementId.DISABLE_PORT),
    ):
        action = ManagementAction.GET if name == "null_management" else ManagementAction.COMMAND
        out[f"mgmt_{name}"] = Management(
            _h(seq, SLAVE_PORT, log_message_interval=0x7F), PortIdentity(GM_ID, 1), 0, 0, action,
            tlvs=(m.ManagementTlv(mid, None),),
        )
        seq += 1
    out["mgmt_error_status"] = Management(
        _h(seq, log_message_interval=0x7F), SLAVE_PORT, 0, 0, ManagementAction.RESPONSE,
        tlvs=(m.ManagementErrorStatusTlv(ManagementErrorId.NOT_SETABLE, ManagementId.PRIORITY2, bytes(4), PTPText.of("no")),),
    )
    return out


def all_samples() -> dict[str, Message]:
    return {**event_and_general(), **management_messages()}
