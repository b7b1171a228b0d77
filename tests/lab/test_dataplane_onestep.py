"""The in-kernel E2E TC with a ONE-STEP grandmaster: the Sync's residence is added to the Sync itself,
in place, at the switch's egress port (no Follow_Up exists to carry it).

ptp4l cannot be one-step with software stamps, so the GM is a ptp-switch daemon with ``twoStepFlag 0``
and ``free_running 1`` (its virtual clock over CLOCK_REALTIME never touches the system clock): it
reads its clock after encoding, patches originTimestamp into the bytes, and adds its learned send
latency (kernel TX stamp - time written) to the correctionField (runtime/loop.py). The slave is a
free-running ptp4l (``free_running 1``): every namespace shares one kernel clock, so its reported
offset is its error.

Same lab as tests/lab/test_dataplane_lab.py (its topology and CLI helper imported): ``gm sw1 >i sl``,
variable residence of hundreds of us INSIDE sw1 in the GM -> slave direction, and a congested egress
port toward the slave that event messages bypass.

The baseline is measured AT THE SAME TIME as each switched run, by a second one-step GM daemon of
the same build over one veth to its own free-running ptp4l slave (a two-node lab next to it). A
software one-step GM's error is its send path's jitter (clock read -> kernel TX stamp: 20-110 us
on this VM, +-10 us and more, and softirq/preemption tails that grow with the machine's load): a
baseline taken a minute earlier or later compares the machine's load, not the switch (measured: a
sequential baseline lost 2.5x to load that came and went between the two runs). UDPv4: plain
bridges || direct, then eBPF TC || direct; UDPv6 and L2: eBPF TC || direct.

Bound for the TC: rms <= max(2 x direct, direct + 2 us). The floor only matters if the one-step GM
gets as good as a two-step one (direct rms of a few hundred ns, ANCHORS.md): the switched path adds
what no stamp sees - two more veth hops and the bridges between the ports' stamp points and the wire,
~1 us rms with the two-step GM in test_dataplane_lab.py - and 2 us is still 100x below the plain
bridges' hundreds of us. Figures are printed (pytest -s) and written to /tmp/ptp-switch-onestep.json.
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

from topologies import catalog
from topologies import ptp4l as p4
from topologies.netns import Lab
from topologies import shaping
from topologies.model import Shaping
from tests.lab.test_dataplane_lab import FLAG, TOPOLOGY, cli
from tests.lab.test_interop import start_switch

pytest.importorskip("bcc", reason="the eBPF dataplane needs BCC")
if shutil.which("ptp4l") is None or shutil.which("tshark") is None:  # pragma: no cover - setup installs them
    pytest.skip("linuxptp or tshark not installed; run make setup", allow_module_level=True)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# ptp4l 3.1.1 free-running logs one offset a second (ANCHORS.md §2): ~30 samples after the warm-up.
# The one-step GM's per-Sync error is heavy-tailed (p10 -11..-16 us, p90 +16..+30 us, p99 +70..+86 us
# under the lab's cross traffic, measured from its own kernel TX stamps): with 15 samples the rms of
# two identical runs differed 2x; 30 keep that ratio's spread well inside the 2x bound.
RUN_S = 40
WARMUP_S = 4
FLOOR_NS = 2_000
RESULTS = pathlib.Path("/tmp/ptp-switch-onestep.json")
LOG_DIR = pathlib.Path("/tmp/ptp-switch-test-dataplane-onestep")  # last run's logs and captures
GM_OPTIONS = {"priority1": "10", "twoStepFlag": "0", "free_running": "1"}
LATENCY_LINE = "one-step send latency"


def _keep(lab: Lab, tag: str, *paths: pathlib.Path) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for p in [*lab.workdir.glob("ptp4l-*.log"), *lab.workdir.glob("*.log"), *paths]:
        if p.exists():
            shutil.copy(p, LOG_DIR / f"{tag}-{p.name}")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def measure_one_step(lab: Lab, transport: str, tag: str, *, capture_on: str | None = None) -> tuple[p4.OffsetStats, str, pathlib.Path | None]:
    """One-step ptp-switch GM on ``gm`` -> free-running ptp4l slave on ``sl``; with ``capture_on`` a
    tshark capture of a few seconds on that sw1 interface after the warm-up. Returns the slave's
    offset statistics, the GM's log and the capture."""
    gm, gm_log, _uds = start_switch(lab, "gm", GM_OPTIONS, [FLAG[transport]], tag=f"os-{tag}")  # own files and UDS per run
    cap = None
    try:
        time.sleep(1.0)  # the daemon's interpreter start
        sl = p4.start_ptp4l(lab, "sl", "slave", transport=FLAG[transport], duration_s=RUN_S, tag=tag)
        if capture_on is not None:
            time.sleep(WARMUP_S)
            proc, cap = p4.start_tshark(lab, "sw1", capture_on, duration_s=5)
        try:
            sl.proc.wait(timeout=RUN_S + 15)
        except subprocess.TimeoutExpired:
            pass
        text = sl.stop()
        if capture_on is not None:
            proc.wait(timeout=30)
    finally:
        _stop(gm)
        _keep(lab, tag, *([cap] if cap is not None else []))
    gm_text = gm_log.read_text(errors="replace")
    st = p4.offset_stats(text, warmup_s=WARMUP_S)
    assert st.samples >= 8, f"{tag}: slave produced {st.samples} samples\nslave:\n{text[-1500:]}\nGM:\n{gm_text[-1500:]}"
    return st, gm_text, cap


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


