"""The control API the daemon implements: snapshots as data, validation, live apply, persistence.

Three parties:

* the daemon implements ``ControlBackend`` (four small methods: snapshots of the clock, ports and
  unicast grants, and ``apply_port_settings`` to apply one port's complete, already validated
  settings live);
* ``ControlApi`` wraps a backend: it resolves port names, validates a ``PortChange`` against the
  core's option table (``controlplane.core.config.OPTIONS`` -- one source of truth for ranges),
  applies it all-or-nothing, persists it on request to a JSON state file the daemon reads at start
  (``restore_persisted``), and fans events out to watchers (``EventHub``);
* the gRPC server (``grpc_server.py``), ``ptp-switch ctl`` and the metrics endpoint
  (``metrics.py``) are thin translations of these dataclasses.

Daemon wiring (all on the daemon's asyncio loop)::

    api = ControlApi(backend, state_path="/var/lib/ptp-switch/NAME.state.json")
    api.restore_persisted()                          # before the ports start
    handle = await grpc_server.start(api, "unix:/var/run/ptp-switch/NAME.sock")
    api.publish(PortStateChanged(...))               # whenever the core reports a fact
    await handle.stop()

Errors are typed: ``InvalidArgument`` (names the field and its allowed range), ``NotFound`` (unknown
port), ``ApplyFailed`` (the backend could not apply; nothing changed). A rejected request changes
nothing: the whole request is validated first, then applied with one backend call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, Union

from controlplane.codec.enums import PortState
from controlplane.codec.types import format_clock_identity
from controlplane.core.config import (
    OPTIONS_BY_NAME,
    ConfigError,
    DelayMechanismOption,
    NetworkTransport,
    PortConfig,
)

__all__ = [
    "ApiError",
    "ApplyFailed",
    "ClockQuality",
    "ClockSnapshot",
    "ControlApi",
    "ControlBackend",
    "CurrentDs",
    "DefaultDs",
    "Event",
    "EventHub",
    "GrandmasterChanged",
    "GrantSnapshot",
    "InvalidArgument",
    "NotFound",
    "OffsetSample",
    "ParentDs",
    "PathDelaySample",
    "PortChange",
    "PortConfigChanged",
    "PortSettings",
    "PortSnapshot",
    "PortStateChanged",
    "SetResult",
    "TimePropertiesDs",
    "UnicastGrantChanged",
    "UnicastMaster",
    "load_state",
]

log = logging.getLogger(__name__)

STATE_VERSION = 1
LOG_QUERY_INTERVAL_RANGE = (-128, 127)  # Integer8, like every log interval on the wire
MAX_UNICAST_MASTERS = 64


# ============================================================================ errors


class ApiError(Exception):
    """A request the API refuses. ``code`` is the gRPC status name; ``field`` the request field."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)


class InvalidArgument(ApiError):
    """A value is malformed or out of range (the caller's fault); the message names the field."""

    code = "INVALID_ARGUMENT"


class NotFound(ApiError):
    """No such port."""

    code = "NOT_FOUND"


class ApplyFailed(ApiError):
    """The daemon could not apply a valid change (or write the state file); nothing changed."""

    code = "UNAVAILABLE"


# ============================================================================ settings


@dataclass(frozen=True)
class UnicastMaster:
    """One row of a unicast master table: ptp4l's ``UDPv4 10.0.0.1`` line."""

    network_protocol: NetworkTransport
    address: str


@dataclass(frozen=True)
class PortSettings:
    """Everything SetPortConfig can change on a port: its complete live configuration.

    Names are the API's (IEEE 1588 / YANG in snake_case, units in names); ``OPTION_OF`` maps the
    ones that are ptp4l options to their option-table row.
    """

    port_enable: bool = True
    delay_mechanism: DelayMechanismOption = DelayMechanismOption.E2E
    log_announce_interval: int = 1
    log_sync_interval: int = 0
    log_min_delay_req_interval: int = 0
    log_min_pdelay_req_interval: int = 0
    announce_receipt_timeout: int = 3
    delay_asymmetry_ns: int = 0
    master_only: bool = False
    slave_only: bool = False
    unicast_master_table: tuple[UnicastMaster, ...] = ()
    log_query_interval: int = 0

    @classmethod
    def from_port_config(
        cls,
        cfg: PortConfig,
        *,
        port_enable: bool = True,
        slave_only: bool = False,
        unicast_master_table: Iterable[UnicastMaster] = (),
        log_query_interval: int = 0,
    ) -> "PortSettings":
        """The settings a port runs with when it was configured by ``cfg`` (the core's PortConfig)."""
        return cls(
            port_enable=port_enable,
            delay_mechanism=cfg.delay_mechanism,
            log_announce_interval=cfg.log_announce_interval,
            log_sync_interval=cfg.log_sync_interval,
            log_min_delay_req_interval=cfg.log_min_delay_req_interval,
            log_min_pdelay_req_interval=cfg.log_min_pdelay_req_interval,
            announce_receipt_timeout=cfg.announce_receipt_timeout,
            delay_asymmetry_ns=cfg.delay_asymmetry,
            master_only=cfg.master_only,
            slave_only=slave_only,
            unicast_master_table=tuple(unicast_master_table),
            log_query_interval=log_query_interval,
        )

    def apply_to(self, cfg: PortConfig) -> PortConfig:
        """``cfg`` with this object's ptp4l options replaced (for the daemon's new port config)."""
        return dataclasses.replace(
            cfg,
            delay_mechanism=self.delay_mechanism,
            log_announce_interval=self.log_announce_interval,
            log_sync_interval=self.log_sync_interval,
            log_min_delay_req_interval=self.log_min_delay_req_interval,
            log_min_pdelay_req_interval=self.log_min_pdelay_req_interval,
            announce_receipt_timeout=self.announce_receipt_timeout,
            delay_asymmetry=self.delay_asymmetry_ns,
            master_only=self.master_only,
        )


