"""pmc against the ptp-switch daemon: management forwarding over boundary hops and the security
default, with linuxptp as the peer (shared lab, topology ``direct``: gm -- sl, UDPv4).

* ``pmc -u -b 1`` on the daemon's UNIX socket reaches the neighbour: the request goes out on the
  network port with boundaryHops 0, ptp4l answers, the daemon hands the answer to pmc - two
  DEFAULT_DATA_SETs (the daemon's and the ptp4l GM's); ``-b 0`` gives only the daemon's.
* SET from the network is refused with MANAGEMENT_ERROR_STATUS and changes nothing;
  the same SET on the UNIX socket is obeyed.
"""

from __future__ import annotations

import re
import shutil
import time
from typing import Callable

import pytest

from topologies import ptp4l as p4
from topologies.netns import Lab

pytest.importorskip("controlplane.core.clock", reason="the core's clock (controlplane.core.clock) has not landed")
if shutil.which("ptp4l") is None or shutil.which("pmc") is None:  # pragma: no cover - setup installs linuxptp
    pytest.skip("linuxptp (ptp4l, pmc) not installed; run make setup", allow_module_level=True)

pytestmark = [pytest.mark.lab]

IDENT_RE = re.compile(r"^\s*(\w{6}\.\w{4}\.\w{6})-\d+ seq \d+ RESPONSE MANAGEMENT DEFAULT_DATA_SET", re.M)


def _pmc_uds(lab: Lab, node: str, uds: str, hops: int, *cmds: str) -> str:
    res = lab.run(node, ["pmc", "-u", "-b", str(hops), "-s", uds, *cmds], timeout=20)
    return res.stdout


def test_pmc_boundary_hops_forwarding_and_network_set_refused(make_lab: Callable[..., Lab]) -> None:
    from tests.lab.conftest import start_switch

    lab = make_lab("direct")
    gm = p4.start_ptp4l(lab, "gm", "gm", transport="-4")
    proc, log, uds = start_switch(lab, "sl", {"priority1": "200", "free_running": "1"}, ["-4"], tag="pmcfw")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "to SLAVE on" not in log.read_text(errors="replace") \
            and "to UNCALIBRATED on" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-1500:]
        time.sleep(0.5)
    gm_ident = re.search(r"selected local clock (\S+) as best master", gm.text())
    assert gm_ident, gm.text()[-1000:]

    local_only = _pmc_uds(lab, "sl", uds, 0, "GET DEFAULT_DATA_SET")
    both = _pmc_uds(lab, "sl", uds, 1, "GET DEFAULT_DATA_SET")
    print(f"-b 0:\n{local_only}\n-b 1:\n{both}")
    assert len(IDENT_RE.findall(local_only)) == 1, local_only
    idents = set(IDENT_RE.findall(both))
    assert len(idents) == 2 and gm_ident.group(1) in idents, both
    assert re.search(r"priority1\s+10\b", both) and re.search(r"priority1\s+200\b", both), both

    # SET from the network (pmc in the GM's namespace; ptp4l there does not hear its own namespace)
    net = lab.run("gm", ["pmc", "-4", "-i", lab.topology.ports("gm")[0], "-b", "0", "SET PRIORITY2 5"], timeout=20).stdout
    print(f"network SET:\n{net}")
    # (pmc 3.1.1 prints no error id; which one it is - NOT_SUPPORTED - is in tests/unit/test_core_management.py)
    assert "RESPONSE MANAGEMENT_ERROR_STATUS" in net, net
    after = _pmc_uds(lab, "sl", uds, 0, "GET PRIORITY2")
    assert re.search(r"priority2\s+128\b", after), after
    # the same SET on the local socket is obeyed
    assert re.search(r"priority2\s+5\b", _pmc_uds(lab, "sl", uds, 0, "SET PRIORITY2 5")), "local SET refused"
    assert proc.poll() is None, log.read_text(errors="replace")[-1500:]
