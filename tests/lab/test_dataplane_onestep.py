"""The in-kernel E2E TC with a ONE-STEP grandmaster: the Sync's residence is added to the Sync itself,
in place, at the switch's egress port (no Follow_Up exists to carry it).

The GM and the run are topologies.onestep's (shared with bench/dataplane.py): a ptp-switch daemon with
``twoStepFlag 0``, ``free_running 1`` and ``one_step_dataplane 1`` (its port's tc egress adds the time
from its clock read to there, and its one-step sends take no kernel TX stamp), one Sync a second, and a
free-running ptp4l slave (every namespace shares one kernel clock, so its reported offset is its error).

Same lab as tests/lab/test_dataplane_lab.py (its topology and CLI helper imported): ``gm sw1 >i sl``,
variable residence of hundreds of us INSIDE sw1 in the GM -> slave direction, and a congested egress
port toward the slave that event messages bypass.

The baseline is measured AT THE SAME TIME as each switched run, by a second one-step GM daemon of
the same build over one veth to its own free-running ptp4l slave (a two-node lab next to it), so both
see the same machine load. UDPv4: plain bridges || direct, then eBPF TC || direct; UDPv6 and L2:
eBPF TC || direct.

What is asserted, for the eBPF TC run against the direct run beside it:
- core rms (the rms of the offsets after the warm-up without the largest 5 % of |offset|, 1-2 of ~30)
  <= max(2 x direct core rms, direct core rms + 5 us);
- plain rms <= max(2 x direct rms, 15 us);
- each GM's stop line: every one-step send was recorded for its egress stamp;
- tshark on the egress port: one-step Syncs only, each with the residence written into it.
Why the floors. Everything between a software stamp and the peer's RX stamp is uncorrected delay, and
on this VM, at one PTP frame now and then, that code runs with cold caches: measured with tracepoints
(2026-11-21 22:10-22:40), 2-3 us from the switch's egress clock read (tc egress, the last hook that may
write the frame) to the next node's RX stamp, in both directions alike, 1-2 us apart from Sync to Sync.
Through the switch a Sync and a Delay_Req each cross two such stretches instead of one: the switched
sd is ~1-1.5 us where direct's is 0.3-0.6 us, so 2x of direct is met in some runs, not reliably (runs at
22:40-22:45: core 1.98x, 2.2-3.6x, 7.8-10.4x with 19-30 us stalls). The mean offset through the switch is
+0.4..+1.6 us (direct -0.1..+0.7 us). Rare isolated +15..+40 us samples are frames that stall between
tc egress and veth_xmit (README, Dataplane). 15 us keeps the plain bound 20x below the plain bridges
(300-500 us) and still fails a TC that misses even a tenth of the residence on every Sync.
Figures are printed (pytest -s) and written to /tmp/ptp-switch-onestep.json, including the number of
samples over 10 us in each run.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import pathlib
import shutil
import subprocess
import time
from typing import Any, Callable

import pytest

from topologies import catalog, onestep, shaping
from topologies.model import Shaping
from topologies.netns import Lab
from topologies.onestep import OneStepRun
from tests.lab.test_dataplane_lab import TOPOLOGY, cli

pytest.importorskip("bcc", reason="the eBPF dataplane needs BCC")
if shutil.which("ptp4l") is None or shutil.which("tshark") is None:  # pragma: no cover - setup installs them
    pytest.skip("linuxptp or tshark not installed; run make setup", allow_module_level=True)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# ptp4l 3.1.1 free-running logs one offset a second (ANCHORS.md §2): ~30 samples after the warm-up.
RUN_S = 40
WARMUP_S = 4
FLOOR_NS = 5_000  # core rms: added to direct's (see the module docstring)
RMS_FLOOR_NS = 15_000  # plain rms: rare post-stamp stalls (see the module docstring)
CAPTURE_S = 15  # tshark on sw1's egress port after the warm-up: ~15 Syncs
RESULTS = pathlib.Path("/tmp/ptp-switch-onestep.json")
LOG_DIR = pathlib.Path("/tmp/ptp-switch-test-dataplane-onestep")  # last run's logs and captures


def _keep(lab: Lab, tag: str, *paths: pathlib.Path) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for p in [*lab.workdir.glob("ptp4l-*.log"), *lab.workdir.glob("*.log"), *paths]:
        if p.exists():
            shutil.copy(p, LOG_DIR / f"{tag}-{p.name}")


def measure_one_step(lab: Lab, transport: str, tag: str, *, capture_on: str | None = None) -> OneStepRun:
    """topologies.onestep.run for RUN_S, its logs and capture kept in LOG_DIR."""
    try:
        return onestep.run(lab, transport, tag, duration_s=RUN_S, warmup_s=WARMUP_S, capture_on=capture_on,
                           capture_s=CAPTURE_S)
    finally:
        _keep(lab, tag, *lab.workdir.glob("*.pcapng"))


def _sync_fields(path: pathlib.Path) -> tuple[list[tuple[bool, int]], int]:
    """[(twoStepFlag, correctionField ns)] of the captured Syncs, and the number of Follow_Ups."""
    def fields(display_filter: str, *names: str) -> list[list[str]]:
        argv = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "separator=|"]
        for n in names:
            argv += ["-e", n]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return [line.split("|") for line in res.stdout.splitlines() if line.strip()]

    syncs = [(r[0] in ("1", "True"), int(r[1])) for r in fields("ptp.v2.messagetype == 0", "ptp.v2.flags.twostep", "ptp.v2.correction.ns")]
    follow_ups = len(fields("ptp.v2.messagetype == 8", "frame.number"))
    return syncs, follow_ups


@pytest.fixture(scope="module")
def results() -> Any:
    out: dict[str, Any] = {"command": "make setup && .venv/bin/python -m pytest -s -m 'lab' tests/lab/test_dataplane_onestep.py",
                           "run_s": RUN_S, "warmup_s": WARMUP_S, "floor_ns": FLOOR_NS}
    yield out
    out["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"\nwritten {RESULTS}")


def congested_lab(make_lab: Callable[..., Lab]) -> Lab:
    """test_dataplane_lab's congested switch, with the egress pacer running until the lab is removed
    (the UDPv4 test runs two measurements in it)."""
    lab = make_lab(catalog.parse(TOPOLOGY, name="os-lab"))
    port = lab.ifname("sw1", "sl")
    shaping.install_htb(lab, "sw1", port, Shaping())
    shaping.start_pacer(lab, "sw1", port, Shaping())
    return lab


def summary(run: OneStepRun) -> dict[str, Any]:
    return {k: v for k, v in run.row().items() if k not in ("gm_one_step_sends", "gm_dataplane_stamped")}


def side_by_side(switched: Lab, direct: Lab, transport: str, tag: str, *,
                 capture_on: str | None = None) -> tuple[OneStepRun, OneStepRun]:
    """The switched lab's measurement and the direct baseline, run at the same time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        f_sw = pool.submit(measure_one_step, switched, transport, f"{tag}-{transport}", capture_on=capture_on)
        f_direct = pool.submit(measure_one_step, direct, transport, f"direct-{tag}-{transport}")
        return f_sw.result(), f_direct.result()


