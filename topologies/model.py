"""Topologies as data: nodes, links, shaping and the L2/L3 segments they form.

Pure (no I/O): the netns lab builder (topologies/netns.py), Mininet (topologies/mininet.py) and the
protocol simulator all read the same frozen descriptions.

Vocabulary
- A *switch* is L2-transparent: in mode ``bridge`` its ports are enslaved to a Linux bridge (the
  eBPF dataplane attaches to the ports), in mode ``bare`` the ports stand alone for a daemon that
  forwards itself (each bare port then gets an address on its own link segment).
- A *router* forwards IP: every link of a router is its own segment (an IPv4 /24 and an IPv6 /64).
- A *segment* is a set of interfaces that share one L2 broadcast domain; segment ``i`` (1-based)
  gets ``10.251.i.0/24`` and ``fd00:251:0:i::/64``. Addresses never leave the lab's namespaces.
- *Shaping* puts real queueing delay (HTB serializer + paced cross traffic; this kernel has no netem)
  on ONE direction of a link: ``direction`` names the sending end; ``where`` says whether the queue
  sits on that end's egress port (``egress``) or inside that switch, between its other ports and
  this one (``internal``: two bridges joined by an internal veth whose egress is shaped).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections import deque
from dataclasses import dataclass, field


class TopologyError(ValueError):
    """A topology description is invalid (the caller's data, not the machine)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Role(enum.StrEnum):
    GRANDMASTER = "grandmaster"
    SLAVE = "slave"
    SWITCH = "switch"
    ROUTER = "router"
    HOST = "host"


class SwitchMode(enum.StrEnum):
    BRIDGE = "bridge"  # ports enslaved to br0 (plain bridge, or the eBPF dataplane on the ports)
    BARE = "bare"  # ports stand alone, addressed per link: a daemon forwards itself


class Where(enum.StrEnum):
    EGRESS = "egress"  # HTB on the sending end's port toward the link
    INTERNAL = "internal"  # inside the sending switch: brA -> ia (HTB) -> ib -> brB -> port


class Direction(enum.StrEnum):
    A_TO_B = "a->b"
    B_TO_A = "b->a"


# HTB handles used by every shaped interface (topologies/shaping.py builds them). The dataplane
# puts PTP event messages into the strict-priority class by setting skb->priority to
# STRICT_PRIORITY_CLASSID; everything else (cross traffic, normal traffic) goes to SHAPED_CLASSID.
HTB_HANDLE = 0x00010000
STRICT_PRIORITY_CLASSID = 0x00010001  # "1:1": prio 0, rate far above the shaped class
SHAPED_CLASSID = 0x00010010  # "1:10" (tc minor numbers are hex): the default class, the serializer


@dataclass(frozen=True)
class Shaping:
    """Asymmetric variable delay from real queueing on one direction of a link.

    Defaults are the recipe of ANCHORS.md section 1: a 20 mbit serializer (a 1514-byte frame holds
    the queue ~605 us) loaded by 1514-byte cross frames every 720 us (~1390 frames/s, ~84 % load).
    """

    direction: Direction = Direction.A_TO_B
    where: Where = Where.EGRESS
    rate_kbit: int = 20_000
    burst_bytes: int = 1
    cross_frame_bytes: int = 1514
    cross_interval_us: int = 720  # 0 = no cross traffic (HTB only)
    strict_rate_kbit: int = 1_000_000  # the strict-priority class 1:1

    def __post_init__(self) -> None:
        if self.rate_kbit <= 0 or self.strict_rate_kbit <= 0:
            raise TopologyError("shaping rates must be positive")
        if not 60 <= self.cross_frame_bytes <= 1514:
            raise TopologyError(f"cross_frame_bytes {self.cross_frame_bytes} outside 60..1514")
        if self.cross_interval_us < 0:
            raise TopologyError("cross_interval_us must be >= 0")
        if self.burst_bytes < 1:
            raise TopologyError("burst_bytes must be >= 1")

    @property
    def cross_rate_pps(self) -> float:
        return 0.0 if self.cross_interval_us == 0 else 1e6 / self.cross_interval_us

    @property
    def frame_hold_us(self) -> float:
        """How long one cross frame holds the serializer."""
        return self.cross_frame_bytes * 8 * 1000 / self.rate_kbit


@dataclass(frozen=True)
class Node:
    name: str
    role: Role
    mode: SwitchMode = SwitchMode.BRIDGE  # switches only
    priority1: int | None = None  # grandmasters: the priority1 their ptp4l/daemon should use

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or not self.name[0].isalpha():
            raise TopologyError(f"node name {self.name!r}: use letters, digits and '_', starting with a letter")
        if len(self.name) > 12:
            raise TopologyError(f"node name {self.name!r} longer than 12 characters")
        if self.priority1 is not None and not 0 <= self.priority1 <= 255:
            raise TopologyError(f"priority1 {self.priority1} outside 0..255")

    @property
    def is_switch(self) -> bool:
        return self.role is Role.SWITCH

    @property
    def is_end(self) -> bool:
        return self.role in (Role.GRANDMASTER, Role.SLAVE, Role.HOST)


@dataclass(frozen=True)
class Link:
    a: str
    a_if: str
    b: str
    b_if: str
    shaping: Shaping | None = None

    def __post_init__(self) -> None:
        for ifname in (self.a_if, self.b_if):
            if not ifname or len(ifname) > 15 or not ifname.replace("_", "").isalnum() or ifname in ("lo", "br0", "brA", "brB", "ia", "ib"):
                raise TopologyError(f"interface name {ifname!r} not allowed (1..15 alnum, not a lab-internal name)")
        if self.a == self.b:
            raise TopologyError(f"link {self.a}-{self.b} connects a node to itself")

    def end(self, node: str) -> str:
        """This link's interface on ``node``."""
        if node == self.a:
            return self.a_if
        if node == self.b:
            return self.b_if
        raise TopologyError(f"node {node} is not on link {self.a}-{self.b}")

    def peer(self, node: str) -> str:
        if node == self.a:
            return self.b
        if node == self.b:
            return self.a
        raise TopologyError(f"node {node} is not on link {self.a}-{self.b}")

    @property
    def shaped_sender(self) -> str | None:
        """The node whose egress (or internals) carries this link's queue."""
        if self.shaping is None:
            return None
        return self.a if self.shaping.direction is Direction.A_TO_B else self.b


@dataclass(frozen=True)
class Member:
    node: str
    ifname: str  # the interface that carries the address ("br0" is never addressed: ends and bare ports are)
    v4: str  # "10.251.1.1/24"
    v6: str  # "fd00:251:0:1::1/64"


@dataclass(frozen=True)
class Subnet:
    index: int
    v4: str  # network, "10.251.1.0/24"
    v6: str  # network, "fd00:251:0:1::/64"
    members: tuple[Member, ...]
    links: tuple[int, ...]  # indexes into Topology.links


@dataclass(frozen=True)
class Route:
    node: str
    dst_v4: str
    dst_v6: str
    via_v4: str
    via_v6: str


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    subnets: tuple[Subnet, ...] = field(default=())
    routes: tuple[Route, ...] = field(default=())

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def build(cls, name: str, nodes: list[Node] | tuple[Node, ...], links: list[Link] | tuple[Link, ...]) -> Topology:
        """Validate and derive subnets, addresses and static routes."""
        nodes = tuple(nodes)
        links = tuple(links)
        _validate(nodes, links)
        subnets = _subnets(nodes, links)
        routes = _routes(nodes, links, subnets)
        return cls(name=name, nodes=nodes, links=links, subnets=subnets, routes=routes)

    # -- queries ----------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise TopologyError(f"topology {self.name} has no node {name!r}")

    def by_role(self, role: Role) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role is role)

    def links_of(self, name: str) -> tuple[Link, ...]:
        self.node(name)
        return tuple(link for link in self.links if name in (link.a, link.b))

    def link_between(self, a: str, b: str) -> Link:
        for link in self.links:
            if {link.a, link.b} == {a, b}:
                return link
        raise TopologyError(f"topology {self.name}: no link between {a} and {b}")

    def ifname(self, node: str, peer: str) -> str:
        return self.link_between(node, peer).end(node)

    def ports(self, node: str) -> tuple[str, ...]:
        """A node's link interfaces, in link order (a switch's ports for the dataplane)."""
        return tuple(link.end(node) for link in self.links_of(node))

    def members(self, node: str) -> tuple[Member, ...]:
        return tuple(m for s in self.subnets for m in s.members if m.node == node)

    def subnet_of_link(self, link: Link) -> Subnet:
        idx = self.links.index(link)
        for s in self.subnets:
            if idx in s.links:
                return s
        raise TopologyError(f"link {link.a}-{link.b} has no subnet")  # pragma: no cover - build() assigns all

    def addr(self, node: str, peer: str, family: int = 4) -> str:
        """The address (no prefix length) ``node`` uses toward ``peer``.

        Toward a directly linked peer, the address on that link's segment; for a node across
        switches, the address on the segment the two share; else (across a router) ``node``'s first
        address.
        """
        mine = self.members(node)
        if not mine:
            raise TopologyError(f"{node} has no address (a bridge-mode switch is not addressed)")
        preferred: list[int] = []
        try:
            preferred.append(self.subnet_of_link(self.link_between(node, peer)).index)
        except TopologyError:
            pass
        preferred += [_subnet_containing(self.subnets, m).index for m in self.members(peer)]
        for idx in preferred:
            for m in mine:
                if _subnet_containing(self.subnets, m).index == idx:
                    return _strip(m, family)
        return _strip(mine[0], family)

    def neighbours(self, name: str) -> tuple[str, ...]:
        return tuple(link.peer(name) for link in self.links_of(name))

    def shaped_links(self) -> tuple[Link, ...]:
        return tuple(link for link in self.links if link.shaping is not None)

    def downstream_links(self) -> tuple[Link, ...]:
        """Links leaving a switch away from the grandmaster(s), oriented a=switch (for shaping)."""
        dist = self.hops_from_grandmasters()
        out = []
        for link in self.links:
            for s, o in ((link.a, link.b), (link.b, link.a)):
                if self.node(s).is_switch and dist.get(o, -1) > dist.get(s, -1) >= 0:
                    out.append(link)
        return tuple(out)

    def hops_from_grandmasters(self) -> dict[str, int]:
        dist: dict[str, int] = {}
        queue = deque()
        for gm in self.by_role(Role.GRANDMASTER):
            dist[gm.name] = 0
            queue.append(gm.name)
        while queue:
            cur = queue.popleft()
            for nb in self.neighbours(cur):
                if nb not in dist:
                    dist[nb] = dist[cur] + 1
                    queue.append(nb)
        return dist

    def with_shaping(self, shaping: Shaping | None, links: tuple[Link, ...] | None = None) -> Topology:
        """A copy with ``shaping`` on ``links`` (default: every downstream link), each oriented so the
        switch end sends into the queue."""
        targets = self.downstream_links() if links is None else links
        new_links = []
        for link in self.links:
            if link in targets and shaping is not None:
                dist = self.hops_from_grandmasters()
                a_up = dist.get(link.a, 0) <= dist.get(link.b, 0)
                direction = Direction.A_TO_B if a_up else Direction.B_TO_A
                link = dataclasses.replace(link, shaping=dataclasses.replace(shaping, direction=direction))
            elif link in targets:
                link = dataclasses.replace(link, shaping=None)
            new_links.append(link)
        return Topology.build(self.name, self.nodes, new_links)

    def with_mode(self, mode: SwitchMode) -> Topology:
        nodes = [dataclasses.replace(n, mode=mode) if n.is_switch else n for n in self.nodes]
        return Topology.build(self.name, nodes, self.links)

    def describe(self) -> str:
        lines = [f"topology {self.name}"]
        for n in self.nodes:
            extra = f" mode={n.mode}" if n.is_switch else ""
            extra += f" priority1={n.priority1}" if n.priority1 is not None else ""
            lines.append(f"  node {n.name} {n.role}{extra} ports={','.join(self.ports(n.name))}")
        for link in self.links:
            sh = ""
            if link.shaping:
                sh = f" shaped {link.shaping.where} on {link.shaped_sender}'s egress ({link.shaping.rate_kbit} kbit, cross {link.shaping.cross_frame_bytes} B/{link.shaping.cross_interval_us} us)"
            lines.append(f"  link {link.a}:{link.a_if} -- {link.b}:{link.b_if}{sh}")
        for s in self.subnets:
            mem = " ".join(f"{m.node}:{m.ifname}={m.v4.split('/')[0]}" for m in s.members)
            lines.append(f"  subnet {s.v4} {s.v6} {mem}")
        for r in self.routes:
            lines.append(f"  route {r.node}: {r.dst_v4} via {r.via_v4}")
        return "\n".join(lines)


