"""The transport interface: one Protocol, one implementation per network protocol (udp.py, l2.py, rawudp.py).

A transport owns the sockets of one PTP port (one interface). It sends PTP messages (bytes from
the codec) to the protocol's multicast groups or to a unicast address, and turns what the kernel
reports on its sockets into events:

* ``Received``  - a PTP message with its kernel RX timestamp (CLOCK_REALTIME ns, software, or the
  NIC's clock when hardware timestamping is on) and the sender's address;
* ``TxTimestamp`` - the kernel's TX timestamp of an event message sent earlier, matched to it by the
  opaque ``token`` that ``send`` returned (SOF_TIMESTAMPING_OPT_ID, read from MSG_ERRQUEUE).

The asyncio loop registers every fd of ``fds()`` with ``loop.add_reader`` and calls
``poll(fd)`` when it is readable (an error-queue entry also wakes the reader: epoll reports EPOLLERR).
Errors of the socket layer are ``TransportError`` (an ``OSError``), which the loop turns into a FAULT
of that port.

Linux constants that the ``socket`` module lacks live here, with the values of the kernel's uapi
headers (linux/net_tstamp.h, linux/errqueue.h, asm-generic/socket.h).
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import fcntl
import socket
import struct
from typing import Iterator, Protocol, TypeVar, Union, runtime_checkable

# --- SO_TIMESTAMPING (linux/net_tstamp.h) ---------------------------------------------------
SO_TIMESTAMPING = 37  # SO_TIMESTAMPING_OLD; cmsg SCM_TIMESTAMPING has the same value
SCM_TIMESTAMPING = SO_TIMESTAMPING
SOF_TIMESTAMPING_TX_HARDWARE = 1 << 0
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_RX_HARDWARE = 1 << 2
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_RAW_HARDWARE = 1 << 6
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SO_EE_ORIGIN_TIMESTAMPING = 4
SCM_TSTAMP_SND = 0
IP_RECVERR = 11
IPV6_RECVERR = 25
SOL_PACKET = 263
PACKET_TX_TIMESTAMP = 16
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SIOCSHWTSTAMP = 0x89B0
HWTSTAMP_TX_ON = 1
HWTSTAMP_FILTER_ALL = 1

_TIMESPEC3 = struct.Struct("=qqqqqq")  # struct scm_timestamping: ts[3] of (tv_sec, tv_nsec), 64-bit
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # sock_extended_err: errno, origin, type, code, pad, info, data

EVENT_PORT = 319
GENERAL_PORT = 320


class TransportError(OSError):
    """A socket-level failure of one port (open, send, receive). The loop maps it to FAULT."""

    def __init__(self, ifname: str, what: str, cause: BaseException | None = None) -> None:
        detail = f": {cause}" if cause is not None else ""
        super().__init__(f"{ifname}: {what}{detail}")
        self.ifname = ifname
        self.what = what


class TimestampMode(enum.Enum):
    SOFTWARE = "software"
    HARDWARE = "hardware"


@dataclasses.dataclass(frozen=True)
class Received:
    """A PTP message as received: payload bytes (PTP header onwards), kernel RX stamp, sender."""

    data: bytes
    rx_ts_ns: int | None
    source: object  # (ip, port) for UDPv4, (ip, port, flow, scope) for UDPv6, MAC bytes for L2
    event: bool  # arrived on the event socket (UDP) / is an event message type (L2)


@dataclasses.dataclass(frozen=True)
class TxTimestamp:
    """The kernel TX stamp of the event message that ``send`` answered with ``token``."""

    token: int
    tx_ts_ns: int


TransportEvent = Union[Received, TxTimestamp]


@runtime_checkable
class Transport(Protocol):
    ifname: str
    network_protocol: str  # "UDPv4", "UDPv6" or "L2" (the names ptp4l prints)

    def open(self) -> None: ...

    def close(self) -> None: ...

    def fds(self) -> tuple[int, ...]: ...

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object | None = None,
             tx_stamp: bool = True) -> int | None:
        """Send; for event messages return the token its ``TxTimestamp`` will carry. ``tx_stamp=False``:
        an event message whose TX stamp nobody needs (a one-step send the eBPF dataplane stamps at its
        egress): the kernel is told not to stamp it (``send_without_tx_stamp``) and None is returned."""
        ...

    def poll(self, fd: int) -> list[TransportEvent]: ...

    def protocol_address(self) -> bytes:
        """This port's address as the PortAddress field carries it (IPv4/IPv6 address, MAC)."""
        ...


