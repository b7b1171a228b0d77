"""pmc's linuxptp-specific queries against the ptp-switch daemon (shared lab, topology ``direct``:
ptp4l GM -- ptp-switch free-running slave, UDPv4): TIME_STATUS_NP, PORT_PROPERTIES_NP,
GRANDMASTER_SETTINGS_NP and CLOCK_DESCRIPTION are answered (not NOT_SUPPORTED) with plausible
values: gmPresent true and gmIdentity = the ptp4l GM, master_offset the free-running slave's
offset (pure error here: one kernel clock), ingress_time a PTP time of today."""

from __future__ import annotations

import re
import shutil
import time
from typing import Callable

import pytest

from topologies import ptp4l as p4
from topologies.netns import Lab

if shutil.which("ptp4l") is None or shutil.which("pmc") is None:  # pragma: no cover - setup installs linuxptp
    pytest.skip("linuxptp (ptp4l, pmc) not installed; run make setup", allow_module_level=True)

pytestmark = [pytest.mark.lab]


def _field(text: str, name: str) -> str:
    m = re.search(rf"^\s*{name}\s+(\S+)", text, re.M)
    assert m, f"no {name} in:\n{text}"
    return m.group(1)


def test_pmc_np_queries_answered(make_lab: Callable[..., Lab]) -> None:
    from tests.lab.conftest import start_switch

    lab = make_lab("direct")
    gm = p4.start_ptp4l(lab, "gm", "gm", transport="-4")
    proc, log, uds = start_switch(lab, "sl", {"priority1": "200", "free_running": "1"}, ["-4", "-s"], tag="pmcnp")
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and len(re.findall(r"master offset", log.read_text(errors="replace"))) < 3:
        assert proc.poll() is None, log.read_text(errors="replace")[-1500:]
        time.sleep(0.5)
    gm_ident = re.search(r"selected local clock (\S+) as best master", gm.text())
    assert gm_ident, gm.text()[-1000:]
    out = lab.run("sl", ["pmc", "-u", "-b", "0", "-s", uds, "GET TIME_STATUS_NP", "GET PORT_PROPERTIES_NP",
                         "GET GRANDMASTER_SETTINGS_NP", "GET CLOCK_DESCRIPTION"], timeout=20).stdout
    print(out)
    assert "MANAGEMENT_ERROR_STATUS" not in out, out
    assert "RESPONSE MANAGEMENT TIME_STATUS_NP" in out, out
    assert _field(out, "gmPresent") == "true" and _field(out, "gmIdentity") == gm_ident.group(1), out
    assert abs(int(_field(out, "master_offset"))) < 1_000_000, out  # free-running over one kernel clock
    ingress = int(_field(out, "ingress_time"))
    assert abs(ingress - time.time_ns()) < 3_600 * 10**9, out  # a PTP time of this hour (TAI vs UTC: 37 s)
    assert "RESPONSE MANAGEMENT PORT_PROPERTIES_NP" in out and _field(out, "portState") == "SLAVE", out
    assert _field(out, "interface") == lab.topology.ports("sl")[0], out
    assert "RESPONSE MANAGEMENT GRANDMASTER_SETTINGS_NP" in out and "RESPONSE MANAGEMENT CLOCK_DESCRIPTION" in out, out
    assert proc.poll() is None, log.read_text(errors="replace")[-1500:]
