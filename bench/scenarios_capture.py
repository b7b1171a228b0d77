"""Per-hop residence time and its error, measured from packet captures around each switch.

Taps run on the grandmaster's port, both ports of every switch on the GM -> first-slave path and
(RX-only mode, the bench's default) the first slave's port. All namespaces share one kernel clock,
so a capture's timestamps are comparable across nodes.

RX-only taps (``Captures(rx_only=True)``; ``python -m bench.scenarios_capture rx IF FILE``): each tap
records frames ARRIVING on its port with the stack's RX stamp (skb->tstamp), and the kernel skips it on
transmit (PACKET_IGNORE_OUTGOING), so no tap runs between a switch's egress stamp and the wire. A
message leaves switch k when it arrives at the next node: true time of switch k = arrival at the next
node - arrival at k (residence + the link after k's egress stamp, which is what the slave inherits).

tcpdump taps (``rx_only=False``, both directions): true residence = t(leaves k's downstream port, TX
tap in dev_queue_xmit_nit) - t(enters k's upstream port, RX tap). A TX tap clones, filters, copies and
wakes tcpdump after a tc-egress stamp but before ptp4l's software TX stamp (veth_xmit), so it adds
error to an eBPF TC and not to ptp4l: not used for the slave comparison any more.

In both: correction added by switch k = (Sync + Follow_Up correctionField leaving k) - (... entering k);
error = added - true (E2E TC), or added - (true + true link delay) (P2P TC with TX taps).

Decoding uses the project's codec (controlplane.codec.pcap / frames / header).
"""

from __future__ import annotations

import ctypes
import pathlib
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from bench.report import Stats, summarize
from controlplane.codec.frames import parse_frame
from controlplane.codec.header import decode_header
from controlplane.codec.pcap import read_capture

SYNC = 0x0
DELAY_REQ = 0x1
FOLLOW_UP = 0x8
DELAY_RESP = 0x9
CAPTURE_FILTER = "udp port 319 or udp port 320 or ether proto 0x88f7"
ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Seen:
    """One PTP message as a tap saw it."""

    t_ns: int
    msg_type: int
    seq: int
    source: bytes  # sourcePortIdentity (clock identity + port number) as bytes
    correction_ns: float


def read_ptp(pcap_bytes: bytes, types: tuple[int, ...] = (SYNC, FOLLOW_UP, DELAY_REQ, DELAY_RESP)) -> list[Seen]:
    """Sync, Follow_Up, Delay_Req and Delay_Resp messages of a capture (others and undecodable frames
    skipped). A Delay_Resp's ``source`` is its requestingPortIdentity, so it keys like its Delay_Req."""
    out = []
    for rec in read_capture(pcap_bytes):
        frame = parse_frame(rec.data, rec.linktype)
        if frame is None or len(frame.ptp) < 34:
            continue
        try:
            h = decode_header(frame.ptp)
        except ValueError:
            continue
        mt = int(h.message_type)
        if mt not in types:
            continue
        pid = h.source_port_identity
        src = bytes(pid.clock_identity) + int(pid.port_number).to_bytes(2, "big")
        if mt == DELAY_RESP:
            if len(frame.ptp) < 54:
                continue
            src = bytes(frame.ptp[44:54])  # requestingPortIdentity
        out.append(Seen(rec.timestamp_ns, mt, h.sequence_id, src, h.correction_scaled_ns / 65536.0))
    return out


@dataclass
class HopResidence:
    switch: str
    added_ns: list[float] = field(default_factory=list)
    true_residence_ns: list[int] = field(default_factory=list)
    error_ns: list[float] = field(default_factory=list)

    def mean_residence_ns(self) -> float | None:
        return sum(self.true_residence_ns) / len(self.true_residence_ns) if self.true_residence_ns else None

    def mean_added_ns(self) -> float | None:
        return sum(self.added_ns) / len(self.added_ns) if self.added_ns else None

    def error_stats(self) -> Stats | None:
        return summarize(self.error_ns)

    def corrected(self) -> int:
        return sum(1 for a in self.added_ns if a > 0)


def _index(seen: list[Seen]) -> dict[tuple[int, int, bytes], Seen]:
    idx: dict[tuple[int, int, bytes], Seen] = {}
    for s in seen:
        idx.setdefault((s.msg_type, s.seq, s.source), s)  # first copy (a tap on a port sees it once)
    return idx


