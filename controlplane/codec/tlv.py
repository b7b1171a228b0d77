"""TLVs (IEEE 1588-2019 clause 14): framing, the unicast-negotiation TLVs, PATH_TRACE,
ORGANIZATION_EXTENSION and opaque unknown TLVs. Management TLVs live in ``management.py``.

Every structured TLV keeps bytes its lengthField covers beyond the defined fields in ``pad`` so
re-encoding is exact; ``pad=None`` in a constructed TLV means "pad to an even length".
A TLV's lengthField must be even (14.1.1) and must not overrun the message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from controlplane.codec.enums import MessageType, TlvType, as_enum
from controlplane.codec.errors import CodecError, EncodeError, TlvError
from controlplane.codec.types import check_int, check_uint

TLV_HEADER_LEN = 4


class Tlv(Protocol):
    @property
    def tlv_type(self) -> int: ...

    def value_bytes(self) -> bytes: ...


_REGISTRY: dict[int, Any] = {}


def register_tlv(cls: Any) -> Any:
    """Class decorator: ``cls.TLV_TYPES`` are decoded with ``cls.unpack_value(tlv_type, value)``."""
    for t in cls.TLV_TYPES:
        _REGISTRY[int(t)] = cls
    return cls


def even_pad(pad: bytes | None, length: int) -> bytes:
    if pad is None:
        return b"\x00" if length % 2 else b""
    return bytes(pad)


def encode_tlv(tlv: Tlv) -> bytes:
    value = tlv.value_bytes()
    check_uint("tlvType", int(tlv.tlv_type), 16)
    if len(value) > 0xFFFF:
        raise EncodeError(f"TLV 0x{int(tlv.tlv_type):04x} value of {len(value)} bytes is too long")
    if len(value) % 2:
        raise EncodeError(f"TLV 0x{int(tlv.tlv_type):04x} value has odd length {len(value)} (must be even)")
    return struct.pack("!HH", int(tlv.tlv_type), len(value)) + value


def encode_tlvs(tlvs: tuple[Tlv, ...] | list[Tlv]) -> bytes:
    return b"".join(encode_tlv(t) for t in tlvs)


def decode_tlvs(data: bytes, base_offset: int = 0) -> tuple[Any, ...]:
    """Decode a TLV sequence filling ``data`` exactly. ``base_offset`` is for error messages."""
    out = []
    pos = 0
    while pos < len(data):
        at = base_offset + pos
        if len(data) - pos < TLV_HEADER_LEN:
            raise TlvError(f"{len(data) - pos} bytes left after the last TLV: too short for a TLV header", at)
        tlv_type, length = struct.unpack_from("!HH", data, pos)
        if length % 2:
            raise TlvError(f"TLV 0x{tlv_type:04x} has odd lengthField {length}", at + 2)
        if pos + TLV_HEADER_LEN + length > len(data):
            raise TlvError(
                f"TLV 0x{tlv_type:04x} lengthField {length} overruns the message "
                f"({len(data) - pos - TLV_HEADER_LEN} bytes left)",
                at + 2,
            )
        value = bytes(data[pos + TLV_HEADER_LEN : pos + TLV_HEADER_LEN + length])
        cls = _REGISTRY.get(tlv_type)
        if cls is None:
            out.append(UnknownTlv(tlv_type, value))
        else:
            try:
                out.append(cls.unpack_value(tlv_type, value))
            except TlvError as exc:
                raise TlvError(exc.reason, at + TLV_HEADER_LEN + (exc.offset or 0)) from None
            except CodecError as exc:  # a nested parser ran out of bytes, etc.
                name = as_enum(TlvType, tlv_type)
                raise TlvError(f"{getattr(name, 'name', name)}: {exc.reason}", at) from None
        pos += TLV_HEADER_LEN + length
    return tuple(out)


def _need(value: bytes, n: int, what: str) -> None:
    if len(value) < n:
        raise TlvError(f"{what} TLV needs at least {n} value bytes, lengthField gives {len(value)}", 0)


@dataclass(frozen=True, slots=True)
class UnknownTlv:
    """Any TLV this codec does not interpret: kept as opaque bytes and forwarded unchanged."""

    tlv_type: int
    value: bytes = b""

    def value_bytes(self) -> bytes:
        return bytes(self.value)


@register_tlv
@dataclass(frozen=True, slots=True)
class RequestUnicastTransmissionTlv:
    """REQUEST_UNICAST_TRANSMISSION (16.1.4.1): messageType nibble, logInterMessagePeriod, durationField."""

    TLV_TYPES: ClassVar = (TlvType.REQUEST_UNICAST_TRANSMISSION,)
    message_type: MessageType | int = MessageType.ANNOUNCE
    log_inter_message_period: int = 0
    duration_field: int = 0
    reserved_nibble: int = 0
    pad: bytes | None = None

    @property
    def tlv_type(self) -> int:
        return TlvType.REQUEST_UNICAST_TRANSMISSION

    def value_bytes(self) -> bytes:
        check_uint("messageType", int(self.message_type), 4)
        check_uint("reserved_nibble", self.reserved_nibble, 4)
        check_int("logInterMessagePeriod", self.log_inter_message_period, 8)
        check_uint("durationField", self.duration_field, 32)
        body = struct.pack(
            "!BbI", (int(self.message_type) << 4) | self.reserved_nibble, self.log_inter_message_period, self.duration_field
        )
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> RequestUnicastTransmissionTlv:
        _need(value, 6, "REQUEST_UNICAST_TRANSMISSION")
        b0, lim, dur = struct.unpack_from("!BbI", value)
        return cls(as_enum(MessageType, b0 >> 4), lim, dur, b0 & 0x0F, value[6:])


@register_tlv
@dataclass(frozen=True, slots=True)
class GrantUnicastTransmissionTlv:
    """GRANT_UNICAST_TRANSMISSION (16.1.4.2): as REQUEST plus reserved octet and renewalInvited flag."""

    TLV_TYPES: ClassVar = (TlvType.GRANT_UNICAST_TRANSMISSION,)
    message_type: MessageType | int = MessageType.ANNOUNCE
    log_inter_message_period: int = 0
    duration_field: int = 0
    renewal_invited: bool = False
    reserved_nibble: int = 0
    reserved: int = 0
    reserved_flags: int = 0
    pad: bytes | None = None

    @property
    def tlv_type(self) -> int:
        return TlvType.GRANT_UNICAST_TRANSMISSION

    def value_bytes(self) -> bytes:
        check_uint("messageType", int(self.message_type), 4)
        check_uint("reserved_nibble", self.reserved_nibble, 4)
        check_int("logInterMessagePeriod", self.log_inter_message_period, 8)
        check_uint("durationField", self.duration_field, 32)
        check_uint("reserved", self.reserved, 8)
        check_uint("reserved_flags", self.reserved_flags, 8)
        if self.reserved_flags & 1:
            raise EncodeError("reserved_flags bit 0 is renewal_invited")
        body = struct.pack(
            "!BbIBB",
            (int(self.message_type) << 4) | self.reserved_nibble,
            self.log_inter_message_period,
            self.duration_field,
            self.reserved,
            self.reserved_flags | int(self.renewal_invited),
        )
        return body + even_pad(self.pad, len(body))

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> GrantUnicastTransmissionTlv:
        _need(value, 8, "GRANT_UNICAST_TRANSMISSION")
        b0, lim, dur, res, flags = struct.unpack_from("!BbIBB", value)
        return cls(as_enum(MessageType, b0 >> 4), lim, dur, bool(flags & 1), b0 & 0x0F, res, flags & 0xFE, value[8:])


@dataclass(frozen=True, slots=True)
class _CancelBase:
    message_type: MessageType | int = MessageType.ANNOUNCE
    reserved_nibble: int = 0
    reserved: int = 0
    pad: bytes | None = None

    def value_bytes(self) -> bytes:
        check_uint("messageType", int(self.message_type), 4)
        check_uint("reserved_nibble", self.reserved_nibble, 4)
        check_uint("reserved", self.reserved, 8)
        body = bytes([(int(self.message_type) << 4) | self.reserved_nibble, self.reserved])
        return body + even_pad(self.pad, len(body))


@register_tlv
@dataclass(frozen=True, slots=True)
class CancelUnicastTransmissionTlv(_CancelBase):
    """CANCEL_UNICAST_TRANSMISSION (16.1.4.3). The low nibble of octet 0 holds linuxptp's
    maintain-request/grant flags (kept as ``reserved_nibble``)."""

    TLV_TYPES: ClassVar = (TlvType.CANCEL_UNICAST_TRANSMISSION,)

    @property
    def tlv_type(self) -> int:
        return TlvType.CANCEL_UNICAST_TRANSMISSION

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> CancelUnicastTransmissionTlv:
        _need(value, 2, "CANCEL_UNICAST_TRANSMISSION")
        return cls(as_enum(MessageType, value[0] >> 4), value[0] & 0x0F, value[1], value[2:])


@register_tlv
@dataclass(frozen=True, slots=True)
class AcknowledgeCancelUnicastTransmissionTlv(_CancelBase):
    """ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION (16.1.4.4)."""

    TLV_TYPES: ClassVar = (TlvType.ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION,)

    @property
    def tlv_type(self) -> int:
        return TlvType.ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> AcknowledgeCancelUnicastTransmissionTlv:
        _need(value, 2, "ACKNOWLEDGE_CANCEL_UNICAST_TRANSMISSION")
        return cls(as_enum(MessageType, value[0] >> 4), value[0] & 0x0F, value[1], value[2:])


@register_tlv
@dataclass(frozen=True, slots=True)
class PathTraceTlv:
    """PATH_TRACE (16.2): the ClockIdentity of every boundary clock the Announce crossed."""

    TLV_TYPES: ClassVar = (TlvType.PATH_TRACE,)
    path_sequence: tuple[bytes, ...] = ()

    @property
    def tlv_type(self) -> int:
        return TlvType.PATH_TRACE

    def value_bytes(self) -> bytes:
        for cid in self.path_sequence:
            if len(cid) != 8:
                raise EncodeError(f"PATH_TRACE entry {cid!r} is not an 8-octet ClockIdentity")
        return b"".join(bytes(c) for c in self.path_sequence)

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> PathTraceTlv:
        if len(value) % 8:
            raise TlvError(f"PATH_TRACE length {len(value)} is not a multiple of 8 (ClockIdentity)", 0)
        return cls(tuple(value[i : i + 8] for i in range(0, len(value), 8)))


@register_tlv
@dataclass(frozen=True, slots=True)
class OrganizationExtensionTlv:
    """ORGANIZATION_EXTENSION (14.3) and its _PROPAGATE / _DO_NOT_PROPAGATE variants:
    organizationId (3 octets), organizationSubType (3 octets), opaque dataField."""

    TLV_TYPES: ClassVar = (
        TlvType.ORGANIZATION_EXTENSION,
        TlvType.ORGANIZATION_EXTENSION_PROPAGATE,
        TlvType.ORGANIZATION_EXTENSION_DO_NOT_PROPAGATE,
    )
    organization_id: bytes = bytes(3)
    organization_sub_type: int = 0
    data_field: bytes = b""
    tlv_type: int = TlvType.ORGANIZATION_EXTENSION

    def value_bytes(self) -> bytes:
        if len(self.organization_id) != 3:
            raise EncodeError("organizationId must be 3 octets")
        check_uint("organizationSubType", self.organization_sub_type, 24)
        return bytes(self.organization_id) + self.organization_sub_type.to_bytes(3, "big") + bytes(self.data_field)

    @classmethod
    def unpack_value(cls, tlv_type: int, value: bytes) -> OrganizationExtensionTlv:
        _need(value, 6, "ORGANIZATION_EXTENSION")
        return cls(value[:3], int.from_bytes(value[3:6], "big"), value[6:], as_enum(TlvType, tlv_type))