# API field -> ptp4l option in controlplane.core.config.OPTIONS (the ranges come from there)
OPTION_OF: dict[str, str] = {
    "delay_mechanism": "delay_mechanism",
    "log_announce_interval": "logAnnounceInterval",
    "log_sync_interval": "logSyncInterval",
    "log_min_delay_req_interval": "logMinDelayReqInterval",
    "log_min_pdelay_req_interval": "logMinPdelayReqInterval",
    "announce_receipt_timeout": "announceReceiptTimeout",
    "delay_asymmetry_ns": "delayAsymmetry",
    "master_only": "masterOnly",
}
BOOL_FIELDS = ("port_enable", "master_only", "slave_only")
LIVE_DELAY_MECHANISMS = (DelayMechanismOption.E2E, DelayMechanismOption.P2P)


@dataclass(frozen=True)
class PortChange:
    """A partial update: every field left ``None`` keeps its current value.

    ``unicast_master_table`` (a tuple, possibly empty) replaces the whole table.
    """

    port_enable: bool | None = None
    delay_mechanism: DelayMechanismOption | str | None = None
    log_announce_interval: int | None = None
    log_sync_interval: int | None = None
    log_min_delay_req_interval: int | None = None
    log_min_pdelay_req_interval: int | None = None
    announce_receipt_timeout: int | None = None
    delay_asymmetry_ns: int | None = None
    master_only: bool | None = None
    slave_only: bool | None = None
    unicast_master_table: tuple[UnicastMaster, ...] | None = None
    log_query_interval: int | None = None

    def fields_set(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def is_empty(self) -> bool:
        return not self.fields_set()

    def merged_with(self, older: "PortChange") -> "PortChange":
        """``older`` overridden by the fields this change sets (for the cumulative state file)."""
        return dataclasses.replace(older, **self.fields_set())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self.fields_set().items():
            if name == "unicast_master_table":
                out[name] = [{"network_protocol": str(m.network_protocol.value), "address": m.address} for m in value]
            elif isinstance(value, DelayMechanismOption):
                out[name] = value.value
            else:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: Any) -> "PortChange":
        """Inverse of ``to_json``; raises InvalidArgument for anything else (values checked later)."""
        if not isinstance(data, dict):
            raise InvalidArgument(f"expected an object of port settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name not in known:
                raise InvalidArgument(f"unknown setting {name!r}", field=str(name))
            if name == "unicast_master_table":
                if not isinstance(value, list):
                    raise InvalidArgument("expected a list of {network_protocol, address}", field=name)
                rows = []
                for row in value:
                    if not isinstance(row, dict) or set(row) != {"network_protocol", "address"}:
                        raise InvalidArgument("expected a list of {network_protocol, address}", field=name)
                    rows.append(UnicastMaster(_transport(row["network_protocol"]), str(row["address"])))
                value = tuple(rows)
            kwargs[name] = value
        return cls(**kwargs)


def _transport(value: Any) -> NetworkTransport:
    if isinstance(value, NetworkTransport):
        return value
    for t in NetworkTransport:
        if str(value).lower() == t.value.lower():
            return t
    raise InvalidArgument(
        f"{value!r} is not a network protocol; expected one of " + ", ".join(t.value for t in NetworkTransport),
        field="unicast_master_table.network_protocol",
    )


_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def _check_master(m: UnicastMaster, index: int) -> UnicastMaster:
    where = f"unicast_master_table.addresses[{index}]"
    proto = _transport(m.network_protocol)
    addr = str(m.address).strip()
    if proto is NetworkTransport.L2:
        if not _MAC_RE.match(addr):
            raise InvalidArgument(f"{addr!r} is not a MAC address (L2 unicast master)", field=where)
        return UnicastMaster(proto, addr.lower().replace("-", ":"))
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise InvalidArgument(f"{addr!r} is not an IP address", field=where) from None
    want = 4 if proto is NetworkTransport.UDPV4 else 6
    if ip.version != want:
        raise InvalidArgument(f"{addr!r} is not an IPv{want} address ({proto.value})", field=where)
    if ip.is_multicast or ip.is_unspecified:
        raise InvalidArgument(f"{addr!r} is not a unicast address", field=where)
    return UnicastMaster(proto, str(ip))


def validate_change(current: PortSettings, change: PortChange, *, network_transport: NetworkTransport | None = None) -> PortSettings:
    """The complete settings after ``change``, or InvalidArgument naming the first bad field.

    Ranges come from the core's option table; values must have the right Python type (a bool is
    not an int here, an int is not a bool).
    """
    values = dataclasses.asdict(current)
    values["unicast_master_table"] = current.unicast_master_table
    for name, value in change.fields_set().items():
        if name in BOOL_FIELDS:
            if not isinstance(value, bool):
                raise InvalidArgument(f"{value!r} is not a boolean; expected true or false", field=name)
            values[name] = value
        elif name == "delay_mechanism":
            opt = OPTIONS_BY_NAME[OPTION_OF[name]]
            text = value.value if isinstance(value, DelayMechanismOption) else str(value)
            try:
                mech = opt.convert(text, "port")
            except ConfigError:
                mech = None
            if mech not in LIVE_DELAY_MECHANISMS:
                raise InvalidArgument(
                    f"{text!r} is not allowed; expected one of " + ", ".join(m.value for m in LIVE_DELAY_MECHANISMS),
                    field=name,
                )
            values[name] = mech
        elif name == "unicast_master_table":
            if not isinstance(value, (tuple, list)):
                raise InvalidArgument("expected a list of unicast masters", field=name)
            if len(value) > MAX_UNICAST_MASTERS:
                raise InvalidArgument(f"{len(value)} entries; at most {MAX_UNICAST_MASTERS} allowed", field=name)
            rows = tuple(_check_master(m, i) for i, m in enumerate(value))
            if network_transport is not None:
                for i, m in enumerate(rows):
                    if m.network_protocol is not network_transport:
                        raise InvalidArgument(
                            f"{m.network_protocol.value} entry on a port that runs {network_transport.value}",
                            field=f"unicast_master_table.addresses[{i}]",
                        )
            if len(set(rows)) != len(rows):
                raise InvalidArgument("duplicate entries", field=name)
            values[name] = rows
        elif name == "log_query_interval":
            _check_int(name, value, *LOG_QUERY_INTERVAL_RANGE)
            values[name] = value
        else:
            opt = OPTIONS_BY_NAME[OPTION_OF[name]]
            _check_int(name, value, opt.min, opt.max, option=opt.name)
            values[name] = value
    if values["master_only"] and values["slave_only"]:
        bad = "slave_only" if change.slave_only else "master_only"
        raise InvalidArgument("master_only and slave_only cannot both be true on a port", field=bad)
    return PortSettings(**values)


def _check_int(name: str, value: Any, lo: float | None, hi: float | None, option: str | None = None) -> None:
    src = f" (ptp4l option {option})" if option else ""
    rng = f"[{'-inf' if lo is None else int(lo)}, {'+inf' if hi is None else int(hi)}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{value!r} is not an integer; expected an integer in {rng}{src}", field=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidArgument(f"{value} is out of range; expected an integer in {rng}{src}", field=name)


# ============================================================================ snapshots


@dataclass(frozen=True)
class ClockQuality:
    clock_class: int = 248
    clock_accuracy: int = 0xFE
    offset_scaled_log_variance: int = 0xFFFF


@dataclass(frozen=True)
class DefaultDs:
    clock_identity: str
    number_ports: int
    clock_quality: ClockQuality = ClockQuality()
    priority1: int = 128
    priority2: int = 128
    domain_number: int = 0
    slave_only: bool = False
    two_step_flag: bool = True
    clock_type: str = "OC"


@dataclass(frozen=True)
class CurrentDs:
    steps_removed: int = 0
    offset_from_master_ns: int = 0
    mean_path_delay_ns: int = 0


@dataclass(frozen=True)
class ParentDs:
    parent_clock_identity: str
    parent_port_number: int
    grandmaster_identity: str
    grandmaster_clock_quality: ClockQuality = ClockQuality()
    grandmaster_priority1: int = 128
    grandmaster_priority2: int = 128
    parent_stats: bool = False
    observed_parent_offset_scaled_log_variance: int = 0xFFFF
    observed_parent_clock_phase_change_rate: int = 0x7FFFFFFF


@dataclass(frozen=True)
class TimePropertiesDs:
    current_utc_offset: int = 37
    current_utc_offset_valid: bool = False
    leap59: bool = False
    leap61: bool = False
    time_traceable: bool = False
    frequency_traceable: bool = False
    ptp_timescale: bool = True
    time_source: int = 0xA0


@dataclass(frozen=True)
class ClockSnapshot:
    default_ds: DefaultDs
    current_ds: CurrentDs
    parent_ds: ParentDs
    time_properties_ds: TimePropertiesDs
    frequency_adjustment_ppb: float = 0.0
    servo_state: str = ""


@dataclass(frozen=True)
class PortSnapshot:
    """One port as the operator sees it: identity, state, settings, measurements, counters."""

    name: str  # underlying interface
    port_number: int
    port_state: PortState
    settings: PortSettings
    clock_identity: str = ""
    peer_mean_path_delay_ns: int = 0  # P2P meanLinkDelay (0 when not measured)
    mean_path_delay_ns: int = 0  # E2E, measured on this port (0 when not measured)
    network_transport: NetworkTransport | None = None
    version_number: int = 2
    dataplane_counters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GrantSnapshot:
    """One unicast grant (``role`` SERVER: we grant to ``address``; CLIENT: ``address`` grants to us)."""

    port: str
    role: str
    address: str
    message_type: int  # IEEE 1588 messageType (0x0 Sync, 0x3 Pdelay_Resp, 0x9 Delay_Resp, 0xB Announce)
    log_inter_message_period: int
    duration_s: int
    remaining_ns: int = 0
    renewal_invited: bool = False
    peer_port_identity: tuple[str, int] | None = None


# ============================================================================ events


@dataclass(frozen=True)
class PortStateChanged:
    port: str
    port_number: int
    old_state: PortState
    new_state: PortState
    reason: str = ""


@dataclass(frozen=True)
class GrandmasterChanged:
    old_grandmaster_identity: str
    new_grandmaster_identity: str
    steps_removed: int = 0


@dataclass(frozen=True)
class OffsetSample:
    offset_from_master_ns: int
    mean_path_delay_ns: int
    frequency_adjustment_ppb: float
    servo_state: str = ""


@dataclass(frozen=True)
class PathDelaySample:
    port: str
    delay_mechanism: DelayMechanismOption
    mean_path_delay_ns: int


@dataclass(frozen=True)
class UnicastGrantChanged:
    port: str
    address: str
    message_type: int
    change: str  # GRANTED, RENEWED, DENIED, CANCELLED, EXPIRED
    log_inter_message_period: int = 0
    duration_s: int = 0


@dataclass(frozen=True)
class PortConfigChanged:
    port: PortSnapshot
    persisted: bool = False


Event = Union[PortStateChanged, GrandmasterChanged, OffsetSample, PathDelaySample, UnicastGrantChanged, PortConfigChanged]
EVENT_KINDS: dict[type, str] = {
    PortStateChanged: "port_state",
    GrandmasterChanged: "grandmaster",
    OffsetSample: "offset",
    PathDelaySample: "path_delay",
    UnicastGrantChanged: "unicast_grant",
    PortConfigChanged: "port_config",
}


@dataclass(frozen=True)
class Published:
    """An event as delivered to a watcher: with its sequence number and wall-clock time."""

    sequence: int
    time_unix_ns: int
    event: Event


class Subscription:
    """One watcher's bounded queue on an asyncio loop; the oldest event is dropped when full."""

    def __init__(self, hub: "EventHub", loop: asyncio.AbstractEventLoop, kinds: frozenset[str], maxsize: int) -> None:
        self._hub = hub
        self.loop = loop
        self.kinds = kinds
        self.queue: asyncio.Queue[Published] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def _deliver(self, item: Published) -> None:  # on self.loop
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)

    async def get(self) -> Published:
        return await self.queue.get()

    def close(self) -> None:
        self._hub._remove(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Fan-out of published events to watchers. ``publish`` never blocks and never raises.

    Safe to call from any thread: delivery is scheduled on each watcher's loop.
    """

    def __init__(self, *, queue_size: int = 1024, wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._sequence = 0
        self._queue_size = queue_size
        self._wall_clock_ns = wall_clock_ns
        self.published = 0

    def subscribe(self, kinds: Iterable[str] = (), *, loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        """A subscription on ``loop`` (default: the running loop). Empty ``kinds``: everything."""
        wanted = frozenset(kinds)
        unknown = wanted - set(EVENT_KINDS.values())
        if unknown:
            raise InvalidArgument(f"unknown event kinds {sorted(unknown)}; expected {sorted(EVENT_KINDS.values())}", field="kinds")
        sub = Subscription(self, loop or asyncio.get_running_loop(), wanted, self._queue_size)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, event: Event) -> None:
        kind = EVENT_KINDS.get(type(event))
        if kind is None:
            log.error("publish: %r is not an API event; ignored", type(event).__name__)
            return
        with self._lock:
            self._sequence += 1
            self.published += 1
            item = Published(self._sequence, self._wall_clock_ns(), event)
            subs = list(self._subs)
        for sub in subs:
            if sub.kinds and kind not in sub.kinds:
                continue
            try:
                sub.loop.call_soon_threadsafe(sub._deliver, item)
            except RuntimeError:  # that watcher's loop is closed
                self._remove(sub)


# ============================================================================ backend + API


class ControlBackend(Protocol):
    """What the daemon implements. Called on the daemon's loop (the gRPC server runs there)."""

    def clock(self) -> ClockSnapshot: ...

    def ports(self) -> Sequence[PortSnapshot]: ...

    def grants(self) -> Sequence[GrantSnapshot]: ...

    def apply_port_settings(self, port: str, settings: PortSettings) -> None:
        """Apply ``settings`` (complete, validated) to port ``port`` live, without restart.

        ``port_enable`` False: the port goes DISABLED and the dataplane stops correcting there.
        Either everything is applied or an exception is raised having changed nothing.
        """
        ...


@dataclass(frozen=True)
class SetResult:
    port: PortSnapshot
    persisted: bool
    applied: bool  # False for validate_only


class ControlApi:
    """Validation, atomic live apply, persistence and events over a ``ControlBackend``."""

    def __init__(self, backend: ControlBackend, *, state_path: str | os.PathLike[str] | None = None,
                 event_queue_size: int = 1024) -> None:
        self.backend = backend
        self.state_path = Path(state_path) if state_path is not None else None
        self.events = EventHub(queue_size=event_queue_size)
        self._lock = threading.RLock()

    # ---- reads
    def get_clock(self) -> ClockSnapshot:
        return self.backend.clock()

    def list_ports(self) -> list[PortSnapshot]:
        return sorted(self.backend.ports(), key=lambda p: p.port_number)

    def get_port(self, ref: str) -> PortSnapshot:
        """A port by interface name or port number (as text)."""
        ref = str(ref).strip()
        ports = self.list_ports()
        for p in ports:
            if p.name == ref:
                return p
        if ref.isdigit():
            for p in ports:
                if p.port_number == int(ref):
                    return p
        names = ", ".join(p.name for p in ports) or "none"
        raise NotFound(f"no port {ref!r} (ports: {names})", field="underlying_interface")

    def list_grants(self, port: str = "") -> list[GrantSnapshot]:
        grants = list(self.backend.grants())
        if port:
            name = self.get_port(port).name
            grants = [g for g in grants if g.port == name]
        return grants

    # ---- writes
    def validate(self, ref: str, change: PortChange) -> tuple[PortSnapshot, PortSettings]:
        port = self.get_port(ref)
        return port, validate_change(port.settings, change, network_transport=port.network_transport)

    def set_port_config(self, ref: str, change: PortChange, *, persist: bool = False,
                        validate_only: bool = False) -> SetResult:
        """Validate the whole change, then apply it with one backend call, then persist it.

        Any failure leaves the live settings and the state file as they were.
        """
        with self._lock:
            port, new = self.validate(ref, change)
            if validate_only:
                return SetResult(port=dataclasses.replace(port, settings=new), persisted=False, applied=False)
            staged: Path | None = None
            if persist:
                staged = self._stage_state(port.name, change)
            old = port.settings
            try:
                self.backend.apply_port_settings(port.name, new)
            except ApiError:
                _discard(staged)
                raise
            except Exception as exc:
                _discard(staged)
                log.exception("port %s: applying %s failed", port.name, change)
                raise ApplyFailed(f"port {port.name}: the daemon could not apply the change ({exc}); nothing changed") from exc
            if staged is not None:
                try:
                    assert self.state_path is not None
                    os.replace(staged, self.state_path)
                except OSError as exc:
                    _discard(staged)
                    self._roll_back(port.name, old)
                    raise ApplyFailed(f"could not write the state file {self.state_path} ({exc}); nothing changed") from exc
            after = self.get_port(port.name)
            log.info("port %s: configuration changed: %s%s", port.name, change.to_json(), " (persisted)" if persist else "")
            self.publish(PortConfigChanged(after, persisted=persist))
            return SetResult(port=after, persisted=persist, applied=True)

    def _roll_back(self, name: str, old: PortSettings) -> None:
        try:
            self.backend.apply_port_settings(name, old)
        except Exception:  # pragma: no cover - a backend that fails twice
            log.exception("port %s: rolling back to the previous settings failed", name)

    def _stage_state(self, name: str, change: PortChange) -> Path:
        """Write the would-be state file to a temporary file next to it (renamed after apply)."""
        if self.state_path is None:
            raise ApplyFailed("persist requested but the daemon has no state file configured", field="persist")
        state = self._read_state_quiet()
        older = state.get(name, PortChange())
        state[name] = change.merged_with(older)
        doc = {"version": STATE_VERSION, "ports": {n: c.to_json() for n, c in sorted(state.items())}}
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.state_path.name}.", dir=self.state_path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
        except OSError as exc:
            raise ApplyFailed(f"could not write the state file {self.state_path} ({exc}); nothing changed", field="persist") from exc
        return Path(tmp)

    def _read_state_quiet(self) -> dict[str, PortChange]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        try:
            return load_state(self.state_path)
        except (InvalidArgument, OSError) as exc:
            log.warning("state file %s is unreadable (%s); starting it afresh", self.state_path, exc)
            return {}

    def restore_persisted(self) -> list[str]:
        """Apply the state file's per-port changes (call once at daemon start, ports created).

        Returns the names of the ports it changed. A port that no longer exists or an entry that
        no longer validates is logged and skipped; never raises for the file's content.
        """
        if self.state_path is None or not self.state_path.exists():
            return []
        try:
            state = load_state(self.state_path)
        except (InvalidArgument, OSError) as exc:
            log.error("state file %s ignored: %s", self.state_path, exc)
            return []
        done = []
        for name, change in state.items():
            try:
                self.set_port_config(name, change)
            except ApiError as exc:
                log.error("state file %s: port %s not restored: %s", self.state_path, name, exc)
                continue
            done.append(name)
        return done

    # ---- events
    def publish(self, event: Event) -> None:
        """Hand an event to every watcher (the daemon calls this for every fact it reports)."""
        self.events.publish(event)


