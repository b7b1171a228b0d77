"""Build a simulated network from a ``topologies.model.Topology`` — the same description the netns
lab and Mininet use.

Roles map to: grandmaster -> OC (priority1 from the node, default 10); slave -> slave-only OC;
host/router -> OC with default priorities; switch -> ``switch_as``: a boundary clock ("bc"), a
transparent clock ("e2e_tc" / "p2p_tc") or a plain bridge ("bridge"). Each link becomes a
point-to-point wire; a shaped link (``Link.shaping``) gets asymmetric, variable queueing delay in
its shaped direction (exponential, mean = the Shaping's frame hold time x load, as a rough
stand-in for the lab's HTB queue).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from controlplane.core.config import ClockConfig, parse
from controlplane.core.sim.engine import Simulator, Wire
from controlplane.core.sim.network import Network, SwitchKind

__all__ = ["SimOptions", "build"]


@dataclass(frozen=True)
class SimOptions:
    switch_as: str = "bc"  # bc | e2e_tc | p2p_tc | bridge
    options: dict[str, str] = field(default_factory=lambda: {"logSyncInterval": "-3", "logAnnounceInterval": "0",
                                                            "logMinDelayReqInterval": "-3", "logMinPdelayReqInterval": "-3"})
    max_freq_ppm: float = 100.0  # each oscillator draws its error uniformly in +-max_freq_ppm
    wander_ppb_per_sqrt_s: float = 1.0
    link_delay_ns: int = 1_000
    link_jitter_ns: int = 0
    residence_min_ns: int = 5_000
    residence_mean_ns: int = 50_000
    free_running_slaves: bool = False
    timestamp_noise_ns: int = 0  # gaussian sigma added to every RX/TX timestamp of a clock


def _cfg(opts: SimOptions, extra: dict[str, str]) -> ClockConfig:
    mech = {"p2p_tc": {"delay_mechanism": "P2P"}}.get(opts.switch_as, {})
    return parse({"global": {**opts.options, **mech, **extra}})


def build(topo: object, sim: Simulator, opts: SimOptions | None = None) -> Network:
    """A Network with one node per topology node; call ``net.start()`` then ``sim.run_until``."""
    from topologies.model import Role, Topology  # data only (no I/O)

    assert isinstance(topo, Topology)
    opts = opts or SimOptions()
    rng = random.Random(sim.rng.getrandbits(64))
    net = Network(sim)
    port_of: dict[tuple[str, str], int] = {}
    for node in topo.nodes:
        ifnames = topo.ports(node.name)
        for i, ifname in enumerate(ifnames, start=1):
            port_of[(node.name, ifname)] = i
        freq = rng.uniform(-opts.max_freq_ppm, opts.max_freq_ppm) * 1000
        if node.role is Role.SWITCH and opts.switch_as != "bc":
            kind = SwitchKind(opts.switch_as)
            cfg = None if kind is SwitchKind.BRIDGE else _cfg(opts, {"clock_type": "E2E_TC" if kind is SwitchKind.E2E_TC else "P2P_TC"})
            net.add_switch(node.name, len(ifnames), kind, cfg, freq_ppb=freq,
                           residence_min_ns=opts.residence_min_ns, residence_mean_ns=opts.residence_mean_ns)
            continue
        extra: dict[str, str] = {}
        if node.role is Role.GRANDMASTER:
            extra["priority1"] = str(node.priority1 if node.priority1 is not None else 10)
            extra["clockClass"] = "6"
        elif node.role is Role.SLAVE:
            extra["slaveOnly"] = "1"
            if opts.free_running_slaves:
                extra["free_running"] = "1"
        elif node.priority1 is not None:
            extra["priority1"] = str(node.priority1)
        if len(ifnames) > 1:
            extra["clock_type"] = "BC"
        net.add_clock(node.name, _cfg(opts, extra), n_ports=max(1, len(ifnames)), freq_ppb=freq,
                      wander_ppb_per_sqrt_s=opts.wander_ppb_per_sqrt_s,
                      initial_offset_ns=int(rng.uniform(-1e6, 1e6)), timestamp_noise_ns=opts.timestamp_noise_ns)
    for link in topo.links:
        jitter = opts.link_jitter_ns
        asym = 0
        if link.shaping is not None:
            sh = link.shaping
            load = (sh.frame_hold_us / sh.cross_interval_us) if sh.cross_interval_us else 0.0
            mean_q = int(sh.frame_hold_us * 1000 * min(load, 0.95) / 2)
            # shaped direction only: represent as asymmetry + jitter on that direction
            jitter = max(jitter, mean_q)
            forward = link.shaped_sender == link.a
            asym = mean_q // 2 if forward else -(mean_q // 2)
        net.connect([(link.a, port_of[(link.a, link.a_if)]), (link.b, port_of[(link.b, link.b_if)])],
                    Wire(opts.link_delay_ns + abs(asym), asym, jitter))
    return net