@pytest.mark.parametrize("transport", ["UDPv4", "UDPv6", "L2"])
def test_ebpf_tc_with_a_one_step_gm(make_lab: Callable[..., Lab], results: dict[str, Any], transport: str) -> None:
    row: dict[str, Any] = results.setdefault(transport, {})
    lab = congested_lab(make_lab)
    direct = make_lab(catalog.parse("gm sl", name="os-direct"))
    if transport == "UDPv4":  # the contrast: the same lab without the dataplane
        bridge, base_b = side_by_side(lab, direct, transport, "bridge")
        row["plain_bridge"], row["direct_during_bridge"] = summary(bridge), summary(base_b)
        print(f"\n{transport} one-step GM, plain bridges with the internal queue: {bridge.line()}\n"
              f"  direct at the same time: {base_b.line()} -> bridge {bridge.core_rms_ns / base_b.core_rms_ns:.0f}x direct")
        assert bridge.core_rms_ns >= 20 * base_b.core_rms_ns, (bridge.line(), base_b.line())
    egress = lab.ifname("sw1", "sl")
    cli(lab, "attach", "--mode", "e2e")
    try:
        tc_run, base = side_by_side(lab, direct, transport, "tc", capture_on=egress)
        counters = json.loads(cli(lab, "stats", "--json"))
    finally:
        cli(lab, "detach")
    st, gm_text, cap = tc_run.stats, tc_run.gm_text, tc_run.capture
    assert cap is not None
    syncs, follow_ups = _sync_fields(cap)
    sync_counts = counters.get(egress, {}).get("SYNC", {})
    ingress = lab.ifname("sw1", "gm")
    ingress_counts = {k: v for k, v in counters.get(ingress, {}).get("SYNC", {}).items() if v}
    limit_ns = max(2 * base.core_rms_ns, base.core_rms_ns + FLOOR_NS)
    rms_limit_ns = max(2 * base.stats.rms_ns, RMS_FLOOR_NS)
    corrections = sorted(c for _, c in syncs)
    tc = summary(tc_run)
    tc.update({"limit_ns": round(limit_ns), "rms_limit_ns": round(rms_limit_ns),
               "samples_over_10us": sum(abs(o) > 10_000 for o in tc_run.offsets),
               "direct_samples_over_10us": sum(abs(o) > 10_000 for o in base.offsets), "egress_sync_corrected": sync_counts.get("corrected"), "captured_syncs": len(syncs),
               "captured_follow_ups": follow_ups,
               "sync_correction_ns_p50": corrections[len(corrections) // 2] if corrections else None,
               "sync_correction_ns_max": corrections[-1] if corrections else None})
    row["ebpf_tc"], row["direct"] = tc, summary(base)
    print(f"\n{transport} one-step GM through the eBPF TC: {tc_run.line()}\n  direct at the same time: {base.line()}\n"
          f"  -> core rms {tc_run.core_rms_ns / base.core_rms_ns:.2f}x direct (limit {limit_ns:.0f} ns), "
          f"rms {st.rms_ns / base.stats.rms_ns:.2f}x\n  egress {egress} Sync counters {sync_counts}\n"
          f"  ingress {ingress} Sync counters {ingress_counts}\n"
          f"  captured {len(syncs)} Syncs, {follow_ups} Follow_Ups, correction p50 {tc['sync_correction_ns_p50']} ns "
          f"max {tc['sync_correction_ns_max']} ns")

    # the Syncs were one-step and were corrected in place at the egress port
    assert len(syncs) >= CAPTURE_S // 2, f"only {len(syncs)} Syncs captured on {egress} in {CAPTURE_S} s"
    assert follow_ups == 0, f"{follow_ups} Follow_Ups from a one-step GM"
    assert not any(two for two, _ in syncs), "a captured Sync has twoStepFlag set"
    # every Sync left the switch with a correction, and most carry the internal queue's residence:
    # the GM's own egress adds its send delay (tens to hundreds of us), the queue inside sw1 hundreds more
    assert all(c > 0 for c in corrections), corrections[:20]
    assert corrections[len(corrections) // 2] >= 100_000, corrections
    assert sync_counts.get("corrected", 0) >= 0.8 * (RUN_S - WARMUP_S), sync_counts   # 1 Sync/s
    assert not math.isnan(tc_run.core_rms_ns) and not math.isnan(base.core_rms_ns)
    for run in (tc_run, base):   # every one-step Sync of both GMs was recorded for their egress stamp
        assert run.sends is not None and run.sends >= 0.8 * RUN_S and run.sends == run.stamped and run.not_recorded == 0, \
            run.gm_text[-1500:]
    assert tc_run.core_rms_ns <= limit_ns, (tc_run.line(), base.line())
    assert st.rms_ns <= rms_limit_ns, (tc_run.line(), base.line())
