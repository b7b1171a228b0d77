"""Configuration: ONE declarative table of options, ptp4l's spellings, validated into frozen dataclasses.

The table (``OPTIONS``) says for every option its scope (``global`` only in ``[global]``; ``port``
in ``[global]`` as the default for every port, or in a per-interface section), its type, default
and range. ``parse({"global": {...}, "eth0": {...}})`` returns a frozen ``ClockConfig``; an unknown
option, a global option in a port section, a malformed or out-of-range value raises ``ConfigError``
naming the option, the section and what is allowed.

This module never reads files: the runtime's ptp4l-style reader turns a file into the
``dict[section, dict[option, str]]`` this takes (and handles ``[unicast_master_table]`` sections
itself, which may repeat and so are not options).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "ClockConfig",
    "ClockServo",
    "ClockType",
    "ConfigError",
    "DelayMechanismOption",
    "NetworkTransport",
    "OPTIONS",
    "Option",
    "OptionType",
    "PortConfig",
    "Scope",
    "TimeStamping",
    "parse",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT8_MIN = -128
INT8_MAX = 127
DBL_MAX = 1.7976931348623157e308
GLOBAL = "global"


class ConfigError(ValueError):
    """A bad configuration: names the option, the section and what is allowed."""

    def __init__(self, reason: str, *, option: str | None = None, section: str | None = None) -> None:
        self.reason = reason
        self.option = option
        self.section = section
        where = []
        if option is not None:
            where.append(f"option {option!r}")
        if section is not None:
            where.append(f"in section [{section}]")
        super().__init__(f"{' '.join(where)}: {reason}" if where else reason)


class Scope(enum.Enum):
    GLOBAL = "global"  # only in [global]
    PORT = "port"  # in [global] (default for every port) or in a per-interface section


class OptionType(enum.Enum):
    INT = "int"
    BOOL = "bool"  # ptp4l writes these as integers 0/1
    FLOAT = "float"
    STRING = "string"
    ENUM = "enum"


class ClockType(enum.StrEnum):
    OC = "OC"
    BC = "BC"
    E2E_TC = "E2E_TC"
    P2P_TC = "P2P_TC"


class DelayMechanismOption(enum.StrEnum):
    """ptp4l's delay_mechanism values (Auto is ptp4l's, not a wire value: see codec DelayMechanism)."""

    AUTO = "Auto"
    E2E = "E2E"
    P2P = "P2P"


class NetworkTransport(enum.StrEnum):
    UDPV4 = "UDPv4"
    UDPV6 = "UDPv6"
    L2 = "L2"


class ClockServo(enum.StrEnum):
    PI = "pi"
    LINREG = "linreg"


class TimeStamping(enum.StrEnum):
    HARDWARE = "hardware"
    SOFTWARE = "software"
    LEGACY_HW = "legacy"


class DelayFilter(enum.StrEnum):
    MOVING_MEDIAN = "moving_median"
    MOVING_AVERAGE = "moving_average"


class DatasetComparison(enum.StrEnum):
    IEEE1588 = "ieee1588"
    G8275 = "G.8275.x"


@dataclass(frozen=True)
class Option:
    """One row of the table. ``attr`` is the snake_case attribute on ClockConfig / PortConfig."""

    name: str
    attr: str
    scope: Scope
    type: OptionType
    default: Any
    min: float | None = None
    max: float | None = None
    choices: type[enum.StrEnum] | None = None
    doc: str = ""

    def allowed(self) -> str:
        if self.type is OptionType.ENUM:
            assert self.choices is not None
            return "one of " + ", ".join(c.value for c in self.choices)
        if self.type is OptionType.BOOL:
            return "0 or 1"
        if self.type is OptionType.STRING:
            return "a string"
        lo = "-inf" if self.min is None else _fmt(self.min)
        hi = "+inf" if self.max is None else _fmt(self.max)
        kind = "an integer" if self.type is OptionType.INT else "a number"
        return f"{kind} in [{lo}, {hi}]"

    def convert(self, text: str, section: str) -> Any:
        """Parse ``text`` (as written in a config file) into this option's Python value."""
        raw = text.strip()
        t = self.type
        if t is OptionType.STRING:
            return raw
        if t is OptionType.ENUM:
            assert self.choices is not None
            for choice in self.choices:
                if choice.value == raw:
                    return choice
            # ptp4l's enum names are case-sensitive; accept case-insensitive input only if unambiguous
            folded = [c for c in self.choices if c.value.lower() == raw.lower()]
            if len(folded) == 1:
                return folded[0]
            raise ConfigError(f"{raw!r} is not allowed; expected {self.allowed()}", option=self.name, section=section)
        if t in (OptionType.INT, OptionType.BOOL):
            try:
                value = int(raw, 0)  # like strtol(..., 0): decimal, 0x hex, 0o octal
            except ValueError:
                try:
                    value = int(raw, 10)  # "010" is 10, not a syntax error
                except ValueError:
                    raise ConfigError(f"{raw!r} is not an integer; expected {self.allowed()}", option=self.name, section=section) from None
            if t is OptionType.BOOL:
                if value not in (0, 1):
                    raise ConfigError(f"{value} is out of range; expected {self.allowed()}", option=self.name, section=section)
                return bool(value)
            self._check_range(value, section)
            return value
        try:
            fvalue = float(raw)
        except ValueError:
            raise ConfigError(f"{raw!r} is not a number; expected {self.allowed()}", option=self.name, section=section) from None
        if not math.isfinite(fvalue):
            raise ConfigError(f"{raw!r} is not finite; expected {self.allowed()}", option=self.name, section=section)
        self._check_range(fvalue, section)
        return fvalue

    def _check_range(self, value: float, section: str) -> None:
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ConfigError(f"{_fmt(value)} is out of range; expected {self.allowed()}", option=self.name, section=section)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e18 else repr(v)