# --- helpers shared by the implementations --------------------------------------------------

def timestamping_flags(mode: TimestampMode) -> int:
    if mode is TimestampMode.HARDWARE:
        base = SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE
    else:
        base = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
    return base | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY


def enable_timestamping(sock: socket.socket, mode: TimestampMode) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, timestamping_flags(mode))


# A per-send SO_TIMESTAMPING control message with no TX flags: this one send is not stamped (and takes no
# OPT_ID key: the kernel counts keys only for stamped sends, so the transports' key counters stay in step).
# Why skip a stamp: with software stamps the kernel makes the stamp inside the driver's xmit (veth: before
# handing the frame to the peer) by cloning the skb onto the socket's error queue. For a one-step message the
# eBPF dataplane stamped at tc egress, that clone is work between the stamp and the wire that no correction
# covers. Measured on a direct veth (one-step GM at 8 Sync/s, tracepoint netif_rx for the peer's RX stamp):
# egress clock read -> peer RX stamp, median 8.3 us with the TX stamp, 5.7 us without.
_NO_TX_STAMP = [(socket.SOL_SOCKET, SO_TIMESTAMPING, struct.pack("=I", 0))]


def send_without_tx_stamp(sock: socket.socket, data: bytes, address: object | None = None) -> None:
    """``sock.send``/``sendto`` without a TX timestamp for this one message (``OSError`` as they raise it)."""
    if address is None:
        sock.sendmsg([data], _NO_TX_STAMP)
    else:
        sock.sendmsg([data], _NO_TX_STAMP, 0, address)


# A general socket takes receive stamps only: nothing waits for the TX stamps of general messages,
# and an unread TX stamp stays in the socket's error queue, keeps EPOLLERR raised and makes every
# select/epoll loop over the fd spin at 100 % CPU.
GENERAL_RX_FLAGS = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE


def enable_general_timestamping(sock: socket.socket) -> None:
    """SO_TIMESTAMPING for a general socket: software RX stamps, no TX stamps."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, GENERAL_RX_FLAGS)


def stamp_from_cmsgs(ancdata: list[tuple[int, int, bytes]], mode: TimestampMode) -> int | None:
    """The SCM_TIMESTAMPING stamp in ns (ts[0] software, ts[2] raw hardware), or None."""
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(payload) >= _TIMESPEC3.size:
            s0, n0, _s1, _n1, s2, n2 = _TIMESPEC3.unpack_from(payload)
            sec, nsec = (s2, n2) if mode is TimestampMode.HARDWARE else (s0, n0)
            if sec == 0 and nsec == 0:
                return None
            return sec * 1_000_000_000 + nsec
    return None


def tx_key_from_cmsgs(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The OPT_ID key of a TX-timestamp error-queue entry (sock_extended_err.ee_data), or None."""
    for level, kind, payload in ancdata:
        if (level, kind) in (
            (socket.SOL_IP, IP_RECVERR),
            (socket.IPPROTO_IPV6, IPV6_RECVERR),
            (SOL_PACKET, PACKET_TX_TIMESTAMP),
        ) and len(payload) >= _EXTENDED_ERR.size:
            ee_errno, origin, _t, _c, _p, info, data = _EXTENDED_ERR.unpack_from(payload)
            if origin == SO_EE_ORIGIN_TIMESTAMPING and info == SCM_TSTAMP_SND:
                return data
    return None


