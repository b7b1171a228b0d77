"""ptp-switch as a boundary clock between linuxptp clocks (shared lab, bare switch ports), UDPv4.

* ptp4l GM -> ptp-switch BC (two ports) -> free-running ptp4l slave: the slave's offset is the
  end-to-end error (every namespace shares one kernel clock); the BC re-originates (the slave's
  stepsRemoved is 2 and its parent is the BC, not the GM);
* a chain of three ptp-switch BCs: stepsRemoved 4, error still bounded;
* dual grandmasters (priority1 10 and 20) -> BC: follows the better; kill it and the BC follows
  the other within the announce receipt timeout window; bring it back and the BC returns.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from topologies import ptp4l as p4
from topologies.ptp4l import rms_without_worst
from topologies.netns import Lab
from tests.lab.conftest import PTP_SWITCH, switch_config_text

pytest.importorskip("controlplane.core.clock", reason="the core's clock (controlplane.core.clock) has not landed")
if shutil.which("ptp4l") is None or shutil.which("pmc") is None:  # pragma: no cover - setup installs linuxptp
    pytest.skip("linuxptp (ptp4l, pmc) not installed; run make setup", allow_module_level=True)

# ptp4l's hardware-timestamping PI gains (the software ones wait 37 s before the first estimate at 8 Hz)
FAST_SERVO = {"pi_proportional_scale": "0.7", "pi_integral_scale": "0.3"}


def start_switch(lab: Lab, node: str, options: dict[str, str], args: list[str], tag: str = "sw") -> tuple[subprocess.Popen[Any], Path, str]:
    uds = lab.uds_path(node, tag)
    cfg = lab.workdir / f"{tag}-{node}.cfg"
    cfg.write_text(switch_config_text(uds, options))
    log = lab.workdir / f"{tag}-{node}.log"
    argv = [PTP_SWITCH, "run", "-m", "-f", str(cfg), *args]
    for i in lab.topology.ports(node):
        argv += ["-i", i]
    proc = lab.popen(node, argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, log, uds


def wait_offsets(run: p4.Ptp4lRun, count: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        offsets = [o.offset_ns for o in p4.parse_offsets(run.text())]
        if len(offsets) >= count or time.monotonic() > deadline:
            return offsets
        time.sleep(1)


def rms(v: list[int]) -> float:
    return math.sqrt(sum(x * x for x in v) / len(v))


def field(out: str, name: str) -> str | None:
    m = re.search(rf"\b{name}\s+(\S+)", out)
    return m.group(1) if m else None


def run_chain(make_lab: Callable[..., Lab], hops: int, samples: int, timeout_s: float) -> tuple[Lab, list[int], list[Path]]:
    lab = make_lab(f"line-{hops}", mode="bare")
    p4.start_ptp4l(lab, "gm", "gm")
    logs = [start_switch(lab, f"sw{i}", {"priority1": "128", **FAST_SERVO}, ["-4"])[1] for i in range(1, hops + 1)]
    time.sleep(1)
    sl = p4.start_ptp4l(lab, "sl", "slave")
    offsets = wait_offsets(sl, samples, timeout_s)
    text = "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)
    assert len(offsets) >= samples, f"slave logged {len(offsets)} offsets\n{sl.text()[-1500:]}\n{text}"
    for p in logs:
        t = p.read_text(errors="replace")
        assert re.search(r"port 1 \(p1\): \w+ to SLAVE", t) and re.search(r"port 2 \(p2\): \w+ to MASTER", t), t[-2000:]
    out = p4.pmc(lab, "sl", sl.uds_address, "GET CURRENT_DATA_SET", "GET PARENT_DATA_SET")
    assert field(out, "stepsRemoved") == str(hops + 1), out  # every BC re-originated (+1 each)
    bc_out = p4.pmc(lab, f"sw{hops}", lab.uds_path(f"sw{hops}", "sw"), "GET DEFAULT_DATA_SET", "GET CURRENT_DATA_SET")
    assert field(bc_out, "clockIdentity") is not None and field(bc_out, "clockIdentity") in (field(out, "parentPortIdentity") or ""), (bc_out, out)
    assert field(bc_out, "stepsRemoved") == str(hops), bc_out
    return lab, offsets, logs


def test_ptp4l_gm_to_ptp_switch_bc_to_ptp4l_slave(make_lab: Callable[..., Lab]) -> None:
    _, offsets, _ = run_chain(make_lab, 1, 25, 45)
    steady = offsets[8:]
    print(f"BC x1: slave offset rms {rms(steady):.0f} ns max {max(map(abs, steady))} ns over {len(steady)} samples")
    # ptp4l BC here: rms ~0.4-0.6 us (ANCHORS bc_UDPv4_1hop_nodelay); generous bounds for a shared VM,
    # without the single worst sample (topologies/ptp4l.py rms_without_worst: one 44 us veth stamp
    # stall under CI load made 10.7 us of 17 samples)
    assert rms_without_worst(steady) < 10_000 and sorted(map(abs, steady))[-2] < 30_000, steady


def test_chain_of_three_ptp_switch_bcs(make_lab: Callable[..., Lab]) -> None:
    _, offsets, _ = run_chain(make_lab, 3, 25, 55)
    steady = offsets[8:]
    print(f"BC x3: slave offset rms {rms(steady):.0f} ns max {max(map(abs, steady))} ns over {len(steady)} samples")
    assert rms_without_worst(steady) < 20_000 and sorted(map(abs, steady))[-2] < 60_000, steady


def test_dual_grandmasters_failover_and_return(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab("gm1@10 sw1 | gm2@20 sw1 | sw1 sl", mode="bare")
    gm1 = p4.start_ptp4l(lab, "gm1", "gm", overrides={"priority1": "10"})
    p4.start_ptp4l(lab, "gm2", "gm", overrides={"priority1": "20"})
    _, log, uds = start_switch(lab, "sw1", {"priority1": "128", **FAST_SERVO}, ["-4"])

    def parent() -> tuple[str | None, str | None]:
        out = p4.pmc(lab, "sw1", uds, "GET PARENT_DATA_SET")
        return field(out, "grandmasterPriority1"), field(out, "grandmasterIdentity")

    def wait_parent(priority1: str, timeout_s: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if parent()[0] == priority1:
                return time.monotonic() - t0
            time.sleep(0.25)
        raise AssertionError(f"BC did not select the GM with priority1 {priority1} within {timeout_s} s "
                             f"(parent {parent()})\n{log.read_text(errors='replace')[-2500:]}")

    wait_parent("10", 20)
    time.sleep(2)
    gm1.stop()  # the better GM dies
    took_s = wait_parent("20", 15)
    print(f"failover to priority1 20 after {took_s:.1f} s")
    # announceReceiptTimeout 3 x 1 s (+ up to one interval of randomisation) + BMCA: well under 8 s
    assert 2.0 < took_s < 8.0, took_s
    gm1 = p4.start_ptp4l(lab, "gm1", "gm", overrides={"priority1": "10"}, tag="again")
    back_s = wait_parent("10", 15)  # foreign-master qualification: 2 Announces, then BMCA
    print(f"returned to priority1 10 after {back_s:.1f} s")
    text = log.read_text(errors="replace")
    assert text.count("to SLAVE on") >= 3 or "MASTER_CLOCK_CHANGED" in text or text.count("selected best master") >= 3, text[-2500:]
