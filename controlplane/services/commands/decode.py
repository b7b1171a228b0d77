"""``ptp-switch decode FILE [--json]``: every PTP message in a pcap/pcapng capture with its fields.

PTP is found as ethertype 0x88F7 or UDP port 319/320 (IPv4/IPv6, 0-2 VLAN tags; Ethernet, Linux
SLL and SLL2 link types). A PTP-looking frame that does not decode is printed with the reason,
never skipped. Exit status: 0 if every PTP frame decoded, 1 if some did not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from controlplane.codec import CodecError, decode
from controlplane.codec.frames import parse_frame
from controlplane.codec.pcap import read_capture
from controlplane.codec.render import summary, tlv_lines, to_dict
from controlplane.services.cli import CliError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("decode", help="print every PTP message in a pcap/pcapng capture",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE.pcap", help="classic pcap or pcapng capture")
    p.add_argument("--json", action="store_true", help="one JSON object per message (summary line to stderr)")
    p.set_defaults(func=run)


def _fmt_ts(ns: int) -> str:
    s, n = divmod(ns, 1_000_000_000)
    return f"{s}.{n:09d}"


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:  # `ptp-switch decode f.pcap | head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    try:
        records = read_capture(data)
    except CodecError as exc:
        raise CliError(f"{args.file}: not a readable capture: {exc}") from None
    out = sys.stdout
    n_ptp = n_bad = n_other = 0
    for rec in records:
        base: dict[str, Any] = {"frame": rec.index, "timestamp": _fmt_ts(rec.timestamp_ns)}
        try:
            frame = parse_frame(rec.data, rec.linktype)
        except CodecError as exc:
            n_bad += 1
            _emit_error(out, args.json, base, None, exc)
            continue
        if frame is None:
            n_other += 1
            continue
        base.update(
            transport=frame.transport.value,
            src=frame.src,
            dst=frame.dst,
        )
        if frame.vlan_ids:
            base["vlan_ids"] = list(frame.vlan_ids)
        try:
            msg = decode(frame.ptp)
        except CodecError as exc:
            n_bad += 1
            _emit_error(out, args.json, base, frame.ptp, exc)
            continue
        n_ptp += 1
        if args.json:
            obj = dict(base)
            obj.update(to_dict(msg))
            out.write(json.dumps(obj) + "\n")
        else:
            vlan = f" vlan={','.join(map(str, frame.vlan_ids))}" if frame.vlan_ids else ""
            out.write(f"#{rec.index} {base['timestamp']} {frame.transport.value}{vlan} {frame.src} > {frame.dst} "
                      f"{summary(msg)}\n")
            for line in tlv_lines(msg):
                out.write(f"    {line}\n")
    line = (f"{args.file}: {len(records)} frames, {n_ptp} PTP messages decoded, {n_bad} undecodable, "
            f"{n_other} not PTP")
    print(line, file=sys.stderr if args.json else sys.stdout)
    return 1 if n_bad else 0


def _emit_error(out: Any, as_json: bool, base: dict[str, Any], ptp: bytes | None, exc: CodecError) -> None:
    if as_json:
        obj = dict(base)
        obj.update(error=str(exc), reason=exc.reason, offset=exc.offset)
        if ptp is not None:
            obj["bytes"] = ptp[:64].hex()
        out.write(json.dumps(obj) + "\n")
    else:
        where = f" {base.get('transport', '')} {base.get('src', '')} > {base.get('dst', '')}" if "src" in base else ""
        out.write(f"#{base['frame']} {base['timestamp']}{where} UNDECODABLE: {exc}\n")
