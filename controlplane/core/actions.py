"""The closed set of actions the core returns. The runtime matches every variant (assert_never).

Time bases: ``*_ns`` fields named ``deadline_ns``/``now_ns`` are host monotonic time (timers);
timestamps of PTP messages are PTP time of the local clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from controlplane.codec.enums import PortState
from controlplane.codec.types import PortIdentity

__all__ = [
    "Action",
    "AdjustClock",
    "ArmTimer",
    "Dest",
    "Fault",
    "OffsetSample",
    "ParentChanged",
    "ProgramDataplane",
    "SendMessage",
    "StateChanged",
]


class Dest:
    """Where a message goes: multicast to the port's PTP group (primary or peer-delay), or unicast."""

    PRIMARY = "primary"  # 224.0.1.129 / ff0e::181 / 01:1B:19:00:00:00
    PDELAY = "pdelay"  # 224.0.0.107 / ff02::6b / 01:80:C2:00:00:0E


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send ``message`` (a codec message dataclass) on ``port``.

    ``event`` selects the event socket (port 319) and asks for a TX timestamp; it is then returned
    with ``handle_tx_timestamp(tx_token, tx_ts_ns, now_ns)``. ``dest`` is Dest.PRIMARY / Dest.PDELAY
    or a unicast address (opaque to the core: whatever the runtime gave with the received message).

    ``one_step`` (like hardware one-step): for a Sync, write the transmission time into
    originTimestamp; for a Pdelay_Resp, add (transmission time - ``request_receipt_ns``) to the
    correctionField. Both in the local clock's PTP time.
    """

    port: int
    message: object
    event: bool
    dest: object = Dest.PRIMARY
    tx_token: int | None = None
    one_step: bool = False
    request_receipt_ns: int | None = None


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Informational: the earliest deadline (host monotonic ns) changed. ``next_deadline_ns()`` is authoritative."""

    deadline_ns: int


@dataclass(frozen=True, slots=True)
class AdjustClock:
    """Adjust the local clock: set frequency to ``freq_ppb`` (if not None), then add ``step_ns``."""

    freq_ppb: float | None = None
    step_ns: int | None = None
    offset_ns: int | None = None  # the offset that caused it (for logs)


@dataclass(frozen=True, slots=True)
class ProgramDataplane:
    """Per-port values the eBPF dataplane applies (transparent clock / BC correction)."""

    port: int
    mean_link_delay_ns: int
    delay_asymmetry_ns: int
    rate_ratio: float
    enabled: bool


@dataclass(frozen=True, slots=True)
class StateChanged:
    """ptp4l style: "port 1: LISTENING to SLAVE on RS_SLAVE"."""

    port: int
    old: PortState
    new: PortState
    event: str

    def __str__(self) -> str:
        return f"port {self.port}: {self.old.name} to {self.new.name} on {self.event}"


@dataclass(frozen=True, slots=True)
class ParentChanged:
    parent_port_identity: PortIdentity
    grandmaster_identity: bytes
    steps_removed: int

    def __str__(self) -> str:
        return f"selected best master clock {self.grandmaster_identity.hex()} via {self.parent_port_identity}"


@dataclass(frozen=True, slots=True)
class OffsetSample:
    """ptp4l style: "master offset -12 s2 freq +3 path delay 1500"."""

    port: int
    offset_ns: int
    mean_path_delay_ns: int
    freq_ppb: float
    servo_state: int

    def __str__(self) -> str:
        return f"master offset {self.offset_ns:10d} s{self.servo_state} freq {self.freq_ppb:+7.0f} path delay {self.mean_path_delay_ns:9d}"


@dataclass(frozen=True, slots=True)
class Fault:
    """A protocol-level fault on ``port`` (the port went FAULTY) or a dropped bad message."""

    port: int
    reason: str


Action = Union[SendMessage, ArmTimer, AdjustClock, ProgramDataplane, StateChanged, ParentChanged, OffsetSample, Fault]