def hop_residences(points: list[tuple[str, list[Seen], list[Seen]]], upstream: list[Seen], *, p2p: bool) -> list[HopResidence]:
    """``points`` = [(switch, seen entering on its upstream port, seen leaving its downstream port)],
    in path order; ``upstream`` = what the grandmaster's port sent. Syncs are matched by
    (sequenceId, sourcePortIdentity); two-step corrections come from the matching Follow_Up."""
    out = []
    prev_out = _index(upstream)
    for name, entering, leaving in points:
        hop = HopResidence(name)
        ein, eout = _index(entering), _index(leaving)
        for key, s_in in ein.items():
            mt, seq, src = key
            if mt != SYNC or key not in eout:
                continue
            s_out = eout[key]
            fu_in, fu_out = ein.get((FOLLOW_UP, seq, src)), eout.get((FOLLOW_UP, seq, src))
            added = s_out.correction_ns - s_in.correction_ns
            if fu_in is not None and fu_out is not None:
                added += fu_out.correction_ns - fu_in.correction_ns
            elif fu_in is not None or fu_out is not None:
                continue  # one side of the Follow_Up missing: cannot tell what was added
            true_res = s_out.t_ns - s_in.t_ns
            expected = float(true_res)
            if p2p:
                up = prev_out.get(key)
                if up is None:
                    continue
                expected += s_in.t_ns - up.t_ns
            hop.added_ns.append(added)
            hop.true_residence_ns.append(true_res)
            hop.error_ns.append(added - expected)
        out.append(hop)
        prev_out = eout
    return out


def slave_source(seen_at_slave_port: list[Seen]) -> bytes | None:
    """The sourcePortIdentity of the slave attached to a switch port: its Delay_Reqs arrive there with
    correctionField 0, while other slaves' Delay_Reqs flooded out of that port carry a TC's correction."""
    counts: dict[bytes, int] = {}
    for s in seen_at_slave_port:
        if s.msg_type == DELAY_REQ and s.correction_ns == 0:
            counts[s.source] = counts.get(s.source, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


def delay_req_residences(points: list[tuple[str, list[Seen], list[Seen]]], source: bytes | None = None) -> list[HopResidence]:
    """The reverse direction (slave -> GM) for an E2E TC: ``points`` = [(switch, seen on its downstream
    port, seen on its upstream port)], in path order. A one-step TC adds a Delay_Req's residence to the
    Delay_Req itself, a two-step TC to the matching Delay_Resp (both counted);
    error = added - (t leaving upstream - t entering downstream). Matched by
    (sequenceId, sourcePortIdentity); only ``source``'s Delay_Reqs when given (with several slaves, the
    others' copies flooded out of the downstream port would otherwise look like arrivals)."""
    out = []
    for name, entering, leaving in points:
        if source is not None:
            entering = [s for s in entering if s.source == source]
        hop = HopResidence(name)
        ein, eout = _index(entering), _index(leaving)
        for key, s_in in ein.items():
            if key[0] != DELAY_REQ or key not in eout:
                continue
            s_out = eout[key]
            if s_out.t_ns <= s_in.t_ns:
                continue  # seen leaving before entering: the copy went the other way
            added = s_out.correction_ns - s_in.correction_ns
            # a two-step TC (ptp4l's E2E_TC) puts the Delay_Req's residence into the Delay_Resp instead:
            # it enters on the upstream port (``leaving``) and leaves on the downstream port (``entering``)
            rkey = (DELAY_RESP, key[1], key[2])
            r_in, r_out = eout.get(rkey), ein.get(rkey)
            if r_in is not None and r_out is not None:
                added += r_out.correction_ns - r_in.correction_ns
            true_res = s_out.t_ns - s_in.t_ns
            hop.added_ns.append(added)
            hop.true_residence_ns.append(true_res)
            hop.error_ns.append(added - true_res)
        out.append(hop)
    return out


@dataclass
class LinkDelay:
    """Tap-to-tap delay of one link on the GM -> slave path: Syncs forward (TX tap of the upstream
    node -> RX tap of the downstream node), the first slave's Delay_Reqs backward. A switch does not
    see this time as residence, so whatever part of it is not symmetric reaches the slave's error."""

    link: str  # "gm->sw1"
    forward_ns: list[int] = field(default_factory=list)
    reverse_ns: list[int] = field(default_factory=list)


def link_delays(ports: list[tuple[str, list[Seen], list[Seen]]], source: bytes | None) -> list[LinkDelay]:
    """``ports`` = [(node, seen on its port toward the slave, seen on the next node's port toward the GM)]
    for each link in path order (the last link, to the untapped slave, is not included)."""
    out = []
    for name, near, far in ports:
        ld = LinkDelay(name)
        a, b = _index(near), _index(far)
        for key, s_a in a.items():
            if key not in b:
                continue
            if key[0] == SYNC:
                ld.forward_ns.append(b[key].t_ns - s_a.t_ns)
            elif key[0] == DELAY_REQ and (source is None or key[2] == source):
                ld.reverse_ns.append(s_a.t_ns - b[key].t_ns)
        out.append(ld)
    return out


class Captures:
    """Packet taps on (node, ifname) points of a lab; ``stop()`` then ``read(node, ifname)``.

    ``rx_only=True`` (what the bench uses): ``python -m bench.scenarios_capture rx IF FILE`` on each point,
    an AF_PACKET socket with PACKET_IGNORE_OUTGOING, so the kernel skips it on transmit
    (dev_queue_xmit_nit) and the tap adds no work between a switch's egress stamp and the wire; it
    records each arriving PTP frame with the stack's RX stamp (skb->tstamp, SO_TIMESTAMPNS), the same
    stamp the dataplane back-dates to. ``rx_only=False``: tcpdump, both directions (its TX tap clones,
    filters, copies and wakes tcpdump *after* a tc-egress stamp but *before* ptp4l's software TX stamp
    in veth_xmit, so it adds error to an eBPF TC and not to ptp4l)."""

    def __init__(self, lab: Any, points: list[tuple[str, str]], snaplen: int = 256, *, rx_only: bool = False) -> None:
        self.lab = lab
        self.points = points
        self.rx_only = rx_only
        self.procs: dict[tuple[str, str], subprocess.Popen[Any]] = {}
        self.paths = {}
        self.commands: list[str] = []
        for node, ifname in points:
            path = lab.workdir / f"cap-{node}-{ifname}.pcap"
            if rx_only:
                argv = [sys.executable, "-m", "bench.scenarios_capture", "rx", ifname, str(path), str(snaplen)]
            else:
                argv = ["tcpdump", "-i", ifname, "-w", str(path), "-U", "-s", str(snaplen), "-n",
                        "--time-stamp-precision=nano", CAPTURE_FILTER]
            self.procs[(node, ifname)] = lab.popen(node, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                                   cwd=str(ROOT))
            self.paths[(node, ifname)] = path
            self.commands.append(f"ip netns exec {lab.ns(node)} " + " ".join(
                a if " " not in a else repr(a) for a in argv).replace(sys.executable, "python"))

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGINT)  # `ip netns exec` passes it on; the tap flushes
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()

    def read(self, node: str, ifname: str) -> list[Seen]:
        path = self.paths[(node, ifname)]
        try:
            data = path.read_bytes()
        except OSError:
            return []
        if len(data) < 24:
            return []
        return read_ptp(data)


