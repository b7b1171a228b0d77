"""Delay from real queueing (this kernel has no netem): HTB serializer + paced cross traffic.

``apply(lab)`` shapes every link that carries a Shaping:
- ``where=egress``: the HTB sits on the sending node's port toward the link;
- ``where=internal``: the HTB sits on ``ia``, the internal veth that joins the sending switch's two
  bridges (brA: the other ports + ia; brB: ib + the shaped port), so the delay lies inside the
  switch, between its outer ingress and egress ports.

Every shaped interface gets the same HTB with two classes:
- ``1:10`` (SHAPED_CLASSID, the default): rate/ceil ``rate_kbit``, burst 1 byte — a serializer: a
  1514-byte frame holds it ~605 us at 20 mbit. Cross traffic and all normal traffic land here.
- ``1:1`` (STRICT_PRIORITY_CLASSID, prio 0, ``strict_rate_kbit``): the strict-priority band. The
  dataplane sets ``skb->priority = 0x00010001`` on PTP event messages so they do not wait behind
  cross traffic after their egress stamp.

Cross traffic: ``cross_frame_bytes`` frames to the link-local group 01:80:c2:00:00:0f, ethertype
0x88b5 (a Linux bridge never forwards them, so the load stays on one hop), sent with AF_PACKET every
``cross_interval_us``. The pacer restarts its schedule when late instead of sending catch-up bursts
(ANCHORS.md section 1: catch-up bursts gave queueing tails of tens of ms on 2 vCPUs).

``python -m topologies.shaping pace DEV SIZE INTERVAL_US DURATION_S`` runs the pacer (the lab starts
it inside the namespace); ``measure_one_way(lab, src, dst)`` measures the one-way delay with
timestamped UDP probes (all namespaces share one clock, so rx_kernel_stamp - tx_time is one-way).
"""

from __future__ import annotations

import dataclasses
import socket
import statistics
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

from topologies.model import HTB_HANDLE, SHAPED_CLASSID, STRICT_PRIORITY_CLASSID, Link, Shaping, Where

if TYPE_CHECKING:
    from topologies.netns import Lab

CROSS_DST_MAC = bytes.fromhex("0180c200000f")
CROSS_ETHERTYPE = 0x88B5


@dataclasses.dataclass(frozen=True)
class ShapedPort:
    node: str
    ifname: str  # the interface carrying the HTB ("ia" for internal shaping)
    link: Link
    shaping: Shaping


def shaped_ports(lab: Lab) -> list[ShapedPort]:
    out = []
    for link in lab.topology.shaped_links():
        assert link.shaping is not None and link.shaped_sender is not None
        node = link.shaped_sender
        ifname = "ia" if link.shaping.where is Where.INTERNAL else link.end(node)
        out.append(ShapedPort(node, ifname, link, link.shaping))
    return out


def install_htb(lab: Lab, node: str, ifname: str, shaping: Shaping) -> None:
    with lab.ipr(node) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.tc("add", "htb", idx, HTB_HANDLE, default=SHAPED_CLASSID & 0xFFFF)
        ipr.tc("add-class", "htb", idx, STRICT_PRIORITY_CLASSID, parent=HTB_HANDLE,
               rate=f"{shaping.strict_rate_kbit}kbit", ceil=f"{shaping.strict_rate_kbit}kbit", prio=0)
        ipr.tc("add-class", "htb", idx, SHAPED_CLASSID, parent=HTB_HANDLE,
               rate=f"{shaping.rate_kbit}kbit", ceil=f"{shaping.rate_kbit}kbit",
               burst=shaping.burst_bytes, cburst=shaping.burst_bytes, prio=1)


def start_pacer(lab: Lab, node: str, ifname: str, shaping: Shaping, duration_s: float = 24 * 3600) -> Any:
    log_path = lab.workdir / f"pacer-{node}-{ifname}.log"
    return lab.popen(node, [sys.executable, "-m", "topologies.shaping", "pace", ifname,
                            str(shaping.cross_frame_bytes), str(shaping.cross_interval_us), str(duration_s)],
                     stdout=open(log_path, "w"), stderr=subprocess_stdout())


def subprocess_stdout() -> int:
    import subprocess

    return subprocess.STDOUT


def apply(lab: Lab, *, start_cross_traffic: bool = True) -> list[ShapedPort]:
    ports = shaped_ports(lab)
    for sp in ports:
        install_htb(lab, sp.node, sp.ifname, sp.shaping)
        if start_cross_traffic and sp.shaping.cross_interval_us > 0:
            start_pacer(lab, sp.node, sp.ifname, sp.shaping)
    return ports


