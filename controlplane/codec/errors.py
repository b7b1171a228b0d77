"""One exception family for bad bytes: ``CodecError`` and a subclass per validation stage.

``decode()`` (and the frame/pcap parsers) raise nothing but a ``CodecError`` for any input bytes.
Misuse of the encoding API (a field out of range in a constructed message) raises ``EncodeError``,
also a ``CodecError`` so callers that only want "this could not be put on the wire" catch one type.
"""

from __future__ import annotations


class CodecError(ValueError):
    """Bytes that are not a valid PTP message (or frame / capture). ``reason`` says why."""

    stage = "codec"

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(f"{self.stage}: {reason}{where}")


class HeaderError(CodecError):
    """The 34-byte common header is short or carries an unsupported version."""

    stage = "header"


class MessageTypeError(CodecError):
    """messageType is not one of the ten PTP v2 message types."""

    stage = "message type"


class BodyLengthError(CodecError):
    """messageLength or the buffer is too short for the message type's body."""

    stage = "body length"


class LengthMismatchError(CodecError):
    """messageLength disagrees with the bytes actually present."""

    stage = "message length"


class TlvError(CodecError):
    """A TLV is truncated, has an odd or overrunning lengthField, or a malformed value."""

    stage = "tlv"


class FrameError(CodecError):
    """An Ethernet / VLAN / IP / UDP encapsulation is malformed."""

    stage = "frame"


class PcapError(CodecError):
    """A pcap or pcapng capture is malformed or of an unsupported kind."""

    stage = "pcap"


class EncodeError(CodecError):
    """A constructed value cannot be encoded (out of range for its wire field)."""

    stage = "encode"
