"""`make bench`: the benchmark suite, side by side with linuxptp, in one run on this machine.

    python -m bench.run [--quick] [--only 1,2,...] [--duration S] [--out DIR]

Sections (a section whose component is missing is reported "not measured: <reason>"):
  1. slave error vs hops (1, 2, 4) under congestion: plain bridge / ptp-switch E2E TC / P2P TC / BC /
     linuxptp E2E_TC / linuxptp BC (the ANCHORS.md recipe, reproduced in the same run)
  2. per-hop residence error p50/p99 (tcpdump around every switch of the section-1 runs)
  3. dataplane ns/packet and throughput overhead (``python -m bench.dataplane``)
  4. dual-grandmaster failover and ATR client failover
  5. unicast server capacity (``python -m bench.unicast_load``)
  6. control-plane CPU per port and per message rate
Writes ``<out>/<date>.json`` and ``<out>/<date>.md`` and (full runs) ``<out>/latest.md`` and
``<out>/latest-offsets.png``. ``--quick`` is a smoke run (1 hop, short windows; latest.md untouched).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
from typing import Any, Callable

from bench.report import MEASURED, NOT_MEASURED, PARTIAL, Column, Report, Section, Table, fmt_ns, summarize, write_report
from bench.report_machine import load_snapshot, machine_info
from bench.scenarios import LABELS, ChainSpec, Impl

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TITLES = {
    1: "Slave error vs hops under congestion",
    2: "Per-hop residence error (Sync and Delay_Req, capture-based)",
    3: "Dataplane cost: ns per packet and throughput overhead",
    4: "Failover: dual grandmaster, ATR client",
    5: "Unicast server capacity (clients at 1 Sync/s)",
    6: "Control-plane CPU per port and per message rate",
}
SECTION1_IMPLS = (Impl.BRIDGE, Impl.PTPS_E2E, Impl.PTPS_P2P, Impl.PTPS_BC, Impl.LINUXPTP_E2E, Impl.LINUXPTP_BC)


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick: bool = args.quick
        self.duration_s: float = args.duration or (12.0 if args.quick else 30.0)
        self.hops: tuple[int, ...] = getattr(args, "hops", None) or ((1,) if args.quick else (1, 2, 4))
        self.impls: tuple[Impl, ...] | None = getattr(args, "impls", None)
        self.subset = bool(self.impls or getattr(args, "hops", None))
        self.taps: str = getattr(args, "taps", "rx")  # a partial section 1: latest.md and the latest plot stay
        self.out: pathlib.Path = args.out
        self.chains: list[Any] = []  # section 1 results, reused by section 2 and the plot
        self.workdir = pathlib.Path(f"/tmp/ptp-switch-bench-{os.getpid()}")


def say(text: str) -> None:
    print(text, flush=True)


# -- section 1 ----------------------------------------------------------------------------------
def section_hops(ctx: Ctx) -> Section:
    from bench.scenarios_run import run_chain

    sec = Section(number=1, title=TITLES[1], columns=[
        Column("impl", "implementation"), Column("hops", "hops"), Column("n", "n"),
        Column("rms_ns", "offset rms", "ns"), Column("max_ns", "max |offset|", "ns"),
        Column("mean_ns", "offset mean", "ns"), Column("delay_ns", "mean path delay", "ns"),
        Column("first_s", "first offset after", "s"),
    ])
    impls = ctx.impls or (SECTION1_IMPLS if not ctx.quick else (Impl.BRIDGE, Impl.PTPS_E2E, Impl.LINUXPTP_E2E))
    total = len(impls) * len(ctx.hops)
    k = 0
    for hops in ctx.hops:
        for impl in impls:
            k += 1
            spec = ChainSpec(impl, hops=hops, slaves=1)
            t0 = time.monotonic()
            last = [0.0]

            def progress(phase: str, el: float, tot: float, n: int, rms: float | None, _k: int = k, _spec: ChainSpec = spec) -> None:
                if time.monotonic() - last[0] >= 5:
                    last[0] = time.monotonic()
                    r = f"{rms / 1000:.1f} us" if rms is not None else "-"
                    say(f"  [1: {_k}/{total}] {_spec.label}, {_spec.hops} hop(s): {phase} {el:.0f}/{tot:.0f} s, samples {n}, live rms {r}")

            import bench.scenarios_run as _sr

            _sr.RX_ONLY_TAPS = ctx.taps != "tcpdump"
            r = run_chain(spec, ctx.duration_s, progress=progress, keep_dir=ctx.workdir / "logs", capture=ctx.taps != "none")
            ctx.chains.append(r)
            row: dict[str, Any] = {"impl": spec.label, "hops": hops}
            if r.error:
                row["reason"] = r.error.splitlines()[0][:200]
                say(f"  [1: {k}/{total}] {spec.label}, {hops} hop(s): FAILED: {row['reason']}")
            else:
                s = r.slaves[0]
                st = s.stats(r.skip_s)
                if st is None:
                    row["reason"] = "no offset samples after the skip window"
                else:
                    row.update(n=st.n, rms_ns=round(st.rms_ns), max_ns=round(st.max_abs_ns), mean_ns=round(st.mean_ns),
                               delay_ns=round(s.mean_path_delay_ns(r.skip_s) or 0), first_s=round(s.first_offset_after_s or 0, 1))
                say(f"  [1: {k}/{total}] {spec.label}, {hops} hop(s): rms {row.get('rms_ns', '-')} ns in {time.monotonic() - t0:.0f} s")
            sec.rows.append(row)
            if k == 1:
                sec.commands.extend(r.commands[:1])
            if spec.impl in (Impl.LINUXPTP_E2E, Impl.PTPS_E2E, Impl.PTPS_P2P) and hops == ctx.hops[-1]:
                sec.commands.append(f"# {spec.label}, {hops} hop(s):")
                sec.commands.extend(c for c in r.commands if "tcpdump" not in c)
    from bench.scenarios_run import ptp4l_config

    for impl, role in ((Impl.LINUXPTP_E2E, "gm"), (Impl.LINUXPTP_E2E, "slave"), (Impl.LINUXPTP_E2E, "switch"),
                       (Impl.LINUXPTP_BC, "switch"), (Impl.PTPS_BC, "ptps")):
        sec.commands.append(f"# --- ptp4l config: {role}" + (f" ({LABELS[impl]})" if role in ("switch", "ptps") else "")
                            + " (P2P rows: delay_mechanism P2P everywhere)")
        sec.commands.extend(ptp4l_config(role, ChainSpec(impl, hops=1), "/var/run/ptp4l-<lab>-<node>").strip().splitlines())
    good = [r for r in sec.rows if "reason" not in r]
    sec.status = MEASURED if len(good) == len(sec.rows) else PARTIAL if good else NOT_MEASURED
    if good:
        sec.tables.append(hops_pivot(sec.rows, ctx.hops))
    if sec.status == NOT_MEASURED:
        sec.tables = []
        sec.reason = "every row failed: " + sec.rows[0]["reason"]
        sec.notes = [f"{r['impl']} {r['hops']} hop(s): {r['reason']}" for r in sec.rows]
        sec.rows = []
    sec.notes += [
        f"One run per row, {ctx.duration_s:.0f} s measuring window after the slave's first offset; the first "
        f"{2:.0f} s are discarded. ptp4l prints one offset per second with free_running 1 (ANCHORS.md section 2), so n ~ window.",
        "Congestion: HTB 20 mbit serializer + 1514-byte cross frames every 720 us on every hop leaving a switch toward "
        "the slave; inside the switch (brA -> ia [HTB] -> ib -> brB) for bridge-mode switches (plain bridge, ptp-switch TC), "
        "on the egress port for ptp4l and the ptp-switch daemon on bare ports (queue between their RX and TX stamps).",
        "All clocks are the same kernel clock and every ptp4l runs free_running 1: the slave's offset is its error. "
        "Treat differences below ~2x between single runs as noise on a shared 2-vCPU VM (ANCHORS.md).",
        {"rx": "Packet taps (for section 2) ran during every row: RX-only (--taps rx), never on a transmit path.",
         "tcpdump": "Packet taps (for section 2) ran during every row: tcpdump both ways (--taps tcpdump): its TX tap "
                    "adds latency after an eBPF TC's egress stamp and not after ptp4l's TX stamp.",
         "none": "No packet taps (--taps none): section 2 has no data."}[ctx.taps],
    ]
    return sec


def hops_pivot(rows: list[dict[str, Any]], hops: tuple[int, ...]) -> Table:
    """Section 1 at a glance: offset rms (max |offset|) per implementation and hop count."""
    t = Table("At a glance: slave offset rms (max |offset|) by congested hops",
              columns=[Column("impl", "implementation")] + [Column(f"h{h}", f"{h} hop{'s' if h > 1 else ''}") for h in hops])
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        cell = "failed" if "reason" in r else f"{fmt_ns(r['rms_ns'])} ({fmt_ns(r['max_ns'])})"
        by.setdefault(r["impl"], {"impl": r["impl"]})[f"h{r['hops']}"] = cell
    t.rows = list(by.values())
    return t


# -- section 2 ----------------------------------------------------------------------------------
def section_residence(ctx: Ctx) -> Section:
    sec = Section(number=2, title=TITLES[2], columns=[
        Column("impl", "implementation"), Column("hops", "hops in run"), Column("msg", "message (direction)"),
        Column("n", "matched"),
        Column("res_ns", "mean true residence", "ns"), Column("p50_ns", "|error| p50", "ns"),
        Column("p99_ns", "|error| p99", "ns"), Column("mean_ns", "error mean", "ns"),
    ])
    if not ctx.chains:
        return Section.not_measured(2, TITLES[2], "needs the section-1 runs (run with --only 1,2)")
    for r in ctx.chains:
        if r.error or not r.hops or r.spec.impl in (Impl.PTPS_BC, Impl.LINUXPTP_BC):
            continue
        for msg, hops in (("Sync (GM -> slave)", r.hops), ("Delay_Req (slave -> GM)", r.reverse_hops)):
            if not hops:
                continue
            errs = [e for h in hops for e in h.error_ns]
            res = [x for h in hops for x in h.true_residence_ns]
            st = summarize(errs)
            if st is None:
                sec.rows.append({"impl": r.label, "hops": r.spec.hops, "msg": msg,
                                 "reason": "no message matched on both sides of a switch"})
                continue
            sec.rows.append({"impl": r.label, "hops": r.spec.hops, "msg": msg, "n": st.n, "res_ns": round(sum(res) / len(res)),
                             "p50_ns": round(st.p50_abs_ns), "p99_ns": round(st.p99_abs_ns), "mean_ns": round(st.mean_ns)})
    if not sec.rows:
        return Section.not_measured(2, TITLES[2], "no section-1 run with captures succeeded")
    links = Table("Link delays seen by the taps, outside every switch's residence (E2E TCs): Sync GM -> slave "
                  "(forward) and the slave's Delay_Req (reverse), over the tapped links of the run", columns=[
                      Column("impl", "implementation"), Column("hops", "hops"), Column("links", "links"),
                      Column("fwd_ns", "forward, sum of link means", "ns"), Column("rev_ns", "reverse, sum of link means", "ns"),
                      Column("asym_ns", "(forward - reverse) / 2", "ns"), Column("fwd_p99_ns", "worst link p99 forward", "ns"),
                      Column("rev_p99_ns", "worst link p99 reverse", "ns")])
    for r in ctx.chains:
        if r.error or not getattr(r, "links", None):
            continue
        fs = [summarize(ld.forward_ns) for ld in r.links]
        rs = [summarize(ld.reverse_ns) for ld in r.links]
        if any(x is None for x in fs + rs):
            continue
        fwd, rev = sum(x.mean_ns for x in fs), sum(x.mean_ns for x in rs)
        links.rows.append({"impl": r.label, "hops": r.spec.hops, "links": len(r.links), "fwd_ns": round(fwd), "rev_ns": round(rev),
                           "asym_ns": round((fwd - rev) / 2), "fwd_p99_ns": round(max(x.p99_abs_ns for x in fs)),
                           "rev_p99_ns": round(max(x.p99_abs_ns for x in rs))})
    if links.rows:
        links.notes.append("The slave's own link is not tapped. A slave sees (forward - reverse) / 2 of the untapped, "
                           "uncorrected link time as offset error and its variation as noise.")
        sec.tables.append(links)
    sec.status = MEASURED if all("reason" not in r for r in sec.rows) else PARTIAL
    sec.notes = [
        "error = correction added by the switch (Sync + Follow_Up correctionField out - in) - true time, where the true "
        "time of switch k = the message's arrival at the NEXT node (the stack's RX stamp there: the wire, on veth) - its "
        "arrival at switch k. So each hop's error includes the time after its egress stamp until the next node "
        "receives the frame (the part a transparent clock cannot correct and the slave inherits); summed over the hops "
        "it is the slave's Sync error. P2P rows: the correction covers the upstream link, the true time the downstream "
        "link (alike on veth).",
        "A plain bridge adds nothing, so its error is minus its residence. Boundary clocks re-time (no forwarded Sync) and are not listed.",
        "Delay_Req rows (E2E TCs): the same per switch in the slave -> GM direction (a one-step TC puts the residence into the "
        "Delay_Req itself, ptp4l's two-step TC into the matching Delay_Resp: both are counted); this direction has no queue.",
        "Taps are RX-only (AF_PACKET with PACKET_IGNORE_OUTGOING, SO_TIMESTAMPNS: python -m bench.scenarios_capture rx "
        "IF FILE), on the GM, both ports of every switch and the slave, so the kernel never runs them on transmit. "
        "Until 2026-11-21 17:40 UTC the bench used tcpdump in both directions: a TX tap (clone, filter, copy, wake-up "
        "in dev_queue_xmit_nit) runs after the eBPF TC's tc-egress stamp but before ptp4l's software TX stamp "
        "(veth_xmit), so it added error to the eBPF TC's slave and not to ptp4l's (2026-11-21 17:15-17:40, 4 hops, "
        "3 runs each: eBPF TC slave rms median 12.4 us with tcpdump taps, 4.2 us with no taps).",
        "The RX stamp a tap records is the one the dataplane back-dates its ingress stamp to (within 40-170 ns, "
        "2026-11-21 17:15 run), so waiting before a switch's ingress stamp is not hidden either: it is in the hop before.",
    ]
    return sec


# -- sections delegated to other engineers' modules --------------------------------------------------
def _delegate(number: int, module: str, args: list[str], ctx: Ctx, to_rows: Callable[[dict[str, Any]], tuple[Any, ...]],
              timeout_s: float) -> Section:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        return Section.not_measured(number, TITLES[number], f"{module} is not in the tree yet ({path.relative_to(ROOT)})")
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    out = ctx.workdir / f"{module}.json"
    out_opt = OUT_OPTION.get(module, "--json")
    argv = [sys.executable, "-m", module, *args, out_opt, str(out)]
    cmd = shlex.join(["python", "-m", module, *args, out_opt, "OUT.json"])
    say(f"  [{number}] {cmd}")
    t0 = time.monotonic()
    try:
        res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Section.not_measured(number, TITLES[number], f"`{cmd}` did not finish within {timeout_s:.0f} s", commands=[cmd])
    if res.returncode != 0 or not out.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        return Section.not_measured(number, TITLES[number], f"`{cmd}` failed (exit {res.returncode}): {tail[0][:200]}", commands=[cmd])
    try:
        data = json.loads(out.read_text())
        cols, rows, notes, *more = to_rows(data)
        tables = more[0] if more else []
    except (ValueError, KeyError, TypeError) as exc:
        return Section.not_measured(number, TITLES[number], f"could not read {module}'s JSON ({exc.__class__.__name__}: {exc})", commands=[cmd])
    if not rows:
        return Section.not_measured(number, TITLES[number], f"{module} returned no rows", commands=[cmd])
    return Section(number=number, title=TITLES[number], status=MEASURED, columns=cols, rows=rows, commands=[cmd],
                   notes=notes, elapsed_s=time.monotonic() - t0, tables=tables)


def _generic_rows(data: dict[str, Any]) -> tuple[list[Column], list[dict[str, Any]], list[str]]:
    """A list of flat dicts under rows/results/steps becomes a table; other scalars become notes."""
    rows: list[dict[str, Any]] = []
    for key in ("rows", "results", "steps", "cases"):
        if isinstance(data.get(key), list) and data[key] and isinstance(data[key][0], dict):
            rows = [{k: v for k, v in r.items() if isinstance(v, (int, float, str)) or v is None} for r in data[key]]
            break
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    cols = [Column(k, k, "ns" if k.endswith("_ns") else "") for k in keys]
    notes = [f"{k}: {v}" for k, v in data.items() if isinstance(v, (int, float, str)) and k not in ("benchmark",)]
    return cols, rows, notes


OUT_OPTION = {"bench.dataplane": "--out", "bench.unicast_load": "--json"}


def section_dataplane(ctx: Ctx) -> Section:
    from bench.report_dataplane import dataplane_tables

    return _delegate(3, "bench.dataplane", ["--repeat", "20000", "--rounds", "2"] if ctx.quick else [], ctx, dataplane_tables, 1800)


def section_unicast(ctx: Ctx) -> Section:
    steps = "100,500" if ctx.quick else "500,1000,2000,5000,10000"
    window = "5" if ctx.quick else "10"
    return _delegate(5, "bench.unicast_load", ["--steps", steps, "--window", window], ctx, _generic_rows, 900)


def section_failover(ctx: Ctx) -> Section:
    from bench.scenarios_failover import run_failover

    trials = 1 if ctx.quick else 2
    res = run_failover(trials, log=say)
    sec = Section(number=4, title=TITLES[4], columns=[
        Column("scenario", "scenario"), Column("impl", "implementation"), Column("trial", "trial"),
        Column("switched_s", "kill -> switched to the other master", "s"),
        Column("downstream_s", "kill -> slave follows / client's first offset", "s"),
        Column("returned_s", "restart -> back to the better master", "s"), Column("note", "note"),
    ], commands=res.commands)
    for t in res.trials:
        sec.rows.append({"scenario": t.scenario, "impl": t.impl, "trial": t.trial, "switched_s": t.switched_s,
                         "downstream_s": t.downstream_s, "returned_s": t.returned_s, "note": t.note or "—"})
    if not sec.rows:
        return Section.not_measured(4, TITLES[4], "; ".join(res.errors) or "no trial ran", commands=res.commands)
    complete = all(r["switched_s"] is not None and r["downstream_s"] is not None for r in sec.rows)
    sec.status = MEASURED if complete and not res.errors else PARTIAL
    if res.errors:
        sec.reason = "; ".join(e[:300] for e in res.errors)
    sec.notes = [
        "dual-gm: `gm1@10 sw1 | gm2@20 sw1 | sw1 sl` (bare ports, UDPv4, section-1 configs: logAnnounceInterval 0, "
        "announceReceiptTimeout 3, free_running 1). gm1 is SIGKILLed; 'switched' = the BC's PARENT_DATA_SET shows "
        "grandmasterPriority1 20 (pmc over its UNIX socket, polled every 0.1 s); 'slave follows' = the ptp4l slave "
        "behind the BC logs `selected best master clock <gm2>`; then gm1 is restarted.",
        "atr: `srv1@10 sw1 | srv2@20 sw1 | sw1 r1 cl | r1 cl2` (tests/lab/test_atr.py's lab): ptp4l unicast servers "
        "(logSyncInterval 0, logAnnounceInterval 0); ptp-switch client on cl and ptp4l client on cl2 run at the same time "
        "with the same table (announceReceiptTimeout 3, unicast_req_duration 20). srv1 is SIGKILLed; 'switched' = the "
        "client selects srv2 (ptp-switch: `unicast active_server` log event; ptp4l: `selected best master clock`); "
        "'first offset' = its first offset line after that; 'back' = it selects srv1 again after srv1's restart.",
        "Floor for every row: a master is declared lost announceReceiptTimeout x announce interval = 3 s after its last "
        "Announce, i.e. 2-3 s after the kill (ptp4l adds a random part); pmc and log polling add up to ~0.3 s, so a slave "
        "can appear to follow a few tenths before its BC. Single trials on a shared 2-vCPU VM.",
    ]
    return sec


def section_cpu(ctx: Ctx) -> Section:
    from bench.scenarios_cpu import default_grid, run_cpu

    window_s = 5.0 if ctx.quick else 10.0
    res = run_cpu(default_grid(ctx.quick), window_s, log=say)
    sec = Section(number=6, title=TITLES[6], columns=[
        Column("impl", "implementation"), Column("role", "clock"), Column("lsi", "logSyncInterval"),
        Column("sync_rate", "Sync/s per port"), Column("pps", "PTP packets/s (its ports, rx+tx)"),
        Column("cpu", "CPU (of one core)", "%"), Column("cpu_port", "CPU per port", "%"),
        Column("us_pkt", "CPU µs per packet"), Column("window", "window", "s"),
    ], commands=res.commands)
    for r in res.rows:
        row: dict[str, Any] = {"impl": r.impl, "role": r.role, "lsi": r.log_sync_interval,
                               "sync_rate": 2.0 ** -r.log_sync_interval}
        if r.error:
            row["reason"] = r.error
        else:
            row.update(pps=round(r.packets_per_s or 0), cpu=round(r.cpu_pct or 0, 2), cpu_port=round(r.cpu_pct_per_port or 0, 2),
                       us_pkt=round(r.us_per_packet) if r.us_per_packet is not None else None, window=r.window_s)
        sec.rows.append(row)
    good = [r for r in sec.rows if "reason" not in r]
    if not good:
        return Section.not_measured(6, TITLES[6], "every run failed: " + sec.rows[0]["reason"] if sec.rows else "no run",
                                    commands=res.commands)
    sec.status = MEASURED if len(good) == len(sec.rows) else PARTIAL
    sec.notes = [
        "OC = `gm sl`, the clock under test is the slave-only OC on sl; BC with N ports = `gm sw1 sl1 | sw1 sl2 | ...` "
        "(one upstream port, N-1 downstream ports each with a free-running ptp4l slave sending Delay_Req at the same rate). "
        "Bare ports, UDPv4, E2E, software timestamps; logSyncInterval = logMinDelayReqInterval = L on every node, "
        "logAnnounceInterval 0, free_running 1. ptp-switch and linuxptp read the same configuration file.",
        f"CPU = utime + stime of the clock's process (/proc/<pid>/stat, {os.sysconf('SC_CLK_TCK')} ticks/s) over a "
        f"{window_s:.0f} s window that starts 2 s after every slave reported offsets; packets = rx + tx on its ports over "
        "the same window. One window per row on a shared 2-vCPU VM (other engineers' labs may run): treat ±0.3 % as noise.",
        "linuxptp runs at every port count at the highest rate (logSyncInterval -5) for comparison.",
    ]
    return sec


SECTIONS: dict[int, Callable[[Ctx], Section]] = {
    1: section_hops, 2: section_residence, 3: section_dataplane, 4: section_failover, 5: section_unicast, 6: section_cpu,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make bench  (python -m bench.run)", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (1 hop, 12 s windows, few rows)")
    p.add_argument("--only", default="", metavar="N,M", help="run only these sections (1..6)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="measuring window per section-1 row")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS, metavar="DIR", help="report directory (default bench/results)")
    p.add_argument("--taps", choices=("rx", "tcpdump", "none"), default="rx",
                   help="section-1 packet taps for section 2: rx = RX-only (default), tcpdump = both directions "
                        "(the old way; its TX tap sits after a tc-egress stamp), none = no taps (no section 2)")
    p.add_argument("--hops", default="", metavar="N,M", help="section 1: only these hop counts (1..8; default 1,2,4)")
    p.add_argument("--impls", default="", metavar="A,B",
                   help=f"section 1: only these implementations ({','.join(i.value for i in SECTION1_IMPLS)})")
    args = p.parse_args(argv)
    try:
        args.hops = tuple(sorted({int(x) for x in args.hops.split(",") if x.strip()})) or None
    except ValueError:
        p.error(f"--hops {args.hops!r}: comma-separated hop counts 1..8")
    if args.hops and not all(1 <= h <= 8 for h in args.hops):
        p.error("--hops: hop counts are 1..8")
    try:
        args.impls = tuple(Impl(x.strip()) for x in args.impls.split(",") if x.strip()) or None
    except ValueError:
        p.error(f"--impls {args.impls!r}: choose from {', '.join(i.value for i in SECTION1_IMPLS)}")
    try:
        args.sections = sorted({int(x) for x in args.only.split(",") if x.strip()}) or sorted(SECTIONS)
    except ValueError:
        p.error(f"--only {args.only!r}: comma-separated section numbers 1..6")
    bad = [n for n in args.sections if n not in SECTIONS]
    if bad:
        p.error(f"--only: no section {bad}; sections are 1..6")
    if args.duration is not None and not 5 <= args.duration <= 600:
        p.error("--duration must be within 5..600 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: error: needs root (network namespaces, BPF); run `sudo make bench`", file=sys.stderr)
        return 2
    ctx = Ctx(args)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    cmd = "make bench" + (f" BENCH_ARGS='{' '.join(argv if argv is not None else sys.argv[1:])}'" if (argv if argv is not None else sys.argv[1:]) else "")
    report = Report(started_utc=started, command=f"{cmd}   (= .venv/bin/python -m bench.run ...)", machine=machine_info(),
                    sections=[], quick=ctx.quick)
    report.load.update(load_snapshot("before"))
    say(f"bench: sections {args.sections}, {'quick' if ctx.quick else 'full'} run, window {ctx.duration_s:.0f} s; "
        f"load {report.load['load average before']}")
    t_all = time.monotonic()
    for n in sorted(SECTIONS):
        if n not in args.sections:
            report.sections.append(Section.not_measured(n, TITLES[n], "not selected (--only)"))
            continue
        say(f"bench: section {n}: {TITLES[n]}")
        t0 = time.monotonic()
        try:
            sec = SECTIONS[n](ctx)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            sec = Section.not_measured(n, TITLES[n], f"bench error: {exc.__class__.__name__}: {exc}")
        sec.elapsed_s = sec.elapsed_s or time.monotonic() - t0
        say(f"bench: section {n}: {sec.status}{': ' + sec.reason if sec.status == NOT_MEASURED else ''} ({sec.elapsed_s:.0f} s)")
        report.sections.append(sec)
    report.load.update(load_snapshot("after"))
    report.finished_utc = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report.notes.append(f"total run time {time.monotonic() - t_all:.0f} s. Other engineers' labs may have run at the same "
                        "time (the load lines above): figures are single runs on a shared 2-vCPU VM.")
    if ctx.chains:
        _plot(ctx, report)
    paths = write_report(report, ctx.out, update_latest=not ctx.quick and not ctx.subset)
    (ctx.out / f"{report.stem}-samples.json").write_text(json.dumps(
        [_chain_json(r) for r in ctx.chains], default=str) + "\n")
    for p in paths:
        say(f"bench: wrote {p}")
    return 0


def _chain_json(r: Any) -> dict[str, Any]:
    from bench.scenarios_run import result_summary

    return result_summary(r)


def _plot(ctx: Ctx, report: Report) -> None:
    from bench.report_plot import plot_offsets

    hops = max(r.spec.hops for r in ctx.chains)
    series = {}
    for r in ctx.chains:
        if r.spec.hops == hops and not r.error and r.slaves:
            series[f"{r.label}"] = [(t, o) for (t, o, _) in r.slaves[0].samples]
    if not series:
        return
    name = f"{report.stem}-offsets.png"
    plot_offsets(series, ctx.out / name, title=f"slave error through {hops} congested hop(s), {report.started_utc}")
    if not ctx.quick and not ctx.subset:
        plot_offsets(series, ctx.out / "latest-offsets.png", title=f"slave error through {hops} congested hop(s), {report.started_utc}")
    report.notes.append(f"plot: {name} (|offset| over time, log scale, {hops} hop(s))")


if __name__ == "__main__":
    sys.exit(main())
