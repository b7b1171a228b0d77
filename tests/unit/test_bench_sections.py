"""Pure parts of bench sections 4 (failover) and 6 (control-plane CPU)."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from bench.scenarios_cpu import CpuRow, default_grid, proc_cpu_ticks, topology_text
from bench.scenarios_failover import _json_events, _selected_after
from topologies import catalog


def test_cpu_topologies_have_the_asked_port_count() -> None:
    assert topology_text(1) == "gm sl"
    for n in (2, 4, 8):
        topo = catalog.parse(topology_text(n), mode="bare")
        assert len(topo.ports("sw1")) == n
    with pytest.raises(ValueError):
        topology_text(0)


def test_cpu_row_derived_figures() -> None:
    r = CpuRow("ptp-switch", 4, -3, window_s=10, cpu_pct=2.0, packets_per_s=500)
    assert r.role == "BC, 4 ports" and r.cpu_pct_per_port == 0.5
    assert r.us_per_packet == pytest.approx(40.0)  # 0.02 s CPU per s / 500 packets
    assert CpuRow("ptp-switch", 1, 0).role == "OC (slave)" and CpuRow("x", 2, 0).us_per_packet is None


def test_default_grid_covers_rates_and_ports() -> None:
    g = default_grid(False)
    assert {(p, r) for p, i, r in g if i == "ptp-switch"} == {(p, r) for p in (1, 2, 4, 8) for r in (0, -3, -5)}
    assert {(p, r) for p, i, r in g if i == "linuxptp"} == {(p, -5) for p in (1, 2, 4, 8)}
    assert len(default_grid(True)) < len(g)


def test_proc_cpu_ticks_counts_this_process() -> None:
    t0 = proc_cpu_ticks(os.getpid())
    x = 0
    for i in range(3_000_000):  # ~0.1-0.3 s of CPU
        x += i * i
    assert proc_cpu_ticks(os.getpid()) > t0
    assert proc_cpu_ticks(2**22 + 12345) == 0  # no such pid


def test_failover_log_parsing(tmp_path: pathlib.Path) -> None:
    text = ("ptp4l[100.000]: selected best master clock aaaaaa.fffe.000001\n"
            "ptp4l[110.500]: selected best master clock bbbbbb.fffe.000002\n")
    assert _selected_after(text, "bbbbbb.fffe.000002", 105.0) == 110.5
    assert _selected_after(text, "aaaaaa.fffe.000001", 105.0) is None
    assert _selected_after(text, None, 99.0) == 100.0
    log = tmp_path / "cl.jsonl"
    log.write_text("\n".join([
        json.dumps({"ts": 1.0, "mono": 50.0, "msg": "port 1 (eth0): unicast active_server 10.0.0.2"}),
        "not json",
        json.dumps({"ts": 2.0, "mono": 51.0, "msg": "master offset      -9921 s0 freq      +0 path delay     13776"}),
    ]) + "\n")
    ev = _json_events(log)
    assert [e.get("kind") for e in ev] == ["active_server", "offset"] and ev[0]["address"] == "10.0.0.2"


def test_delay_req_residence_follows_the_first_slave_only() -> None:
    from bench.scenarios_capture import DELAY_REQ, Seen, delay_req_residences, slave_source

    a, b = b"A" * 10, b"B" * 10
    # at the last switch's port toward slave A: A's Delay_Reqs arrive uncorrected; B's leave corrected
    down = [Seen(1_000, DELAY_REQ, 1, a, 0.0), Seen(5_000, DELAY_REQ, 7, b, 3_000.0)]
    up = [Seen(21_000, DELAY_REQ, 1, a, 19_500.0), Seen(4_900, DELAY_REQ, 7, b, 3_000.0)]
    assert slave_source(down) == a
    hop = delay_req_residences([("sw1", down, up)], source=a)[0]
    assert hop.true_residence_ns == [20_000] and hop.error_ns == [-500.0]
    assert slave_source([]) is None


def test_link_delays_forward_sync_reverse_first_slave() -> None:
    from bench.scenarios_capture import DELAY_REQ, SYNC, Seen, link_delays

    gm, a, b = b"G" * 10, b"A" * 10, b"B" * 10
    near = [Seen(1_000, SYNC, 1, gm, 0.0), Seen(9_000, DELAY_REQ, 4, a, 50.0), Seen(9_500, DELAY_REQ, 5, b, 50.0)]
    far = [Seen(11_000, SYNC, 1, gm, 0.0), Seen(6_000, DELAY_REQ, 4, a, 50.0), Seen(6_000, DELAY_REQ, 5, b, 50.0)]
    (ld,) = link_delays([("gm->sw1", near, far)], source=a)
    assert ld.link == "gm->sw1" and ld.forward_ns == [10_000] and ld.reverse_ns == [3_000]


def test_delay_req_residence_counts_a_two_step_tcs_delay_resp() -> None:
    from bench.scenarios_capture import DELAY_REQ, DELAY_RESP, Seen, delay_req_residences

    a = b"A" * 10
    down = [Seen(1_000, DELAY_REQ, 3, a, 0.0), Seen(90_000, DELAY_RESP, 3, a, 70_500.0)]
    up = [Seen(71_000, DELAY_REQ, 3, a, 0.0), Seen(80_000, DELAY_RESP, 3, a, 0.0)]
    hop = delay_req_residences([("sw1", down, up)], source=a)[0]
    assert hop.added_ns == [70_500.0] and hop.error_ns == [500.0]
