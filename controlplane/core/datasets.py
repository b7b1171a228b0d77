"""The IEEE 1588 data sets (clause 8.2) as plain state records; snake_case names of the standard.

They are mutable state owned by a Clock/Port; everything that leaves the core (actions, management
responses) is a frozen copy or an encoded message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.codec.enums import DelayMechanism, PortState, TimeSource
from controlplane.codec.types import ClockQuality, PortIdentity

__all__ = [
    "CurrentDS",
    "DefaultDS",
    "ParentDS",
    "PortDS",
    "TimePropertiesDS",
    "TransparentClockDefaultDS",
    "TransparentClockPortDS",
    "VERSION_NUMBER",
]

VERSION_NUMBER = 2


@dataclass(slots=True)
class DefaultDS:
    clock_identity: bytes
    number_ports: int
    clock_quality: ClockQuality = field(default_factory=ClockQuality)
    priority1: int = 128
    priority2: int = 128
    domain_number: int = 0
    slave_only: bool = False
    two_step_flag: bool = True
    local_priority: int = 128  # G.8275 placeholder

    def __post_init__(self) -> None:
        if len(self.clock_identity) != 8:
            raise ValueError("clock_identity must be 8 octets")
        if not 0 <= self.number_ports <= 0xFFFF:
            raise ValueError("number_ports out of range")
        for name in ("priority1", "priority2"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"{name} out of range 0..255")
        if not 0 <= self.domain_number <= 255:
            raise ValueError("domain_number out of range 0..255")


@dataclass(slots=True)
class CurrentDS:
    steps_removed: int = 0
    offset_from_master_ns: int = 0
    mean_path_delay_ns: int = 0


@dataclass(slots=True)
class ParentDS:
    parent_port_identity: PortIdentity
    grandmaster_identity: bytes
    grandmaster_clock_quality: ClockQuality
    grandmaster_priority1: int
    grandmaster_priority2: int
    parent_stats: bool = False
    observed_parent_offset_scaled_log_variance: int = 0xFFFF
    observed_parent_clock_phase_change_rate: int = 0x7FFFFFFF


@dataclass(slots=True)
class TimePropertiesDS:
    current_utc_offset: int = 37
    current_utc_offset_valid: bool = False
    leap59: bool = False
    leap61: bool = False
    time_traceable: bool = False
    frequency_traceable: bool = False
    ptp_timescale: bool = True
    time_source: int = TimeSource.INTERNAL_OSCILLATOR


@dataclass(slots=True)
class PortDS:
    port_identity: PortIdentity
    port_state: PortState = PortState.INITIALIZING
    log_min_delay_req_interval: int = 0
    peer_mean_path_delay_ns: int = 0
    log_announce_interval: int = 1
    announce_receipt_timeout: int = 3
    log_sync_interval: int = 0
    delay_mechanism: DelayMechanism = DelayMechanism.E2E
    log_min_pdelay_req_interval: int = 0
    version_number: int = VERSION_NUMBER
    delay_asymmetry_ns: int = 0
    master_only: bool = False


@dataclass(slots=True)
class TransparentClockDefaultDS:
    clock_identity: bytes
    number_ports: int
    delay_mechanism: DelayMechanism = DelayMechanism.E2E
    primary_domain: int = 0


@dataclass(slots=True)
class TransparentClockPortDS:
    port_identity: PortIdentity
    faulty_flag: bool = False
    log_min_pdelay_req_interval: int = 0
    peer_mean_path_delay_ns: int = 0
    neighbor_rate_ratio: float = 1.0
