"""Dataplane benchmark (needs root): ``python -m bench.dataplane [--out FILE] [--only cost,throughput,residence]``.

cost        ns per packet through BPF_PROG_TEST_RUN with repeat, for every hook and frame kind, with
            profiling cut-offs (the same C compiled with -DPTP_BENCH_STAGE=1/2/3: parse only, + port /
            global config and counters, + clock and ring lookup; at tc egress a forwarded event's counters
            come after its clock read, i.e. in the third cut) and the empty-program floors of XDP
            and tc measured in the same rounds. Rounds interleave every variant; median of rounds.
throughput  bulk UDP through a Linux bridge in a netns lab (h1 - sw1 - h2, the shared lab builder),
            with and without the programs, interleaved repetitions of the same duration; a C sender
            (compiled with gcc into the lab's work directory) blasts sendmmsg() batches; the forwarded
            count is h2's eth0 rx_packets. Mean +- sd per mode and the overhead in percent.
residence   per-packet accuracy in the lab: gm -> sw1 (eBPF TC; an HTB serializer with paced cross
            traffic INSIDE the switch on the path to sl, none to sl2) -> sl, sl2. A sender in gm emits
            one-step Syncs; AF_PACKET taps on the switch's own ports (software stamps) give each copy's
            true residence = egress tap - ingress tap; the correction added = correctionField out - in.
            Per egress port: p50/p99 of |added - true| and of the residence itself. The flooded
            copies (sl: queued, sl2: not) must each carry their own residence (tests/lab use this too).

budget      (not in the default set: --only budget) 3 eBPF TC hops with XDP vs tc ingress: slave rms and
            mean path delay, per-switch residence error, per-link tap-to-tap delay both directions.
oracle      the ptp4l oracle in the same run: ptp4l GM -> switch -> free-running ptp4l slave (the slave's
            offset is its error: one shared kernel clock): direct veth, plain bridge with the queues, and
            the eBPF TC with no queue / the queue inside / inside + congested egress port.
onestep     a ONE-STEP GM (topologies.onestep: ptp-switch, twoStepFlag 0, one_step_dataplane 1, 1 Sync/s:
            its own tc egress stamps its Syncs) -> the congested switch with the eBPF TC -> free-running ptp4l slave, paired with a
            direct veth run at the same time; 2 runs per transport (UDPv4, UDPv6, L2), plus the plain
            bridges once (UDPv4). rms, core rms (without the largest 5 %), samples over 10 us.

Prints JSON (``rows``: one flat dict per measurement, for bench/run.py's table) or writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import threading
from dataclasses import dataclass, field
from typing import Any

BLASTER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
/* blaster DST PORT PAYLOAD_BYTES SECONDS: UDP sendmmsg() batches of 64 for SECONDS; prints
 * "sent errors elapsed_s" */
int main(int argc, char **argv)
{
	static char buf[9000];
	struct mmsghdr m[64];
	struct iovec iov[64];
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct timespec t0, t;
	long long sent = 0, errs = 0;
	double secs, el = 0;
	int fd, size, i;

	if (argc != 5)
		return 2;
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	a.sin_port = htons(atoi(argv[2]));
	if (fd < 0 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1 || connect(fd, (void *)&a, sizeof(a)))
		return 3;
	size = atoi(argv[3]);
	secs = atof(argv[4]);
	if (size < 1 || size > (int)sizeof(buf))
		return 2;
	memset(buf, 0xab, sizeof(buf));
	memset(m, 0, sizeof(m));
	for (i = 0; i < 64; i++) {
		iov[i].iov_base = buf;
		iov[i].iov_len = size;
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (el < secs) {
		int n = sendmmsg(fd, m, 64, 0);
		if (n > 0)
			sent += n;
		else
			errs++;
		clock_gettime(CLOCK_MONOTONIC, &t);
		el = (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9;
	}
	printf("%lld %lld %.6f\n", sent, errs, el);
	return 0;
}
"""


