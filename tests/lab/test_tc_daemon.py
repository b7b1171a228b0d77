"""ptp-switch as E2E_TC / P2P_TC: the daemon attaches the eBPF dataplane to the bridge ports of the
switch namespace (shared lab, ``line-1``: gm -- [p1 br0 p2] -- sl) and runs the TC control:
ptp4l GM -> ptp-switch TC -> free-running ptp4l slave, whose offset is the end-to-end error.

P2P: the daemon answers peer delay on every port (the slave's path delay is the link to the TC,
not 0) and writes meanLinkDelay / rate ratio into the dataplane's maps. Over UDP on an enslaved
bridge port the daemon uses controlplane/runtime/rawudp.py (AF_PACKET; IP sockets never see frames
the bridge takes).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from typing import Callable

import pytest

from topologies import ptp4l as p4
from topologies.netns import Lab
from tests.lab.conftest import PTP_SWITCH, switch_config_text

pytest.importorskip("controlplane.core.clock", reason="the core's clock (controlplane.core.clock) has not landed")
pytest.importorskip("bcc", reason="the eBPF dataplane needs BCC")
if shutil.which("ptp4l") is None:  # pragma: no cover - setup installs linuxptp
    pytest.skip("linuxptp not installed; run make setup", allow_module_level=True)

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize("mode,transport", [
    pytest.param("E2E_TC", "-4", id="E2E-UDPv4"),
    pytest.param("E2E_TC", "-6", id="E2E-UDPv6"),
    pytest.param("E2E_TC", "-2", id="E2E-L2"),
    pytest.param("P2P_TC", "-2", id="P2P-L2"),
    pytest.param("P2P_TC", "-4", id="P2P-UDPv4"),
    pytest.param("P2P_TC", "-6", id="P2P-UDPv6"),
])
def test_ptp4l_gm_through_ptp_switch_tc_to_ptp4l_slave(make_lab: Callable[..., Lab], mode: str, transport: str) -> None:
    lab = make_lab("line-1")  # bridge mode: p1, p2 enslaved to br0 in sw1
    delay = "P2P" if mode == "P2P_TC" else "E2E"
    ov = {"delay_mechanism": delay}
    p4.start_ptp4l(lab, "gm", "gm", transport=transport, overrides=ov)
    uds = lab.uds_path("sw1", "sw")
    cfg = lab.workdir / "sw1.cfg"
    cfg.write_text(switch_config_text(uds, {"priority1": 254, "delay_mechanism": delay}))
    log = lab.workdir / "sw1.log"
    lab.popen("sw1", [PTP_SWITCH, "run", "-m", "-f", str(cfg), transport, "--clock-type", mode, "-i", "p1", "-i", "p2"],
              stdout=log.open("w"), stderr=subprocess.STDOUT)
    sl = p4.start_ptp4l(lab, "sl", "slave", transport=transport, overrides=ov)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and len(p4.parse_offsets(sl.text())) < 13:
        time.sleep(1)
    text = log.read_text(errors="replace")
    assert "dataplane attached" in text, text[-2000:]
    samples = p4.parse_offsets(sl.text())
    assert len(samples) >= 12, f"slave logged {len(samples)} offsets\n{sl.text()[-1500:]}\n--- switch\n{text[-1500:]}"
    steady = samples[4:]
    offsets = [s.offset_ns for s in steady]
    delays = [s.path_delay_ns for s in steady]
    rms = math.sqrt(sum(o * o for o in offsets) / len(offsets))
    print(f"{mode} {transport}: slave offset rms {rms:.0f} ns max {max(map(abs, offsets))} ns, "
          f"path delay median {sorted(delays)[len(delays) // 2]} ns, {len(offsets)} samples")
    # ANCHORS: ptp4l E2E_TC rms 0.68 us, P2P_TC 1.7 us, plain bridge 2.5-3.6 us; generous here
    # (UDPv6 once measured 11 us rms before bridge ports used runtime/rawudp.py; since then 1.8 and
    # 2.6 us in two runs, like UDPv4 - the looser UDPv6 bound stays until more runs agree)
    assert rms < (30_000 if transport == "-6" else 15_000), offsets
    if mode == "P2P_TC":
        # the slave measured peer delay against the TC's port: the daemon answered Pdelay_Req
        assert all(0 < d < 200_000 for d in delays), delays
