"""bench.scenarios_run._analyse_rx_captures: with RX-only taps a hop's true time runs from the message's
arrival at the switch to its arrival at the next node (pure: a fake lab and fake captures)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.scenarios import ChainSpec, Impl
from bench.scenarios_capture import DELAY_REQ, DELAY_RESP, FOLLOW_UP, SYNC, Seen
from bench.scenarios_run import _analyse_rx_captures

GM = b"\x01" * 10
SL = b"\x02" * 10


def _fake(seen: dict[tuple[str, str], list[Seen]]):
    ifnames = {("gm", "sw1"): "eth0", ("sw1", "gm"): "p1", ("sw1", "sw2"): "p2", ("sw2", "sw1"): "p1",
               ("sw2", "sl"): "p2", ("sl", "sw2"): "eth0"}
    lab = SimpleNamespace(ifname=lambda a, b: ifnames[(a, b)])
    return SimpleNamespace(lab=lab, read=lambda node, ifname: seen.get((node, ifname), []), rx_only=True)


def test_two_hops_sync_follow_up_and_delay_req():
    spec = ChainSpec(Impl.PTPS_E2E, hops=2)
    seen = {
        # Sync seq 5 (two-step): enters sw1 at 1000, sw2 at 301_000, the slave at 402_000
        ("sw1", "p1"): [Seen(1_000, SYNC, 5, GM, 0.0), Seen(2_000, FOLLOW_UP, 5, GM, 0.0)],
        ("sw2", "p1"): [Seen(301_000, SYNC, 5, GM, 0.0), Seen(302_000, FOLLOW_UP, 5, GM, 298_000.0),
                        Seen(700_000, DELAY_RESP, 9, SL, 0.0)],
        ("sl", "eth0"): [Seen(402_000, SYNC, 5, GM, 0.0), Seen(403_000, FOLLOW_UP, 5, GM, 398_500.0),
                         Seen(701_000, DELAY_RESP, 9, SL, 0.0)],
        # Delay_Req seq 9 from the slave: enters sw2 at 500_000, sw1 at 520_000, the GM at 540_000
        ("sw2", "p2"): [Seen(500_000, DELAY_REQ, 9, SL, 0.0)],
        ("sw1", "p2"): [Seen(520_000, DELAY_REQ, 9, SL, 19_000.0)],
        ("gm", "eth0"): [Seen(540_000, DELAY_REQ, 9, SL, 37_500.0)],
    }
    fwd, rev, links = _analyse_rx_captures(_fake(seen), spec, ["gm", "sw1", "sw2", "sl"])
    assert links == []
    assert [h.switch for h in fwd] == ["sw1", "sw2"]
    assert fwd[0].true_residence_ns == [300_000] and fwd[0].error_ns == [-2_000.0]
    assert fwd[1].true_residence_ns == [101_000] and fwd[1].error_ns == [100_500.0 - 101_000]
    assert [h.switch for h in rev] == ["sw1", "sw2"]
    assert rev[1].true_residence_ns == [20_000] and rev[1].error_ns == [-1_000.0]
    assert rev[0].true_residence_ns == [20_000] and rev[0].error_ns == [-1_500.0]


def test_two_step_tc_delay_resp_correction_counts_for_the_delay_req():
    spec = ChainSpec(Impl.LINUXPTP_E2E, hops=1)
    ifn = {("gm", "sw1"): "eth0", ("sw1", "gm"): "p1", ("sw1", "sl"): "p2", ("sl", "sw1"): "eth0"}
    seen = {
        ("sw1", "p2"): [Seen(100, DELAY_REQ, 3, SL, 0.0)],
        ("gm", "eth0"): [Seen(5_100, DELAY_REQ, 3, SL, 0.0)],
        ("sw1", "p1"): [Seen(9_000, DELAY_RESP, 3, SL, 0.0)],
        ("sl", "eth0"): [Seen(9_500, DELAY_RESP, 3, SL, 4_800.0)],
    }
    caps = SimpleNamespace(lab=SimpleNamespace(ifname=lambda a, b: ifn[(a, b)]),
                           read=lambda node, ifname: seen.get((node, ifname), []), rx_only=True)
    _, rev, _ = _analyse_rx_captures(caps, spec, ["gm", "sw1", "sl"])
    assert rev[0].added_ns == [4_800.0] and rev[0].error_ns == [-200.0]