# -- the RX-only tap (runs inside the namespace) ---------------------------------------------------
PACKET_IGNORE_OUTGOING = 23      # linux/if_packet.h, kernel >= 4.20
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
SOL_PACKET = 263


def _cbpf(expr: str) -> bytes:
    """The classic BPF program for a pcap filter expression (``tcpdump -ddd``), packed for SO_ATTACH_FILTER."""
    out = subprocess.run(["tcpdump", "-ddd", "-y", "EN10MB", expr], capture_output=True, text=True, check=True).stdout.split()
    n, vals = int(out[0]), [int(x) for x in out[1:]]
    return b"".join(struct.pack("HBBI", *vals[4 * i:4 * i + 4]) for i in range(n))


def capture_rx(ifname: str, path: str, snaplen: int = 256, expr: str = CAPTURE_FILTER) -> int:
    """Write every arriving frame that matches ``expr`` to a nanosecond pcap until SIGINT/SIGTERM."""
    prog = _cbpf(expr)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(buf))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.bind((ifname, ETH_P_ALL))
    stop = [False]

    def on_signal(signum: int, frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sock.settimeout(0.2)
    n = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, 1))
        f.flush()
        while not stop[0]:
            try:
                data, anc, _, addr = sock.recvmsg(65536, 64)
            except (socket.timeout, InterruptedError):
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            t_ns = None
            for level, typ, raw in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    t_ns = sec * 1_000_000_000 + nsec
            if t_ns is None:
                continue
            cut = data[:snaplen]
            f.write(struct.pack("<IIII", t_ns // 1_000_000_000, t_ns % 1_000_000_000, len(cut), len(data)) + cut)
            f.flush()
            n += 1
    return n


def main(argv: list[str]) -> int:
    if len(argv) in (3, 4) and argv[0] == "rx":
        n = capture_rx(argv[1], argv[2], int(argv[3]) if len(argv) == 4 else 256)
        print(f"captured {n}", file=sys.stderr)
        return 0
    print("usage: python -m bench.scenarios_capture rx IFNAME FILE.pcap [SNAPLEN]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