G, P = Scope.GLOBAL, Scope.PORT
I, B, F, S, E = OptionType.INT, OptionType.BOOL, OptionType.FLOAT, OptionType.STRING, OptionType.ENUM

# name, attr, scope, type, default, min, max, [choices], doc  -- defaults are linuxptp 3.1.1's
OPTIONS: tuple[Option, ...] = (
    # --- default data set (global)
    Option("twoStepFlag", "two_step_flag", G, B, True, doc="send Follow_Up after Sync"),
    Option("slaveOnly", "slave_only", G, B, False, doc="never become master"),
    Option("priority1", "priority1", G, I, 128, 0, 255),
    Option("priority2", "priority2", G, I, 128, 0, 255),
    Option("domainNumber", "domain_number", G, I, 0, 0, 127),
    Option("clockClass", "clock_class", G, I, 248, 0, 255),
    Option("clockAccuracy", "clock_accuracy", G, I, 0xFE, 0, 255),
    Option("offsetScaledLogVariance", "offset_scaled_log_variance", G, I, 0xFFFF, 0, 0xFFFF),
    Option("clockIdentity", "clock_identity", G, S, "000000.0000.000000", doc="all zeros: derive from the MAC"),
    Option("utc_offset", "utc_offset", G, I, 37, 0, INT32_MAX),
    Option("timeSource", "time_source", G, I, 0xA0, 0x10, 0xFE),
    Option("gmCapable", "gm_capable", G, B, True),
    Option("maxStepsRemoved", "max_steps_removed", G, I, 255, 2, 255),
    Option("dataset_comparison", "dataset_comparison", G, E, DatasetComparison.IEEE1588, choices=DatasetComparison),
    Option("G.8275.defaultDS.localPriority", "local_priority", G, I, 128, 1, 255, doc="G.8275 placeholder"),
    Option("path_trace_enabled", "path_trace_enabled", G, B, False),
    Option("clock_type", "clock_type", G, E, ClockType.OC, choices=ClockType),
    Option("boundary_clock_jbod", "boundary_clock_jbod", G, B, False),
    Option("tc_spanning_tree", "tc_spanning_tree", G, B, False),
    Option("assume_two_step", "assume_two_step", G, B, False),
    Option("check_fup_sync", "check_fup_sync", G, B, False),
    # --- servo and clock (global)
    Option("free_running", "free_running", G, B, False, doc="never adjust the clock; report offsets only"),
    Option("freq_est_interval", "freq_est_interval", G, I, 1, 0, INT32_MAX),
    Option("clock_servo", "clock_servo", G, E, ClockServo.PI, choices=ClockServo),
    Option("step_threshold", "step_threshold", G, F, 0.0, 0.0, DBL_MAX, doc="seconds; 0 = never step after the first"),
    Option("first_step_threshold", "first_step_threshold", G, F, 0.00002, 0.0, DBL_MAX, doc="seconds"),
    Option("max_frequency", "max_frequency", G, I, 900000000, 0, INT32_MAX, doc="ppb"),
    Option("sanity_freq_limit", "sanity_freq_limit", G, I, 200000000, 0, INT32_MAX, doc="ppb"),
    Option("pi_proportional_const", "pi_proportional_const", G, F, 0.0, 0.0, DBL_MAX),
    Option("pi_integral_const", "pi_integral_const", G, F, 0.0, 0.0, DBL_MAX),
    Option("pi_proportional_scale", "pi_proportional_scale", G, F, 0.0, 0.0, DBL_MAX),
    Option("pi_proportional_exponent", "pi_proportional_exponent", G, F, -0.3, -DBL_MAX, DBL_MAX),
    Option("pi_proportional_norm_max", "pi_proportional_norm_max", G, F, 0.7, 0.0, 1.0),
    Option("pi_integral_scale", "pi_integral_scale", G, F, 0.0, 0.0, DBL_MAX),
    Option("pi_integral_exponent", "pi_integral_exponent", G, F, 0.4, -DBL_MAX, DBL_MAX),
    Option("pi_integral_norm_max", "pi_integral_norm_max", G, F, 0.3, 0.0, 2.0),
    Option("time_stamping", "time_stamping", G, E, TimeStamping.HARDWARE, choices=TimeStamping),
    Option("tx_timestamp_timeout", "tx_timestamp_timeout", G, I, 1, 1, INT32_MAX, doc="milliseconds"),
    Option("summary_interval", "summary_interval", G, I, 0, INT32_MIN, INT32_MAX, doc="log2 seconds"),
    # --- management / logging (global)
    Option("uds_address", "uds_address", G, S, "/var/run/ptp4l"),
    Option("logging_level", "logging_level", G, I, 6, 0, 7),
    Option("verbose", "verbose", G, B, False),
    Option("use_syslog", "use_syslog", G, B, True),
    Option("message_tag", "message_tag", G, S, ""),
    Option("userDescription", "user_description", G, S, ""),
    Option("manufacturerIdentity", "manufacturer_identity", G, S, "00:00:00"),
    Option("productDescription", "product_description", G, S, ";;"),
    Option("revisionData", "revision_data", G, S, ";;"),
    # --- ptp-switch's own (global)
    Option("phc_device", "phc_device", G, S, "", doc="ptp-switch: /dev/ptpN to discipline; empty = virtual clock"),
    Option("one_step_dataplane", "one_step_dataplane", G, B, False,
           doc="ptp-switch: with twoStepFlag 0 and software stamps, the eBPF dataplane at each port's tc egress adds "
               "the time from the clock read to there to every one-step Sync / Pdelay_Resp this clock sends"),
    Option("outlier_filter", "outlier_filter", G, B, True, doc="ptp-switch: drop path-delay samples far from the recent median"),
    Option("outlier_filter_threshold", "outlier_filter_threshold", G, F, 5.0, 1.0, 1000.0,
           doc="ptp-switch: reject a delay sample beyond this many times max(MAD, 1 us) from the median"),
    Option("announce_receipt_randomization", "announce_receipt_randomization", G, B, True,
           doc="ptp-switch: add a random 0..1 announce interval to the receipt timeout (IEEE 1588 9.2.6.12)"),
    Option("allow_network_management_set", "allow_network_management_set", G, B, False,
           doc="ptp-switch: obey management SET and COMMAND received on PTP ports (default: only on the local "
               "UNIX socket; from the network they are refused with NOT_SUPPORTED, as ptp4l does)"),
    Option("mgmt_rate_limit", "mgmt_rate_limit", G, F, 10.0, 0.0, 1e9,
           doc="ptp-switch: management messages/s accepted per source address from PTP ports (burst 2x; 0 = unlimited)"),
    Option("mgmt_global_rate_limit", "mgmt_global_rate_limit", G, F, 50.0, 0.0, 1e9,
           doc="ptp-switch: management messages/s accepted from all PTP ports together (burst 2x; 0 = unlimited; "
               "responses to forged sources fill socket buffers as for signaling_global_rate_limit)"),
    Option("signaling_rate_limit", "signaling_rate_limit", G, F, 20.0, 0.0, 1e9,
           doc="ptp-switch: signaling (unicast negotiation) messages/s accepted per source address (burst 2x; 0 = unlimited)"),
    Option("signaling_global_rate_limit", "signaling_global_rate_limit", G, F, 50.0, 0.0, 1e9,
           doc="ptp-switch: signaling messages/s accepted from all sources together (burst 2x; 0 = unlimited). Every "
               "request is answered to its (unverifiable) source address; replies to forged addresses wait in the "
               "kernel's neighbour queues and fill the socket buffers the multicast service needs: measured, a forged "
               "flood starved a slave at 2000/s and not at 50/s (tests/lab/test_load.py). Raise for many clients"),
    Option("rate_limit_max_sources", "rate_limit_max_sources", G, I, 4096, 1, 1 << 20,
           doc="ptp-switch: source addresses tracked per limited message kind (least recently seen forgotten)"),
    Option("lab_sigusr1_step_ns", "lab_sigusr1_step_ns", G, I, 0, INT32_MIN, INT32_MAX,
           doc="ptp-switch lab instrumentation: on SIGUSR1 step the daemon's virtual clock by this many ns "
               "(never the system clock; 0 = off)"),
    # --- port data set (port)
    Option("logAnnounceInterval", "log_announce_interval", P, I, 1, INT8_MIN, INT8_MAX),
    Option("logSyncInterval", "log_sync_interval", P, I, 0, INT8_MIN, INT8_MAX),
    Option("logMinDelayReqInterval", "log_min_delay_req_interval", P, I, 0, INT8_MIN, INT8_MAX),
    Option("logMinPdelayReqInterval", "log_min_pdelay_req_interval", P, I, 0, INT8_MIN, INT8_MAX),
    Option("operLogSyncInterval", "oper_log_sync_interval", P, I, 0, INT8_MIN, INT8_MAX),
    Option("operLogPdelayReqInterval", "oper_log_pdelay_req_interval", P, I, 0, INT8_MIN, INT8_MAX),
    Option("announceReceiptTimeout", "announce_receipt_timeout", P, I, 3, 2, 255),
    Option("syncReceiptTimeout", "sync_receipt_timeout", P, I, 0, 0, 255),
    Option("delayAsymmetry", "delay_asymmetry", P, I, 0, INT32_MIN, INT32_MAX, doc="nanoseconds"),
    Option("delay_mechanism", "delay_mechanism", P, E, DelayMechanismOption.E2E, choices=DelayMechanismOption),
    Option("network_transport", "network_transport", P, E, NetworkTransport.UDPV4, choices=NetworkTransport),
    Option("masterOnly", "master_only", P, B, False),
    Option("G.8275.portDS.localPriority", "port_local_priority", P, I, 128, 1, 255, doc="G.8275 placeholder"),
    Option("fault_reset_interval", "fault_reset_interval", P, I, 4, INT8_MIN, INT8_MAX, doc="log2 seconds"),
    Option("neighborPropDelayThresh", "neighbor_prop_delay_thresh", P, I, 20000000, 0, INT32_MAX, doc="nanoseconds"),
    Option("min_neighbor_prop_delay", "min_neighbor_prop_delay", P, I, -20000000, INT32_MIN, -1, doc="nanoseconds"),
    Option("delay_filter", "delay_filter", P, E, DelayFilter.MOVING_MEDIAN, choices=DelayFilter),
    Option("delay_filter_length", "delay_filter_length", P, I, 10, 1, INT32_MAX),
    Option("ingressLatency", "ingress_latency", P, I, 0, INT32_MIN, INT32_MAX, doc="nanoseconds"),
    Option("egressLatency", "egress_latency", P, I, 0, INT32_MIN, INT32_MAX, doc="nanoseconds"),
    Option("transportSpecific", "transport_specific", P, I, 0, 0, 0x0F),
    Option("udp_ttl", "udp_ttl", P, I, 1, 1, 255),
    Option("udp6_scope", "udp6_scope", P, I, 0x0E, 0x00, 0x0F),
    Option("ptp_dst_mac", "ptp_dst_mac", P, S, "01:1B:19:00:00:00"),
    Option("p2p_dst_mac", "p2p_dst_mac", P, S, "01:80:C2:00:00:0E"),
    Option("hybrid_e2e", "hybrid_e2e", P, B, False),
    Option("inhibit_announce", "inhibit_announce", P, B, False),
    Option("ignore_source_id", "ignore_source_id", P, B, False),
    Option("follow_up_info", "follow_up_info", P, B, False),
    # --- unicast (port)
    Option("unicast_listen", "unicast_listen", P, B, False),
    Option("unicast_master_table", "unicast_master_table", P, I, 0, 0, INT32_MAX, doc="table_id; 0 = none"),
    Option("unicast_req_duration", "unicast_req_duration", P, I, 3600, 10, INT32_MAX, doc="seconds"),
    Option("inhibit_multicast_service", "inhibit_multicast_service", P, B, False),
    # --- unicast server policy (port; ptp-switch, not in ptp4l): what a unicast_listen port grants
    Option("unicast_min_duration", "unicast_min_duration", P, I, 60, 1, INT32_MAX,
           doc="ptp-switch: seconds; shorter requests are denied"),
    Option("unicast_max_duration", "unicast_max_duration", P, I, 1000, 1, INT32_MAX,
           doc="ptp-switch: seconds; longer requests get this duration"),
    Option("unicast_max_clients", "unicast_max_clients", P, I, 10000, 0, INT32_MAX,
           doc="ptp-switch: client addresses holding a grant"),
    Option("unicast_allow", "unicast_allow", P, S, "",
           doc="ptp-switch: client prefixes (comma/space separated); empty = everybody"),
    Option("unicast_min_logSyncInterval", "unicast_min_log_sync_interval", P, I, -7, INT8_MIN, INT8_MAX,
           doc="ptp-switch: fastest Sync rate granted (log2 s)"),
    Option("unicast_min_logAnnounceInterval", "unicast_min_log_announce_interval", P, I, -3, INT8_MIN, INT8_MAX,
           doc="ptp-switch: fastest Announce rate granted (log2 s)"),
    Option("unicast_min_logMinDelayReqInterval", "unicast_min_log_min_delay_req_interval", P, I, -7, INT8_MIN, INT8_MAX,
           doc="ptp-switch: fastest Delay_Resp rate granted (log2 s)"),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class PortConfig:
    """Validated per-port options (attribute names are OPTIONS[...].attr)."""

    log_announce_interval: int = 1
    log_sync_interval: int = 0
    log_min_delay_req_interval: int = 0
    log_min_pdelay_req_interval: int = 0
    oper_log_sync_interval: int = 0
    oper_log_pdelay_req_interval: int = 0
    announce_receipt_timeout: int = 3
    sync_receipt_timeout: int = 0
    delay_asymmetry: int = 0
    delay_mechanism: DelayMechanismOption = DelayMechanismOption.E2E
    network_transport: NetworkTransport = NetworkTransport.UDPV4
    master_only: bool = False
    port_local_priority: int = 128
    fault_reset_interval: int = 4
    neighbor_prop_delay_thresh: int = 20000000
    min_neighbor_prop_delay: int = -20000000
    delay_filter: DelayFilter = DelayFilter.MOVING_MEDIAN
    delay_filter_length: int = 10
    ingress_latency: int = 0
    egress_latency: int = 0
    transport_specific: int = 0
    udp_ttl: int = 1
    udp6_scope: int = 0x0E
    ptp_dst_mac: str = "01:1B:19:00:00:00"
    p2p_dst_mac: str = "01:80:C2:00:00:0E"
    hybrid_e2e: bool = False
    inhibit_announce: bool = False
    ignore_source_id: bool = False
    follow_up_info: bool = False
    unicast_listen: bool = False
    unicast_master_table: int = 0
    unicast_req_duration: int = 3600
    inhibit_multicast_service: bool = False
    unicast_min_duration: int = 60
    unicast_max_duration: int = 1000
    unicast_max_clients: int = 10000
    unicast_allow: str = ""
    unicast_min_log_sync_interval: int = -7
    unicast_min_log_announce_interval: int = -3
    unicast_min_log_min_delay_req_interval: int = -7


@dataclass(frozen=True)
class ClockConfig:
    """Validated global options, the port defaults from [global], and per-interface overrides."""

    two_step_flag: bool = True
    slave_only: bool = False
    priority1: int = 128
    priority2: int = 128
    domain_number: int = 0
    clock_class: int = 248
    clock_accuracy: int = 0xFE
    offset_scaled_log_variance: int = 0xFFFF
    clock_identity: str = "000000.0000.000000"
    utc_offset: int = 37
    time_source: int = 0xA0
    gm_capable: bool = True
    max_steps_removed: int = 255
    dataset_comparison: DatasetComparison = DatasetComparison.IEEE1588
    local_priority: int = 128
    path_trace_enabled: bool = False
    clock_type: ClockType = ClockType.OC
    boundary_clock_jbod: bool = False
    tc_spanning_tree: bool = False
    assume_two_step: bool = False
    check_fup_sync: bool = False
    free_running: bool = False
    freq_est_interval: int = 1
    clock_servo: ClockServo = ClockServo.PI
    step_threshold: float = 0.0
    first_step_threshold: float = 0.00002
    max_frequency: int = 900000000
    sanity_freq_limit: int = 200000000
    pi_proportional_const: float = 0.0
    pi_integral_const: float = 0.0
    pi_proportional_scale: float = 0.0
    pi_proportional_exponent: float = -0.3
    pi_proportional_norm_max: float = 0.7
    pi_integral_scale: float = 0.0
    pi_integral_exponent: float = 0.4
    pi_integral_norm_max: float = 0.3
    time_stamping: TimeStamping = TimeStamping.HARDWARE
    tx_timestamp_timeout: int = 1
    summary_interval: int = 0
    uds_address: str = "/var/run/ptp4l"
    logging_level: int = 6
    verbose: bool = False
    use_syslog: bool = True
    message_tag: str = ""
    user_description: str = ""
    manufacturer_identity: str = "00:00:00"
    product_description: str = ";;"
    revision_data: str = ";;"
    phc_device: str = ""
    one_step_dataplane: bool = False
    outlier_filter: bool = True
    outlier_filter_threshold: float = 5.0
    announce_receipt_randomization: bool = True
    allow_network_management_set: bool = False
    mgmt_rate_limit: float = 10.0
    mgmt_global_rate_limit: float = 50.0
    signaling_rate_limit: float = 20.0
    signaling_global_rate_limit: float = 50.0
    rate_limit_max_sources: int = 4096
    lab_sigusr1_step_ns: int = 0
    port_defaults: PortConfig = PortConfig()
    # (interface name, its PortConfig) for each per-interface section, in file order
    ports: tuple[tuple[str, PortConfig], ...] = ()

    def port(self, name: str) -> PortConfig:
        """The PortConfig for interface ``name`` (port_defaults if it had no section)."""
        for port_name, cfg in self.ports:
            if port_name == name:
                return cfg
        return self.port_defaults

    @property
    def port_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.ports)


