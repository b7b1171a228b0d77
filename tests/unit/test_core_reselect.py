"""Re-selection of a master: the servo keeps its frequency and one outlier cannot swing it
(issue 5 follow-up: -137,000 ppb / 77 us transient in the port-flap lab test); syncReceiptTimeout."""

from __future__ import annotations

from controlplane.codec import messages as m
from controlplane.codec.enums import PortState
from controlplane.codec.header import Header
from controlplane.codec.types import PortIdentity, Timestamp
from controlplane.core.actions import AdjustClock, StateChanged
from controlplane.core.servo import PiServo, ServoState
from tests.unit.test_core_clock import GM_ID, S, announce_from, exchange, make_slave
from tests.unit.test_core_servo import closed_loop

LAB_GAINS = {"pi_proportional_scale": "0.7", "pi_integral_scale": "0.3"}  # as tests/lab/test_load.py _flap_test


def test_pi_reset_keeps_frequency_and_an_outlier_first_sample_cannot_swing_it() -> None:
    servo = PiServo()
    closed_loop(servo, offset0_ns=0, drift_ppb=0, interval_s=0.125, seconds=10)
    assert servo.state is ServoState.LOCKED
    servo.reset()  # link back up / new master: samples discarded
    assert servo.state is ServoState.UNLOCKED
    t0 = 100 * S
    outs = [servo.sample(-17_000, t0)]  # the lab's first Sync after re-selection: 17 us late
    outs += [servo.sample(600, t0 + k * S // 8) for k in range(1, 6)]
    # before the fix: a two-sample drift estimate (17.6 us in 125 ms) -> about -140,000 ppb
    assert max(abs(o.freq_ppb) for o in outs) < 30_000, [round(o.freq_ppb) for o in outs]
    assert outs[0].state is ServoState.LOCKED and outs[0].step_ns is None


def test_pi_reset_before_any_estimate_still_estimates_and_steps() -> None:
    s = PiServo()
    s.reset()
    s.sample(0, 1 * S)
    out = s.sample(50_000, 2 * S)  # first estimate: 50 ppm, offset above first_step_threshold
    assert out.state is ServoState.JUMP and out.step_ns == -50_000 and round(out.freq_ppb) == -50_000
    s.reset()  # resumed servo, no step_threshold (ptp4l's default): PI on the kept drift, no step
    out = s.sample(1_000_000, 3 * S)
    assert out.state is ServoState.LOCKED and out.step_ns is None
    s2 = PiServo(step_threshold_ns=100_000)
    s2.sample(0, 1 * S)
    s2.sample(100, 2 * S)
    s2.reset()
    out = s2.sample(1_000_000, 3 * S)
    assert out.state is ServoState.JUMP and out.step_ns == -1_000_000 and abs(out.freq_ppb) < 1_000


def _run_to_listening(sl, now_ns: int) -> int:
    t = sl.next_deadline_ns()
    while sl.port(1).state is not PortState.LISTENING:
        assert t is not None and t < now_ns + 30 * S
        sl.handle_timer(t)
        t = sl.next_deadline_ns()
    return t


def test_clock_reselection_after_announce_timeout_has_no_frequency_transient() -> None:
    sl = make_slave(**LAB_GAINS)
    now = S
    for k in range(80):  # 10 s at 8 Sync/s, offset 0: locked at ~0 ppb
        now = S + k * S // 8
        exchange(sl, k, offset_ns=0, delay_ns=20_000, now_ns=now)
    assert sl.port(1).state is PortState.SLAVE
    # link down: no more messages; announce receipt timeout -> LISTENING (servo reset)
    now = _run_to_listening(sl, now)
    assert sl.port(1).state is PortState.LISTENING
    # link up: Announces again -> UNCALIBRATED; first Sync 17 us late, then clean ones
    base_k = 200
    sl.handle_message(1, announce_from(GM_ID, 900), None, now)
    out = sl.handle_message(1, announce_from(GM_ID, 901), None, now + S)
    assert any(isinstance(a, StateChanged) and a.new is PortState.UNCALIBRATED for a in out)
    now += S
    adj: list[AdjustClock] = []
    for j in range(16):
        k = base_k + j
        off = -17_000 if j == 0 else 600
        adj += [a for a in exchange(sl, k, offset_ns=off, delay_ns=20_000, now_ns=now + j * S // 8) if isinstance(a, AdjustClock)]
    assert sl.port(1).state is PortState.SLAVE
    freqs = [round(a.freq_ppb) for a in adj]
    assert freqs and max(abs(f) for f in freqs) < 30_000, freqs  # before the fix: about -140,000 ppb


def _announces_only(sl, start_ns: int, seconds: int, seq0: int) -> list:
    """The parent keeps announcing (1/s) but sends no Sync; timers run in between."""
    out: list = []
    for j in range(seconds * 8):
        now = start_ns + j * S // 8
        if j % 8 == 0:
            out += sl.handle_message(1, announce_from(GM_ID, seq0 + j), None, now)
        while (d := sl.next_deadline_ns()) is not None and d <= now:
            acts = sl.handle_timer(d)
            out += acts
            if any(isinstance(a, StateChanged) for a in acts):
                _announces_only.first_change_ns = getattr(_announces_only, "first_change_ns", None) or d
    return out


def test_sync_receipt_timeout_reselects_while_announces_continue() -> None:
    sl = make_slave(syncReceiptTimeout="3")
    for k in range(16):
        exchange(sl, k, offset_ns=0, delay_ns=20_000, now_ns=S + k * S // 8)
    assert sl.port(1).state is PortState.SLAVE
    last = S + 15 * S // 8
    _announces_only.first_change_ns = None
    out = _announces_only(sl, last + S // 16, 3, 1000)
    changes = [a for a in out if isinstance(a, StateChanged)]
    assert changes and changes[0].event == "SYNC_RECEIPT_TIMEOUT_EXPIRES" and changes[0].new is PortState.LISTENING, changes
    # it fired 3 sync intervals (375 ms) after the last Sync, long before an announce receipt timeout
    assert _announces_only.first_change_ns == last + 3 * S // 8
    # the silent parent's record was dropped: re-selection needs fresh qualification (two Announces)
    assert [c.new for c in changes[1:2]] in ([], [PortState.UNCALIBRATED])


def test_sync_receipt_timeout_zero_is_off_and_syncs_keep_it_armed() -> None:
    sl = make_slave()  # syncReceiptTimeout 0 (ptp4l's default): no timer
    for k in range(16):
        exchange(sl, k, offset_ns=0, delay_ns=20_000, now_ns=S + k * S // 8)
    out = _announces_only(sl, S + 2 * S, 2, 1000)
    assert not [a for a in out if isinstance(a, StateChanged)] and sl.port(1).state is PortState.SLAVE
    sl = make_slave(syncReceiptTimeout="3")
    out = []
    for k in range(80):  # 10 s of Syncs: the timer never expires
        out += exchange(sl, k, offset_ns=0, delay_ns=20_000, now_ns=S + k * S // 8)
    assert not [a for a in out if isinstance(a, StateChanged) and a.event == "SYNC_RECEIPT_TIMEOUT_EXPIRES"]
    assert sl.port(1).state is PortState.SLAVE


def test_leaving_slave_holds_the_drift_estimate_not_the_last_output() -> None:
    sl = make_slave(**LAB_GAINS)
    now = S
    for k in range(80):
        now = S + k * S // 8
        exchange(sl, k, offset_ns=0, delay_ns=20_000, now_ns=now)
    adj = [a for a in exchange(sl, 80, offset_ns=20_000, delay_ns=20_000, now_ns=now + S // 8) if isinstance(a, AdjustClock)]
    last_out = adj[-1].freq_ppb
    assert abs(last_out) > 20_000  # the proportional term answering a 20 us offset
    out = []
    t = sl.next_deadline_ns()
    while sl.port(1).state is not PortState.LISTENING:
        out += sl.handle_timer(t)
        t = sl.next_deadline_ns()
    hold = [a for a in out if isinstance(a, AdjustClock)]
    assert len(hold) == 1 and hold[0].step_ns is None
    assert abs(hold[0].freq_ppb) < 0.2 * abs(last_out), (hold, last_out)  # the integral only
    assert sl.freq_ppb == hold[0].freq_ppb
    # free running: never adjusts, not even for holdover
    fr = make_slave(free_running="1")
    for k in range(40):
        exchange(fr, k, offset_ns=5_000, delay_ns=20_000, now_ns=S + k * S // 8)
    t = fr.next_deadline_ns()
    out = []
    while fr.port(1).state is not PortState.LISTENING:
        out += fr.handle_timer(t)
        t = fr.next_deadline_ns()
    assert not [a for a in out if isinstance(a, AdjustClock)]
