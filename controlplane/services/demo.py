"""`make demo`: a ptp4l grandmaster, N congested switch hops, two free-running ptp4l slaves — through
plain Linux bridges, through ptp-switch as a transparent clock (eBPF TC on the same bridges, or the
daemon as P2P TC) and through ptp-switch as a boundary clock — with a live progress line, a results
table and a PNG of the slaves' offset (plain bridge vs ptp-switch TC vs ptp-switch BC).

    python -m controlplane.services.demo [--duration S] [--hops N | --topology line-N]
                                         [--mode e2e|p2p|bc] [--no-bc] [--with linuxptp] [--out DIR]

Every ptp4l runs ``free_running 1`` and all namespaces share one kernel clock, so a slave's
reported offset is its measurement error. Labs are network namespaces named ``pts<runid>-*`` and
are always removed (also on Ctrl-C). Exit status: 0 when every variant ran, 1 when one failed
(the reason is printed), 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import time
from typing import Any

from bench.report import fmt_ns
from bench.scenarios import DEMO_MODES, LABELS, ChainSpec, Impl
from topologies.model import TopologyError

DEFAULT_OUT = pathlib.Path("/tmp/ptp-switch-demo")


class DemoError(Exception):
    """A user-facing demo error (bad option, missing privilege)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make demo  (python -m controlplane.services.demo)",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=15.0, metavar="S",
                   help="measuring seconds per variant, after every slave's first offset (default 15)")
    p.add_argument("--hops", type=int, default=None, metavar="N", help="switches between GM and slaves (default 3)")
    p.add_argument("--topology", default=None, metavar="line-N", help="the chain as a catalog name (line-N)")
    p.add_argument("--mode", choices=sorted(DEMO_MODES), default="e2e",
                   help="ptp-switch as E2E TC (eBPF dataplane), P2P TC or BC (daemon) (default e2e)")
    p.add_argument("--with", dest="extra", action="append", default=[], choices=["linuxptp", "bc"],
                   help="add a variant: linuxptp (ptp4l as the same kind of clock) or bc (ptp-switch BC)")
    p.add_argument("--no-bridge", action="store_true", help="skip the plain-bridge contrast")
    p.add_argument("--no-bc", action="store_true", help="skip the ptp-switch BC variant (shown by default)")
    p.add_argument("--slaves", type=int, default=2, help="slaves on the last switch (default 2)")
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"where the PNG, JSON and logs go (default {DEFAULT_OUT})")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = p.parse_args(argv)
    if args.duration < 5 or args.duration > 3600:
        p.error("--duration must be within 5..3600 s")
    hops = args.hops
    if args.topology is not None:
        m = re.fullmatch(r"line-(\d+)", args.topology.strip())
        if not m:
            p.error(f"--topology {args.topology!r}: the demo runs chains; use line-N (N switches)")
        if hops is not None and hops != int(m.group(1)):
            p.error("--topology and --hops disagree")
        hops = int(m.group(1))
    args.hops = 3 if hops is None else hops
    return args


def variants(args: argparse.Namespace) -> list[ChainSpec]:
    impls: list[Impl] = []
    if not args.no_bridge:
        impls.append(Impl.BRIDGE)
    impls.append(DEMO_MODES[args.mode])
    if ("bc" in args.extra or not args.no_bc) and Impl.PTPS_BC not in impls:
        impls.append(Impl.PTPS_BC)
    if "linuxptp" in args.extra:
        impls.append({"e2e": Impl.LINUXPTP_E2E, "p2p": Impl.LINUXPTP_P2P, "bc": Impl.LINUXPTP_BC}[args.mode])
    try:
        return [ChainSpec(i, hops=args.hops, slaves=args.slaves) for i in impls]
    except TopologyError as exc:
        raise DemoError(str(exc)) from None


class ProgressLine:
    """One self-overwriting status line on a terminal; plain lines every 10 s otherwise."""

    def __init__(self, stream: Any = sys.stdout) -> None:
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_plain = 0.0
        self.prefix = ""

    def __call__(self, phase: str, elapsed_s: float, total_s: float, samples: int, rms_ns: float | None) -> None:
        rms = fmt_ns(rms_ns) if rms_ns is not None else "—"
        text = f"{self.prefix} {phase:<10} {elapsed_s:5.1f}/{total_s:.0f} s  samples {samples:4d}  live rms {rms:>9}"
        if self.tty:
            self.stream.write("\r" + text.ljust(100)[:118])
            self.stream.flush()
        elif time.monotonic() - self.last_plain >= 10 or elapsed_s >= total_s:
            self.last_plain = time.monotonic()
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 118 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()