# -- cost: ns per packet -----------------------------------------------------------------------
def _empty_programs():
    from bcc import BPF

    b = BPF(text=b"int ex(struct xdp_md *ctx) { return XDP_PASS; }\nint et(struct __sk_buff *skb) { return 0; }", cflags=["-w"])
    return b, b.load_func(b"ex", BPF.XDP).fd, b.load_func(b"et", BPF.SCHED_CLS).fd


def _frames() -> dict[str, tuple[bytes, int | None]]:
    """name -> (frame, event messageType to seed an ingress stamp for, or None)."""
    from tests.bpf import ptpfix as F

    udp4_sync = F.encap("udp4", F.ptp(F.SYNC))
    non_ptp = bytearray(udp4_sync)
    non_ptp[36:38] = (53).to_bytes(2, "big")          # UDP dport 53: not PTP
    return {
        "non_ptp_udp4": (bytes(non_ptp), None),
        "ptp_general_udp4": (F.encap("udp4", F.ptp(F.FOLLOW_UP), event=False), None),
        "ptp_event_l2": (F.encap("l2", F.ptp(F.SYNC)), F.SYNC),
        "ptp_event_udp4": (udp4_sync, F.SYNC),
        "ptp_event_udp6": (F.encap("udp6", F.ptp(F.SYNC)), F.SYNC),
        "ptp_event_udp4_two_step": (F.encap("udp4", F.ptp(F.SYNC, two_step=True)), F.SYNC),
    }


STAGES = {1: "parse", 2: "+config,counters", 3: "+clock,ring lookup"}


def measure_cost(repeat: int = 200_000, rounds: int = 5) -> dict[str, Any]:
    from dataplane.loader import Dataplane, compile_module
    from dataplane.maps import MAP_TYPES, DataplaneMaps, GlobalConfig, PortConfig, PtpKey
    from dataplane.testrun import run_tc, run_xdp
    from tests.bpf import ptpfix as F

    lo, peer = 1, 7
    full = Dataplane(["lo"], pin=False)
    full.load()
    builds: dict[str, tuple[Any, dict[str, int], Any]] = {"full": (None, full.prog_fds, full.maps)}
    for n in STAGES:
        bpf, fds = compile_module({"PTP_BENCH_STAGE": n})
        maps = DataplaneMaps({name: bpf[name.encode()].map_fd for name in MAP_TYPES})
        builds[f"stage{n}"] = (bpf, fds, maps)
    for _, _, maps in builds.values():
        maps.set_global(GlobalConfig())
        maps.set_port(PortConfig(ifindex=lo, slot=0))
        maps.set_port(PortConfig(ifindex=peer, slot=1))
    empty, fd_ex, fd_et = _empty_programs()
    frames = _frames()
    samples: dict[tuple[str, str, str], list[int]] = {}

    def add(key: tuple[str, str, str], v: int) -> None:
        samples.setdefault(key, []).append(v)

    def now_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_TAI)  # the dataplane's clock

    for _ in range(rounds):
        add(("floor", "xdp", "empty"), run_xdp(fd_ex, frames["non_ptp_udp4"][0], repeat=repeat).duration_ns)
        add(("floor", "tc", "empty"), run_tc(fd_et, frames["non_ptp_udp4"][0], ifindex=lo, ingress_ifindex=peer, repeat=repeat).duration_ns)
        for name, (frame, seed) in frames.items():
            variants = ["full"] if name != "ptp_event_udp4" else ["stage1", "stage2", "stage3", "full"]
            for var in variants:
                _, fds, maps = builds[var]
                add((name, "xdp_ingress", var), run_xdp(fds["xdp_ingress"], frame, ingress_ifindex=lo, repeat=repeat).duration_ns)
                if var == "full":
                    # the veth default: tc ingress back-dated to skb->tstamp (converted to the
                    # dataplane's CLOCK_TAI with the offset in the map); the stamp is 100 us old
                    rx_rt = time.clock_gettime_ns(time.CLOCK_REALTIME) - 100_000
                    add((name, "tc_ingress", var), run_tc(fds["tc_ingress"], frame, ifindex=lo, tstamp_ns=rx_rt,
                                                          repeat=repeat).duration_ns)
                if seed is not None:
                    maps.clear_state()
                    maps.seed_ingress(PtpKey.make(0, seed, 100, F.GM_PORT), now_ns(), peer)
                add((name, "tc_egress", var), run_tc(fds["tc_egress"], frame, ifindex=lo, ingress_ifindex=peer, repeat=repeat).duration_ns)
    empty.cleanup()
    for bpf, _, _ in builds.values():
        if bpf is not None:
            bpf.cleanup()
    full.detach()

    med = {k: statistics.median(v) for k, v in samples.items()}
    floor = {"xdp_ingress": med[("floor", "xdp", "empty")], "tc_egress": med[("floor", "tc", "empty")],
             "tc_ingress": med[("floor", "tc", "empty")]}
    rows = []
    for (name, hook, var), v in med.items():
        if name == "floor":
            continue
        rows.append({"section": "cost", "frame": name, "hook": hook,
                     "variant": "full program" if var == "full" else f"cut after {STAGES[int(var[-1])]}",
                     "ns_per_packet": v, "above_floor_ns": v - floor[hook],
                     "spread_ns": max(samples[(name, hook, var)]) - min(samples[(name, hook, var)])})
    return {"repeat": repeat, "rounds": rounds, "floor_xdp_ns": floor["xdp_ingress"], "floor_tc_ns": floor["tc_egress"],
            "unit": "kernel mean ns per run (BPF_PROG_TEST_RUN repeat), median of rounds", "rows": rows}