# -- the pacer (runs inside the namespace) ------------------------------------------------------
def pace(dev: str, size: int, interval_us: int, duration_s: float) -> dict[str, float]:
    """Send ``size``-byte cross frames on ``dev`` every ``interval_us``; restart the schedule when late."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((dev, 0))
    src = sock.getsockname()[4][:6]
    frame = CROSS_DST_MAC + src + struct.pack("!H", CROSS_ETHERTYPE) + b"\x00" * (size - 14)
    interval_ns = interval_us * 1000
    t0 = time.monotonic_ns()
    end = t0 + int(duration_s * 1e9)
    nxt = t0
    try:
        _pace_loop(sock, frame, interval_ns, end, nxt, counters := [0, 0, 0])
    except KeyboardInterrupt:
        pass
    sent, restarts, errors = counters
    elapsed = (time.monotonic_ns() - t0) / 1e9
    return {"sent": sent, "rate_pps": sent / elapsed if elapsed else 0.0, "restarts": restarts, "errors": errors}


def _pace_loop(sock: socket.socket, frame: bytes, interval_ns: int, end: int, nxt: int, counters: list[int]) -> None:
    while True:
        now = time.monotonic_ns()
        if now >= end:
            break
        if nxt > now:
            time.sleep((nxt - now) / 1e9)
            now = time.monotonic_ns()
        try:
            sock.send(frame)
            counters[0] += 1
        except OSError:  # queue full (ENOBUFS): drop this one, keep the schedule
            counters[2] += 1
        nxt += interval_ns
        if now - nxt > interval_ns:  # late by more than one interval: restart, no catch-up burst
            nxt = now + interval_ns
            counters[1] += 1


# -- measuring the delay a lab produces --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DelayStats:
    samples: int
    lost: int
    p10_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float

    @property
    def spread_us(self) -> float:
        return self.p90_us - self.p10_us

    def line(self) -> str:
        return (f"n={self.samples} lost={self.lost} p10={self.p10_us:.0f} p50={self.p50_us:.0f} p90={self.p90_us:.0f} "
                f"p99={self.p99_us:.0f} max={self.max_us:.0f} mean={self.mean_us:.0f} us")


def delay_stats(delays_ns: list[int], sent: int) -> DelayStats:
    if not delays_ns:
        return DelayStats(0, sent, *(float("nan"),) * 6)
    d = sorted(x / 1000 for x in delays_ns)

    def q(p: float) -> float:
        return d[min(len(d) - 1, int(p * (len(d) - 1) + 0.5))]

    return DelayStats(len(d), sent - len(d), q(0.10), q(0.50), q(0.90), q(0.99), d[-1], statistics.fmean(d))


SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS


def measure_one_way(lab: Lab, src: str, dst: str, *, count: int = 300, interval_s: float = 0.01, port: int = 31999) -> DelayStats:
    """One-way delay src -> dst with UDP probes: kernel RX software stamp minus the send time.

    All namespaces share CLOCK_REALTIME, so the difference is the one-way delay (plus the sender's
    syscall path, a few us). Probes are 200 bytes; they travel in the shaped (default) class.
    """
    dst_ip = lab.addr(dst, src)
    rx = lab.socket(dst, socket.AF_INET, socket.SOCK_DGRAM)
    tx = lab.socket(src, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.bind((dst_ip, port))
        rx.setblocking(False)
        # warm ARP/neighbour caches first
        for _ in range(3):
            tx.sendto(b"w" * 8, (dst_ip, port))
            time.sleep(0.02)
        _drain(rx, [])
        delays: list[int] = []
        for seq in range(count):
            t = time.clock_gettime_ns(time.CLOCK_REALTIME)
            tx.sendto(struct.pack("!QI", t, seq) + b"\x00" * 188, (dst_ip, port))
            _drain(rx, delays)
            time.sleep(interval_s)
        time.sleep(0.1)
        _drain(rx, delays)
        return delay_stats(delays, count)
    finally:
        rx.close()
        tx.close()


def _drain(rx: socket.socket, delays: list[int]) -> None:
    while True:
        try:
            data, anc, _, _ = rx.recvmsg(512, 64)
        except BlockingIOError:
            return
        if len(data) < 12:
            continue
        sent_ns = struct.unpack("!Q", data[:8])[0]
        for level, typ, raw in anc:
            if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", raw[:16])
                delays.append(sec * 1_000_000_000 + nsec - sent_ns)


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "pace":
        import signal

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        res = pace(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)
        return 0
    print("usage: python -m topologies.shaping pace DEV SIZE INTERVAL_US DURATION_S", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
