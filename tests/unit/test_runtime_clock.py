"""runtime.clock.VirtualClock: PTP time over CLOCK_REALTIME, adjusting only itself."""

from __future__ import annotations

import time

import pytest

from controlplane.runtime.clock import ClockError, PhcClock, VirtualClock


def test_offset_and_frequency_apply_to_the_virtual_clock_only() -> None:
    clock = VirtualClock(offset_ns=5_000_000, freq_ppb=50_000)
    assert abs(clock.error_ns() - 5_000_000) < 200_000  # 50 ppm over < 1 s of test time is < 50 us
    t0 = clock.system_ns()
    time.sleep(0.2)
    t1 = clock.system_ns()
    # the clock runs 50 ppm fast relative to CLOCK_REALTIME
    assert clock.from_system_ns(t1) - clock.from_system_ns(t0) - (t1 - t0) == pytest.approx((t1 - t0) * 50e-6, abs=2)
    clock.step(-5_000_000)
    clock.adjust_frequency(0.0)
    e0 = clock.error_ns()
    time.sleep(0.1)
    assert abs(clock.error_ns() - e0) < 1_000  # no more drift
    assert abs(e0) < 1_000_000
    assert clock.to_system_ns(clock.from_system_ns(t1)) == pytest.approx(t1, abs=2)


def test_oscillator_error_stays_under_adjustments() -> None:
    clock = VirtualClock(oscillator_error_ppb=50_000)
    clock.adjust_frequency(0.0)  # a servo's setting does not remove the oscillator's error
    assert clock.frequency_ppb == 0.0
    t0 = clock.system_ns()
    time.sleep(0.1)
    t1 = clock.system_ns()
    assert clock.from_system_ns(t1) - clock.from_system_ns(t0) - (t1 - t0) == pytest.approx((t1 - t0) * 50e-6, abs=2)
    clock.adjust_frequency(-50_000.0)  # cancelling it stops the drift
    e0 = clock.error_ns()
    time.sleep(0.1)
    assert abs(clock.error_ns() - e0) < 1_000


def test_read_is_monotonic_with_positive_frequency() -> None:
    clock = VirtualClock(freq_ppb=1e6)
    a = clock.read_ns()
    b = clock.read_ns()
    assert b >= a


def test_missing_phc_is_a_typed_error() -> None:
    with pytest.raises(ClockError, match="does not exist"):
        PhcClock("/dev/ptp-nonexistent-42")
