"""UDPv4 / UDPv6 PTP (IEEE 1588 annexes C, D) through AF_PACKET sockets, for ports enslaved to a bridge.

Why: a frame arriving on a bridge port is taken by the bridge's rx_handler before the port's IP
stack sees it, so the ``udp.py`` sockets (SO_BINDTODEVICE to the port) never receive there: a
P2P_TC on bridge ports could not answer Pdelay_Req over UDP. Packet-socket taps bound with
ETH_P_ALL run before the rx_handler (as in ``l2.py``), so this transport receives on the port
itself; it builds and parses Ethernet / IP / UDP around the PTP bytes with
``controlplane.codec.frames`` and sends the frame out of exactly that port.

Per port: an event socket (classic BPF filter: IPv4|IPv6, UDP, destination port 319; SO_TIMESTAMPING
RX+TX, TX stamps from the error queue as in ``l2.py``) and a general socket (destination port 320).
PACKET_IGNORE_OUTGOING keeps our own (and the bridge's flooded) outgoing frames out.

Addresses: the source address is the port's own address, else its bridge master's, else (IPv4)
any global address of the namespace or 0.0.0.0, (IPv6) the EUI-64 link-local address of the
port's MAC. 0.0.0.0 is fine for peer delay (224.0.0.107 is link-local multicast, which Linux
accepts from the unspecified source) but a receiver drops it for 224.0.1.129 - give the bridge
an address if network management answers must go out of such a port. Unicast destinations use
the MAC learned from the last frame received from that address (else broadcast).
Frames with a VLAN tag, IPv4 options-free or not, are parsed by ``frames.parse_frame``; IPv6
extension headers are not matched by the socket filter (PTP does not use them).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct

from controlplane.codec import frames
from controlplane.codec.errors import CodecError
from controlplane.runtime.packet import PACKET_AUXDATA, BpfProgram, open_packet_socket
from controlplane.runtime.transport import (
    EVENT_PORT,
    GENERAL_PORT,
    SOL_PACKET,
    Received,
    SocketPair,
    TimestampMode,
    TransportError,
    TransportEvent,
    TxKeyCounter,
    drain_error_queue,
    receive_batch,
    send_without_tx_stamp,
    stamp_from_cmsgs,
)
from controlplane.runtime.udp import PTP_PDELAY_V4, PTP_PDELAY_V6, PTP_PRIMARY_V4, PTP_PRIMARY_V6

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
TP_STATUS_CSUMNOTREADY = 1 << 3  # checksum offloaded, not computed yet (a local sender on veth)
TP_STATUS_CSUM_VALID = 1 << 7  # verified by the NIC / the stack
_NEIGHBOURS_MAX = 1024


def udp4_filter(dst_port: int) -> BpfProgram:
    """Classic BPF: untagged IPv4, UDP, first (or only) fragment, UDP destination port ``dst_port``."""
    return [
        (0x28, 0, 0, 12),  # 0 ldh [12]                ethertype
        (0x15, 0, 8, ETH_P_IP),  # 1 jeq #0x0800 ? 2 : drop
        (0x30, 0, 0, 23),  # 2 ldb [23]                IP protocol
        (0x15, 0, 6, 17),  # 3 jeq #17 ? 4 : drop
        (0x28, 0, 0, 20),  # 4 ldh [20]                flags | fragment offset
        (0x45, 4, 0, 0x1FFF),  # 5 jset #0x1fff ? drop : 6
        (0xB1, 0, 0, 14),  # 6 ldxb 4*([14]&0xf)       IP header length
        (0x48, 0, 0, 16),  # 7 ldh [x+16]              UDP destination port (14 + 2)
        (0x15, 0, 1, dst_port),  # 8 jeq #port ? accept : drop
        (0x06, 0, 0, 0xFFFF),  # 9 accept
        (0x06, 0, 0, 0),  # 10 drop
    ]


def udp6_filter(dst_port: int) -> BpfProgram:
    """Classic BPF: untagged IPv6 whose next header is UDP, UDP destination port ``dst_port``."""
    return [
        (0x28, 0, 0, 12),  # 0 ldh [12]                ethertype
        (0x15, 0, 5, ETH_P_IPV6),  # 1 jeq #0x86dd ? 2 : drop
        (0x30, 0, 0, 20),  # 2 ldb [20]                next header
        (0x15, 0, 3, 17),  # 3 jeq #17 ? 4 : drop
        (0x28, 0, 0, 56),  # 4 ldh [56]                UDP destination port (14 + 40 + 2)
        (0x15, 0, 1, dst_port),  # 5 jeq #port ? accept : drop
        (0x06, 0, 0, 0xFFFF),  # 6 accept
        (0x06, 0, 0, 0),  # 7 drop
    ]


def _checksum_known_good(ancdata: list[tuple[int, int, bytes]]) -> bool:
    """PACKET_AUXDATA says the checksum was verified, or is not filled in yet because the frame
    comes from a local sender with checksum offload (veth): then the field holds only the
    pseudo-header sum and must not be checked."""
    for level, kind, payload in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(payload) >= 4:
            (status,) = struct.unpack_from("=I", payload)
            return bool(status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID))
    return False


def is_bridge_port(ifname: str) -> bool:
    """True when ``ifname`` is enslaved to a Linux bridge (its IP sockets cannot receive there)."""
    return os.path.isdir(f"/sys/class/net/{ifname}/brport")


def bridge_master(ifname: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{ifname}/master"))
    except OSError:
        return None


def _ipv4_addresses() -> dict[str, list[bytes]]:
    """ifname -> its IPv4 addresses (SIOCGIFCONF through a throwaway socket)."""
    import fcntl

    SIOCGIFCONF = 0x8912
    out: dict[str, list[bytes]] = {}
    buf = ctypes.create_string_buffer(40 * 256)
    ifc = struct.pack("iP", len(buf), ctypes.addressof(buf))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFCONF, ifc)
        except OSError:
            return out
    size = struct.unpack("iP", res)[0]
    raw = buf.raw[:size]
    for off in range(0, size - 39, 40):  # struct ifreq is 40 bytes on 64-bit Linux
        name = raw[off:off + 16].split(b"\0", 1)[0].decode(errors="replace")
        out.setdefault(name, []).append(raw[off + 20:off + 24])
    return out


def _ipv6_addresses() -> dict[str, list[tuple[bytes, int]]]:
    """ifname -> [(address, scope)] from /proc/net/if_inet6 (scope 0 global, 0x20 link)."""
    out: dict[str, list[tuple[bytes, int]]] = {}
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                row = line.split()
                if len(row) >= 6:
                    out.setdefault(row[5], []).append((bytes.fromhex(row[0]), int(row[3], 16)))
    except OSError:
        pass
    return out


def eui64_link_local(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 interface identifier of ``mac`` (RFC 4291 appendix A)."""
    iid = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return bytes.fromhex("fe80000000000000") + iid


