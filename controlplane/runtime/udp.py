"""UDPv4 and UDPv6 transports (IEEE 1588 annexes C and D), like linuxptp's udp.c / udp6.c.

Per port: an event socket (port 319, SO_TIMESTAMPING RX+TX) and a general socket (port 320),
both bound to the interface (SO_BINDTODEVICE), joined to the PTP groups on that interface only,
multicast loop off, TTL / hop limit 1.

Receive buffers are enlarged (``rcvbuf_bytes``, default 4 MiB; SO_RCVBUFFORCE as root, else
SO_RCVBUF up to net.core.rmem_max): the kernel queues each TX timestamp on the event socket's error
queue and silently drops it once the queue's memory reaches the receive buffer size (about 300
stamps with the default 208 KiB). A unicast server that sends a burst of Syncs (thousands of
clients, a late loop) lost the TX stamps — so the Follow_Ups — of the tail of each burst; a burst
of REQUEST_UNICAST_TRANSMISSION on the general socket was dropped the same way.

Unicast sends pass a neighbour gate (``neighbours.py``, on by default, ``neighbour_filter``): a
message for an on-link address that has no usable ARP/NDP entry is not handed to the kernel (event
messages never; general messages only as a few rate-limited probes), because such datagrams wait in
the kernel's neighbour queue for ~3 s charged to this socket's send buffer, and a flood of forged
unicast clients filled it until the port's multicast Sync failed with EAGAIN. A held send raises
``TransportError`` (cause EHOSTUNREACH), which the loop counts as a lost unicast send (``tx_dropped``)
and logs at most once a second; ``neighbour_stats()`` has the gate's counters.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import time
from collections import OrderedDict
from typing import Callable

from controlplane.codec.enums import MessageType
from controlplane.runtime.neighbours import (
    NeighbourGate,
    NeighbourWatch,
    Verdict,
    address_text,
    pack_address,
    state_name,
)

from controlplane.runtime.transport import (
    EVENT_PORT,
    GENERAL_PORT,
    SO_BINDTODEVICE,
    Received,
    SocketPair,
    TimestampMode,
    TransportError,
    TransportEvent,
    TxKeyCounter,
    drain_error_queue,
    enable_event_timestamping,
    enable_general_timestamping,
    receive_batch,
    send_without_tx_stamp,
    stamp_from_cmsgs,
)

PTP_PRIMARY_V4 = "224.0.1.129"
PTP_PDELAY_V4 = "224.0.0.107"
PTP_PRIMARY_V6 = "ff0e::181"
PTP_PDELAY_V6 = "ff02::6b"
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
DEFAULT_RCVBUF_BYTES = 4 << 20
POLL_BATCH = 256  # datagrams / error-queue entries read per wake-up of one socket
NEIGHBOUR_DRAIN_INTERVAL_NS = 1_000_000  # read pending neighbour notifications at most this often (unicast sends only)
MAX_HELD_TRACKED = 4096  # unicast hosts remembered for take_unreachable() (least recent forgotten)
NEIGHBOUR_WAIT_S = 0.010  # longest wait for a first-contact peer's ARP/ND answer before an event send (Verdict.WAIT)

log = logging.getLogger(__name__)


def set_receive_buffer(sock: socket.socket, size_bytes: int) -> int:
    """Ask for ``size_bytes`` of receive buffer (which also bounds the TX-timestamp error queue).

    SO_RCVBUFFORCE (CAP_NET_ADMIN) ignores net.core.rmem_max; without the capability fall back to
    SO_RCVBUF (capped by rmem_max). Returns what the kernel granted (it doubles the request)."""
    if size_bytes > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size_bytes)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size_bytes)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _interface_ipv4(sock: socket.socket, ifname: str) -> bytes:
    import fcntl

    SIOCGIFADDR = 0x8915
    try:
        res = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
    except OSError:
        return b"\0\0\0\0"
    return res[20:24]


def _interface_ipv6(ifname: str) -> bytes:
    """The first global (else link-local) IPv6 address of ifname, from /proc/net/if_inet6."""
    best = b"\0" * 16
    try:
        with open("/proc/net/if_inet6") as f:
            rows = [line.split() for line in f]
    except OSError:
        return best
    for row in rows:
        if len(row) >= 6 and row[5] == ifname:
            addr = bytes.fromhex(row[0])
            if int(row[3], 16) == 0:  # global scope
                return addr
            best = addr
    return best


class _UdpBase(SocketPair):
    network_protocol = "UDP"
    family = socket.AF_INET

    def __init__(self, ifname: str, *, timestamping: TimestampMode = TimestampMode.SOFTWARE, ttl: int = 1,
                 event_port: int = EVENT_PORT, general_port: int = GENERAL_PORT,
                 rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES, neighbour_filter: bool = True,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.ifname = ifname
        self.rcvbuf_bytes = rcvbuf_bytes
        self.timestamping = timestamping
        self.ttl = ttl
        self.event_port = event_port
        self.general_port = general_port
        self.ifindex = 0
        self._event: socket.socket | None = None
        self._general: socket.socket | None = None
        self._keys = TxKeyCounter()
        self.neighbour_filter = neighbour_filter
        self._monotonic_ns = monotonic_ns
        self._gate: NeighbourGate | None = None
        self._watch: NeighbourWatch | None = None
        self._drained_ns = 0
        self._held_since: OrderedDict[str, int] = OrderedDict()  # unicast host -> first hold of its current run

    # -- family specifics (overridden) --
    def _groups(self) -> tuple[str, str]:
        raise NotImplementedError

    def _configure_multicast(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _dest(self, group: str, port: int) -> tuple:
        raise NotImplementedError

    def protocol_address(self) -> bytes:
        raise NotImplementedError

    # -- common --
    def _open_one(self, event: bool) -> socket.socket:
        port = self.event_port if event else self.general_port
        sock = socket.socket(self.family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
            set_receive_buffer(sock, self.rcvbuf_bytes)
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(("::", port))
            else:
                sock.bind(("0.0.0.0", port))
            self._configure_multicast(sock)
            if event:
                enable_event_timestamping(sock, self.ifname, self.timestamping)
            else:
                # RX software stamps only: a TX stamp request here would queue one error-queue entry
                # per send that nobody reads, and the queued entries keep EPOLLERR raised, so every
                # select/epoll loop over this fd would spin at 100 % CPU.
                enable_general_timestamping(sock)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TransportError):
                raise
            raise TransportError(self.ifname, f"cannot open {self.network_protocol} socket on port {port}", exc) from exc
        return sock

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object | None = None,
             tx_stamp: bool = True) -> int | None:
        sock = self._send_socket(event)
        port = self.event_port if event else self.general_port
        if dest is None:
            primary, pdelay = self._groups()
            address = self._dest(pdelay if peer_delay else primary, port)
        else:
            address = self._unicast_dest(dest, port)
            if self._gate is not None:
                self._check_neighbour(data, address[0], event)
        try:
            if event and not tx_stamp:
                send_without_tx_stamp(sock, data, address)
                return None
            sock.sendto(data, address)
        except OSError as exc:
            raise TransportError(self.ifname, f"send to {address[0]} failed", exc) from exc
        if event:
            return self._keys.take()
        return None

    def _unicast_dest(self, dest: object, port: int) -> tuple:
        if isinstance(dest, tuple):
            return (dest[0], port) + tuple(dest[2:])
        return self._dest(str(dest), port)

    # -- the neighbour gate --
    def _opened(self) -> None:
        if not self.neighbour_filter:
            return
        gate = NeighbourGate(self.family, self.ifindex, self._monotonic_ns())
        watch = NeighbourWatch(gate)
        try:
            watch.open()
        except OSError as exc:  # no rtnetlink here: unicast sends go to the kernel unfiltered
            watch.close()
            log.warning("%s: neighbour states unavailable (%s): unicast sends to unresolved addresses not limited",
                        self.ifname, exc)
            return
        self._gate, self._watch = gate, watch
        self._drained_ns = self._monotonic_ns()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._gate = self._watch = None
        super().close()

    def _check_neighbour(self, data: bytes, host: str, event: bool) -> None:
        """Raise ``TransportError`` (cause EHOSTUNREACH) instead of queueing ``data`` for a ``host``
        whose next hop the kernel cannot reach yet (see the module docs)."""
        assert self._gate is not None and self._watch is not None
        now_ns = self._monotonic_ns()
        if now_ns - self._drained_ns >= NEIGHBOUR_DRAIN_INTERVAL_NS:
            self._drained_ns = now_ns
            self._watch.drain()
        gate = self._gate
        hop = gate.next_hop(host)
        if hop is None:
            packed = pack_address(self.family, host)
            if packed is None:
                return  # not an address: the kernel's own error follows
            hop = self._watch.next_hop(packed, key=host)
        if gate.usable(hop):  # the common case: a resolved peer
            if self._held_since:
                self._held_since.pop(host, None)
            return
        verdict = gate.decide(hop, event, now_ns)
        if verdict is Verdict.SEND:
            return  # a probe: it waits in the kernel while ARP/ND runs
        if verdict is Verdict.WAIT:
            gate.stats.resolve_requests += 1
            self._watch.resolve(hop)  # starts ARP/ND if nothing has yet; harmless while it runs
            if self._watch.wait_resolved(hop, NEIGHBOUR_WAIT_S):
                self._held_since.pop(host, None)
                return
            gate.stats.held_event += 1
        elif gate.wants_resolve(hop, now_ns):
            self._watch.resolve(hop)
        st = gate.stats
        try:
            kind = MessageType(data[0] & 0x0F).name if data else "empty message"
        except ValueError:
            kind = f"messageType {data[0] & 0x0F:#x}"
        if host not in self._held_since:
            self._held_since[host] = now_ns
            while len(self._held_since) > MAX_HELD_TRACKED:
                self._held_since.popitem(last=False)
        via = "" if hop == pack_address(self.family, host) else f" via {address_text(hop)}"
        cause = OSError(errno.EHOSTUNREACH, f"neighbour {state_name(gate.state(hop))}")
        raise TransportError(self.ifname, f"unicast {kind} to {host}{via} held, no link-layer address yet "
                             f"({st.held_event + st.held_general} held, {st.probes} probes sent on this port)", cause) from cause

    def take_unreachable(self, now_ns: int | None = None, min_held_ns: int = 5_000_000_000) -> list[str]:
        """Unicast hosts whose every send for at least ``min_held_ns`` was held (no link-layer address;
        probes do not count as reached), oldest first, and forget them: what the unicast service should
        stop serving (``UnicastService.cancel_unreachable``). A host whose sends go on being held is
        reported again ``min_held_ns`` later; a successful send takes it off the list. ``now_ns`` on
        the clock given as ``monotonic_ns`` (read here when None: the times held are on that clock)."""
        if now_ns is None:
            now_ns = self._monotonic_ns()
        out = [h for h, since in self._held_since.items() if now_ns - since >= min_held_ns]
        for h in out:
            del self._held_since[h]
        return out

    def neighbour_stats(self) -> dict[str, int]:
        """The neighbour gate's counters (empty when the gate is off or unavailable)."""
        if self._gate is None:
            return {}
        out = dict(vars(self._gate.stats))
        out["netlink_errors"] = self._watch.errors if self._watch is not None else 0
        return out

    def poll(self, fd: int) -> list[TransportEvent]:
        sock = self._poll_socket(fd)
        if sock is None:
            return []
        event = sock is self._event
        out: list[TransportEvent] = []
        if event:
            out.extend(drain_error_queue(sock, self.timestamping, POLL_BATCH))
        else:
            drain_error_queue(sock, TimestampMode.SOFTWARE)  # nothing should be there; never let it spin
        for data, ancdata, addr in receive_batch(sock, self.ifname, POLL_BATCH):
            mode = self.timestamping if event else TimestampMode.SOFTWARE
            out.append(Received(data=data, rx_ts_ns=stamp_from_cmsgs(ancdata, mode), source=addr, event=event))
        return out


