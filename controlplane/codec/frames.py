"""Ethernet / VLAN / IPv4 / IPv6 / UDP around PTP: parse a captured frame into a ``Frame`` and
build frames (with correct IPv4 header and UDP checksums) from PTP bytes.

PTP is recognised as ethertype 0x88F7 (IEEE 1588 annex F) or UDP port 319/320 (annexes D, E)
on either end. ``parse_frame`` returns ``None`` for traffic that is not PTP and raises
``FrameError`` for a PTP-looking frame whose encapsulation is malformed.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum

from controlplane.codec.errors import EncodeError, FrameError

ETH_P_1588 = 0x88F7
ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_QINQ_OLD = 0x9100
PTP_EVENT_PORT = 319
PTP_GENERAL_PORT = 320
PTP_PORTS = (PTP_EVENT_PORT, PTP_GENERAL_PORT)

PTP_PRIMARY_MAC = bytes.fromhex("011b19000000")  # all PTP messages except peer delay (annex F)
PTP_PDELAY_MAC = bytes.fromhex("0180c200000e")  # peer delay messages
PTP_PRIMARY_IPV4 = "224.0.1.129"
PTP_PDELAY_IPV4 = "224.0.0.107"
PTP_PRIMARY_IPV6 = "ff0e::181"
PTP_PDELAY_IPV6 = "ff02::6b"

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

_VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD)
_IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options


class Transport(str, Enum):
    L2 = "L2"
    UDPV4 = "UDPv4"
    UDPV6 = "UDPv6"


@dataclass(frozen=True, slots=True)
class Frame:
    transport: Transport
    ptp: bytes
    src_mac: bytes | None = None
    dst_mac: bytes | None = None
    vlan_ids: tuple[int, ...] = ()
    vlan_pcps: tuple[int, ...] = ()
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    ptp_offset: int = 0  # where the PTP message starts in the frame

    @property
    def src(self) -> str:
        if self.transport is Transport.L2:
            return format_mac(self.src_mac) if self.src_mac else "?"
        return f"{self.src_ip}:{self.src_port}" if self.transport is Transport.UDPV4 else f"[{self.src_ip}]:{self.src_port}"

    @property
    def dst(self) -> str:
        if self.transport is Transport.L2:
            return format_mac(self.dst_mac) if self.dst_mac else "?"
        return f"{self.dst_ip}:{self.dst_port}" if self.transport is Transport.UDPV4 else f"[{self.dst_ip}]:{self.dst_port}"


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    try:
        mac = bytes(int(p, 16) for p in text.split(":"))
    except ValueError as exc:
        raise EncodeError(f"MAC address {text!r} is not aa:bb:cc:dd:ee:ff") from exc
    if len(mac) != 6:
        raise EncodeError(f"MAC address {text!r} is not 6 octets")
    return mac


# --- parsing --------------------------------------------------------------------------------------


def parse_frame(data: bytes, linktype: int = LINKTYPE_ETHERNET) -> Frame | None:
    """Decapsulate one captured frame. None if it is not PTP; FrameError if PTP-looking but broken."""
    data = bytes(data)
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        dst, src = data[0:6], data[6:12]
        (etype,) = struct.unpack_from("!H", data, 12)
        pos = 14
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        (alen,) = struct.unpack_from("!H", data, 4)
        src, dst = data[6 : 6 + min(alen, 8)], None
        (etype,) = struct.unpack_from("!H", data, 14)
        pos = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        (etype,) = struct.unpack_from("!H", data, 0)
        alen = data[11]
        src, dst = data[12 : 12 + min(alen, 8)], None
        pos = 20
    else:
        raise FrameError(f"unsupported link type {linktype}")
    vlan_ids: list[int] = []
    pcps: list[int] = []
    while etype in _VLAN_TPIDS:
        if len(data) < pos + 4:
            return None
        tci, etype = struct.unpack_from("!HH", data, pos)
        vlan_ids.append(tci & 0x0FFF)
        pcps.append(tci >> 13)
        pos += 4
    common = {"src_mac": src, "dst_mac": dst, "vlan_ids": tuple(vlan_ids), "vlan_pcps": tuple(pcps)}
    if etype == ETH_P_1588:
        return Frame(Transport.L2, data[pos:], ptp_offset=pos, **common)  # type: ignore[arg-type]
    if etype == ETH_P_IPV4:
        return _parse_ipv4(data, pos, common)
    if etype == ETH_P_IPV6:
        return _parse_ipv6(data, pos, common)
    return None


def _udp(data: bytes, pos: int, end: int, transport: Transport, src: str, dst: str, common: dict) -> Frame | None:  # type: ignore[type-arg]
    if end - pos < 8:
        raise FrameError(f"UDP header truncated ({end - pos} bytes)", pos)
    sport, dport, ulen, _csum = struct.unpack_from("!HHHH", data, pos)
    if sport not in PTP_PORTS and dport not in PTP_PORTS:
        return None
    if ulen < 8:
        raise FrameError(f"UDP length {ulen} is shorter than the UDP header", pos + 4)
    if pos + ulen > end:
        raise FrameError(f"UDP length {ulen} overruns the IP payload ({end - pos} bytes)", pos + 4)
    return Frame(
        transport,
        data[pos + 8 : pos + ulen],
        src_ip=src,
        dst_ip=dst,
        src_port=sport,
        dst_port=dport,
        ptp_offset=pos + 8,
        **common,
    )


def _parse_ipv4(data: bytes, pos: int, common: dict) -> Frame | None:  # type: ignore[type-arg]
    if len(data) < pos + 20:
        return None
    vihl, _tos, total, _ident, frag, _ttl, proto = struct.unpack_from("!BBHHHBB", data, pos)
    if vihl >> 4 != 4 or proto != 17:
        return None
    ihl = (vihl & 0x0F) * 4
    if frag & 0x1FFF:  # a non-first fragment carries no UDP header
        return None
    if ihl < 20:
        raise FrameError(f"IPv4 IHL {ihl} is shorter than 20", pos)
    if total < ihl or pos + total > len(data):
        raise FrameError(f"IPv4 total length {total} inconsistent with {len(data) - pos} captured bytes", pos + 2)
    src = str(ipaddress.IPv4Address(data[pos + 12 : pos + 16]))
    dst = str(ipaddress.IPv4Address(data[pos + 16 : pos + 20]))
    if frag & 0x2000:  # first fragment of several: UDP length would overrun; report it
        if _looks_ptp(data, pos + ihl):
            raise FrameError("fragmented IPv4 datagram (PTP must not be fragmented)", pos + 6)
        return None
    return _udp(data, pos + ihl, pos + total, Transport.UDPV4, src, dst, common)


def _looks_ptp(data: bytes, pos: int) -> bool:
    if len(data) < pos + 4:
        return False
    sport, dport = struct.unpack_from("!HH", data, pos)
    return sport in PTP_PORTS or dport in PTP_PORTS


def _parse_ipv6(data: bytes, pos: int, common: dict) -> Frame | None:  # type: ignore[type-arg]
    if len(data) < pos + 40:
        return None
    vtf, plen, nxt = struct.unpack_from("!IHB", data, pos)
    if vtf >> 28 != 6:
        return None
    src = str(ipaddress.IPv6Address(data[pos + 8 : pos + 24]))
    dst = str(ipaddress.IPv6Address(data[pos + 24 : pos + 40]))
    end = pos + 40 + plen
    p = pos + 40
    while nxt in _IPV6_EXT:
        if end - p < 8 or len(data) < p + 8:
            return None
        nxt, hlen = data[p], (data[p + 1] + 1) * 8
        p += hlen
    if nxt != 17:
        return None
    if end > len(data):
        if _looks_ptp(data, p):
            raise FrameError(f"IPv6 payload length {plen} exceeds the {len(data) - pos - 40} captured bytes", pos + 4)
        return None
    return _udp(data, p, end, Transport.UDPV6, src, dst, common)


# --- building -------------------------------------------------------------------------------------


def _csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum."""
    return ~_csum16(data) & 0xFFFF


