"""Unicast negotiation client (grantee) with a unicast master table of one or more servers.

Sans-IO, IEEE 1588-2008 §16.1 and §17.5 (unicast discovery). The daemon composes one
``UnicastClient`` per port that has a unicast master table and calls:

* ``start(now_ns)`` once, then ``handle_timer(now_ns)`` whenever ``next_deadline_ns()`` passes;
* ``handle_signaling(address, source_port_identity, tlvs, now_ns)`` for every Signaling received
  (GRANT, CANCEL, ACKNOWLEDGE_CANCEL TLVs converted from the codec);
* ``handle_announce(address, announce, now_ns)`` for every Announce received from a table entry;
* ``accepts(address, message_type)`` to filter Sync/Follow_Up/Delay_Resp: only the active server's
  are fed to the delay/servo machinery;
* ``cancel_all(now_ns)`` on shutdown.

Behaviour:

* Announce is requested from every server; Sync and Delay_Resp only from the one the BMCA over
  their Announces selects (``compare`` is injected: the core's dataset comparator; the default
  compares the grandmaster vector of §9.3.4 then stepsRemoved and the sender's identity).
* Every grant is renewed at ``renew_numerator/renew_denominator`` (3/4) of its granted duration;
  until an answer arrives the request is repeated every query interval (2^logQueryInterval s),
  which is also the retry interval for an ungranted message type.
* A denial (durationField 0) doubles that message type's retry interval up to ``max_backoff_s``
  and requests one step lower a rate (logInterMessagePeriod + 1) next time, up to
  ``max_log_inter_message_period``. A server that denied or cancelled Sync/Delay_Resp is held off
  the selection until its back-off ends when another server is usable.
* A server stops being a candidate when its Announce times out (announceReceiptTimeout Announce
  intervals), its Announce grant expires unrenewed or is cancelled. The client then selects the
  next best server, cancels Sync/Delay_Resp with the old one and requests them from the new one:
  one ``ActiveServerChanged`` action (never a clock step: the servo keeps running).
* A grant with R (renewalInvited) clear on the active server makes the client pre-negotiate with
  another qualified server before the grant ends, when there is one.
* With a single server the client keeps re-negotiating (with back-off) until it answers again.
* Every negotiation fact is a ``NegotiationEvent`` and is counted in ``counters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from controlplane.core.unicast import (
    NS_PER_S,
    AcknowledgeCancel,
    ActiveServerChanged,
    Cancel,
    Grant,
    NegotiationEvent,
    NegotiationTlv,
    Request,
    SendSignaling,
    UnicastAction,
    UnicastConfigError,
    UnicastMessageType,
    UnicastUsageError,
    log_interval_ns,
    normalize_address,
)

ANN = int(UnicastMessageType.ANNOUNCE)
SYNC = int(UnicastMessageType.SYNC)
DRESP = int(UnicastMessageType.DELAY_RESP)


@dataclass(frozen=True, slots=True)
class AnnounceInfo:
    """What the BMCA needs from an Announce (§9.3.4 data set comparison fields)."""

    grandmaster_priority1: int
    grandmaster_clock_class: int
    grandmaster_clock_accuracy: int
    grandmaster_offset_scaled_log_variance: int
    grandmaster_priority2: int
    grandmaster_identity: bytes
    steps_removed: int
    source_port_identity: tuple[bytes, int]
    log_message_interval: int = 0


def compare_announce(a: AnnounceInfo, b: AnnounceInfo) -> int:
    """Negative if ``a`` is better, positive if ``b`` is better, 0 if equal (simplified §9.3.4)."""
    ka = (a.grandmaster_priority1, a.grandmaster_clock_class, a.grandmaster_clock_accuracy,
          a.grandmaster_offset_scaled_log_variance, a.grandmaster_priority2, a.grandmaster_identity,
          a.steps_removed, a.source_port_identity)
    kb = (b.grandmaster_priority1, b.grandmaster_clock_class, b.grandmaster_clock_accuracy,
          b.grandmaster_offset_scaled_log_variance, b.grandmaster_priority2, b.grandmaster_identity,
          b.steps_removed, b.source_port_identity)
    return (ka > kb) - (ka < kb)


@dataclass(frozen=True)
class ClientConfig:
    """Client options; names mirror ptp4l's (unicast_req_duration, logQueryInterval, ...)."""

    unicast_req_duration_s: int = 300
    log_query_interval: int = 0
    log_announce_interval: int = 1
    log_sync_interval: int = 0
    log_min_delay_req_interval: int = 0
    announce_receipt_timeout: int = 3
    renew_numerator: int = 3
    renew_denominator: int = 4
    max_backoff_s: int = 64
    max_log_inter_message_period: int = 4
    revertive: bool = True
    delay_resp: bool = True  # E2E: also negotiate Delay_Resp with the active server

    def __post_init__(self) -> None:
        if not 1 <= self.unicast_req_duration_s <= 0xFFFFFFFF:
            raise UnicastConfigError(f"unicast_req_duration {self.unicast_req_duration_s} out of range")
        for name in ("log_query_interval", "log_announce_interval", "log_sync_interval",
                     "log_min_delay_req_interval", "max_log_inter_message_period"):
            value = getattr(self, name)
            if not -10 <= value <= 10:
                raise UnicastConfigError(f"{name} {value} outside -10..10")
        if self.announce_receipt_timeout < 2:
            raise UnicastConfigError("announceReceiptTimeout must be >= 2")
        if not 0 < self.renew_numerator < self.renew_denominator:
            raise UnicastConfigError("renewal fraction must be in (0, 1)")
        if self.max_backoff_s < 1:
            raise UnicastConfigError("max_backoff_s must be >= 1")