class UdpV4Transport(_UdpBase):
    network_protocol = "UDPv4"
    family = socket.AF_INET

    def _groups(self) -> tuple[str, str]:
        return PTP_PRIMARY_V4, PTP_PDELAY_V4

    def _configure_multicast(self, sock: socket.socket) -> None:
        mreqn = struct.pack("4s4si", socket.inet_aton("0.0.0.0"), socket.inet_aton("0.0.0.0"), self.ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
        for group in self._groups():
            req = struct.pack("4s4si", socket.inet_aton(group), socket.inet_aton("0.0.0.0"), self.ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, req)

    def _dest(self, group: str, port: int) -> tuple:
        return (group, port)

    def protocol_address(self) -> bytes:
        if self._event is None:
            return b"\0\0\0\0"
        return _interface_ipv4(self._event, self.ifname)


class UdpV6Transport(_UdpBase):
    network_protocol = "UDPv6"
    family = socket.AF_INET6

    def _groups(self) -> tuple[str, str]:
        return PTP_PRIMARY_V6, PTP_PDELAY_V6

    def _configure_multicast(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.ttl)
        for group in self._groups():
            req = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", self.ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, req)

    def _dest(self, group: str, port: int) -> tuple:
        addr = ipaddress.IPv6Address(group.split("%")[0])
        scope = self.ifindex if (addr.is_link_local or addr.is_multicast) else 0
        return (str(addr), port, 0, scope)

    def _unicast_dest(self, dest: object, port: int) -> tuple:
        if isinstance(dest, tuple):
            scope = dest[3] if len(dest) > 3 and dest[3] else self.ifindex
            return (dest[0], port, 0, scope)
        return self._dest(str(dest), port)

    def protocol_address(self) -> bytes:
        return _interface_ipv6(self.ifname)
