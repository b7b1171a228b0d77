"""The ten PTP v2 message types (IEEE 1588-2019 clause 13) and ``decode`` / ``encode``.

Validation is staged like linuxptp's msg.c: (1) header length and version, (2) message type,
(3) messageLength and buffer long enough for the type's body, (4) TLVs exactly fill
[body end, messageLength) with even, non-overrunning lengths. Bytes after messageLength
(Ethernet padding, the UDPv6 checksum-fix trailer, ...) are kept in ``trailer``.
``encode()`` recomputes messageLength and appends ``trailer``, so ``encode(decode(b)) == b``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from controlplane.codec.enums import ManagementAction, MessageType, TimeSource, as_enum
from controlplane.codec.errors import BodyLengthError, CodecError, EncodeError, LengthMismatchError
from controlplane.codec.header import HEADER_LEN, Header, decode_header
from controlplane.codec.tlv import decode_tlvs, encode_tlvs
from controlplane.codec.types import (
    ClockQuality,
    PortIdentity,
    Timestamp,
    check_int,
    check_uint,
    unpack_clock_quality,
    unpack_port_identity,
    unpack_timestamp,
)

# body length (after the 34-byte header) of each message type
BODY_LEN = {
    MessageType.SYNC: 10,
    MessageType.DELAY_REQ: 10,
    MessageType.PDELAY_REQ: 20,
    MessageType.PDELAY_RESP: 20,
    MessageType.FOLLOW_UP: 10,
    MessageType.DELAY_RESP: 20,
    MessageType.PDELAY_RESP_FOLLOW_UP: 20,
    MessageType.ANNOUNCE: 30,
    MessageType.SIGNALING: 10,
    MessageType.MANAGEMENT: 14,
}


@dataclass(frozen=True, slots=True)
class Sync:
    MESSAGE_TYPE: ClassVar = MessageType.SYNC
    header: Header = field(default_factory=Header)
    origin_timestamp: Timestamp = field(default_factory=Timestamp)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        return self.origin_timestamp.pack()


@dataclass(frozen=True, slots=True)
class DelayReq:
    MESSAGE_TYPE: ClassVar = MessageType.DELAY_REQ
    header: Header = field(default_factory=Header)
    origin_timestamp: Timestamp = field(default_factory=Timestamp)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        return self.origin_timestamp.pack()


@dataclass(frozen=True, slots=True)
class FollowUp:
    MESSAGE_TYPE: ClassVar = MessageType.FOLLOW_UP
    header: Header = field(default_factory=Header)
    precise_origin_timestamp: Timestamp = field(default_factory=Timestamp)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        return self.precise_origin_timestamp.pack()


@dataclass(frozen=True, slots=True)
class DelayResp:
    MESSAGE_TYPE: ClassVar = MessageType.DELAY_RESP
    header: Header = field(default_factory=Header)
    receive_timestamp: Timestamp = field(default_factory=Timestamp)
    requesting_port_identity: PortIdentity = field(default_factory=PortIdentity)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        return self.receive_timestamp.pack() + self.requesting_port_identity.pack()


@dataclass(frozen=True, slots=True)
class PdelayReq:
    MESSAGE_TYPE: ClassVar = MessageType.PDELAY_REQ
    header: Header = field(default_factory=Header)
    origin_timestamp: Timestamp = field(default_factory=Timestamp)
    reserved: bytes = bytes(10)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        if len(self.reserved) != 10:
            raise EncodeError("Pdelay_Req reserved field must be 10 octets")
        return self.origin_timestamp.pack() + bytes(self.reserved)


@dataclass(frozen=True, slots=True)
class PdelayResp:
    MESSAGE_TYPE: ClassVar = MessageType.PDELAY_RESP
    header: Header = field(default_factory=Header)
    request_receipt_timestamp: Timestamp = field(default_factory=Timestamp)
    requesting_port_identity: PortIdentity = field(default_factory=PortIdentity)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        return self.request_receipt_timestamp.pack() + self.requesting_port_identity.pack()


@dataclass(frozen=True, slots=True)
class PdelayRespFollowUp:
    MESSAGE_TYPE: ClassVar = MessageType.PDELAY_RESP_FOLLOW_UP
    header: Header = field(default_factory=Header)
    response_origin_timestamp: Timestamp = field(default_factory=Timestamp)
    requesting_port_identity: PortIdentity = field(default_factory=PortIdentity)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        return self.response_origin_timestamp.pack() + self.requesting_port_identity.pack()


@dataclass(frozen=True, slots=True)
class Announce:
    MESSAGE_TYPE: ClassVar = MessageType.ANNOUNCE
    header: Header = field(default_factory=Header)
    origin_timestamp: Timestamp = field(default_factory=Timestamp)
    current_utc_offset: int = 37
    grandmaster_priority1: int = 128
    grandmaster_clock_quality: ClockQuality = field(default_factory=ClockQuality)
    grandmaster_priority2: int = 128
    grandmaster_identity: bytes = bytes(8)
    steps_removed: int = 0
    time_source: TimeSource | int = TimeSource.INTERNAL_OSCILLATOR
    reserved: int = 0
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        check_int("currentUtcOffset", self.current_utc_offset, 16)
        check_uint("reserved", self.reserved, 8)
        check_uint("grandmasterPriority1", self.grandmaster_priority1, 8)
        check_uint("grandmasterPriority2", self.grandmaster_priority2, 8)
        check_uint("stepsRemoved", self.steps_removed, 16)
        check_uint("timeSource", int(self.time_source), 8)
        if len(self.grandmaster_identity) != 8:
            raise EncodeError("grandmasterIdentity must be 8 octets")
        return (
            self.origin_timestamp.pack()
            + struct.pack("!hBB", self.current_utc_offset, self.reserved, self.grandmaster_priority1)
            + self.grandmaster_clock_quality.pack()
            + bytes([self.grandmaster_priority2])
            + bytes(self.grandmaster_identity)
            + struct.pack("!HB", self.steps_removed, int(self.time_source))
        )


@dataclass(frozen=True, slots=True)
class Signaling:
    MESSAGE_TYPE: ClassVar = MessageType.SIGNALING
    header: Header = field(default_factory=Header)
    target_port_identity: PortIdentity = field(default_factory=PortIdentity)
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        return self.target_port_identity.pack()


@dataclass(frozen=True, slots=True)
class Management:
    MESSAGE_TYPE: ClassVar = MessageType.MANAGEMENT
    header: Header = field(default_factory=Header)
    target_port_identity: PortIdentity = field(default_factory=PortIdentity)
    starting_boundary_hops: int = 0
    boundary_hops: int = 0
    action_field: ManagementAction | int = ManagementAction.GET
    reserved_nibble: int = 0
    reserved: int = 0
    tlvs: tuple[Any, ...] = ()
    trailer: bytes = b""

    def body(self) -> bytes:
        check_uint("startingBoundaryHops", self.starting_boundary_hops, 8)
        check_uint("boundaryHops", self.boundary_hops, 8)
        check_uint("actionField", int(self.action_field), 4)
        check_uint("reserved_nibble", self.reserved_nibble, 4)
        check_uint("reserved", self.reserved, 8)
        return self.target_port_identity.pack() + bytes(
            [
                self.starting_boundary_hops,
                self.boundary_hops,
                (self.reserved_nibble << 4) | int(self.action_field),
                self.reserved,
            ]
        )

    @property
    def management_tlv(self) -> Any:
        """The first MANAGEMENT or MANAGEMENT_ERROR_STATUS TLV, or None."""
        return self.tlvs[0] if self.tlvs else None


Message = Union[
    Sync, DelayReq, FollowUp, DelayResp, PdelayReq, PdelayResp, PdelayRespFollowUp, Announce, Signaling, Management
]

MESSAGE_CLASSES: dict[MessageType, Any] = {
    cls.MESSAGE_TYPE: cls
    for cls in (Sync, DelayReq, FollowUp, DelayResp, PdelayReq, PdelayResp, PdelayRespFollowUp, Announce, Signaling, Management)
}


def _decode_body(mtype: MessageType, header: Header, b: bytes) -> dict[str, Any]:
    o = HEADER_LEN
    if mtype in (MessageType.SYNC, MessageType.DELAY_REQ):
        return {"origin_timestamp": unpack_timestamp(b, o)}
    if mtype is MessageType.FOLLOW_UP:
        return {"precise_origin_timestamp": unpack_timestamp(b, o)}
    if mtype is MessageType.DELAY_RESP:
        return {"receive_timestamp": unpack_timestamp(b, o), "requesting_port_identity": unpack_port_identity(b, o + 10)}
    if mtype is MessageType.PDELAY_REQ:
        return {"origin_timestamp": unpack_timestamp(b, o), "reserved": bytes(b[o + 10 : o + 20])}
    if mtype is MessageType.PDELAY_RESP:
        return {
            "request_receipt_timestamp": unpack_timestamp(b, o),
            "requesting_port_identity": unpack_port_identity(b, o + 10),
        }
    if mtype is MessageType.PDELAY_RESP_FOLLOW_UP:
        return {
            "response_origin_timestamp": unpack_timestamp(b, o),
            "requesting_port_identity": unpack_port_identity(b, o + 10),
        }
    if mtype is MessageType.ANNOUNCE:
        utc, res, p1 = struct.unpack_from("!hBB", b, o + 10)
        steps, ts = struct.unpack_from("!HB", b, o + 27)
        return {
            "origin_timestamp": unpack_timestamp(b, o),
            "current_utc_offset": utc,
            "reserved": res,
            "grandmaster_priority1": p1,
            "grandmaster_clock_quality": unpack_clock_quality(b, o + 14),
            "grandmaster_priority2": b[o + 18],
            "grandmaster_identity": bytes(b[o + 19 : o + 27]),
            "steps_removed": steps,
            "time_source": as_enum(TimeSource, ts),
        }
    if mtype is MessageType.SIGNALING:
        return {"target_port_identity": unpack_port_identity(b, o)}
    # MANAGEMENT
    return {
        "target_port_identity": unpack_port_identity(b, o),
        "starting_boundary_hops": b[o + 10],
        "boundary_hops": b[o + 11],
        "action_field": as_enum(ManagementAction, b[o + 12] & 0x0F),
        "reserved_nibble": b[o + 12] >> 4,
        "reserved": b[o + 13],
    }


def decode(data: bytes) -> Message:
    """Decode one PTP message. Raises only ``CodecError`` (a subclass naming the stage)."""
    try:
        return _decode(data)
    except CodecError:
        raise
    except Exception as exc:  # defence in depth: the contract is "CodecError or a message"
        raise CodecError(f"internal decoder error on malformed input: {type(exc).__name__}: {exc}") from None


def _decode(data: bytes) -> Message:
    header = decode_header(data)
    b = bytes(data)
    mtype = MessageType(header.message_type)
    need = HEADER_LEN + BODY_LEN[mtype]
    mlen = header.message_length
    if mlen < need:
        raise BodyLengthError(f"messageLength {mlen} is shorter than the {need} bytes a {mtype.name} needs", 2)
    if len(b) < need:
        raise BodyLengthError(f"{len(b)} bytes is shorter than the {need} bytes a {mtype.name} needs", len(b))
    if len(b) < mlen:
        raise LengthMismatchError(f"messageLength {mlen} exceeds the {len(b)} bytes received", 2)
    fields = _decode_body(mtype, header, b)
    tlvs = decode_tlvs(b[need:mlen], base_offset=need)
    return MESSAGE_CLASSES[mtype](header=header, tlvs=tlvs, trailer=b[mlen:], **fields)


def encode(msg: Message, *, with_trailer: bool = True) -> bytes:
    """Encode a message; messageType comes from the class, messageLength is computed."""
    cls = type(msg)
    mtype = getattr(cls, "MESSAGE_TYPE", None)
    if mtype is None or MESSAGE_CLASSES.get(mtype) is not cls:
        raise EncodeError(f"{cls.__name__} is not a PTP message class")
    body = msg.body()
    tlvs = encode_tlvs(msg.tlvs)
    length = HEADER_LEN + len(body) + len(tlvs)
    if length > 0xFFFF:
        raise EncodeError(f"message of {length} bytes exceeds messageLength's 16 bits")
    out = msg.header.pack(message_type=int(mtype), message_length=length) + body + tlvs
    return out + bytes(msg.trailer) if with_trailer else out


def message_length(msg: Message) -> int:
    return len(encode(msg, with_trailer=False))