def _eth(src_mac: bytes, dst_mac: bytes, vlan_ids: tuple[int, ...], etype: int, pcp: int = 0) -> bytes:
    if len(src_mac) != 6 or len(dst_mac) != 6:
        raise EncodeError("MAC addresses must be 6 octets")
    out = bytes(dst_mac) + bytes(src_mac)
    for i, vid in enumerate(vlan_ids):
        if not 0 <= vid < 4096:
            raise EncodeError(f"VLAN id {vid} out of range")
        tpid = ETH_P_8021AD if (len(vlan_ids) > 1 and i == 0) else ETH_P_8021Q
        out += struct.pack("!HH", tpid, (pcp << 13) | vid)
    return out + struct.pack("!H", etype)


def _pad60(frame: bytes, pad: bool) -> bytes:
    return frame + bytes(60 - len(frame)) if pad and len(frame) < 60 else frame


def default_ports(ptp: bytes) -> tuple[int, int]:
    """(src, dst) UDP ports for a PTP message: 319 for event messages, 320 for general ones."""
    port = PTP_EVENT_PORT if ptp and (ptp[0] & 0x0F) < 8 else PTP_GENERAL_PORT
    return port, port


def build_l2_frame(
    ptp: bytes,
    src_mac: bytes,
    dst_mac: bytes = PTP_PRIMARY_MAC,
    vlan_ids: tuple[int, ...] = (),
    pcp: int = 0,
    pad: bool = True,
) -> bytes:
    """Ethernet (+ 802.1Q/802.1ad tags) + ethertype 0x88F7 + PTP, padded to 60 bytes by default."""
    return _pad60(_eth(src_mac, dst_mac, vlan_ids, ETH_P_1588, pcp) + bytes(ptp), pad)


