"""Port state machine (IEEE 1588-2019 9.2.5, Figure 30 and the slave-only Figure 31) as a table
plus a pure function. Entry/exit effects live in the caller (port.py) and come back as actions.

Events follow the standard (and linuxptp's EV_* names). ``MASTER_CLOCK_CHANGED`` is RS_SLAVE while
already SLAVE but with a different parent (linuxptp's ``mdiff``): it sends the port back through
UNCALIBRATED.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping

from controlplane.codec.enums import PortState

__all__ = ["Event", "SLAVE_ONLY_TABLE", "TABLE", "transition"]

S = PortState


class Event(enum.Enum):
    POWERUP = "POWERUP"
    INITIALIZE = "INITIALIZE"
    INIT_COMPLETE = "INIT_COMPLETE"
    DESIGNATED_ENABLED = "DESIGNATED_ENABLED"
    DESIGNATED_DISABLED = "DESIGNATED_DISABLED"
    FAULT_DETECTED = "FAULT_DETECTED"
    FAULT_CLEARED = "FAULT_CLEARED"
    STATE_DECISION_EVENT = "STATE_DECISION_EVENT"
    QUALIFICATION_TIMEOUT_EXPIRES = "QUALIFICATION_TIMEOUT_EXPIRES"
    ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES = "ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES"
    SYNCHRONIZATION_FAULT = "SYNCHRONIZATION_FAULT"
    MASTER_CLOCK_SELECTED = "MASTER_CLOCK_SELECTED"
    MASTER_CLOCK_CHANGED = "MASTER_CLOCK_CHANGED"
    RS_MASTER = "RS_MASTER"
    RS_GRAND_MASTER = "RS_GRAND_MASTER"
    RS_SLAVE = "RS_SLAVE"
    RS_PASSIVE = "RS_PASSIVE"


E = Event

# Events every state (except where overridden) answers the same way.
_ANY = {E.POWERUP: S.INITIALIZING, E.INITIALIZE: S.INITIALIZING}
_OPERATIONAL = {**_ANY, E.DESIGNATED_DISABLED: S.DISABLED, E.FAULT_DETECTED: S.FAULTY}

# state -> {event: next state}; an event missing from a row leaves the state unchanged.
_FULL: dict[PortState, dict[Event, PortState]] = {
    S.INITIALIZING: {**_OPERATIONAL, E.INIT_COMPLETE: S.LISTENING},
    S.FAULTY: {**_ANY, E.DESIGNATED_DISABLED: S.DISABLED, E.FAULT_CLEARED: S.INITIALIZING},
    S.DISABLED: {**_ANY, E.DESIGNATED_ENABLED: S.INITIALIZING},
    S.LISTENING: {
        **_OPERATIONAL,
        E.ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES: S.MASTER,
        E.RS_MASTER: S.PRE_MASTER,
        E.RS_GRAND_MASTER: S.MASTER,
        E.RS_SLAVE: S.UNCALIBRATED,
        E.RS_PASSIVE: S.PASSIVE,
    },
    S.PRE_MASTER: {
        **_OPERATIONAL,
        E.QUALIFICATION_TIMEOUT_EXPIRES: S.MASTER,
        E.RS_SLAVE: S.UNCALIBRATED,
        E.RS_PASSIVE: S.PASSIVE,
    },
    S.MASTER: {**_OPERATIONAL, E.RS_SLAVE: S.UNCALIBRATED, E.RS_PASSIVE: S.PASSIVE},
    S.PASSIVE: {
        **_OPERATIONAL,
        E.ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES: S.MASTER,
        E.RS_MASTER: S.PRE_MASTER,
        E.RS_GRAND_MASTER: S.MASTER,
        E.RS_SLAVE: S.UNCALIBRATED,
    },
    S.UNCALIBRATED: {
        **_OPERATIONAL,
        E.ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES: S.MASTER,
        E.MASTER_CLOCK_SELECTED: S.SLAVE,
        E.RS_MASTER: S.PRE_MASTER,
        E.RS_GRAND_MASTER: S.MASTER,
        E.RS_PASSIVE: S.PASSIVE,
    },
    S.SLAVE: {
        **_OPERATIONAL,
        E.SYNCHRONIZATION_FAULT: S.UNCALIBRATED,
        E.MASTER_CLOCK_CHANGED: S.UNCALIBRATED,
        E.ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES: S.MASTER,
        E.RS_MASTER: S.PRE_MASTER,
        E.RS_GRAND_MASTER: S.MASTER,
        E.RS_PASSIVE: S.PASSIVE,
    },
}

_TO_LISTENING = {E.ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES: S.LISTENING, E.RS_MASTER: S.LISTENING,
                 E.RS_GRAND_MASTER: S.LISTENING, E.RS_PASSIVE: S.LISTENING}
_SLAVE_ONLY: dict[PortState, dict[Event, PortState]] = {
    S.INITIALIZING: {**_OPERATIONAL, E.INIT_COMPLETE: S.LISTENING},
    S.FAULTY: dict(_FULL[S.FAULTY]),
    S.DISABLED: dict(_FULL[S.DISABLED]),
    S.LISTENING: {**_OPERATIONAL, E.RS_SLAVE: S.UNCALIBRATED},
    S.UNCALIBRATED: {**_OPERATIONAL, **_TO_LISTENING, E.MASTER_CLOCK_SELECTED: S.SLAVE},
    S.SLAVE: {**_OPERATIONAL, **_TO_LISTENING, E.SYNCHRONIZATION_FAULT: S.UNCALIBRATED,
              E.MASTER_CLOCK_CHANGED: S.UNCALIBRATED},
    # a slave-only port never enters these; if it is found there, it returns to LISTENING
    S.PRE_MASTER: {**_OPERATIONAL, **{e: S.LISTENING for e in Event if e not in _OPERATIONAL}},
    S.MASTER: {**_OPERATIONAL, **{e: S.LISTENING for e in Event if e not in _OPERATIONAL}},
    S.PASSIVE: {**_OPERATIONAL, **{e: S.LISTENING for e in Event if e not in _OPERATIONAL}},
}

TABLE: Mapping[PortState, Mapping[Event, PortState]] = MappingProxyType({k: MappingProxyType(v) for k, v in _FULL.items()})
SLAVE_ONLY_TABLE: Mapping[PortState, Mapping[Event, PortState]] = MappingProxyType(
    {k: MappingProxyType(v) for k, v in _SLAVE_ONLY.items()}
)


def transition(state: PortState, event: Event, *, slave_only: bool = False) -> PortState:
    """The next state of a port in ``state`` on ``event`` (unchanged if the table has no entry)."""
    table = SLAVE_ONLY_TABLE if slave_only else TABLE
    return table[PortState(state)].get(event, PortState(state))
