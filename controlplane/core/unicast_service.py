"""1588 ATR inside a PTP instance: the unicast server and client composed with the core's ``Clock``.

Sans-IO. ``UnicastService`` wraps the runtime's node (the ``ClockNode`` over a ``Clock``) and has the
same entry points (``start``, ``handle_message``, ``handle_tx_timestamp``, ``handle_timer``,
``handle_fault``, ``next_deadline_ns``); attributes it does not define are read from the wrapped
node (``service.clock`` is the core's Clock). It returns only the core's own actions
(``SendMessage`` ...); negotiation facts go to the injected ``observer`` and the bounded ``events``
history, never into the action stream.

Server ports (``unicast_listen 1``): one ``UnicastServer`` per port, fed every Signaling (through
``Clock.signaling_handler``). Per grant it sends Announce (built from the clock's data sets: the
grandmaster's identity, clockQuality, priorities and time properties, our currentDS.stepsRemoved —
so a boundary clock slaved on another port serves its grandmaster), two-step Sync (+ Follow_Up
with the TX stamp of that Sync) or one-step Sync, to the client's address with the unicast flag
and the granted logMessageInterval and the grant's own sequenceId pool. Grants are served while
the port is MASTER; a port that becomes SLAVE/PASSIVE/FAULTY/DISABLED cancels its grants
(``set_available(False)``). A unicast Delay_Req is answered only while its sender holds a
Delay_Resp grant. ``inhibit_multicast_service 1`` drops the port's multicast Announce/Sync.

Client ports (``unicast_master_table N``): one ``UnicastClient`` per port, comparing servers with the
clock's own data-set comparator. Only the selected server's Announces reach the core's BMCA (so the
core's parent is always the server the client negotiated Sync with); Sync/Follow_Up/Delay_Resp
from any other address are dropped; the core's Delay_Req goes unicast to the selected server.
When the client switches server, the other servers' foreign-master records are dropped and the new
server's last Announces (kept with their arrival times) are replayed, so the BMCA moves at once;
the servo keeps its frequency (the core never steps on a parent change with step_threshold 0).
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
from typing import Any, Callable, Iterable, Mapping, Sequence

from controlplane.codec.enums import MessageType, PortState
from controlplane.codec.messages import Announce, DelayReq, DelayResp, FollowUp, Signaling, Sync
from controlplane.codec.tlv import (
    AcknowledgeCancelUnicastTransmissionTlv,
    CancelUnicastTransmissionTlv,
    GrantUnicastTransmissionTlv,
    RequestUnicastTransmissionTlv,
)
from controlplane.codec.types import ClockQuality, PortIdentity, Timestamp
from controlplane.core import bmca
from controlplane.core.actions import Dest, SendMessage, StateChanged
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
from controlplane.core.unicast_server import UnicastServer

__all__ = ["UnicastService", "GrantRow", "tlvs_from_codec", "tlv_to_codec", "address_of"]

WILDCARD = PortIdentity(b"\xff" * 8, 0xFFFF)
TOKEN_BASE = 1 << 48  # our TX tokens; the Clock's count up from 1
MAX_PENDING_FOLLOW_UPS = 1 << 16  # two-step Syncs waiting for their TX stamp
POLL_BATCH = 256  # due Syncs/Announces per timer call: the runtime reads TX stamps between batches
_SERVING = (PortState.MASTER,)
_AVAILABLE = (PortState.INITIALIZING, PortState.LISTENING, PortState.PRE_MASTER, PortState.MASTER)
_MULTICAST_SERVICE = (Announce, Sync, FollowUp)


# --- codec <-> core conversion ----------------------------------------------------------------

def tlvs_from_codec(tlvs: Iterable[Any]) -> list[NegotiationTlv]:
    """The negotiation TLVs of a Signaling message (others are skipped)."""
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


def address_of(source: object) -> str | None:
    """The IP address (text, canonical) of a runtime source address; None for L2/unknown sources."""
    if isinstance(source, tuple) and source:
        source = source[0]
    if not isinstance(source, str):
        return None
    try:
        return str(ipaddress.ip_address(source.split("%", 1)[0]))
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class GrantRow:
    """One grant, as the management/gRPC layers read it.

    role "SERVER": we grant ``message_type`` to ``address``; "CLIENT": ``address`` grants it to us.
    """

    port: int
    port_name: str
    role: str
    address: str
    message_type: int
    log_inter_message_period: int
    duration_s: int
    remaining_ns: int
    renewal_invited: bool
    peer_port_identity: tuple[bytes, int] | None
    selected: bool = False  # CLIENT rows: this server is the one we synchronise to


@dataclasses.dataclass(slots=True)
class _PendingFollowUp:
    port: int
    address: str
    sequence_id: int
    log_interval: int


class UnicastService:
    def __init__(
        self,
        inner: Any,
        clock: Any,
        *,
        servers: Mapping[int, ServerPolicy] | None = None,
        clients: Mapping[int, tuple[Sequence[str], ClientConfig]] | None = None,
        observer: Callable[[int, NegotiationEvent], None] | None = None,
        history: int = 512,
        poll_batch: int | None = POLL_BATCH,
    ) -> None:
        self.inner = inner
        self.poll_batch = poll_batch
        self.clock = clock
        self.observer = observer
        self.servers: dict[int, UnicastServer] = {pn: UnicastServer(p) for pn, p in (servers or {}).items()}
        self.clients: dict[int, UnicastClient] = {}
        for pn, (masters, cfg) in (clients or {}).items():
            if pn in self.servers:
                pass  # a port may both serve and consume (ptp4l allows it); each role keeps its own state
            self.clients[pn] = UnicastClient(masters, cfg, compare=self._comparator(pn))
        for pn in list(self.servers) + list(self.clients):
            clock.port(pn)  # CoreUsageError for a port the clock does not have
        self.inhibit_multicast = {p.number for p in clock.ports
                                  if getattr(p.cfg, "inhibit_multicast_service", False)
                                  and (p.number in self.servers or p.number in self.clients)}
        self.events: collections.deque[tuple[int, NegotiationEvent]] = collections.deque(maxlen=history)
        self.counters: dict[str, int] = collections.defaultdict(int)
        self._signaling_seq: dict[int, int] = {}
        self._next_token = TOKEN_BASE
        self._pending: dict[int, _PendingFollowUp] = {}
        self._announces: dict[tuple[int, str], collections.deque[tuple[Announce, int, object]]] = {}
        self._available: dict[int, bool] = {pn: True for pn in self.servers}
        self._replayed = False
        clock.signaling_handler = self._on_signaling
        clock.unicast = self  # readers (management, gRPC backend) find the grant tables here

    def __getattr__(self, name: str) -> Any:  # read-through to the wrapped node (e.g. .clock of ClockNode)
        return getattr(self.__dict__["inner"], name)

    # ------------------------------------------------------------------------------------------
    # node entry points
    # ------------------------------------------------------------------------------------------
    def start(self, now_ns: int) -> list[Any]:
        out = self._post(self.inner.start(now_ns), now_ns)
        for pn, client in self.clients.items():
            out += self._convert(pn, client.start(now_ns), now_ns)
        return out

    def next_deadline_ns(self) -> int | None:
        ds = [self.inner.next_deadline_ns()]
        ds += [s.next_deadline_ns() for s in self.servers.values()]
        ds += [c.next_deadline_ns() for c in self.clients.values()]
        present = [d for d in ds if d is not None]
        return min(present) if present else None

    def handle_timer(self, now_ns: int) -> list[Any]:
        out = self._post(self.inner.handle_timer(now_ns), now_ns)
        for pn, server in self.servers.items():
            d = server.next_deadline_ns()
            if d is not None and d <= now_ns:
                out += self._convert(pn, server.poll(now_ns, self.poll_batch), now_ns)
        for pn, client in self.clients.items():
            d = client.next_deadline_ns()
            if d is not None and d <= now_ns:
                out += self._convert(pn, client.handle_timer(now_ns), now_ns)
        return out

    def handle_tx_timestamp(self, token: int, tx_ts_ns: int, now_ns: int) -> list[Any]:
        if token < TOKEN_BASE:
            return self._post(self.inner.handle_tx_timestamp(token, tx_ts_ns, now_ns), now_ns)
        p = self._pending.pop(token, None)
        if p is None:
            return []
        port = self.clock.port(p.port)
        if port.state not in _SERVING:
            return []
        fup = FollowUp(header=port.header(MessageType.FOLLOW_UP, p.sequence_id, p.log_interval, unicast=True),
                       precise_origin_timestamp=Timestamp.from_ns(max(0, tx_ts_ns)))
        self.counters["follow_up_tx"] += 1
        return [SendMessage(p.port, fup, False, p.address)]

    def handle_fault(self, port: int, reason: str, now_ns: int) -> list[Any]:
        return self._post(self.inner.handle_fault(port, reason, now_ns), now_ns)

    def cancel_unreachable(self, port: int, address: str, now_ns: int) -> list[Any]:
        """The runtime found ``address`` unreachable from ``port`` for seconds (every send to it held:
        no ARP/NDP answer - typically the forged source of a REQUEST): cancel every grant that port's
        server holds for it (CANCEL_UNICAST_TRANSMISSION, as a grantor may; a client that comes back
        requests again), counted ``canceled_unreachable`` per grant. Nothing to do (no server on the
        port, no grant, not an IP address) returns []."""
        server = self.servers.get(port)
        addr = address_of(address)
        if server is None or addr is None:
            return []
        out: list[Any] = []
        for mtype in sorted(server.policy.message_types):  # O(1) lookups, not a scan of the grant table
            if server.grant_of(addr, mtype) is not None:
                self.counters["canceled_unreachable"] += 1
                out += self._convert(port, server.cancel(addr, mtype, now_ns), now_ns)
        return out

    def handle_message(self, port: int, message: Any, rx_ts_ns: int | None, now_ns: int, source: object) -> list[Any]:
        client = self.clients.get(port)
        if client is not None:
            if isinstance(message, Announce):
                return self._client_announce(port, client, message, rx_ts_ns, now_ns, source)
            mtype = {Sync: MT.SYNC, FollowUp: MT.SYNC, DelayResp: MT.DELAY_RESP}.get(type(message))
            if mtype is not None:
                addr = address_of(source)
                if addr is None or not client.accepts(addr, int(mtype)):
                    self.counters["client_rx_not_from_selected"] += 1
                    return []
        server = self.servers.get(port)
        if server is not None and isinstance(message, DelayReq) and message.header.unicast:
            addr = address_of(source)
            if addr is None or not server.may_respond(addr, int(MT.DELAY_RESP), now_ns):
                self.counters["delay_req_without_grant"] += 1
                return []
        return self._post(self.inner.handle_message(port, message, rx_ts_ns, now_ns, source), now_ns)

    # ------------------------------------------------------------------------------------------
    # grant tables (management / gRPC)
    # ------------------------------------------------------------------------------------------
    def grant_rows(self, now_ns: int) -> list[GrantRow]:
        rows: list[GrantRow] = []
        for pn, server in self.servers.items():
            name = self.clock.port(pn).name
            for r in server.grant_table(now_ns):
                rows.append(GrantRow(pn, name, "SERVER", r.address, r.message_type, r.log_inter_message_period,
                                     r.duration_s, r.remaining_ns, r.renewal_invited, r.port_identity))
        for pn, client in self.clients.items():
            name = self.clock.port(pn).name
            for m in client.master_table(now_ns):
                for mtype, log, remaining in m.granted:
                    duration = client.grant_duration_s(m.address, mtype) or 0
                    rows.append(GrantRow(pn, name, "CLIENT", m.address, mtype, log, duration, remaining,
                                         m.renewal_invited, m.port_identity, m.selected))
        return rows

    def status(self, now_ns: int) -> dict[str, Any]:
        """Counters and tables as plain data (logs, JSON)."""
        return {
            "servers": {self.clock.port(pn).name: {"counters": dict(s.counters), "clients": s.client_count,
                                                   "denials": {k.name.lower(): v for k, v in s.denials.items()}}
                        for pn, s in self.servers.items()},
            "clients": {self.clock.port(pn).name: {"counters": dict(c.counters), "selected": c.selected}
                        for pn, c in self.clients.items()},
            "service": dict(self.counters),
        }

    # ------------------------------------------------------------------------------------------
    # internals
    # ------------------------------------------------------------------------------------------
    def _comparator(self, pn: int) -> Callable[[AnnounceInfo, AnnounceInfo], int]:
        def ds(a: AnnounceInfo) -> bmca.ComparisonDataset:
            q = ClockQuality(a.grandmaster_clock_class, a.grandmaster_clock_accuracy, a.grandmaster_offset_scaled_log_variance)
            return bmca.ComparisonDataset(a.grandmaster_priority1, bytes(a.grandmaster_identity), q, a.grandmaster_priority2,
                                          a.steps_removed, PortIdentity(*a.source_port_identity),
                                          self.clock.port(pn).identity)

        def compare(a: AnnounceInfo, b: AnnounceInfo) -> int:
            r = self.clock.comparator(ds(a), ds(b))
            return -1 if r.a_better else (1 if r.b_better else 0)

        return compare

    def _note(self, pn: int, ev: NegotiationEvent) -> None:
        self.events.append((pn, ev))
        self.counters[f"event_{ev.kind}"] += 1
        if self.observer is not None:
            self.observer(pn, ev)

    def _on_signaling(self, clock: Any, port: Any, msg: Signaling, now_ns: int, src: object) -> list[Any]:
        addr = address_of(src)
        tlvs = tlvs_from_codec(msg.tlvs)
        if addr is None or not tlvs:
            self.counters["signaling_ignored"] += 1
            return []
        pid = (bytes(msg.header.source_port_identity.clock_identity), msg.header.source_port_identity.port_number)
        out: list[Any] = []
        server, client = self.servers.get(port.number), self.clients.get(port.number)
        requests = [t for t in tlvs if isinstance(t, Request)]
        answers = [t for t in tlvs if not isinstance(t, Request)]
        if server is not None and (requests or client is None):
            out += self._convert(port.number, server.handle_signaling(addr, pid, tlvs if client is None else requests, now_ns), now_ns)
        if client is not None and (answers or server is None):
            out += self._convert(port.number, client.handle_signaling(addr, pid, tlvs if server is None else answers, now_ns), now_ns)
        if server is None and client is None:
            self.counters["signaling_on_non_unicast_port"] += 1
        return out

    def _client_announce(self, pn: int, client: UnicastClient, msg: Announce, rx_ts_ns: int | None, now_ns: int,
                         source: object) -> list[Any]:
        addr = address_of(source)
        clock = self.clock
        hdr = msg.header
        if (addr is None or not client.in_table(addr) or hdr.domain_number != clock.default_ds.domain_number
                or bytes(hdr.source_port_identity.clock_identity) == clock.clock_identity):
            self.counters["announce_not_from_table"] += 1
            return []
        hist = self._announces.setdefault((pn, addr), collections.deque(maxlen=2))
        hist.append((msg, now_ns, source))
        info = AnnounceInfo(msg.grandmaster_priority1, msg.grandmaster_clock_quality.clock_class,
                            msg.grandmaster_clock_quality.clock_accuracy,
                            msg.grandmaster_clock_quality.offset_scaled_log_variance, msg.grandmaster_priority2,
                            bytes(msg.grandmaster_identity), msg.steps_removed,
                            (bytes(hdr.source_port_identity.clock_identity), hdr.source_port_identity.port_number),
                            hdr.log_message_interval)
        self._replayed = False
        out = self._convert(pn, client.handle_announce(addr, info, now_ns), now_ns)
        if client.selected == addr and not self._replayed:
            out += self._post(self.inner.handle_message(pn, msg, rx_ts_ns, now_ns, source), now_ns)
        return out

    def _switch(self, pn: int, ev: ActiveServerChanged, now_ns: int) -> list[Any]:
        """The client changed server: make the core's BMCA see that server only, now."""
        keep = PortIdentity(*ev.port_identity) if ev.port_identity is not None else None
        self.clock.forget_foreign_masters(pn, keep=keep)
        out: list[Any] = []
        if ev.new_address is not None:
            for msg, t, src in list(self._announces.get((pn, ev.new_address), ())):
                out += self.inner.handle_message(pn, msg, None, t, src)
            self._replayed = True
        out += self.clock.run_state_decision(now_ns)
        self.counters["server_switches"] += 1
        return self._post(out, now_ns)

    def _convert(self, pn: int, actions: Iterable[Any], now_ns: int) -> list[Any]:
        out: list[Any] = []
        for a in actions:
            if isinstance(a, SendSignaling):
                out.append(self._signaling(pn, a))
            elif isinstance(a, DueTransmission):
                out += self._transmit(pn, a)
            elif isinstance(a, ActiveServerChanged):
                self._note(pn, NegotiationEvent("active_server", a.new_address or "-", None,
                                                f"was {a.old_address or '-'}: {a.reason}", now_ns))
                out += self._switch(pn, a, now_ns)
            elif isinstance(a, NegotiationEvent):
                self._note(pn, a)
        return out

    def _signaling(self, pn: int, a: SendSignaling) -> SendMessage:
        port = self.clock.port(pn)
        seq = self._signaling_seq.get(pn, 0)
        self._signaling_seq[pn] = (seq + 1) & 0xFFFF
        target = WILDCARD if a.target_port_identity is None else PortIdentity(*a.target_port_identity)
        msg = Signaling(port.header(MessageType.SIGNALING, seq, 0x7F, unicast=True), target,
                        tuple(tlv_to_codec(t) for t in a.tlvs))
        self.counters["signaling_tx"] += 1
        return SendMessage(pn, msg, False, a.address)

    def _transmit(self, pn: int, a: DueTransmission) -> list[Any]:
        port = self.clock.port(pn)
        if port.state not in _SERVING:
            self.counters["due_while_not_master"] += 1
            return []
        if a.message_type == MT.ANNOUNCE:
            ann = port.build_announce(self.clock, self.clock.cfg.path_trace_enabled)
            hdr = dataclasses.replace(ann.header, sequence_id=a.sequence_id, log_message_interval=a.log_message_interval,
                                      unicast=True)
            self.counters["announce_tx"] += 1
            return [SendMessage(pn, dataclasses.replace(ann, header=hdr), False, a.address)]
        if a.message_type == MT.SYNC:
            two_step = bool(self.clock.default_ds.two_step_flag)
            sync = Sync(header=port.header(MessageType.SYNC, a.sequence_id, a.log_message_interval,
                                           two_step=two_step, unicast=True))
            self.counters["sync_tx"] += 1
            if not two_step:
                return [SendMessage(pn, sync, True, a.address, None, one_step=True)]
            token = self._next_token
            self._next_token += 1
            self._pending[token] = _PendingFollowUp(pn, a.address, a.sequence_id, a.log_message_interval)
            while len(self._pending) > MAX_PENDING_FOLLOW_UPS:  # stamps that never came back: oldest first
                del self._pending[next(iter(self._pending))]
                self.counters["follow_up_stamp_lost"] += 1
            return [SendMessage(pn, sync, True, a.address, token)]
        return []

    def _post(self, actions: list[Any], now_ns: int) -> list[Any]:
        """The core's actions, adjusted for unicast ports."""
        out: list[Any] = []
        for a in actions:
            if isinstance(a, SendMessage) and (a.port in self.clients or a.port in self.servers):
                multicast = a.dest in (Dest.PRIMARY, Dest.PDELAY, None)
                msg = a.message
                if multicast and isinstance(msg, _MULTICAST_SERVICE) and a.port in self.inhibit_multicast:
                    self.counters["multicast_inhibited"] += 1
                    continue
                client = self.clients.get(a.port)
                if client is not None and isinstance(msg, DelayReq) and multicast:
                    if client.selected is None:
                        self.counters["delay_req_no_server"] += 1
                        continue
                    hdr = dataclasses.replace(msg.header, unicast=True)
                    a = dataclasses.replace(a, message=dataclasses.replace(msg, header=hdr), dest=client.selected)
                server = self.servers.get(a.port)
                if server is not None and isinstance(msg, DelayResp) and not multicast:
                    addr = address_of(a.dest)
                    grant = server.grant_of(addr, int(MT.DELAY_RESP)) if addr else None
                    if grant is not None:
                        hdr = dataclasses.replace(msg.header, log_message_interval=grant.log_inter_message_period,
                                                  unicast=True)
                        a = dataclasses.replace(a, message=dataclasses.replace(msg, header=hdr))
                out.append(a)
            elif isinstance(a, StateChanged) and a.port in self.servers:
                out.append(a)
                available = a.new in _AVAILABLE
                if available != self._available[a.port]:
                    self._available[a.port] = available
                    out += self._convert(a.port, self.servers[a.port].set_available(available, now_ns), now_ns)
            else:
                out.append(a)
        return out
