"""Print what the simulator measures: ``.venv/bin/python tests/sim/report.py [--seed N]``.

(Lives under tests/ because it reads the wall clock, which controlplane/core must not import.)

Scenarios (true time error against the grandmaster, the oracle the protocol never sees):
servo settling from 1 ms / 100 ppm; one simulated hour (wall time); four boundary clocks at
+-50 ppm; a slave behind four E2E / P2P transparent clocks and behind four plain bridges; a ten-clock
segment's election and re-election after the grandmaster dies.
"""

from __future__ import annotations

import argparse
import random
import time

from controlplane.core import bmca
from controlplane.core.config import parse
from controlplane.core.sim.engine import Simulator, Wire
from controlplane.core.sim.network import Network
from controlplane.core.sim.topology import SimOptions, build

S = 1_000_000_000
FAST = {"logSyncInterval": "-3", "logAnnounceInterval": "0", "logMinDelayReqInterval": "-3", "logMinPdelayReqInterval": "-3"}


def _worst(sim: Simulator, net: Network, names: list[str], start_s: float, stop_s: float) -> int:
    worst, t = 0, int(start_s * S)
    while t <= stop_s * S:
        sim.run_until(t)
        worst = max([worst] + [abs(net.true_offset_ns(n, "gm")) for n in names])
        t += S // 20
    return worst


def servo(seed: int) -> str:
    sim = Simulator(seed)
    net = Network(sim)
    net.add_clock("gm", parse({"global": {**FAST, "priority1": "10"}}))
    net.add_clock("sl", parse({"global": {**FAST, "slaveOnly": "1"}}), freq_ppb=100_000, initial_offset_ns=1_000_000, timestamp_noise_ns=20)
    net.connect([("gm", 1), ("sl", 1)], Wire(20_000, 0, 100))
    net.start()
    settled, t = None, 0
    while t < 40 * S:
        t += S // 100
        sim.run_until(t)
        ok = abs(net.true_offset_ns("sl", "gm")) < 1_000
        settled = (settled or t / S) if ok else None
    return f"servo 1 ms / +100 ppm, 8 Sync/s: |error| < 1 us from t = {settled} s after power-on (incl. ~4 s BMCA)"


def hour(seed: int) -> str:
    sim = Simulator(seed)
    net = Network(sim)
    net.add_clock("gm", parse({"global": {**FAST, "priority1": "10"}}))
    net.add_clock("sl", parse({"global": {**FAST, "slaveOnly": "1"}}), freq_ppb=50_000, initial_offset_ns=1_000_000, timestamp_noise_ns=20)
    net.connect([("gm", 1), ("sl", 1)], Wire(20_000, 0, 200))
    net.start()
    t0 = time.perf_counter()
    sim.run_until(3600 * S)
    wall = time.perf_counter() - t0
    return f"one simulated hour, GM + slave at 8 Sync/s: {wall:.2f} s wall, {sim.events_run} events, {net.frames} frames"


def chain(seed: int, kind: str) -> str:
    from topologies import catalog

    topo = catalog.get("gm sw1 sw2 sw3 sw4 sl", mode="bare" if kind == "bc" else "bridge")
    opts = SimOptions(switch_as=kind, options=FAST, max_freq_ppm=50 if kind == "bc" else 100, wander_ppb_per_sqrt_s=2.0,
                      link_delay_ns=2_000, link_jitter_ns=100, timestamp_noise_ns=20)
    sim = Simulator(seed)
    net = build(topo, sim, opts)
    if kind == "bc":
        for i, n in enumerate(net.clocks()):
            n.osc.freq_ppb = 50_000.0 * (1 if i % 2 else -1)
    net.start()
    sim.run_until(60 * S)
    names = [n.name for n in net.clocks() if n.name != "gm"]
    worst = _worst(sim, net, names, 60, 90)
    label = {"bc": "4 boundary clocks (+-50 ppm)", "e2e_tc": "4 E2E TCs", "p2p_tc": "4 P2P TCs", "bridge": "4 plain bridges"}[kind]
    extra = "" if kind == "bc" else ", residence 5 us + exp(45 us)"
    return f"chain of {label}{extra}: max |time error| of {', '.join(names)} 60..90 s = {worst} ns"


def election(seed: int) -> str:
    rng = random.Random(seed)
    sim = Simulator(seed)
    net = Network(sim)
    d0s = []
    for i in range(10):
        cfg = parse({"global": {**FAST, "logSyncInterval": "-2", "priority1": str(rng.choice([100, 128, 128])),
                                "priority2": str(rng.choice([127, 128]))}})
        node = net.add_clock(f"c{i}", cfg, freq_ppb=rng.uniform(-1e5, 1e5), clock_identity=bytes([2, 0, 0, 0xFF, 0xFE, 0, rng.randrange(256), i]))
        dd = node.clock.default_ds
        d0s.append(bmca.dataset_of_default(dd.clock_identity, dd.clock_quality, dd.priority1, dd.priority2))
    net.connect([(f"c{i}", 1) for i in range(10)], Wire(2_000, 0, 100))
    net.start()
    best = bmca.best(d0s)
    second = bmca.best([d for d in d0s if d is not best])
    assert best is not None and second is not None
    sim.run_until(15 * S)
    ok = all(n.clock.parent_ds.grandmaster_identity == best.grandmaster_identity for n in net.clocks())
    gm = next(n for n in net.clocks() if n.clock.clock_identity == best.grandmaster_identity)
    gm.kill()
    t_kill = t = sim.now_ns
    while t - t_kill < 20 * S:
        t += S // 20
        sim.run_until(t)
        if all(n.clock.parent_ds.grandmaster_identity == second.grandmaster_identity for n in net.clocks() if n.alive):
            break
    return (f"ten clocks on one segment: elected the BMCA's best: {ok}; after killing it, all agreed on the next best "
            f"{(t - t_kill) / S:.2f} s later")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests/sim/report.py", description=__doc__)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    for fn in (lambda: servo(args.seed), lambda: hour(args.seed), lambda: chain(args.seed, "bc"),
               lambda: chain(args.seed, "e2e_tc"), lambda: chain(args.seed, "p2p_tc"), lambda: chain(args.seed, "bridge"),
               lambda: election(args.seed)):
        print(fn(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