def load_state(path: str | os.PathLike[str]) -> dict[str, PortChange]:
    """Read a state file written by ``ControlApi`` -> {port name: PortChange}. InvalidArgument if malformed."""
    text = Path(path).read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{path}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or not isinstance(doc.get("ports"), dict):
        raise InvalidArgument(f"{path}: expected {{'version': {STATE_VERSION}, 'ports': {{...}}}}")
    return {str(name): PortChange.from_json(entry) for name, entry in doc["ports"].items()}


def _discard(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


# ============================================================================ core adapters
#
# Pure helpers that turn the core's data (controlplane.core.datasets, controlplane.core.actions)
# into the API's snapshots and events, and ``ClockBackend``: the ControlBackend over the core's
# Clock + the runtime + the dataplane loader, so the daemon's wiring is a few lines.


def clock_identity_text(ident: bytes) -> str:
    """ptp4l's spelling of a clockIdentity: 001122.fffe.334455 (codec's ``format_clock_identity``)."""
    return format_clock_identity(bytes(ident))


def _quality(q: Any) -> ClockQuality:
    return ClockQuality(int(q.clock_class), int(q.clock_accuracy), int(q.offset_scaled_log_variance))


def clock_snapshot(default_ds: Any, current_ds: Any, parent_ds: Any, time_properties_ds: Any, *, clock_type: str = "OC",
                   frequency_adjustment_ppb: float = 0.0, servo_state: str = "") -> ClockSnapshot:
    """A ClockSnapshot from the core's DefaultDS/CurrentDS/ParentDS/TimePropertiesDS."""
    d, c, p, t = default_ds, current_ds, parent_ds, time_properties_ds
    return ClockSnapshot(
        default_ds=DefaultDs(clock_identity=clock_identity_text(d.clock_identity), number_ports=int(d.number_ports),
                             clock_quality=_quality(d.clock_quality), priority1=d.priority1, priority2=d.priority2,
                             domain_number=d.domain_number, slave_only=bool(d.slave_only),
                             two_step_flag=bool(d.two_step_flag), clock_type=str(getattr(clock_type, "value", clock_type))),
        current_ds=CurrentDs(steps_removed=int(c.steps_removed), offset_from_master_ns=int(c.offset_from_master_ns),
                             mean_path_delay_ns=int(c.mean_path_delay_ns)),
        parent_ds=ParentDs(parent_clock_identity=clock_identity_text(p.parent_port_identity.clock_identity),
                           parent_port_number=int(p.parent_port_identity.port_number),
                           grandmaster_identity=clock_identity_text(p.grandmaster_identity),
                           grandmaster_clock_quality=_quality(p.grandmaster_clock_quality),
                           grandmaster_priority1=p.grandmaster_priority1, grandmaster_priority2=p.grandmaster_priority2,
                           parent_stats=bool(p.parent_stats),
                           observed_parent_offset_scaled_log_variance=p.observed_parent_offset_scaled_log_variance,
                           observed_parent_clock_phase_change_rate=p.observed_parent_clock_phase_change_rate),
        time_properties_ds=TimePropertiesDs(
            current_utc_offset=t.current_utc_offset, current_utc_offset_valid=bool(t.current_utc_offset_valid),
            leap59=bool(t.leap59), leap61=bool(t.leap61), time_traceable=bool(t.time_traceable),
            frequency_traceable=bool(t.frequency_traceable), ptp_timescale=bool(t.ptp_timescale),
            time_source=int(t.time_source)),
        frequency_adjustment_ppb=float(frequency_adjustment_ppb),
        servo_state=servo_state,
    )


def flatten_counters(stats: Mapping[str, Any]) -> dict[str, int]:
    """The loader's per-port ``{group: {counter: n}}`` (or already flat) -> ``{"group_counter": n}``."""
    out: dict[str, int] = {}
    for key, value in stats.items():
        if isinstance(value, Mapping):
            for sub, n in value.items():
                out[f"{key}_{sub}"] = int(n)
        else:
            out[str(key)] = int(value)
    return out


class ActionEvents:
    """Core actions -> API events (stateful only to report the previous grandmaster).

    Path-delay samples: every core ``OffsetSample`` (an OC/BC slave port's meanPathDelay, E2E or
    P2P) and every ``ProgramDataplane`` with a measured link delay (a P2P TC's meanLinkDelay).
    ``mechanism_of(port_number)`` names the port's delay mechanism (default E2E).
    """

    def __init__(self, port_names: Mapping[int, str],
                 mechanism_of: Callable[[int], DelayMechanismOption] | None = None) -> None:
        self.port_names = dict(port_names)
        self.grandmaster = ""
        self.mechanism_of = mechanism_of or (lambda _n: DelayMechanismOption.E2E)

    def _path_delay(self, port: int, delay_ns: int) -> PathDelaySample:
        return PathDelaySample(self.port_names.get(port, str(port)), self.mechanism_of(port), int(delay_ns))

    def __call__(self, action: Any) -> list[Event]:
        kind = type(action).__name__
        if kind == "StateChanged":
            return [PortStateChanged(self.port_names.get(action.port, str(action.port)), int(action.port),
                                     PortState(action.old), PortState(action.new), str(action.event))]
        if kind == "ParentChanged":
            new = clock_identity_text(action.grandmaster_identity)
            if new == self.grandmaster:
                return []
            old, self.grandmaster = self.grandmaster, new
            return [GrandmasterChanged(old, new, int(action.steps_removed))]
        if kind == "OffsetSample":
            servo = f"s{int(action.servo_state)}" if isinstance(action.servo_state, int) else str(action.servo_state)
            return [OffsetSample(int(action.offset_ns), int(action.mean_path_delay_ns), float(action.freq_ppb), servo),
                    self._path_delay(action.port, action.mean_path_delay_ns)]
        if kind == "ProgramDataplane":
            if action.enabled and action.mean_link_delay_ns:
                return [self._path_delay(action.port, action.mean_link_delay_ns)]
            return []
        return []


class ClockBackend:
    """ControlBackend over the core's ``Clock`` (controlplane/core/clock.py), the Runtime and the dataplane.

    ``execute(actions)`` runs the actions a reconfiguration returns (the daemon passes
    ``Runtime.execute``). Every setting applies live through the core: intervals, timeouts,
    delayAsymmetry, master-only and the delay mechanism with ``clock.reconfigure_port`` (a changed
    mechanism restarts the port), enable/disable with ``clock.set_port_enabled`` (a disabled TC port
    is also switched off in the dataplane), per-port slave-only with ``clock.set_port_slave_only``.

    Hooks for the unicast glue (F2): ``grants_source()`` -> current grants, and
    ``unicast_table_setter(port_name, masters, log_query_interval) -> actions`` to apply a new unicast
    master table. Without a setter, a request that changes the table is refused (UNAVAILABLE).
    ``dataplane`` (optional) is the loader's ``Dataplane``: ``stats()`` for counters and
    ``set_port(ifname, enabled=...)``.
    """

    CORE_FIELDS = ("delay_mechanism", "log_announce_interval", "log_sync_interval", "log_min_delay_req_interval",
                   "log_min_pdelay_req_interval", "announce_receipt_timeout", "delay_asymmetry_ns", "master_only")

    def __init__(self, clock: Any, execute: Callable[[list[Any]], None], *, dataplane: Any = None,
                 network_transport: Mapping[str, NetworkTransport] | None = None,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns,
                 grants_source: Callable[[], Sequence[GrantSnapshot]] | None = None,
                 unicast_table_setter: Callable[[str, tuple[UnicastMaster, ...], int], list[Any]] | None = None) -> None:
        self.core_clock = clock
        self.execute = execute
        self.dataplane = dataplane
        self.network_transport = dict(network_transport or {})
        self.monotonic_ns = monotonic_ns
        self.grants_source = grants_source
        self.unicast_table_setter = unicast_table_setter
        self.extra: dict[str, PortSettings] = {}  # settings the core does not hold (unicast table)
        self.enabled: dict[str, bool] = {}

    @property
    def is_tc(self) -> bool:
        return bool(getattr(self.core_clock, "is_tc", False))

    def mechanism_of(self, port_number: int) -> DelayMechanismOption:
        """The port's delay mechanism (for ActionEvents' path-delay samples)."""
        try:
            return self.core_clock.port(port_number).cfg.delay_mechanism
        except Exception:
            return DelayMechanismOption.E2E

    def clock(self) -> ClockSnapshot:
        c = self.core_clock
        state = getattr(c, "servo_state", "")
        return clock_snapshot(c.default_ds, c.current_ds, c.parent_ds, c.time_properties_ds,
                              clock_type=getattr(c, "clock_type", "OC"), frequency_adjustment_ppb=getattr(c, "freq_ppb", 0.0),
                              servo_state=getattr(state, "name", str(state)))

    def _settings(self, port: Any) -> PortSettings:
        extra = self.extra.get(port.name, PortSettings())
        slave_only = bool(getattr(port, "slave_only", False) or self.core_clock.default_ds.slave_only)
        base = PortSettings.from_port_config(port.cfg, port_enable=self.enabled.get(port.name, True),
                                             slave_only=slave_only,
                                             unicast_master_table=extra.unicast_master_table,
                                             log_query_interval=extra.log_query_interval)
        ds = port.ds  # the live data set wins over the configuration it started from
        return dataclasses.replace(base, log_announce_interval=ds.log_announce_interval, log_sync_interval=ds.log_sync_interval,
                                   log_min_delay_req_interval=ds.log_min_delay_req_interval,
                                   log_min_pdelay_req_interval=ds.log_min_pdelay_req_interval,
                                   announce_receipt_timeout=ds.announce_receipt_timeout,
                                   delay_asymmetry_ns=ds.delay_asymmetry_ns, master_only=ds.master_only)

    def ports(self) -> list[PortSnapshot]:
        stats: Mapping[str, Any] = {}
        if self.dataplane is not None:
            try:
                stats = self.dataplane.stats()
            except Exception as exc:  # counters are best effort; never fail a read
                log.warning("dataplane stats unavailable: %s", exc)
        out = []
        for port in self.core_clock.ports:
            ds = port.ds
            mech = port.cfg.delay_mechanism
            out.append(PortSnapshot(
                name=port.name, port_number=port.number, port_state=PortState(ds.port_state),
                settings=self._settings(port), clock_identity=clock_identity_text(ds.port_identity.clock_identity),
                peer_mean_path_delay_ns=int(ds.peer_mean_path_delay_ns) if mech == DelayMechanismOption.P2P else 0,
                mean_path_delay_ns=int(self.core_clock.current_ds.mean_path_delay_ns)
                if getattr(self.core_clock, "slave_port", None) == port.number else 0,
                network_transport=self.network_transport.get(port.name, port.cfg.network_transport),
                version_number=int(ds.version_number),
                dataplane_counters=flatten_counters(stats.get(port.name, {})),
            ))
        return out

    def grants(self) -> list[GrantSnapshot]:
        if self.grants_source is not None:
            return list(self.grants_source())
        # the daemon's unicast service (core/unicast_service.py) hangs itself on the clock as .unicast
        service = getattr(self.core_clock, "unicast", None)
        if service is None or not hasattr(service, "grant_rows"):
            return []
        return [GrantSnapshot(port=r.port_name, role=r.role, address=r.address, message_type=r.message_type,
                              log_inter_message_period=r.log_inter_message_period, duration_s=r.duration_s,
                              remaining_ns=r.remaining_ns, renewal_invited=r.renewal_invited,
                              peer_port_identity=None if r.peer_port_identity is None else
                              (clock_identity_text(r.peer_port_identity[0]), r.peer_port_identity[1]))
                for r in service.grant_rows(self.monotonic_ns())]

    def apply_port_settings(self, port_name: str, settings: PortSettings) -> None:
        c = self.core_clock
        port = next(p for p in c.ports if p.name == port_name)
        current = self._settings(port)
        now = self.monotonic_ns()
        changed = [f for f in self.CORE_FIELDS if getattr(current, f) != getattr(settings, f)]
        # refuse what cannot be applied before touching anything
        if "delay_mechanism" in changed and self.is_tc:
            raise InvalidArgument(f"a transparent clock's ports use the delay mechanism of its clock_type ({c.clock_type}); "
                                  "restart with the other clock type instead", field="delay_mechanism")
        if not settings.slave_only and c.default_ds.slave_only:
            raise InvalidArgument("the whole clock is slave-only (slaveOnly 1 in the configuration); "
                                  "a port cannot leave slave-only live", field="slave_only")
        if settings.slave_only != current.slave_only and not hasattr(c, "set_port_slave_only"):
            raise ApplyFailed("this build's protocol core has no per-port slave-only; nothing changed", field="slave_only")
        if changed and not hasattr(c, "reconfigure_port"):
            raise ApplyFailed("this build's protocol core cannot change " + ", ".join(changed)
                              + " live (needs Clock.reconfigure_port); nothing changed")
        table_changed = (settings.unicast_master_table != current.unicast_master_table
                         or settings.log_query_interval != current.log_query_interval)
        if table_changed and self.unicast_table_setter is None:
            raise ApplyFailed("this daemon does not run unicast negotiation on this port; the unicast master table "
                              "cannot be changed live; nothing changed", field="unicast_master_table")
        actions: list[Any] = []
        if table_changed:
            assert self.unicast_table_setter is not None
            actions += self.unicast_table_setter(port_name, settings.unicast_master_table, settings.log_query_interval)
        if changed:
            actions += c.reconfigure_port(port.number, settings.apply_to(port.cfg), now)
        if settings.slave_only != current.slave_only:
            actions += c.set_port_slave_only(port.number, settings.slave_only, now)
        if settings.port_enable != current.port_enable:
            actions += c.set_port_enabled(port.number, settings.port_enable, now)
            if self.dataplane is not None and self.is_tc:
                try:
                    self.dataplane.set_port(port_name, enabled=settings.port_enable)
                except Exception as exc:  # the core's ProgramDataplane action will retry the write
                    log.warning("port %s: dataplane enable=%s failed: %s", port_name, settings.port_enable, exc)
        self.enabled[port_name] = settings.port_enable
        self.extra[port_name] = settings
        self.execute(actions)
