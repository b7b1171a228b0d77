"""MANAGEMENT and MANAGEMENT_ERROR_STATUS TLVs (IEEE 1588-2019 clause 15) and the dataField of
each management ID this codec interprets.

``ManagementTlv.data`` is ``None`` for an empty dataField (a GET / COMMAND without payload), a
typed dataclass for the IDs in ``DATA_CLASSES``, or ``bytes`` for any other ID (kept opaque).
Every data class keeps bytes beyond its defined fields in ``pad`` (None = pad to even length).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from controlplane.codec.enums import (
    DelayMechanism,
    ManagementErrorId,
    ManagementId,
    PortState,
    TimeSource,
    TlvType,
    as_enum,
)
from controlplane.codec.errors import EncodeError, TlvError
from controlplane.codec.tlv import even_pad, register_tlv
from controlplane.codec.types import (
    ClockQuality,
    PortAddress,
    PortIdentity,
    PTPText,
    Timestamp,
    check_int,
    check_uint,
    unpack_clock_quality,
    unpack_port_address,
    unpack_port_identity,
    unpack_ptp_text,
    unpack_timestamp,
)

DATA_CLASSES: dict[int, Any] = {}


def _data(cls: Any) -> Any:
    DATA_CLASSES[int(cls.MANAGEMENT_ID)] = cls
    return cls


def _short(what: str, need: int, got: int) -> TlvError:
    return TlvError(f"{what} dataField needs {need} bytes, got {got}", 0)


# --- one-octet value + reserved octet (15.5.3.x) ------------------------------------------------


def _octet_class(name: str, mid: ManagementId, fname: str, signed: bool, default: int, doc: str) -> Any:
    fmt = "!bB" if signed else "!BB"

    def value_bytes(self: Any) -> bytes:
        (check_int if signed else check_uint)(fname, getattr(self, fname), 8)
        check_uint("reserved", self.reserved, 8)
        return struct.pack(fmt, getattr(self, fname), self.reserved) + even_pad(self.pad, 2)

    def unpack(cls: Any, value: bytes) -> Any:
        if len(value) < 2:
            raise _short(name, 2, len(value))
        v, r = struct.unpack_from(fmt, value)
        return cls(v, r, value[2:])

    ns = {
        "__doc__": doc,
        "__annotations__": {fname: "int", "reserved": "int", "pad": "bytes | None"},
        fname: default,
        "reserved": 0,
        "pad": None,
        "MANAGEMENT_ID": mid,
        "value_bytes": value_bytes,
        "unpack": classmethod(unpack),
    }
    ns["__annotations__"]["MANAGEMENT_ID"] = "ClassVar[ManagementId]"
    cls = type(name, (), ns)
    cls.__module__ = __name__
    return _data(dataclass(frozen=True, slots=True)(cls))


Priority1 = _octet_class("Priority1", ManagementId.PRIORITY1, "priority1", False, 128, "PRIORITY1 (15.5.3.3.6)")
Priority2 = _octet_class("Priority2", ManagementId.PRIORITY2, "priority2", False, 128, "PRIORITY2 (15.5.3.3.7)")
Domain = _octet_class("Domain", ManagementId.DOMAIN, "domain_number", False, 0, "DOMAIN (15.5.3.3.8)")
LogAnnounceInterval = _octet_class(
    "LogAnnounceInterval", ManagementId.LOG_ANNOUNCE_INTERVAL, "log_announce_interval", True, 1, "LOG_ANNOUNCE_INTERVAL"
)
AnnounceReceiptTimeout = _octet_class(
    "AnnounceReceiptTimeout",
    ManagementId.ANNOUNCE_RECEIPT_TIMEOUT,
    "announce_receipt_timeout",
    False,
    3,
    "ANNOUNCE_RECEIPT_TIMEOUT",
)
LogSyncInterval = _octet_class(
    "LogSyncInterval", ManagementId.LOG_SYNC_INTERVAL, "log_sync_interval", True, 0, "LOG_SYNC_INTERVAL"
)
DelayMechanismData = _octet_class(
    "DelayMechanismData", ManagementId.DELAY_MECHANISM, "delay_mechanism", False, 1, "DELAY_MECHANISM (value: DelayMechanism)"
)
LogMinPdelayReqInterval = _octet_class(
    "LogMinPdelayReqInterval",
    ManagementId.LOG_MIN_PDELAY_REQ_INTERVAL,
    "log_min_pdelay_req_interval",
    True,
    0,
    "LOG_MIN_PDELAY_REQ_INTERVAL",
)


@_data
@dataclass(frozen=True, slots=True)
class SlaveOnly:
    """SLAVE_ONLY: flags octet (bit 0 = SO) + reserved."""

    MANAGEMENT_ID: ClassVar = ManagementId.SLAVE_ONLY
    slave_only: bool = False
    reserved_flags: int = 0
    reserved: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("reserved_flags", self.reserved_flags, 8)
        check_uint("reserved", self.reserved, 8)
        return bytes([(self.reserved_flags & 0xFE) | int(self.slave_only), self.reserved]) + even_pad(self.pad, 2)

    @classmethod
    def unpack(cls, value: bytes) -> SlaveOnly:
        if len(value) < 2:
            raise _short("SLAVE_ONLY", 2, len(value))
        return cls(bool(value[0] & 1), value[0] & 0xFE, value[1], value[2:])


@_data
@dataclass(frozen=True, slots=True)
class VersionNumber:
    """VERSION_NUMBER: minorVersionNumber (4) | versionNumber (4), reserved octet."""

    MANAGEMENT_ID: ClassVar = ManagementId.VERSION_NUMBER
    version_number: int = 2
    minor_version_number: int = 0
    reserved: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("version_number", self.version_number, 4)
        check_uint("minor_version_number", self.minor_version_number, 4)
        check_uint("reserved", self.reserved, 8)
        return bytes([(self.minor_version_number << 4) | self.version_number, self.reserved]) + even_pad(self.pad, 2)

    @classmethod
    def unpack(cls, value: bytes) -> VersionNumber:
        if len(value) < 2:
            raise _short("VERSION_NUMBER", 2, len(value))
        return cls(value[0] & 0x0F, value[0] >> 4, value[1], value[2:])


@_data
@dataclass(frozen=True, slots=True)
class Time:
    """TIME: currentTime (Timestamp)."""

    MANAGEMENT_ID: ClassVar = ManagementId.TIME
    current_time: Timestamp = field(default_factory=Timestamp)
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        return self.current_time.pack() + even_pad(self.pad, 10)

    @classmethod
    def unpack(cls, value: bytes) -> Time:
        if len(value) < 10:
            raise _short("TIME", 10, len(value))
        return cls(unpack_timestamp(value, 0), value[10:])


# --- data sets ------------------------------------------------------------------------------------


@_data
@dataclass(frozen=True, slots=True)
class DefaultDataSet:
    """DEFAULT_DATA_SET (15.5.3.3.1), 20 octets."""

    MANAGEMENT_ID: ClassVar = ManagementId.DEFAULT_DATA_SET
    two_step_flag: bool = True
    slave_only: bool = False
    number_ports: int = 1
    priority1: int = 128
    clock_quality: ClockQuality = field(default_factory=ClockQuality)
    priority2: int = 128
    clock_identity: bytes = bytes(8)
    domain_number: int = 0
    reserved_flags: int = 0
    reserved1: int = 0
    reserved2: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        for n, v, b in (
            ("number_ports", self.number_ports, 16),
            ("priority1", self.priority1, 8),
            ("priority2", self.priority2, 8),
            ("domain_number", self.domain_number, 8),
            ("reserved_flags", self.reserved_flags, 8),
            ("reserved1", self.reserved1, 8),
            ("reserved2", self.reserved2, 8),
        ):
            check_uint(n, v, b)
        if len(self.clock_identity) != 8:
            raise EncodeError("clock_identity must be 8 octets")
        flags = (self.reserved_flags & 0xFC) | int(self.two_step_flag) | (int(self.slave_only) << 1)
        body = (
            struct.pack("!BBHB", flags, self.reserved1, self.number_ports, self.priority1)
            + self.clock_quality.pack()
            + bytes([self.priority2])
            + bytes(self.clock_identity)
            + bytes([self.domain_number, self.reserved2])
        )
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> DefaultDataSet:
        if len(value) < 20:
            raise _short("DEFAULT_DATA_SET", 20, len(value))
        flags, r1, nports, p1 = struct.unpack_from("!BBHB", value)
        return cls(
            two_step_flag=bool(flags & 1),
            slave_only=bool(flags & 2),
            number_ports=nports,
            priority1=p1,
            clock_quality=unpack_clock_quality(value, 5),
            priority2=value[9],
            clock_identity=value[10:18],
            domain_number=value[18],
            reserved_flags=flags & 0xFC,
            reserved1=r1,
            reserved2=value[19],
            pad=value[20:],
        )


@_data
@dataclass(frozen=True, slots=True)
class CurrentDataSet:
    """CURRENT_DATA_SET (15.5.3.4.1): offsetFromMaster and meanPathDelay are TimeInterval (ns * 2^16)."""

    MANAGEMENT_ID: ClassVar = ManagementId.CURRENT_DATA_SET
    steps_removed: int = 0
    offset_from_master_scaled_ns: int = 0
    mean_path_delay_scaled_ns: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("steps_removed", self.steps_removed, 16)
        check_int("offset_from_master_scaled_ns", self.offset_from_master_scaled_ns, 64)
        check_int("mean_path_delay_scaled_ns", self.mean_path_delay_scaled_ns, 64)
        body = struct.pack("!Hqq", self.steps_removed, self.offset_from_master_scaled_ns, self.mean_path_delay_scaled_ns)
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> CurrentDataSet:
        if len(value) < 18:
            raise _short("CURRENT_DATA_SET", 18, len(value))
        return cls(*struct.unpack_from("!Hqq", value), pad=value[18:])


@_data
@dataclass(frozen=True, slots=True)
class ParentDataSet:
    """PARENT_DATA_SET (15.5.3.5.1), 32 octets."""

    MANAGEMENT_ID: ClassVar = ManagementId.PARENT_DATA_SET
    parent_port_identity: PortIdentity = field(default_factory=PortIdentity)
    parent_stats: bool = False
    observed_parent_offset_scaled_log_variance: int = 0xFFFF
    observed_parent_clock_phase_change_rate: int = 0x7FFFFFFF
    grandmaster_priority1: int = 128
    grandmaster_clock_quality: ClockQuality = field(default_factory=ClockQuality)
    grandmaster_priority2: int = 128
    grandmaster_identity: bytes = bytes(8)
    reserved_flags: int = 0
    reserved: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("reserved_flags", self.reserved_flags, 8)
        check_uint("reserved", self.reserved, 8)
        check_uint("observed_parent_offset_scaled_log_variance", self.observed_parent_offset_scaled_log_variance, 16)
        check_int("observed_parent_clock_phase_change_rate", self.observed_parent_clock_phase_change_rate, 32)
        check_uint("grandmaster_priority1", self.grandmaster_priority1, 8)
        check_uint("grandmaster_priority2", self.grandmaster_priority2, 8)
        if len(self.grandmaster_identity) != 8:
            raise EncodeError("grandmaster_identity must be 8 octets")
        body = (
            self.parent_port_identity.pack()
            + struct.pack(
                "!BBHiB",
                (self.reserved_flags & 0xFE) | int(self.parent_stats),
                self.reserved,
                self.observed_parent_offset_scaled_log_variance,
                self.observed_parent_clock_phase_change_rate,
                self.grandmaster_priority1,
            )
            + self.grandmaster_clock_quality.pack()
            + bytes([self.grandmaster_priority2])
            + bytes(self.grandmaster_identity)
        )
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> ParentDataSet:
        if len(value) < 32:
            raise _short("PARENT_DATA_SET", 32, len(value))
        flags, res, var, rate, p1 = struct.unpack_from("!BBHiB", value, 10)
        return cls(
            parent_port_identity=unpack_port_identity(value, 0),
            parent_stats=bool(flags & 1),
            observed_parent_offset_scaled_log_variance=var,
            observed_parent_clock_phase_change_rate=rate,
            grandmaster_priority1=p1,
            grandmaster_clock_quality=unpack_clock_quality(value, 19),
            grandmaster_priority2=value[23],
            grandmaster_identity=value[24:32],
            reserved_flags=flags & 0xFE,
            reserved=res,
            pad=value[32:],
        )


_TP_FLAGS = (
    ("leap61", 0x01),
    ("leap59", 0x02),
    ("current_utc_offset_valid", 0x04),
    ("ptp_timescale", 0x08),
    ("time_traceable", 0x10),
    ("frequency_traceable", 0x20),
)


@_data
@dataclass(frozen=True, slots=True)
class TimePropertiesDataSet:
    """TIME_PROPERTIES_DATA_SET (15.5.3.6.1), 4 octets."""

    MANAGEMENT_ID: ClassVar = ManagementId.TIME_PROPERTIES_DATA_SET
    current_utc_offset: int = 37
    leap61: bool = False
    leap59: bool = False
    current_utc_offset_valid: bool = False
    ptp_timescale: bool = False
    time_traceable: bool = False
    frequency_traceable: bool = False
    time_source: TimeSource | int = TimeSource.INTERNAL_OSCILLATOR
    reserved_flags: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_int("current_utc_offset", self.current_utc_offset, 16)
        check_uint("time_source", int(self.time_source), 8)
        check_uint("reserved_flags", self.reserved_flags, 8)
        flags = self.reserved_flags & 0xC0
        for n, m in _TP_FLAGS:
            if getattr(self, n):
                flags |= m
        body = struct.pack("!hBB", self.current_utc_offset, flags, int(self.time_source))
        return body + even_pad(self.pad, 4)

    @classmethod
    def unpack(cls, value: bytes) -> TimePropertiesDataSet:
        if len(value) < 4:
            raise _short("TIME_PROPERTIES_DATA_SET", 4, len(value))
        utc, flags, ts = struct.unpack_from("!hBB", value)
        kw = {n: bool(flags & m) for n, m in _TP_FLAGS}
        return cls(utc, time_source=as_enum(TimeSource, ts), reserved_flags=flags & 0xC0, pad=value[4:], **kw)


@_data
@dataclass(frozen=True, slots=True)
class PortDataSet:
    """PORT_DATA_SET (15.5.3.7.1), 26 octets. peerMeanPathDelay is a TimeInterval (ns * 2^16)."""

    MANAGEMENT_ID: ClassVar = ManagementId.PORT_DATA_SET
    port_identity: PortIdentity = field(default_factory=PortIdentity)
    port_state: PortState | int = PortState.INITIALIZING
    log_min_delay_req_interval: int = 0
    peer_mean_path_delay_scaled_ns: int = 0
    log_announce_interval: int = 1
    announce_receipt_timeout: int = 3
    log_sync_interval: int = 0
    delay_mechanism: DelayMechanism | int = DelayMechanism.E2E
    log_min_pdelay_req_interval: int = 0
    version_number: int = 2
    minor_version_number: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("port_state", int(self.port_state), 8)
        check_int("log_min_delay_req_interval", self.log_min_delay_req_interval, 8)
        check_int("peer_mean_path_delay_scaled_ns", self.peer_mean_path_delay_scaled_ns, 64)
        check_int("log_announce_interval", self.log_announce_interval, 8)
        check_uint("announce_receipt_timeout", self.announce_receipt_timeout, 8)
        check_int("log_sync_interval", self.log_sync_interval, 8)
        check_uint("delay_mechanism", int(self.delay_mechanism), 8)
        check_int("log_min_pdelay_req_interval", self.log_min_pdelay_req_interval, 8)
        check_uint("version_number", self.version_number, 4)
        check_uint("minor_version_number", self.minor_version_number, 4)
        body = self.port_identity.pack() + struct.pack(
            "!BbqbBbBbB",
            int(self.port_state),
            self.log_min_delay_req_interval,
            self.peer_mean_path_delay_scaled_ns,
            self.log_announce_interval,
            self.announce_receipt_timeout,
            self.log_sync_interval,
            int(self.delay_mechanism),
            self.log_min_pdelay_req_interval,
            (self.minor_version_number << 4) | self.version_number,
        )
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> PortDataSet:
        if len(value) < 26:
            raise _short("PORT_DATA_SET", 26, len(value))
        st, lmdri, pmpd, lai, art, lsi, dm, lmpri, ver = struct.unpack_from("!BbqbBbBbB", value, 10)
        return cls(
            unpack_port_identity(value, 0),
            as_enum(PortState, st),
            lmdri,
            pmpd,
            lai,
            art,
            lsi,
            as_enum(DelayMechanism, dm),
            lmpri,
            ver & 0x0F,
            ver >> 4,
            value[26:],
        )


@_data
@dataclass(frozen=True, slots=True)
class TransparentClockDefaultDataSet:
    """TRANSPARENT_CLOCK_DEFAULT_DATA_SET (1588-2008 15.5.3.8.1), 12 octets."""

    MANAGEMENT_ID: ClassVar = ManagementId.TRANSPARENT_CLOCK_DEFAULT_DATA_SET
    clock_identity: bytes = bytes(8)
    number_ports: int = 0
    delay_mechanism: DelayMechanism | int = DelayMechanism.E2E
    primary_domain: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        if len(self.clock_identity) != 8:
            raise EncodeError("clock_identity must be 8 octets")
        check_uint("number_ports", self.number_ports, 16)
        check_uint("delay_mechanism", int(self.delay_mechanism), 8)
        check_uint("primary_domain", self.primary_domain, 8)
        body = bytes(self.clock_identity) + struct.pack(
            "!HBB", self.number_ports, int(self.delay_mechanism), self.primary_domain
        )
        return body + even_pad(self.pad, 12)

    @classmethod
    def unpack(cls, value: bytes) -> TransparentClockDefaultDataSet:
        if len(value) < 12:
            raise _short("TRANSPARENT_CLOCK_DEFAULT_DATA_SET", 12, len(value))
        n, dm, pd = struct.unpack_from("!HBB", value, 8)
        return cls(value[:8], n, as_enum(DelayMechanism, dm), pd, value[12:])


@_data
@dataclass(frozen=True, slots=True)
class TransparentClockPortDataSet:
    """TRANSPARENT_CLOCK_PORT_DATA_SET (1588-2008 15.5.3.9.1), 20 octets."""

    MANAGEMENT_ID: ClassVar = ManagementId.TRANSPARENT_CLOCK_PORT_DATA_SET
    port_identity: PortIdentity = field(default_factory=PortIdentity)
    faulty_flag: bool = False
    log_min_pdelay_req_interval: int = 0
    peer_mean_path_delay_scaled_ns: int = 0
    reserved_flags: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("reserved_flags", self.reserved_flags, 8)
        check_int("log_min_pdelay_req_interval", self.log_min_pdelay_req_interval, 8)
        check_int("peer_mean_path_delay_scaled_ns", self.peer_mean_path_delay_scaled_ns, 64)
        body = self.port_identity.pack() + struct.pack(
            "!Bbq",
            (self.reserved_flags & 0xFE) | int(self.faulty_flag),
            self.log_min_pdelay_req_interval,
            self.peer_mean_path_delay_scaled_ns,
        )
        return body + even_pad(self.pad, 20)

    @classmethod
    def unpack(cls, value: bytes) -> TransparentClockPortDataSet:
        if len(value) < 20:
            raise _short("TRANSPARENT_CLOCK_PORT_DATA_SET", 20, len(value))
        flags, lmpri, pmpd = struct.unpack_from("!Bbq", value, 10)
        return cls(unpack_port_identity(value, 0), bool(flags & 1), lmpri, pmpd, flags & 0xFE, value[20:])


@_data
@dataclass(frozen=True, slots=True)
class UserDescription:
    """USER_DESCRIPTION: one PTPText (+ pad to even)."""

    MANAGEMENT_ID: ClassVar = ManagementId.USER_DESCRIPTION
    user_description: PTPText = field(default_factory=PTPText)
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        body = self.user_description.pack()
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> UserDescription:
        text = unpack_ptp_text(value, 0)
        return cls(text, value[text.size :])


@_data
@dataclass(frozen=True, slots=True)
class ClockDescription:
    """CLOCK_DESCRIPTION (15.5.3.1.2)."""

    MANAGEMENT_ID: ClassVar = ManagementId.CLOCK_DESCRIPTION
    clock_type: int = 0x8000
    physical_layer_protocol: PTPText = field(default_factory=PTPText)
    physical_address: bytes = b""
    protocol_address: PortAddress = field(default_factory=PortAddress)
    manufacturer_identity: bytes = bytes(3)
    reserved: int = 0
    product_description: PTPText = field(default_factory=PTPText)
    revision_data: PTPText = field(default_factory=PTPText)
    user_description: PTPText = field(default_factory=PTPText)
    profile_identity: bytes = bytes(6)
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("clock_type", self.clock_type, 16)
        check_uint("reserved", self.reserved, 8)
        if len(self.manufacturer_identity) != 3 or len(self.profile_identity) != 6:
            raise EncodeError("manufacturer_identity is 3 octets, profile_identity 6")
        if len(self.physical_address) > 0xFFFF:
            raise EncodeError("physical_address too long")
        body = (
            struct.pack("!H", self.clock_type)
            + self.physical_layer_protocol.pack()
            + struct.pack("!H", len(self.physical_address))
            + bytes(self.physical_address)
            + self.protocol_address.pack()
            + bytes(self.manufacturer_identity)
            + bytes([self.reserved])
            + self.product_description.pack()
            + self.revision_data.pack()
            + self.user_description.pack()
            + bytes(self.profile_identity)
        )
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> ClockDescription:
        if len(value) < 2:
            raise _short("CLOCK_DESCRIPTION", 2, len(value))
        (ctype,) = struct.unpack_from("!H", value)
        pos = 2
        plp = unpack_ptp_text(value, pos)
        pos += plp.size
        if len(value) < pos + 2:
            raise TlvError("CLOCK_DESCRIPTION: physicalAddressLength truncated", pos)
        (palen,) = struct.unpack_from("!H", value, pos)
        pos += 2
        if len(value) < pos + palen:
            raise TlvError("CLOCK_DESCRIPTION: physicalAddress overruns the TLV", pos)
        paddr = value[pos : pos + palen]
        pos += palen
        proto = unpack_port_address(value, pos)
        pos += proto.size
        if len(value) < pos + 4:
            raise TlvError("CLOCK_DESCRIPTION: manufacturerIdentity truncated", pos)
        manu, res = value[pos : pos + 3], value[pos + 3]
        pos += 4
        texts = []
        for _ in range(3):
            t = unpack_ptp_text(value, pos)
            texts.append(t)
            pos += t.size
        if len(value) < pos + 6:
            raise TlvError("CLOCK_DESCRIPTION: profileIdentity truncated", pos)
        prof = value[pos : pos + 6]
        pos += 6
        return cls(ctype, plp, paddr, proto, manu, res, texts[0], texts[1], texts[2], prof, value[pos:])


# --- linuxptp implementation-specific IDs ("_NP", 0xC000...; linuxptp tlv.h) -----------------------


@_data
@dataclass(frozen=True, slots=True)
class TimeStatusNp:
    """TIME_STATUS_NP (linuxptp 0xC000, struct time_status_np, 50 octets): the slave's last
    offset and Sync ingress time (ns), cumulativeScaledRateOffset ((rateRatio - 1) * 2^41),
    scaledLastGmPhaseChange, gmTimeBaseIndicator, lastGmPhaseChange (ScaledNs, 96 bits),
    gmPresent (Integer32, 1 when the grandmaster is another clock) and gmIdentity."""

    MANAGEMENT_ID: ClassVar = ManagementId.TIME_STATUS_NP
    master_offset_ns: int = 0
    ingress_time_ns: int = 0
    cumulative_scaled_rate_offset: int = 0
    scaled_last_gm_phase_change: int = 0
    gm_time_base_indicator: int = 0
    last_gm_phase_change_scaled_ns: int = 0  # ScaledNs: signed 96-bit ns * 2^16
    gm_present: int = 0
    gm_identity: bytes = bytes(8)
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_int("master_offset_ns", self.master_offset_ns, 64)
        check_int("ingress_time_ns", self.ingress_time_ns, 64)
        check_int("cumulative_scaled_rate_offset", self.cumulative_scaled_rate_offset, 32)
        check_int("scaled_last_gm_phase_change", self.scaled_last_gm_phase_change, 32)
        check_uint("gm_time_base_indicator", self.gm_time_base_indicator, 16)
        check_int("last_gm_phase_change_scaled_ns", self.last_gm_phase_change_scaled_ns, 96)
        check_int("gm_present", self.gm_present, 32)
        if len(self.gm_identity) != 8:
            raise EncodeError("gm_identity is 8 octets")
        body = (struct.pack("!qqiiH", self.master_offset_ns, self.ingress_time_ns, self.cumulative_scaled_rate_offset,
                            self.scaled_last_gm_phase_change, self.gm_time_base_indicator)
                + (self.last_gm_phase_change_scaled_ns & ((1 << 96) - 1)).to_bytes(12, "big")
                + struct.pack("!i", self.gm_present) + bytes(self.gm_identity))
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> TimeStatusNp:
        if len(value) < 50:
            raise _short("TIME_STATUS_NP", 50, len(value))
        mo, it, csro, slgpc, tbi = struct.unpack_from("!qqiiH", value)
        lgpc = int.from_bytes(value[26:38], "big", signed=True)
        (gp,) = struct.unpack_from("!i", value, 38)
        return cls(mo, it, csro, slgpc, tbi, lgpc, gp, bytes(value[42:50]), value[50:])


@_data
@dataclass(frozen=True, slots=True)
class GrandmasterSettingsNp:
    """GRANDMASTER_SETTINGS_NP (linuxptp 0xC001): clockQuality, utc_offset, time_flags (the
    Announce flag bits of octet 1: leap61 0x01, leap59 0x02, UTC valid 0x04, PTP timescale 0x08,
    time traceable 0x10, frequency traceable 0x20), time_source."""

    MANAGEMENT_ID: ClassVar = ManagementId.GRANDMASTER_SETTINGS_NP
    clock_quality: ClockQuality = field(default_factory=ClockQuality)
    utc_offset: int = 0
    time_flags: int = 0
    time_source: int = 0xA0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_int("utc_offset", self.utc_offset, 16)
        check_uint("time_flags", self.time_flags, 8)
        check_uint("time_source", int(self.time_source), 8)
        body = self.clock_quality.pack() + struct.pack("!hBB", self.utc_offset, self.time_flags, int(self.time_source))
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> GrandmasterSettingsNp:
        if len(value) < 8:
            raise _short("GRANDMASTER_SETTINGS_NP", 8, len(value))
        utc, flags, src = struct.unpack_from("!hBB", value, 4)
        return cls(unpack_clock_quality(value, 0), utc, flags, src, value[8:])


class NpTimestamping:
    """linuxptp's enum timestamp_type (PORT_PROPERTIES_NP.timestamping)."""

    SOFTWARE = 0
    HARDWARE = 1
    LEGACY_HW = 2
    ONESTEP = 3
    P2P1STEP = 4


