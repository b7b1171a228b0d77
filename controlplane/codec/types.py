"""Derived data types of IEEE 1588 (clause 5.3): Timestamp, PortIdentity, ClockQuality, ...

All are frozen dataclasses that validate their ranges at construction (misuse raises
``EncodeError``) and have ``pack()`` plus a module-level ``unpack_*`` taking ``(data, offset)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from controlplane.codec.errors import CodecError, EncodeError

NS_PER_S = 1_000_000_000
TIMESTAMP_LEN = 10
PORT_IDENTITY_LEN = 10
CLOCK_QUALITY_LEN = 4
CLOCK_IDENTITY_LEN = 8


def check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise EncodeError(f"{name}={value!r} does not fit in an unsigned {bits}-bit field")


def check_int(name: str, value: int, bits: int) -> None:
    lim = 1 << (bits - 1)
    if not isinstance(value, int) or not -lim <= value < lim:
        raise EncodeError(f"{name}={value!r} does not fit in a signed {bits}-bit field")


def check_bytes(name: str, value: bytes, length: int) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != length:
        raise EncodeError(f"{name} must be {length} bytes, got {value!r}")


def need(data: bytes, offset: int, length: int, what: str, exc: type[CodecError] = CodecError) -> None:
    """Raise ``exc`` unless ``data[offset:offset+length]`` is complete."""
    if offset < 0 or offset + length > len(data):
        raise exc(f"{what} needs {length} bytes, only {max(0, len(data) - offset)} left", offset)


def format_clock_identity(cid: bytes) -> str:
    """linuxptp's spelling: ``001122.fffe.334455``."""
    h = cid.hex()
    return f"{h[0:6]}.{h[6:10]}.{h[10:16]}" if len(cid) == 8 else h


def parse_clock_identity(text: str) -> bytes:
    """Inverse of ``format_clock_identity`` (also accepts 16 plain hex digits)."""
    raw = text.replace(".", "").replace(":", "").replace("-", "")
    try:
        cid = bytes.fromhex(raw)
    except ValueError as exc:
        raise EncodeError(f"clock identity {text!r} is not hex") from exc
    if len(cid) != 8:
        raise EncodeError(f"clock identity {text!r} is not 8 octets")
    return cid


def clock_identity_from_mac(mac: bytes) -> bytes:
    """EUI-48 -> EUI-64 as ptp4l does (insert ff:fe in the middle)."""
    check_bytes("mac", mac, 6)
    return bytes(mac[:3]) + b"\xff\xfe" + bytes(mac[3:])


@dataclass(frozen=True, slots=True)
class Timestamp:
    """48-bit seconds + 32-bit nanoseconds (nanoseconds may exceed 1e9 on the wire; kept as is)."""

    seconds: int = 0
    nanoseconds: int = 0

    def __post_init__(self) -> None:
        check_uint("Timestamp.seconds", self.seconds, 48)
        check_uint("Timestamp.nanoseconds", self.nanoseconds, 32)

    def to_ns(self) -> int:
        return self.seconds * NS_PER_S + self.nanoseconds

    @classmethod
    def from_ns(cls, ns: int) -> Timestamp:
        if ns < 0:
            raise EncodeError(f"a PTP Timestamp cannot be negative ({ns} ns)")
        s, n = divmod(ns, NS_PER_S)
        return cls(s, n)

    def pack(self) -> bytes:
        return struct.pack("!HIL", self.seconds >> 32, self.seconds & 0xFFFFFFFF, self.nanoseconds)


def unpack_timestamp(data: bytes, offset: int) -> Timestamp:
    need(data, offset, TIMESTAMP_LEN, "Timestamp")
    hi, lo, ns = struct.unpack_from("!HIL", data, offset)
    return Timestamp((hi << 32) | lo, ns)


@dataclass(frozen=True, slots=True)
class PortIdentity:
    clock_identity: bytes = bytes(8)
    port_number: int = 0

    def __post_init__(self) -> None:
        check_bytes("PortIdentity.clock_identity", self.clock_identity, 8)
        check_uint("PortIdentity.port_number", self.port_number, 16)

    def pack(self) -> bytes:
        return bytes(self.clock_identity) + struct.pack("!H", self.port_number)

    def __str__(self) -> str:
        return f"{format_clock_identity(self.clock_identity)}-{self.port_number}"


ALL_PORTS = 0xFFFF
ALL_CLOCKS = b"\xff" * 8
WILDCARD_PORT_IDENTITY = PortIdentity(ALL_CLOCKS, ALL_PORTS)


def unpack_port_identity(data: bytes, offset: int) -> PortIdentity:
    need(data, offset, PORT_IDENTITY_LEN, "PortIdentity")
    return PortIdentity(bytes(data[offset : offset + 8]), struct.unpack_from("!H", data, offset + 8)[0])


@dataclass(frozen=True, slots=True)
class ClockQuality:
    clock_class: int = 248
    clock_accuracy: int = 0xFE
    offset_scaled_log_variance: int = 0xFFFF

    def __post_init__(self) -> None:
        check_uint("ClockQuality.clock_class", self.clock_class, 8)
        check_uint("ClockQuality.clock_accuracy", self.clock_accuracy, 8)
        check_uint("ClockQuality.offset_scaled_log_variance", self.offset_scaled_log_variance, 16)

    def pack(self) -> bytes:
        return struct.pack("!BBH", self.clock_class, self.clock_accuracy, self.offset_scaled_log_variance)


def unpack_clock_quality(data: bytes, offset: int) -> ClockQuality:
    need(data, offset, CLOCK_QUALITY_LEN, "ClockQuality")
    return ClockQuality(*struct.unpack_from("!BBH", data, offset))


@dataclass(frozen=True, slots=True)
class PTPText:
    """lengthField (UInteger8) + UTF-8 octets. ``text`` keeps the raw octets (may be invalid UTF-8)."""

    text: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.text, (bytes, bytearray)) or len(self.text) > 255:
            raise EncodeError("PTPText must be at most 255 bytes")

    @classmethod
    def of(cls, s: str) -> PTPText:
        return cls(s.encode("utf-8"))

    def __str__(self) -> str:
        return self.text.decode("utf-8", errors="replace")

    def pack(self) -> bytes:
        return bytes([len(self.text)]) + bytes(self.text)

    @property
    def size(self) -> int:
        return 1 + len(self.text)


def unpack_ptp_text(data: bytes, offset: int) -> PTPText:
    need(data, offset, 1, "PTPText lengthField")
    n = data[offset]
    need(data, offset + 1, n, "PTPText text")
    return PTPText(bytes(data[offset + 1 : offset + 1 + n]))


@dataclass(frozen=True, slots=True)
class PortAddress:
    network_protocol: int = 1
    address: bytes = b""

    def __post_init__(self) -> None:
        check_uint("PortAddress.network_protocol", self.network_protocol, 16)
        if len(self.address) > 0xFFFF:
            raise EncodeError("PortAddress.address too long")

    def pack(self) -> bytes:
        return struct.pack("!HH", self.network_protocol, len(self.address)) + bytes(self.address)

    @property
    def size(self) -> int:
        return 4 + len(self.address)


def unpack_port_address(data: bytes, offset: int) -> PortAddress:
    need(data, offset, 4, "PortAddress")
    proto, n = struct.unpack_from("!HH", data, offset)
    need(data, offset + 4, n, "PortAddress.address")
    return PortAddress(proto, bytes(data[offset + 4 : offset + 4 + n]))
