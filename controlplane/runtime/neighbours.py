"""Kernel neighbour (ARP / NDP) states for a UDP port's unicast destinations, and the gate that
keeps unicast frames for unresolved on-link destinations out of the kernel.

Why (measured, tests/lab/test_load.py ``test_floods_without_allow_list_keep_the_slave_served``):
a UDP datagram to an on-link address whose link-layer address is unknown waits in the kernel's
neighbour queue (state INCOMPLETE, about 3 s until FAILED), and while it waits it is charged to the
sending socket's send buffer (sk_wmem). A forged REQUEST_UNICAST_TRANSMISSION from an address
nobody owns gets a GRANT and then Sync/Announce/Delay_Resp streams; 256 datagrams of 44 bytes to
such addresses fill the default 208 KiB send buffer (skb truesize ~830 bytes), after which every
send on the socket fails with EAGAIN - including the port's own multicast Sync/Follow_Up.

``NeighbourGate`` (pure; time is an argument) decides per unicast send:

* the gate judges the *next hop* the kernel would use: the destination itself, or the gateway of
  the route that covers it. The runtime asks the kernel (RTM_GETROUTE with the port's interface as
  output, as for a socket bound with SO_BINDTODEVICE). NB: with no matching route, the kernel
  assumes a socket bound to a device reaches *any* address on-link and ARPs for it - so forged
  off-link sources queue frames exactly like on-link ones (measured: 10.x and 198.18.x sources of
  the flood, no default route);
* a next hop whose kernel neighbour entry is usable (REACHABLE, STALE, DELAY, PROBE, PERMANENT,
  NOARP): ``SEND``; destinations the kernel does not send through a neighbour (local, broadcast,
  multicast, unreachable) are not judged here (``SEND``; the kernel reports its own errors);
* an unresolved next hop (no entry, NONE, INCOMPLETE, FAILED): an *event* message is
  ``HOLD`` (queued, it would also leave the loop waiting for a TX timestamp that never comes),
  except that a next hop not FAILED gets one short ``WAIT`` per window (at most ``wait_rate_per_s``,
  the runtime blocks up to ~10 ms for the kernel's answer: a real peer's first Sync goes out, a
  forged one costs at most ~50 ms of loop time a second); a *general* message is
  ``SEND`` as a probe - at most ``probe_burst`` per destination per ``probe_interval_ns`` and at
  most ``probe_rate_per_s`` (burst ``probe_global_burst``) in total - else ``HOLD``. So the
  neighbour queues hold at most ~(burst + rate x 3 s) datagrams of this port (~80 by default,
  ~70 KB), whatever the number of forged addresses; a legitimate client's first GRANT still goes
  out and its address resolves within milliseconds;
* every ``HOLD`` may also ask the kernel to (re)start resolution without a packet (RTM_NEWNEIGH
  with NTF_USE, ``wants_resolve``), at most once per destination per ``probe_interval_ns`` and at
  most ``probe_rate_per_s`` in total, so ARP/ND keeps trying for a peer that comes back.

``NeighbourWatch`` is the I/O side: one rtnetlink socket subscribed to neighbour and route
notifications (RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE / IPV6_ROUTE), a dump of the neighbour table when
it opens and after a notification overrun (ENOBUFS), read without blocking when the transport asks
(``drain``); next hops from RTM_GETROUTE, cached (bounded) until a route changes. The netlink
parsing is pure (``parse_messages``) and has its own unit tests (tests/unit/test_neighbour_gate.py;
against the kernel: tests/lab/test_unicast_unreachable.py). Constants are the kernel uapi's
(linux/netlink.h, linux/rtnetlink.h, linux/neighbour.h).
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections import OrderedDict
from typing import Hashable, Union

from controlplane.runtime.ratelimit import TokenBucket

# --- netlink / rtnetlink (uapi) ---------------------------------------------------------------
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
NDA_DST = 1
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTN_UNICAST = 1
NTF_USE = 0x01
NETLINK_ROUTE = 0

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BBHiHBB")  # family, pad1, pad2, ifindex, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")  # len, type
_NLMSGERR = struct.Struct("=i")


class NudState(enum.IntFlag):
    """Neighbour entry states (linux/neighbour.h NUD_*)."""

    NONE = 0x00
    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    NOARP = 0x40
    PERMANENT = 0x80


# an entry in one of these states has a link-layer address: the kernel sends at once
NUD_VALID = NudState.PERMANENT | NudState.NOARP | NudState.REACHABLE | NudState.PROBE | NudState.STALE | NudState.DELAY


def state_name(state: int | None) -> str:
    if state is None:
        return "no entry"
    if state == 0:
        return "NONE"
    return "|".join(s.name for s in NudState if s and state & s) or hex(state)


# --- pure parsing ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NeighbourRecord:
    """One RTM_NEWNEIGH / RTM_DELNEIGH: ``address`` is the packed IP (4 or 16 bytes)."""

    family: int
    ifindex: int
    address: bytes
    state: int
    deleted: bool


@dataclasses.dataclass(frozen=True)
class RouteRecord:
    """One RTM_NEWROUTE / RTM_DELROUTE (a notification, or the answer to RTM_GETROUTE)."""

    family: int
    route_type: int  # RTN_* (1 unicast)
    oif: int | None
    gateway: bytes | None
    deleted: bool


@dataclasses.dataclass(frozen=True)
class DumpDone:
    seq: int


@dataclasses.dataclass(frozen=True)
class NetlinkError:
    seq: int
    error: int  # positive errno (0 = an ACK)


NetlinkRecord = Union[NeighbourRecord, RouteRecord, DumpDone, NetlinkError]


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            break
        out.setdefault(kind & 0x3FFF, data[offset + _RTATTR.size: offset + length])
        offset += (length + 3) & ~3
    return out


def parse_messages(data: bytes) -> list[NetlinkRecord]:
    """The neighbour, address, done and error records of one netlink datagram (others skipped).

    Truncated or malformed messages end the parse (what was parsed before is returned); never raises."""
    out: list[NetlinkRecord] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        body, end = offset + _NLMSGHDR.size, offset + length
        if kind in (RTM_NEWNEIGH, RTM_DELNEIGH) and body + _NDMSG.size <= end:
            family, _p1, _p2, ifindex, state, _fl, _ty = _NDMSG.unpack_from(data, body)
            dst = _attrs(data, body + _NDMSG.size, end).get(NDA_DST)
            if dst is not None and len(dst) in (4, 16):
                out.append(NeighbourRecord(family, ifindex, dst, state, kind == RTM_DELNEIGH))
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and body + _RTMSG.size <= end:
            family, *_rest, route_type, _flags = _RTMSG.unpack_from(data, body)
            attrs = _attrs(data, body + _RTMSG.size, end)
            gw = attrs.get(RTA_GATEWAY)
            oif = attrs.get(RTA_OIF)
            out.append(RouteRecord(family, route_type, struct.unpack("=I", oif)[0] if oif is not None and len(oif) == 4 else None,
                                   gw if gw is not None and len(gw) in (4, 16) else None, kind == RTM_DELROUTE))
        elif kind == NLMSG_DONE:
            out.append(DumpDone(seq))
        elif kind == NLMSG_ERROR and body + _NLMSGERR.size <= end:
            out.append(NetlinkError(seq, -_NLMSGERR.unpack_from(data, body)[0]))
        offset += (length + 3) & ~3
    return out


def _attr(kind: int, value: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def neighbour_dump_request(family: int, seq: int) -> bytes:
    """An RTM_GETNEIGH dump request for one address family."""
    body = _NDMSG.pack(family, 0, 0, 0, 0, 0, 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def route_request(family: int, address: bytes, oif: int, seq: int) -> bytes:
    """RTM_GETROUTE: the route the kernel would take to ``address`` out of interface ``oif``."""
    body = _RTMSG.pack(family, len(address) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, address) + _attr(RTA_OIF, struct.pack("=I", oif))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST, seq, 0) + body


def resolve_request(family: int, ifindex: int, address: bytes, seq: int) -> bytes:
    """RTM_NEWNEIGH with NTF_USE: the kernel treats the entry as used - creates it if needed and
    starts (or keeps) resolving it, as a packet would, but without queueing one."""
    body = _NDMSG.pack(family, 0, 0, ifindex, 0, NTF_USE, 0) + _attr(NDA_DST, address)
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWNEIGH, flags, seq, 0) + body


# --- the pure gate -------------------------------------------------------------------------------
class Verdict(enum.Enum):
    SEND = "send"    # resolved, not judged, or a probe within the budget
    WAIT = "wait"    # an event message to a next hop not yet tried or still resolving: wait briefly for it
    HOLD = "hold"    # unresolved next hop: not handed to the kernel


@dataclasses.dataclass
class GateStats:
    held_event: int = 0        # event messages not sent: next hop unresolved
    waits: int = 0             # event sends that waited for a resolution (WAIT)
    waits_resolved: int = 0    # ... and found the next hop resolved in time
    held_general: int = 0      # general messages not sent: probe budget of the next hop or of the port spent
    probes: int = 0            # general messages sent to an unresolved next hop (they wait in the kernel)
    resolve_requests: int = 0  # NTF_USE requests issued (ARP/ND restarted without a packet)
    route_lookups: int = 0     # RTM_GETROUTE queries (next-hop cache misses)
    updates: int = 0           # neighbour records applied
    resyncs: int = 0           # neighbour table dumps after a notification overrun


@dataclasses.dataclass
class _Probe:
    window_start_ns: int
    sent: int = 0
    resolve_ns: int | None = None
    waited: bool = False


NOT_JUDGED = b""  # next hop of a destination the kernel does not send through a neighbour entry


class NeighbourGate:
    """Per-port decision for unicast sends from the kernel's neighbour states (see module docs).

    ``apply(record)`` feeds neighbour records of this port's ``ifindex`` and ``family`` (others are
    ignored) and route notifications (any clears the next-hop cache); ``next_hop(dest)`` /
    ``set_next_hop(dest, hop)`` is that cache; ``decide(next_hop, event, now_ns)``;
    ``wants_resolve(next_hop, now_ns)`` after a HOLD. Memory is bounded by ``max_entries`` per table
    (the least recently touched are forgotten)."""

    def __init__(self, family: int, ifindex: int, now_ns: int, *, probe_interval_ns: int = 1_000_000_000,
                 probe_burst: int = 3, probe_rate_per_s: float = 16.0, probe_global_burst: int = 32,
                 wait_rate_per_s: float = 5.0, wait_burst: int = 10, max_entries: int = 16384) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"address family {family} is not IPv4 or IPv6")
        if probe_interval_ns <= 0 or probe_burst < 1 or max_entries < 1:
            raise ValueError("probe_interval_ns, probe_burst and max_entries must be positive")
        self.family = family
        self.ifindex = ifindex
        self.probe_interval_ns = probe_interval_ns
        self.probe_burst = probe_burst
        self.max_entries = max_entries
        self._states: OrderedDict[bytes, int] = OrderedDict()
        self._probes: OrderedDict[bytes, _Probe] = OrderedDict()
        self._hops: OrderedDict[Hashable, bytes] = OrderedDict()  # destination (packed or text) -> next hop
        self._budget = TokenBucket(probe_rate_per_s, probe_global_burst, now_ns)
        self._resolve_budget = TokenBucket(probe_rate_per_s, probe_global_burst, now_ns)
        self._wait_budget = TokenBucket(wait_rate_per_s, wait_burst, now_ns)
        self.stats = GateStats()

    # -- inputs --
    def apply(self, record: NetlinkRecord) -> None:
        if isinstance(record, NeighbourRecord):
            if record.family != self.family or record.ifindex != self.ifindex:
                return
            self.stats.updates += 1
            if record.deleted:
                self._states.pop(record.address, None)
                return
            self._states[record.address] = record.state
            self._states.move_to_end(record.address)
            if record.state & NUD_VALID:
                self._probes.pop(record.address, None)
            while len(self._states) > self.max_entries:
                self._states.popitem(last=False)
        elif isinstance(record, RouteRecord):
            if record.family == self.family:
                self.clear_next_hops()  # some route changed: look next hops up again

    def clear_neighbours(self) -> None:
        """Before a fresh dump: forget every neighbour state (probe budgets are kept)."""
        self._states.clear()

    def clear_next_hops(self) -> None:
        self._hops.clear()

    def usable(self, next_hop: bytes) -> bool:
        """Sent at once by the kernel: not judged here, or a neighbour entry with a link-layer address."""
        if next_hop == NOT_JUDGED:
            return True
        state = self._states.get(next_hop)
        return state is not None and bool(state & NUD_VALID)

    def next_hop(self, dest: Hashable) -> bytes | None:
        """The cached next hop of ``dest`` (``NOT_JUDGED`` for local/broadcast/...), None when unknown."""
        return self._hops.get(dest)

    def set_next_hop(self, dest: Hashable, hop: bytes) -> None:
        self._hops[dest] = hop
        while len(self._hops) > self.max_entries:
            self._hops.popitem(last=False)

    # -- queries --
    def state(self, address: bytes) -> int | None:
        return self._states.get(address)

    def decide(self, next_hop: bytes, event: bool, now_ns: int) -> Verdict:
        if next_hop == NOT_JUDGED:
            return Verdict.SEND
        state = self._states.get(next_hop)
        if state is not None and state & NUD_VALID:
            return Verdict.SEND
        probe = self._probe(next_hop, now_ns)
        if event:
            # A TX stamp is awaited for it, so it is never queued behind a resolution that may fail. A
            # next hop without a FAILED entry (not tried yet, or resolving) is worth a short wait once
            # per window: a legitimate peer answers ARP/ND within a millisecond or so.
            if (state is None or not state & NudState.FAILED) and not probe.waited and self._wait_budget.take(now_ns):
                probe.waited = True
                self.stats.waits += 1
                return Verdict.WAIT
            self.stats.held_event += 1
            return Verdict.HOLD
        if probe.sent < self.probe_burst and self._budget.take(now_ns):
            probe.sent += 1
            self.stats.probes += 1
            return Verdict.SEND
        self.stats.held_general += 1
        return Verdict.HOLD

    def wants_resolve(self, next_hop: bytes, now_ns: int) -> bool:
        """After a HOLD: should the runtime ask the kernel to (re)resolve ``next_hop`` now (NTF_USE)?
        Not while a probe of this window may still wait in the kernel, at most once per
        ``probe_interval_ns`` per address, within the global probe rate."""
        probe = self._probe(next_hop, now_ns)
        if probe.sent:
            return False
        if probe.resolve_ns is not None and now_ns - probe.resolve_ns < self.probe_interval_ns:
            return False
        if not self._resolve_budget.take(now_ns):
            return False
        probe.resolve_ns = now_ns
        self.stats.resolve_requests += 1
        return True

    def _probe(self, address: bytes, now_ns: int) -> _Probe:
        probe = self._probes.get(address)
        if probe is None:
            probe = self._probes[address] = _Probe(now_ns)
            while len(self._probes) > self.max_entries:
                self._probes.popitem(last=False)
        elif now_ns - probe.window_start_ns >= self.probe_interval_ns:
            probe.window_start_ns, probe.sent, probe.waited = now_ns, 0, False
            self._probes.move_to_end(address)
        return probe


def pack_address(family: int, host: str) -> bytes | None:
    """The packed form of a destination host string (a ``%scope`` suffix is ignored), None if invalid."""
    try:
        return socket.inet_pton(family, host.split("%", 1)[0])
    except (OSError, ValueError):
        return None


def address_text(address: bytes) -> str:
    return str(ipaddress.ip_address(address))


# --- the netlink side ------------------------------------------------------------------------------
class NeighbourWatch:
    """rtnetlink for one port: notifications of neighbour and route changes fed to a ``NeighbourGate``.

    ``open()`` subscribes, then dumps the neighbour table; ``drain()`` reads pending notifications
    without blocking and re-dumps after an overrun; ``next_hop(dest)`` answers from the gate's cache
    or asks the kernel (RTM_GETROUTE, blocking with a short timeout, on a second socket);
    ``resolve(address)`` sends an NTF_USE request. Never raises out of ``drain``/``next_hop``/``resolve``:
    a failure is counted (``errors``) and the destination is then not judged."""

    REQUEST_TIMEOUT_S = 0.5

    def __init__(self, gate: NeighbourGate, *, rcvbuf_bytes: int = 1 << 20) -> None:
        self.gate = gate
        self.rcvbuf_bytes = rcvbuf_bytes
        self._sock: socket.socket | None = None
        self._query: socket.socket | None = None
        self._seq = 0
        self.errors = 0  # netlink failures (e.g. EPERM for NTF_USE without CAP_NET_ADMIN)

    def open(self) -> None:
        v4 = self.gate.family == socket.AF_INET
        groups = RTMGRP_NEIGH | (RTMGRP_IPV4_ROUTE if v4 else RTMGRP_IPV6_ROUTE)
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        query = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf_bytes)  # SO_RCVBUFFORCE
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf_bytes)
            sock.bind((0, groups))
            sock.setblocking(False)
            query.bind((0, 0))
            query.settimeout(self.REQUEST_TIMEOUT_S)
        except OSError:
            sock.close()
            query.close()
            raise
        self._sock, self._query = sock, query
        self.resync()

    def close(self) -> None:
        for s in (self._sock, self._query):
            if s is not None:
                s.close()
        self._sock = self._query = None

    def _request(self, data: bytes) -> list[NetlinkRecord]:
        """Send one request on the query socket, return its records up to DONE / the first answer."""
        assert self._query is not None
        self._seq += 1
        seq = self._seq
        self._query.send(data[:8] + struct.pack("=I", seq) + data[12:])
        out: list[NetlinkRecord] = []
        while True:
            for rec in parse_messages(self._query.recv(1 << 16)):
                if isinstance(rec, NetlinkError):
                    if rec.seq != seq:
                        continue
                    if rec.error:
                        raise OSError(rec.error, os.strerror(rec.error))
                    return out
                if isinstance(rec, DumpDone):
                    return out
                out.append(rec)
                if isinstance(rec, RouteRecord):  # RTM_GETROUTE answers with one message
                    return out

    def resync(self) -> None:
        """Dump the neighbour table into the gate (after open or an overrun)."""
        records = self._request(neighbour_dump_request(self.gate.family, 0))
        self.gate.clear_neighbours()
        for rec in records:
            self.gate.apply(rec)

    def next_hop(self, dest: bytes, key: Hashable = None) -> bytes:
        """The neighbour the kernel would send ``dest``'s frames to (``NOT_JUDGED`` if none, or on error),
        cached under ``key`` (default ``dest``; the transport uses the destination's text)."""
        key = dest if key is None else key
        hop = self.gate.next_hop(key)
        if hop is not None:
            return hop
        self.gate.stats.route_lookups += 1
        hop = NOT_JUDGED
        try:
            for rec in self._request(route_request(self.gate.family, dest, self.gate.ifindex, 0)):
                if isinstance(rec, RouteRecord) and rec.route_type == RTN_UNICAST and rec.oif in (None, self.gate.ifindex):
                    hop = rec.gateway if rec.gateway is not None else dest
        except OSError:
            self.errors += 1  # e.g. ENETUNREACH: the kernel refuses the send itself; not cached
            return NOT_JUDGED
        self.gate.set_next_hop(key, hop)
        return hop

    def drain(self, limit: int = 64) -> int:
        """Apply every pending notification (up to ``limit`` datagrams); returns how many records."""
        if self._sock is None:
            return 0
        n = 0
        for _ in range(limit):
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # notifications were lost: read the table again
                    self.gate.stats.resyncs += 1
                    self.gate.clear_next_hops()
                    try:
                        self.resync()
                    except OSError:
                        self.errors += 1
                    continue
                self.errors += 1  # never out of a send path: the gate keeps its last known states
                break
            for rec in parse_messages(data):
                if isinstance(rec, NetlinkError):
                    if rec.error:
                        self.errors += 1
                else:
                    self.gate.apply(rec)
                    n += 1
        return n

    def wait_resolved(self, address: bytes, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for a usable neighbour entry for ``address`` (notifications
        applied as they come); True when it is usable. Used for WAIT only (bounded by the gate)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.drain()
            state = self.gate.state(address)
            if state is not None and state & NUD_VALID:
                self.gate.stats.waits_resolved += 1
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._sock is None:
                return False
            select.select([self._sock], [], [], remaining)

    def resolve(self, address: bytes) -> None:
        if self._sock is None:
            return
        self._seq += 1
        try:
            self._sock.send(resolve_request(self.gate.family, self.gate.ifindex, address, self._seq))
        except OSError:
            self.errors += 1

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1