@_data
@dataclass(frozen=True, slots=True)
class PortPropertiesNp:
    """PORT_PROPERTIES_NP (linuxptp 0xC004): portIdentity, port_state, timestamping, interface."""

    MANAGEMENT_ID: ClassVar = ManagementId.PORT_PROPERTIES_NP
    port_identity: PortIdentity = field(default_factory=PortIdentity)
    port_state: int = 1
    timestamping: int = NpTimestamping.SOFTWARE
    interface: PTPText = field(default_factory=PTPText)
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("port_state", int(self.port_state), 8)
        check_uint("timestamping", self.timestamping, 8)
        body = self.port_identity.pack() + bytes([int(self.port_state), self.timestamping]) + self.interface.pack()
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack(cls, value: bytes) -> PortPropertiesNp:
        if len(value) < 13:
            raise _short("PORT_PROPERTIES_NP", 13, len(value))
        text = unpack_ptp_text(value, 12)
        return cls(unpack_port_identity(value, 0), value[10], value[11], text, value[12 + text.size:])


# --- the TLVs -------------------------------------------------------------------------------------


@register_tlv
@dataclass(frozen=True, slots=True)
class ManagementTlv:
    """MANAGEMENT TLV (15.5.2): managementId + dataField."""

    TLV_TYPES: ClassVar = (TlvType.MANAGEMENT,)
    management_id: ManagementId | int = ManagementId.NULL_MANAGEMENT
    data: Any = None  # None (empty), a data class from DATA_CLASSES, or bytes (uninterpreted ID)

    @property
    def tlv_type(self) -> int:
        return TlvType.MANAGEMENT

    def value_bytes(self) -> bytes:
        check_uint("managementId", int(self.management_id), 16)
        if self.data is None:
            payload = b""
        elif isinstance(self.data, (bytes, bytearray)):
            payload = bytes(self.data)
        else:
            want = getattr(self.data, "MANAGEMENT_ID", None)
            if want is None or int(want) != int(self.management_id):
                raise EncodeError(
                    f"data {type(self.data).__name__} does not belong to managementId 0x{int(self.management_id):04x}"
                )
            payload = self.data.value_bytes()
        return struct.pack("!H", int(self.management_id)) + payload

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> ManagementTlv:
        if len(value) < 2:
            raise TlvError(f"MANAGEMENT TLV needs a 2-byte managementId, lengthField gives {len(value)}", 0)
        (mid,) = struct.unpack_from("!H", value)
        payload = value[2:]
        mid_e = as_enum(ManagementId, mid)
        if not payload:
            return cls(mid_e, None)
        data_cls = DATA_CLASSES.get(mid)
        if data_cls is None:
            return cls(mid_e, bytes(payload))
        try:
            return cls(mid_e, data_cls.unpack(payload))
        except TlvError as exc:
            raise TlvError(f"{getattr(mid_e, 'name', hex(mid))}: {exc.reason}", 2 + (exc.offset or 0)) from None
        except Exception as exc:  # CodecError from a nested unpack
            raise TlvError(f"{getattr(mid_e, 'name', hex(mid))}: {getattr(exc, 'reason', exc)}", 2) from None