def _latency(gm_text: str) -> str | None:
    """What the GM learned about its send latency (its one log line), e.g. "18.1 us after idle < 1 ms (11), ..."."""
    for line in gm_text.splitlines():
        if LATENCY_LINE in line:
            return line.split(LATENCY_LINE, 1)[1].split(") ", 1)[-1].split(";")[0]
    return None


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


def summary(st: p4.OffsetStats, gm_text: str) -> dict[str, Any]:
    return {"samples": st.samples, "rms_ns": round(st.rms_ns), "max_abs_ns": st.max_abs_ns, "mean_ns": round(st.mean_ns),
            "mean_path_delay_ns": round(st.mean_path_delay_ns), "gm_send_latency": _latency(gm_text)}


def side_by_side(switched: Lab, direct: Lab, transport: str, tag: str, *, capture_on: str | None = None) -> tuple[
        tuple[p4.OffsetStats, str, pathlib.Path | None], tuple[p4.OffsetStats, str, pathlib.Path | None]]:
    """The switched lab's measurement and the direct baseline, run at the same time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        f_sw = pool.submit(measure_one_step, switched, transport, f"{tag}-{transport}", capture_on=capture_on)
        f_direct = pool.submit(measure_one_step, direct, transport, f"direct-{tag}-{transport}")
        return f_sw.result(), f_direct.result()


@pytest.mark.parametrize("transport", ["UDPv4",
                                       # ~50 s each more: make test-long
                                       pytest.param("UDPv6", marks=pytest.mark.long),
                                       pytest.param("L2", marks=pytest.mark.long)])
def test_ebpf_tc_with_a_one_step_gm(make_lab: Callable[..., Lab], results: dict[str, Any], transport: str) -> None:
    row: dict[str, Any] = results.setdefault(transport, {})
    lab = congested_lab(make_lab)
    direct = make_lab(catalog.parse("gm sl", name="os-direct"))
    if transport == "UDPv4":  # the contrast: the same lab without the dataplane
        (bridge, gm_text, _), (base_b, base_b_text, _) = side_by_side(lab, direct, transport, "bridge")
        row["plain_bridge"], row["direct_during_bridge"] = summary(bridge, gm_text), summary(base_b, base_b_text)
        print(f"\n{transport} one-step GM, plain bridges with the internal queue: {bridge.line()}\n"
              f"  direct at the same time: {base_b.line()} -> bridge {bridge.rms_ns / base_b.rms_ns:.0f}x direct")
        assert bridge.rms_ns >= 20 * base_b.rms_ns, (bridge.rms_ns, base_b.rms_ns)
    egress = lab.ifname("sw1", "sl")
    cli(lab, "attach", "--mode", "e2e")
    try:
        (st, gm_text, cap), (base, base_text, _) = side_by_side(lab, direct, transport, "tc", capture_on=egress)
        counters = json.loads(cli(lab, "stats", "--json"))
    finally:
        cli(lab, "detach")
    assert cap is not None
    syncs, follow_ups = _sync_fields(cap)
    sync_counts = counters.get(egress, {}).get("SYNC", {})
    limit_ns = max(2 * base.rms_ns, base.rms_ns + FLOOR_NS)
    corrections = sorted(c for _, c in syncs)
    tc = summary(st, gm_text)
    tc.update({"limit_ns": round(limit_ns), "egress_sync_corrected": sync_counts.get("corrected"), "captured_syncs": len(syncs),
               "captured_follow_ups": follow_ups,
               "sync_correction_ns_p50": corrections[len(corrections) // 2] if corrections else None,
               "sync_correction_ns_max": corrections[-1] if corrections else None})
    row["ebpf_tc"], row["direct"] = tc, summary(base, base_text)
    print(f"\n{transport} one-step GM through the eBPF TC: {st.line()}\n  direct at the same time: {base.line()}\n"
          f"  -> {st.rms_ns / base.rms_ns:.2f}x direct (limit {limit_ns:.0f} ns)\n  egress {egress} Sync counters {sync_counts}\n"
          f"  captured {len(syncs)} Syncs, {follow_ups} Follow_Ups, correction p50 {tc['sync_correction_ns_p50']} ns "
          f"max {tc['sync_correction_ns_max']} ns; GM send latency {tc['gm_send_latency']}")

    # the Syncs were one-step and were corrected in place at the egress port
    assert LATENCY_LINE in gm_text, gm_text[-1500:]
    assert len(syncs) >= 10, f"only {len(syncs)} Syncs captured on {egress}"
    assert follow_ups == 0, f"{follow_ups} Follow_Ups from a one-step GM"
    assert not any(two for two, _ in syncs), "a captured Sync has twoStepFlag set"
    # every Sync left the switch with a correction, and most carry the internal queue's residence:
    # the GM alone writes its send latency (tens of us, logged), the queue inside sw1 adds hundreds
    assert all(c > 0 for c in corrections), corrections[:20]
    assert corrections[len(corrections) // 2] >= 100_000, corrections
    assert sync_counts.get("corrected", 0) >= 8 * (RUN_S - WARMUP_S), sync_counts
    assert not math.isnan(st.rms_ns) and not math.isnan(base.rms_ns)
    assert st.rms_ns <= limit_ns, (st.rms_ns, base.rms_ns)
