"""Run linuxptp (ptp4l, pmc) and tshark inside lab namespaces; parse ptp4l's output.

Safety: every ptp4l started here as slave, BC or TC runs with ``free_running 1`` (the kernel clock
is shared by all namespaces and is never adjusted), and every ptp4l gets its own ``uds_address``
(UNIX socket paths are global). Because all namespaces share one clock, a free-running slave's
reported offset is pure measurement error: the accuracy oracle of the project.

Parsing is pure (``parse_offsets``, ``parse_states``, ``offset_stats``) and unit-tested on real lines.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import subprocess
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topologies.netns import Lab

# ---------------------------------------------------------------------------------------------
# configuration (ANCHORS.md appendix A)
COMMON = {
    "logSyncInterval": "-3",
    "logMinDelayReqInterval": "-3",
    "logMinPdelayReqInterval": "-3",
    "logAnnounceInterval": "0",
    "announceReceiptTimeout": "3",
    "tx_timestamp_timeout": "50",
    "free_running": "1",
    "freq_est_interval": "0",
    "summary_interval": "-3",
}
ROLE_DEFAULTS = {
    "gm": {"priority1": "10"},
    "slave": {"slaveOnly": "1", "priority1": "255"},
    "e2e_tc": {"clock_type": "E2E_TC", "priority1": "254", "tc_spanning_tree": "1"},
    "p2p_tc": {"clock_type": "P2P_TC", "delay_mechanism": "P2P", "priority1": "254", "tc_spanning_tree": "1"},
    "bc": {"boundary_clock_jbod": "0", "priority1": "128"},
}


class Ptp4lError(RuntimeError):
    """ptp4l/pmc could not be run or produced no usable output."""


def config_text(role: str, uds_address: str, overrides: dict[str, Any] | None = None, *, extra_sections: str = "") -> str:
    """A ptp4l config for ``role`` (gm, slave, e2e_tc, p2p_tc, bc). ``free_running`` is forced to 1."""
    if role not in ROLE_DEFAULTS:
        raise Ptp4lError(f"unknown ptp4l role {role!r}; one of {sorted(ROLE_DEFAULTS)}")
    opts = dict(COMMON)
    opts.update(ROLE_DEFAULTS[role])
    opts.update({k: str(v) for k, v in (overrides or {}).items()})
    if opts.get("free_running") != "1":
        raise Ptp4lError("free_running must stay 1: the lab shares the machine's clock and must never adjust it")
    opts["uds_address"] = uds_address
    lines = [f"# ptp-switch lab: {role}", "[global]"] + [f"{k}\t\t{v}" for k, v in opts.items()]
    return "\n".join(lines) + "\n" + extra_sections


@dataclasses.dataclass
class Ptp4lRun:
    node: str
    role: str
    proc: subprocess.Popen[Any]
    log_path: pathlib.Path
    cfg_path: pathlib.Path
    uds_address: str
    argv: list[str]

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> str:
        from topologies.netns import stop_process  # netns imports pyroute2; the parsers here need none

        stop_process(self.proc, timeout_s=5)
        return self.text()


def start_ptp4l(
    lab: Lab,
    node: str,
    role: str,
    *,
    interfaces: list[str] | None = None,
    transport: str = "-4",
    overrides: dict[str, Any] | None = None,
    duration_s: float | None = None,
    extra_args: list[str] | None = None,
    tag: str = "",
) -> Ptp4lRun:
    """Start ``ptp4l -S`` in ``node``'s namespace (tracked by the lab, killed on down).

    ``interfaces`` default to the node's link interfaces; ``transport`` is ``-4``, ``-6`` or ``-2``;
    ``duration_s`` bounds it with ``timeout``.
    """
    if transport not in ("-4", "-6", "-2"):
        raise Ptp4lError(f"transport {transport!r}: one of -4, -6, -2")
    ifaces = interfaces or list(lab.topology.ports(node))
    name = f"{node}{('-' + tag) if tag else ''}"
    uds = lab.uds_path(node, tag)
    cfg_path = lab.workdir / f"ptp4l-{name}.cfg"
    cfg_path.write_text(config_text(role, uds, overrides))
    log_path = lab.workdir / f"ptp4l-{name}.log"
    argv = ["ptp4l", "-S", transport, "-m", "-f", str(cfg_path)]
    for i in ifaces:
        argv += ["-i", i]
    if role == "slave":
        argv.append("-s")
    argv += list(extra_args or [])
    if duration_s is not None:
        argv = ["timeout", str(int(math.ceil(duration_s))), *argv]
    proc = lab.popen(node, argv, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    return Ptp4lRun(node, role, proc, log_path, cfg_path, uds, argv)


def pmc(lab: Lab, node: str, uds_address: str, *commands: str, timeout_s: float = 10) -> str:
    """``pmc -u -b 0 -s UDS "GET ..."`` in ``node``'s namespace; returns stdout."""
    argv = ["pmc", "-u", "-b", "0", "-s", uds_address, *commands]
    res = lab.run(node, argv, timeout=timeout_s)
    if res.returncode != 0:
        raise Ptp4lError(f"pmc failed ({res.returncode}): {res.stderr.strip()[-300:]}")
    return res.stdout


