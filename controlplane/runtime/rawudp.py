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
from controlplane.runtime.transport import (
    EVENT_PORT,
    GENERAL_PORT,
    Received,
    TimestampMode,
    TransportError,
    TransportEvent,
    TxKeyCounter,
    drain_error_queue,
    enable_hardware_timestamping,
    enable_timestamping,
    ifindex,
    stamp_from_cmsgs,
)
from controlplane.runtime.udp import PTP_PDELAY_V4, PTP_PDELAY_V6, PTP_PRIMARY_V4, PTP_PRIMARY_V6

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 1 << 3  # checksum offloaded, not computed yet (a local sender on veth)
TP_STATUS_CSUM_VALID = 1 << 7  # verified by the NIC / the stack
_NEIGHBOURS_MAX = 1024


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def udp4_filter(dst_port: int) -> list[tuple[int, int, int, int]]:
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


def udp6_filter(dst_port: int) -> list[tuple[int, int, int, int]]:
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


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    insns = (_SockFilter * len(program))(*[_SockFilter(*i) for i in program])
    fprog = _SockFprog(len(program), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))  # the kernel copies it


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


class _RawUdpBase:
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
    def _filter(self, port: int) -> list[tuple[int, int, int, int]]:
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
    def _open_one(self, port: int, event: bool) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        try:
            _attach_filter(sock, self._filter(port))
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # kernel < 4.20: outgoing frames are dropped in poll() by pkttype instead
            sock.bind((self.ifname, ETH_P_ALL))
            for mac in self._group_macs():
                mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_MULTICAST, 6, mac)
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)  # checksum status of each frame
            if event:
                if self.timestamping is TimestampMode.HARDWARE:
                    enable_hardware_timestamping(sock, self.ifname)
                enable_timestamping(sock, self.timestamping)
            else:
                enable_timestamping(sock, TimestampMode.SOFTWARE)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TransportError):
                raise
            raise TransportError(self.ifname, f"cannot open AF_PACKET socket for {self.network_protocol} port {port}", exc) from exc
        return sock

    def open(self) -> None:
        if self._event is not None:
            return
        self.ifindex = ifindex(self.ifname)
        self._event = self._open_one(self.event_port, True)
        try:
            self._general = self._open_one(self.general_port, False)
        except TransportError:
            self._event.close()
            self._event = None
            raise
        self.mac = self._event.getsockname()[4][:6]
        self.address = self._source_address()

    def close(self) -> None:
        for sock in (self._event, self._general):
            if sock is not None:
                sock.close()
        self._event = self._general = None

    def __enter__(self):  # noqa: ANN204
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fds(self) -> tuple[int, ...]:
        return tuple(s.fileno() for s in (self._event, self._general) if s is not None)

    def protocol_address(self) -> bytes:
        return self.address

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object | None = None) -> int | None:
        sock = self._event if event else self._general
        if sock is None:
            raise TransportError(self.ifname, "transport is not open")
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
            sock.send(frame)
        except OSError as exc:
            raise TransportError(self.ifname, f"send to {dst_ip} failed", exc) from exc
        if event:
            return self._keys.take()
        return None

    def poll(self, fd: int) -> list[TransportEvent]:
        sock = self._event if self._event is not None and fd == self._event.fileno() else self._general
        if sock is None:
            return []
        event = sock is self._event
        port = self.event_port if event else self.general_port
        out: list[TransportEvent] = []
        if event:
            out.extend(drain_error_queue(sock, self.timestamping))
        for _ in range(64):
            try:
                frame, ancdata, _flags, addr = sock.recvmsg(2048, 1024)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                raise TransportError(self.ifname, "receive failed", exc) from exc
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

    def _filter(self, port: int) -> list[tuple[int, int, int, int]]:
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

    def _filter(self, port: int) -> list[tuple[int, int, int, int]]:
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
