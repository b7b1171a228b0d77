"""What the demo and the bench run, as data: a chain GM -> N switches -> slaves, one implementation.

``ChainSpec`` says which implementation runs in the switches (a plain Linux bridge, the ptp-switch
eBPF dataplane / daemon, or linuxptp's ptp4l as TC or BC), how many hops, how many slaves, and
where the congestion sits. ``ChainSpec.topology()`` turns it into a ``topologies.model.Topology``
that the netns lab builds; ``bench.scenarios_run.run_chain`` runs it (I/O lives there).

Congestion (ANCHORS.md section 1; this kernel has no netem): an HTB serializer plus paced cross
traffic on every hop leaving a switch toward the slaves.
- Bridge-mode switches (plain bridge, ptp-switch TC) get the queue *inside* the switch
  (``where=internal``: brA -> ia [HTB] -> ib -> brB -> port), i.e. between the outer ingress and
  egress ports where a transparent clock's residence time is measured.
- ptp4l as TC/BC forwards PTP itself on bare ports; its RX/TX software stamps are taken at the
  veths, so the queue goes on its egress port (``where=egress``), again between its RX and TX stamps.
A switch carries at most one internal queue, so with two slaves only the first slave's last hop is
congested; every earlier hop is congested for both slaves. The same holds for the egress layout.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from topologies import catalog
from topologies.model import Shaping, SwitchMode, Topology, TopologyError


class Impl(enum.StrEnum):
    BRIDGE = "bridge"
    PTPS_E2E = "ptps-e2e"
    PTPS_P2P = "ptps-p2p"
    PTPS_BC = "ptps-bc"
    LINUXPTP_E2E = "linuxptp-e2e"
    LINUXPTP_P2P = "linuxptp-p2p"
    LINUXPTP_BC = "linuxptp-bc"


LABELS = {
    Impl.BRIDGE: "plain bridge",
    Impl.PTPS_E2E: "ptp-switch E2E TC",
    Impl.PTPS_P2P: "ptp-switch P2P TC",
    Impl.PTPS_BC: "ptp-switch BC",
    Impl.LINUXPTP_E2E: "linuxptp E2E_TC",
    Impl.LINUXPTP_P2P: "linuxptp P2P_TC",
    Impl.LINUXPTP_BC: "linuxptp BC",
}

# demo --mode -> the ptp-switch implementation shown next to the plain bridge
DEMO_MODES = {"e2e": Impl.PTPS_E2E, "p2p": Impl.PTPS_P2P, "bc": Impl.PTPS_BC}

# ptp4l clock_type and delay mechanism of the end nodes for each implementation
P2P_IMPLS = frozenset({Impl.PTPS_P2P, Impl.LINUXPTP_P2P})
BRIDGE_MODE_IMPLS = frozenset({Impl.BRIDGE, Impl.PTPS_E2E, Impl.PTPS_P2P})
LINUXPTP_CLOCK_TYPE = {Impl.LINUXPTP_E2E: "E2E_TC", Impl.LINUXPTP_P2P: "P2P_TC", Impl.LINUXPTP_BC: "OC"}
PTPS_CLOCK_TYPE = {Impl.PTPS_E2E: "E2E_TC", Impl.PTPS_P2P: "P2P_TC", Impl.PTPS_BC: "BC"}


@dataclass(frozen=True)
class ChainSpec:
    impl: Impl
    hops: int = 3
    slaves: int = 1
    congested: bool = True
    transport: str = "UDPv4"  # ptp4l network_transport of every node
    shaping: Shaping = Shaping()
    ingress_hook: str = "auto"  # ptp-switch E2E TC only: the dataplane's ingress hook (auto = XDP, else tc)

    def __post_init__(self) -> None:
        if not 1 <= self.hops <= 8:
            raise TopologyError(f"hops {self.hops} outside 1..8")
        if not 1 <= self.slaves <= 4:
            raise TopologyError(f"slaves {self.slaves} outside 1..4")
        if self.ingress_hook not in ("auto", "xdp", "tc"):
            raise TopologyError(f"ingress_hook {self.ingress_hook!r}: auto, xdp or tc")
        if self.transport not in ("UDPv4", "UDPv6", "L2"):
            raise TopologyError(f"transport {self.transport!r}: UDPv4, UDPv6 or L2")

    @property
    def label(self) -> str:
        return LABELS[self.impl]

    @property
    def switch_mode(self) -> SwitchMode:
        return SwitchMode.BRIDGE if self.impl in BRIDGE_MODE_IMPLS else SwitchMode.BARE

    @property
    def delay_mechanism(self) -> str:
        return "P2P" if self.impl in P2P_IMPLS else "E2E"

    @property
    def switches(self) -> tuple[str, ...]:
        return tuple(f"sw{i}" for i in range(1, self.hops + 1))

    @property
    def slave_names(self) -> tuple[str, ...]:
        return ("sl",) if self.slaves == 1 else tuple(f"sl{i}" for i in range(1, self.slaves + 1))

    def text(self) -> str:
        """The one-line topology (topologies.catalog text form) with the congestion operators."""
        op = (">i" if self.switch_mode is SwitchMode.BRIDGE else ">q") if self.congested else ""
        sep = f" {op} " if op else " "
        first, *others = self.slave_names
        chain = "gm " + sep.join([*self.switches, first])
        groups = [chain] + [f"{self.switches[-1]} {s}" for s in others]
        return " | ".join(groups)

    def topology(self) -> Topology:
        name = f"{self.impl}-{self.hops}hop"
        return catalog.parse(self.text(), name=name, mode=self.switch_mode, shaping=self.shaping)

    def congested_hops(self, slave: str) -> int:
        """How many queues lie on the GM -> ``slave`` path."""
        if not self.congested:
            return 0
        return self.hops if slave == self.slave_names[0] else self.hops - 1
