"""Run a ``ChainSpec`` in a netns lab: ptp4l GM -> N switches -> ptp4l slaves (all free_running 1).

``run_chain(spec, duration_s, progress=...)`` builds the lab (topologies.netns.Lab, which also
installs the congestion), starts the switch implementation, the grandmaster and the slaves, waits
for every slave's first offset, measures for ``duration_s``, reads the switches' dataplane counters
where there are any, and always tears everything down. The result carries every command it ran.

Every slave runs ``free_running 1``: all namespaces share one kernel clock, so the offset a slave
reports is its measurement error (the oracle). Nothing here steps or slews a clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.report import Stats, summarize
from bench.scenarios import LINUXPTP_CLOCK_TYPE, PTPS_CLOCK_TYPE, ChainSpec, Impl
from topologies.ptp4l import COMMON, parse_offsets

# the ANCHORS.md recipe (8/s Sync and delay requests, 1 s announce, 3 s receipt timeout, free_running 1):
# topologies.ptp4l.COMMON, the same option set the lab tests use
_COMMON = dict(COMMON)


class ChainError(RuntimeError):
    """A part of the chain failed (a process died, a slave never reported): the reason says which."""


@dataclass
class SlaveResult:
    name: str
    congested_hops: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t_s since first offset, offset_ns, path_delay_ns)
    first_offset_after_s: float | None = None

    def window(self, skip_s: float) -> list[tuple[float, int, int]]:
        return [s for s in self.samples if s[0] >= skip_s]

    def stats(self, skip_s: float = 0.0) -> Stats | None:
        return summarize(s[1] for s in self.window(skip_s))

    def mean_path_delay_ns(self, skip_s: float = 0.0) -> float | None:
        w = self.window(skip_s)
        return sum(s[2] for s in w) / len(w) if w else None


@dataclass
class SwitchResult:
    name: str
    corrected: int | None = None  # messages whose correctionField the dataplane updated
    forwarded_event: int | None = None
    mean_residence_ns: float | None = None
    note: str = ""


@dataclass
class ChainResult:
    spec: ChainSpec
    duration_s: float
    slaves: list[SlaveResult] = field(default_factory=list)
    switches: list[SwitchResult] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    error: str | None = None
    hops: list[Any] = field(default_factory=list)  # bench.scenarios_capture.HopResidence, GM -> first slave
    reverse_hops: list[Any] = field(default_factory=list)  # the same for Delay_Req, first slave -> GM (E2E TCs)
    links: list[Any] = field(default_factory=list)  # bench.scenarios_capture.LinkDelay per tapped link (E2E TCs)
    elapsed_s: float = 0.0
    skip_s: float = 0.0  # discarded at the start of the window (servo-free, but first Syncs are odd)

    @property
    def label(self) -> str:
        return self.spec.label


Progress = Callable[[str, float, float, int, float | None], None]  # phase, elapsed_s, total_s, samples, live_rms_ns


def ptp4l_config(role: str, spec: ChainSpec, uds_address: str) -> str:
    """ptp4l configuration text for ``role`` in gm / slave / switch (the ANCHORS.md files)."""
    opts: dict[str, str] = {}
    if role == "gm":
        opts["priority1"] = "10"
    elif role == "slave":
        opts["slaveOnly"] = "1"
        opts["priority1"] = "255"
    elif role == "ptps":  # the ptp-switch daemon reads the same ptp4l option names
        ct = PTPS_CLOCK_TYPE[spec.impl]
        opts["clock_type"] = ct
        opts["priority1"] = "128" if ct == "BC" else "254"
    elif role == "switch":
        ct = LINUXPTP_CLOCK_TYPE[spec.impl]
        if ct == "OC":  # linuxptp BC: an OC with several ports is a BC
            opts["boundary_clock_jbod"] = "0"  # jbod 1 + -S is broken in 3.1.1 (FT_SWITCH_PHC)
            opts["priority1"] = "128"
        else:
            opts["clock_type"] = ct
            opts["priority1"] = "254"
            opts["tc_spanning_tree"] = "1"
    else:
        raise ValueError(f"unknown role {role!r}")
    opts.update(_COMMON)
    opts["network_transport"] = spec.transport
    opts["delay_mechanism"] = spec.delay_mechanism
    opts["time_stamping"] = "software"
    opts["uds_address"] = uds_address
    lines = ["# written by bench.scenarios_run (ANCHORS.md recipe); free_running 1: never adjusts a clock", "[global]"]
    lines += [f"{k}\t{v}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


class _LogTail:
    """Incrementally read a ptp4l log file; collect offsets with the host's receive time."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.pos = 0
        self.buf = ""
        self.offsets: list[tuple[float, int, int]] = []  # (host monotonic s, offset, delay)

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return
        self.buf += data.decode(errors="replace")
        *lines, self.buf = self.buf.split("\n")
        # the project's one ptp4l log parser; t_s is ptp4l's own CLOCK_MONOTONIC stamp (= time.monotonic())
        for sample in parse_offsets("\n".join(lines)):
            self.offsets.append((sample.t_s, sample.offset_ns, sample.path_delay_ns))

    def tail(self, n: int = 5) -> str:
        try:
            return "\n".join(self.path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""


def _live_rms(tails: list[_LogTail], last: int = 10) -> float | None:
    vals = [o for t in tails for (_, o, _) in t.offsets[-last:]]
    if not vals:
        return None
    return (sum(v * v for v in vals) / len(vals)) ** 0.5


def run_chain(
    spec: ChainSpec,
    duration_s: float,
    *,
    progress: Progress | None = None,
    converge_timeout_s: float | None = None,
    keep_dir: pathlib.Path | None = None,
    skip_s: float = 2.0,
    capture: bool = True,
) -> ChainResult:
    """Build, run and tear down one chain. Never raises for a failed part: ``result.error`` says why."""
    from topologies.netns import Lab

    result = ChainResult(spec=spec, duration_s=duration_s, skip_s=skip_s)
    t_start = time.monotonic()
    topo = spec.topology()
    # generous: the daemon compiles its dataplane with BCC at start (seconds on a busy VM) before a P2P
    # slave can see its first peer delay; the 2026-11-21 15:14 run lost P2P 1 hop to a 20 s bound
    converge_timeout_s = converge_timeout_s or 35.0 + 5.0 * spec.hops
    procs: dict[str, subprocess.Popen[Any]] = {}
    tails: dict[str, _LogTail] = {}
    try:
        lab = _lab_up(Lab, topo, result)
        with lab:
            workdir = lab.workdir
            result.commands.append(f"# lab {lab.run_id}: {spec.text()}  (topologies.catalog text form; namespaces {lab.ns('gm')} ...)")
            switch_handles = _start_switches(lab, spec, result, procs, tails)
            # grandmaster, then the slaves
            _start_ptp4l(lab, "gm", "gm", ["eth0"], spec, result, procs, tails)
            for sl in spec.slave_names:
                _start_ptp4l(lab, sl, "slave", ["eth0"], spec, result, procs, tails)
            slave_tails = [tails[s] for s in spec.slave_names]
            # converge: every slave reports an offset
            t0 = time.monotonic()
            while True:
                for t in tails.values():
                    t.poll()
                _check_alive(procs, tails)
                waiting = [s for s in spec.slave_names if not tails[s].offsets]
                if not waiting:
                    break
                el = time.monotonic() - t0
                if el > converge_timeout_s:
                    raise ChainError(
                        f"{', '.join(waiting)} reported no offset within {converge_timeout_s:.0f} s; last log lines:\n"
                        + "\n".join(f"[{w}] {tails[w].tail(4)}" for w in waiting)
                    )
                if progress:
                    progress("converging", el, converge_timeout_s, 0, None)
                time.sleep(0.5)
            first = {s: tails[s].offsets[0][0] for s in spec.slave_names}
            caps = _start_captures(lab, spec) if capture else None
            if caps is not None:
                result.commands.extend(caps.commands)
            t_measure = time.monotonic()
            for s in spec.slave_names:
                result.slaves.append(SlaveResult(s, spec.congested_hops(s), first_offset_after_s=first[s] - t0))
            # measure
            while True:
                el = time.monotonic() - t_measure
                for t in tails.values():
                    t.poll()
                _check_alive(procs, tails)
                if progress:
                    n = sum(len(t.offsets) for t in slave_tails)
                    progress("measuring", el, duration_s, n, _live_rms(slave_tails))
                if el >= duration_s:
                    break
                time.sleep(min(1.0, max(0.05, duration_s - el)))
            for sr in result.slaves:
                t_first = first[sr.name]
                sr.samples = [(round(t - t_first, 3), o, d) for (t, o, d) in tails[sr.name].offsets]
            if caps is not None:
                caps.stop()
                result.hops, result.reverse_hops, result.links = _analyse_captures(caps, spec)
            result.switches = _collect_switches(lab, spec, switch_handles, result.hops)
            for sr in result.slaves:
                if sr.samples and all(o == 0 and d == 0 for (_, o, d) in sr.samples):
                    raise ChainError(f"{sr.name} logged offset 0 and path delay 0 on every sample (no valid delay "
                                     "measurement, e.g. P2P without a peer delay): not a result")
            if keep_dir is not None:
                keep_dir.mkdir(parents=True, exist_ok=True)
                for f in workdir.glob("*"):
                    if f.is_file():
                        shutil.copy(f, keep_dir / f"{spec.impl}-{spec.hops}hop-{f.name}")
            _stop_switches(switch_handles)
    except ChainError as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a lab failure becomes the row's reason, never a traceback
        result.error = f"{exc.__class__.__name__}: {exc}"
    result.elapsed_s = time.monotonic() - t_start
    return result


def _lab_up(lab_cls: Any, topo: Any, result: ChainResult, attempts: int = 4) -> Any:
    """Build the lab; retry when the build fails transiently (a namespace that vanished while
    building, seen on this shared machine — reported to the lab builder's owner)."""
    last: Exception | None = None
    for i in range(attempts):
        lab = lab_cls(topo)
        try:
            lab.up()
            return lab
        except Exception as exc:  # noqa: BLE001 - retried, then reported
            last = exc
            result.commands.append(f"# lab build attempt {i + 1} failed: {exc.__class__.__name__}: {str(exc)[:160]}")
            time.sleep(1.0 + i)
    raise ChainError(f"lab build failed {attempts} times, last: {last.__class__.__name__}: {last}")


def _check_alive(procs: dict[str, subprocess.Popen[Any]], tails: dict[str, _LogTail]) -> None:
    for name, p in procs.items():
        rc = p.poll()
        if rc is not None:
            tail = tails[name].tail(6) if name in tails else ""
            last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
            raise ChainError(f"{name} exited with code {rc}: {last}\nlast log lines:\n{tail}")


def _start_ptp4l(lab: Any, node: str, role: str, ifaces: list[str], spec: ChainSpec, result: ChainResult,
                 procs: dict[str, subprocess.Popen[Any]], tails: dict[str, _LogTail]) -> None:
    cfg = lab.workdir / f"{node}.cfg"
    cfg.write_text(ptp4l_config(role, spec, lab.uds_path(node)))
    log = lab.workdir / f"{node}.log"
    argv = ["ptp4l", "-f", str(cfg), "-m", "-q"]
    for i in ifaces:
        argv += ["-i", i]
    if role == "slave":
        argv.append("-s")
    with open(log, "w") as out:
        procs[node] = lab.popen(node, argv, stdout=out, stderr=subprocess.STDOUT)
    tails[node] = _LogTail(log)
    result.commands.append(f"ip netns exec {lab.ns(node)} {shlex.join(argv)}   # {cfg.name}: {role}")


# -- the switch implementations -----------------------------------------------------------------
@dataclass
class _SwitchHandle:
    name: str
    dataplane: Any = None  # dataplane.loader.Dataplane when the eBPF TC is attached in-process
    note: str = ""
    lab: Any = None
    ports: list[str] = field(default_factory=list)
    daemon: bool = False


def _start_switches(lab: Any, spec: ChainSpec, result: ChainResult, procs: dict[str, subprocess.Popen[Any]],
                    tails: dict[str, _LogTail]) -> list[_SwitchHandle]:
    handles = []
    for sw in spec.switches:
        ports = list(lab.switch_ports(sw))
        if spec.impl is Impl.BRIDGE:
            handles.append(_SwitchHandle(sw, note="Linux bridge, no PTP awareness"))
        elif spec.impl in LINUXPTP_CLOCK_TYPE:
            _start_ptp4l(lab, sw, "switch", ports, spec, result, procs, tails)
            handles.append(_SwitchHandle(sw, note="ptp4l"))
        elif spec.impl in PTPS_CLOCK_TYPE:
            handles.append(_start_ptp_switch(lab, sw, ports, spec, result, procs, tails))
        else:  # pragma: no cover - Impl is closed
            raise ChainError(f"unknown implementation {spec.impl}")
    return handles


def _start_ptp_switch(lab: Any, sw: str, ports: list[str], spec: ChainSpec, result: ChainResult,
                      procs: dict[str, subprocess.Popen[Any]], tails: dict[str, _LogTail]) -> _SwitchHandle:
    """E2E TC: the eBPF dataplane alone (no control plane needed: residence is added in the kernel),
    attached from this process inside the switch's namespace. P2P TC and BC: the daemon."""
    if spec.impl is Impl.PTPS_E2E:
        try:
            from dataplane.loader import Dataplane
        except Exception as exc:  # noqa: BLE001 - reported as the row's reason
            raise ChainError(f"{spec.label}: the dataplane loader does not import ({exc})") from None
        try:
            dp = lab.in_node(sw, lambda: Dataplane(list(ports), mode="e2e", pin=False, ingress_hook=spec.ingress_hook).attach())
        except Exception as exc:  # noqa: BLE001
            raise ChainError(f"{spec.label}: dataplane attach in {sw} failed: {exc}") from None
        hooks = ", ".join(f"{p.ifname}:{p.ingress_hook}+tc" for p in dp.ports.values())
        result.commands.append(f"# {lab.ns(sw)}: dataplane.loader.Dataplane({list(ports)}, mode='e2e', pin=False, "
                               f"ingress_hook={spec.ingress_hook!r}).attach()  [{hooks}]")
        return _SwitchHandle(sw, dataplane=dp, note=f"eBPF TC ({hooks})", lab=lab)
    cfg = lab.workdir / f"{sw}.cfg"
    cfg.write_text(ptp4l_config("ptps", spec, lab.uds_path(sw)))
    log = lab.workdir / f"{sw}.log"
    exe = _ptp_switch_exe()
    argv = [exe, "run", "-f", str(cfg), "-m", "--clock-type", PTPS_CLOCK_TYPE[spec.impl]]
    for p in ports:
        argv += ["-i", p]
    with open(log, "w") as out:
        procs[sw] = lab.popen(sw, argv, stdout=out, stderr=subprocess.STDOUT)
    tails[sw] = _LogTail(log)
    result.commands.append(f"ip netns exec {lab.ns(sw)} {shlex.join(argv)}   # {cfg.name}: {PTPS_CLOCK_TYPE[spec.impl]}")
    return _SwitchHandle(sw, note=f"ptp-switch run --clock-type {PTPS_CLOCK_TYPE[spec.impl]}", lab=lab,
                         ports=list(ports), daemon=True)


def _ptp_switch_exe() -> str:
    import sys

    exe = pathlib.Path(sys.executable).with_name("ptp-switch")
    if not exe.exists():
        raise ChainError(f"{exe} not found: run `make setup` (the console script is installed into the venv)")
    return str(exe)


RX_ONLY_TAPS = True  # see bench.scenarios_capture.Captures: TX taps sit after a tc-egress stamp, not after ptp4l's


def _start_captures(lab: Any, spec: ChainSpec) -> Any:
    from bench.scenarios_capture import Captures

    path = ["gm", *spec.switches, spec.slave_names[0]]
    points = [("gm", lab.ifname("gm", path[1]))]
    for i, sw in enumerate(spec.switches, start=1):
        points.append((sw, lab.ifname(sw, path[i - 1])))
        points.append((sw, lab.ifname(sw, path[i + 1])))
    if RX_ONLY_TAPS:
        points.append((path[-1], lab.ifname(path[-1], path[-2])))
    caps = Captures(lab, points, rx_only=RX_ONLY_TAPS)
    time.sleep(1.0 if RX_ONLY_TAPS else 0.5)  # let the taps open their sockets
    return caps


def _analyse_captures(caps: Any, spec: ChainSpec) -> tuple[list[Any], list[Any], list[Any]]:
    """(Sync per hop GM -> first slave, Delay_Req per hop first slave -> GM, tap-to-tap link delays
    both ways; the last two only for E2E TCs)."""
    from bench.scenarios_capture import delay_req_residences, hop_residences, link_delays, slave_source

    path = ["gm", *spec.switches, spec.slave_names[0]]
    if caps.rx_only:
        return _analyse_rx_captures(caps, spec, path)
    gm_out = caps.read("gm", caps.points[0][1])
    points, reverse = [], []
    for i, sw in enumerate(spec.switches, start=1):
        up = caps.lab.ifname(sw, path[i - 1])
        down = caps.lab.ifname(sw, path[i + 1])
        seen_up, seen_down = caps.read(sw, up), caps.read(sw, down)
        points.append((sw, seen_up, seen_down))
        reverse.append((sw, seen_down, seen_up))
    fwd = hop_residences(points, gm_out, p2p=spec.delay_mechanism == "P2P")
    rev, links = [], []
    if spec.impl in (Impl.PTPS_E2E, Impl.LINUXPTP_E2E) and reverse:
        src = slave_source(reverse[-1][1])
        rev = delay_req_residences(reverse, source=src)
        near = [("gm", gm_out)] + [(sw, down) for (sw, _, down) in points]
        far = [up for (_, up, _) in points]
        links = link_delays([(f"{n}->{path[i + 1]}", seen, far[i]) for i, (n, seen) in enumerate(near[:-1])], src)
    return fwd, rev, links


def _analyse_rx_captures(caps: Any, spec: ChainSpec, path: list[str]) -> tuple[list[Any], list[Any], list[Any]]:
    """RX-only taps: a message "leaves" switch k when it arrives at the next node (the stack's RX stamp
    there, i.e. the wire on veth), so each hop's true time is its residence plus the link after its
    egress stamp — exactly what the slave inherits from that hop."""
    from bench.scenarios_capture import DELAY_RESP, delay_req_residences, hop_residences, slave_source

    lab = caps.lab
    from_up = {}    # node -> seen arriving from the GM side
    from_down = {}  # node -> seen arriving from the slave side
    from_down["gm"] = caps.read("gm", lab.ifname("gm", path[1]))
    for i, sw in enumerate(spec.switches, start=1):
        from_up[sw] = caps.read(sw, lab.ifname(sw, path[i - 1]))
        from_down[sw] = caps.read(sw, lab.ifname(sw, path[i + 1]))
    from_up[path[-1]] = caps.read(path[-1], lab.ifname(path[-1], path[-2]))
    points = [(sw, from_up[sw], from_up[path[i + 1]]) for i, sw in enumerate(spec.switches, start=1)]
    # P2P: the hop's true time counts the downstream link, its correction the upstream link (alike on veth)
    fwd = hop_residences(points, [], p2p=False)
    rev = []
    if spec.impl in (Impl.PTPS_E2E, Impl.LINUXPTP_E2E):
        src = slave_source(from_down[spec.switches[-1]])
        reverse = []
        for i, sw in enumerate(spec.switches, start=1):
            resp_at = [x for x in from_up[sw] if x.msg_type == DELAY_RESP]          # Delay_Resp entering sw
            resp_next = [x for x in from_up[path[i + 1]] if x.msg_type == DELAY_RESP]  # ... and leaving it
            reverse.append((sw, from_down[sw] + resp_next, from_down[path[i - 1]] + resp_at))
        rev = delay_req_residences(reverse, source=src)
    return fwd, rev, []


def _collect_switches(lab: Any, spec: ChainSpec, handles: list[_SwitchHandle], hops: list[Any]) -> list[SwitchResult]:
    by_name = {h.switch: h for h in hops}
    out = []
    for h in handles:
        r = SwitchResult(h.name, note=h.note)
        hop = by_name.get(h.name)
        if hop is not None and hop.true_residence_ns:
            r.mean_residence_ns = hop.mean_residence_ns()
        counters = _dataplane_counters(h)
        if counters is not None:
            r.corrected = sum(c.get("corrected", 0) for c in counters.values())
            r.forwarded_event = sum(c.get("tx", 0) for c in counters.values())
        out.append(r)
    return out


def _dataplane_counters(h: _SwitchHandle) -> dict[str, dict[str, int]] | None:
    """Per port: counter name -> total over message types (the dataplane's stats map)."""
    raw = None
    try:
        if h.dataplane is not None:
            raw = h.lab.in_node(h.name, h.dataplane.stats)
        elif h.daemon:
            from dataplane.loader import AttachedDataplane

            def find() -> Any:
                adp = AttachedDataplane.find(h.ports)
                try:
                    return adp.stats()
                finally:
                    adp.close()

            raw = h.lab.in_node(h.name, find)
    except Exception as exc:  # noqa: BLE001 - counters are optional in the report
        h.note += f"; counters unavailable ({exc.__class__.__name__}: {exc})"
        return None
    if raw is None:
        return None
    out: dict[str, dict[str, int]] = {}
    for port, per_type in raw.items():
        totals: dict[str, int] = {}
        for counters in per_type.values():
            if isinstance(counters, dict):
                for k, v in counters.items():
                    totals[k] = totals.get(k, 0) + int(v)
            else:  # already flat: counter -> value
                totals = {k: int(v) for k, v in per_type.items()}
                break
        out[port] = totals
    return out


def _stop_switches(handles: list[_SwitchHandle]) -> None:
    for h in handles:
        if h.dataplane is not None:
            with contextlib.suppress(Exception):
                h.lab.in_node(h.name, h.dataplane.detach)


def result_summary(r: ChainResult) -> dict[str, Any]:
    """A JSON-ready summary of a chain result (samples included, for plots and re-analysis)."""
    out: dict[str, Any] = {
        "impl": str(r.spec.impl), "label": r.label, "hops": r.spec.hops, "transport": r.spec.transport,
        "duration_s": r.duration_s, "skip_s": r.skip_s, "elapsed_s": round(r.elapsed_s, 1), "error": r.error,
        "topology": r.spec.text(), "commands": r.commands, "slaves": [], "switches": [dataclasses.asdict(s) for s in r.switches],
    }
    out["hops_residence"] = []
    out["hops_residence_delay_req"] = []
    for key, hops in (("hops_residence", r.hops), ("hops_residence_delay_req", r.reverse_hops)):
        for h in hops:
            est = h.error_stats()
            out[key].append({
                "switch": h.switch, "n": len(h.error_ns), "mean_true_residence_ns": h.mean_residence_ns(),
                "mean_added_ns": h.mean_added_ns(), "error": est.as_dict() if est else None,
            })
    out["links"] = []
    for ld in r.links:
        fs, rs = summarize(ld.forward_ns), summarize(ld.reverse_ns)
        out["links"].append({"link": ld.link, "forward": fs.as_dict() if fs else None, "reverse": rs.as_dict() if rs else None})
    for s in r.slaves:
        st = s.stats(r.skip_s)
        out["slaves"].append({
            "name": s.name, "congested_hops": s.congested_hops, "first_offset_after_s": s.first_offset_after_s,
            "stats": st.as_dict() if st else None, "mean_path_delay_ns": s.mean_path_delay_ns(r.skip_s),
            "samples": s.samples,
        })
    return out
