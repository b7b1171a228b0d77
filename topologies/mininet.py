"""The same Topology in Mininet (Linux-bridge switches, no controller).

    with MininetLab(catalog.get("line-2")) as net:      # mininet.net.Mininet
        assert net.pingAll() == 0

Mininet's switches and the host ends of its veths live in the ROOT namespace, where names are
shared with everyone on the machine; every Mininet node is therefore named ``m<runid><index>``
(interfaces ``m<runid><index>-ethN``) and cleanup removes only links and processes with this run's
prefix (never ``mn -c``, which would remove every Mininet run on the machine). Grandmasters,
slaves and hosts are Mininet hosts; a bridge-mode switch is a ``LinuxBridge`` (stp off); a bare
switch or a router is a host with addressed ports (routers forward).

Command line: ``mn --custom topologies/mn_custom.py --topo ptps,line-2 --switch lxbr --controller none --test pingall``.
Needs Debian's mininet and bridge-utils (scripts/setup.sh installs both).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

from topologies.model import Role, SwitchMode, Topology


class MininetUnavailable(RuntimeError):
    """Mininet cannot run here; the message says exactly why."""


def check_available() -> None:
    try:
        import mininet.net  # noqa: F401
        import mininet.nodelib  # noqa: F401
    except Exception as exc:
        raise MininetUnavailable(f"mininet does not import ({exc}); install Debian's 'mininet' package (scripts/setup.sh)") from exc
    for tool in ("brctl", "mnexec"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            raise MininetUnavailable(f"{tool} not found (Debian packages bridge-utils and mininet)")
    if os.geteuid() != 0:
        raise MininetUnavailable("Mininet needs root")


def build_topo(topology: Topology, prefix: str | None = None) -> tuple[Any, dict[str, str]]:
    """A ``mininet.topo.Topo`` for ``topology`` and the map topology-name -> Mininet-name."""
    from mininet.nodelib import LinuxBridge
    from mininet.topo import Topo

    names: dict[str, str] = {}
    for i, n in enumerate(topology.nodes):
        names[n.name] = f"{prefix}{i}" if prefix else n.name

    class _Topo(Topo):
        def build(self) -> None:
            for i, n in enumerate(topology.nodes):
                mn_name = names[n.name]
                if n.is_switch and n.mode is SwitchMode.BRIDGE:
                    self.addSwitch(mn_name, cls=LinuxBridge, dpid=f"{i + 1:016x}", stp=False)
                else:
                    members = topology.members(n.name)
                    ip = members[0].v4 if members else None
                    self.addHost(mn_name, ip=ip)
            for link in topology.links:
                self.addLink(names[link.a], names[link.b])

    return _Topo(), names


def configure(net: Any, topology: Topology, names: dict[str, str]) -> None:
    """Addresses on every addressed interface, forwarding on routers, static routes."""
    for n in topology.nodes:
        if n.is_switch and n.mode is SwitchMode.BRIDGE:
            continue
        node = net.get(names[n.name])
        for m in topology.members(n.name):
            intf = _intf_toward(net, topology, names, n.name, m.ifname)
            node.cmd(f"ip addr flush dev {intf}")
            node.cmd(f"ip addr add {m.v4} dev {intf}")
        if n.role is Role.ROUTER:
            node.cmd("sysctl -qw net.ipv4.ip_forward=1")
    for r in topology.routes:
        net.get(names[r.node]).cmd(f"ip route add {r.dst_v4} via {r.via_v4}")


def _intf_toward(net: Any, topology: Topology, names: dict[str, str], node: str, ifname: str) -> str:
    for link in topology.links_of(node):
        if link.end(node) == ifname:
            here, there = net.get(names[node]), net.get(names[link.peer(node)])
            conns = here.connectionsTo(there)
            if conns:
                return conns[0][0].name
    raise MininetUnavailable(f"no Mininet interface for {node}:{ifname}")


@contextlib.contextmanager
def MininetLab(topology: Topology, run_id: str | None = None) -> Iterator[Any]:  # noqa: N802 - reads like a class
    check_available()
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.nodelib import LinuxBridge

    rid = run_id or "".join(secrets.choice("abcdefghjkmnpqrstuvwxyz") for _ in range(4))
    prefix = f"m{rid}"
    setLogLevel("warning")
    topo, names = build_topo(topology, prefix)
    net = None
    try:
        net = Mininet(topo=topo, switch=LinuxBridge, controller=None, autoSetMacs=False, waitConnected=False)
        net.start()
        configure(net, topology, names)
        net.ptp_names = names  # topology name -> Mininet node name
        yield net
    finally:
        if net is not None:
            with contextlib.suppress(Exception):
                net.stop()
        cleanup(prefix)


def cleanup(prefix: str) -> list[str]:
    """Remove root-namespace links/bridges and Mininet shells whose names carry ``prefix`` only."""
    removed = []
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(prefix):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
            removed.append(name)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"mininet:{prefix}" in cmd:
            with contextlib.suppress(OSError):
                os.kill(int(pid), 9)
            removed.append(f"pid {pid}")
    return removed
