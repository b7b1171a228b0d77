"""Best master clock algorithm (IEEE 1588-2019 9.3): data set comparison, foreign-master
qualification, state decision. Pure functions; the comparator is a parameter so an alternate
(G.8275.x with localPriority) can be passed in.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from controlplane.codec.enums import PortState
from controlplane.codec.types import ClockQuality, PortIdentity

__all__ = [
    "Comparison",
    "ComparisonDataset",
    "Decision",
    "FOREIGN_MASTER_THRESHOLD",
    "FOREIGN_MASTER_TIME_WINDOW",
    "ForeignMasterTable",
    "MAX_FOREIGN_MASTERS",
    "MAX_STEPS_REMOVED",
    "compare",
    "dataset_of_announce",
    "dataset_of_default",
    "state_decision",
]

FOREIGN_MASTER_THRESHOLD = 2  # Announces ...
FOREIGN_MASTER_TIME_WINDOW = 4  # ... within this many announce intervals
MAX_STEPS_REMOVED = 255
MAX_FOREIGN_MASTERS = 16  # per port; bounds an Announce flood's memory and CPU


class Comparison(enum.Enum):
    """Result of comparing data set A with data set B (IEEE 1588 Figures 34/35)."""

    A_BETTER = "A better than B"
    A_BETTER_BY_TOPOLOGY = "A better by topology than B"
    B_BETTER = "B better than A"
    B_BETTER_BY_TOPOLOGY = "B better by topology than A"
    ERROR1 = "error-1 (receiver equals sender)"
    ERROR2 = "error-2 (same sender and receiver port)"

    @property
    def a_better(self) -> bool:
        return self in (Comparison.A_BETTER, Comparison.A_BETTER_BY_TOPOLOGY)

    @property
    def b_better(self) -> bool:
        return self in (Comparison.B_BETTER, Comparison.B_BETTER_BY_TOPOLOGY)

    def swapped(self) -> Comparison:
        """The result of compare(B, A)."""
        return _SWAP[self]


_SWAP = {
    Comparison.A_BETTER: Comparison.B_BETTER,
    Comparison.B_BETTER: Comparison.A_BETTER,
    Comparison.A_BETTER_BY_TOPOLOGY: Comparison.B_BETTER_BY_TOPOLOGY,
    Comparison.B_BETTER_BY_TOPOLOGY: Comparison.A_BETTER_BY_TOPOLOGY,
    Comparison.ERROR1: Comparison.ERROR1,
    Comparison.ERROR2: Comparison.ERROR2,
}


@dataclass(frozen=True, slots=True)
class ComparisonDataset:
    """What the BMCA compares (9.3.4): the grandmaster's attributes and the topology part."""

    grandmaster_priority1: int
    grandmaster_identity: bytes
    grandmaster_clock_quality: ClockQuality
    grandmaster_priority2: int
    steps_removed: int
    sender: PortIdentity  # sourcePortIdentity of the Announce (own port identity for D0)
    receiver: PortIdentity  # portIdentity of the port that received it
    local_priority: int = 128  # G.8275.x only


def dataset_of_announce(msg: object, receiver: PortIdentity) -> ComparisonDataset:
    """The comparison data set of an Announce message (codec AnnounceMessage) received on ``receiver``."""
    hdr = msg.header  # type: ignore[attr-defined]
    return ComparisonDataset(
        grandmaster_priority1=msg.grandmaster_priority1,  # type: ignore[attr-defined]
        grandmaster_identity=msg.grandmaster_identity,  # type: ignore[attr-defined]
        grandmaster_clock_quality=msg.grandmaster_clock_quality,  # type: ignore[attr-defined]
        grandmaster_priority2=msg.grandmaster_priority2,  # type: ignore[attr-defined]
        steps_removed=msg.steps_removed,  # type: ignore[attr-defined]
        sender=hdr.source_port_identity,
        receiver=receiver,
    )


