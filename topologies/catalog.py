"""Named topologies and the one-line text form.

Text form (after mlichvar/linuxptp-testsuite): groups separated by ``|``, each group a chain of
nodes linked in order. ``"gm sw1 sl"`` == ``"gm sw1 | sw1 sl"``. Roles come from the name prefix
(``gm`` grandmaster, ``sl``/``cl`` slave, ``sw`` switch, ``r``/``rt`` router, else host) or an
explicit suffix ``name:role`` (role: gm, sl, sw, rt, host or the full word); ``name@N`` sets
priority1. Between two nodes an operator may shape the link:
``>q`` queue on the left node's egress toward the right one, ``<q`` the reverse; ``>i`` / ``<i``
the same queue placed inside the sending switch (``where=internal``). Example:
``"gm sw1 >q sl"`` is line-1 with congestion on the switch's port toward the slave.

Interfaces are named in order of appearance: switches and routers ``p1, p2, ...``; others
``eth0, eth1, ...``.
"""

from __future__ import annotations

import re

from topologies.model import Direction, Link, Node, Role, Shaping, SwitchMode, Topology, TopologyError, Where

_ROLE_WORDS = {
    "gm": Role.GRANDMASTER,
    "grandmaster": Role.GRANDMASTER,
    "sl": Role.SLAVE,
    "slave": Role.SLAVE,
    "sw": Role.SWITCH,
    "switch": Role.SWITCH,
    "rt": Role.ROUTER,
    "router": Role.ROUTER,
    "host": Role.HOST,
    "h": Role.HOST,
}
_OPS = {">q": (Direction.A_TO_B, Where.EGRESS), "<q": (Direction.B_TO_A, Where.EGRESS),
        ">i": (Direction.A_TO_B, Where.INTERNAL), "<i": (Direction.B_TO_A, Where.INTERNAL)}
_TOKEN = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)(?::(?P<role>[a-z]+))?(?:@(?P<prio>\d+))?$")


def role_from_name(name: str) -> Role:
    low = name.lower()
    if low.startswith("gm") or low.startswith("srv"):
        return Role.GRANDMASTER
    if low.startswith("sl") or low.startswith("cl"):
        return Role.SLAVE
    if low.startswith("sw"):
        return Role.SWITCH
    if re.match(r"^(rt|r)\d*$", low) or low.startswith("router"):
        return Role.ROUTER
    return Role.HOST


def parse(text: str, *, name: str | None = None, mode: SwitchMode = SwitchMode.BRIDGE, shaping: Shaping | None = None) -> Topology:
    """Parse the one-line text form. ``shaping`` is the template for ``>q``-style operators."""
    if not text or not text.strip():
        raise TopologyError("empty topology text")
    template = shaping or Shaping()
    nodes: dict[str, Node] = {}
    counters: dict[str, int] = {}
    links: list[Link] = []

    def node_of(token: str) -> str:
        m = _TOKEN.match(token)
        if not m:
            raise TopologyError(f"bad node token {token!r} (expected name[:role][@priority1])")
        nm = m.group("name")
        role = role_from_name(nm)
        if m.group("role"):
            if m.group("role") not in _ROLE_WORDS:
                raise TopologyError(f"unknown role {m.group('role')!r} in {token!r}; one of {sorted(_ROLE_WORDS)}")
            role = _ROLE_WORDS[m.group("role")]
        prio = int(m.group("prio")) if m.group("prio") else None
        new = Node(nm, role, mode=mode, priority1=prio)
        old = nodes.get(nm)
        if old is None:
            nodes[nm] = new
        elif (m.group("role") and old.role is not role) or (prio is not None and old.priority1 not in (None, prio)):
            raise TopologyError(f"node {nm} declared twice with different role or priority1")
        elif prio is not None:
            nodes[nm] = Node(nm, old.role, mode=mode, priority1=prio)
        return nm

    def next_if(nm: str) -> str:
        n = nodes[nm]
        k = counters.get(nm, 0)
        counters[nm] = k + 1
        return f"p{k + 1}" if n.role in (Role.SWITCH, Role.ROUTER) else f"eth{k}"

    for group in text.split("|"):
        tokens = group.split()
        if not tokens:
            raise TopologyError(f"empty group in {text!r}")
        prev: str | None = None
        pending: tuple[Direction, Where] | None = None
        for tok in tokens:
            if tok in _OPS:
                if prev is None or pending is not None:
                    raise TopologyError(f"operator {tok!r} must stand between two nodes in {group.strip()!r}")
                pending = _OPS[tok]
                continue
            cur = node_of(tok)
            if prev is not None:
                sh = None
                if pending is not None:
                    sh = Shaping(direction=pending[0], where=pending[1], rate_kbit=template.rate_kbit,
                                 burst_bytes=template.burst_bytes, cross_frame_bytes=template.cross_frame_bytes,
                                 cross_interval_us=template.cross_interval_us, strict_rate_kbit=template.strict_rate_kbit)
                links.append(Link(prev, next_if(prev), cur, next_if(cur), shaping=sh))
            elif pending is not None:  # pragma: no cover - guarded above
                raise TopologyError("operator before first node")
            prev, pending = cur, None
        if pending is not None:
            raise TopologyError(f"operator at the end of {group.strip()!r}")
    if not links:
        raise TopologyError(f"topology {text!r} has no links")
    return Topology.build(name or text.strip(), tuple(nodes.values()), links)