def _strip(m: Member, family: int) -> str:
    return (m.v4 if family == 4 else m.v6).split("/")[0]


def _subnet_containing(subnets: tuple[Subnet, ...], m: Member) -> Subnet:
    for s in subnets:
        if m in s.members:
            return s
    raise TopologyError(f"member {m} in no subnet")  # pragma: no cover


def _validate(nodes: tuple[Node, ...], links: tuple[Link, ...]) -> None:
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise TopologyError(f"duplicate node names in {names}")
    byname = {n.name: n for n in nodes}
    seen_if: set[tuple[str, str]] = set()
    pairs: set[frozenset[str]] = set()
    for link in links:
        for node, ifname in ((link.a, link.a_if), (link.b, link.b_if)):
            if node not in byname:
                raise TopologyError(f"link {link.a}-{link.b}: unknown node {node!r}")
            if (node, ifname) in seen_if:
                raise TopologyError(f"interface {node}:{ifname} used by two links")
            seen_if.add((node, ifname))
        pair = frozenset((link.a, link.b))
        if pair in pairs:
            raise TopologyError(f"two links between {link.a} and {link.b} (not supported: name lookups by peer)")
        pairs.add(pair)
        if link.shaping is not None:
            sender = byname[link.shaped_sender or ""]
            if link.shaping.where is Where.INTERNAL and not (sender.is_switch and sender.mode is SwitchMode.BRIDGE):
                raise TopologyError(
                    f"internal shaping on {link.a}-{link.b} needs a bridge-mode switch as sender, {sender.name} is {sender.role}"
                    + (f" ({sender.mode})" if sender.is_switch else "")
                )
    for n in nodes:
        internal = [lk for lk in links if lk.shaping and lk.shaping.where is Where.INTERNAL and lk.shaped_sender == n.name]
        if len(internal) > 1:
            raise TopologyError(f"switch {n.name}: at most one internally shaped port (two bridges brA/brB)")
        if n.is_switch and n.mode is SwitchMode.BRIDGE and internal and len([lk for lk in links if n.name in (lk.a, lk.b)]) < 2:
            raise TopologyError(f"switch {n.name}: internal shaping needs at least two ports")
    _check_bridge_loops(byname, links)
    if len(nodes) > 250:
        raise TopologyError("at most 250 nodes")