class _RawUdpBase(SocketPair):
    network_protocol = "UDP"
    family = socket.AF_INET

    def __init__(self, ifname: str, *, timestamping: TimestampMode = TimestampMode.SOFTWARE, ttl: int = 1,
                 event_port: int = EVENT_PORT, general_port: int = GENERAL_PORT) -> None:
        self.ifname = ifname
        self.timestamping = timestamping
        self.ttl = ttl
        self.event_port = event_port
        self.general_port = general_port
        self.ifindex = 0
        self.mac = b"\0" * 6
        self.address = b""
        self._event: socket.socket | None = None
        self._general: socket.socket | None = None
        self._keys = TxKeyCounter()
        self._neighbours: dict[str, bytes] = {}  # IP text -> MAC, learned from received frames
        self.rx_dropped = 0  # frames the filter passed that are not well-formed PTP over UDP

    # -- family specifics --
    def _filter(self, port: int) -> BpfProgram:
        raise NotImplementedError

    def _groups(self) -> tuple[str, str]:
        raise NotImplementedError

    def _group_macs(self) -> tuple[bytes, ...]:
        raise NotImplementedError

    def _source_address(self) -> bytes:
        raise NotImplementedError

    def _build(self, data: bytes, dst_ip: str, dst_mac: bytes | None, port: int) -> bytes:
        raise NotImplementedError

    def _source(self, frame: frames.Frame) -> tuple:
        raise NotImplementedError

    # -- common --
    def _open_one(self, event: bool) -> socket.socket:
        port = self.event_port if event else self.general_port
        return open_packet_socket(self.ifname, self.ifindex, self._filter(port), self._group_macs(), event=event,
                                  timestamping=self.timestamping, auxdata=True,  # auxdata: checksum status of each frame
                                  what=f"cannot open AF_PACKET socket for {self.network_protocol} port {port}")

    def _opened(self) -> None:
        assert self._event is not None
        self.mac = self._event.getsockname()[4][:6]
        self.address = self._source_address()

    def protocol_address(self) -> bytes:
        return self.address

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object | None = None,
             tx_stamp: bool = True) -> int | None:
        sock = self._send_socket(event)
        port = self.event_port if event else self.general_port
        if dest is None:
            primary, pdelay = self._groups()
            dst_ip, dst_mac = (pdelay if peer_delay else primary), None
        else:
            dst_ip = str(dest[0] if isinstance(dest, tuple) else dest).split("%")[0]
            dst_mac = self._neighbours.get(dst_ip, b"\xff" * 6)
        try:
            frame = self._build(data, dst_ip, dst_mac, port)
        except (CodecError, ValueError) as exc:
            raise TransportError(self.ifname, f"cannot build a frame to {dst_ip}", exc) from exc
        try:
            if event and not tx_stamp:
                send_without_tx_stamp(sock, frame)
                return None
            sock.send(frame)
        except OSError as exc:
            raise TransportError(self.ifname, f"send to {dst_ip} failed", exc) from exc
        if event:
            return self._keys.take()
        return None

    def poll(self, fd: int) -> list[TransportEvent]:
        sock = self._poll_socket(fd)
        if sock is None:
            return []
        event = sock is self._event
        port = self.event_port if event else self.general_port
        out: list[TransportEvent] = []
        if event:
            out.extend(drain_error_queue(sock, self.timestamping))
        for frame, ancdata, addr in receive_batch(sock, self.ifname, 64):
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            try:
                parsed = frames.parse_frame(frame)
                ok = parsed is not None and parsed.dst_port == port
                if ok and not _checksum_known_good(ancdata):
                    ok = frames.udp_checksum_ok(frame)
            except CodecError:
                ok = False
            if not ok or parsed is None or parsed.transport.value != self.network_protocol:
                self.rx_dropped += 1
                continue
            if parsed.src_ip is not None and parsed.src_mac is not None:
                if len(self._neighbours) >= _NEIGHBOURS_MAX and parsed.src_ip not in self._neighbours:
                    self._neighbours.pop(next(iter(self._neighbours)))
                self._neighbours[parsed.src_ip] = bytes(parsed.src_mac)
            mode = self.timestamping if event else TimestampMode.SOFTWARE
            out.append(Received(data=parsed.ptp, rx_ts_ns=stamp_from_cmsgs(ancdata, mode), source=self._source(parsed), event=event))
        return out


