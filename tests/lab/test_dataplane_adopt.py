"""Restart adoption: a process that attached the dataplane dies by SIGKILL; the programs keep
correcting; a new process adopts them (pins through ``ip netns exec``'s private mount namespace, or
the attached programs) without recompiling, then detaches cleanly (programs and pins gone)."""

from __future__ import annotations

import os
import sys

import pytest

from bench.dataplane import residence_run
from topologies import catalog

pytestmark = [pytest.mark.lab]

ATTACH_AND_HANG = (
    "import sys, time\n"
    "from dataplane.loader import Dataplane\n"
    "dp = Dataplane(sys.argv[1:]).attach()\n"
    "print('pinned' if dp.pin_dir else 'unpinned', dp.pin_dir, flush=True)\n"
    "time.sleep(600)\n"
)


def test_sigkilled_owner_then_adopt(make_lab):
    from dataplane.loader import PIN_ROOT, Dataplane, DataplaneError

    lab = make_lab(catalog.parse("gm sw1 sl | sw1 sl2", name="dp-adopt"))
    ports = list(lab.switch_ports("sw1"))
    owner = lab.popen("sw1", [sys.executable, "-c", ATTACH_AND_HANG, *ports], stdout=-1, text=True,
                      cwd=os.getcwd())
    line = owner.stdout.readline()
    assert line.startswith("pinned"), f"the owner (inside ip netns exec) did not pin: {line!r}"
    owner.kill()                                    # SIGKILL: no cleanup ran
    owner.wait(timeout=10)
    ino = os.stat(f"/run/netns/{lab.ns('sw1')}").st_ino
    pins = PIN_ROOT / str(ino)
    assert (pins / "prog_tc_egress").exists() and (pins / "map_ptp_ingress").exists(), sorted(os.listdir(pins))

    # the orphaned programs keep correcting
    samples = residence_run(lab, count=60, interval_s=0.01)
    assert len(samples) >= 100 and all(s.added_ns > 0 for s in samples), samples[:3]

    dp = lab.in_node("sw1", lambda: Dataplane.adopt(ports))
    try:
        assert {(p.ingress_hook, p.tc_api) for p in dp.ports.values()} == {("tc", "tcx")}  # auto on veth
        before = dp.stats()[ports[1]]["SYNC"]["corrected"]
        assert before >= 50, dp.stats()                   # counters survived the owner
        samples = residence_run(lab, count=40, interval_s=0.01)
        assert len(samples) >= 70 and all(s.added_ns > 0 for s in samples)
        assert dp.stats()[ports[1]]["SYNC"]["corrected"] >= before + 35
        dp.set_port(ports[0], rate_ratio=1.0)               # typed writes work on adopted maps
        # a dataplane built from other sources is refused (the daemon then attaches a fresh one)
        dp.maps.build_id = 0x1234
        dp.maps.set_global(dp.maps.get_global())
        with pytest.raises(DataplaneError, match="another build"):
            lab.in_node("sw1", lambda: Dataplane.adopt(ports, pin=False))
    finally:
        lab.in_node("sw1", dp.detach)
    assert not pins.exists(), "detach left the pin directory"
    with pytest.raises(DataplaneError, match="nothing to adopt"):
        lab.in_node("sw1", lambda: Dataplane.adopt(ports))


def test_attach_twice_replaces_never_stacks(make_lab):
    """The CLI attach run twice leaves exactly one of our programs per hook (tcx replace, XDP replace);
    detach leaves none and removes the pins."""
    from dataplane import libbpf
    from dataplane.loader import PIN_ROOT, _prog_name_by_id

    lab = make_lab(catalog.parse("gm sw1 sl", name="dp-reattach"))
    ports = list(lab.switch_ports("sw1"))
    cli = [sys.executable, "-m", "controlplane.services.cli", "dataplane"]
    ifs = [a for p in ports for a in ("-i", p)]

    def ours() -> dict[str, list[str]]:
        def q() -> dict[str, list[str]]:
            from dataplane.loader import _ipr, _xdp_prog_id

            out = {}
            with _ipr() as ipr:
                for p in ports:
                    idx = ipr.link_lookup(ifname=p)[0]
                    names = [_prog_name_by_id(i) for t in (libbpf.BPF_TCX_INGRESS, libbpf.BPF_TCX_EGRESS)
                             for i in libbpf.prog_query(idx, t)]
                    xdp = _xdp_prog_id(ipr, idx)
                    out[p] = sorted([n for n in names if n] + ([_prog_name_by_id(xdp)] if xdp else []))
            return out
        return lab.in_node("sw1", q)

    for _ in range(2):
        res = lab.run("sw1", cli + ["attach", "--mode", "e2e", "--ingress-hook", "xdp", *ifs], timeout=120)
        assert res.returncode == 0, res.stderr[-500:]
        assert "egress tcx" in res.stdout, res.stdout
    assert ours() == {p: ["tc_egress", "xdp_ingress"] for p in ports}
    res = lab.run("sw1", cli + ["attach", "--mode", "e2e", *ifs], timeout=120)   # auto: tc on veth
    assert res.returncode == 0, res.stderr[-500:]
    assert ours() == {p: ["tc_egress", "tc_ingress"] for p in ports}, "switching hooks must remove the XDP program"
    ino = os.stat(f"/run/netns/{lab.ns('sw1')}").st_ino
    assert (PIN_ROOT / str(ino) / "prog_tc_egress").exists()
    res = lab.run("sw1", cli + ["detach", *ifs], timeout=60)
    assert res.returncode == 0, res.stderr[-500:]
    assert ours() == {p: [] for p in ports}
    assert not (PIN_ROOT / str(ino)).exists()