@dataclass(slots=True)
class _ClientGrant:
    log_inter_message_period: int
    duration_s: int
    granted_at_ns: int
    expires_ns: int
    renewal_invited: bool


@dataclass(slots=True)
class _Master:
    address: str
    port_identity: tuple[bytes, int] | None = None
    grants: dict[int, _ClientGrant] = field(default_factory=dict)
    next_request_ns: dict[int, int] = field(default_factory=dict)
    backoff_ns: dict[int, int] = field(default_factory=dict)
    log_period: dict[int, int] = field(default_factory=dict)
    holdoff_until_ns: int = 0  # denied/cancelled Sync or Delay_Resp: not preferred until then
    announce: AnnounceInfo | None = None
    last_announce_ns: int | None = None


@dataclass(frozen=True, slots=True)
class MasterRecord:
    """One row of the unicast master table, as data."""

    address: str
    port_identity: tuple[bytes, int] | None
    selected: bool
    qualified: bool
    granted: tuple[tuple[int, int, int], ...]  # (message_type, logInterMessagePeriod, remaining_ns)
    renewal_invited: bool
    last_announce_ns: int | None


class UnicastClient:
    def __init__(
        self,
        masters: Sequence[str],
        config: ClientConfig | None = None,
        compare: Callable[[AnnounceInfo, AnnounceInfo], int] = compare_announce,
    ) -> None:
        if not masters:
            raise UnicastConfigError("the unicast master table is empty")
        self.config = config or ClientConfig()
        self._compare = compare
        self._masters: dict[str, _Master] = {}
        for address in masters:
            addr = normalize_address(address)
            if addr in self._masters:
                raise UnicastConfigError(f"duplicate unicast master {addr}")
            m = _Master(addr)
            c = self.config
            m.log_period = {ANN: c.log_announce_interval, SYNC: c.log_sync_interval,
                            DRESP: c.log_min_delay_req_interval}
            self._masters[addr] = m
        self.selected: str | None = None
        self._started = False
        self.counters: dict[str, int] = {
            k: 0 for k in ("requests_tx", "granted", "renewed", "denied", "expired", "canceled_by_server",
                           "canceled_by_client", "ack_cancel_rx", "announce_timeout", "switches",
                           "rogue", "ignored_tlvs")
        }

    # --- helpers ------------------------------------------------------------------------------

    @property
    def _query_ns(self) -> int:
        return log_interval_ns(self.config.log_query_interval)

    def _wanted(self, m: _Master) -> tuple[int, ...]:
        if m.address == self.selected:
            return (ANN, SYNC, DRESP) if self.config.delay_resp else (ANN, SYNC)
        return (ANN,)

    def _qualified(self, m: _Master) -> bool:
        return m.announce is not None and ANN in m.grants

    def _event(self, out: list[UnicastAction], kind: str, addr: str, mtype: int | None, now_ns: int,
               detail: str = "") -> None:
        out.append(NegotiationEvent(kind, addr, mtype, detail, now_ns))

    def _master(self, address: str) -> _Master | None:
        try:
            return self._masters.get(normalize_address(address))
        except UnicastUsageError:
            return None

    # --- inputs -------------------------------------------------------------------------------

    def start(self, now_ns: int) -> list[UnicastAction]:
        if self._started:
            raise UnicastUsageError("UnicastClient.start called twice")
        self._started = True
        for m in self._masters.values():
            m.next_request_ns[ANN] = now_ns
        return self.handle_timer(now_ns)

    def accepts(self, address: str, message_type: int) -> bool:
        """Sync / Follow_Up / Delay_Resp are used only from the active server."""
        m = self._master(address)
        if m is None:
            return False
        if message_type == ANN:
            return True
        return m.address == self.selected

    def handle_announce(self, address: str, announce: AnnounceInfo, now_ns: int) -> list[UnicastAction]:
        m = self._master(address)
        out: list[UnicastAction] = []
        if m is None:
            self.counters["rogue"] += 1
            return out
        first = m.announce is None
        previous = m.announce
        m.announce = announce
        m.port_identity = announce.source_port_identity
        m.last_announce_ns = now_ns
        if first:
            self._event(out, "announce_qualified", m.address, ANN, now_ns)
            out.extend(self._reselect(now_ns, "announce"))
        elif announce != previous:
            out.extend(self._reselect(now_ns, "announce changed"))
        return out

    def handle_signaling(
        self,
        address: str,
        source_port_identity: tuple[bytes, int] | None,
        tlvs: Sequence[NegotiationTlv],
        now_ns: int,
    ) -> list[UnicastAction]:
        out: list[UnicastAction] = []
        m = self._master(address)
        if m is None:
            self.counters["rogue"] += 1
            self._event(out, "rogue_signaling", address, None, now_ns)
            return out
        acks: list[NegotiationTlv] = []
        cancels_back: list[NegotiationTlv] = []
        reselect = False
        for tlv in tlvs:
            if isinstance(tlv, Grant):
                r, back = self._on_grant(m, source_port_identity, tlv, now_ns, out)
                reselect |= r
                cancels_back.extend(back)
            elif isinstance(tlv, Cancel):
                acks.append(AcknowledgeCancel(tlv.message_type, tlv.maintain_request, tlv.maintain_grant))
                if tlv.maintain_grant:
                    continue
                if tlv.message_type in (ANN, SYNC, DRESP):
                    m.grants.pop(tlv.message_type, None)
                    self.counters["canceled_by_server"] += 1
                    self._event(out, "canceled_by_server", m.address, tlv.message_type, now_ns)
                    m.next_request_ns[tlv.message_type] = now_ns + self._query_ns
                    if tlv.message_type in (SYNC, DRESP):
                        m.holdoff_until_ns = now_ns + self._backoff(m, tlv.message_type)
                    reselect = True
            elif isinstance(tlv, AcknowledgeCancel):
                self.counters["ack_cancel_rx"] += 1
                self._event(out, "ack_cancel_rx", m.address, tlv.message_type, now_ns)
            else:
                self.counters["ignored_tlvs"] += 1
        if acks or cancels_back:
            out.insert(0, SendSignaling(m.address, m.port_identity, tuple(acks + cancels_back)))
        if reselect:
            out.extend(self._reselect(now_ns, "negotiation"))
        return out

    def _backoff(self, m: _Master, mtype: int) -> int:
        cur = m.backoff_ns.get(mtype, self._query_ns)
        nxt = min(cur * 2, self.config.max_backoff_s * NS_PER_S)
        m.backoff_ns[mtype] = nxt
        return nxt

    def _on_grant(self, m: _Master, pid: tuple[bytes, int] | None, g: Grant, now_ns: int,
                  out: list[UnicastAction]) -> tuple[bool, list[NegotiationTlv]]:
        mtype = g.message_type
        if mtype not in (ANN, SYNC, DRESP):
            self.counters["ignored_tlvs"] += 1
            return False, []
        if g.denied:
            self.counters["denied"] += 1
            delay = self._backoff(m, mtype)
            m.next_request_ns[mtype] = now_ns + delay
            m.log_period[mtype] = min(
                max(m.log_period[mtype], g.log_inter_message_period) + 1,
                self.config.max_log_inter_message_period,
            )
            self._event(out, "denied", m.address, mtype, now_ns,
                        f"retry in {delay // NS_PER_S} s at log period {m.log_period[mtype]}")
            if mtype in (SYNC, DRESP):
                m.holdoff_until_ns = now_ns + delay
                return True, []
            return mtype == ANN, []
        if pid is not None:
            m.port_identity = pid
        if mtype != ANN and m.address != self.selected:
            # A late grant for a server we no longer use: give it back.
            self._event(out, "unwanted_grant", m.address, mtype, now_ns)
            self.counters["canceled_by_client"] += 1
            return False, [Cancel(mtype)]
        renewed = mtype in m.grants
        m.grants[mtype] = _ClientGrant(
            g.log_inter_message_period, g.duration_s, now_ns, now_ns + g.duration_s * NS_PER_S,
            g.renewal_invited,
        )
        m.log_period[mtype] = g.log_inter_message_period
        m.backoff_ns.pop(mtype, None)
        c = self.config
        m.next_request_ns[mtype] = now_ns + g.duration_s * NS_PER_S * c.renew_numerator // c.renew_denominator
        kind = "renewed" if renewed else "granted"
        self.counters[kind] += 1
        self._event(out, kind, m.address, mtype, now_ns,
                    f"{g.duration_s} s at 2^{g.log_inter_message_period} s"
                    + ("" if g.renewal_invited else ", renewal not invited"))
        if mtype in (SYNC, DRESP):
            m.holdoff_until_ns = 0
        return (mtype == ANN and not renewed) or not g.renewal_invited, []

    def cancel_all(self, now_ns: int) -> list[UnicastAction]:
        """Give every grant back (shutdown)."""
        out: list[UnicastAction] = []
        for m in self._masters.values():
            if m.grants:
                tlvs = tuple(Cancel(t) for t in sorted(m.grants))
                out.append(SendSignaling(m.address, m.port_identity, tlvs))
                for t in m.grants:
                    self.counters["canceled_by_client"] += 1
                    self._event(out, "canceled_by_client", m.address, t, now_ns)
                m.grants.clear()
            m.next_request_ns.clear()
        if self.selected is not None:
            out.append(ActiveServerChanged(self.selected, None, None, "shutdown"))
            self.selected = None
        return out

    # --- timers -------------------------------------------------------------------------------

    def next_deadline_ns(self) -> int | None:
        c = self.config
        deadlines: list[int] = []
        for m in self._masters.values():
            wanted = self._wanted(m)
            deadlines.extend(t for k, t in m.next_request_ns.items() if k in wanted)
            deadlines.extend(g.expires_ns for g in m.grants.values())
            if m.last_announce_ns is not None and m.announce is not None:
                deadlines.append(self._announce_deadline(m))
            if m.holdoff_until_ns:
                deadlines.append(m.holdoff_until_ns)
        return min(deadlines) if deadlines else None

    def _announce_deadline(self, m: _Master) -> int:
        log = m.grants[ANN].log_inter_message_period if ANN in m.grants else self.config.log_announce_interval
        return m.last_announce_ns + self.config.announce_receipt_timeout * log_interval_ns(log)  # type: ignore[operator]

    def handle_timer(self, now_ns: int) -> list[UnicastAction]:
        if not self._started:
            raise UnicastUsageError("UnicastClient.handle_timer before start")
        out: list[UnicastAction] = []
        changed = self._pre_negotiate(now_ns)
        for m in self._masters.values():
            for mtype, g in list(m.grants.items()):
                if g.expires_ns <= now_ns:
                    del m.grants[mtype]
                    self.counters["expired"] += 1
                    self._event(out, "grant_expired", m.address, mtype, now_ns)
                    m.next_request_ns[mtype] = now_ns
                    if mtype in (SYNC, DRESP) and m.address == self.selected:
                        m.holdoff_until_ns = now_ns + self._backoff(m, mtype)
                    changed = True
            if m.announce is not None and self._announce_deadline(m) <= now_ns:
                m.announce = None
                self.counters["announce_timeout"] += 1
                self._event(out, "announce_timeout", m.address, ANN, now_ns)
                changed = True
            if m.holdoff_until_ns and m.holdoff_until_ns <= now_ns:
                m.holdoff_until_ns = 0
                changed = True
        if changed:
            out.extend(self._reselect(now_ns, "timer"))
        out.extend(self._send_requests(now_ns))
        return out

    def _send_requests(self, now_ns: int) -> list[UnicastAction]:
        out: list[UnicastAction] = []
        c = self.config
        for m in self._masters.values():
            tlvs: list[NegotiationTlv] = []
            wanted = self._wanted(m)
            due = [t for t in wanted if m.next_request_ns.get(t, now_ns) <= now_ns]
            if not due:
                continue
            # Renew together: once one is due, any grant within its renewal window goes along.
            for mtype in wanted:
                if mtype in due or (mtype in m.grants and m.next_request_ns.get(mtype, now_ns) <= now_ns + self._query_ns):
                    tlvs.append(Request(mtype, m.log_period[mtype], c.unicast_req_duration_s))
                    # Until an answer comes: repeat every query interval (or the back-off, if denied).
                    retry = self._query_ns if mtype in m.grants else max(self._query_ns, m.backoff_ns.get(mtype, 0))
                    m.next_request_ns[mtype] = now_ns + retry
            self.counters["requests_tx"] += len(tlvs)
            out.append(SendSignaling(m.address, m.port_identity, tuple(tlvs)))
            self._event(out, "request", m.address, None, now_ns,
                        ",".join(UnicastMessageType(t.message_type).name for t in tlvs))  # type: ignore[union-attr]
        return out

    def _pre_negotiate(self, now_ns: int) -> bool:
        """R clear on the active server's Sync grant: move before it ends if someone else can serve."""
        if self.selected is None:
            return False
        m = self._masters[self.selected]
        g = m.grants.get(SYNC)
        if g is None or g.renewal_invited or m.holdoff_until_ns >= g.expires_ns:
            return False
        c = self.config
        if now_ns >= g.granted_at_ns + g.duration_s * NS_PER_S * c.renew_numerator // c.renew_denominator:
            m.holdoff_until_ns = g.expires_ns
            return True
        return False

    # --- selection ----------------------------------------------------------------------------

    def _best(self, now_ns: int) -> _Master | None:
        cands = [m for m in self._masters.values() if self._qualified(m)]
        if not cands:
            return None
        preferred = [m for m in cands if not m.holdoff_until_ns or m.holdoff_until_ns <= now_ns]
        pool = preferred or cands
        best = pool[0]
        for m in pool[1:]:
            if self._compare(m.announce, best.announce) < 0:  # type: ignore[arg-type]
                best = m
        return best

    def _reselect(self, now_ns: int, why: str) -> list[UnicastAction]:
        out: list[UnicastAction] = []
        best = self._best(now_ns)
        cur = self._masters.get(self.selected) if self.selected else None
        if best is cur:
            return out
        if (
            cur is not None and best is not None and not self.config.revertive
            and self._qualified(cur) and not (cur.holdoff_until_ns and cur.holdoff_until_ns > now_ns)
        ):
            return out  # non-revertive: stay with a working server even if a better one appears
        old = self.selected
        if cur is not None:
            back = [t for t in (SYNC, DRESP) if t in cur.grants]
            for t in back:
                del cur.grants[t]
                self.counters["canceled_by_client"] += 1
                self._event(out, "canceled_by_client", cur.address, t, now_ns)
            if back:
                out.append(SendSignaling(cur.address, cur.port_identity, tuple(Cancel(t) for t in back)))
            cur.next_request_ns.pop(SYNC, None)
            cur.next_request_ns.pop(DRESP, None)
        self.selected = best.address if best is not None else None
        self.counters["switches"] += 1
        if best is not None:
            for t in (SYNC, DRESP):
                if t not in best.grants:
                    best.next_request_ns[t] = now_ns
        out.append(
            ActiveServerChanged(
                old, self.selected, best.port_identity if best else None, why,
                best.log_period[SYNC] if best else None, best.log_period[DRESP] if best else None,
            )
        )
        self._event(out, "selected", self.selected or "-", None, now_ns, f"was {old or '-'}: {why}")
        if best is not None:
            out.extend(self._send_requests(now_ns))
        return out

    # --- queries ------------------------------------------------------------------------------

    def master_table(self, now_ns: int) -> tuple[MasterRecord, ...]:
        rows = []
        for m in self._masters.values():
            rows.append(MasterRecord(
                address=m.address, port_identity=m.port_identity, selected=m.address == self.selected,
                qualified=self._qualified(m),
                granted=tuple((t, g.log_inter_message_period, max(0, g.expires_ns - now_ns))
                              for t, g in sorted(m.grants.items())),
                renewal_invited=all(g.renewal_invited for g in m.grants.values()),
                last_announce_ns=m.last_announce_ns,
            ))
        return tuple(rows)

    def granted(self, address: str, message_type: int) -> bool:
        m = self._master(address)
        return m is not None and message_type in m.grants

    def in_table(self, address: str) -> bool:
        """True if ``address`` is one of this client's unicast masters."""
        return self._master(address) is not None

    def grant_duration_s(self, address: str, message_type: int) -> int | None:
        """The duration the server granted for ``message_type`` (None without a grant)."""
        m = self._master(address)
        g = m.grants.get(message_type) if m is not None else None
        return None if g is None else g.duration_s