def table(results: list[Any]) -> str:
    lines = []
    hdr = f"{'variant':<20} {'slave':<5} {'queues':>6} {'n':>4} {'offset rms':>11} {'max |offset|':>13} {'mean':>10} {'path delay':>11} {'1st offset':>10}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in results:
        if r.error:
            lines.append(f"{r.label:<20} FAILED: {r.error.splitlines()[0][:90]}")
            continue
        for s in r.slaves:
            st = s.stats(r.skip_s)
            if st is None:
                lines.append(f"{r.label:<20} {s.name:<5} {s.congested_hops:>6}    0   (no samples)")
                continue
            first = f"{s.first_offset_after_s:.1f} s" if s.first_offset_after_s is not None else "—"
            lines.append(f"{r.label:<20} {s.name:<5} {s.congested_hops:>6} {st.n:>4} {fmt_ns(st.rms_ns):>11} "
                         f"{fmt_ns(st.max_abs_ns):>13} {fmt_ns(st.mean_ns):>10} {fmt_ns(s.mean_path_delay_ns(r.skip_s)):>11} {first:>10}")
    lines.append("")
    hdr2 = (f"{'variant':<20} {'switch':<6} {'corrected (dataplane)':>22} {'mean residence (capture)':>25} "
            f"{'Sync error p50/p99':>22} {'Delay_Req error p50/p99':>24}  note")
    lines.append(hdr2)
    lines.append("-" * len(hdr2))
    for r in results:
        if r.error:
            continue
        hops = {h.switch: h for h in r.hops}
        rev = {h.switch: h for h in getattr(r, "reverse_hops", [])}
        tc = r.spec.impl not in (Impl.BRIDGE, Impl.PTPS_BC, Impl.LINUXPTP_BC)

        def err(h: Any) -> str:
            est = h.error_stats() if h is not None and tc else None
            return f"{fmt_ns(est.p50_abs_ns)} / {fmt_ns(est.p99_abs_ns)}" if est else "—"

        for sw in r.switches:
            corr = str(sw.corrected) if sw.corrected is not None else "—"
            res = fmt_ns(sw.mean_residence_ns) if sw.mean_residence_ns is not None else "—"
            lines.append(f"{r.label:<20} {sw.name:<6} {corr:>22} {res:>25} {err(hops.get(sw.name)):>22} "
                         f"{err(rev.get(sw.name)):>24}  {sw.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        specs = variants(args)
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("demo: error: needs root (network namespaces, BPF); run `sudo make demo`", file=sys.stderr)
        return 2
    from bench.scenarios_run import result_summary, run_chain

    out: pathlib.Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"ptp-switch demo: ptp4l GM -> {args.hops} switch hop(s) with congestion -> {args.slaves} ptp4l slave(s), "
          f"{args.duration:.0f} s per variant; every ptp4l runs free_running 1, so offset = error.")
    print("variants: " + ", ".join(s.label for s in specs))
    print(f"topology: {specs[0].text()}   ('>i' = queue inside the switch, '>q' = on its egress port)")
    results = []
    progress = ProgressLine()
    try:
        for i, spec in enumerate(specs, start=1):
            progress.prefix = f"[{i}/{len(specs)} {spec.label}]"
            t0 = time.monotonic()
            r = run_chain(spec, args.duration, progress=progress, keep_dir=out / "logs")
            results.append(r)
            if r.error:
                progress.done(f"{progress.prefix} FAILED after {time.monotonic() - t0:.0f} s: {r.error}")
            else:
                rms = [s.stats(r.skip_s) for s in r.slaves]
                progress.done(f"{progress.prefix} done in {time.monotonic() - t0:.0f} s: "
                              + ", ".join(f"{s.name} rms {fmt_ns(st.rms_ns) if st else '—'}" for s, st in zip(r.slaves, rms)))
    except KeyboardInterrupt:
        print("\ndemo: interrupted; the lab was removed", file=sys.stderr)
        return 130
    print()
    print(table(results))
    (out / "demo.json").write_text(json.dumps([result_summary(r) for r in results], indent=1, default=str) + "\n")
    if not args.no_plot:
        from bench.report_plot import plot_offsets

        series = {}
        for r in results:
            if r.error or not r.slaves:
                continue
            s = r.slaves[0]
            series[f"{r.label}: {s.name}, {s.congested_hops} queue(s)"] = [(t, o) for (t, o, _) in s.samples]
        if series:
            png = plot_offsets(series, out / "demo-offsets.png",
                               title=f"slave error through {args.hops} congested hops (software timestamps, free-running ptp4l slave)")
            print(f"\nplot: {png}")
    print(f"data: {out / 'demo.json'}; logs: {out / 'logs'}")
    failed = [r for r in results if r.error]
    if failed:
        for r in failed:
            print(f"demo: {r.label} failed: {r.error.splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
