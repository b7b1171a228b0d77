"""The ptp-switch daemon as P2P_TC removes a switch's queueing delay, and what it writes reaches the
eBPF dataplane's maps.

Two labs side by side, the same topology ``gm sw1 >i sl``: variable residence INSIDE sw1 (brA -> ia
[HTB serializer + paced cross traffic] -> ib -> brB, GM -> slave direction only, ANCHORS.md §1).
Lab "bridge": the plain Linux bridges. Lab "tc": ``ptp-switch run --clock-type P2P_TC -4`` on sw1's
outer ports (eBPF dataplane + the daemon's peer delay over UDP on the bridge ports, runtime/rawudp.py).
ptp4l GM (P2P) -> free-running ptp4l slave (P2P): the slave's offset is its error.

While the daemon runs, the test reads the dataplane's port table back through the loader's typed
map access (``AttachedDataplane.find``) and compares meanLinkDelay with the peerMeanPathDelay the
daemon reports over its management socket (pmc), and checks the rate ratio it wrote.
"""

from __future__ import annotations

import concurrent.futures
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from topologies import catalog
from topologies import ptp4l as p4
from topologies.netns import Lab
from tests.lab.conftest import PTP_SWITCH, switch_config_text

pytest.importorskip("controlplane.core.clock", reason="the core's clock (controlplane.core.clock) has not landed")
pytest.importorskip("bcc", reason="the eBPF dataplane needs BCC")
if shutil.which("ptp4l") is None or shutil.which("pmc") is None:  # pragma: no cover - setup installs linuxptp
    pytest.skip("linuxptp not installed; run make setup", allow_module_level=True)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

TOPOLOGY = "gm sw1 >i sl"
P2P = {"delay_mechanism": "P2P"}
RUN_S = 26
WARMUP_S = 6


def _start_switch(lab: Lab) -> tuple[subprocess.Popen, Path, str]:
    uds = lab.uds_path("sw1", "sw")
    cfg = lab.workdir / "sw1.cfg"
    cfg.write_text(switch_config_text(uds, {"priority1": 254, "delay_mechanism": "P2P"}))
    log = lab.workdir / "sw1.log"
    argv = [PTP_SWITCH, "run", "-m", "-f", str(cfg), "-4", "--clock-type", "P2P_TC"]
    for port in lab.switch_ports("sw1"):
        argv += ["-i", port]
    proc = lab.popen("sw1", argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, log, uds


def _measure(lab: Lab) -> p4.OffsetStats:
    gm = p4.start_ptp4l(lab, "gm", "gm", transport="-4", overrides=P2P, duration_s=RUN_S + 3)
    time.sleep(0.5)
    sl = p4.start_ptp4l(lab, "sl", "slave", transport="-4", overrides=P2P, duration_s=RUN_S)
    try:
        sl.proc.wait(timeout=RUN_S + 10)
    except subprocess.TimeoutExpired:
        pass
    text = sl.stop()
    gm.stop()
    return p4.offset_stats(text, warmup_s=WARMUP_S)


def _read_port_table(lab: Lab) -> dict[str, tuple[float, float, bool]]:
    """{ifname: (mean_link_delay_ns, rate_ratio, enabled)} from the running daemon's dataplane maps."""
    from dataplane.loader import AttachedDataplane

    ports = list(lab.switch_ports("sw1"))

    def read() -> dict[str, tuple[float, float, bool]]:
        dp = AttachedDataplane.find(ports)
        try:
            out = {}
            for name, st in dp.ports.items():
                cfg = dp.maps.get_port(st.ifindex)
                assert cfg is not None, name
                out[name] = (cfg.mean_link_delay_ns, cfg.rate_ratio, cfg.enabled)
            return out
        finally:
            dp.close()

    return lab.in_node("sw1", read)


def _peer_delays_from_pmc(lab: Lab, uds: str) -> dict[int, float]:
    out = p4.pmc(lab, "sw1", uds, "GET PORT_DATA_SET")
    delays = {}
    for block in out.split("RESPONSE MANAGEMENT PORT_DATA_SET")[1:]:
        port = re.search(r"portIdentity\s+\S+-(\d+)", block)
        peer = re.search(r"peerMeanPathDelay\s+(-?\d+)", block)
        if port and peer:
            delays[int(port.group(1))] = float(peer.group(1))
    return delays


def test_p2p_tc_daemon_removes_internal_queueing_and_programs_the_maps(make_lab: Callable[..., Lab]) -> None:
    bridge = make_lab(catalog.parse(TOPOLOGY, name="tcq-br"))
    tc = make_lab(catalog.parse(TOPOLOGY, name="tcq-tc"))
    proc, log, uds = _start_switch(tc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "dataplane attached" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        time.sleep(0.5)
    assert "dataplane attached" in log.read_text(errors="replace"), log.read_text(errors="replace")[-2000:]

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        f_bridge = pool.submit(_measure, bridge)
        f_tc = pool.submit(_measure, tc)
        # while both run: what the daemon wrote into the dataplane's port table
        time.sleep(RUN_S / 2)
        table = _read_port_table(tc)
        pmc_delays = _peer_delays_from_pmc(tc, uds)
        st_bridge, st_tc = f_bridge.result(), f_tc.result()
    text = log.read_text(errors="replace")
    print(f"\nplain bridge, internal queue: {st_bridge.line()}\nptp-switch P2P_TC daemon:     {st_tc.line()}")
    print(f"dataplane port table {table}\npmc peerMeanPathDelay {pmc_delays}")

    assert st_bridge.samples >= 8 and st_tc.samples >= 8, (st_bridge, st_tc, text[-1500:])
    # ANCHORS: a bridge with this queue is hundreds of us rms; ptp4l's own P2P_TC 2.6 us
    assert st_tc.rms_ns < 20_000, (st_tc, text[-1500:])
    assert st_bridge.rms_ns > 5 * st_tc.rms_ns, (st_bridge.rms_ns, st_tc.rms_ns)
    assert 0 < st_tc.mean_path_delay_ns < 200_000  # the slave's peer delay to the TC's port

    ports = tc.switch_ports("sw1")
    assert set(table) == set(ports)
    for number, name in enumerate(ports, start=1):
        delay_ns, ratio, enabled = table[name]
        assert enabled, table
        assert 0 < delay_ns < 200_000, table  # the daemon measured the link and wrote it
        assert abs(ratio - 1.0) < 1e-3, table  # one kernel clock on both ends: ratio ~ 1
        if number in pmc_delays:  # the same filter output, read moments apart
            assert math.isclose(delay_ns, pmc_delays[number], rel_tol=0.5, abs_tol=3_000), (table, pmc_delays)
    assert len(pmc_delays) == len(ports), pmc_delays