def dataset_of_default(clock_identity: bytes, clock_quality: ClockQuality, priority1: int, priority2: int, local_priority: int = 128) -> ComparisonDataset:
    """D0: this clock's default data set as a comparison data set (stepsRemoved 0, port 0)."""
    own = PortIdentity(clock_identity, 0)
    return ComparisonDataset(priority1, clock_identity, clock_quality, priority2, 0, own, own, local_priority)


def _pid_key(p: PortIdentity) -> tuple[bytes, int]:
    return (bytes(p.clock_identity), p.port_number)


def _cmp(x: object, y: object) -> int:
    return (x > y) - (x < y)  # type: ignore[operator]


def _compare_topology(a: ComparisonDataset, b: ComparisonDataset) -> Comparison:
    """Figure 35: A and B describe the same grandmaster."""
    if a.steps_removed + 1 < b.steps_removed:
        return Comparison.A_BETTER
    if b.steps_removed + 1 < a.steps_removed:
        return Comparison.B_BETTER
    if a.steps_removed < b.steps_removed:
        d = _cmp(_pid_key(b.receiver), _pid_key(b.sender))
        if d < 0:
            return Comparison.A_BETTER
        if d > 0:
            return Comparison.A_BETTER_BY_TOPOLOGY
        return Comparison.ERROR1
    if a.steps_removed > b.steps_removed:
        d = _cmp(_pid_key(a.receiver), _pid_key(a.sender))
        if d < 0:
            return Comparison.B_BETTER
        if d > 0:
            return Comparison.B_BETTER_BY_TOPOLOGY
        return Comparison.ERROR1
    d = _cmp(_pid_key(a.sender), _pid_key(b.sender))
    if d < 0:
        return Comparison.A_BETTER_BY_TOPOLOGY
    if d > 0:
        return Comparison.B_BETTER_BY_TOPOLOGY
    d = _cmp(a.receiver.port_number, b.receiver.port_number)
    if d < 0:
        return Comparison.A_BETTER_BY_TOPOLOGY
    if d > 0:
        return Comparison.B_BETTER_BY_TOPOLOGY
    return Comparison.ERROR2


def _gm_key(d: ComparisonDataset) -> tuple[int, int, int, int, int, bytes]:
    q = d.grandmaster_clock_quality
    return (d.grandmaster_priority1, q.clock_class, q.clock_accuracy, q.offset_scaled_log_variance,
            d.grandmaster_priority2, bytes(d.grandmaster_identity))


def compare(a: ComparisonDataset, b: ComparisonDataset) -> Comparison:
    """IEEE 1588 data set comparison (Figure 34; lower values are better)."""
    if bytes(a.grandmaster_identity) == bytes(b.grandmaster_identity):
        return _compare_topology(a, b)
    return Comparison.A_BETTER if _gm_key(a) < _gm_key(b) else Comparison.B_BETTER


def compare_g8275(a: ComparisonDataset, b: ComparisonDataset) -> Comparison:
    """Placeholder alternate comparator (G.8275.x): clockClass/accuracy/variance, priority2,
    localPriority, then the default comparison. Not a full G.8275 implementation."""
    if bytes(a.grandmaster_identity) != bytes(b.grandmaster_identity):
        qa, qb = a.grandmaster_clock_quality, b.grandmaster_clock_quality
        ka = (qa.clock_class, qa.clock_accuracy, qa.offset_scaled_log_variance, a.grandmaster_priority2, a.local_priority)
        kb = (qb.clock_class, qb.clock_accuracy, qb.offset_scaled_log_variance, b.grandmaster_priority2, b.local_priority)
        if ka != kb:
            return Comparison.A_BETTER if ka < kb else Comparison.B_BETTER
    return compare(a, b)


Comparator = Callable[[ComparisonDataset, ComparisonDataset], Comparison]


@dataclass(frozen=True, slots=True)
class Decision:
    """A state decision: the standard's code and the recommended state it maps to."""

    code: str  # "M1", "M2", "M3", "P1", "P2", "S1", or "LISTENING" (no decision possible)
    state: PortState

    @property
    def event_name(self) -> str:
        """The FSM event name (linuxptp's RS_* spelling)."""
        return {"M1": "RS_GRAND_MASTER", "M2": "RS_GRAND_MASTER", "M3": "RS_MASTER", "P1": "RS_PASSIVE",
                "P2": "RS_PASSIVE", "S1": "RS_SLAVE"}.get(self.code, "NONE")