def parse(options: Mapping[str, Mapping[str, str]]) -> ClockConfig:
    """Validate ``{section: {option: text}}`` into a ClockConfig.

    ``[global]`` takes global and port options (the latter become every port's default);
    any other section is an interface name and takes port options only. Values are strings as
    written in a ptp4l config file (already-typed ints/floats/bools are accepted too).
    """
    global_values: dict[str, Any] = {}
    port_default_values: dict[str, Any] = {}
    for section, items in options.items():
        if section != GLOBAL:
            continue
        for name, text in items.items():
            opt = _lookup(name, section)
            value = opt.convert(_as_text(text), section)
            (global_values if opt.scope is Scope.GLOBAL else port_default_values)[opt.attr] = value
    port_defaults = PortConfig(**port_default_values)
    ports: list[tuple[str, PortConfig]] = []
    for section, items in options.items():
        if section == GLOBAL:
            continue
        if not section or section.strip() != section:
            raise ConfigError("interface section names must be non-empty and without spaces", section=section)
        values: dict[str, Any] = {}
        for name, text in items.items():
            opt = _lookup(name, section)
            if opt.scope is Scope.GLOBAL:
                raise ConfigError("is a global option; put it in [global]", option=name, section=section)
            values[opt.attr] = opt.convert(_as_text(text), section)
        ports.append((section, dataclasses.replace(port_defaults, **values)))
    cfg = ClockConfig(port_defaults=port_defaults, ports=tuple(ports), **global_values)
    return _cross_check(cfg)


