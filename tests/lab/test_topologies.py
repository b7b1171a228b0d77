"""Each named topology comes up in network namespaces, passes traffic and leaves nothing behind."""

from __future__ import annotations

import os
import pathlib

import pytest

from topologies import catalog
from topologies.model import Role, SwitchMode
from topologies.netns import LAB_DIR, NETNS_DIR, Lab, list_records, pids_in_netns

NAMES = ["direct", "line-1", "line-3", "star", "dual-gm", "ring", "atr"]


def _leftovers(run_id: str) -> list[str]:
    return sorted(p.name for p in NETNS_DIR.glob(f"pts{run_id}-*")) + sorted(p.name for p in LAB_DIR.glob(f"{run_id}.json"))


@pytest.mark.parametrize("name", NAMES)
def test_topology_up_traffic_down(name: str) -> None:
    topo = catalog.get(name)
    lab = Lab(topo)
    with lab:
        assert all((NETNS_DIR / ns).exists() for ns in lab.namespaces)
        assert any(r["run_id"] == lab.run_id and r["alive"] for r in list_records())
        sleeper = lab.popen(topo.nodes[0].name, ["sleep", "300"])
        # every link whose two ends are addressed passes traffic in both families
        for link in topo.links:
            if topo.members(link.a) and topo.members(link.b) and topo.subnet_of_link(link) is not None:
                ends = [m.node for m in topo.subnet_of_link(link).members]
                if link.a in ends and link.b in ends:
                    assert lab.ping(link.a, link.b), f"{name}: {link.a} -> {link.b}"
                    assert lab.ping(link.b, link.a, family=6), f"{name}: {link.b} -> {link.a} (IPv6)"
        # end to end: every addressed end node reaches every other one (bridges and the router forward)
        ends = [n.name for n in topo.nodes if n.is_end]
        if all(n.mode is SwitchMode.BRIDGE for n in topo.by_role(Role.SWITCH)):
            for dst in ends[1:]:
                assert lab.ping(ends[0], dst), f"{name}: {ends[0]} -> {dst}"
                assert lab.ping(dst, ends[0], family=6), f"{name}: {dst} -> {ends[0]} (IPv6)"
        for sw in topo.by_role(Role.SWITCH):
            assert lab.switch_ports(sw.name) == topo.ports(sw.name)
        pid = sleeper.pid
    assert _leftovers(lab.run_id) == []
    assert not pathlib.Path(f"/proc/{pid}").exists() or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_lab_tears_down_on_exception() -> None:
    lab = Lab(catalog.get("line-2"))
    with pytest.raises(RuntimeError, match="boom"):
        with lab:
            lab.popen("sw1", ["sleep", "300"])
            raise RuntimeError("boom")
    assert _leftovers(lab.run_id) == []


def test_shaped_lab_leaves_no_pacer(make_lab) -> None:  # type: ignore[no-untyped-def]
    from topologies.model import Shaping, Where

    lab = make_lab("line-1", shaping=Shaping(where=Where.INTERNAL))
    assert lab.bridges("sw1") == ("brA", "brB")
    out = lab.run("sw1", ["tc", "class", "show", "dev", "ia"], check=True).stdout
    assert "1:10" in out and "1:1 " in out
    assert pids_in_netns(lab.ns("sw1")), "the cross-traffic pacer runs in the switch namespace"
    lab.down()
    assert _leftovers(lab.run_id) == []


def test_sweep_removes_a_dead_owners_lab() -> None:
    """A lab whose owner was killed (no teardown ran) is removed by the next lab's sweep."""
    import subprocess
    import sys

    code = (
        "import os, signal; from topologies import catalog; from topologies.netns import Lab;"
        "lab = Lab(catalog.get('direct')); lab.up(); print(lab.run_id, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    run_id = res.stdout.strip()
    assert run_id, res.stderr
    assert _leftovers(run_id), "the killed owner left its lab behind (what sweep is for)"
    with Lab(catalog.get("direct")):
        pass
    assert _leftovers(run_id) == []
    assert os.geteuid() == 0
