"""Plain-data views of decoded messages (for ``ptp-switch decode``, logs and JSON).

``to_dict`` turns any codec dataclass into dicts/lists of str/int/bool: enums become their names
(unknown values stay ints), clock identities ``001122.fffe.334455``, other bytes hex, field
names are the dataclass's (snake_case as in the standard). Pure.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from controlplane.codec.enums import TlvType, as_enum
from controlplane.codec.types import PortIdentity, PTPText, Timestamp, format_clock_identity

_CLOCK_ID_FIELDS = {"clock_identity", "grandmaster_identity"}


def to_dict(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.name
    if isinstance(obj, Timestamp):
        return {"seconds": obj.seconds, "nanoseconds": obj.nanoseconds}
    if isinstance(obj, PortIdentity):
        return {"clock_identity": format_clock_identity(obj.clock_identity), "port_number": obj.port_number}
    if isinstance(obj, PTPText):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        if hasattr(type(obj), "MESSAGE_TYPE"):
            out["message_type"] = type(obj).MESSAGE_TYPE.name
        if hasattr(obj, "tlv_type") and not hasattr(type(obj), "MESSAGE_TYPE"):
            t = as_enum(TlvType, int(obj.tlv_type))
            out["tlv_type"] = t.name if isinstance(t, Enum) else int(t)
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.name in ("pad", "trailer") and not v:
                continue
            if f.name in _CLOCK_ID_FIELDS and isinstance(v, (bytes, bytearray)) and len(v) == 8:
                out[f.name] = format_clock_identity(v)
            elif f.name == "path_sequence":
                out[f.name] = [format_clock_identity(c) for c in v]
            elif f.name == "data" and v is not None and not isinstance(v, (bytes, bytearray)):
                out[f.name] = to_dict(v)
            else:
                out[f.name] = to_dict(v)
        if hasattr(obj, "correction_scaled_ns"):
            out["correction_ns"] = obj.correction_scaled_ns / 65536
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).hex()
    return obj


def summary(msg: Any) -> str:
    """One line: type, sequence id, domain, correction and the body's main fields."""
    h = msg.header
    d = to_dict(msg)
    body = {k: v for k, v in d.items() if k not in ("message_type", "header", "tlvs", "trailer")}
    parts = [
        f"{type(msg).MESSAGE_TYPE.name} seq={h.sequence_id} domain={h.domain_number}",
        f"src={h.source_port_identity}",
        f"corr={h.correction_scaled_ns / 65536:g}ns",
    ]
    flags = [n for n in ("two_step", "unicast", "alternate_master", "leap61", "leap59", "current_utc_offset_valid",
                         "ptp_timescale", "time_traceable", "frequency_traceable", "synchronization_uncertain",
                         "profile_specific_1", "profile_specific_2") if getattr(h, n)]
    if flags:
        parts.append("flags=" + ",".join(flags))
    for k, v in body.items():
        parts.append(f"{k}={_flat(v)}")
    return " ".join(parts)


def _flat(v: Any) -> str:
    if isinstance(v, dict):
        if set(v) == {"seconds", "nanoseconds"}:
            return f"{v['seconds']}.{v['nanoseconds']:09d}"
        if set(v) == {"clock_identity", "port_number"}:
            return f"{v['clock_identity']}-{v['port_number']}"
        return "{" + ",".join(f"{k}={_flat(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_flat(x) for x in v) + "]"
    return str(v)


def tlv_lines(msg: Any) -> list[str]:
    out = []
    for t in msg.tlvs:
        d = to_dict(t)
        name = d.pop("tlv_type")
        out.append(f"{name} " + " ".join(f"{k}={_flat(v)}" for k, v in d.items()))
    return out