def _lookup(name: str, section: str) -> Option:
    opt = OPTIONS_BY_NAME.get(name)
    if opt is None:
        near = [o.name for o in OPTIONS if o.name.lower() == name.lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown option{hint}", option=name, section=section)
    return opt


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _cross_check(cfg: ClockConfig) -> ClockConfig:
    if cfg.phc_device and not cfg.phc_device.startswith("/dev/ptp"):
        raise ConfigError(f"{cfg.phc_device!r} is not a /dev/ptpN device", option="phc_device", section=GLOBAL)
    if cfg.one_step_dataplane and cfg.two_step_flag:
        raise ConfigError("needs twoStepFlag 0 (it stamps one-step sends)", option="one_step_dataplane", section=GLOBAL)
    if cfg.one_step_dataplane and (cfg.phc_device or cfg.time_stamping is not TimeStamping.SOFTWARE):
        raise ConfigError("is for the virtual clock with time_stamping software (a PHC stamps in hardware)",
                          option="one_step_dataplane", section=GLOBAL)
    if cfg.slave_only and cfg.clock_class != 255:
        # ptp4l forces clockClass 255 for a slave-only clock (IEEE 1588 8.2.1.3.1.1)
        cfg = dataclasses.replace(cfg, clock_class=255)
    return cfg
