"""Shared lab fixtures: ``make_lab("line-1", shaping=..., mode=...)`` builds a netns lab that is
always torn down (also when the test fails); every lab of the test is removed at its end.

For tests that run the daemon: ``PTP_SWITCH`` (the console script), ``SWITCH_COMMON`` and
``switch_config_text`` (its config file). For tests that open transports in this process:
``veth_netns_pair`` (two namespaces joined by a veth pair, removed at exit) and ``in_netns`` (this
thread inside a namespace for a ``with`` block).
Import them with ``from tests.lab.conftest import ...``."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from topologies import catalog
from topologies.model import Topology
from topologies.netns import Lab


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(spec: str | Topology, **kw: Any) -> Lab:
        topo = spec if isinstance(spec, Topology) else catalog.get(spec, **kw)
        lab = Lab(topo)
        labs.append(lab)
        lab.up()
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.down()


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Enter a named netns for the duration (sockets opened here stay in it)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


def open_pair(a: str, b: str, make: Callable[[], Any]) -> tuple[Any, Any]:
    """``make()`` once inside namespace ``a`` and once inside ``b``, each opened there (a socket keeps
    the namespace it was made in); the caller closes both."""
    with in_netns(a):
        ta = make()
        ta.open()
    with in_netns(b):
        tb = make()
        tb.open()
    return ta, tb


@contextlib.contextmanager
def veth_netns_pair(tag: str, ipv4_prefix: str, ipv6_prefix: str | None = None) -> Iterator[tuple[str, str]]:
    """Namespaces ``pts<tag><run>a`` and ``...b``, ``eth0`` in each, one veth pair between them, up,
    with ``<ipv4_prefix>.1/24`` and ``.2/24``; with ``ipv6_prefix`` also ``<ipv6_prefix>::1/64`` and
    ``::2/64`` (DAD off) once both link-local addresses are usable. Removed at exit, also on failure."""
    run = uuid.uuid4().hex[:6]
    a, b = f"pts{tag}{run}a", f"pts{tag}{run}b"
    made: list[str] = []
    try:
        for n in (a, b):
            sh("ip", "netns", "add", n)
            made.append(n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
            if ipv6_prefix is not None:
                # no duplicate address detection: link-local addresses usable at once
                sh("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
        for n, i in ((a, 1), (b, 2)):
            sh("ip", "-n", n, "addr", "add", f"{ipv4_prefix}.{i}/24", "dev", "eth0")
            if ipv6_prefix is not None:
                sh("ip", "-n", n, "addr", "add", f"{ipv6_prefix}::{i}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", n, "link", "set", "eth0", "up")
        if ipv6_prefix is not None:
            _wait_ipv6_ready(a, b)
        yield a, b
    finally:
        for n in made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def _wait_ipv6_ready(*names: str, timeout_s: float = 5.0) -> None:
    """Until every eth0 has a usable link-local address, UDPv6 multicast may go nowhere."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outs = [subprocess.run(["ip", "-n", n, "-6", "addr", "show", "dev", "eth0"], capture_output=True, text=True).stdout for n in names]
        if all("scope link" in o and "tentative" not in o for o in outs):
            return
        time.sleep(0.1)


# --- ptp-switch daemons in lab tests: topologies.daemon (shared with the benchmarks) ----------------
from topologies.daemon import PTP_SWITCH, SWITCH_COMMON, start_switch, switch_config_text  # noqa: E402,F401
