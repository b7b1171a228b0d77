"""The main proof of the in-kernel TC: real ptp4l grandmaster -> switch -> ptp4l slave (free_running 1,
so its reported offset is pure error: every namespace shares one kernel clock).

Built with the shared lab (topologies/netns.py via the make_lab fixture, topologies/shaping.py,
topologies/ptp4l.py). The switch sw1 is the bridge pair of ``"gm sw1 >i sl"``: variable residence
INSIDE it (brA -> ia [HTB 20 mbit serializer + paced cross traffic] -> ib -> brB, GM->slave
direction only), plus congestion on its egress port toward the slave (the same HTB + pacer on that
port; PTP event messages bypass it through the strict-priority class 1:1 via skb->priority).

Same run, same machine: a direct veth baseline, the plain bridges (no dataplane), and the eBPF TC
attached with the CLI. Bounds are generous (shared 2-vCPU machine); precise figures belong in
bench/dataplane.py and the README.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest

from topologies import catalog, shaping
from topologies.model import Shaping
from topologies.ptp4l import OffsetStats, run_pair

pytestmark = [pytest.mark.lab, pytest.mark.slow]

RUN_S = 26
WARMUP_S = 6
TOPOLOGY = "gm sw1 >i sl"
FLAG = {"UDPv4": "-4", "UDPv6": "-6", "L2": "-2"}
LOG_DIR = pathlib.Path("/tmp/ptp-switch-test-dataplane-lab")   # last run's ptp4l logs, for diagnosis


def _keep_logs(lab, tag: str) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for p in lab.workdir.glob("ptp4l-*.log"):
        shutil.copy(p, LOG_DIR / f"{tag}-{p.name}")


def congested_switch(make_lab):
    """gm - sw1 - sl with the queue inside sw1 and a congested egress port toward sl."""
    lab = make_lab(catalog.parse(TOPOLOGY, name="dp-lab"))
    port = lab.ifname("sw1", "sl")
    shaping.install_htb(lab, "sw1", port, Shaping())
    shaping.start_pacer(lab, "sw1", port, Shaping(), duration_s=RUN_S + 30)
    return lab


def cli(lab, *args: str, timeout: float = 120) -> str:
    argv = [sys.executable, "-m", "controlplane.services.cli", "dataplane", *args]
    for p in lab.switch_ports("sw1"):
        argv += ["-i", p]
    res = lab.run("sw1", argv, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(argv)}: {res.stderr[-800:]}"
    return res.stdout


def measure(lab, transport: str, tag: str) -> OffsetStats:
    try:
        return run_pair(lab, "gm", "sl", duration_s=RUN_S, transport=FLAG[transport], warmup_s=WARMUP_S)
    finally:
        _keep_logs(lab, tag)


@pytest.fixture(scope="module")
def baseline() -> OffsetStats:
    """Direct veth GM -> slave, UDPv4, measured in this run: the floor."""
    from topologies.netns import Lab

    with Lab(catalog.parse("gm sl", name="dp-direct")) as lab:
        st = measure(lab, "UDPv4", "direct")
    assert st.samples >= 8, f"direct baseline produced only {st.samples} samples"
    return st


def test_plain_bridge_with_internal_queue_is_bad(make_lab, baseline):
    lab = congested_switch(make_lab)
    st = measure(lab, "UDPv4", "bridge")
    print(f"direct {baseline.line()}\nplain bridge {st.line()}")
    assert st.samples >= 8
    assert st.rms_ns >= 20 * baseline.rms_ns, (st.rms_ns, baseline.rms_ns)


@pytest.mark.parametrize("transport", ["UDPv4", "UDPv6", "L2"])
def test_ebpf_tc_removes_switch_residence(make_lab, baseline, transport):
    """Two-step ptp4l GM (ptp4l cannot be one-step with software timestamps): Sync residence goes
    into the Follow_Up at the egress port."""
    lab = congested_switch(make_lab)
    cli(lab, "attach", "--mode", "e2e")
    try:
        st = measure(lab, transport, f"tc-{transport}")
        counters = json.loads(cli(lab, "stats", "--json"))
    finally:
        cli(lab, "detach")
    print(f"{transport}: direct {baseline.line()}\neBPF TC {st.line()}\n{json.dumps(counters)[:600]}")
    assert st.samples >= 8, f"slave produced only {st.samples} samples"
    assert "two_step_matched" in json.dumps(counters)
    # Since tc ingress back-dates its stamp to skb->tstamp (auto on veth), single runs here meet the
    # 2x-of-direct goal (README, Dataplane); the bound stays generous in absolute for a noisy shared
    # machine, still far below the bridge's hundreds of us. ~14 samples: without the single worst one
    # (topologies/ptp4l.py rms_without_worst: a 33 us veth stamp stall under CI load made 8.9 us).
    limit_ns = 30_000 if transport == "L2" else 8_000
    assert st.rms_without_worst_ns <= max(2 * baseline.rms_without_worst_ns, limit_ns), (st.line(), baseline.line())


def test_congestion_leaks_without_egress_priority(make_lab, baseline):
    """Contrast: --egress-priority 0 lets the Sync wait in the egress HTB after its stamp."""
    lab = congested_switch(make_lab)
    cli(lab, "attach", "--mode", "e2e", "--egress-priority", "0")
    try:
        st = measure(lab, "UDPv4", "tc-noprio")
    finally:
        cli(lab, "detach")
    print(f"egress priority off: {st.line()} (direct rms {baseline.rms_ns:.0f})")
    assert st.rms_ns >= 5 * max(baseline.rms_ns, 500)