def build_udp4_frame(
    ptp: bytes,
    src_ip: str,
    dst_ip: str = PTP_PRIMARY_IPV4,
    src_mac: bytes = bytes(6),
    dst_mac: bytes | None = None,
    src_port: int | None = None,
    dst_port: int | None = None,
    vlan_ids: tuple[int, ...] = (),
    ttl: int = 1,
    ident: int = 0,
    pad: bool = True,
) -> bytes:
    """Ethernet + IPv4 (valid header checksum) + UDP (valid checksum) + PTP."""
    s, d = ipaddress.IPv4Address(src_ip), ipaddress.IPv4Address(dst_ip)
    dp_sp, dp_dp = default_ports(ptp)
    sport = dp_sp if src_port is None else src_port
    dport = dp_dp if dst_port is None else dst_port
    if dst_mac is None:
        dst_mac = b"\x01\x00\x5e" + bytes([d.packed[1] & 0x7F]) + d.packed[2:] if d.is_multicast else b"\xff" * 6
    ulen = 8 + len(ptp)
    pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, ulen)
    udp_nock = struct.pack("!HHHH", sport, dport, ulen, 0) + bytes(ptp)
    csum = internet_checksum(pseudo + udp_nock) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, csum) + bytes(ptp)
    total = 20 + ulen
    if total > 0xFFFF:
        raise EncodeError("IPv4 datagram too long")
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, ttl, 17, 0, s.packed, d.packed)
    iph = iph[:10] + struct.pack("!H", internet_checksum(iph)) + iph[12:]
    return _pad60(_eth(src_mac, dst_mac, vlan_ids, ETH_P_IPV4) + iph + udp, pad)


def build_udp6_frame(
    ptp: bytes,
    src_ip: str,
    dst_ip: str = PTP_PRIMARY_IPV6,
    src_mac: bytes = bytes(6),
    dst_mac: bytes | None = None,
    src_port: int | None = None,
    dst_port: int | None = None,
    vlan_ids: tuple[int, ...] = (),
    hop_limit: int = 1,
) -> bytes:
    """Ethernet + IPv6 + UDP (valid checksum, mandatory for IPv6) + PTP."""
    s, d = ipaddress.IPv6Address(src_ip), ipaddress.IPv6Address(dst_ip)
    dp_sp, dp_dp = default_ports(ptp)
    sport = dp_sp if src_port is None else src_port
    dport = dp_dp if dst_port is None else dst_port
    if dst_mac is None:
        dst_mac = b"\x33\x33" + d.packed[12:] if d.is_multicast else b"\xff" * 6
    ulen = 8 + len(ptp)
    pseudo = s.packed + d.packed + struct.pack("!IxxxB", ulen, 17)
    udp_nock = struct.pack("!HHHH", sport, dport, ulen, 0) + bytes(ptp)
    csum = internet_checksum(pseudo + udp_nock) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, csum) + bytes(ptp)
    ip6 = struct.pack("!IHBB", 6 << 28, ulen, 17, hop_limit) + s.packed + d.packed
    return _eth(src_mac, dst_mac, vlan_ids, ETH_P_IPV6) + ip6 + udp


def udp_checksum_ok(frame: bytes, linktype: int = LINKTYPE_ETHERNET) -> bool:
    """Verify the UDP checksum of an Ethernet/IPv4|IPv6/UDP frame (tests and tools use this)."""
    f = parse_frame(frame, linktype)
    if f is None or f.transport is Transport.L2:
        raise FrameError("not a UDP PTP frame")
    udp_start = f.ptp_offset - 8
    ulen = 8 + len(f.ptp)
    udp = frame[udp_start : udp_start + ulen]
    if f.transport is Transport.UDPV4:
        pseudo = ipaddress.IPv4Address(f.src_ip).packed + ipaddress.IPv4Address(f.dst_ip).packed
        pseudo += struct.pack("!BBH", 0, 17, ulen)
        if udp[6:8] == b"\x00\x00":
            return True  # IPv4 UDP checksum is optional
    else:
        pseudo = ipaddress.IPv6Address(f.src_ip).packed + ipaddress.IPv6Address(f.dst_ip).packed
        pseudo += struct.pack("!IxxxB", ulen, 17)
    return _csum16(pseudo + udp) == 0xFFFF
