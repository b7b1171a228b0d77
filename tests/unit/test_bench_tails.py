"""bench.tails' arithmetic on made-up RX records: which stretch of a frame's path each tail measures."""

from bench.tails import tails

GM, SW, SL = 11, 22, 33
NS = {"gm": GM, "sw1": SW, "sl": SL}


def _rx(netns: int, typ: int, seq: int, rx_ns: int, corr_ns: int, origin_ns: int = 0) -> dict[str, int]:
    return {"netns": netns, "type": typ, "seq": seq, "rx_ns": rx_ns, "corr_ns": corr_ns, "origin_ns": origin_ns}


def test_tails_of_a_sync_and_a_delay_req_through_the_switch() -> None:
    # Sync: GM read at 1_000 + 150 (origin 1_000, its egress added 150), sw1 RX at 1_150 + 2_000;
    # sw1 added 50_000 of residence, the slave's RX came 3_000 after sw1's egress read
    sw_rx = 1_000 + 150 + 2_000
    frames = [_rx(SW, 0, 5, sw_rx, 150, 1_000), _rx(SL, 0, 5, sw_rx + 50_000 + 3_000, 150 + 50_000, 1_000),
              # Delay_Req: sw1 RX at 10_000, residence 40_000, the GM's RX 2_500 after sw1's egress read
              _rx(SW, 1, 7, 10_000, 0), _rx(GM, 1, 7, 10_000 + 40_000 + 2_500, 40_000)]
    t = tails(frames, NS)
    assert t["gm_tail"]["p50"] == 2_000
    assert t["sw_tail_sync"]["p50"] == 3_000
    assert t["sw_tail_delay_req"]["p50"] == 2_500
    assert t["sync_uncorrected"]["p50"] == 5_000     # both tails: all the time no correction covers


def test_direct_run_has_the_gm_tail_only() -> None:
    frames = [_rx(SL, 0, s, 10_000 * s + 4_000 + 300, 300, 10_000 * s) for s in range(10)]
    t = tails(frames, {"gm": GM, "sl": SL})
    assert t["gm_tail"]["p50"] == t["sync_uncorrected"]["p50"] == 4_000
    assert "sw_tail_sync" not in t and "sw_tail_delay_req" not in t


def test_slot_medians_show_one_warm_sync_in_eight() -> None:
    frames = [_rx(SL, 0, s, 10_000 * s + (4_000 if s % 8 == 3 else 8_000), 0, 10_000 * s) for s in range(64)]
    t = tails(frames, {"gm": GM, "sl": SL})
    assert t["sync_uncorrected_slot_median_min_ns"] == 4_000 and t["sync_uncorrected_slot_median_max_ns"] == 8_000