def best(datasets: Iterable[ComparisonDataset], comparator: Comparator = compare) -> ComparisonDataset | None:
    result: ComparisonDataset | None = None
    for d in datasets:
        if result is None or comparator(d, result).a_better:
            result = d
    return result


def state_decision(
    d0: ComparisonDataset,
    clock_class: int,
    erbest: ComparisonDataset | None,
    ebest: ComparisonDataset | None,
    port_state: PortState,
    *,
    slave_only: bool = False,
    master_only: bool = False,
    comparator: Comparator = compare,
) -> Decision:
    """The state decision algorithm (Figure 33) for one port r.

    ``erbest`` is the best qualified foreign master on port r, ``ebest`` the best over all ports
    (``ebest is erbest`` or equal when it came in on r). ``slave_only`` ports only ever recommend
    SLAVE (S1) or stay/return to LISTENING; ``master_only`` ports never recommend SLAVE/PASSIVE.
    """
    if erbest is None and port_state is PortState.LISTENING:
        return Decision("LISTENING", PortState.LISTENING)
    if slave_only:
        if ebest is not None and erbest is not None and erbest == ebest:
            return Decision("S1", PortState.SLAVE)
        return Decision("LISTENING", PortState.LISTENING)
    if master_only:
        return Decision("M2" if ebest is None or comparator(d0, ebest).a_better else "M3", PortState.MASTER)
    if 1 <= clock_class <= 127:
        if erbest is None or comparator(d0, erbest).a_better:
            return Decision("M1", PortState.MASTER)
        return Decision("P1", PortState.PASSIVE)
    if ebest is None or comparator(d0, ebest).a_better:
        return Decision("M2", PortState.MASTER)
    if erbest is not None and erbest == ebest:
        return Decision("S1", PortState.SLAVE)
    if erbest is not None and comparator(ebest, erbest) is Comparison.A_BETTER_BY_TOPOLOGY:
        return Decision("P2", PortState.PASSIVE)
    return Decision("M3", PortState.MASTER)


@dataclass
class _Record:
    times_ns: deque[int]
    message: object
    dataset: ComparisonDataset