def start_tshark(lab: Lab, node: str, interface: str, *, duration_s: float, capture_filter: str = "") -> tuple[subprocess.Popen[Any], pathlib.Path]:
    """Capture on ``interface`` in ``node``'s namespace into a pcapng in the lab's workdir."""
    path = lab.workdir / f"capture-{node}-{interface}.pcapng"
    argv = ["tshark", "-q", "-i", interface, "-a", f"duration:{int(math.ceil(duration_s))}", "-w", str(path)]
    if capture_filter:
        argv += ["-f", capture_filter]
    proc = lab.popen(node, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, path


def run_pair(lab: Lab, gm: str, slave: str, *, duration_s: float = 22, transport: str = "-4",
             warmup_s: float = 5.0, slave_overrides: dict[str, Any] | None = None) -> OffsetStats:
    """The oracle: ptp4l GM on ``gm``, free-running ptp4l slave on ``slave``; slave offset statistics."""
    g = start_ptp4l(lab, gm, "gm", transport=transport, duration_s=duration_s + 3)
    time.sleep(0.5)
    s = start_ptp4l(lab, slave, "slave", transport=transport, duration_s=duration_s, overrides=slave_overrides)
    try:
        s.proc.wait(timeout=duration_s + 10)
    except subprocess.TimeoutExpired:
        pass
    text = s.stop()
    g.stop()
    stats = offset_stats(text, warmup_s=warmup_s)
    if stats.samples == 0:
        raise Ptp4lError(f"slave on {slave} logged no offsets in {duration_s} s; log tail:\n{text[-1500:]}\nGM log tail:\n{g.text()[-800:]}")
    return stats


# ---------------------------------------------------------------------------------------------
# parsing (pure)
_TS = r"^ptp4l\[(?P<t>\d+\.\d+)\]: "
_OFFSET = re.compile(_TS + r"(?:(?P<port>\S+): )?master offset\s+(?P<off>-?\d+) s(?P<state>\d) freq\s+(?P<freq>[-+]?\d+) path delay\s+(?P<delay>-?\d+)")
_RMS = re.compile(_TS + r"(?:(?P<port>\S+): )?rms\s+(?P<rms>\d+) max\s+(?P<max>\d+) freq\s+(?P<freq>[-+]?\d+) \+/-\s+(?P<fsd>\d+)(?: delay\s+(?P<delay>\d+) \+/-\s+(?P<dsd>\d+))?")
_STATE = re.compile(_TS + r"port (?P<port>\d+)(?: \((?P<ifname>[^)]+)\))?: (?P<old>[A-Z_]+) to (?P<new>[A-Z_]+) on (?P<event>\S+)")
_ANY = re.compile(_TS)


@dataclasses.dataclass(frozen=True)
class OffsetSample:
    t_s: float  # ptp4l's log time (CLOCK_MONOTONIC seconds)
    offset_ns: int
    servo_state: int
    freq_ppb: int
    path_delay_ns: int


@dataclasses.dataclass(frozen=True)
class RmsSummary:
    t_s: float
    rms_ns: int
    max_ns: int
    delay_ns: int | None


@dataclasses.dataclass(frozen=True)
class PortStateChange:
    t_s: float
    port: int
    old: str
    new: str
    event: str


@dataclasses.dataclass(frozen=True)
class OffsetStats:
    """A free-running slave's offsets after the warm-up. ``rms_without_worst_ns`` leaves out the one
    largest |offset| (see ``rms_without_worst``)."""

    samples: int
    rms_ns: float
    max_abs_ns: int
    mean_ns: float
    sd_ns: float
    mean_path_delay_ns: float
    first_offset_after_s: float | None  # from ptp4l's first log line to its first offset line
    summaries: int = 0  # rms-summary lines seen (summary_interval above the sync interval)
    rms_without_worst_ns: float = math.nan

    def line(self) -> str:
        return (f"n={self.samples} rms={self.rms_ns:.0f} (without the worst {self.rms_without_worst_ns:.0f}) "
                f"max|off|={self.max_abs_ns} mean={self.mean_ns:.0f} sd={self.sd_ns:.0f} "
                f"path_delay={self.mean_path_delay_ns:.0f} ns first_offset_after={self.first_offset_after_s}")


# The oracle's own rare outlier: on this VM's veth links the kernel's software TX stamp (veth_xmit)
# and the peer's RX stamp (netif_rx, the next call in the same path) are sometimes 20-50 us apart.
# Measured 2026-11-21 ~20:40 UTC with a one-off script: a ptp4l GM and a ptp-switch GM, each on a
# direct veth to a ptp4l slave, 8 Sync/s for 2 min, beside two pytest lab workers; captured slave RX
# minus the Follow_Up's preciseOriginTimestamp was +19..+53 us above its median for 3 of 951 Syncs of
# the ptp4l GM and 6 of 953 of the ptp-switch GM; on a quiet machine none (4 x 30 one-step samples).
# A free-running slave prints one Sync a second, so one such Sync decides the rms of a 15-sample test
# whatever the switch does. Tests with few samples bound the rms without the single worst one, and
# print both.
def rms_without_worst(values: "list[int] | tuple[int, ...]", drop: int = 1) -> float:
    """rms of ``values`` without the ``drop`` largest |value| (nan if nothing is left)."""
    kept = sorted(abs(v) for v in values)[:max(0, len(values) - drop)]
    return math.sqrt(sum(v * v for v in kept) / len(kept)) if kept else math.nan


def parse_offsets(text: str) -> list[OffsetSample]:
    out = []
    for line in text.splitlines():
        m = _OFFSET.match(line.strip())
        if m:
            out.append(OffsetSample(float(m["t"]), int(m["off"]), int(m["state"]), int(m["freq"]), int(m["delay"])))
    return out


def parse_summaries(text: str) -> list[RmsSummary]:
    out = []
    for line in text.splitlines():
        m = _RMS.match(line.strip())
        if m:
            out.append(RmsSummary(float(m["t"]), int(m["rms"]), int(m["max"]), int(m["delay"]) if m["delay"] else None))
    return out


def parse_states(text: str) -> list[PortStateChange]:
    out = []
    for line in text.splitlines():
        m = _STATE.match(line.strip())
        if m:
            out.append(PortStateChange(float(m["t"]), int(m["port"]), m["old"], m["new"], m["event"]))
    return out


def final_states(text: str) -> dict[int, str]:
    states: dict[int, str] = {}
    for ch in parse_states(text):
        states[ch.port] = ch.new
    return states


def offset_stats(text: str, *, warmup_s: float = 5.0) -> OffsetStats:
    """Statistics over the offset lines logged more than ``warmup_s`` after the first offset line.

    Falls back to the rms-summary form when there are no per-sample lines (rms is then the mean
    of the summaries' rms, max the largest max)."""
    samples = parse_offsets(text)
    first_t = None
    for line in text.splitlines():
        m = _ANY.match(line.strip())
        if m:
            first_t = float(m["t"])
            break
    if samples:
        t0 = samples[0].t_s
        first_after = round(t0 - first_t, 3) if first_t is not None else None
        kept = [s for s in samples if s.t_s - t0 >= warmup_s]
        if not kept:
            return OffsetStats(0, math.nan, 0, math.nan, math.nan, math.nan, first_after)
        offs = [s.offset_ns for s in kept]
        n = len(offs)
        mean = sum(offs) / n
        rms = math.sqrt(sum(o * o for o in offs) / n)
        sd = math.sqrt(sum((o - mean) ** 2 for o in offs) / n)
        delay = sum(s.path_delay_ns for s in kept) / n
        return OffsetStats(n, rms, max(abs(o) for o in offs), mean, sd, delay, first_after,
                           rms_without_worst_ns=rms_without_worst(offs))
    sums = parse_summaries(text)
    if sums:
        t0 = sums[0].t_s
        first_after = round(t0 - first_t, 3) if first_t is not None else None
        kept = [s for s in sums if s.t_s - t0 >= warmup_s] or sums
        delays = [s.delay_ns for s in kept if s.delay_ns is not None]
        rms = sum(s.rms_ns for s in kept) / len(kept)
        return OffsetStats(len(kept), rms, max(s.max_ns for s in kept), math.nan, math.nan,
                           sum(delays) / len(delays) if delays else math.nan, first_after, summaries=len(kept),
                           rms_without_worst_ns=rms)   # per-sample values are not in the summary lines
    return OffsetStats(0, math.nan, 0, math.nan, math.nan, math.nan, None)
