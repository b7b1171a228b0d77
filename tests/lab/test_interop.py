"""ptp-switch OC against linuxptp on one veth pair (shared lab: topology ``direct``), software stamps.

Every namespace shares one kernel clock, so:
* a ptp4l slave with ``free_running 1`` reports its error as its offset;
* the ptp-switch slave's true error is its virtual clock minus CLOCK_REALTIME, which the daemon
  logs with ``--lab-truth`` ("lab: clock error N ns").

Per transport (UDPv4, L2, UDPv6):
* ptp4l GM -> ptp-switch OC slave whose virtual clock starts 5 ms / 50 ppm off: the true error falls
  under 10 us and stays; then pmc reads the daemon's data sets over its UNIX socket and over the
  network (values checked against the daemon's own log / configuration), errors come back as
  MANAGEMENT_ERROR_STATUS;
* ptp-switch GM -> free-running ptp4l slave, side by side with ptp4l GM -> ptp4l slave in a second
  lab during the same seconds: comparable error.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from topologies import ptp4l as p4
from topologies.ptp4l import rms_without_worst
from topologies.netns import Lab
from tests.lab.conftest import start_switch

pytest.importorskip("controlplane.core.clock", reason="the core's clock (controlplane.core.clock) has not landed")
if shutil.which("ptp4l") is None or shutil.which("pmc") is None:  # pragma: no cover - setup installs linuxptp
    pytest.skip("linuxptp (ptp4l, pmc) not installed; run make setup", allow_module_level=True)

TRANSPORTS = [pytest.param("-4", id="UDPv4"), pytest.param("-2", id="L2"), pytest.param("-6", id="UDPv6")]

# ptp4l's hardware-timestamping PI gains: with the software scales (kp 0.1, ki 0.001) pi.c waits
# 0.016/ki = 37 s at logSyncInterval -3 before its first frequency estimate (measured: ~55 s to lock)
FAST_SERVO = {"pi_proportional_scale": "0.7", "pi_integral_scale": "0.3"}

OFFSET_RE = re.compile(r"master offset\s+(-?\d+) s(\d)")
TRUTH_RE = re.compile(r"lab: clock error (-?\d+) ns")


def values(text: str, pattern: re.Pattern[str]) -> list[int]:
    return [int(m.group(1)) for m in pattern.finditer(text)]


def wait_for(log: Path, pattern: re.Pattern[str], count: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = values(log.read_text(errors="replace"), pattern)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def rms(v: list[int]) -> float:
    return math.sqrt(sum(x * x for x in v) / len(v))


def pmc_net(lab: Lab, node: str, transport: str, *commands: str) -> str:
    argv = ["pmc", transport, "-i", lab.topology.ports(node)[0], "-b", "0", "-d", "0",
            "-s", lab.uds_path(node, "pmcnet"), "-t", "1", *commands]
    return lab.run(node, argv, timeout=20).stdout


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ptp4l_gm_to_ptp_switch_slave_and_pmc(make_lab: Callable[..., Lab], transport: str) -> None:
    lab = make_lab("direct")
    gm = p4.start_ptp4l(lab, "gm", "gm", transport=transport)
    _, log, uds = start_switch(lab, "sl", {"slaveOnly": "1", "priority1": "200", **FAST_SERVO},
                               [transport, "-s", "--lab-truth", "--clock-offset-ns", "5000000", "--clock-freq-ppb", "50000"])
    errors = wait_for(log, TRUTH_RE, 24, 45)
    text = log.read_text(errors="replace")
    assert len(errors) >= 24, f"daemon did not run long enough:\n{text[-3000:]}"
    assert abs(errors[0] - 5_000_000) < 500_000, errors[:3]  # it started with the deliberate error
    tail = errors[-10:]
    assert max(abs(e) for e in tail) < 10_000, f"true error did not settle under 10 us: {tail}\n{text[-3000:]}"
    assert "to SLAVE on" in text and OFFSET_RE.search(text)

    # --- management over the UNIX socket: values match the daemon's state ---------------------
    def pmc(*cmds: str) -> str:
        return p4.pmc(lab, "sl", uds, *cmds)

    out = pmc("GET DEFAULT_DATA_SET")
    assert re.search(r"priority1\s+200\b", out) and re.search(r"clockClass\s+255\b", out), out  # slave-only
    assert re.search(r"slaveOnly\s+1\b", out), out
    out = pmc("GET CURRENT_DATA_SET")
    m = re.search(r"stepsRemoved\s+(\d+)\s+offsetFromMaster\s+(-?[\d.e+-]+)\s+meanPathDelay\s+(-?[\d.e+-]+)", out)
    assert m and m.group(1) == "1", out
    # pmc prints ns (scaled ns / 2^16): the servo holds the offset within a few us, delay is ~1-20 us
    assert abs(float(m.group(2))) < 20_000 and 0 < float(m.group(3)) < 200_000, out
    gm_ident = re.search(r"selected local clock (\S+) as best master", gm.text())
    out = pmc("GET PARENT_DATA_SET")
    assert re.search(r"grandmasterPriority1\s+10\b", out), out
    if gm_ident:
        assert gm_ident.group(1) in out, (gm_ident.group(1), out)
    out = pmc("GET TIME_PROPERTIES_DATA_SET")
    assert re.search(r"currentUtcOffset\s+37\b", out) and "ptpTimescale" in out, out
    out = pmc("GET PORT_DATA_SET")
    assert re.search(r"portState\s+SLAVE\b", out), out
    assert re.search(r"logSyncInterval\s+-3\b", out), out
    out = pmc("GET CLOCK_ACCURACY")  # defined by 1588, not implemented here: NOT_SUPPORTED
    assert "RESPONSE MANAGEMENT_ERROR_STATUS" in out, out
    out = pmc("SET PRIORITY2 77")  # settable: acknowledged with the new value, then visible
    assert re.search(r"RESPONSE MANAGEMENT PRIORITY2\s+priority2\s+77\b", out), out
    assert re.search(r"priority2\s+77\b", pmc("GET DEFAULT_DATA_SET")), out

    # --- over the network, from the GM's namespace (the GM's own ptp4l does not hear pmc's
    # multicast from its own namespace; the daemon on the other end of the link answers) -------
    out = pmc_net(lab, "gm", transport, "GET PORT_DATA_SET")
    assert re.search(r"portState\s+SLAVE\b", out), out
    out = pmc_net(lab, "gm", transport, "GET CURRENT_DATA_SET")
    assert re.search(r"stepsRemoved\s+1\b", out), out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ptp_switch_gm_to_ptp4l_slave_comparable_to_ptp4l(make_lab: Callable[..., Lab], transport: str) -> None:
    """Two labs at the same time: ptp4l GM -> ptp4l slave and ptp-switch GM -> ptp4l slave."""
    ref, sut = make_lab("direct"), make_lab("direct")
    p4.start_ptp4l(ref, "gm", "gm", transport=transport)
    start_switch(sut, "gm", {"priority1": "10"}, [transport])
    slaves = {"ptp4l": p4.start_ptp4l(ref, "sl", "slave", transport=transport),
              "ptp-switch": p4.start_ptp4l(sut, "sl", "slave", transport=transport)}
    deadline = time.monotonic() + 35
    while time.monotonic() < deadline:
        if all(len(p4.parse_offsets(s.text())) >= 18 for s in slaves.values()):
            break
        time.sleep(1)
    results = {}
    for impl, s in slaves.items():
        offsets = [o.offset_ns for o in p4.parse_offsets(s.stop())]
        assert len(offsets) >= 15, f"{impl} GM: the ptp4l slave logged {len(offsets)} offsets\n{s.text()[-2000:]}"
        # without the single worst sample: rare veth stamp stalls hit either GM (topologies/ptp4l.py
        # rms_without_worst; one made 8.9 us of ~13 samples for ours under CI load)
        results[impl] = rms_without_worst(offsets[5:])
        print(f"{transport} {impl} GM: slave offset rms {rms(offsets[5:]):.0f} ns, without the worst {results[impl]:.0f} ns")
    # generous: shared 2-vCPU machine; ptp4l->ptp4l is ~0.3-0.6 us rms on a direct veth here
    assert results["ptp-switch"] < max(5 * results["ptp4l"], 5_000), results