class ForeignMasterTable:
    """Per-port foreign-master records and their qualification (9.3.2.4/9.3.2.5).

    A sender is qualified when at least FOREIGN_MASTER_THRESHOLD Announces from it arrived within
    FOREIGN_MASTER_TIME_WINDOW announce intervals. Announces with stepsRemoved >= 255 and those
    from this clock itself are not recorded (the caller filters other domains).

    Bounded against Announce floods (forged senders): at most ``max_records`` senders (default
    MAX_FOREIGN_MASTERS; IEEE 1588 asks for at least 5). Records are kept in order of their last
    Announce, so expiry is lazy and amortised O(1) per Announce (only the oldest records are looked
    at). When the table is full, a new sender evicts the least recently heard *unqualified* record;
    if every record is qualified, the worst qualified one (by ``comparator``) goes, so a flood of
    forged one-shot senders never displaces a qualified master. ``evicted`` counts evictions.
    """

    def __init__(self, own_clock_identity: bytes, receiver: PortIdentity, *, max_records: int = 0,
                 comparator: Comparator = compare) -> None:
        max_records = max_records or MAX_FOREIGN_MASTERS
        if max_records < 2:
            raise ValueError(f"max_records must be at least 2, got {max_records}")
        self.own_clock_identity = bytes(own_clock_identity)
        self.receiver = receiver
        self.max_records = max_records
        self.comparator = comparator
        self.evicted = 0
        # insertion order = order of the last Announce (move_to_end on every add)
        self._records: OrderedDict[PortIdentity, _Record] = OrderedDict()

    @staticmethod
    def _window_ns(log_announce_interval: int) -> int:
        return int(FOREIGN_MASTER_TIME_WINDOW * (2.0 ** log_announce_interval) * 1e9)

    def add(self, msg: object, now_ns: int, log_announce_interval: int) -> bool:
        """Record an Announce; returns True if it changed what is qualified or the best's data."""
        hdr = msg.header  # type: ignore[attr-defined]
        sender: PortIdentity = hdr.source_port_identity
        if bytes(sender.clock_identity) == self.own_clock_identity:
            return False
        if msg.steps_removed >= MAX_STEPS_REMOVED:  # type: ignore[attr-defined]
            return False
        window_ns = self._window_ns(log_announce_interval)
        lost_qualified = self._expire_oldest(now_ns, window_ns)
        ds = dataset_of_announce(msg, self.receiver)
        rec = self._records.get(sender)
        if rec is None:
            if len(self._records) >= self.max_records:
                lost_qualified |= self._evict_one()
            rec = _Record(deque(maxlen=FOREIGN_MASTER_THRESHOLD + 1), msg, ds)
            self._records[sender] = rec
            was_qualified = False
        else:
            self._records.move_to_end(sender)
            _trim(rec, now_ns, window_ns)
            was_qualified = len(rec.times_ns) >= FOREIGN_MASTER_THRESHOLD
        changed = rec.dataset != ds
        rec.times_ns.append(now_ns)
        rec.message = msg
        rec.dataset = ds
        qualified = len(rec.times_ns) >= FOREIGN_MASTER_THRESHOLD
        return qualified != was_qualified or (qualified and changed) or lost_qualified

    def _expire_oldest(self, now_ns: int, window_ns: int) -> bool:
        """Drop records whose last Announce left the window (only the oldest: amortised O(1))."""
        lost = False
        while self._records:
            sender, rec = next(iter(self._records.items()))
            if rec.times_ns and now_ns - rec.times_ns[-1] <= window_ns:
                break
            lost |= len(rec.times_ns) >= FOREIGN_MASTER_THRESHOLD
            del self._records[sender]
        return lost

    def _evict_one(self) -> bool:
        """Make room for one record; True if a qualified record had to go."""
        self.evicted += 1
        for sender, rec in self._records.items():  # least recently heard first
            if len(rec.times_ns) < FOREIGN_MASTER_THRESHOLD:
                del self._records[sender]
                return False
        worst: PortIdentity | None = None
        for sender, rec in self._records.items():
            if worst is None or self.comparator(rec.dataset, self._records[worst].dataset).a_better is False:
                worst = sender
        assert worst is not None
        del self._records[worst]
        return True

    def prune(self, now_ns: int, log_announce_interval: int) -> None:
        """Forget Announces that left the window (all records: O(len), at most max_records)."""
        window_ns = self._window_ns(log_announce_interval)
        for sender in list(self._records):
            rec = self._records[sender]
            _trim(rec, now_ns, window_ns)
            if not rec.times_ns:
                del self._records[sender]

    def forget(self, sender: PortIdentity) -> None:
        """Drop one sender's record (no error if absent)."""
        self._records.pop(sender, None)

    def senders(self) -> tuple[PortIdentity, ...]:
        """The senders with a record, least recently heard first."""
        return tuple(self._records)

    def clear(self) -> None:
        self._records.clear()

    def qualified(self) -> Sequence[tuple[ComparisonDataset, object]]:
        return [(r.dataset, r.message) for r in self._records.values() if len(r.times_ns) >= FOREIGN_MASTER_THRESHOLD]

    def best(self, comparator: Comparator | None = None) -> tuple[ComparisonDataset, object] | None:
        comparator = comparator or self.comparator
        result: tuple[ComparisonDataset, object] | None = None
        for ds, msg in self.qualified():
            if result is None or comparator(ds, result[0]).a_better:
                result = (ds, msg)
        return result

    def __len__(self) -> int:
        return len(self._records)


def _trim(rec: _Record, now_ns: int, window_ns: int) -> None:
    while rec.times_ns and now_ns - rec.times_ns[0] > window_ns:
        rec.times_ns.popleft()
