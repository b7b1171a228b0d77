"""PTP v2 wire codec: bytes <-> frozen dataclasses. Pure: no I/O, no clock.

    from controlplane.codec import decode, encode, Sync, Header, Timestamp
    msg = decode(data)          # raises only CodecError (``.reason``, ``.offset``)
    data == encode(msg)         # byte-exact, including reserved fields and any trailer
"""

from controlplane.codec import management as _management  # noqa: F401  (registers management TLVs)
from controlplane.codec.enums import (
    ClockAccuracy,
    ControlField,
    DelayMechanism,
    ManagementAction,
    ManagementErrorId,
    ManagementId,
    MessageType,
    NetworkProtocol,
    PortState,
    TimeSource,
    TlvType,
)
from controlplane.codec.errors import (
    BodyLengthError,
    CodecError,
    EncodeError,
    FrameError,
    HeaderError,
    LengthMismatchError,
    MessageTypeError,
    PcapError,
    TlvError,
)
from controlplane.codec.header import HEADER_LEN, Header, decode_header
from controlplane.codec.management import (
    AnnounceReceiptTimeout,
    ClockDescription,
    CurrentDataSet,
    DefaultDataSet,
    DelayMechanismData,
    Domain,
    LogAnnounceInterval,
    LogMinPdelayReqInterval,
    LogSyncInterval,
    ManagementErrorStatusTlv,
    ManagementTlv,
    ParentDataSet,
    PortDataSet,
    Priority1,
    Priority2,
    SlaveOnly,
    Time,
    TimePropertiesDataSet,
    TransparentClockDefaultDataSet,
    TransparentClockPortDataSet,
    UserDescription,
    VersionNumber,
)
from controlplane.codec.messages import (
    BODY_LEN,
    Announce,
    DelayReq,
    DelayResp,
    FollowUp,
    Management,
    Message,
    PdelayReq,
    PdelayResp,
    PdelayRespFollowUp,
    Signaling,
    Sync,
    decode,
    encode,
)
from controlplane.codec.tlv import (
    AcknowledgeCancelUnicastTransmissionTlv,
    CancelUnicastTransmissionTlv,
    GrantUnicastTransmissionTlv,
    OrganizationExtensionTlv,
    PathTraceTlv,
    RequestUnicastTransmissionTlv,
    UnknownTlv,
    decode_tlvs,
    encode_tlvs,
)
from controlplane.codec.types import (
    ClockQuality,
    PortAddress,
    PortIdentity,
    PTPText,
    Timestamp,
    clock_identity_from_mac,
    format_clock_identity,
    parse_clock_identity,
)

__all__ = [n for n in dir() if not n.startswith("_")]