# -- throughput --------------------------------------------------------------------------------
def _compile_blaster(workdir) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "blaster.c"
    exe = workdir / "blaster"
    src.write_text(BLASTER_C)
    res = subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"gcc failed: {res.stderr.strip()[:300]}")
    return str(exe)


def _rx_packets(lab, node: str, ifname: str) -> int:
    out = lab.run(node, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"], check=True)
    return int(out.stdout.strip())


MODES = {"bridge": None, "bridge+ebpf (xdp ingress)": "xdp", "bridge+ebpf (tc ingress: default on veth)": "tc",
         "bridge+empty XDP program (control)": "empty-xdp"}


def _empty_xdp(lab, ports: list[str], fd: int | None):
    """Attach (fd) or remove (None) an empty XDP program: the cost of the hook itself on veth."""
    from dataplane import loader as L

    def do() -> None:
        with L._ipr() as ipr:
            for p in ports:
                idx = L._ifindex(ipr, p)
                if fd is None:
                    L._xdp_detach(ipr, idx)
                else:
                    L._xdp_attach(ipr, idx, fd, L.XDP_FLAGS_DRV_MODE)

    lab.in_node("sw1", do)


def measure_throughput(duration_s: float = 3.0, reps: int = 5, sizes: tuple[int, ...] = (64, 1400),
                       modes: tuple[str, ...] = tuple(MODES)) -> dict[str, Any]:
    """Forwarded packets per second h1 -> sw1 (bridge) -> h2 for each mode, interleaved (the order of
    the modes rotates every repetition); overhead of each eBPF mode against the plain bridge."""
    import socket

    from dataplane.loader import Dataplane
    from topologies import catalog
    from topologies.netns import Lab

    rows: list[dict[str, Any]] = []
    with Lab(catalog.parse("h1 sw1 h2", name="dp-throughput")) as lab:
        exe = _compile_blaster(lab.workdir)
        dst = lab.addr("h2", "sw1")
        h2_if = lab.ifname("h2", "sw1")
        sink = lab.socket("h2")
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sink.bind(("0.0.0.0", 5001))             # bound, never read: the stack drops at the socket, no ICMP
        if not lab.ping("h1", "h2"):
            raise RuntimeError("no connectivity h1 -> h2 through the bridge")
        dp = Dataplane(list(lab.switch_ports("sw1")), pin=False)
        empty, empty_fd, _ = _empty_programs()
        try:
            dp.load()
            for size in sizes:
                res: dict[str, list[float]] = {m: [] for m in modes}
                for rep in range(reps):
                    order = list(modes[rep % len(modes):]) + list(modes[:rep % len(modes)])
                    for mode in order:
                        hook = MODES[mode]
                        if hook == "empty-xdp":
                            _empty_xdp(lab, list(lab.switch_ports("sw1")), empty_fd)
                        elif hook:
                            dp.ingress_hook = hook
                            lab.in_node("sw1", dp.attach)
                        try:
                            before = _rx_packets(lab, "h2", h2_if)
                            out = lab.run("h1", [exe, dst, "5001", str(size), str(duration_s)], timeout=duration_s + 30, check=True)
                            after = _rx_packets(lab, "h2", h2_if)
                        finally:
                            if hook == "empty-xdp":
                                _empty_xdp(lab, list(lab.switch_ports("sw1")), None)
                            elif hook:
                                lab.in_node("sw1", lambda: dp.detach(unload=False))
                        el = float(out.stdout.split()[2])
                        res[mode].append((after - before) / el)
                base = statistics.mean(res["bridge"]) if "bridge" in res else None
                for mode, vals in res.items():
                    mean = statistics.mean(vals)
                    rows.append({"section": "throughput", "payload_bytes": size, "mode": mode, "reps": reps,
                                 "duration_s": duration_s, "forwarded_kpps_mean": round(mean / 1e3, 1),
                                 "forwarded_kpps_sd": round(statistics.stdev(vals) / 1e3, 1) if len(vals) > 1 else 0.0,
                                 "mbit_s_mean": round(mean * (size + 42) * 8 / 1e6, 1),
                                 "overhead_pct": None if base is None or mode == "bridge" else round((base - mean) / base * 100, 2),
                                 "overhead_ci95_pct": None if base is None or mode == "bridge" or len(vals) < 2 else
                                 round(1.96 * math.sqrt(statistics.variance(vals) / len(vals)
                                                        + statistics.variance(res["bridge"]) / len(res["bridge"])) / base * 100, 2)})
        finally:
            lab.in_node("sw1", dp.detach)
            empty.cleanup()
            sink.close()
    return {"rows": rows}


# -- residence accuracy ------------------------------------------------------------------------
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
RESIDENCE_TOPOLOGY = "gm sw1 >i sl | sw1 sl2"     # queue inside sw1 on the way to sl only


@dataclass
class Tap:
    """AF_PACKET capture of one interface with kernel software RX/TX stamps (CLOCK_REALTIME)."""

    ifname: str
    sock: Any
    frames: list[tuple[int, int, bytes]] = field(default_factory=list)   # (t_ns, pkttype, frame)
    thread: threading.Thread | None = None

    def run(self, stop: threading.Event) -> None:
        import select
        import socket as _s

        while not stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            data, anc, _flags, addr = self.sock.recvmsg(2048, _s.CMSG_SPACE(16))
            t_ns = 0
            for level, typ, val in anc:
                if level == _s.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = __import__("struct").unpack("qq", val[:16])
                    t_ns = sec * 1_000_000_000 + nsec
            self.frames.append((t_ns, addr[2], data))


def _open_tap(lab, node: str, ifname: str) -> Tap:
    import socket as _s

    sock = lab.socket(node, _s.AF_PACKET, _s.SOCK_RAW, _s.htons(0x0003))
    sock.setsockopt(_s.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(_s.SOL_SOCKET, _s.SO_RCVBUF, 4 << 20)
    sock.bind((ifname, 0))
    return Tap(ifname, sock)


def _ptp_events(tap: Tap, outgoing: bool) -> dict[tuple[int, int], tuple[int, int]]:
    """{(messageType, sequenceId): (tap time ns, correctionField scaled ns)} of the event messages."""
    from controlplane.codec.frames import parse_frame

    out = {}
    for t_ns, pkttype, frame in tap.frames:
        if (pkttype == PACKET_OUTGOING) != outgoing:
            continue
        try:
            fr = parse_frame(frame)
        except ValueError:
            continue
        if fr is None or len(fr.ptp) < 34 or fr.ptp[0] & 0x0F > 3:
            continue
        key = (fr.ptp[0] & 0x0F, int.from_bytes(fr.ptp[30:32], "big"))
        out.setdefault(key, (t_ns, int.from_bytes(fr.ptp[8:16], "big", signed=True)))
    return out


@dataclass(frozen=True)
class ResidenceSample:
    port: str
    sequence_id: int
    true_residence_ns: int        # egress tap - ingress tap (the switch's own ports)
    added_ns: float               # correctionField out - in, ns

    @property
    def error_ns(self) -> float:
        return self.added_ns - self.true_residence_ns


def _pct(vals: list[float], q: float) -> float:
    v = sorted(vals)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


def residence_run(lab, *, count: int = 300, interval_s: float = 0.02, transport: str = "udp4",
                  switch: str = "sw1", source: str = "gm") -> list[ResidenceSample]:
    """Send ``count`` one-step Syncs from ``source`` while tapping every port of ``switch`` (the
    dataplane must already be attached there); return one sample per (egress port, Sync)."""
    import socket as _s

    from tests.bpf import ptpfix as F

    ports = lab.switch_ports(switch)
    ingress = lab.ifname(switch, source)
    taps = [_open_tap(lab, switch, p) for p in ports]
    stop = threading.Event()
    for t in taps:
        t.thread = threading.Thread(target=t.run, args=(stop,), daemon=True)
        t.thread.start()
    src_if = lab.ifname(source, switch)
    try:
        if transport == "udp4":
            tx = lab.socket(source, _s.AF_INET, _s.SOCK_DGRAM)
            tx.setsockopt(_s.IPPROTO_IP, _s.IP_MULTICAST_IF, _s.inet_aton(lab.addr(source, switch).split("/")[0]))
            tx.setsockopt(_s.IPPROTO_IP, _s.IP_MULTICAST_TTL, 1)
            send = lambda msg: tx.sendto(msg, ("224.0.1.129", 319))   # noqa: E731
        elif transport == "l2":
            tx = lab.socket(source, _s.AF_PACKET, _s.SOCK_RAW, 0)
            tx.bind((src_if, 0))
            mac = tx.getsockname()[4]
            send = lambda msg: tx.send(bytes.fromhex("011b19000000") + mac + b"\x88\xf7" + msg)   # noqa: E731
        else:
            raise ValueError(f"transport must be udp4 or l2, not {transport!r}")
        try:
            time.sleep(0.2)
            for seq in range(count):
                send(F.ptp(F.SYNC, seq=seq, correction_scaled=0))
                time.sleep(interval_s)
            time.sleep(0.5)
        finally:
            tx.close()
    finally:
        stop.set()
        for t in taps:
            if t.thread:
                t.thread.join(timeout=2)
            t.sock.close()
    by_if = {t.ifname: t for t in taps}
    rx = _ptp_events(by_if[ingress], outgoing=False)
    samples = []
    for p in ports:
        if p == ingress:
            continue
        for key, (t_out, c_out) in sorted(_ptp_events(by_if[p], outgoing=True).items()):
            if key in rx and key[0] == F.SYNC:
                t_in, c_in = rx[key]
                samples.append(ResidenceSample(p, key[1], t_out - t_in, (c_out - c_in) / 65536))
    return samples


def summarize_residence(samples: list[ResidenceSample], sent: int) -> list[dict[str, Any]]:
    rows = []
    for port in sorted({s.port for s in samples}):
        ss = [s for s in samples if s.port == port]
        errs = [abs(s.error_ns) for s in ss]
        res = [s.true_residence_ns for s in ss]
        rows.append({"section": "residence", "egress_port": port, "sent": sent, "matched": len(ss),
                     "residence_p50_us": round(_pct(res, 0.5) / 1e3, 1), "residence_p99_us": round(_pct(res, 0.99) / 1e3, 1),
                     "abs_error_p50_ns": round(_pct(errs, 0.5)), "abs_error_p99_ns": round(_pct(errs, 0.99)),
                     "abs_error_max_ns": round(max(errs)) if errs else None,
                     "mean_error_ns": round(statistics.mean(s.error_ns for s in ss)) if ss else None})
    return rows


RESIDENCE_CASES = (("xdp", "udp4"), ("xdp", "l2"), ("tc", "udp4"))      # (ingress hook, transport)


def measure_residence(duration_s: float = 20.0, cases: tuple[tuple[str, str], ...] = RESIDENCE_CASES) -> dict[str, Any]:
    from dataplane.loader import Dataplane
    from topologies import catalog
    from topologies.netns import Lab

    interval_s = 0.02
    count = int(duration_s / interval_s)
    rows: list[dict[str, Any]] = []
    with Lab(catalog.parse(RESIDENCE_TOPOLOGY, name="dp-residence")) as lab:
        dp = Dataplane(list(lab.switch_ports("sw1")), pin=False)
        try:
            for hook, tr in cases:
                dp.ingress_hook = hook
                lab.in_node("sw1", dp.attach)
                try:
                    samples = residence_run(lab, count=count, interval_s=interval_s, transport=tr)
                finally:
                    lab.in_node("sw1", lambda: dp.detach(unload=False))
                for r in summarize_residence(samples, count):
                    r["transport"] = tr
                    r["ingress_hook"] = hook
                    r["port_to"] = {lab.ifname("sw1", "sl"): "sl (queue inside)", lab.ifname("sw1", "sl2"): "sl2 (no queue)"}.get(r["egress_port"], "?")
                    rows.append(r)
        finally:
            lab.in_node("sw1", dp.detach)
    return {"residence_topology": RESIDENCE_TOPOLOGY, "rows": rows}


# -- the ptp4l oracle ---------------------------------------------------------------------------
ORACLE_CASES = (
    # (label, topology text, congest the egress port toward sl, attach the eBPF TC, ptp4l transport)
    ("direct veth", "gm sl", False, False, "-4"),
    ("plain bridge, queue inside + congested egress", "gm sw1 >i sl", True, False, "-4"),
    ("eBPF TC, no queue", "gm sw1 sl", False, True, "-4"),
    ("eBPF TC, queue inside", "gm sw1 >i sl", False, True, "-4"),
    ("eBPF TC, queue inside + congested egress", "gm sw1 >i sl", True, True, "-4"),
    ("eBPF TC, queue inside + congested egress (L2)", "gm sw1 >i sl", True, True, "-2"),
)


def measure_oracle(duration_s: float = 26.0, cases: tuple = ORACLE_CASES) -> dict[str, Any]:
    from dataplane.loader import Dataplane
    from topologies import catalog, shaping
    from topologies.model import Shaping
    from topologies.netns import Lab
    from topologies.ptp4l import run_pair

    rows = []
    for label, text, congest, tc, transport in cases:
        with Lab(catalog.parse(text, name="dp-oracle")) as lab:
            if congest:
                port = lab.ifname("sw1", "sl")
                shaping.install_htb(lab, "sw1", port, Shaping())
                shaping.start_pacer(lab, "sw1", port, Shaping(), duration_s=duration_s + 30)
            dp = Dataplane(list(lab.switch_ports("sw1")), pin=False) if tc else None
            if dp:
                lab.in_node("sw1", dp.attach)
            try:
                st = run_pair(lab, "gm", "sl", duration_s=duration_s, transport=transport, warmup_s=6)
            finally:
                if dp:
                    lab.in_node("sw1", dp.detach)
        rows.append({"section": "oracle", "case": label, "transport": {"-4": "UDPv4", "-6": "UDPv6", "-2": "L2"}[transport],
                     "samples": st.samples, "rms_ns": round(st.rms_ns), "max_abs_ns": st.max_abs_ns,
                     "mean_ns": round(st.mean_ns), "mean_path_delay_ns": round(st.mean_path_delay_ns)})
    return {"oracle_duration_s": duration_s, "rows": rows}


# -- one-step GM: the ptp-switch daemon with twoStepFlag 0, stamped at its own tc egress ---------------
ONESTEP_TRANSPORTS = ("UDPv4", "UDPv6", "L2")


def _one_step_run(lab, transport: str, tag: str, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """A one-step ptp-switch GM -> free-running ptp4l slave (topologies.onestep): its figures as a row."""
    from topologies import onestep

    return onestep.run(lab, transport, tag, duration_s=duration_s, warmup_s=warmup_s).row()


def measure_onestep(duration_s: float = 40.0, runs: int = 2, transports: tuple[str, ...] = ONESTEP_TRANSPORTS,
                    warmup_s: float = 4.0) -> dict[str, Any]:
    """tests/lab/test_dataplane_onestep.py's lab, ``runs`` paired runs per transport: the congested switch
    (queue inside sw1, congested egress port) with the eBPF E2E TC || a direct veth, each with its own
    one-step GM at the same time; UDPv4 also the plain bridges || direct once."""
    import concurrent.futures

    from dataplane.loader import Dataplane
    from topologies import catalog, shaping
    from topologies.model import Shaping
    from topologies.netns import Lab

    rows = []

    def paired(sw_lab, direct_lab, transport: str, case: str, run: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            f_sw = pool.submit(_one_step_run, sw_lab, transport, f"{case}-{transport}-{run}", duration_s, warmup_s)
            f_d = pool.submit(_one_step_run, direct_lab, transport, f"direct-{case}-{transport}-{run}", duration_s, warmup_s)
            for label, f in ((case, f_sw), (f"direct (beside {case})", f_d)):
                try:
                    r = f.result()
                except Exception as exc:  # noqa: BLE001 - one failed run is a row, not a lost section
                    r = {"error": str(exc)[:300]}
                rows.append({"section": "onestep", "case": label, "transport": transport, "run": run, **r})
                say = r.get("rms_ns")
                print(f"onestep {transport} {label} run {run}: rms {say} ns core {r.get('core_rms_ns')} ns "
                      f"over 10 us {r.get('over_10us')}", file=sys.stderr, flush=True)

    for transport in transports:
        with Lab(catalog.parse("gm sw1 >i sl", name="dp-onestep")) as lab, Lab(catalog.parse("gm sl", name="dp-os-direct")) as direct:
            port = lab.ifname("sw1", "sl")
            shaping.install_htb(lab, "sw1", port, Shaping())
            shaping.start_pacer(lab, "sw1", port, Shaping(), duration_s=(duration_s + 30) * (runs + 1))
            if transport == "UDPv4":
                paired(lab, direct, transport, "plain bridges", 1)
            dp = Dataplane(list(lab.switch_ports("sw1")), pin=False)
            lab.in_node("sw1", dp.attach)
            try:
                for run in range(1, runs + 1):
                    paired(lab, direct, transport, "eBPF TC", run)
            finally:
                lab.in_node("sw1", dp.detach)
    return {"onestep_duration_s": duration_s, "onestep_warmup_s": warmup_s, "rows": rows}


# -- per-link error budget at several hops ------------------------------------------------------
BUDGET_HOOKS = ("xdp", "tc")


def _q(vals: list[int], q: float) -> int | None:
    v = sorted(vals)
    return v[min(len(v) - 1, int(q * len(v)))] if v else None


def measure_budget(duration_s: float = 15.0, hops: int = 3, hooks: tuple[str, ...] = BUDGET_HOOKS) -> dict[str, Any]:
    """Where a multi-hop E2E TC's error comes from, per ingress hook: bench.scenarios_run.run_chain
    (ptp4l GM -> ``hops`` eBPF TC switches, each with the queue inside -> free-running ptp4l slave, tcpdump
    taps in every switch) gives the slave's rms and mean path delay, each switch's residence error
    (Sync forward, Delay_Req back) and each link's tap-to-tap delay (Sync forward, Delay_Req back): the
    links are time no switch corrects, so their asymmetry and jitter reach the slave."""
    from bench.scenarios import ChainSpec, Impl
    from bench.scenarios_run import run_chain

    rows = []
    for hook in hooks:
        r = run_chain(ChainSpec(Impl.PTPS_E2E, hops=hops, slaves=1, ingress_hook=hook), duration_s)
        base = {"section": "budget", "hook": hook, "hops": hops}
        if r.error:
            rows.append({**base, "error": r.error[:300]})
            continue
        for s in r.slaves:
            stt = s.stats(r.skip_s)
            mpd = s.mean_path_delay_ns(r.skip_s)
            rows.append({**base, "part": f"slave {s.name}", "samples": stt.n if stt else 0,
                         "rms_ns": round(stt.rms_ns) if stt else None,
                         "mean_path_delay_ns": round(mpd) if mpd is not None else None})
        for ld in r.links:
            rows.append({**base, "part": f"link {ld.link}", "fwd_p50_ns": _q(ld.forward_ns, .5),
                         "fwd_p99_ns": _q(ld.forward_ns, .99), "rev_p50_ns": _q(ld.reverse_ns, .5),
                         "rev_p99_ns": _q(ld.reverse_ns, .99)})
        for what, hs in (("Sync", r.hops), ("Delay_Req", r.reverse_hops)):
            for h in hs:
                e = list(h.error_ns)
                rows.append({**base, "part": f"residence {h.switch} {what}", "error_p01_ns": _q(e, .01),
                             "error_p50_ns": _q(e, .5), "error_p99_ns": _q(e, .99)})
    return {"budget_duration_s": duration_s, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dataplane")
    ap.add_argument("--out", help="write JSON here (default stdout)")
    ap.add_argument("--repeat", type=int, default=200_000, help="BPF_PROG_TEST_RUN repeat (cost)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (cost)")
    ap.add_argument("--duration", type=float, default=1.5, help="seconds per throughput repetition")
    ap.add_argument("--reps", type=int, default=10, help="repetitions per throughput mode (modes interleaved)")
    ap.add_argument("--only", default="cost,throughput,residence,oracle,onestep", help="comma-separated sections")
    args = ap.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {"cost", "throughput", "residence", "oracle", "budget", "onestep"}
    if unknown:
        ap.error(f"unknown section(s): {sorted(unknown)}")
    quick = args.repeat < 100_000
    res: dict[str, Any] = {"benchmark": "dataplane", "rows": []}
    if "cost" in only:
        cost = measure_cost(args.repeat, args.rounds)
        res["rows"] += cost.pop("rows")
        res.update(cost)
    if "throughput" in only:
        tp = measure_throughput(args.duration if not quick else 1.0, args.reps if not quick else 2,
                                (64, 1400) if not quick else (64,))
        res["rows"] += tp.pop("rows")
    if "residence" in only:
        rs = measure_residence(duration_s=20 if not quick else 8)
        res["rows"] += rs.pop("rows")
        res.update(rs)
    if "oracle" in only:
        orc = measure_oracle(26 if not quick else 14)
        res["rows"] += orc.pop("rows")
        res.update(orc)
    if "onestep" in only:
        os_ = measure_onestep(40 if not quick else 20, 2 if not quick else 1)
        res["rows"] += os_.pop("rows")
        res.update(os_)
    if "budget" in only:
        bd = measure_budget(15 if not quick else 10)
        res["rows"] += bd.pop("rows")
        res.update(bd)
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
