"""AF_PACKET sockets for the transports that tap a port below its IP stack (``l2.py``, ``rawudp.py``).

One socket of either transport: a packet socket with a classic BPF filter that selects its
frames, bound with ETH_P_ALL to the port (ETH_P_ALL taps run before a bridge's rx_handler, so an
enslaved bridge port receives too), PACKET_IGNORE_OUTGOING, the port's multicast MACs joined, and
SO_TIMESTAMPING (the event socket with the port's mode, the general socket with software RX stamps
only: see transport.GENERAL_RX_FLAGS).
"""

from __future__ import annotations

import ctypes
import socket
import struct

from controlplane.runtime.transport import (
    SOL_PACKET,
    TimestampMode,
    TransportError,
    enable_event_timestamping,
    enable_general_timestamping,
)

ETH_P_ALL = 0x0003
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26

BpfProgram = list[tuple[int, int, int, int]]  # classic BPF instructions (code, jt, jf, k)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach_filter(sock: socket.socket, program: BpfProgram) -> None:
    """SO_ATTACH_FILTER with a classic BPF program (the kernel copies it)."""
    insns = (_SockFilter * len(program))(*[_SockFilter(*i) for i in program])
    fprog = _SockFprog(len(program), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def open_packet_socket(ifname: str, ifindex: int, program: BpfProgram, group_macs: tuple[bytes, ...], *,
                       event: bool, timestamping: TimestampMode, auxdata: bool = False,
                       what: str = "cannot open AF_PACKET socket") -> socket.socket:
    """A non-blocking AF_PACKET socket on ``ifname`` that receives what ``program`` accepts.

    ``auxdata`` also asks for PACKET_AUXDATA (each frame's checksum status). A failure closes the
    socket and raises ``TransportError(ifname, what, cause)``."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
    try:
        attach_filter(sock, program)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # kernel < 4.20: outgoing frames are dropped in poll() by pkttype instead
        sock.bind((ifname, ETH_P_ALL))
        for mac in group_macs:
            mreq = struct.pack("iHH8s", ifindex, PACKET_MR_MULTICAST, 6, mac)
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        if auxdata:
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if event:
            enable_event_timestamping(sock, ifname, timestamping)
        else:
            enable_general_timestamping(sock)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if isinstance(exc, TransportError):
            raise
        raise TransportError(ifname, what, exc) from exc
    return sock