def drain_error_queue(sock: socket.socket, mode: TimestampMode, limit: int = 64) -> list[TxTimestamp]:
    """Read every pending TX timestamp from the socket's error queue (non-blocking)."""
    out: list[TxTimestamp] = []
    for _ in range(limit):
        try:
            _data, ancdata, _flags, _addr = sock.recvmsg(64, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        key = tx_key_from_cmsgs(ancdata)
        ts = stamp_from_cmsgs(ancdata, mode)
        if key is not None and ts is not None:
            out.append(TxTimestamp(token=key, tx_ts_ns=ts))
    return out


def ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise TransportError(ifname, "no such interface", exc) from exc


class _HwtstampConfig(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_int), ("tx_type", ctypes.c_int), ("rx_filter", ctypes.c_int)]


def enable_hardware_timestamping(sock: socket.socket, ifname: str) -> None:
    """SIOCSHWTSTAMP: ask the NIC to stamp every TX (ON) and every RX packet (FILTER_ALL)."""
    cfg = _HwtstampConfig(0, HWTSTAMP_TX_ON, HWTSTAMP_FILTER_ALL)
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(cfg))
    buf = bytearray(ifreq) + bytearray(40 - len(ifreq))
    try:
        fcntl.ioctl(sock.fileno(), SIOCSHWTSTAMP, buf)
    except OSError as exc:
        raise TransportError(ifname, "hardware timestamping not supported (SIOCSHWTSTAMP)", exc) from exc


def is_event_message(data: bytes) -> bool:
    """messageType < 8 is an event message (Sync, Delay_Req, Pdelay_Req, Pdelay_Resp)."""
    return bool(data) and (data[0] & 0x0F) < 8


class TxKeyCounter:
    """Mirrors the kernel's per-socket OPT_ID counter: the n-th timestamped send gets key n."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        key = self._next
        self._next = (self._next + 1) & 0xFFFFFFFF
        return key


def enable_event_timestamping(sock: socket.socket, ifname: str, mode: TimestampMode) -> None:
    """SO_TIMESTAMPING for an event socket; in HARDWARE mode the NIC is told to stamp first."""
    if mode is TimestampMode.HARDWARE:
        enable_hardware_timestamping(sock, ifname)
    enable_timestamping(sock, mode)


def receive_batch(sock: socket.socket, ifname: str, limit: int) -> Iterator[tuple[bytes, list[tuple[int, int, bytes]], object]]:
    """(data, ancdata, address) of up to ``limit`` pending datagrams / frames (non-blocking).

    Stops at an empty queue; any other receive error is ``TransportError(ifname, "receive failed")``."""
    for _ in range(limit):
        try:
            data, ancdata, _flags, addr = sock.recvmsg(2048, 1024)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            raise TransportError(ifname, "receive failed", exc) from exc
        yield data, ancdata, addr


_T = TypeVar("_T", bound="SocketPair")


class SocketPair:
    """The life cycle every transport shares: one event and one general socket per port.

    A subclass sets ``ifname`` and ``_event = _general = None`` and implements ``_open_one(event)``
    (returns an open socket or raises ``TransportError``); ``_opened()`` runs once both are open."""

    ifname: str
    ifindex: int
    _event: socket.socket | None
    _general: socket.socket | None

    def _open_one(self, event: bool) -> socket.socket:
        raise NotImplementedError

    def _opened(self) -> None:
        pass

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
        self._opened()

    def close(self) -> None:
        for sock in (self._event, self._general):
            if sock is not None:
                sock.close()
        self._event = self._general = None

    def __enter__(self: _T) -> _T:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fds(self) -> tuple[int, ...]:
        return tuple(s.fileno() for s in (self._event, self._general) if s is not None)

    def _send_socket(self, event: bool) -> socket.socket:
        """The socket a message goes out on; ``TransportError`` when the transport is not open."""
        sock = self._event if event else self._general
        if sock is None:
            raise TransportError(self.ifname, "transport is not open")
        return sock

    def _poll_socket(self, fd: int) -> socket.socket | None:
        """The socket of ``fd`` (the event socket's fd, else the general socket), None when closed."""
        return self._event if self._event is not None and fd == self._event.fileno() else self._general
