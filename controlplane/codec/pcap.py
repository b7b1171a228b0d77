"""Read captures from bytes: classic pcap (both byte orders, us and ns resolution) and pcapng
(SHB/IDB with if_tsresol, EPB, SPB, OPB). Pure: the caller reads the file.

Also a tiny classic-pcap writer (ns resolution) for tests and tools that hand frames to tshark.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from controlplane.codec.errors import PcapError

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D


@dataclass(frozen=True, slots=True)
class PcapRecord:
    index: int  # 1-based, as tshark numbers frames
    timestamp_ns: int  # capture time, ns since the epoch
    linktype: int
    data: bytes
    orig_len: int
    interface_id: int = 0


def read_capture(data: bytes) -> list[PcapRecord]:
    """All packet records of a pcap or pcapng capture. Raises PcapError when malformed."""
    data = bytes(data)
    if len(data) < 4:
        raise PcapError(f"{len(data)} bytes is too short for a capture file")
    (magic_le,) = struct.unpack_from("<I", data)
    if magic_le == PCAPNG_SHB:
        return _read_pcapng(data)
    for order in ("<", ">"):
        (magic,) = struct.unpack_from(order + "I", data)
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            return _read_pcap(data, order, magic == PCAP_MAGIC_NS)
    raise PcapError(f"unknown capture magic 0x{magic_le:08x} (not pcap or pcapng)", 0)


def _read_pcap(data: bytes, o: str, ns: bool) -> list[PcapRecord]:
    if len(data) < 24:
        raise PcapError("pcap global header truncated", 0)
    _magic, major, _minor, _tz, _sig, _snap, network = struct.unpack_from(o + "IHHiIII", data)
    if major != 2:
        raise PcapError(f"pcap major version {major} is not 2", 4)
    linktype = network & 0x0FFFFFFF
    out = []
    pos = 24
    while pos < len(data):
        if len(data) - pos < 16:
            raise PcapError(f"record header truncated ({len(data) - pos} bytes)", pos)
        sec, frac, incl, orig = struct.unpack_from(o + "IIII", data, pos)
        if pos + 16 + incl > len(data):
            raise PcapError(f"record of {incl} bytes overruns the file", pos + 8)
        ts = sec * 1_000_000_000 + (frac if ns else frac * 1000)
        out.append(PcapRecord(len(out) + 1, ts, linktype, data[pos + 16 : pos + 16 + incl], orig))
        pos += 16 + incl
    return out


def _read_pcapng(data: bytes) -> list[PcapRecord]:
    out: list[PcapRecord] = []
    o = "<"
    ifaces: list[tuple[int, int, int]] = []  # (linktype, ticks per second numerator, ...)
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise PcapError(f"pcapng block header truncated ({len(data) - pos} bytes)", pos)
        (btype,) = struct.unpack_from("<I", data, pos)
        if btype == PCAPNG_SHB:
            if len(data) - pos < 12:
                raise PcapError("section header truncated", pos)
            (bom,) = struct.unpack_from("<I", data, pos + 8)
            if bom == PCAPNG_BOM:
                o = "<"
            elif bom == 0x4D3C2B1A:
                o = ">"
            else:
                raise PcapError(f"bad pcapng byte-order magic 0x{bom:08x}", pos + 8)
            ifaces = []
        (btype, blen) = struct.unpack_from(o + "II", data, pos)
        if blen < 12 or blen % 4 or pos + blen > len(data):
            raise PcapError(f"pcapng block length {blen} invalid", pos + 4)
        body = data[pos + 8 : pos + blen - 4]
        if btype == 1:  # Interface Description Block
            if len(body) < 8:
                raise PcapError("IDB truncated", pos)
            linktype, _res, _snap = struct.unpack_from(o + "HHI", body)
            ifaces.append((linktype, _tsresol(body[8:], o), _snap))
        elif btype == 6:  # Enhanced Packet Block
            if len(body) < 20:
                raise PcapError("EPB truncated", pos)
            iface, hi, lo, cap, orig = struct.unpack_from(o + "IIIII", body)
            if iface >= len(ifaces):
                raise PcapError(f"EPB refers to undefined interface {iface}", pos + 8)
            if 20 + cap > len(body):
                raise PcapError(f"EPB captured length {cap} overruns its block", pos + 20)
            linktype, per_s, _ = ifaces[iface]
            ticks = (hi << 32) | lo
            out.append(PcapRecord(len(out) + 1, ticks * 1_000_000_000 // per_s, linktype, body[20 : 20 + cap], orig, iface))
        elif btype == 3:  # Simple Packet Block
            if not ifaces:
                raise PcapError("SPB before any interface description", pos)
            if len(body) < 4:
                raise PcapError("SPB truncated", pos)
            (orig,) = struct.unpack_from(o + "I", body)
            linktype, _per_s, snap = ifaces[0]
            cap = min(orig, snap) if snap else orig
            cap = min(cap, len(body) - 4)
            out.append(PcapRecord(len(out) + 1, 0, linktype, body[4 : 4 + cap], orig, 0))
        elif btype == 2:  # obsolete Packet Block
            if len(body) < 20:
                raise PcapError("packet block truncated", pos)
            iface, _drops, hi, lo, cap, orig = struct.unpack_from(o + "HHIIII", body)
            if iface >= len(ifaces) or 20 + cap > len(body):
                raise PcapError("malformed packet block", pos)
            linktype, per_s, _ = ifaces[iface]
            out.append(
                PcapRecord(len(out) + 1, ((hi << 32) | lo) * 1_000_000_000 // per_s, linktype, body[20 : 20 + cap], orig, iface)
            )
        pos += blen
    return out


def _tsresol(options: bytes, o: str) -> int:
    """Ticks per second from the IDB's if_tsresol option (default 10^6)."""
    pos = 0
    while pos + 4 <= len(options):
        code, olen = struct.unpack_from(o + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and olen >= 1 and pos + 4 < len(options):
            v = options[pos + 4]
            return 2 ** (v & 0x7F) if v & 0x80 else 10 ** (v & 0x7F) if (v & 0x7F) <= 18 else 10**6
        pos += 4 + ((olen + 3) & ~3)
    return 10**6


def write_pcap(frames: list[bytes] | list[tuple[int, bytes]], linktype: int = 1) -> bytes:
    """A classic little-endian, nanosecond-resolution pcap. Items are frames or (timestamp_ns, frame)."""
    out = [struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, 262144, linktype)]
    for i, item in enumerate(frames):
        ts, frame = item if isinstance(item, tuple) else (1_700_000_000_000_000_000 + i * 1000, item)
        sec, ns = divmod(ts, 1_000_000_000)
        out.append(struct.pack("<IIII", sec, ns, len(frame), len(frame)) + bytes(frame))
    return b"".join(out)
