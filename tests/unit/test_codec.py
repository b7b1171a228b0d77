"""Unit tests of the codec: staged validation with typed reasons, every header flag, reserved
fields kept, messageLength computed, frames (VLAN, IPv4 options, IPv6) and capture formats."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import shutil
import pathlib

import pytest

from controlplane.codec import (
    Announce,
    BodyLengthError,
    CodecError,
    DelayResp,
    EncodeError,
    FollowUp,
    Header,
    HeaderError,
    LengthMismatchError,
    Management,
    ManagementId,
    ManagementTlv,
    MessageType,
    MessageTypeError,
    PdelayReq,
    PortIdentity,
    PTPText,
    Signaling,
    Sync,
    Timestamp,
    TlvError,
    UnknownTlv,
    UserDescription,
    decode,
    encode,
)
from controlplane.codec.frames import (
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    Transport,
    build_l2_frame,
    build_udp4_frame,
    build_udp6_frame,
    internet_checksum,
    parse_frame,
    udp_checksum_ok,
)
from controlplane.codec.header import HEADER_LEN
from controlplane.codec.pcap import read_capture, write_pcap
from controlplane.codec.samples import all_samples
from controlplane.codec.types import format_clock_identity, parse_clock_identity

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden"
SYNC = encode(Sync(Header(sequence_id=9, domain_number=3), Timestamp(5, 6)))


def test_all_samples_round_trip_and_lengths() -> None:
    for name, msg in all_samples().items():
        b = encode(msg)
        assert struct.unpack_from("!H", b, 2)[0] == len(b), name
        d = decode(b)
        assert encode(d) == b, name
        assert type(d) is type(msg)
        assert d.header.message_type == type(msg).MESSAGE_TYPE


@pytest.mark.parametrize(
    "flag,octet,bit",
    [
        ("alternate_master", 0, 0),
        ("two_step", 0, 1),
        ("unicast", 0, 2),
        ("profile_specific_1", 0, 5),
        ("profile_specific_2", 0, 6),
        ("leap61", 1, 0),
        ("leap59", 1, 1),
        ("current_utc_offset_valid", 1, 2),
        ("ptp_timescale", 1, 3),
        ("time_traceable", 1, 4),
        ("frequency_traceable", 1, 5),
        ("synchronization_uncertain", 1, 6),
    ],
)
def test_each_flag_is_its_own_bit(flag: str, octet: int, bit: int) -> None:
    b = encode(Sync(Header(**{flag: True})))
    assert b[6 + octet] == 1 << bit and b[7 - octet] == 0
    d = decode(b)
    assert getattr(d.header, flag) is True
    others = [n for n in ("two_step", "unicast", "leap61", "ptp_timescale") if n != flag]
    assert not any(getattr(d.header, n) for n in others)


def test_header_fields_on_the_wire() -> None:
    h = Header(
        sequence_id=0xBEEF,
        domain_number=127,
        source_port_identity=PortIdentity(bytes(range(8)), 0x1234),
        correction_scaled_ns=-(1 << 63),
        log_message_interval=-128,
        transport_specific=0xF,
        minor_version_ptp=1,
        minor_sdo_id=0xAB,
        message_type_specific=0xDEADBEEF,
    )
    b = encode(FollowUp(h, Timestamp((1 << 48) - 1, 999_999_999)))
    assert b[0] == 0xF8 and b[1] == 0x12 and b[4] == 127 and b[5] == 0xAB
    assert struct.unpack_from("!q", b, 8)[0] == -(1 << 63)
    assert b[16:20] == bytes.fromhex("deadbeef") and b[20:28] == bytes(range(8))
    assert b[32] == 2 and struct.unpack_from("!b", b, 33)[0] == -128  # controlField of Follow_Up
    d = decode(b)
    assert d.header.correction_scaled_ns == -(1 << 63) and d.header.minor_version_ptp == 1
    assert d.precise_origin_timestamp.seconds == (1 << 48) - 1


def test_reserved_bits_and_fields_survive() -> None:
    b = bytearray(encode(Announce()))
    b[6] |= 0x98  # reserved flag bits (security + 2 reserved)
    b[7] |= 0x80
    b[46] = 0x5A  # Announce reserved octet (after originTimestamp and currentUtcOffset)
    b[32] = 0x77  # odd controlField
    d = decode(bytes(b))
    assert d.reserved == 0x5A and d.header.reserved_flags == 0x9880 and d.header.control_field == 0x77
    assert encode(d) == bytes(b)
    p = bytearray(encode(PdelayReq()))
    p[44:54] = b"0123456789"
    assert encode(decode(bytes(p))) == bytes(p)


def test_trailer_kept_and_length_recomputed() -> None:
    d = decode(SYNC + b"\x00\x00")
    assert d.trailer == b"\x00\x00" and d.header.message_length == 44
    assert encode(d) == SYNC + b"\x00\x00"
    assert encode(d, with_trailer=False) == SYNC
    grown = Sync(d.header, d.origin_timestamp, tlvs=(UnknownTlv(0x7001, b"ab"),))
    assert struct.unpack_from("!H", encode(grown), 2)[0] == 50


def test_timestamp_ns_conversions() -> None:
    assert Timestamp.from_ns(1_500_000_000_123).to_ns() == 1_500_000_000_123
    assert Timestamp.from_ns(1_500_000_000_123) == Timestamp(1500, 123)
    with pytest.raises(EncodeError):
        Timestamp.from_ns(-1)
    with pytest.raises(EncodeError):
        Timestamp(1 << 48, 0)


def test_clock_identity_text() -> None:
    cid = bytes.fromhex("02005efffe770001")
    assert format_clock_identity(cid) == "02005e.fffe.770001"
    assert parse_clock_identity("02005e.fffe.770001") == cid
    assert str(PortIdentity(cid, 3)) == "02005e.fffe.770001-3"


@pytest.mark.parametrize(
    "data,exc,words",
    [
        (b"", HeaderError, "shorter than the 34-byte"),
        (SYNC[:33], HeaderError, "shorter than the 34-byte"),
        (SYNC[:1] + b"\x01" + SYNC[2:], HeaderError, "versionPTP 1"),
        (SYNC[:1] + b"\x03" + SYNC[2:], HeaderError, "versionPTP 3"),
        (SYNC[:1] + b"\x22" + SYNC[2:], HeaderError, "minorVersionPTP 2"),
        (b"\x04" + SYNC[1:], MessageTypeError, "0x4 is reserved"),
        (b"\x0e" + SYNC[1:], MessageTypeError, "0xe is reserved"),
        (SYNC[:2] + struct.pack("!H", 40) + SYNC[4:], BodyLengthError, "messageLength 40"),
        (SYNC[:43], BodyLengthError, "43 bytes"),
        (SYNC[:2] + struct.pack("!H", 60) + SYNC[4:], LengthMismatchError, "exceeds the 44 bytes"),
        (SYNC[:2] + struct.pack("!H", 46) + SYNC[4:] + b"\x00\x01", TlvError, "too short for a TLV header"),
        (SYNC[:2] + struct.pack("!H", 50) + SYNC[4:] + b"\x70\x00\x00\x03\x00\x00", TlvError, "odd lengthField 3"),
        (SYNC[:2] + struct.pack("!H", 50) + SYNC[4:] + b"\x70\x00\x00\x04\x00\x00", TlvError, "overruns"),
        (SYNC[:2] + struct.pack("!H", 54) + SYNC[4:] + b"\x00\x08\x00\x06" + bytes(6), TlvError, "multiple of 8"),
        (SYNC[:2] + struct.pack("!H", 52) + SYNC[4:] + b"\x00\x04\x00\x04" + bytes(4), TlvError, "REQUEST_UNICAST"),
    ],
)
def test_staged_validation_reasons(data: bytes, exc: type[CodecError], words: str) -> None:
    with pytest.raises(exc) as info:
        decode(data)
    assert words in info.value.reason, info.value.reason
    assert isinstance(info.value, CodecError) and isinstance(info.value, ValueError)


def test_management_data_too_short_is_a_tlv_error() -> None:
    good = encode(Management(tlvs=(ManagementTlv(ManagementId.DEFAULT_DATA_SET, None),)))
    bad = good[:2] + struct.pack("!H", len(good) + 4) + good[4:50] + struct.pack("!H", 6) + good[52:] + bytes(4)
    with pytest.raises(TlvError, match="DEFAULT_DATA_SET"):
        decode(bad)


def test_empty_management_get_and_text_padding() -> None:
    get = Management(tlvs=(ManagementTlv(ManagementId.CURRENT_DATA_SET, None),))
    b = encode(get)
    assert len(b) == 48 + 6 and decode(b).tlvs[0].data is None
    ud = Management(tlvs=(ManagementTlv(ManagementId.USER_DESCRIPTION, UserDescription(PTPText.of("ab"))),))
    b = encode(ud)  # 1 length octet + 2 text octets + 1 pad -> TLV length 2 + 4
    assert struct.unpack_from("!H", b, 50)[0] == 6 and len(b) % 2 == 0
    assert str(decode(b).tlvs[0].data.user_description) == "ab"


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(EncodeError):
        encode(Sync(Header(sequence_id=1 << 16)))
    with pytest.raises(EncodeError):
        encode(Sync(Header(correction_scaled_ns=1 << 63)))
    with pytest.raises(EncodeError):
        encode(Sync(Header(reserved_flags=0x0200)))  # that bit is two_step
    with pytest.raises(EncodeError):
        encode(Management(tlvs=(ManagementTlv(ManagementId.PRIORITY1, UserDescription()),)))
    with pytest.raises(EncodeError):
        encode(Sync(tlvs=(UnknownTlv(0x7000, b"odd"),)))
    with pytest.raises(EncodeError):
        encode("not a message")  # type: ignore[arg-type]


def test_decode_rejects_non_bytes_with_codec_error() -> None:
    with pytest.raises(CodecError):
        decode("text")  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        decode(None)  # type: ignore[arg-type]


# --- frames ---------------------------------------------------------------------------------------

MAC = bytes.fromhex("02005e770001")


@pytest.mark.parametrize("vlans", [(), (7,), (100, 7)])
def test_l2_frames_with_vlans(vlans: tuple[int, ...]) -> None:
    raw = build_l2_frame(SYNC, MAC, vlan_ids=vlans, pcp=5)
    f = parse_frame(raw)
    assert f is not None and f.transport is Transport.L2 and f.vlan_ids == vlans
    assert f.src_mac == MAC and f.dst_mac == bytes.fromhex("011b19000000")
    assert decode(f.ptp).header.sequence_id == 9
    if len(vlans) == 2:
        assert raw[12:14] == b"\x88\xa8" and raw[16:18] == b"\x81\x00"
    if vlans:
        assert f.vlan_pcps[-1] == 5 or len(vlans) == 2
    # Ethernet minimum size padding becomes the PTP trailer, and re-encodes exactly
    assert len(raw) >= 60 and encode(decode(f.ptp)) == f.ptp


def test_udp4_frame_checksums_and_options() -> None:
    raw = build_udp4_frame(SYNC, "10.1.2.3", "224.0.1.129")
    f = parse_frame(raw)
    assert f is not None and (f.transport, f.src_ip, f.dst_ip, f.src_port, f.dst_port) == (
        Transport.UDPV4, "10.1.2.3", "224.0.1.129", 319, 319)
    assert raw[0:6] == bytes.fromhex("01005e000181")
    assert internet_checksum(raw[14:34]) == 0 and udp_checksum_ok(raw)
    # insert 8 bytes of IPv4 options (IHL 7): parse_frame must skip them; checksum not required valid
    ip = bytearray(raw[14:34])
    ip[0] = 0x47
    struct.pack_into("!H", ip, 2, struct.unpack_from("!H", ip, 2)[0] + 8)
    opt = bytes(raw[:14]) + bytes(ip) + b"\x01" * 8 + raw[34:]
    g = parse_frame(opt)
    assert g is not None and g.ptp == f.ptp and g.ptp_offset == f.ptp_offset + 8
    # a general message gets port 320
    fu = build_udp4_frame(encode(FollowUp()), "10.1.2.3")
    assert parse_frame(fu).dst_port == 320  # type: ignore[union-attr]


def test_udp_checksum_against_scapy() -> None:
    scapy = pytest.importorskip("scapy.all")
    raw = build_udp4_frame(SYNC, "10.1.2.3", "10.1.2.4", src_port=40000)
    p = scapy.Ether(raw)
    want_udp, want_ip = p["UDP"].chksum, p["IP"].chksum
    del p["UDP"].chksum, p["IP"].chksum
    q = scapy.Ether(bytes(p))
    assert (q["UDP"].chksum, q["IP"].chksum) == (want_udp, want_ip)
    raw6 = build_udp6_frame(SYNC, "fd77::1", "ff0e::181")
    p6 = scapy.Ether(raw6)
    want6 = p6["UDP"].chksum
    del p6["UDP"].chksum
    assert scapy.Ether(bytes(p6))["UDP"].chksum == want6


def test_udp6_frame() -> None:
    raw = build_udp6_frame(SYNC + b"\x00\x00", "fd77::1")
    f = parse_frame(raw)
    assert f is not None and f.transport is Transport.UDPV6 and f.dst_ip == "ff0e::181"
    assert raw[0:6] == bytes.fromhex("333300000181") and udp_checksum_ok(raw)
    assert decode(f.ptp).trailer == b"\x00\x00"
    assert f.src == "[fd77::1]:319"


def test_non_ptp_and_broken_frames() -> None:
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    assert parse_frame(arp) is None
    dns = build_udp4_frame(SYNC, "10.0.0.1", src_port=53, dst_port=53)
    assert parse_frame(dns) is None
    raw = bytearray(build_udp4_frame(SYNC, "10.0.0.1"))
    struct.pack_into("!H", raw, 38, 200)  # UDP length lies
    with pytest.raises(CodecError, match="overruns"):
        parse_frame(bytes(raw))
    assert parse_frame(b"\x00" * 5) is None


def test_sll_and_sll2_link_types() -> None:
    ip_part = build_udp4_frame(SYNC, "10.0.0.1")[14:]
    sll = struct.pack("!HHH8sH", 0, 1, 6, MAC + b"\x00\x00", 0x0800) + ip_part
    f = parse_frame(sll, LINKTYPE_LINUX_SLL)
    assert f is not None and f.transport is Transport.UDPV4 and f.src_mac == MAC
    sll2 = struct.pack("!HHIHBB8s", 0x88F7, 0, 3, 1, 0, 6, MAC + b"\x00\x00") + SYNC
    g = parse_frame(sll2, LINKTYPE_LINUX_SLL2)
    assert g is not None and g.transport is Transport.L2 and g.ptp == SYNC


# --- captures -------------------------------------------------------------------------------------


def _pcap(order: str, ns: bool, frames: list[bytes], linktype: int = 1) -> bytes:
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, fr in enumerate(frames):
        out += struct.pack(order + "IIII", 1000 + i, 500 if ns else 7, len(fr), len(fr)) + fr
    return out


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("ns", [False, True])
def test_classic_pcap_variants(order: str, ns: bool) -> None:
    frames = [build_l2_frame(SYNC, MAC), build_udp4_frame(SYNC, "10.0.0.1")]
    recs = read_capture(_pcap(order, ns, frames))
    assert [r.data for r in recs] == frames and [r.index for r in recs] == [1, 2]
    assert recs[1].timestamp_ns == 1001 * 10**9 + (500 if ns else 7000)


def test_pcap_errors() -> None:
    from controlplane.codec import PcapError

    with pytest.raises(PcapError, match="unknown capture magic"):
        read_capture(b"hello world, not a capture")
    good = _pcap("<", False, [build_l2_frame(SYNC, MAC)])
    with pytest.raises(PcapError, match="overruns"):
        read_capture(good[:-3])
    with pytest.raises(PcapError):
        read_capture(b"")


def test_pcapng_written_by_editcap_reads_the_same() -> None:
    editcap = shutil.which("editcap")
    if editcap is None:
        pytest.skip("editcap (wireshark-common / tshark) not installed")
    src = GOLDEN / "l2_p2p.pcap"
    out = subprocess.run([editcap, "-F", "pcapng", str(src), "-"], capture_output=True, timeout=60, check=True).stdout
    ng = read_capture(out)
    classic = read_capture(src.read_bytes())
    assert [(r.data, r.timestamp_ns, r.linktype) for r in ng] == [(r.data, r.timestamp_ns, r.linktype) for r in classic]


def test_pcapng_simple_packet_block_and_tsresol() -> None:
    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0))
    frame = build_l2_frame(SYNC, MAC)
    epb = block(6, struct.pack("<IIIII", 0, 0, 1_500_000_000, len(frame), len(frame)) + frame)
    spb = block(3, struct.pack("<I", len(frame)) + frame)
    recs = read_capture(shb + idb + epb + spb)
    assert [r.data for r in recs] == [frame, frame]
    assert recs[0].timestamp_ns == 1_500_000_000  # if_tsresol 9 -> ticks are ns


def test_write_pcap_is_read_back() -> None:
    frames = [(5_000_000_123, build_l2_frame(SYNC, MAC))]
    (r,) = read_capture(write_pcap(frames))
    assert r.timestamp_ns == 5_000_000_123 and r.data == frames[0][1]


def test_ipaddress_helpers_are_stdlib() -> None:
    assert ipaddress.ip_address("10.77.0.1").version == 4
