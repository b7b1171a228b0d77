"""Section 6 of the bench: control-plane CPU per port and per message rate.

Topologies (bare ports, UDPv4, E2E): OC = ``gm sl`` with the clock under test as the slave-only
OC on sl; BC with N ports = ``gm sw1 sl1 | sw1 sl2 | ...`` (one upstream port, N-1 downstream
ports, each with a free-running ptp4l slave that sends Delay_Req at the same rate). The ptp4l
grandmaster, the slaves and the clock under test all use logSyncInterval = logMinDelayReqInterval
= L (L in 0, -3, -5: 1, 8, 32 Sync/s per port), logAnnounceInterval 0, free_running 1; the clock
under test (``ptp-switch run`` or ptp4l, the same configuration file) is measured once every slave
reports offsets:
- CPU = utime + stime of its process (and any children) from /proc/<pid>/stat over the window;
- PTP packets = rx + tx packets on its ports (/sys/class/net/*/statistics) over the same window
  (besides PTP only the odd ARP / IPv6 ND frame crosses these links).
One lab per topology; the processes are restarted per (implementation, rate).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from topologies import catalog
from topologies import ptp4l as p4
from topologies.model import SwitchMode

CLK_TCK = os.sysconf("SC_CLK_TCK")
RATES = (0, -3, -5)
PORTS = (1, 2, 4, 8)  # 1 = OC


@dataclass
class CpuRow:
    impl: str
    ports: int
    log_sync_interval: int
    window_s: float = 0.0
    cpu_pct: float | None = None
    packets_per_s: float | None = None
    error: str = ""

    @property
    def role(self) -> str:
        return "OC (slave)" if self.ports == 1 else f"BC, {self.ports} ports"

    @property
    def cpu_pct_per_port(self) -> float | None:
        return None if self.cpu_pct is None else self.cpu_pct / self.ports

    @property
    def us_per_packet(self) -> float | None:
        if self.cpu_pct is None or not self.packets_per_s:
            return None
        return self.cpu_pct / 100.0 / self.packets_per_s * 1e6


@dataclass
class CpuResult:
    rows: list[CpuRow] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    shown: set[tuple[str, int]] = field(default_factory=set)


def topology_text(ports: int) -> str:
    if ports < 1:
        raise ValueError("ports must be >= 1")
    if ports == 1:
        return "gm sl"
    return " | ".join(["gm sw1 sl1"] + [f"sw1 sl{i}" for i in range(2, ports)])


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and its living descendants, in clock ticks (0 for a vanished pid)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()  # fields after "pid (comm)": state ppid ...
        ppid = int(rest[1])
        children.setdefault(ppid, []).append(int(entry))
        stats[int(entry)] = int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def _packets(lab: Any, node: str, ports: list[str]) -> int:
    files = " ".join(f"/sys/class/net/{p}/statistics/rx_packets /sys/class/net/{p}/statistics/tx_packets" for p in ports)
    out = lab.run(node, ["sh", "-c", f"cat {files}"], check=True)
    return sum(int(x) for x in out.stdout.split())


def _ptp_switch() -> str:
    exe = pathlib.Path(sys.executable).with_name("ptp-switch")
    if not exe.exists():
        raise RuntimeError(f"{exe} not found: run `make setup`")
    return str(exe)


def measure(lab: Any, ports: int, impl: str, rate: int, window_s: float, res: CpuResult, tag: str) -> CpuRow:
    row = CpuRow(impl, ports, rate, window_s)
    over = {"logSyncInterval": str(rate), "logMinDelayReqInterval": str(rate)}
    node = "sl" if ports == 1 else "sw1"
    slaves = [] if ports == 1 else [f"sl{i}" for i in range(1, ports)]
    runs: list[p4.Ptp4lRun] = []
    dut: subprocess.Popen[Any] | None = None
    try:
        runs.append(p4.start_ptp4l(lab, "gm", "gm", overrides=over, tag=tag))
        role = "slave" if ports == 1 else "bc"
        uds = lab.uds_path(node, f"dut{tag}")
        cfg = lab.workdir / f"dut-{tag}.cfg"
        cfg.write_text(p4.config_text(role, uds, over))
        ifaces = list(lab.topology.ports(node))
        if impl == "ptp-switch":
            argv = [_ptp_switch(), "run", "-S", "-f", str(cfg), "-m"] + (["-s"] if ports == 1 else ["--clock-type", "BC"])
        else:
            argv = ["ptp4l", "-S", "-f", str(cfg), "-m", "-q"] + (["-s"] if ports == 1 else [])
        for i in ifaces:
            argv += ["-i", i]
        log = lab.workdir / f"dut-{tag}.log"
        dut = lab.popen(node, argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
        if (impl, ports) not in res.shown:  # one command line per implementation and topology
            res.shown.add((impl, ports))
            res.commands.append(f"ip netns exec {lab.ns(node)} {' '.join(argv)}   # {cfg.name}: topologies.ptp4l "
                                f"config_text({role!r}, uds, {over})")
        for s in slaves:
            runs.append(p4.start_ptp4l(lab, s, "slave", overrides=over, tag=tag))

        def ready() -> bool:
            if dut.poll() is not None:
                raise RuntimeError(f"{impl} exited with code {dut.returncode}: {log.read_text(errors='replace')[-300:]!r}")
            if ports == 1:  # one line per sample, or an rms summary when Syncs come faster than summary_interval
                return re.search(r"master offset|\brms\s+\d", log.read_text(errors="replace")) is not None
            return all(p4.parse_offsets(r.text()) or p4.parse_summaries(r.text()) for r in runs[1:])

        t0 = time.monotonic()
        while not ready():
            if time.monotonic() - t0 > 40:
                raise RuntimeError("no offsets within 40 s (" + ("the OC" if ports == 1 else "the BC's slaves") + ")")
            time.sleep(0.5)
        time.sleep(2.0)
        c0, k0, m0 = proc_cpu_ticks(dut.pid), _packets(lab, node, ifaces), time.monotonic()
        time.sleep(window_s)
        c1, k1, m1 = proc_cpu_ticks(dut.pid), _packets(lab, node, ifaces), time.monotonic()
        if dut.poll() is not None:
            raise RuntimeError(f"{impl} exited during the window (code {dut.returncode})")
        row.window_s = round(m1 - m0, 2)
        row.cpu_pct = (c1 - c0) / CLK_TCK / (m1 - m0) * 100.0
        row.packets_per_s = (k1 - k0) / (m1 - m0)
    except Exception as exc:  # noqa: BLE001 - becomes the row's reason
        row.error = f"{exc.__class__.__name__}: {exc}"[:300]
    finally:
        if dut is not None and dut.poll() is None:
            dut.terminate()
            try:
                dut.wait(timeout=5)
            except subprocess.TimeoutExpired:
                dut.kill()
                dut.wait(timeout=5)
        for r in runs:
            r.stop()
    return row


def run_cpu(grid: list[tuple[int, str, int]], window_s: float, log: Callable[[str], None] = print) -> CpuResult:
    """``grid`` = [(ports, impl, logSyncInterval)]; one lab per port count, in the grid's order."""
    from topologies.netns import Lab

    res = CpuResult()
    by_ports: dict[int, list[tuple[str, int]]] = {}
    for ports, impl, rate in grid:
        by_ports.setdefault(ports, []).append((impl, rate))
    k = 0
    for ports, items in by_ports.items():
        text = topology_text(ports)
        try:
            lab = Lab(catalog.parse(text, name=f"bench-cpu-{ports}", mode=SwitchMode.BARE))
            lab.up()
        except Exception as exc:  # noqa: BLE001
            for impl, rate in items:
                res.rows.append(CpuRow(impl, ports, rate, error=f"lab build failed: {exc}"[:300]))
            continue
        with lab:
            res.commands.append(f"# lab {lab.run_id}: {text}  (bare ports)")
            for impl, rate in items:
                k += 1
                row = measure(lab, ports, impl, rate, window_s, res, tag=f"{k}")
                res.rows.append(row)
                if row.error:
                    log(f"  [6] {impl} {row.role} logSyncInterval {rate}: FAILED: {row.error}")
                else:
                    log(f"  [6] {impl} {row.role} logSyncInterval {rate}: CPU {row.cpu_pct:.2f} % of a core, "
                        f"{row.packets_per_s:.0f} packets/s, {row.us_per_packet or 0:.0f} us/packet")
    return res


def default_grid(quick: bool) -> list[tuple[int, str, int]]:
    """ptp-switch at every port count and rate; linuxptp at every port count at the highest rate."""
    if quick:
        return [(1, "ptp-switch", -3), (2, "ptp-switch", -3), (2, "linuxptp", -3)]
    grid = []
    for ports in PORTS:
        grid += [(ports, "ptp-switch", r) for r in RATES]
        grid.append((ports, "linuxptp", RATES[-1]))
    return grid
