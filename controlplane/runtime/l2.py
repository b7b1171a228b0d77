"""IEEE 802.3 transport (IEEE 1588 annex F), like linuxptp's raw.c: AF_PACKET, ethertype 0x88F7.

Two packet sockets per port, each with a classic BPF filter: the event socket takes PTP event
messages (messageType < 8) and has SO_TIMESTAMPING; the general socket takes the rest.

Both bind with ETH_P_ALL to the port's ifindex, not ETH_P_1588: a frame arriving on a bridge port
is consumed by the bridge's rx_handler before protocol-specific taps (ptype_base) see it, while
ETH_P_ALL taps (ptype_all) run first. So this transport also works on an enslaved bridge port.
PACKET_IGNORE_OUTGOING keeps our own transmitted frames out of the receive path.
Destinations: 01-1B-19-00-00-00 (all except peer delay), 01-80-C2-00-00-0E (peer delay).
The socket set-up is ``packet.open_packet_socket``, shared with ``rawudp.py``.
"""

from __future__ import annotations

import socket
import struct

from controlplane.runtime.packet import BpfProgram, open_packet_socket
from controlplane.runtime.transport import (
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

ETH_P_1588 = 0x88F7
PTP_PRIMARY_MAC = bytes.fromhex("011b19000000")
PTP_PDELAY_MAC = bytes.fromhex("0180c200000e")
_ETH_HDR = struct.Struct("!6s6sH")


def _ptp_filter(event: bool) -> BpfProgram:
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


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class L2Transport(SocketPair):
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
        return open_packet_socket(self.ifname, self.ifindex, _ptp_filter(event), (PTP_PRIMARY_MAC, PTP_PDELAY_MAC),
                                  event=event, timestamping=self.timestamping)

    def _opened(self) -> None:
        assert self._event is not None
        self.mac = self._event.getsockname()[4][:6]

    def protocol_address(self) -> bytes:
        return self.mac

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object | None = None,
             tx_stamp: bool = True) -> int | None:
        sock = self._send_socket(event)
        if dest is None:
            dst = PTP_PDELAY_MAC if peer_delay else PTP_PRIMARY_MAC
        elif isinstance(dest, (bytes, bytearray)) and len(dest) == 6:
            dst = bytes(dest)
        else:
            raise TransportError(self.ifname, f"L2 destination must be a 6-byte MAC, got {dest!r}")
        frame = _ETH_HDR.pack(dst, self.mac, ETH_P_1588) + data
        try:
            if event and not tx_stamp:
                send_without_tx_stamp(sock, frame)
                return None
            sock.send(frame)
        except OSError as exc:
            raise TransportError(self.ifname, f"send to {mac_text(dst)} failed", exc) from exc
        if event:
            return self._keys.take()
        return None

    def poll(self, fd: int) -> list[TransportEvent]:
        sock = self._poll_socket(fd)
        if sock is None:
            return []
        event = sock is self._event
        out: list[TransportEvent] = []
        if event:
            out.extend(drain_error_queue(sock, self.timestamping))
        for frame, ancdata, addr in receive_batch(sock, self.ifname, 64):
            if addr[2] == socket.PACKET_OUTGOING or len(frame) < _ETH_HDR.size:
                continue
            dst, src, ethertype = _ETH_HDR.unpack_from(frame)
            if ethertype != ETH_P_1588:
                continue
            mode = self.timestamping if event else TimestampMode.SOFTWARE
            out.append(Received(data=frame[_ETH_HDR.size:], rx_ts_ns=stamp_from_cmsgs(ancdata, mode), source=src, event=event))
        return out