class RawUdpV4Transport(_RawUdpBase):
    network_protocol = "UDPv4"
    family = socket.AF_INET

    def _filter(self, port: int) -> BpfProgram:
        return udp4_filter(port)

    def _groups(self) -> tuple[str, str]:
        return PTP_PRIMARY_V4, PTP_PDELAY_V4

    def _group_macs(self) -> tuple[bytes, ...]:
        return tuple(b"\x01\x00\x5e" + bytes([ipaddress.IPv4Address(g).packed[1] & 0x7F]) + ipaddress.IPv4Address(g).packed[2:]
                     for g in self._groups())

    def _source_address(self) -> bytes:
        addrs = _ipv4_addresses()
        master = bridge_master(self.ifname)
        for name in (self.ifname, master):
            if name and addrs.get(name):
                return addrs[name][0]
        for name, values in addrs.items():
            for a in values:
                if name != "lo" and not ipaddress.IPv4Address(a).is_loopback:
                    return a
        return b"\0\0\0\0"

    def _build(self, data: bytes, dst_ip: str, dst_mac: bytes | None, port: int) -> bytes:
        return frames.build_udp4_frame(data, str(ipaddress.IPv4Address(self.address)), dst_ip, src_mac=self.mac,
                                       dst_mac=dst_mac, src_port=port, dst_port=port, ttl=self.ttl)

    def _source(self, frame: frames.Frame) -> tuple:
        return (frame.src_ip, frame.src_port)


class RawUdpV6Transport(_RawUdpBase):
    network_protocol = "UDPv6"
    family = socket.AF_INET6

    def _filter(self, port: int) -> BpfProgram:
        return udp6_filter(port)

    def _groups(self) -> tuple[str, str]:
        return PTP_PRIMARY_V6, PTP_PDELAY_V6

    def _group_macs(self) -> tuple[bytes, ...]:
        return tuple(b"\x33\x33" + ipaddress.IPv6Address(g).packed[12:] for g in self._groups())

    def _source_address(self) -> bytes:
        addrs = _ipv6_addresses()
        master = bridge_master(self.ifname)
        for name in (self.ifname, master):
            rows = addrs.get(name or "", [])
            for want in (0x20, 0x00):  # link-local first: the PTP groups used here are link/site scope
                for a, scope in rows:
                    if scope == want:
                        return a
        return eui64_link_local(self.mac)

    def _build(self, data: bytes, dst_ip: str, dst_mac: bytes | None, port: int) -> bytes:
        return frames.build_udp6_frame(data, str(ipaddress.IPv6Address(self.address)), dst_ip, src_mac=self.mac,
                                       dst_mac=dst_mac, src_port=port, dst_port=port, hop_limit=self.ttl)

    def _source(self, frame: frames.Frame) -> tuple:
        return (frame.src_ip, frame.src_port, 0, self.ifindex)
