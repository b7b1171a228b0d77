"""IEEE 802.3 transport (IEEE 1588 annex F), like linuxptp's raw.c: AF_PACKET, ethertype 0x88F7.

Two packet sockets per port, each with a classic BPF filter: the event socket takes PTP event
messages (messageType < 8) and has SO_TIMESTAMPING; the general socket takes the rest.

Both bind with ETH_P_ALL to the port's ifindex, not ETH_P_1588: a frame arriving on a bridge port
is consumed by the bridge's rx_handler before protocol-specific taps (ptype_base) see it, while
ETH_P_ALL taps (ptype_all) run first. So this transport also works on an enslaved bridge port.
PACKET_IGNORE_OUTGOING keeps our own transmitted frames out of the receive path.
Destinations: 01-1B-19-00-00-00 (all except peer delay), 01-80-C2-00-00-0E (peer delay).
"""

from __future__ import annotations

import ctypes
import socket
import struct

from controlplane.runtime.transport import (
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

ETH_P_1588 = 0x88F7
ETH_P_ALL = 0x0003
PTP_PRIMARY_MAC = bytes.fromhex("011b19000000")
PTP_PDELAY_MAC = bytes.fromhex("0180c200000e")
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
_ETH_HDR = struct.Struct("!6s6sH")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _ptp_filter(event: bool) -> list[tuple[int, int, int, int]]:
    """Classic BPF: ethertype 0x88F7 and (messageType & 0x8) == 0 for event, != 0 for general."""
    return [
        (0x28, 0, 0, 12),  # ldh [12]          ethertype
        (0x15, 0, 4, ETH_P_1588),  # jeq #0x88f7 ? next : drop
        (0x30, 0, 0, 14),  # ldb [14]          transportSpecific | messageType
        (0x54, 0, 0, 0x08),  # and #8
        (0x15, 0, 1, 0) if event else (0x15, 1, 0, 0),  # event: ==0 accept ; general: ==0 drop
        (0x06, 0, 0, 0xFFFF),  # ret accept
        (0x06, 0, 0, 0),  # ret drop
    ]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    insns = (_SockFilter * len(program))(*[_SockFilter(*i) for i in program])
    fprog = _SockFprog(len(program), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))  # kernel copies it


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class L2Transport:
    network_protocol = "L2"

    def __init__(self, ifname: str, *, timestamping: TimestampMode = TimestampMode.SOFTWARE) -> None:
        self.ifname = ifname
        self.timestamping = timestamping
        self.ifindex = 0
        self.mac = b"\0" * 6
        self._event: socket.socket | None = None
        self._general: socket.socket | None = None
        self._keys = TxKeyCounter()

    def _open_one(self, event: bool) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        try:
            _attach_filter(sock, _ptp_filter(event))
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # kernel < 4.20: outgoing frames are dropped in poll() by pkttype instead
            sock.bind((self.ifname, ETH_P_ALL))
            for mac in (PTP_PRIMARY_MAC, PTP_PDELAY_MAC):
                mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_MULTICAST, 6, mac)
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
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
            raise TransportError(self.ifname, "cannot open AF_PACKET socket", exc) from exc
        return sock

    def open(self) -> None:
        if self._event is not None:
            return
        self.ifindex = ifindex(self.ifname)
        self._event = self._open_one(True)
        try:
            self._general = self._open_one(False)
        except TransportError:
            self._event.close()
            self._event = None
            raise
        self.mac = self._event.getsockname()[4][:6]

    def close(self) -> None:
        for sock in (self._event, self._general):
            if sock is not None:
                sock.close()
        self._event = self._general = None

    def __enter__(self) -> "L2Transport":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fds(self) -> tuple[int, ...]:
        return tuple(s.fileno() for s in (self._event, self._general) if s is not None)

    def protocol_address(self) -> bytes:
        return self.mac

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object | None = None) -> int | None:
        sock = self._event if event else self._general
        if sock is None:
            raise TransportError(self.ifname, "transport is not open")
        if dest is None:
            dst = PTP_PDELAY_MAC if peer_delay else PTP_PRIMARY_MAC
        elif isinstance(dest, (bytes, bytearray)) and len(dest) == 6:
            dst = bytes(dest)
        else:
            raise TransportError(self.ifname, f"L2 destination must be a 6-byte MAC, got {dest!r}")
        frame = _ETH_HDR.pack(dst, self.mac, ETH_P_1588) + data
        try:
            sock.send(frame)
        except OSError as exc:
            raise TransportError(self.ifname, f"send to {mac_text(dst)} failed", exc) from exc
        if event:
            return self._keys.take()
        return None

    def poll(self, fd: int) -> list[TransportEvent]:
        sock = self._event if self._event is not None and fd == self._event.fileno() else self._general
        if sock is None:
            return []
        event = sock is self._event
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
            if addr[2] == socket.PACKET_OUTGOING or len(frame) < _ETH_HDR.size:
                continue
            dst, src, ethertype = _ETH_HDR.unpack_from(frame)
            if ethertype != ETH_P_1588:
                continue
            mode = self.timestamping if event else TimestampMode.SOFTWARE
            out.append(Received(data=frame[_ETH_HDR.size:], rx_ts_ns=stamp_from_cmsgs(ancdata, mode), source=src, event=event))
        return out
