"""Hostile management and negotiation input against the sans-IO core (no root, no kernel).

Each test pins a property that holds (and failed before its fix, where there was one): management SET/
COMMAND refused from the network, bounded unicast grant table, allow-list, every request answered, a
bounded foreign-master table whose cost per Announce does not grow with a flood of forged senders."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import fuzz as Z
from controlplane.codec import decode, encode
from controlplane.codec import management as cm
from controlplane.codec.enums import ManagementAction, ManagementId, PortState
from controlplane.codec.header import Header
from controlplane.codec.messages import Management
from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS, PortIdentity

ATTACKER = PortIdentity(bytes.fromhex("0666666666666666"), 1)


def _mgmt(action, mid, data=None):
    msg = Management(Header(sequence_id=1, domain_number=0, source_port_identity=ATTACKER, log_message_interval=0x7F),
                     PortIdentity(ALL_CLOCKS, ALL_PORTS), 1, 1, action, tlvs=(cm.ManagementTlv(mid, data),))
    return decode(encode(msg))


def _clock():
    c = Z.make_clock("oc", random.Random(1))
    c.start(0)
    return c


def test_network_management_set_is_refused_by_default():
    c = _clock()
    before = c.default_ds.priority1
    c.handle_message(1, _mgmt(ManagementAction.SET, ManagementId.PRIORITY1, cm.Priority1(0)), None, 10)
    assert c.default_ds.priority1 == before


def test_network_disable_port_command_is_refused_by_default():
    c = _clock()
    c.handle_message(1, _mgmt(ManagementAction.COMMAND, ManagementId.DISABLE_PORT), None, 10)
    assert c.port(1).state is not PortState.DISABLED


def test_network_management_get_is_answered_and_changes_nothing():
    c = _clock()
    before = (c.default_ds.priority1, c.port(1).state)
    out = c.handle_message(1, _mgmt(ManagementAction.GET, ManagementId.DEFAULT_DATA_SET), None, 10)
    assert len(out) == 1 and (c.default_ds.priority1, c.port(1).state) == before


# --- unicast negotiation floods ------------------------------------------------------------------
def _server(**kw):
    from controlplane.core.unicast import ServerPolicy
    from controlplane.core.unicast_server import UnicastServer

    return UnicastServer(ServerPolicy(**kw))


def _requests(rng, n):
    from controlplane.core.unicast import Cancel, Request

    out = []
    for _ in range(n):
        mt = rng.choice((0x0, 0x9, 0xB, 0x3, 0x1, 0xF, rng.randrange(16)))
        if rng.random() < 0.85:
            out.append(Request(mt, rng.choice((-7, -3, 0, 1, 127, -128, rng.randrange(-128, 128))),
                               rng.choice((0, 1, 59, 60, 300, 1000, 2**32 - 1, rng.randrange(2**32)))))
        else:
            out.append(Cancel(mt))
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_negotiation_flood_bounded_and_answered(rseed):
    """Many clients with random (bogus) requests: every REQUEST gets exactly one GRANT/denial, the
    grant table never holds more than max_clients clients, nothing escapes."""
    from controlplane.core.unicast import Grant, Request, SendSignaling

    rng = random.Random(rseed)
    srv = _server(max_clients=20)
    now = 10**12
    for i in range(300):
        addr = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" if rng.random() < 0.9 else f"fd00::{rng.randrange(1, 9999):x}"
        tlvs = _requests(rng, rng.randrange(1, 5))
        acts = srv.handle_signaling(addr, (rng.randbytes(8), rng.randrange(65536)), tlvs, now)
        grants = [t for a in acts if isinstance(a, SendSignaling) for t in a.tlvs if isinstance(t, Grant)]
        assert len(grants) == sum(isinstance(t, Request) for t in tlvs)
        now += rng.randrange(0, 2 * 10**9)
        if rng.random() < 0.2:
            srv.poll(now)
        clients = {r.address for r in srv.grant_table(now)}
        assert len(clients) <= 20


def test_negotiation_allow_list_denies_outsiders():
    from controlplane.core.unicast import Grant, Request, SendSignaling

    srv = _server(allow=("10.1.0.0/16",))
    now = 10**12
    for addr, granted in (("10.1.2.3", True), ("10.2.0.1", False), ("fd00::1", False)):
        acts = srv.handle_signaling(addr, None, [Request(0xB, 0, 300)], now)
        g = [t for a in acts if isinstance(a, SendSignaling) for t in a.tlvs if isinstance(t, Grant)]
        assert len(g) == 1 and (g[0].duration_s > 0) == granted, (addr, g)


def test_negotiation_flood_memory_is_bounded():
    """100,000 requests from 50,000 distinct addresses: the grant table holds at most max_clients."""
    import tracemalloc

    from controlplane.core.unicast import Request

    srv = _server(max_clients=100)
    now = 10**12
    tracemalloc.start()
    for i in range(50_000):
        addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}"
        srv.handle_signaling(addr, None, [Request(0xB, 0, 300), Request(0x0, -3, 300)], now + i)
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len({r.address for r in srv.grant_table(now + 50_000)}) <= 100
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"


# --- Announce floods -------------------------------------------------------------------------------
def test_announce_flood_from_distinct_senders_costs_constant_per_message():
    """A flood of Announces from ever new forged senders: the per-port foreign-master table stays
    bounded (evictions counted), the cost per Announce does not grow with the number of senders seen
    (was O(N): every Announce pruned every record), and a qualified master survives the flood."""
    import dataclasses as dc
    import time

    from controlplane.codec.samples import all_samples
    from controlplane.core.bmca import MAX_FOREIGN_MASTERS

    clock = Z.make_clock("oc", random.Random(1))
    clock.start(0)
    ann = next(m for m in all_samples().values() if type(m).__name__ == "Announce")
    legit = PortIdentity(bytes.fromhex("00000000000000aa"), 1)

    def announce(src, t_ns, priority1=128):
        m = dc.replace(ann, header=dc.replace(ann.header, domain_number=0, source_port_identity=src),
                       grandmaster_identity=src.clock_identity, grandmaster_priority1=priority1, steps_removed=0)
        clock.handle_message(1, m, None, t_ns)

    t0 = 10**12
    announce(legit, t0, priority1=1)
    announce(legit, t0 + 10**6, priority1=1)     # qualified (two within the window)

    def flood(lo: int, hi: int) -> float:
        t = time.perf_counter()
        for i in range(lo, hi):
            src = PortIdentity((i + 1000).to_bytes(8, "big"), 1)
            announce(src, t0 + 2 * 10**6 + i * 1000)       # 1000 Announces per ms
        return time.perf_counter() - t

    flood(0, 20)                      # warm-up (lazy imports, caches)
    first = min(flood(20, 170), flood(170, 320))
    flood(320, 20_000)
    last = min(flood(20_000, 20_150), flood(20_150, 20_300))
    table = clock.port(1).foreign
    assert last < 3 * first + 0.02, f"150 Announces: first {first:.3f} s, after 20,000 senders {last:.3f} s"
    assert len(table) <= MAX_FOREIGN_MASTERS
    assert table.evicted >= 20_300 - MAX_FOREIGN_MASTERS
    best = table.best()
    assert best is not None and best[0].sender == legit, "the qualified master was displaced by one-shot senders"


def test_announce_flood_of_qualified_senders_evicts_the_worst():
    """Forged senders that each send twice (so qualify) fill the table; the best (legit, priority1 1)
    stays, the table stays bounded."""
    import dataclasses as dc

    from controlplane.codec.samples import all_samples
    from controlplane.core.bmca import MAX_FOREIGN_MASTERS

    clock = Z.make_clock("oc", random.Random(1))
    clock.start(0)
    ann = next(m for m in all_samples().values() if type(m).__name__ == "Announce")
    legit = PortIdentity(bytes.fromhex("00000000000000aa"), 1)
    t = 10**12
    for k in range(2):
        m = dc.replace(ann, header=dc.replace(ann.header, domain_number=0, source_port_identity=legit),
                       grandmaster_identity=legit.clock_identity, grandmaster_priority1=1, steps_removed=0)
        clock.handle_message(1, m, None, t + k)
    for i in range(2000):
        src = PortIdentity((i + 5000).to_bytes(8, "big"), 1)
        m = dc.replace(ann, header=dc.replace(ann.header, domain_number=0, source_port_identity=src),
                       grandmaster_identity=src.clock_identity, grandmaster_priority1=200, steps_removed=0)
        for k in range(2):
            clock.handle_message(1, m, None, t + 10 + 4 * i + k)
    table = clock.port(1).foreign
    assert len(table) <= MAX_FOREIGN_MASTERS
    assert table.best()[0].sender == legit
    assert clock.parent_ds.parent_port_identity == legit


# --- the daemon's unicast service fed bogus negotiation TLVs ---------------------------------------
def _unicast_daemon_node():
    from controlplane.core.clock import Clock
    from controlplane.runtime.configfile import parse_config_text
    from controlplane.runtime.unicast_daemon import wrap_node
    from controlplane.services.daemon import ClockNode

    cfg = parse_config_text("[global]\nunicast_listen 1\npriority1 10\n", filename="<test>", interfaces=("eth0",))
    clock = Clock(cfg.clock, bytes.fromhex("0200000000000001"), ["eth0"], rng=random.Random(1))
    node = wrap_node(ClockNode(clock), clock, cfg, ["eth0"])
    node.start(0)
    return node


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("req", "cancel", "unknown")), st.integers(0, 15), st.integers(-128, 127),
                          st.integers(0, 2**32 - 1)), min_size=1, max_size=4))
def test_daemon_unicast_service_survives_bogus_negotiation(tlv_specs):
    """Bogus REQUEST/CANCEL message types (any nibble), intervals and durations, unknown TLVs, through the
    daemon's node (ClockNode + UnicastService + the runtime's negotiation log observer at INFO): no exception."""
    import logging

    from controlplane.codec.messages import Signaling
    from controlplane.codec.tlv import CancelUnicastTransmissionTlv, RequestUnicastTransmissionTlv, UnknownTlv

    tlvs = []
    for kind, mt, period, duration in tlv_specs:
        if kind == "req":
            tlvs.append(RequestUnicastTransmissionTlv(mt, period, duration))
        elif kind == "cancel":
            tlvs.append(CancelUnicastTransmissionTlv(mt))
        else:
            tlvs.append(UnknownTlv(0x7FFF, bytes(2 * (mt % 5))))
    msg = decode(encode(Signaling(Header(message_type=0xC, sequence_id=1, source_port_identity=ATTACKER,
                                         log_message_interval=0x7F, unicast=True),
                                  PortIdentity(b"\xff" * 8, 0xFFFF), tuple(tlvs))))
    logging.getLogger("ptp-switch").setLevel(logging.INFO)
    node = _unicast_daemon_node()
    node.handle_message(1, msg, None, 10**9, ("10.9.9.9", 320))