def _check_bridge_loops(byname: dict[str, Node], links: tuple[Link, ...]) -> None:
    """A cycle through bridge-mode switches would storm (the lab's bridges run without STP)."""
    parent = {n: n for n in byname}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for lk in links:
        na, nb = byname[lk.a], byname[lk.b]
        if not (na.is_switch and nb.is_switch and na.mode is SwitchMode.BRIDGE and nb.mode is SwitchMode.BRIDGE):
            continue
        ra, rb = find(lk.a), find(lk.b)
        if ra == rb:
            raise TopologyError(
                f"bridge-mode switches form a loop at {lk.a}-{lk.b}: the lab's bridges run without STP and would storm; use mode 'bare'"
            )
        parent[ra] = rb


def _subnets(nodes: tuple[Node, ...], links: tuple[Link, ...]) -> tuple[Subnet, ...]:
    """Segments: links joined through bridge-mode switches share one; bare switches and routers split."""
    byname = {n.name: n for n in nodes}
    parent = list(range(len(links)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for n in nodes:
        if n.is_switch and n.mode is SwitchMode.BRIDGE:
            idx = [i for i, lk in enumerate(links) if n.name in (lk.a, lk.b)]
            for i in idx[1:]:
                parent[find(i)] = find(idx[0])
    groups: dict[int, list[int]] = {}
    for i in range(len(links)):
        groups.setdefault(find(i), []).append(i)
    subnets = []
    for sidx, (_, link_idx) in enumerate(sorted(groups.items(), key=lambda kv: min(kv[1])), start=1):
        if sidx > 250:
            raise TopologyError("more than 250 segments")
        members: list[Member] = []
        host = 1
        for i in link_idx:
            lk = links[i]
            for node, ifname in ((lk.a, lk.a_if), (lk.b, lk.b_if)):
                n = byname[node]
                if n.is_switch and n.mode is SwitchMode.BRIDGE:
                    continue
                if any(m.node == node and m.ifname == ifname for m in members):
                    continue
                members.append(
                    Member(node=node, ifname=ifname, v4=f"10.251.{sidx}.{host}/24", v6=f"fd00:251:0:{sidx:x}::{host:x}/64")
                )
                host += 1
        subnets.append(
            Subnet(index=sidx, v4=f"10.251.{sidx}.0/24", v6=f"fd00:251:0:{sidx:x}::/64", members=tuple(members), links=tuple(link_idx))
        )
    return tuple(subnets)


def _routes(nodes: tuple[Node, ...], links: tuple[Link, ...], subnets: tuple[Subnet, ...]) -> tuple[Route, ...]:
    """Static routes so every addressed node reaches every segment (shortest path over routers)."""
    routers = {n.name for n in nodes if n.role is Role.ROUTER}
    if not routers:
        return ()
    # graph: segment <-> router (a router joins the segments of its links)
    seg_of_member = {(m.node, m.ifname): s for s in subnets for m in s.members}
    router_segs: dict[str, list[Subnet]] = {r: [] for r in routers}
    for (node, _), s in seg_of_member.items():
        if node in routers and s not in router_segs[node]:
            router_segs[node].append(s)
    routes: list[Route] = []
    addressed = sorted({m.node for s in subnets for m in s.members})
    for node in addressed:
        my_segs = [s for (n, _), s in seg_of_member.items() if n == node]
        # BFS over segments; remember the first-hop router member on my segment
        first_hop: dict[int, Member] = {}
        queue: deque[tuple[Subnet, Member | None]] = deque((s, None) for s in my_segs)
        seen = {s.index for s in my_segs}
        while queue:
            seg, hop = queue.popleft()
            for r in routers:
                if r == node:
                    continue
                rm = next((m for m in seg.members if m.node == r), None)
                if rm is None:
                    continue
                for other in router_segs[r]:
                    if other.index in seen:
                        continue
                    seen.add(other.index)
                    this_hop = hop if hop is not None else rm
                    first_hop[other.index] = this_hop
                    queue.append((other, this_hop))
        for sidx, hop in sorted(first_hop.items()):
            s = subnets[sidx - 1]
            routes.append(
                Route(node=node, dst_v4=s.v4, dst_v6=s.v6, via_v4=hop.v4.split("/")[0], via_v6=hop.v6.split("/")[0])
            )
    return tuple(routes)


def ip_in(addr: str, net: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network(net)
