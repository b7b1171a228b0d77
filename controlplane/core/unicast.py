"""IEEE 1588-2008 §16.1 unicast negotiation: values, policy and actions shared by server and client.

Sans-IO. Time is an argument (``now_ns``: host monotonic nanoseconds, the timer time base; never
PTP time). Nothing here reads a clock or touches a socket.

The negotiation TLVs are represented here as small frozen values (``Request``, ``Grant``,
``Cancel``, ``AcknowledgeCancel``); the runtime converts them to and from the codec's TLV
dataclasses (``controlplane.codec``) — the core never sees bytes. Field meanings (§16.1.4):

* REQUEST_UNICAST_TRANSMISSION (tlvType 0x0004, length 6): messageType (high nibble of one
  octet), logInterMessagePeriod (Integer8), durationField (UInteger32, seconds).
* GRANT_UNICAST_TRANSMISSION (0x0005, length 8): messageType, logInterMessagePeriod,
  durationField (0 = denied), reserved octet, flags octet with bit 0 = R (renewalInvited).
* CANCEL_UNICAST_TRANSMISSION (0x0006, length 2) and ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION
  (0x0007, length 2): messageType nibble; the low bits of that octet are, since 1588-2019 (and in
  linuxptp), maintainRequest (bit 0) and maintainGrant (bit 1).

Actions are a closed set: ``SendSignaling``, ``ActiveServerChanged``, ``NegotiationEvent``,
``DueTransmission`` (server only). The daemon matches every variant.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Union

NS_PER_S = 1_000_000_000


class UnicastMessageType(IntEnum):
    """messageType values (Table 19) that can be negotiated (§16.1.1)."""

    SYNC = 0x0
    PDELAY_RESP = 0x3
    DELAY_RESP = 0x9
    ANNOUNCE = 0xB


class DenialReason(IntEnum):
    """Why a server answered a request with durationField 0. Counted per reason."""

    UNSUPPORTED_MESSAGE_TYPE = 1
    NOT_ALLOWED = 2  # client address outside every allow-list prefix
    TOO_MANY_CLIENTS = 3
    RATE_TOO_HIGH = 4  # logInterMessagePeriod below the configured minimum
    DURATION_TOO_SHORT = 5  # durationField below the configured minimum (0 included)
    SERVICE_UNAVAILABLE = 6  # the port cannot serve now (not master, draining)


class UnicastConfigError(ValueError):
    """A unicast option is out of range or malformed (local misuse: the operator's fault)."""


class UnicastUsageError(RuntimeError):
    """The API was used against its contract (the caller's fault, not a peer's)."""


def log_interval_ns(log_interval: int) -> int:
    """2^log_interval seconds in integer nanoseconds (exact for -30 <= log_interval <= 30)."""
    if log_interval >= 0:
        return NS_PER_S << log_interval
    return NS_PER_S >> -log_interval


def normalize_address(address: str) -> str:
    """Canonical text form of an IPv4/IPv6 address (so '::0001' and '::1' are one client)."""
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError as exc:
        raise UnicastUsageError(f"not an IP address: {address!r}") from exc


# --- negotiation TLV values -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    message_type: int
    log_inter_message_period: int
    duration_s: int


@dataclass(frozen=True, slots=True)
class Grant:
    message_type: int
    log_inter_message_period: int
    duration_s: int  # 0 means denied
    renewal_invited: bool = False

    @property
    def denied(self) -> bool:
        return self.duration_s == 0


@dataclass(frozen=True, slots=True)
class Cancel:
    message_type: int
    maintain_request: bool = False
    maintain_grant: bool = False


@dataclass(frozen=True, slots=True)
class AcknowledgeCancel:
    message_type: int
    maintain_request: bool = False
    maintain_grant: bool = False


NegotiationTlv = Union[Request, Grant, Cancel, AcknowledgeCancel]


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendSignaling:
    """Send one Signaling message (general port 320, unicast flag set) to ``address``.

    ``target_port_identity`` is ``None`` for the wildcard (all ones), else (clock_identity, port).
    Several TLVs travel in one message, in order.
    """

    address: str
    target_port_identity: tuple[bytes, int] | None
    tlvs: tuple[NegotiationTlv, ...]


@dataclass(frozen=True, slots=True)
class DueTransmission:
    """The server must now send one ``message_type`` (Sync or Announce) to ``address``.

    ``sequence_id`` is this grant's own counter (unicast sequenceId pools are per destination,
    §7.3.7); ``log_message_interval`` goes in the header's logMessageInterval.
    """

    address: str
    message_type: int
    log_message_interval: int
    sequence_id: int
    scheduled_ns: int


@dataclass(frozen=True, slots=True)
class ActiveServerChanged:
    """Client: take Sync/Delay_Resp from ``address`` from now on (None: no server usable).

    The servo keeps its state (frequency); both servers carry the same timescale, so the daemon
    must not step the clock on this event — it feeds the new server's offsets to the same servo.
    """

    old_address: str | None
    new_address: str | None
    port_identity: tuple[bytes, int] | None
    reason: str
    log_sync_interval: int | None = None
    log_min_delay_req_interval: int | None = None


@dataclass(frozen=True, slots=True)
class NegotiationEvent:
    """A fact for the log and the counters (the runtime decides the log level)."""

    kind: str  # e.g. "granted", "denied", "renewed", "expired", "canceled", "ack_cancel", ...
    address: str
    message_type: int | None = None
    detail: str = ""
    now_ns: int = 0


UnicastAction = Union[SendSignaling, DueTransmission, ActiveServerChanged, NegotiationEvent]


# --- server policy ----------------------------------------------------------------------------


_DEFAULT_MIN_LOG = {
    UnicastMessageType.SYNC: -7,
    UnicastMessageType.ANNOUNCE: -3,
    UnicastMessageType.DELAY_RESP: -7,
    UnicastMessageType.PDELAY_RESP: -7,
}


@dataclass(frozen=True)
class ServerPolicy:
    """What the server grants. Defaults follow carrier practice (60..1000 s grants).

    * ``min_duration_s`` / ``max_duration_s``: a request above the maximum is granted the maximum
      (a grant may be shorter than requested); below the minimum it is denied.
    * ``min_log_inter_message_period``: per message type, the fastest rate served; a request faster
      than that is denied (RATE_TOO_HIGH) so the client can retry at a lower rate (§16.1.4.1).
    * ``max_clients``: distinct client addresses holding at least one grant.
    * ``allow``: client prefixes (IPv4/IPv6 networks); empty = everybody.
    * ``message_types``: what is served (Pdelay_Resp is off unless listed).
    * ``cancel_retry_ns`` / ``cancel_retries``: a server-initiated CANCEL is re-sent until
      acknowledged, at most this many times.
    """

    min_duration_s: int = 60
    max_duration_s: int = 1000
    min_log_inter_message_period: tuple[tuple[int, int], ...] = tuple(
        (int(k), v) for k, v in _DEFAULT_MIN_LOG.items()
    )
    max_clients: int = 10_000
    allow: tuple[str, ...] = ()
    message_types: tuple[int, ...] = (
        UnicastMessageType.ANNOUNCE,
        UnicastMessageType.SYNC,
        UnicastMessageType.DELAY_RESP,
    )
    cancel_retry_ns: int = NS_PER_S
    cancel_retries: int = 3
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        if not 1 <= self.min_duration_s <= self.max_duration_s <= 0xFFFFFFFF:
            raise UnicastConfigError(
                f"need 1 <= min_duration_s ({self.min_duration_s}) <= max_duration_s "
                f"({self.max_duration_s}) <= 2^32-1"
            )
        if self.max_clients < 0:
            raise UnicastConfigError(f"max_clients must be >= 0, got {self.max_clients}")
        if self.cancel_retries < 0 or self.cancel_retry_ns <= 0:
            raise UnicastConfigError("cancel_retries must be >= 0 and cancel_retry_ns > 0")
        for mtype, log in self.min_log_inter_message_period:
            if not -128 <= log <= 127:
                raise UnicastConfigError(f"logInterMessagePeriod {log} outside Integer8")
            if mtype not in set(UnicastMessageType):
                raise UnicastConfigError(f"message type {mtype:#x} cannot be negotiated")
        for mtype in self.message_types:
            if mtype not in set(UnicastMessageType):
                raise UnicastConfigError(f"message type {mtype:#x} cannot be negotiated")
        nets = []
        for prefix in self.allow:
            try:
                nets.append(ipaddress.ip_network(prefix, strict=False))
            except ValueError as exc:
                raise UnicastConfigError(f"bad allow-list prefix {prefix!r}: {exc}") from exc
        object.__setattr__(self, "networks", tuple(nets))

    def min_log_for(self, message_type: int) -> int:
        for mtype, log in self.min_log_inter_message_period:
            if mtype == message_type:
                return log
        return -128

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in self.networks)

    @classmethod
    def from_options(cls, options: dict[str, object]) -> "ServerPolicy":
        """Build from config-file style options (ptp4l-like names; unknown keys are an error).

        Keys: unicast_min_duration, unicast_max_duration, unicast_max_clients,
        unicast_allow (space/comma separated prefixes), unicast_min_logSyncInterval,
        unicast_min_logAnnounceInterval, unicast_min_logMinDelayReqInterval,
        unicast_serve_pdelay (0/1).
        """
        known = {
            "unicast_min_duration", "unicast_max_duration", "unicast_max_clients", "unicast_allow",
            "unicast_min_logSyncInterval", "unicast_min_logAnnounceInterval",
            "unicast_min_logMinDelayReqInterval", "unicast_serve_pdelay",
        }
        unknown = set(options) - known
        if unknown:
            raise UnicastConfigError(f"unknown unicast server option(s): {', '.join(sorted(unknown))}")

        def as_int(key: str, default: int) -> int:
            value = options.get(key, default)
            try:
                return int(value)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise UnicastConfigError(f"{key}: not an integer: {value!r}") from exc

        mins = dict(_DEFAULT_MIN_LOG)
        mins[UnicastMessageType.SYNC] = as_int("unicast_min_logSyncInterval", mins[UnicastMessageType.SYNC])
        mins[UnicastMessageType.ANNOUNCE] = as_int(
            "unicast_min_logAnnounceInterval", mins[UnicastMessageType.ANNOUNCE]
        )
        mins[UnicastMessageType.DELAY_RESP] = as_int(
            "unicast_min_logMinDelayReqInterval", mins[UnicastMessageType.DELAY_RESP]
        )
        allow_raw = options.get("unicast_allow", "")
        if isinstance(allow_raw, str):
            allow = tuple(p for p in allow_raw.replace(",", " ").split() if p)
        else:
            allow = tuple(str(p) for p in allow_raw)  # type: ignore[union-attr]
        types = [UnicastMessageType.ANNOUNCE, UnicastMessageType.SYNC, UnicastMessageType.DELAY_RESP]
        if as_int("unicast_serve_pdelay", 0):
            types.append(UnicastMessageType.PDELAY_RESP)
        return cls(
            min_duration_s=as_int("unicast_min_duration", 60),
            max_duration_s=as_int("unicast_max_duration", 1000),
            max_clients=as_int("unicast_max_clients", 10_000),
            min_log_inter_message_period=tuple((int(k), v) for k, v in mins.items()),
            allow=allow,
            message_types=tuple(int(t) for t in types),
        )
