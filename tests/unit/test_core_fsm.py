"""Port state machine: every (state, event) pair, full and slave-only variants.

The expected table is written out independently of fsm.py from IEEE 1588-2019 Figures 30/31
(transitions not listed leave the state unchanged).
"""

from __future__ import annotations

import itertools

import pytest

from controlplane.codec.enums import PortState as S
from controlplane.core.fsm import Event as E
from controlplane.core.fsm import transition

OPS = "POWERUP>INITIALIZING INITIALIZE>INITIALIZING DESIGNATED_DISABLED>DISABLED FAULT_DETECTED>FAULTY"
FULL = {
    "INITIALIZING": OPS + " INIT_COMPLETE>LISTENING",
    "FAULTY": "POWERUP>INITIALIZING INITIALIZE>INITIALIZING DESIGNATED_DISABLED>DISABLED FAULT_CLEARED>INITIALIZING",
    "DISABLED": "POWERUP>INITIALIZING INITIALIZE>INITIALIZING DESIGNATED_ENABLED>INITIALIZING",
    "LISTENING": OPS + " ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES>MASTER RS_MASTER>PRE_MASTER RS_GRAND_MASTER>MASTER RS_SLAVE>UNCALIBRATED RS_PASSIVE>PASSIVE",
    "PRE_MASTER": OPS + " QUALIFICATION_TIMEOUT_EXPIRES>MASTER RS_SLAVE>UNCALIBRATED RS_PASSIVE>PASSIVE",
    "MASTER": OPS + " RS_SLAVE>UNCALIBRATED RS_PASSIVE>PASSIVE",
    "PASSIVE": OPS + " ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES>MASTER RS_MASTER>PRE_MASTER RS_GRAND_MASTER>MASTER RS_SLAVE>UNCALIBRATED",
    "UNCALIBRATED": OPS + " ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES>MASTER MASTER_CLOCK_SELECTED>SLAVE RS_MASTER>PRE_MASTER RS_GRAND_MASTER>MASTER RS_PASSIVE>PASSIVE",
    "SLAVE": OPS + " SYNCHRONIZATION_FAULT>UNCALIBRATED MASTER_CLOCK_CHANGED>UNCALIBRATED ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES>MASTER RS_MASTER>PRE_MASTER RS_GRAND_MASTER>MASTER RS_PASSIVE>PASSIVE",
}
LISTEN = " ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES>LISTENING RS_MASTER>LISTENING RS_GRAND_MASTER>LISTENING RS_PASSIVE>LISTENING"
_NEVER = OPS + "".join(f" {e.name}>LISTENING" for e in E if e.name not in OPS)
SLAVE_ONLY = {
    "INITIALIZING": FULL["INITIALIZING"],
    "FAULTY": FULL["FAULTY"],
    "DISABLED": FULL["DISABLED"],
    "LISTENING": OPS + " RS_SLAVE>UNCALIBRATED",
    "UNCALIBRATED": OPS + LISTEN + " MASTER_CLOCK_SELECTED>SLAVE",
    "SLAVE": OPS + LISTEN + " SYNCHRONIZATION_FAULT>UNCALIBRATED MASTER_CLOCK_CHANGED>UNCALIBRATED",
    "PRE_MASTER": _NEVER,
    "MASTER": _NEVER,
    "PASSIVE": _NEVER,
}


def expected(spec: dict[str, str], state: S, event: E) -> S:
    for item in spec[state.name].split():
        ev, nxt = item.split(">")
        if ev == event.name:
            return S[nxt]
    return state


@pytest.mark.parametrize("state, event", list(itertools.product(S, E)), ids=lambda x: x.name)
def test_every_pair_full(state: S, event: E) -> None:
    assert transition(state, event) is expected(FULL, state, event)


@pytest.mark.parametrize("state, event", list(itertools.product(S, E)), ids=lambda x: x.name)
def test_every_pair_slave_only(state: S, event: E) -> None:
    nxt = transition(state, event, slave_only=True)
    assert nxt is expected(SLAVE_ONLY, state, event)
    if state not in (S.PRE_MASTER, S.MASTER, S.PASSIVE):
        assert nxt not in (S.PRE_MASTER, S.MASTER, S.PASSIVE)


def test_typical_walk() -> None:
    s = S.INITIALIZING
    for ev, want in [(E.INIT_COMPLETE, S.LISTENING), (E.RS_SLAVE, S.UNCALIBRATED), (E.MASTER_CLOCK_SELECTED, S.SLAVE),
                     (E.RS_SLAVE, S.SLAVE), (E.MASTER_CLOCK_CHANGED, S.UNCALIBRATED), (E.FAULT_DETECTED, S.FAULTY),
                     (E.FAULT_CLEARED, S.INITIALIZING)]:
        s = transition(s, ev)
        assert s is want