def to_text(topo: Topology) -> str:
    """The text form of a topology (one group per link; interface names follow appearance order)."""
    ops = {(Direction.A_TO_B, Where.EGRESS): ">q", (Direction.B_TO_A, Where.EGRESS): "<q",
           (Direction.A_TO_B, Where.INTERNAL): ">i", (Direction.B_TO_A, Where.INTERNAL): "<i"}
    declared: set[str] = set()

    def tok(n: str) -> str:
        node = topo.node(n)
        out = n
        if n not in declared:
            if role_from_name(n) is not node.role:
                out += ":" + {Role.GRANDMASTER: "gm", Role.SLAVE: "sl", Role.SWITCH: "sw", Role.ROUTER: "rt", Role.HOST: "host"}[node.role]
            if node.priority1 is not None:
                out += f"@{node.priority1}"
            declared.add(n)
        return out

    groups = []
    for link in topo.links:
        mid = f" {ops[(link.shaping.direction, link.shaping.where)]} " if link.shaping else " "
        groups.append(f"{tok(link.a)}{mid}{tok(link.b)}")
    return " | ".join(groups)


# -- the named topologies -------------------------------------------------------------------
def _line(n: int) -> str:
    if n == 0:
        return "gm sl"
    return " ".join(["gm", *(f"sw{i}" for i in range(1, n + 1)), "sl"])


NAMED_TEXT = {
    "direct": "gm sl",
    "star": "gm sw1 sl1 | sw1 sl2 | sw1 sl3 | sw1 sl4",
    "dual-gm": "gm1@10 sw1 | gm2@20 sw1 | sw1 sl1 | sw1 sl2",
    "ring": "gm sw1 sw2 sw3 sw1 | sw3 sl",
    "atr": "srv1@10 sw1 | srv2@20 sw1 | sw1 r1 cl",
}
# modes a topology needs by default (a loop of bridges with STP off would storm)
_DEFAULT_MODE = {"ring": SwitchMode.BARE}
NAMES = ("direct", "line-N", "star", "dual-gm", "ring", "atr")


def get(spec: str, *, mode: SwitchMode | str | None = None, shaping: Shaping | None = None) -> Topology:
    """A named topology (``direct``, ``line-N``, ``star``, ``dual-gm``, ``ring``, ``atr``) or a text form.

    ``shaping``, when given, is placed on every link that leaves a switch away from the grandmaster
    (``Topology.downstream_links``), oriented so the switch sends into the queue.
    """
    spec = spec.strip()
    m = re.fullmatch(r"line-(\d+)", spec)
    if m:
        count = int(m.group(1))
        if count > 60:
            raise TopologyError(f"line-{count}: at most 60 switches")
        text, name = _line(count), spec
    elif spec in NAMED_TEXT:
        text, name = NAMED_TEXT[spec], spec
    elif " " in spec or "|" in spec:
        text, name = spec, spec
    else:
        raise TopologyError(f"unknown topology {spec!r}: one of {', '.join(NAMES)} or a text form like 'gm sw1 sl'")
    use_mode = SwitchMode(mode) if mode is not None else _DEFAULT_MODE.get(name, SwitchMode.BRIDGE)
    topo = parse(text, name=name, mode=use_mode)
    if shaping is not None:
        topo = topo.with_shaping(shaping)
    return topo
