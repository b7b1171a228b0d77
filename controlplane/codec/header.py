"""The 34-byte PTP common header (IEEE 1588-2019 clause 13.3), every field and flag.

Layout (offset: field)
  0  majorSdoId (transportSpecific, 4 bits) | messageType (4 bits)
  1  minorVersionPTP (4 bits) | versionPTP (4 bits)
  2  messageLength (16)         4  domainNumber        5  minorSdoId
  6  flagField (16)             8  correctionField (int64, ns * 2^16)
 16  messageTypeSpecific (32)  20  sourcePortIdentity (10)
 30  sequenceId (16)           32  controlField        33  logMessageInterval (int8)

Flag bits not defined by the standard are kept in ``reserved_flags`` so re-encoding is exact.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from controlplane.codec.enums import CONTROL_FIELD_FOR, ControlField, MessageType, as_enum
from controlplane.codec.errors import HeaderError, MessageTypeError
from controlplane.codec.types import PortIdentity, check_int, check_uint, unpack_port_identity

HEADER_LEN = 34
PTP_VERSION = 2
_FMT = "!BBHBBHqI10sHBb"

# flagField bit masks, octet 0 in the high byte (as it is on the wire)
FLAG_ALTERNATE_MASTER = 0x0100
FLAG_TWO_STEP = 0x0200
FLAG_UNICAST = 0x0400
FLAG_PROFILE_SPECIFIC_1 = 0x2000
FLAG_PROFILE_SPECIFIC_2 = 0x4000
FLAG_LEAP61 = 0x0001
FLAG_LEAP59 = 0x0002
FLAG_CURRENT_UTC_OFFSET_VALID = 0x0004
FLAG_PTP_TIMESCALE = 0x0008
FLAG_TIME_TRACEABLE = 0x0010
FLAG_FREQUENCY_TRACEABLE = 0x0020
FLAG_SYNCHRONIZATION_UNCERTAIN = 0x0040

_FLAG_FIELDS = (
    ("alternate_master", FLAG_ALTERNATE_MASTER),
    ("two_step", FLAG_TWO_STEP),
    ("unicast", FLAG_UNICAST),
    ("profile_specific_1", FLAG_PROFILE_SPECIFIC_1),
    ("profile_specific_2", FLAG_PROFILE_SPECIFIC_2),
    ("leap61", FLAG_LEAP61),
    ("leap59", FLAG_LEAP59),
    ("current_utc_offset_valid", FLAG_CURRENT_UTC_OFFSET_VALID),
    ("ptp_timescale", FLAG_PTP_TIMESCALE),
    ("time_traceable", FLAG_TIME_TRACEABLE),
    ("frequency_traceable", FLAG_FREQUENCY_TRACEABLE),
    ("synchronization_uncertain", FLAG_SYNCHRONIZATION_UNCERTAIN),
)
_DEFINED_FLAGS = 0
for _name, _mask in _FLAG_FIELDS:
    _DEFINED_FLAGS |= _mask


@dataclass(frozen=True, slots=True)
class Header:
    """Common header. ``message_type`` and ``message_length`` are filled in by ``encode()``
    from the message class and its size; ``control_field=None`` means the type's standard value."""

    message_type: MessageType | int = MessageType.SYNC
    message_length: int = 0
    sequence_id: int = 0
    domain_number: int = 0
    source_port_identity: PortIdentity = field(default_factory=PortIdentity)
    correction_scaled_ns: int = 0
    log_message_interval: int = 0x7F
    control_field: int | None = None
    transport_specific: int = 0  # majorSdoId
    version_ptp: int = PTP_VERSION
    minor_version_ptp: int = 0
    minor_sdo_id: int = 0
    message_type_specific: int = 0
    alternate_master: bool = False
    two_step: bool = False
    unicast: bool = False
    profile_specific_1: bool = False
    profile_specific_2: bool = False
    leap61: bool = False
    leap59: bool = False
    current_utc_offset_valid: bool = False
    ptp_timescale: bool = False
    time_traceable: bool = False
    frequency_traceable: bool = False
    synchronization_uncertain: bool = False
    reserved_flags: int = 0

    @property
    def major_sdo_id(self) -> int:
        return self.transport_specific

    @property
    def flag_field(self) -> int:
        value = self.reserved_flags
        for name, mask in _FLAG_FIELDS:
            if getattr(self, name):
                value |= mask
        return value

    @property
    def correction_ns(self) -> float:
        """correctionField in nanoseconds (float; the exact wire value is ``correction_scaled_ns``)."""
        return self.correction_scaled_ns / 65536

    def pack(self, message_type: int | None = None, message_length: int | None = None) -> bytes:
        mtype = int(self.message_type if message_type is None else message_type)
        mlen = self.message_length if message_length is None else message_length
        ctrl = self.control_field
        if ctrl is None:
            ctrl = int(CONTROL_FIELD_FOR.get(as_enum(MessageType, mtype), ControlField.OTHER))  # type: ignore[call-overload]
        check_uint("messageType", mtype, 4)
        check_uint("transportSpecific", self.transport_specific, 4)
        check_uint("versionPTP", self.version_ptp, 4)
        check_uint("minorVersionPTP", self.minor_version_ptp, 4)
        check_uint("messageLength", mlen, 16)
        check_uint("domainNumber", self.domain_number, 8)
        check_uint("minorSdoId", self.minor_sdo_id, 8)
        check_uint("reserved_flags", self.reserved_flags, 16)
        if self.reserved_flags & _DEFINED_FLAGS:
            from controlplane.codec.errors import EncodeError

            raise EncodeError("reserved_flags overlaps a defined flag; set the named flag instead")
        check_int("correctionField", self.correction_scaled_ns, 64)
        check_uint("messageTypeSpecific", self.message_type_specific, 32)
        check_uint("sequenceId", self.sequence_id, 16)
        check_uint("controlField", ctrl, 8)
        check_int("logMessageInterval", self.log_message_interval, 8)
        return struct.pack(
            _FMT,
            (self.transport_specific << 4) | mtype,
            (self.minor_version_ptp << 4) | self.version_ptp,
            mlen,
            self.domain_number,
            self.minor_sdo_id,
            self.flag_field,
            self.correction_scaled_ns,
            self.message_type_specific,
            self.source_port_identity.pack(),
            self.sequence_id,
            ctrl,
            self.log_message_interval,
        )


