"""Topologies as data: the catalog, the text form, segments, addresses, routes, shaping placement."""

from __future__ import annotations

import ast
import pathlib

import pytest

from topologies import catalog
from topologies.model import (
    SHAPED_CLASSID,
    STRICT_PRIORITY_CLASSID,
    Direction,
    Link,
    Node,
    Role,
    Shaping,
    SwitchMode,
    Topology,
    TopologyError,
    Where,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["direct", "line-1", "line-2", "line-7", "star", "dual-gm", "ring", "atr"])
def test_named_topologies_build_and_round_trip(name: str) -> None:
    topo = catalog.get(name)
    assert topo.name == name
    assert topo.by_role(Role.GRANDMASTER)
    again = catalog.parse(catalog.to_text(topo), name=name, mode=topo.nodes[0].mode)
    assert [lk for lk in again.links] == [lk for lk in topo.links]
    assert {(n.name, n.role, n.priority1) for n in again.nodes} == {(n.name, n.role, n.priority1) for n in topo.nodes}


def test_line_n_shape() -> None:
    topo = catalog.get("line-3")
    assert [n.name for n in topo.nodes] == ["gm", "sw1", "sw2", "sw3", "sl"]
    assert topo.ports("sw2") == ("p1", "p2")
    assert topo.ifname("sw1", "gm") == "p1" and topo.ifname("sw1", "sw2") == "p2"
    # bridges make one segment: GM and slave share a /24, switches are not addressed
    assert len(topo.subnets) == 1
    assert topo.addr("gm", "sl") == "10.251.1.1" and topo.addr("sl", "gm") == "10.251.1.2"
    assert topo.addr("sl", "gm", 6) == "fd00:251:0:1::2"
    with pytest.raises(TopologyError, match="not addressed"):
        topo.addr("sw1", "gm")


def test_catalog_contents() -> None:
    assert len(catalog.get("star").by_role(Role.SLAVE)) == 4
    dual = catalog.get("dual-gm")
    assert sorted(n.priority1 for n in dual.by_role(Role.GRANDMASTER)) == [10, 20]
    ring = catalog.get("ring")
    assert all(n.mode is SwitchMode.BARE for n in ring.by_role(Role.SWITCH))
    sw_links = [lk for lk in ring.links if ring.node(lk.a).is_switch and ring.node(lk.b).is_switch]
    assert len(sw_links) == 3


def test_ring_in_bridge_mode_is_refused() -> None:
    with pytest.raises(TopologyError, match="loop"):
        catalog.get("ring", mode="bridge")


def test_bare_switch_ports_get_per_link_segments() -> None:
    topo = catalog.get("line-1", mode="bare")
    assert len(topo.subnets) == 2
    assert topo.addr("sw1", "gm") == "10.251.1.2"
    assert topo.addr("gm", "sw1") == "10.251.1.1"
    assert topo.addr("sw1", "sl") == "10.251.2.1"


def test_atr_routes_through_the_router() -> None:
    topo = catalog.get("atr")
    assert len(topo.subnets) == 2
    routes = {(r.node, r.dst_v4, r.via_v4) for r in topo.routes}
    assert ("cl", "10.251.1.0/24", "10.251.2.1") in routes
    assert ("srv1", "10.251.2.0/24", "10.251.1.3") in routes
    assert ("srv2", "10.251.2.0/24", "10.251.1.3") in routes
    assert not any(r.node == "r1" for r in topo.routes)  # the router is on both segments


def test_two_routers_in_a_row_route_transitively() -> None:
    topo = catalog.parse("gm r1 r2 sl")
    routes = {(r.node, r.dst_v4, r.via_v4) for r in topo.routes}
    assert ("gm", "10.251.3.0/24", "10.251.1.2") in routes
    assert ("gm", "10.251.2.0/24", "10.251.1.2") in routes
    assert ("r1", "10.251.3.0/24", "10.251.2.2") in routes
    assert ("sl", "10.251.1.0/24", "10.251.3.1") in routes


def test_text_form_roles_priorities_and_operators() -> None:
    topo = catalog.parse("gm@7 sw1 >q sl | x:sl <i sw1")
    assert topo.node("gm").priority1 == 7
    assert topo.node("x").role is Role.SLAVE
    q = topo.link_between("sw1", "sl").shaping
    assert q is not None and q.where is Where.EGRESS and q.direction is Direction.A_TO_B
    i = topo.link_between("sw1", "x").shaping
    assert i is not None and i.where is Where.INTERNAL and i.direction is Direction.B_TO_A
    assert topo.link_between("sw1", "x").shaped_sender == "sw1"


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("gm", "no links"),
        ("gm >q", "end"),
        (">q gm sl", "between"),
        ("gm sl | ", "empty group"),
        ("gm sl:bogus", "unknown role"),
        ("gm 9x", "bad node token"),
        ("gm sl | gm sl", "two links"),
        ("gm >i sl", "internal shaping"),
        ("gm@300 sl", "priority1"),
        ("averyveryverylongname sl", "longer than 12"),
    ],
)
def test_text_form_errors_are_typed(text: str, match: str) -> None:
    with pytest.raises(TopologyError, match=match):
        catalog.parse(text)


def test_unknown_name_and_big_line() -> None:
    with pytest.raises(TopologyError, match="unknown topology"):
        catalog.get("mesh")
    with pytest.raises(TopologyError, match="at most"):
        catalog.get("line-61")


def test_with_shaping_orients_downstream() -> None:
    topo = catalog.get("line-2", shaping=Shaping(where=Where.EGRESS))
    shaped = topo.shaped_links()
    assert [(lk.a, lk.b, lk.shaped_sender) for lk in shaped] == [("sw1", "sw2", "sw1"), ("sw2", "sl", "sw2")]
    star = catalog.get("star", shaping=Shaping())
    assert {lk.shaped_sender for lk in star.shaped_links()} == {"sw1"} and len(star.shaped_links()) == 4


def test_shaping_numbers_and_validation() -> None:
    s = Shaping()
    assert s.frame_hold_us == pytest.approx(605.6, abs=0.1)
    assert 1380 < s.cross_rate_pps < 1400
    with pytest.raises(TopologyError):
        Shaping(rate_kbit=0)
    with pytest.raises(TopologyError):
        Shaping(cross_frame_bytes=2000)
    assert STRICT_PRIORITY_CLASSID == 0x00010001 and SHAPED_CLASSID >> 16 == 1


def test_build_validation() -> None:
    gm, sl = Node("gm", Role.GRANDMASTER), Node("sl", Role.SLAVE)
    with pytest.raises(TopologyError, match="unknown node"):
        Topology.build("x", [gm], [Link("gm", "eth0", "sl", "eth0")])
    with pytest.raises(TopologyError, match="duplicate"):
        Topology.build("x", [gm, gm], [])
    with pytest.raises(TopologyError, match="itself"):
        Link("gm", "eth0", "gm", "eth1")
    with pytest.raises(TopologyError, match="not allowed"):
        Link("gm", "br0", "sl", "eth0")
    with pytest.raises(TopologyError, match="used by two"):
        Topology.build("x", [gm, sl, Node("h", Role.HOST)], [Link("gm", "eth0", "sl", "eth0"), Link("gm", "eth0", "h", "eth0")])


def test_model_and_catalog_are_pure() -> None:
    io = {"socket", "subprocess", "os", "pyroute2", "time", "asyncio", "threading", "signal", "json"}
    for rel in ("topologies/model.py", "topologies/catalog.py"):
        tree = ast.parse((ROOT / rel).read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & io, f"{rel} imports {names & io}"
