"""Data set comparison (table), state decision codes and foreign-master qualification."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from controlplane.codec.enums import PortState
from controlplane.codec.types import ClockQuality, PortIdentity
from controlplane.core.bmca import (
    Comparison as C,
    ComparisonDataset,
    ForeignMasterTable,
    compare,
    compare_g8275,
    dataset_of_default,
    state_decision,
)


def cid(n: int) -> bytes:
    return bytes([0, 0, 0, 0xFF, 0xFE, 0, 0, n])


def ds(gm: int = 1, p1: int = 128, cls: int = 248, acc: int = 0xFE, var: int = 0xFFFF, p2: int = 128,
       steps: int = 0, sender: tuple[int, int] = (1, 1), receiver: tuple[int, int] = (9, 1)) -> ComparisonDataset:
    return ComparisonDataset(p1, cid(gm), ClockQuality(cls, acc, var), p2, steps,
                             PortIdentity(cid(sender[0]), sender[1]), PortIdentity(cid(receiver[0]), receiver[1]))


# (A, B, expected compare(A, B), why)
TABLE = [
    (ds(p1=127), ds(p1=128, gm=2), C.A_BETTER, "priority1"),
    (ds(cls=6), ds(cls=7, gm=2), C.A_BETTER, "clockClass"),
    (ds(acc=0x21, gm=3), ds(acc=0x20, gm=2), C.B_BETTER, "clockAccuracy"),
    (ds(var=0x4000), ds(var=0x4001, gm=2), C.A_BETTER, "variance"),
    (ds(p2=1, gm=5), ds(p2=2, gm=2), C.A_BETTER, "priority2 before identity"),
    (ds(gm=1), ds(gm=2), C.A_BETTER, "grandmaster identity tie-break"),
    (ds(p1=200, cls=6), ds(p1=100, cls=248, gm=2), C.B_BETTER, "priority1 before class"),
    # same grandmaster: topology
    (ds(steps=0), ds(steps=2), C.A_BETTER, "steps differ by more than one"),
    (ds(steps=3), ds(steps=1), C.B_BETTER, "steps differ by more than one (B)"),
    (ds(steps=1), ds(steps=2, sender=(5, 1), receiver=(3, 1)), C.A_BETTER, "one step less; B's receiver < sender"),
    (ds(steps=1), ds(steps=2, sender=(3, 1), receiver=(5, 1)), C.A_BETTER_BY_TOPOLOGY, "one step less; B's receiver > sender"),
    (ds(steps=2, sender=(3, 1), receiver=(5, 1)), ds(steps=1), C.B_BETTER_BY_TOPOLOGY, "mirror"),
    (ds(steps=1), ds(steps=2, sender=(4, 2), receiver=(4, 2)), C.ERROR1, "error-1: B received its own message"),
    (ds(steps=2, sender=(4, 2), receiver=(4, 2)), ds(steps=1), C.ERROR1, "error-1 mirrored"),
    (ds(steps=1, sender=(2, 1)), ds(steps=1, sender=(3, 1)), C.A_BETTER_BY_TOPOLOGY, "equal steps, lower sender"),
    (ds(steps=1, sender=(2, 2)), ds(steps=1, sender=(2, 1)), C.B_BETTER_BY_TOPOLOGY, "equal steps, sender port number"),
    (ds(steps=1, receiver=(9, 1)), ds(steps=1, receiver=(9, 2)), C.A_BETTER_BY_TOPOLOGY, "same sender, lower receiver port"),
    (ds(steps=1), ds(steps=1), C.ERROR2, "error-2: same sender and receiver"),
]


@pytest.mark.parametrize("a, b, want, why", TABLE, ids=[t[3] for t in TABLE])
def test_comparison_table(a, b, want, why) -> None:
    assert compare(a, b) is want, why
    assert compare(b, a) is want.swapped(), why


def test_g8275_local_priority_placeholder() -> None:
    a = replace(ds(gm=2), local_priority=10)
    b = replace(ds(gm=1, p1=1), local_priority=20)
    assert compare(a, b) is C.B_BETTER  # priority1 decides in 1588
    assert compare_g8275(a, b) is C.A_BETTER  # priority1 ignored, localPriority decides


OWN = cid(50)


def d0(p1: int = 128, cls: int = 248) -> ComparisonDataset:
    return dataset_of_default(OWN, ClockQuality(cls, 0xFE, 0xFFFF), p1, 128)


def test_state_decision_codes() -> None:
    better = ds(gm=1, p1=100, receiver=(50, 1))
    worse = ds(gm=60, p1=200, receiver=(50, 1))
    L = PortState.LISTENING
    assert state_decision(d0(), 248, None, None, L).code == "LISTENING"
    assert state_decision(d0(cls=6), 6, worse, worse, PortState.MASTER).code == "M1"
    same_p1 = ds(gm=1, receiver=(50, 1))
    assert state_decision(d0(cls=6), 6, same_p1, same_p1, PortState.MASTER).code == "M1"  # class 6 beats class 248
    assert state_decision(d0(cls=6), 6, ds(gm=1, cls=6, p1=100), ds(gm=1, cls=6, p1=100), L).code == "P1"
    assert state_decision(d0(), 248, worse, worse, L).code == "M2"
    assert state_decision(d0(), 248, better, better, L).code == "S1"
    assert state_decision(d0(), 248, better, better, L).state is PortState.SLAVE
    # Ebest came in on another port (2); on this port (1) the same GM arrives one step further
    ebest = ds(gm=1, p1=100, steps=1, sender=(7, 1), receiver=(50, 2))
    er_topo = ds(gm=1, p1=100, steps=1, sender=(8, 1), receiver=(50, 1))  # sender 8 > 7: Ebest better by topology
    assert state_decision(d0(), 248, er_topo, ebest, PortState.MASTER).code == "P2"
    er_far = ds(gm=1, p1=100, steps=3, sender=(8, 1), receiver=(50, 1))  # Ebest better (not by topology)
    assert state_decision(d0(), 248, er_far, ebest, PortState.MASTER).code == "M3"
    assert state_decision(d0(), 248, None, ebest, PortState.MASTER).code == "M3"


def test_state_decision_slave_only_and_master_only() -> None:
    better = ds(gm=1, p1=100, receiver=(50, 1))
    worse = ds(gm=60, p1=200, receiver=(50, 1))
    assert state_decision(d0(), 255, worse, worse, PortState.LISTENING, slave_only=True).code == "S1"
    other = ds(gm=1, p1=100, receiver=(50, 2))
    assert state_decision(d0(), 255, better, other, PortState.SLAVE, slave_only=True).code == "LISTENING"
    assert state_decision(d0(), 248, better, better, PortState.MASTER, master_only=True).state is PortState.MASTER


@dataclass(frozen=True)
class _H:
    source_port_identity: PortIdentity


@dataclass(frozen=True)
class _Ann:
    header: _H
    grandmaster_priority1: int = 128
    grandmaster_identity: bytes = cid(1)
    grandmaster_clock_quality: ClockQuality = ClockQuality()
    grandmaster_priority2: int = 128
    steps_removed: int = 0


def test_foreign_master_qualification() -> None:
    t = ForeignMasterTable(OWN, PortIdentity(OWN, 1))
    a = _Ann(_H(PortIdentity(cid(1), 1)))
    s = 1_000_000_000
    assert not t.add(a, 0, 0)
    assert t.qualified() == []
    assert t.add(a, 1 * s, 0)  # second within 4 s: qualified
    assert len(t.qualified()) == 1
    t.prune(6 * s, 0)  # last one 5 s ago: window of 4 intervals passed
    assert t.qualified() == [] and len(t) == 0
    # two announces further apart than the window never qualify
    t.add(a, 10 * s, 0)
    t.add(a, 15 * s, 0)
    assert t.qualified() == []
    # longer announce interval widens the window (log 1 => 8 s)
    t.add(a, 20 * s, 1)
    assert t.qualified() != []


def test_foreign_master_ignores_own_and_steps_removed_255() -> None:
    t = ForeignMasterTable(OWN, PortIdentity(OWN, 1))
    own = _Ann(_H(PortIdentity(OWN, 2)))
    far = _Ann(_H(PortIdentity(cid(3), 1)), steps_removed=255)
    for k in range(4):
        t.add(own, k, 0)
        t.add(far, k, 0)
    assert len(t) == 0
    ok = _Ann(_H(PortIdentity(cid(3), 1)), steps_removed=254)
    t.add(ok, 0, 0)
    t.add(ok, 1, 0)
    assert len(t.qualified()) == 1
