"""linuxptp's implementation-specific management IDs (TIME_STATUS_NP, GRANDMASTER_SETTINGS_NP,
PORT_PROPERTIES_NP): exact layouts from linuxptp tlv.h, round trips, typed errors on short data,
and tshark dissects the messages without a malformed or expert mark."""

from __future__ import annotations

import shutil
import struct

import pytest

from controlplane.codec import management as mg
from controlplane.codec.enums import ManagementAction, ManagementId, PortState
from controlplane.codec.errors import CodecError
from controlplane.codec.frames import build_udp4_frame
from controlplane.codec.header import Header
from controlplane.codec.messages import Management, decode, encode
from controlplane.codec.pcap import write_pcap
from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS, ClockQuality, PortIdentity, PTPText

GM = bytes.fromhex("0200000000000001")
ME = PortIdentity(bytes.fromhex("0200000000000002"), 1)

SAMPLES = {
    "time_status_np": mg.TimeStatusNp(master_offset_ns=-1234, ingress_time_ns=1_700_000_000_123_456_789,
                                      cumulative_scaled_rate_offset=-2_199_023, scaled_last_gm_phase_change=7,
                                      gm_time_base_indicator=3, last_gm_phase_change_scaled_ns=-(5 << 16), gm_present=1,
                                      gm_identity=GM),
    "grandmaster_settings_np": mg.GrandmasterSettingsNp(ClockQuality(248, 0xFE, 0xFFFF), 37, 0x0C, 0xA0),
    "port_properties_np": mg.PortPropertiesNp(ME, int(PortState.SLAVE), mg.NpTimestamping.SOFTWARE, PTPText.of("eth0")),
}


def _msg(data: object, action: ManagementAction = ManagementAction.RESPONSE) -> Management:
    tlv = mg.ManagementTlv(data.MANAGEMENT_ID, data)  # type: ignore[attr-defined]
    return Management(header=Header(source_port_identity=ME, sequence_id=5), target_port_identity=PortIdentity(ALL_CLOCKS, ALL_PORTS),
                      starting_boundary_hops=0, boundary_hops=0, action_field=action, tlvs=(tlv,))


def test_time_status_np_layout_is_linuxptp_struct() -> None:
    raw = SAMPLES["time_status_np"].value_bytes()
    assert len(raw) == 50  # sizeof(struct time_status_np), PACKED
    mo, it, csro, slgpc, tbi = struct.unpack_from("!qqiiH", raw)
    assert (mo, it, csro, slgpc, tbi) == (-1234, 1_700_000_000_123_456_789, -2_199_023, 7, 3)
    assert raw[26:28] == b"\xff\xff" and int.from_bytes(raw[26:38], "big", signed=True) == -(5 << 16)  # ScaledNs msb
    assert struct.unpack_from("!i", raw, 38)[0] == 1 and raw[42:] == GM


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    msg = _msg(SAMPLES[name])
    data = encode(msg)
    back = decode(data)
    tlv = back.management_tlv
    assert type(tlv.data) is type(SAMPLES[name]) and encode(back) == data
    assert tlv.data.value_bytes() == SAMPLES[name].value_bytes()
    assert len(data) % 2 == 0


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_short_data_is_a_typed_error(name: str) -> None:
    raw = bytearray(encode(_msg(SAMPLES[name])))
    # cut the dataField to 2 octets: messageLength and the TLV's lengthField shrink with it
    tlv_at = 48
    cut = tlv_at + 4 + 2 + 2
    raw = raw[:cut]
    struct.pack_into("!H", raw, tlv_at + 2, 4)
    struct.pack_into("!H", raw, 2, len(raw))
    with pytest.raises(CodecError, match="NP"):
        decode(bytes(raw))


def test_bad_values_refused_on_encode() -> None:
    with pytest.raises(CodecError):
        mg.TimeStatusNp(gm_identity=b"short").value_bytes()
    with pytest.raises(CodecError):
        mg.GrandmasterSettingsNp(utc_offset=1 << 20).value_bytes()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_dissects_np_management_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.test_codec_tshark import no_marks, one, tshark_fields

    msgs = [_msg(d) for d in SAMPLES.values()] + [_msg(d, ManagementAction.GET) for d in SAMPLES.values()]
    # a GET carries no dataField
    msgs[len(SAMPLES):] = [Management(header=m.header, target_port_identity=m.target_port_identity, starting_boundary_hops=0,
                                      boundary_hops=0, action_field=ManagementAction.GET,
                                      tlvs=(mg.ManagementTlv(m.management_tlv.management_id, None),)) for m in msgs[len(SAMPLES):]]
    p = tmp_path / "np.pcap"
    p.write_bytes(write_pcap([build_udp4_frame(encode(m), "10.77.0.1") for m in msgs]))
    fields = tshark_fields(p)
    assert len(fields) == len(msgs)
    for m, f in zip(msgs, fields):
        no_marks(f, m.management_tlv.management_id.name)
        assert int(one(f, "ptp.v2.mm.managementId"), 0) == int(m.management_tlv.management_id)
        assert ManagementId(int(m.management_tlv.management_id)).name.endswith("_NP")