def decode_header(data: bytes) -> Header:
    """Stage 1 and 2 of validation: length, version, message type. Raises HeaderError/MessageTypeError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise HeaderError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise HeaderError(f"{len(data)} bytes is shorter than the {HEADER_LEN}-byte common header")
    (b0, b1, mlen, domain, minor_sdo, flags, corr, mts, _spid, seq, ctrl, lmi) = struct.unpack_from(_FMT, data)
    version = b1 & 0x0F
    minor = b1 >> 4
    if version != PTP_VERSION:
        raise HeaderError(f"versionPTP {version} is not 2 (only PTP v2 is supported)", 1)
    if minor > 1:
        raise HeaderError(f"minorVersionPTP {minor} is not 0 (1588-2008) or 1 (1588-2019)", 1)
    mtype = b0 & 0x0F
    try:
        message_type = MessageType(mtype)
    except ValueError:
        raise MessageTypeError(f"messageType 0x{mtype:x} is reserved", 0) from None
    kwargs = {name: bool(flags & mask) for name, mask in _FLAG_FIELDS}
    return Header(
        message_type=message_type,
        message_length=mlen,
        sequence_id=seq,
        domain_number=domain,
        source_port_identity=unpack_port_identity(data, 20),
        correction_scaled_ns=corr,
        log_message_interval=lmi,
        control_field=ctrl,
        transport_specific=b0 >> 4,
        version_ptp=version,
        minor_version_ptp=minor,
        minor_sdo_id=minor_sdo,
        message_type_specific=mts,
        reserved_flags=flags & ~_DEFINED_FLAGS & 0xFFFF,
        **kwargs,
    )
