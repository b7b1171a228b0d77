"""Test data for the dataplane: PTP v2 messages (a small struct helper) and their encapsulations
(scapy). Data, not logic: the tests iterate over these tables."""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

SYNC, DELAY_REQ, PDELAY_REQ, PDELAY_RESP = 0x0, 0x1, 0x2, 0x3
FOLLOW_UP, DELAY_RESP, PDELAY_RESP_FU, ANNOUNCE, SIGNALING, MANAGEMENT = 0x8, 0x9, 0xA, 0xB, 0xC, 0xD
EVENTS = (SYNC, DELAY_REQ, PDELAY_REQ, PDELAY_RESP)
LENGTHS = {SYNC: 44, DELAY_REQ: 44, PDELAY_REQ: 54, PDELAY_RESP: 54, FOLLOW_UP: 44, DELAY_RESP: 54,
           PDELAY_RESP_FU: 54, ANNOUNCE: 64, SIGNALING: 44, MANAGEMENT: 48}
NAMES = {SYNC: "Sync", DELAY_REQ: "Delay_Req", PDELAY_REQ: "Pdelay_Req", PDELAY_RESP: "Pdelay_Resp",
         FOLLOW_UP: "Follow_Up", DELAY_RESP: "Delay_Resp", PDELAY_RESP_FU: "Pdelay_Resp_Follow_Up",
         ANNOUNCE: "Announce", SIGNALING: "Signaling", MANAGEMENT: "Management"}
GM_PORT = bytes.fromhex("0011223344556677") + b"\x00\x01"
SLAVE_PORT = bytes.fromhex("8899aabbccddeeff") + b"\x00\x01"
CORR_OFF = 8


def ptp(msg_type: int, *, seq: int = 100, domain: int = 0, two_step: bool = False, correction_scaled: int = 0,
        source: bytes = GM_PORT, requesting: bytes = SLAVE_PORT, minor: int = 1, version: int = 2,
        length: int | None = None) -> bytes:
    """A PTP v2 message: 34-byte common header + a body of the type's length (timestamps zero)."""
    n = LENGTHS[msg_type] if msg_type in LENGTHS else 44
    flags0 = 0x02 if two_step else 0x00
    hdr = struct.pack(">BBHBBBBq4s10sHBb", msg_type & 0x0F, (minor << 4) | version, length if length is not None else n,
                      domain, 0, flags0, 0, correction_scaled, b"\0" * 4, source, seq, 0, -3)
    body = bytearray(n - 34)
    if msg_type in (DELAY_RESP, PDELAY_RESP, PDELAY_RESP_FU):
        body[10:20] = requesting
    return hdr + bytes(body)


MC4 = {319: "224.0.1.129", 320: "224.0.1.129"}


def encap(name: str, payload: bytes, *, event: bool = True, udp_chksum: int | None = None) -> bytes:
    port = 319 if event else 320
    l2 = Ether(src="02:00:00:00:00:01", dst="01:1b:19:00:00:00", type=0x88F7)
    if name == "l2":
        return bytes(l2 / payload)
    if name == "l2_pdelay":
        return bytes(Ether(src="02:00:00:00:00:01", dst="01:80:c2:00:00:0e", type=0x88F7) / payload)
    if name == "l2_vlan":
        return bytes(Ether(src="02:00:00:00:00:01", dst="01:1b:19:00:00:00") / Dot1Q(vlan=10, type=0x88F7) / payload)
    if name == "l2_qinq":
        return bytes(Ether(src="02:00:00:00:00:01", dst="01:1b:19:00:00:00") / Dot1AD(vlan=20) / Dot1Q(vlan=10, type=0x88F7) / payload)
    udp = UDP(sport=port, dport=port) if udp_chksum is None else UDP(sport=port, dport=port, chksum=udp_chksum)
    e = Ether(src="02:00:00:00:00:01", dst="01:00:5e:00:01:81")
    if name == "udp4":
        return bytes(e / IP(src="10.0.0.1", dst="224.0.1.129", ttl=1) / udp / payload)
    if name == "udp4_opts":
        return bytes(e / IP(src="10.0.0.1", dst="224.0.1.129", ttl=1, options=[IPOption_NOP()] * 8) / udp / payload)
    if name == "udp4_vlan":
        return bytes(e / Dot1Q(vlan=10) / IP(src="10.0.0.1", dst="224.0.1.129", ttl=1) / udp / payload)
    if name == "udp4_qinq":
        return bytes(e / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(src="10.0.0.1", dst="224.0.1.129", ttl=1) / udp / payload)
    e6 = Ether(src="02:00:00:00:00:01", dst="33:33:00:00:01:81")
    if name == "udp6":
        return bytes(e6 / IPv6(src="fd00::1", dst="ff0e::181", hlim=1) / udp / payload)
    if name == "udp6_trailer":
        return bytes(e6 / IPv6(src="fd00::1", dst="ff0e::181", hlim=1) / udp / (payload + b"\x00\x00"))
    if name == "udp6_exthdr":
        return bytes(e6 / IPv6(src="fd00::1", dst="ff0e::181", hlim=1) / IPv6ExtHdrDestOpt() / udp / payload)
    raise KeyError(name)


ENCAPS = ("l2", "l2_pdelay", "l2_vlan", "l2_qinq", "udp4", "udp4_opts", "udp4_vlan", "udp4_qinq", "udp6", "udp6_trailer")


def ptp_offset(frame: bytes) -> int:
    """Offset of the PTP header in a frame built by :func:`encap` (parsed with scapy)."""
    pkt = Ether(frame)
    if UDP in pkt:
        return len(frame) - len(bytes(pkt[UDP].payload)) if IPv6 not in pkt else len(frame) - len(bytes(pkt[UDP].payload))
    layer = pkt
    off = 14
    while isinstance(layer.payload, (Dot1Q, Dot1AD)):
        off += 4
        layer = layer.payload
    return off


def correction(frame: bytes) -> int:
    off = ptp_offset(frame) + CORR_OFF
    return struct.unpack_from(">q", frame, off)[0]


def udp_checksum_ok(frame: bytes) -> bool | None:
    """None for L2; True when the UDP checksum scapy recomputes equals the one in the frame (0 = none, IPv4)."""
    pkt = Ether(frame)
    if UDP not in pkt:
        return None
    have = pkt[UDP].chksum
    if have == 0 and IP in pkt:
        return True
    del pkt[UDP].chksum
    return Ether(bytes(pkt))[UDP].chksum == have
