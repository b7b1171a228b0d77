"""Clocks as data and maths. The core never reads a clock; the runtime does, through these.

``LocalClock`` is the interface the runtime implements (virtual clock over CLOCK_REALTIME, PHC).
``VirtualClockMath`` is the pure arithmetic of a virtual clock: PTP time as an offset and a
frequency over a free-running base time (``time(base_ns) -> ptp_ns``). The simulator and the
runtime's VirtualClock share it, so what the simulator proves about adjustments holds for the
daemon. Nothing here ever adjusts a real clock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["LocalClock", "VirtualClockMath"]


class LocalClock(Protocol):
    """What the runtime's clocks offer (the core only emits AdjustClock actions against it)."""

    def read_ns(self) -> int:
        """Current PTP time of this clock in ns (TAI epoch for a PTP timescale)."""
        ...

    def adjust_frequency(self, freq_ppb: float) -> None:
        """Set (not add) the frequency adjustment; positive = faster."""
        ...

    def step(self, delta_ns: int) -> None:
        """Add ``delta_ns`` to the clock."""
        ...

    @property
    def frequency_ppb(self) -> float: ...


class VirtualClockMath:
    """ptp_ns = anchor_ptp_ns + (base_ns - anchor_base_ns) * (1 + freq_ppb / 1e9).

    Re-anchors on every frequency change so the time is continuous; ``step`` moves the offset.
    Integer nanoseconds in and out; the rate term is computed in float on the (bounded) interval
    since the last anchor.
    """

    __slots__ = ("_anchor_base_ns", "_anchor_ptp_ns", "_freq_ppb", "max_frequency_ppb")

    def __init__(self, base_ns: int, offset_ns: int = 0, freq_ppb: float = 0.0, max_frequency_ppb: float = 900_000_000) -> None:
        self._anchor_base_ns = int(base_ns)
        self._anchor_ptp_ns = int(base_ns) + int(offset_ns)
        self.max_frequency_ppb = float(max_frequency_ppb)
        self._freq_ppb = 0.0
        self._set_freq(freq_ppb)

    @property
    def frequency_ppb(self) -> float:
        return self._freq_ppb

    def time(self, base_ns: int) -> int:
        """PTP time at base time ``base_ns``."""
        d = base_ns - self._anchor_base_ns
        return self._anchor_ptp_ns + d + round(d * self._freq_ppb / 1e9)

    def to_base(self, ptp_ns: int) -> int:
        """The base time at which this clock reads ``ptp_ns`` (for timers in PTP time)."""
        d = ptp_ns - self._anchor_ptp_ns
        return self._anchor_base_ns + round(d / (1.0 + self._freq_ppb / 1e9))

    def adjust_frequency(self, freq_ppb: float, base_ns: int) -> None:
        """Set the frequency adjustment from base time ``base_ns`` on."""
        now = self.time(base_ns)
        self._anchor_base_ns = int(base_ns)
        self._anchor_ptp_ns = now
        self._set_freq(freq_ppb)

    def step(self, delta_ns: int) -> None:
        self._anchor_ptp_ns += int(delta_ns)

    def _set_freq(self, freq_ppb: float) -> None:
        if freq_ppb != freq_ppb:  # NaN
            raise ValueError("frequency is NaN")
        self._freq_ppb = max(-self.max_frequency_ppb, min(self.max_frequency_ppb, float(freq_ppb)))
