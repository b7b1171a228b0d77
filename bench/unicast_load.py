"""Unicast negotiation capacity: N negotiating clients against the ptp-switch unicast server.

    python -m bench.unicast_load [--steps 500,1000,2000,5000,10000] [--window 10] [--json out.json]

Lab: the `direct` topology (gm -- sl, one veth). The server (``ptp-switch run`` with
``unicast_listen 1``, the daemon the ATR lab tests run) runs in ``gm`` pinned to CPU 1 (``taskset``); the
load generator (this process) pins itself to CPU 0. It runs in ``sl``: every client is its own IPv4
source address out of 10.200.0.0/16 — the prefix is a local route on ``lo`` (AnyIP), so no address
has to be added, and the server routes it via ``sl``'s address (one neighbour entry). One UDP socket
per port sends each client's REQUEST_UNICAST_TRANSMISSION (Sync, logInterMessagePeriod 0 = 1/s,
300 s) from its own source address (IP_PKTINFO) and records, per destination address, the kernel
arrival time (SO_TIMESTAMPNS) of every Sync and Follow_Up.

For every step N: wait until all N hold a grant, then take a window of ``window`` seconds. Per
client, the server's send slots inside the window (its fixed phase, from the earliest arrival, +
k seconds) and the arrivals that fill them give expected and missed messages, for Syncs and
Follow_Ups alike (a Sync without its Follow_Up is useless to a two-step client); missed % =
missed / expected. Counting by kernel arrival time, not by when this process got round to reading, keeps the
generator's own scheduling delays out of the figure (reading time made a loaded generator report
~0.2 % "missed" that the server had sent on time). Also: the server's CPU time (utime+stime of its
PID) over the window and its namespace's UDP RcvbufErrors/SndbufErrors. Reports the most clients
served with < 0.1 % missed and CPU per 1000 clients.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import time

from controlplane.codec.header import Header
from controlplane.codec.messages import Signaling, encode
from controlplane.codec.tlv import RequestUnicastTransmissionTlv
from controlplane.codec.types import PortIdentity
from topologies import catalog
from topologies.netns import Lab

CLIENT_NET = ipaddress.ip_network("10.200.0.0/16")
PTP_SWITCH = os.path.join(os.path.dirname(sys.executable), "ptp-switch")
# the daemon as a unicast-only server (the same configuration a deployment would use)
DAEMON_CFG = """[global]
priority1 10
logAnnounceInterval 0
announceReceiptTimeout 2
unicast_listen 1
inhibit_multicast_service 1
unicast_max_clients {max_clients}
# the default global signaling limit (50/s, against forged-request floods) admits the initial requests
# of 10,000 clients in 200 s and their renewals only for long grants: a server sized for N clients
# raises it (here: all N request within ~1 s; per-source limit left at its default)
signaling_global_rate_limit {signaling_rate}
tx_timestamp_timeout 50
uds_address {uds}
"""
IP_PKTINFO = 8
SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SO_TIMESTAMPNS_OLD); the cmsg type has the same value
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PERIOD_NS = 1_000_000_000  # logInterMessagePeriod 0


def slot_count(stamps: list[int], t0_ns: int, t1_ns: int, period_ns: int = PERIOD_NS) -> tuple[int, int]:
    """(expected, received) messages of one client whose server sends every ``period_ns`` at a fixed
    phase, for the send slots inside [t0, t1], from the kernel arrival times of what it received.

    The phase is the earliest arrival modulo the period (the least delayed message); each arrival
    belongs to the nearest slot (so arrivals up to half a period late still count for their own
    slot, and a slot sent just before t1 but read after it is not lost); a slot with no arrival is
    a missed message. Arrivals must cover [t0, t1 + the largest delay]. A client with no arrival in
    the window missed all of it."""
    if not stamps:
        return max(1, (t1_ns - t0_ns) // period_ns), 0
    ref = stamps[0]
    phase = ref + min(((t - ref + period_ns // 2) % period_ns) - period_ns // 2 for t in stamps)
    first = -((phase - t0_ns) // period_ns)  # the first slot k with phase + k*P >= t0
    last = (t1_ns - phase) // period_ns
    slots = {round((t - phase) / period_ns) for t in stamps}
    expected = max(0, last - first + 1)
    return expected, sum(1 for k in range(first, last + 1) if k in slots)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def client_addr(i: int) -> str:
    return str(CLIENT_NET.network_address + 1 + i)


def request_bytes(i: int, duration_s: int) -> bytes:
    cid = b"\x0a\xc8" + i.to_bytes(6, "big")
    hdr = Header(message_type=0xC, sequence_id=0, source_port_identity=PortIdentity(cid, 1),
                 log_message_interval=0x7F, unicast=True)
    msg = Signaling(hdr, PortIdentity(b"\xff" * 8, 0xFFFF),
                    (RequestUnicastTransmissionTlv(0x0, 0, duration_s),))
    return encode(msg)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (clock ticks)


class Generator:
    """Runs inside the client namespace (its sockets are created there)."""

    def __init__(self, server_ip: str) -> None:
        self.server_ip = server_ip
        self.ev = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.gen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s, port in ((self.ev, 319), (self.gen, 320)):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # kernel arrival time of every Sync
            s.bind(("0.0.0.0", port))
            s.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ev, selectors.EVENT_READ, "sync")
        self.sel.register(self.gen, selectors.EVENT_READ, "general")
        self.sync_rx: dict[str, list[int]] = {}  # client address -> kernel RX times (CLOCK_REALTIME ns)
        self.follow_up_rx: dict[str, list[int]] = {}  # the same for Follow_Up
        self.general_rx = 0
        self.grants: set[str] = set()

    def close(self) -> None:
        self.sel.close()
        self.ev.close()
        self.gen.close()

    def request(self, first: int, count: int, duration_s: int, only_missing: bool = False) -> None:
        """Send the clients' requests, paced (100 per 10 ms) so the server's socket buffer keeps up."""
        for i in range(first, first + count):
            if only_missing and client_addr(i) in self.grants:
                continue
            src = socket.inet_aton(client_addr(i))
            pktinfo = struct.pack("I4s4s", 0, src, b"\0\0\0\0")
            while True:
                try:
                    self.gen.sendmsg([request_bytes(i, duration_s)], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)],
                                     0, (self.server_ip, 320))
                    break
                except BlockingIOError:
                    self.pump(0.001)
            if i % 100 == 99:
                self.pump(0.01)

    def pump(self, timeout_s: float) -> None:
        for key, _ in self.sel.select(timeout_s):
            sock = key.fileobj
            for _ in range(256):
                try:
                    data, anc, _f, _a = sock.recvmsg(256, 64)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                dst, rx_ns = None, None
                for level, kind, payload in anc:
                    if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                        dst = socket.inet_ntoa(payload[8:12])
                    elif level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", payload[:16])
                        rx_ns = sec * 1_000_000_000 + nsec
                if dst is None or len(data) < 34:
                    continue
                mtype = data[0] & 0x0F
                if key.data == "sync" and mtype == 0x0:
                    if rx_ns is not None:
                        self.sync_rx.setdefault(dst, []).append(rx_ns)
                elif mtype == 0x8:
                    if rx_ns is not None:
                        self.follow_up_rx.setdefault(dst, []).append(rx_ns)
                elif mtype == 0xC:
                    # GRANT: tlvType 0x0005 at 44, durationField at 50
                    if len(data) >= 54 and data[44:46] == b"\x00\x05" and int.from_bytes(data[50:54], "big") > 0:
                        self.grants.add(dst)
                else:
                    self.general_rx += 1

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.pump(min(left, 0.1))


def server_log_summary(path: os.PathLike) -> dict:
    """What the server's log says about the run: warnings (FAULT, send errors) and its final counters."""
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return {}
    warnings = [ln for ln in lines if "WARNING" in ln or "FAULT" in ln or "Traceback" in ln]
    stopped = [ln for ln in lines if "stopped;" in ln]
    return {"server_warnings": len(warnings), "server_first_warning": warnings[0][-200:] if warnings else None,
            "server_stop_line": stopped[-1][-200:] if stopped else None}


