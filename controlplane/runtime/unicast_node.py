"""Minimal runtime glue for 1588 ATR unicast: a negotiating unicast server and client over UDPv4/UDPv6.

This is the thin loop around the sans-IO ``UnicastServer`` / ``UnicastClient`` (core/unicast*.py)
that the lab tests and the load benchmark run until the daemon composes them itself. It reads
the clocks (host monotonic for timers, the kernel's software stamps for PTP time), owns the
transport and executes the core's actions:

* server: Announce and two-step Sync (+ Follow_Up with the kernel TX stamp) per grant, Delay_Resp
  to Delay_Req only while that client holds a Delay_Resp grant; every message carries the unicast
  flag and the granted logMessageInterval.
* client: negotiates with one or two servers, takes Sync/Follow_Up/Delay_Resp from the selected
  one only, sends Delay_Req after each Follow_Up and reports offset_ns / mean_path_delay_ns
  (free-running: it never adjusts any clock — the reported offset is its error against the server).

Run one in a namespace (one JSON object per line on stdout: events, grants, offsets):

    python -m controlplane.runtime.unicast_node server --iface eth0 [--priority1 10] \
        [--min-duration 60 --max-duration 1000 --allow 10.0.0.0/8 ...]
    python -m controlplane.runtime.unicast_node client --iface eth0 --server 10.0.0.1 --server 10.0.0.2

The server's PTP time is CLOCK_REALTIME as the kernel stamps it, announced as an ARB timescale
(ptpTimescale 0), so a linuxptp client with ``free_running 1`` reports the pure measurement error.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from controlplane.codec.errors import CodecError
from controlplane.codec.header import Header
from controlplane.codec.messages import (
    Announce,
    DelayReq,
    DelayResp,
    FollowUp,
    Signaling,
    Sync,
    decode,
    encode,
)
from controlplane.codec.tlv import (
    AcknowledgeCancelUnicastTransmissionTlv,
    CancelUnicastTransmissionTlv,
    GrantUnicastTransmissionTlv,
    RequestUnicastTransmissionTlv,
)
from controlplane.codec.types import ClockQuality, PortIdentity, Timestamp
from controlplane.core.unicast import (
    AcknowledgeCancel,
    ActiveServerChanged,
    Cancel,
    DueTransmission,
    Grant,
    NegotiationEvent,
    NegotiationTlv,
    Request,
    SendSignaling,
    ServerPolicy,
    UnicastMessageType as MT,
)
from controlplane.core.unicast_client import AnnounceInfo, ClientConfig, UnicastClient
from controlplane.core.unicast_server import UnicastServer, records_as_dicts
from controlplane.runtime.transport import Received, TxTimestamp
from controlplane.runtime.udp import UdpV4Transport, UdpV6Transport

WILDCARD = PortIdentity(b"\xff" * 8, 0xFFFF)
TIME_SOURCE_INTERNAL_OSCILLATOR = 0xA0


# --- codec <-> core conversion ----------------------------------------------------------------

def tlvs_from_codec(tlvs: tuple[Any, ...]) -> list[NegotiationTlv]:
    out: list[NegotiationTlv] = []
    for t in tlvs:
        if isinstance(t, RequestUnicastTransmissionTlv):
            out.append(Request(int(t.message_type), t.log_inter_message_period, t.duration_field))
        elif isinstance(t, GrantUnicastTransmissionTlv):
            out.append(Grant(int(t.message_type), t.log_inter_message_period, t.duration_field, t.renewal_invited))
        elif isinstance(t, CancelUnicastTransmissionTlv):
            out.append(Cancel(int(t.message_type), bool(t.reserved_nibble & 1), bool(t.reserved_nibble & 2)))
        elif isinstance(t, AcknowledgeCancelUnicastTransmissionTlv):
            out.append(AcknowledgeCancel(int(t.message_type), bool(t.reserved_nibble & 1), bool(t.reserved_nibble & 2)))
    return out


def tlv_to_codec(t: NegotiationTlv) -> Any:
    if isinstance(t, Request):
        return RequestUnicastTransmissionTlv(t.message_type, t.log_inter_message_period, t.duration_s)
    if isinstance(t, Grant):
        return GrantUnicastTransmissionTlv(t.message_type, t.log_inter_message_period, t.duration_s, t.renewal_invited)
    flags = (1 if t.maintain_request else 0) | (2 if t.maintain_grant else 0)
    if isinstance(t, Cancel):
        return CancelUnicastTransmissionTlv(t.message_type, flags)
    return AcknowledgeCancelUnicastTransmissionTlv(t.message_type, flags)


def pid_tuple(p: PortIdentity) -> tuple[bytes, int]:
    return (bytes(p.clock_identity), p.port_number)


def source_ip(source: object) -> str:
    return str(source[0]) if isinstance(source, tuple) else str(source)  # type: ignore[index]


# --- the shared loop ---------------------------------------------------------------------------

class _Node:
    def __init__(self, iface: str, ipv6: bool, clock_identity: bytes, out: TextIO) -> None:
        self.transport = (UdpV6Transport if ipv6 else UdpV4Transport)(iface)
        self._family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self._general_dup: socket.socket | None = None
        self.port_identity = PortIdentity(clock_identity, 1)
        self.out = out
        self.sel = selectors.DefaultSelector()
        self.running = True
        self.sig_seq = 0
        self.stats: dict[str, int] = {"tx": 0, "rx": 0, "bad_rx": 0, "tx_errors": 0}

    def emit(self, **rec: Any) -> None:
        rec.setdefault("mono_ns", time.monotonic_ns())
        rec.setdefault("real_ns", time.time_ns())
        self.out.write(json.dumps(rec, default=str) + "\n")
        self.out.flush()

    def open(self) -> None:
        self.transport.open()
        for fd in self.transport.fds():
            self.sel.register(fd, selectors.EVENT_READ)
        # Workaround: udp.py enables SOF_TIMESTAMPING_TX_SOFTWARE on the general socket too but only
        # drains the event socket's error queue; undrained TX stamps keep EPOLLERR set and the loop
        # would spin. Drain the general socket's error queue through a dup of its fd.
        fds = self.transport.fds()
        self._general_dup = socket.fromfd(fds[-1], self._family, socket.SOCK_DGRAM) if len(fds) > 1 else None

    def drain_general_errqueue(self, fd: int) -> None:
        sock = self._general_dup
        if sock is None or fd != self.transport.fds()[-1]:
            return
        for _ in range(256):
            try:
                sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break

    def close(self) -> None:
        self.sel.close()
        if self._general_dup is not None:
            self._general_dup.close()
        self.transport.close()

    def header(self, mtype: int, seq: int, log: int, **flags: bool) -> Header:
        return Header(message_type=mtype, sequence_id=seq, source_port_identity=self.port_identity,
                      log_message_interval=log, unicast=True, **flags)

    def send(self, data: bytes, event: bool, dest: str) -> int | None:
        try:
            token = self.transport.send(data, event=event, dest=dest)
        except OSError as exc:
            self.stats["tx_errors"] += 1
            self.emit(kind="tx_error", address=dest, detail=str(exc))
            return None
        self.stats["tx"] += 1
        return token

    def send_signaling(self, action: SendSignaling) -> None:
        target = WILDCARD if action.target_port_identity is None else PortIdentity(*action.target_port_identity)
        msg = Signaling(self.header(0xC, self.sig_seq, 0x7F), target, tuple(tlv_to_codec(t) for t in action.tlvs))
        self.sig_seq = (self.sig_seq + 1) & 0xFFFF
        self.send(encode(msg), False, action.address)

    def run(self, deadline_fn: Callable[[], int | None], on_timer: Callable[[int], None],
            on_event: Callable[[Any, int], None], stop_at_ns: int | None = None) -> None:
        while self.running:
            now = time.monotonic_ns()
            if stop_at_ns is not None and now >= stop_at_ns:
                break
            dl = deadline_fn()
            if dl is not None and dl <= now:
                on_timer(now)
                continue
            timeout_ns = 200_000_000 if dl is None else min(dl - now, 200_000_000)
            ready = self.sel.select(timeout_ns / 1e9)
            order = self.transport.fds()  # event socket first: TX stamps and Syncs before general messages
            ready.sort(key=lambda kv: order.index(kv[0].fd) if kv[0].fd in order else 99)
            for key, _ in ready:
                self.drain_general_errqueue(key.fd)
                try:
                    events = self.transport.poll(key.fd)
                except OSError as exc:
                    self.emit(kind="rx_error", detail=str(exc))
                    continue
                now = time.monotonic_ns()
                for ev in events:
                    on_event(ev, now)


# --- server ------------------------------------------------------------------------------------

@dataclass
class _PendingFollowUp:
    address: str
    sequence_id: int
    log: int


class ServerNode(_Node):
    def __init__(self, iface: str, policy: ServerPolicy, *, ipv6: bool = False,
                 clock_identity: bytes = b"\x02\x00\x00\xff\xfe\x00\x00\x01", priority1: int = 128,
                 priority2: int = 128, clock_class: int = 248, out: TextIO = sys.stdout,
                 log_grants: bool = True) -> None:
        super().__init__(iface, ipv6, clock_identity, out)
        self.core = UnicastServer(policy)
        self.priority1, self.priority2, self.clock_class = priority1, priority2, clock_class
        self.pending: dict[int, _PendingFollowUp] = {}
        self.log_grants = log_grants
        self.sent_per_client: dict[str, int] = {}
        self._sync_template = encode(Sync(self.header(MT.SYNC, 0, 0, two_step=True), Timestamp()))
        self._fup_template = encode(FollowUp(self.header(0x8, 0, 0), Timestamp()))
        self._ann_template = encode(Announce(
            self.header(MT.ANNOUNCE, 0, 0), Timestamp(), 37, priority1,
            ClockQuality(clock_class, 0xFE, 0xFFFF), priority2, clock_identity, 0,
            TIME_SOURCE_INTERNAL_OSCILLATOR,
        ))

    @staticmethod
    def _patch(template: bytes, seq: int, log: int, ts_ns: int | None = None) -> bytes:
        b = bytearray(template)
        struct.pack_into("!H", b, 30, seq)
        struct.pack_into("!b", b, 33, log)
        if ts_ns is not None:
            sec, nsec = divmod(ts_ns, 1_000_000_000)
            struct.pack_into("!HIL", b, 34, sec >> 32, sec & 0xFFFFFFFF, nsec)
        return bytes(b)

    def execute(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, DueTransmission):
                if a.message_type == MT.SYNC:
                    token = self.send(self._patch(self._sync_template, a.sequence_id, a.log_message_interval), True, a.address)
                    if token is not None:
                        self.pending[token] = _PendingFollowUp(a.address, a.sequence_id, a.log_message_interval)
                else:
                    self.send(self._patch(self._ann_template, a.sequence_id, a.log_message_interval,
                                          time.time_ns()), False, a.address)
                self.sent_per_client[a.address] = self.sent_per_client.get(a.address, 0) + 1
            elif isinstance(a, SendSignaling):
                self.send_signaling(a)
            elif isinstance(a, NegotiationEvent):
                if self.log_grants:
                    self.emit(kind=a.kind, address=a.address,
                              message_type=None if a.message_type is None else MT(a.message_type).name,
                              detail=a.detail)

    def on_timer(self, now: int) -> None:
        self.execute(self.core.poll(now))

    def on_event(self, ev: Any, now: int) -> None:
        if isinstance(ev, TxTimestamp):
            p = self.pending.pop(ev.token, None)
            if p is not None:
                self.send(self._patch(self._fup_template, p.sequence_id, p.log, ev.tx_ts_ns), False, p.address)
            return
        if not isinstance(ev, Received):
            return
        self.stats["rx"] += 1
        try:
            msg = decode(ev.data)
        except CodecError:
            self.stats["bad_rx"] += 1
            return
        addr = source_ip(ev.source)
        if isinstance(msg, Signaling):
            tlvs = tlvs_from_codec(msg.tlvs)
            if tlvs:
                self.execute(self.core.handle_signaling(addr, pid_tuple(msg.header.source_port_identity), tlvs, now))
        elif isinstance(msg, DelayReq):
            if ev.rx_ts_ns is None:
                return
            grant = self.core.grant_of(addr, MT.DELAY_RESP)
            if grant is None or not self.core.may_respond(addr, MT.DELAY_RESP, now):
                self.stats["delay_req_without_grant"] = self.stats.get("delay_req_without_grant", 0) + 1
                return
            # the requester's correctionField is carried back in the Delay_Resp (11.3.2)
            hdr = Header(message_type=MT.DELAY_RESP, sequence_id=msg.header.sequence_id,
                         source_port_identity=self.port_identity, unicast=True,
                         log_message_interval=grant.log_inter_message_period,
                         correction_scaled_ns=msg.header.correction_scaled_ns)
            resp = DelayResp(hdr, Timestamp.from_ns(ev.rx_ts_ns), msg.header.source_port_identity)
            self.send(encode(resp), False, addr)

    def serve(self, stop_at_ns: int | None = None, status_interval_s: float = 0) -> None:
        self.open()
        next_status = time.monotonic_ns() + int(status_interval_s * 1e9) if status_interval_s else None

        def deadline() -> int | None:
            d = self.core.next_deadline_ns()
            if next_status is not None:
                d = next_status if d is None else min(d, next_status)
            return d

        def timer(now: int) -> None:
            nonlocal next_status
            if next_status is not None and now >= next_status:
                self.emit(kind="status", counters=self.core.counters, clients=self.core.client_count,
                          denials={k.name.lower(): v for k, v in self.core.denials.items()},
                          grants=records_as_dicts(self.core.grant_table(now)) if self.log_grants else None,
                          stats=self.stats)
                next_status = now + int(status_interval_s * 1e9)
            self.on_timer(now)

        try:
            self.run(deadline, timer, self.on_event, stop_at_ns)
        finally:
            self.execute(self.core.set_available(False, time.monotonic_ns()))
            self.close()


# --- client ------------------------------------------------------------------------------------

class ClientNode(_Node):
    def __init__(self, iface: str, servers: list[str], config: ClientConfig, *, ipv6: bool = False,
                 clock_identity: bytes = b"\x02\x00\x00\xff\xfe\x00\x00\x99", out: TextIO = sys.stdout) -> None:
        super().__init__(iface, ipv6, clock_identity, out)
        self.core = UnicastClient(servers, config)
        self.sync: dict[tuple[str, int], int] = {}  # (server, seq) -> t2
        self.fup: dict[tuple[str, int], int] = {}  # (server, seq) -> t1, Follow_Up read before its Sync
        self.t1_t2: tuple[str, int, int, int] | None = None  # server, t1 (+corr), t2, seq
        self.dreq_pending: dict[int, tuple[str, int]] = {}  # token -> (server, seq)
        self.dreq_t3: dict[tuple[str, int], int] = {}
        self.dreq_seq = 0
        self.mean_path_delay_ns: int | None = None

    def execute(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, SendSignaling):
                self.send_signaling(a)
            elif isinstance(a, ActiveServerChanged):
                self.emit(kind="active_server", old=a.old_address, new=a.new_address, reason=a.reason)
                self.mean_path_delay_ns = None  # a new path; the (absent) servo keeps its state
                self.t1_t2 = None
            elif isinstance(a, NegotiationEvent):
                self.emit(kind=a.kind, address=a.address,
                          message_type=None if a.message_type is None else MT(a.message_type).name,
                          detail=a.detail)

    def on_event(self, ev: Any, now: int) -> None:
        if isinstance(ev, TxTimestamp):
            p = self.dreq_pending.pop(ev.token, None)
            if p is not None:
                self.dreq_t3[p] = ev.tx_ts_ns
            return
        if not isinstance(ev, Received):
            return
        try:
            msg = decode(ev.data)
        except CodecError:
            self.stats["bad_rx"] += 1
            return
        addr = source_ip(ev.source)
        if isinstance(msg, Signaling):
            self.execute(self.core.handle_signaling(addr, pid_tuple(msg.header.source_port_identity),
                                                    tlvs_from_codec(msg.tlvs), now))
        elif isinstance(msg, Announce):
            q = msg.grandmaster_clock_quality
            info = AnnounceInfo(msg.grandmaster_priority1, q.clock_class, q.clock_accuracy,
                                q.offset_scaled_log_variance, msg.grandmaster_priority2,
                                bytes(msg.grandmaster_identity), msg.steps_removed,
                                pid_tuple(msg.header.source_port_identity), msg.header.log_message_interval)
            self.execute(self.core.handle_announce(addr, info, now))
        elif isinstance(msg, Sync):
            self.stats["sync_rx"] = self.stats.get("sync_rx", 0) + 1
            if not self.core.accepts(addr, MT.SYNC) or ev.rx_ts_ns is None:
                self.stats["sync_dropped"] = self.stats.get("sync_dropped", 0) + 1
                return
            if msg.header.two_step:
                key = (addr, msg.header.sequence_id)
                t1 = self.fup.pop(key, None)  # the Follow_Up may be read first (another socket)
                if t1 is not None:
                    self._have_sync(addr, t1, ev.rx_ts_ns)
                else:
                    self.sync[key] = ev.rx_ts_ns
                    if len(self.sync) > 64:
                        self.sync.pop(next(iter(self.sync)))
            else:
                t1 = msg.origin_timestamp.to_ns() + (msg.header.correction_scaled_ns >> 16)
                self._have_sync(addr, t1, ev.rx_ts_ns)
        elif isinstance(msg, FollowUp):
            if not self.core.accepts(addr, MT.SYNC):
                return
            key = (addr, msg.header.sequence_id)
            t1 = msg.precise_origin_timestamp.to_ns() + (msg.header.correction_scaled_ns >> 16)
            t2 = self.sync.pop(key, None)
            if t2 is None:
                self.fup[key] = t1
                if len(self.fup) > 64:
                    self.fup.pop(next(iter(self.fup)))
                return
            self._have_sync(addr, t1, t2)
        elif isinstance(msg, DelayResp):
            if not self.core.accepts(addr, MT.DELAY_RESP) or msg.requesting_port_identity != self.port_identity:
                return
            t3 = self.dreq_t3.pop((addr, msg.header.sequence_id), None)
            if t3 is None or self.t1_t2 is None or self.t1_t2[0] != addr:
                return
            t4 = msg.receive_timestamp.to_ns() - (msg.header.correction_scaled_ns >> 16)
            _, t1, t2 = self.t1_t2
            delay = ((t2 - t1) + (t4 - t3)) // 2
            first = self.mean_path_delay_ns is None
            self.mean_path_delay_ns = delay
            self.emit(kind="delay", server=addr, mean_path_delay_ns=delay)
            if first:  # the first offset of a new server needs no second Sync
                self.emit(kind="offset", server=addr, offset_ns=t2 - t1 - delay, mean_path_delay_ns=delay)

    def _have_sync(self, addr: str, t1: int, t2: int) -> None:
        self.t1_t2 = (addr, t1, t2)
        if self.mean_path_delay_ns is not None:
            self.emit(kind="offset", server=addr, offset_ns=t2 - t1 - self.mean_path_delay_ns,
                      mean_path_delay_ns=self.mean_path_delay_ns)
        if self.core.granted(addr, MT.DELAY_RESP):
            seq = self.dreq_seq
            self.dreq_seq = (seq + 1) & 0xFFFF
            req = DelayReq(self.header(0x1, seq, 0x7F), Timestamp())
            token = self.send(encode(req), True, addr)
            if token is not None:
                self.dreq_pending[token] = (addr, seq)

    def serve(self, stop_at_ns: int | None = None) -> None:
        self.open()
        try:
            self.execute(self.core.start(time.monotonic_ns()))
            self.run(self.core.next_deadline_ns, lambda now: self.execute(self.core.handle_timer(now)),
                     self.on_event, stop_at_ns)
        finally:
            self.execute(self.core.cancel_all(time.monotonic_ns()))
            self.emit(kind="stats", counters=self.core.counters, stats=self.stats)
            self.close()


# --- entry point -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.runtime.unicast_node")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--iface", required=True)
    s.add_argument("--ipv6", action="store_true")
    s.add_argument("--priority1", type=int, default=128)
    s.add_argument("--clock-identity", default="020000fffe000001")
    s.add_argument("--min-duration", type=int, default=60)
    s.add_argument("--max-duration", type=int, default=1000)
    s.add_argument("--max-clients", type=int, default=10_000)
    s.add_argument("--min-log-sync", type=int, default=-7)
    s.add_argument("--allow", action="append", default=[])
    s.add_argument("--status-interval", type=float, default=0)
    s.add_argument("--quiet", action="store_true", help="no per-grant event lines (load tests)")
    s.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: on SIGTERM)")
    c = sub.add_parser("client")
    c.add_argument("--iface", required=True)
    c.add_argument("--ipv6", action="store_true")
    c.add_argument("--server", action="append", required=True)
    c.add_argument("--req-duration", type=int, default=60)
    c.add_argument("--log-sync", type=int, default=0)
    c.add_argument("--log-announce", type=int, default=0)
    c.add_argument("--log-query", type=int, default=0)
    c.add_argument("--announce-timeout", type=int, default=3)
    c.add_argument("--non-revertive", action="store_true")
    c.add_argument("--duration", type=float, default=0)
    args = p.parse_args(argv)

    node: ServerNode | ClientNode
    if args.role == "server":
        mins = dict(ServerPolicy().min_log_inter_message_period)
        mins[int(MT.SYNC)] = args.min_log_sync
        policy = ServerPolicy(min_duration_s=args.min_duration, max_duration_s=args.max_duration,
                              max_clients=args.max_clients, allow=tuple(args.allow),
                              min_log_inter_message_period=tuple(mins.items()))
        node = ServerNode(args.iface, policy, ipv6=args.ipv6, clock_identity=bytes.fromhex(args.clock_identity),
                          priority1=args.priority1, log_grants=not args.quiet)
    else:
        cfg = ClientConfig(unicast_req_duration_s=args.req_duration, log_query_interval=args.log_query,
                           log_announce_interval=args.log_announce, log_sync_interval=args.log_sync,
                           log_min_delay_req_interval=args.log_sync, announce_receipt_timeout=args.announce_timeout,
                           revertive=not args.non_revertive)
        node = ClientNode(args.iface, args.server, cfg, ipv6=args.ipv6)

    def stop(*_: object) -> None:
        node.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stop_at = time.monotonic_ns() + int(args.duration * 1e9) if args.duration else None
    if isinstance(node, ServerNode):
        node.serve(stop_at, status_interval_s=getattr(args, "status_interval", 0))
    else:
        node.serve(stop_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
