"""Mininet builds the same Topology and passes traffic (Linux-bridge switches, no controller)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from topologies import catalog
from topologies.mininet import MininetLab, MininetUnavailable, check_available


def _require_mininet() -> None:
    try:
        check_available()
    except MininetUnavailable as exc:
        pytest.fail(f"Mininet cannot start on this machine: {exc}")


def test_mininet_line_2_pingall() -> None:
    _require_mininet()
    with MininetLab(catalog.get("line-2")) as net:
        prefix = net.ptp_names["gm"][:-1]
        assert net.pingAll(timeout=2) == 0
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert prefix not in out, "Mininet links of this run left in the root namespace"


def test_mininet_atr_routes() -> None:
    _require_mininet()
    topo = catalog.get("atr")
    with MininetLab(topo) as net:
        cl = net.get(net.ptp_names["cl"])
        out = cl.cmd(f"ping -c1 -W2 {topo.addr('srv1', 'cl')}")
        assert " 0% packet loss" in out, out


def test_mn_custom_file_builds_the_topology() -> None:
    """The ``mn --custom`` file yields the same graph. (Not run through ``mn`` here: on any error
    ``mn`` runs its global cleanup, which would also remove other engineers' Mininet runs.)"""
    _require_mininet()
    import pathlib
    import runpy

    path = pathlib.Path(__file__).resolve().parents[2] / "topologies" / "mn_custom.py"
    ns = runpy.run_path(str(path))
    topo = ns["topos"]["ptps"]("line-2")
    assert sorted(topo.hosts()) == ["gm", "sl"] and sorted(topo.switches()) == ["sw1", "sw2"]
    assert len(topo.links()) == 3