def udp_errors(lab: Lab) -> dict:
    """UDP drop counters of the server's and the generator's namespaces (/proc/net/snmp is per
    network namespace): drops at the generator are the generator's fault, not the server's."""
    out = {}
    for node, who in (("gm", "server"), ("sl", "generator")):
        res = lab.run(node, ["cat", "/proc/net/snmp"])
        rows = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("Udp:")]
        if len(rows) >= 2:
            udp = dict(zip(rows[0][1:], rows[1][1:]))
            out[f"{who}_udp_rcvbuf_errors"] = int(udp.get("RcvbufErrors", 0))
            out[f"{who}_udp_sndbuf_errors"] = int(udp.get("SndbufErrors", 0))
    return out


def run(steps: list[int], window_s: float, duration_s: int, keep_logs: str | None = None) -> dict:
    topo = catalog.get("direct")
    results: list[dict] = []
    server_logs: list[dict] = []
    with Lab(topo) as lab:
        srv_ip, cl_ip = lab.addr("gm", "sl"), lab.addr("sl", "gm")
        lab.run("sl", ["ip", "route", "add", "local", str(CLIENT_NET), "dev", "lo"], check=True)
        lab.run("gm", ["ip", "route", "add", str(CLIENT_NET), "via", cl_ip], check=True)
        gen = lab.in_node("sl", lambda: Generator(srv_ip))
        try:
            for n in steps:
                log = lab.workdir / f"server-{n}.json"
                log.parent.mkdir(parents=True, exist_ok=True)
                cfg = lab.workdir / f"server-{n}.cfg"
                cfg.write_text(DAEMON_CFG.format(max_clients=n + 10, signaling_rate=max(50, 2 * n),
                                                 uds=lab.uds_path("gm", f"load{n}")))
                argv = [PTP_SWITCH, "run", "-S", "-4", "-f", str(cfg), "-i", "eth0"]
                proc = lab.popen("gm", ["taskset", "-c", "1", *argv],
                                 stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=os.getcwd())
                # the daemon's port serves once MASTER (announce receipt timeout 2 x 1 s from LISTENING)
                time.sleep(4.0)
                gen.grants.clear()
                gen.sync_rx.clear()
                t0 = time.monotonic()
                gen.request(0, n, duration_s)
                while len(gen.grants) < n and time.monotonic() - t0 < 60:
                    gen.run_for(1.0)  # like a client's query interval: ask again if not granted
                    if len(gen.grants) < n:
                        gen.request(0, n, duration_s, only_missing=True)
                granted = len(gen.grants)
                gen.run_for(2.0)  # every grant past its first Sync
                gen.sync_rx.clear()
                gen.follow_up_rx.clear()
                c0, w0, t0_ns = cpu_ticks(proc.pid), time.monotonic(), time.time_ns()  # same PID after exec
                gen.run_for(window_s)
                c1, w1, t1_ns = cpu_ticks(proc.pid), time.monotonic(), time.time_ns()
                gen.run_for(0.3)  # read what arrived before t1 but was still queued in the socket
                clients = [client_addr(i) for i in range(n) if client_addr(i) in gen.grants]
                counts = {}
                for kind, rx in (("syncs", gen.sync_rx), ("follow_ups", gen.follow_up_rx)):
                    slots = [slot_count(rx.get(c, []), t0_ns, t1_ns) for c in clients]
                    counts[kind] = (sum(got for _, got in slots), sum(exp - got for exp, got in slots))
                received = sum(got for got, _ in counts.values())
                missed = sum(lost for _, lost in counts.values())
                expected = received + missed
                missed_pct = 100.0 * missed / expected if expected else 100.0
                cpu_pct = 100.0 * (c1 - c0) / CLK_TCK / (w1 - w0)
                row = {"clients": n, "granted": granted, "window_s": round(w1 - w0, 2),
                       "syncs_received": counts["syncs"][0], "syncs_missed": counts["syncs"][1],
                       "follow_ups_received": counts["follow_ups"][0], "follow_ups_missed": counts["follow_ups"][1],
                       "missed_pct": round(missed_pct, 3), "server_cpu_pct": round(cpu_pct, 1),
                       "cpu_pct_per_1000_clients": round(cpu_pct * 1000 / max(granted, 1), 2),
                       "clients_without_sync": sum(1 for c in clients if not gen.sync_rx.get(c)),
                       **udp_errors(lab)}
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                gen.run_for(0.5)
                summary = server_log_summary(log)
                row["server_warnings"] = summary.pop("server_warnings", None)
                results.append(row)
                server_logs.append({"clients": n, **summary})  # long strings: kept out of the table rows
                print(json.dumps({**row, **summary}), flush=True)
                if keep_logs:
                    os.makedirs(keep_logs, exist_ok=True)
                    shutil.copy(log, os.path.join(keep_logs, log.name))
                if granted < n or missed_pct >= 0.1:
                    break
        finally:
            gen.close()
    ok = [r for r in results if r["granted"] == r["clients"] and r["missed_pct"] < 0.1]
    best = max(ok, key=lambda r: r["clients"]) if ok else None
    return {
        "benchmark": "unicast_load",
        "command": "python -m bench.unicast_load " + " ".join(sys.argv[1:]),
        "steps": results,
        "max_clients_under_0.1pct_missed": best["clients"] if best else 0,
        "cpu_pct_per_1000_clients_at_max": best["cpu_pct_per_1000_clients"] if best else None,
        "server": "ptp-switch run (unicast_listen 1)",
        "server_logs": server_logs,
        "note": "server pinned to CPU 1, generator to CPU 0; 1 Sync/s + Follow_Up per client, both counted per send "
                "slot from kernel arrival stamps; software timestamps",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.unicast_load", description=__doc__.split("\n")[0])
    p.add_argument("--steps", default="500,1000,2000,5000,10000")
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--duration", type=int, default=300, help="requested grant duration, s")
    p.add_argument("--json", help="write the result here too")
    p.add_argument("--keep-logs", metavar="DIR", help="copy each step's server log here")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.unicast_load needs root (network namespaces)", file=sys.stderr)
        return 2
    steps = [int(x) for x in args.steps.split(",") if x.strip()]
    if any(n < 1 or n > 60000 for n in steps):
        print("steps must be 1..60000 clients", file=sys.stderr)
        return 2
    if os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {0})  # the generator off the server's CPU (before any thread starts)
    result = run(steps, args.window, args.duration, args.keep_logs)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
