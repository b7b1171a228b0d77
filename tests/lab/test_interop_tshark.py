"""tshark decodes every message the daemon sends, with no malformed packet and no expert error.

A ptp-switch BC between a ptp4l GM and a free-running ptp4l slave sends every message type of its
role: upstream Delay_Req (E2E) or Pdelay_Req/Pdelay_Resp/Pdelay_Resp_Follow_Up (P2P), downstream
Announce, Sync, Follow_Up and Delay_Resp; pmc over the network adds Management responses. Both
switch ports are captured; only frames whose source MAC is one of the switch's ports are judged.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from topologies import ptp4l as p4
from topologies.netns import Lab
from tests.lab.conftest import PTP_SWITCH, switch_config_text

pytest.importorskip("controlplane.core.clock", reason="the core's clock (controlplane.core.clock) has not landed")
if shutil.which("ptp4l") is None or shutil.which("tshark") is None:  # pragma: no cover - setup installs them
    pytest.skip("linuxptp or tshark not installed; run make setup", allow_module_level=True)

E2E_TYPES = {"Announce", "Sync", "Follow_Up", "Delay_Req", "Delay_Resp", "Management"}
P2P_TYPES = {"Announce", "Sync", "Follow_Up", "Pdelay_Req", "Pdelay_Resp", "Pdelay_Resp_Follow_Up", "Management"}
# tshark's ptp.v2.messagetype values
TYPE_NAMES = {0: "Sync", 1: "Delay_Req", 2: "Pdelay_Req", 3: "Pdelay_Resp", 8: "Follow_Up", 9: "Delay_Resp",
              10: "Pdelay_Resp_Follow_Up", 11: "Announce", 12: "Signaling", 13: "Management"}
EXPERT_ERROR = 0x00800000  # _ws.expert.severity of an error (warn 0x00600000)


def tshark_fields(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line.split("|") for line in res.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("transport,delay", [pytest.param("-4", "E2E", id="UDPv4-E2E"),
                                             pytest.param("-2", "P2P", id="L2-P2P"),
                                             pytest.param("-6", "P2P", id="UDPv6-P2P")])
def test_tshark_decodes_everything_the_daemon_sends(make_lab: Callable[..., Lab], transport: str, delay: str) -> None:
    lab = make_lab("line-1", mode="bare")
    ov = {"delay_mechanism": delay}
    p4.start_ptp4l(lab, "gm", "gm", transport=transport, overrides=ov)
    uds = lab.uds_path("sw1", "sw")
    cfg = lab.workdir / "sw1.cfg"
    cfg.write_text(switch_config_text(uds, {"delay_mechanism": delay}))
    log = lab.workdir / "sw1.log"
    caps = [p4.start_tshark(lab, "sw1", ifname, duration_s=16) for ifname in ("p1", "p2")]
    time.sleep(2)  # dumpcap running before the first frame
    lab.popen("sw1", [PTP_SWITCH, "run", "-m", "-f", str(cfg), transport, "-i", "p1", "-i", "p2"],
              stdout=log.open("w"), stderr=subprocess.STDOUT)
    p4.start_ptp4l(lab, "sl", "slave", transport=transport, overrides=ov)
    time.sleep(9)
    for node in ("gm", "sl"):  # management over the network, answered by the switch's port on that link
        # pmc restarts its wait on every frame it reads (L2 gets all PTP traffic): bound it with timeout
        lab.run(node, ["timeout", "4", "pmc", transport, "-i", lab.topology.ports(node)[0], "-b", "0", "-d", "0", "-t", "1",
                       "-s", lab.uds_path(node, "pmcnet"), "GET PORT_DATA_SET", "GET CURRENT_DATA_SET"], timeout=20)
    for proc, _ in caps:
        proc.wait(timeout=30)
    macs = [lab.run("sw1", ["cat", f"/sys/class/net/{i}/address"], check=True).stdout.strip() for i in ("p1", "p2")]
    own = " || ".join(f"eth.src == {m}" for m in macs)
    seen: set[str] = set()
    total = 0
    for _, path in caps:
        rows = tshark_fields(path, f"({own}) && ptp", "frame.number", "ptp.v2.messagetype")
        total += len(rows)
        seen |= {TYPE_NAMES.get(int(r[1], 0), r[1]) for r in rows if r[1]}
        bad = tshark_fields(path, f"({own}) && (_ws.malformed || _ws.expert.severity >= {EXPERT_ERROR})",
                            "frame.number", "_ws.col.Info", "_ws.expert.message")
        assert not bad, f"{path.name}: tshark flags frames the daemon sent: {bad[:10]}"
    want = E2E_TYPES if delay == "E2E" else P2P_TYPES
    print(f"{transport} {delay}: {total} PTP frames from the switch, types {sorted(seen)}")
    assert want <= seen, f"missing {want - seen} among the daemon's frames ({sorted(seen)})\n{log.read_text()[-2000:]}"
    assert total > 50, total