@register_tlv
@dataclass(frozen=True, slots=True)
class ManagementErrorStatusTlv:
    """MANAGEMENT_ERROR_STATUS (15.5.4): managementErrorId, managementId, 4 reserved, displayData."""

    TLV_TYPES: ClassVar = (TlvType.MANAGEMENT_ERROR_STATUS,)
    management_error_id: ManagementErrorId | int = ManagementErrorId.GENERAL_ERROR
    management_id: ManagementId | int = ManagementId.NULL_MANAGEMENT
    reserved: bytes = bytes(4)
    display_data: PTPText | None = None
    pad: bytes | None = None

    @property
    def tlv_type(self) -> int:
        return TlvType.MANAGEMENT_ERROR_STATUS

    def value_bytes(self) -> bytes:
        check_uint("managementErrorId", int(self.management_error_id), 16)
        check_uint("managementId", int(self.management_id), 16)
        if len(self.reserved) != 4:
            raise EncodeError("reserved must be 4 octets")
        body = struct.pack("!HH", int(self.management_error_id), int(self.management_id)) + bytes(self.reserved)
        if self.display_data is not None:
            body += self.display_data.pack()
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> ManagementErrorStatusTlv:
        if len(value) < 8:
            raise TlvError(f"MANAGEMENT_ERROR_STATUS needs 8 value bytes, lengthField gives {len(value)}", 0)
        err, mid = struct.unpack_from("!HH", value)
        display = None
        pos = 8
        if len(value) > 8:
            display = unpack_ptp_text(value, 8)
            pos += display.size
        return cls(as_enum(ManagementErrorId, err), as_enum(ManagementId, mid), value[4:8], display, value[pos:])
