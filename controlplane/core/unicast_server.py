"""Unicast negotiation server (grantor), IEEE 1588-2008 §16.1. Sans-IO.

The daemon composes one ``UnicastServer`` per port that serves unicast and calls:

* ``handle_signaling(address, source_port_identity, tlvs, now_ns)`` for every Signaling message
  received on that port (``tlvs`` = the negotiation TLVs, converted from the codec). It returns
  one ``SendSignaling`` carrying one GRANT per REQUEST (several TLVs in one message, in order),
  an ACKNOWLEDGE_CANCEL per CANCEL, and ``NegotiationEvent`` facts.
* ``poll(now_ns, max_transmissions=None)`` whenever ``next_deadline_ns()`` is reached: returns
  ``DueTransmission`` for every Sync/Announce due per grant (each grant has its own phase and
  interval; with a limit, the earliest that many), expiry events and CANCEL retransmissions. A grant that expires at E produces no transmission scheduled at or
  after E: the service stops exactly at expiry.
* ``may_respond(address, message_type, now_ns)`` before answering a Delay_Req (Delay_Resp grant)
  or Pdelay_Req.
* ``cancel(address, message_type, now_ns)`` / ``set_available(False, now_ns)`` for
  server-initiated cancellation (draining, leaving MASTER state).
* ``grant_table(now_ns)`` / ``counters`` for logs, management and gRPC.

Clients are identified by their protocol address (as linuxptp does); the requester's port
identity is recorded and used as targetPortIdentity of replies.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable, Sequence

from controlplane.core.unicast import (
    NS_PER_S,
    AcknowledgeCancel,
    Cancel,
    DenialReason,
    DueTransmission,
    Grant,
    NegotiationEvent,
    NegotiationTlv,
    Request,
    SendSignaling,
    ServerPolicy,
    UnicastAction,
    UnicastMessageType,
    UnicastUsageError,
    log_interval_ns,
    normalize_address,
)

# message types the server transmits periodically; the others are answers to the client's requests
_PERIODIC = (int(UnicastMessageType.SYNC), int(UnicastMessageType.ANNOUNCE))


@dataclass(slots=True)
class _GrantState:
    address: str
    message_type: int
    port_identity: tuple[bytes, int] | None
    log_inter_message_period: int
    duration_s: int
    granted_at_ns: int
    expires_ns: int
    renewal_invited: bool
    next_tx_ns: int
    sequence_id: int = 0
    renewals: int = 0
    sent: int = 0
    late_skipped: int = 0
    generation: int = 0


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """One row of the grant table, as data."""

    address: str
    message_type: int
    port_identity: tuple[bytes, int] | None
    log_inter_message_period: int
    duration_s: int
    granted_at_ns: int
    expires_ns: int
    remaining_ns: int
    renewal_invited: bool
    renewals: int
    sent: int
    late_skipped: int


@dataclass(slots=True)
class _PendingCancel:
    address: str
    message_type: int
    port_identity: tuple[bytes, int] | None
    next_ns: int
    retries_left: int


class UnicastServer:
    def __init__(self, policy: ServerPolicy | None = None) -> None:
        self.policy = policy or ServerPolicy()
        self._grants: dict[tuple[str, int], _GrantState] = {}
        self._clients: dict[str, int] = {}  # address -> number of live grants
        self._tx_heap: list[tuple[int, int, str, int, int]] = []  # (next_ns, seq, addr, mtype, gen)
        self._exp_heap: list[tuple[int, int, str, int, int]] = []  # (expires_ns, seq, addr, mtype, gen)
        self._seq = 0
        self._pending_cancels: dict[tuple[str, int], _PendingCancel] = {}
        self._available = True
        self.counters: dict[str, int] = {
            "requests": 0,
            "granted": 0,
            "renewed": 0,
            "capped": 0,
            "denied": 0,
            "expired": 0,
            "canceled_by_client": 0,
            "canceled_by_server": 0,
            "ack_cancel_rx": 0,
            "cancel_unacknowledged": 0,
            "transmissions": 0,
            "late_skipped": 0,
            "ignored_tlvs": 0,
        }
        self.denials: dict[DenialReason, int] = {reason: 0 for reason in DenialReason}

    # --- inputs -----------------------------------------------------------------------------

    def handle_signaling(
        self,
        address: str,
        source_port_identity: tuple[bytes, int] | None,
        tlvs: Sequence[NegotiationTlv],
        now_ns: int,
    ) -> list[UnicastAction]:
        addr = normalize_address(address)
        replies: list[NegotiationTlv] = []
        events: list[UnicastAction] = []
        for tlv in tlvs:
            if isinstance(tlv, Request):
                grant = self._on_request(addr, source_port_identity, tlv, now_ns, events)
                replies.append(grant)
            elif isinstance(tlv, Cancel):
                self._on_cancel(addr, tlv, now_ns, events)
                replies.append(
                    AcknowledgeCancel(tlv.message_type, tlv.maintain_request, tlv.maintain_grant)
                )
            elif isinstance(tlv, AcknowledgeCancel):
                if self._pending_cancels.pop((addr, tlv.message_type), None) is not None:
                    self.counters["ack_cancel_rx"] += 1
                    events.append(NegotiationEvent("ack_cancel_rx", addr, tlv.message_type, "", now_ns))
            else:  # a Grant sent to a server is not ours to act on
                self.counters["ignored_tlvs"] += 1
        actions: list[UnicastAction] = []
        if replies:
            actions.append(SendSignaling(addr, source_port_identity, tuple(replies)))
        actions.extend(events)
        return actions

    def _deny(self, addr: str, req: Request, reason: DenialReason, now_ns: int,
              events: list[UnicastAction]) -> Grant:
        self.counters["denied"] += 1
        self.denials[reason] += 1
        events.append(NegotiationEvent("denied", addr, req.message_type, reason.name.lower(), now_ns))
        return Grant(req.message_type, req.log_inter_message_period, 0, False)

    def _on_request(self, addr: str, pid: tuple[bytes, int] | None, req: Request, now_ns: int,
                    events: list[UnicastAction]) -> Grant:
        self.counters["requests"] += 1
        policy = self.policy
        mtype = req.message_type
        key = (addr, mtype)
        existing = self._grants.get(key)
        if mtype not in policy.message_types:
            return self._deny(addr, req, DenialReason.UNSUPPORTED_MESSAGE_TYPE, now_ns, events)
        if not self._available:
            return self._deny(addr, req, DenialReason.SERVICE_UNAVAILABLE, now_ns, events)
        if not policy.allows(addr):
            return self._deny(addr, req, DenialReason.NOT_ALLOWED, now_ns, events)
        if req.log_inter_message_period < policy.min_log_for(mtype):
            return self._deny(addr, req, DenialReason.RATE_TOO_HIGH, now_ns, events)
        if req.duration_s < policy.min_duration_s:
            return self._deny(addr, req, DenialReason.DURATION_TOO_SHORT, now_ns, events)
        if addr not in self._clients and len(self._clients) >= policy.max_clients:
            return self._deny(addr, req, DenialReason.TOO_MANY_CLIENTS, now_ns, events)

        duration_s = min(req.duration_s, policy.max_duration_s)
        if duration_s < req.duration_s:
            self.counters["capped"] += 1
        expires_ns = now_ns + duration_s * NS_PER_S
        self._pending_cancels.pop(key, None)
        if existing is not None:
            # Renewal (§16.1.2.4: a request for a message type already granted replaces the grant).
            existing.port_identity = pid
            existing.duration_s = duration_s
            existing.granted_at_ns = now_ns
            existing.expires_ns = expires_ns
            existing.renewal_invited = True
            existing.renewals += 1
            existing.generation += 1  # re-queue: the old chain may have stopped at the old expiry
            if existing.log_inter_message_period != req.log_inter_message_period:
                existing.log_inter_message_period = req.log_inter_message_period
                existing.next_tx_ns = now_ns
            if mtype in _PERIODIC:
                self._push_tx(existing)
            self._push_exp(existing)
            self.counters["renewed"] += 1
            events.append(NegotiationEvent("renewed", addr, mtype, f"{duration_s} s", now_ns))
        else:
            state = _GrantState(
                address=addr, message_type=mtype, port_identity=pid,
                log_inter_message_period=req.log_inter_message_period, duration_s=duration_s,
                granted_at_ns=now_ns, expires_ns=expires_ns, renewal_invited=True, next_tx_ns=now_ns,
            )
            self._grants[key] = state
            self._clients[addr] = self._clients.get(addr, 0) + 1
            if mtype in _PERIODIC:
                self._push_tx(state)
            self._push_exp(state)
            self.counters["granted"] += 1
            events.append(NegotiationEvent("granted", addr, mtype, f"{duration_s} s", now_ns))
        return Grant(mtype, req.log_inter_message_period, duration_s, True)

    def _on_cancel(self, addr: str, cancel: Cancel, now_ns: int, events: list[UnicastAction]) -> None:
        # maintainRequest (bit 0): the canceller keeps its request state -> the grant still ends.
        # maintainGrant: set only when a grantor cancels; ignore it from a grantee.
        if self._remove((addr, cancel.message_type)):
            self.counters["canceled_by_client"] += 1
            events.append(NegotiationEvent("canceled_by_client", addr, cancel.message_type, "", now_ns))

    def cancel(self, address: str, message_type: int, now_ns: int) -> list[UnicastAction]:
        """Server-initiated CANCEL: stop serving now, tell the client, re-send until acknowledged."""
        addr = normalize_address(address)
        key = (addr, int(message_type))
        state = self._grants.get(key)
        if state is None:
            raise UnicastUsageError(f"no grant of {message_type:#x} to {addr} to cancel")
        self._remove(key)
        self.counters["canceled_by_server"] += 1
        self._pending_cancels[key] = _PendingCancel(
            addr, key[1], state.port_identity, now_ns + self.policy.cancel_retry_ns,
            self.policy.cancel_retries,
        )
        return [
            SendSignaling(addr, state.port_identity, (Cancel(key[1]),)),
            NegotiationEvent("canceled_by_server", addr, key[1], "", now_ns),
        ]

    def set_available(self, available: bool, now_ns: int) -> list[UnicastAction]:
        """When the port stops being able to serve (e.g. leaves MASTER), cancel every grant."""
        self._available = available
        actions: list[UnicastAction] = []
        if not available:
            for addr, mtype in list(self._grants):
                actions.extend(self.cancel(addr, mtype, now_ns))
        return actions

    # --- timers -----------------------------------------------------------------------------

    def next_deadline_ns(self) -> int | None:
        self._clean_heads()
        candidates = []
        if self._tx_heap:
            candidates.append(self._tx_heap[0][0])
        if self._exp_heap:
            candidates.append(self._exp_heap[0][0])
        candidates.extend(p.next_ns for p in self._pending_cancels.values())
        return min(candidates) if candidates else None

    def poll(self, now_ns: int, max_transmissions: int | None = None) -> list[UnicastAction]:
        """Everything due at ``now_ns``. With ``max_transmissions``, at most that many
        ``DueTransmission`` (the earliest due); the rest stay due (``next_deadline_ns() <= now_ns``),
        so the caller can let its other work (e.g. reading TX stamps) run between batches. Raises
        ``UnicastUsageError`` for a limit below 1."""
        if max_transmissions is not None and max_transmissions < 1:
            raise UnicastUsageError(f"max_transmissions must be >= 1, not {max_transmissions}")
        actions: list[UnicastAction] = []
        budget = max_transmissions
        # Expiry first: a transmission scheduled at or after expiry is never produced.
        exp = self._exp_heap
        while exp and exp[0][0] <= now_ns:
            expires_ns, _, addr, mtype, gen = heapq.heappop(exp)
            state = self._grants.get((addr, mtype))
            if state is None or state.expires_ns != expires_ns:
                continue
            self._remove((addr, mtype))
            self.counters["expired"] += 1
            actions.append(NegotiationEvent("expired", addr, mtype, "", now_ns))
        tx = self._tx_heap
        while tx and tx[0][0] <= now_ns and (budget is None or budget > 0):
            next_ns, _, addr, mtype, gen = heapq.heappop(tx)
            state = self._grants.get((addr, mtype))
            if state is None or state.generation != gen or state.next_tx_ns != next_ns:
                continue
            if next_ns >= state.expires_ns:
                continue  # expiry will remove it
            actions.append(
                DueTransmission(addr, mtype, state.log_inter_message_period, state.sequence_id, next_ns)
            )
            if budget is not None:
                budget -= 1
            state.sequence_id = (state.sequence_id + 1) & 0xFFFF
            state.sent += 1
            self.counters["transmissions"] += 1
            interval = log_interval_ns(state.log_inter_message_period)
            nxt = next_ns + interval
            if nxt <= now_ns:  # the runtime was late by more than one interval: skip, keep phase
                missed = (now_ns - nxt) // interval + 1
                nxt += missed * interval
                state.late_skipped += missed
                self.counters["late_skipped"] += missed
            state.next_tx_ns = nxt
            if nxt < state.expires_ns:
                self._push_tx(state)
        for key, pending in list(self._pending_cancels.items()):
            if pending.next_ns > now_ns:
                continue
            if pending.retries_left <= 0:
                del self._pending_cancels[key]
                self.counters["cancel_unacknowledged"] += 1
                actions.append(NegotiationEvent("cancel_unacknowledged", pending.address, key[1], "", now_ns))
                continue
            pending.retries_left -= 1
            pending.next_ns = now_ns + self.policy.cancel_retry_ns
            actions.append(SendSignaling(pending.address, pending.port_identity, (Cancel(key[1]),)))
        return actions

    # --- queries ----------------------------------------------------------------------------

    def may_respond(self, address: str, message_type: int, now_ns: int) -> bool:
        """True if ``address`` holds a live grant for ``message_type`` (e.g. DELAY_RESP) now."""
        state = self._grants.get((normalize_address(address), int(message_type)))
        return state is not None and now_ns < state.expires_ns

    def grant_of(self, address: str, message_type: int) -> _GrantState | None:
        return self._grants.get((normalize_address(address), int(message_type)))

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def grant_table(self, now_ns: int) -> tuple[GrantRecord, ...]:
        return tuple(
            GrantRecord(
                address=s.address, message_type=s.message_type, port_identity=s.port_identity,
                log_inter_message_period=s.log_inter_message_period, duration_s=s.duration_s,
                granted_at_ns=s.granted_at_ns, expires_ns=s.expires_ns,
                remaining_ns=max(0, s.expires_ns - now_ns), renewal_invited=s.renewal_invited,
                renewals=s.renewals, sent=s.sent, late_skipped=s.late_skipped,
            )
            for s in sorted(self._grants.values(), key=lambda s: (s.address, s.message_type))
        )

    # --- internals --------------------------------------------------------------------------

    def _push_tx(self, state: _GrantState) -> None:
        self._seq += 1
        heapq.heappush(
            self._tx_heap,
            (state.next_tx_ns, self._seq, state.address, state.message_type, state.generation),
        )

    def _push_exp(self, state: _GrantState) -> None:
        self._seq += 1
        heapq.heappush(
            self._exp_heap,
            (state.expires_ns, self._seq, state.address, state.message_type, state.generation),
        )

    def _remove(self, key: tuple[str, int]) -> bool:
        state = self._grants.pop(key, None)
        if state is None:
            return False
        left = self._clients[key[0]] - 1
        if left:
            self._clients[key[0]] = left
        else:
            del self._clients[key[0]]
        return True

    def _clean_heads(self) -> None:
        tx = self._tx_heap
        while tx:
            next_ns, _, addr, mtype, gen = tx[0]
            s = self._grants.get((addr, mtype))
            if s is not None and s.generation == gen and s.next_tx_ns == next_ns and next_ns < s.expires_ns:
                break
            heapq.heappop(tx)
        exp = self._exp_heap
        while exp:
            expires_ns, _, addr, mtype, _gen = exp[0]
            s = self._grants.get((addr, mtype))
            if s is not None and s.expires_ns == expires_ns:
                break
            heapq.heappop(exp)


def records_as_dicts(records: Iterable[GrantRecord]) -> list[dict[str, object]]:
    """Grant table rows as plain dicts (for JSON logs, management and gRPC)."""
    out = []
    for r in records:
        out.append({
            "address": r.address,
            "message_type": UnicastMessageType(r.message_type).name,
            "port_identity": None if r.port_identity is None
            else f"{r.port_identity[0].hex()}-{r.port_identity[1]}",
            "log_inter_message_period": r.log_inter_message_period,
            "duration_s": r.duration_s,
            "remaining_ns": r.remaining_ns,
            "renewal_invited": r.renewal_invited,
            "renewals": r.renewals,
            "sent": r.sent,
            "late_skipped": r.late_skipped,
        })
    return out
