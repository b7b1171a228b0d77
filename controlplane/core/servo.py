"""Clock servos: a sample in (offset from master, local time), an adjustment out. No clock is touched.

Sign conventions (as ptp4l): ``offset_ns`` = local time - master time (offsetFromMaster). The
returned ``freq_ppb`` is the frequency adjustment to SET on the local clock (positive = run
faster), i.e. linuxptp's ``-ppb``; ``step_ns`` (only in state JUMP) is what to ADD to the local
clock (= -offset).

PiServo follows linuxptp's pi.c (two-sample frequency estimate, then PI; kp/ki from the sync
interval with the hardware or software time-stamping scales, or constants when both are set);
LinRegServo fits a line to the recent offsets with the applied corrections taken out.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from controlplane.core.config import ClockConfig, ClockServo, TimeStamping

__all__ = ["LinRegServo", "PiServo", "Servo", "ServoOutput", "ServoState", "make_servo"]

HWTS_KP_SCALE = 0.7
HWTS_KI_SCALE = 0.3
SWTS_KP_SCALE = 0.1
SWTS_KI_SCALE = 0.001
MAX_KP_NORM_MAX = 1.0
MAX_KI_NORM_MAX = 2.0
FREQ_EST_MARGIN = 0.001
# holdover frequency, from the locked samples of the last this-long (at most HOLDOVER_MAX_SAMPLES):
# the slope of the free-running phase (offset plus the phase the servo's own outputs added), fitted
# by least squares; the drift estimate's average where too few samples span too short a time.
# PI's integral term alone moves by ki * offset on every sample (ppm from one software-stamped Sync
# to the next), and even its 16 s average is off by (offset change over the window) / 16 s: a lab
# run with 20 us offsets held +3.0 ppm that way, where the phase fit of the same samples gives 39 ppb.
HOLDOVER_WINDOW_S = 16.0
HOLDOVER_MAX_SAMPLES = 2048
HOLDOVER_FIT_MIN_SAMPLES = 16
HOLDOVER_FIT_MIN_SXX_S2 = 10.0   # sum of squared time deviations: e.g. 3 s of 8 Sync/s, 11 s of 1/s
# ... leaving out the first seconds after the first (two-sample) estimate, while PI pulls it in
HOLDOVER_SETTLE_S = 2.0
# A locked PI servo holds its output for a sample whose |offset| is over OUTLIER_FACTOR x the median |offset|
# of its last OUTLIER_WINDOW accepted samples and over OUTLIER_FLOOR_NS, at most OUTLIER_MAX_RUN samples in a
# row: a change that persists is followed from its third sample on (the recent offsets are then learned
# anew). Why: with software stamps through a plain bridge a Sync can arrive hundreds of us late (softirq
# under load); in a lab run one such sample of +203 us, with the lab's PI gains, drove the frequency to
# -294 ppm and the true error to 116 us (tests/lab/test_load.py, port flapping).
OUTLIER_FACTOR = 10
OUTLIER_FLOOR_NS = 20_000
OUTLIER_WINDOW = 16
OUTLIER_MIN_SAMPLES = 8
OUTLIER_MAX_RUN = 2


class ServoState(enum.IntEnum):
    """linuxptp's servo states (ptp4l prints s0/s1/s2)."""

    UNLOCKED = 0
    JUMP = 1
    LOCKED = 2


@dataclass(frozen=True)
class ServoOutput:
    state: ServoState
    freq_ppb: float  # frequency adjustment to set (positive = faster)
    step_ns: int | None = None  # add this to the clock (state JUMP only)


class Servo(Protocol):
    state: ServoState

    def sample(self, offset_ns: int, local_ts_ns: int, weight: float = 1.0) -> ServoOutput: ...

    def sync_interval(self, interval_s: float) -> None: ...

    def reset(self) -> None: ...

    def holdover_freq_ppb(self) -> float | None: ...


@dataclass(frozen=True)
class PiGains:
    kp_scale: float
    kp_exponent: float
    kp_norm_max: float
    ki_scale: float
    ki_exponent: float
    ki_norm_max: float


class _Thresholds:
    def __init__(self, step_threshold_ns: int, first_step_threshold_ns: int, max_frequency_ppb: float) -> None:
        if step_threshold_ns < 0 or first_step_threshold_ns < 0 or max_frequency_ppb <= 0:
            raise ValueError("thresholds must be >= 0 and max_frequency_ppb > 0")
        self.step_threshold_ns = step_threshold_ns
        self.first_step_threshold_ns = first_step_threshold_ns
        self.max_frequency_ppb = float(max_frequency_ppb)
        self.first_update = True

    def wants_jump(self, offset_ns: int) -> bool:
        return bool(
            (self.first_update and self.first_step_threshold_ns and self.first_step_threshold_ns < abs(offset_ns))
            or (self.step_threshold_ns and self.step_threshold_ns < abs(offset_ns))
        )

    def clamp(self, ppb: float) -> float:
        return max(-self.max_frequency_ppb, min(self.max_frequency_ppb, ppb))


class PiServo:
    """Proportional-integral servo, linuxptp pi.c semantics (internally ppb = local drift)."""

    def __init__(
        self,
        *,
        step_threshold_ns: int = 0,
        first_step_threshold_ns: int = 20_000,
        max_frequency_ppb: float = 900_000_000,
        software_timestamps: bool = False,
        kp: float = 0.0,
        ki: float = 0.0,
        gains: PiGains | None = None,
        initial_freq_ppb: float = 0.0,
    ) -> None:
        self._t = _Thresholds(step_threshold_ns, first_step_threshold_ns, max_frequency_ppb)
        if kp and ki:
            self._g = PiGains(kp, 0.0, MAX_KP_NORM_MAX, ki, 0.0, MAX_KI_NORM_MAX)
        elif gains is not None and gains.kp_scale and gains.ki_scale:
            self._g = gains
        else:
            base = gains or PiGains(0.0, -0.3, 0.7, 0.0, 0.4, 0.3)
            kps, kis = (SWTS_KP_SCALE, SWTS_KI_SCALE) if software_timestamps else (HWTS_KP_SCALE, HWTS_KI_SCALE)
            self._g = PiGains(kps, base.kp_exponent, base.kp_norm_max, kis, base.ki_exponent, base.ki_norm_max)
        self._drift = -initial_freq_ppb  # linuxptp's sign: positive = local runs fast
        self._last_ppb = self._drift
        # (local time, _drift, free-running phase ns, segment) of the locked samples of the last
        # HOLDOVER_WINDOW_S, and the sum of their _drift
        self._hold: deque[tuple[int, float, float, int]] = deque()
        self._hold_sum = 0.0
        # the phase the servo's outputs have added since the segment began (internal sign: the
        # offset would have grown by it had the clock run free); a new segment begins where the
        # applied frequency is not known (reset: the clock held or was adjusted elsewhere) or the
        # phase was stepped
        self._applied_ns = 0.0
        self._applied_at: int | None = None
        self._segment = 0
        self._hold_from_ns: int | None = None  # local time from which samples enter the window
        self._offset = [0, 0]
        self._local = [0, 0]
        self._count = 0
        self._has_estimate = False  # a two-sample frequency estimate has been made since creation
        self._resume = False  # reset() of an estimating servo: the next sample resumes PI on the kept drift
        self._recent_abs: deque[int] = deque(maxlen=OUTLIER_WINDOW)   # |offset| of the last accepted locked samples
        self._outlier_run = 0
        self.outliers = 0   # samples held back as outliers (see OUTLIER_FACTOR)
        self.kp = 0.0
        self.ki = 0.0
        self.state = ServoState.UNLOCKED
        self.sync_interval(1.0)

    def sync_interval(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"sync interval must be > 0 s, got {interval_s}")
        g = self._g
        self._interval_s = interval_s
        self.kp = min(g.kp_scale * math.pow(interval_s, g.kp_exponent), g.kp_norm_max / interval_s)
        self.ki = min(g.ki_scale * math.pow(interval_s, g.ki_exponent), g.ki_norm_max / interval_s)

    def reset(self) -> None:
        """Discard the samples, keep the frequency (new master, UNCALIBRATED, link back up).

        linuxptp's pi_reset() only sets count = 0, so the next two samples re-estimate the drift.
        With the sync interval's short estimation window (0.016 / ki: 53 ms at 1 Sync/s with the
        hardware gains) that estimate is two samples apart, and one outlier among them (a first Sync
        after a re-selection that was 17 us late in the lab) set the frequency to -137,000 ppb. Once
        a drift estimate exists it is the better prior: the servo resumes PI on it (stepping first
        when the offset calls for a step), so one bad sample moves the frequency by kp * offset only.
        """
        self._count = 0
        self._resume = self._has_estimate
        self.state = ServoState.UNLOCKED
        self._recent_abs.clear()
        self._outlier_run = 0
        self._new_segment()

    def _new_segment(self) -> None:
        self._segment += 1
        self._applied_ns = 0.0
        self._applied_at = None

    def holdover_freq_ppb(self) -> float | None:
        """The frequency to hold without a master, from the locked samples of the last
        HOLDOVER_WINDOW_S: minus the least-squares slope of the free-running phase (each offset plus
        the phase that the servo's outputs added since its segment began; one slope, each segment its
        own intercept). Where the samples are too few or span too little time for a fit, the drift
        estimate (the integral term, without the proportional term that only corrected the last
        offsets) averaged over the window. None before any estimate."""
        if not self._has_estimate:
            return None
        if not self._hold:
            return -self._drift
        slope = self._phase_slope_ppb()
        if slope is not None:
            return -slope
        return -self._hold_sum / len(self._hold)

    def _phase_slope_ppb(self) -> float | None:
        if len(self._hold) < HOLDOVER_FIT_MIN_SAMPLES:
            return None
        segments: dict[int, list[tuple[float, float]]] = {}
        t0 = self._hold[0][0]
        for t, _, phase, seg in self._hold:
            segments.setdefault(seg, []).append(((t - t0) / 1e9, phase))
        sxx = sxy = 0.0
        for pts in segments.values():
            mt = sum(t for t, _ in pts) / len(pts)
            mp = sum(p for _, p in pts) / len(pts)
            sxx += sum((t - mt) ** 2 for t, _ in pts)
            sxy += sum((t - mt) * (p - mp) for t, p in pts)
        if sxx < HOLDOVER_FIT_MIN_SXX_S2:
            return None
        return sxy / sxx   # ns per s = ppb

    def _account_applied(self, local_ts_ns: int) -> None:
        """Add the phase that the last output added since the previous sample."""
        if self._applied_at is not None and local_ts_ns > self._applied_at:
            self._applied_ns += self._last_ppb * (local_ts_ns - self._applied_at) / 1e9
        elif self._applied_at is not None and local_ts_ns < self._applied_at:
            self._new_segment()   # the local clock went back: the phase record no longer adds up
        self._applied_at = local_ts_ns

    def _average_drift(self, offset_ns: int, local_ts_ns: int) -> None:
        if self._hold_from_ns is not None and local_ts_ns < self._hold_from_ns:
            return
        h = self._hold
        h.append((local_ts_ns, self._drift, offset_ns + self._applied_ns, self._segment))
        self._hold_sum += self._drift
        # older than the window, or "newer" than now (the local clock was stepped back)
        while h and (len(h) > HOLDOVER_MAX_SAMPLES or local_ts_ns - h[0][0] > HOLDOVER_WINDOW_S * 1e9
                     or h[0][0] > local_ts_ns):
            self._hold_sum -= h.popleft()[1]

    def _outlier(self, offset_ns: int) -> bool:
        """Whether a locked sample is held back (see OUTLIER_FACTOR); a sample taken is remembered."""
        a = abs(offset_ns)
        r = self._recent_abs
        if len(r) >= OUTLIER_MIN_SAMPLES and a > OUTLIER_FLOOR_NS and a > OUTLIER_FACTOR * sorted(r)[len(r) // 2]:
            if self._outlier_run < OUTLIER_MAX_RUN:
                self._outlier_run += 1
                self.outliers += 1
                return True
            r.clear()   # the change persists: follow it, and learn the offsets anew
        self._outlier_run = 0
        r.append(a)
        return False

    def sample(self, offset_ns: int, local_ts_ns: int, weight: float = 1.0) -> ServoOutput:
        t = self._t
        self._account_applied(local_ts_ns)
        ppb = self._last_ppb
        state = ServoState.UNLOCKED
        step: int | None = None
        if self._count == 0 and self._resume:
            self._resume = False
            self._count = 2
            if t.wants_jump(offset_ns):
                state = ServoState.JUMP
                step = -offset_ns
                ppb = self._drift
        if step is not None:
            pass
        elif self._count == 0:
            self._offset[0], self._local[0] = offset_ns, local_ts_ns
            self._count = 1
        elif self._count == 1:
            self._offset[1], self._local[1] = offset_ns, local_ts_ns
            if self._local[0] >= self._local[1]:
                self._count = 0
            else:
                localdiff_s = (self._local[1] - self._local[0]) / 1e9
                localdiff_s += localdiff_s * FREQ_EST_MARGIN
                freq_est_interval_s = min(0.016 / self.ki, 1000.0) if self.ki > 0 else 1000.0
                if localdiff_s >= freq_est_interval_s:
                    self._drift += (1e9 - self._drift) * (self._offset[1] - self._offset[0]) / (self._local[1] - self._local[0])
                    self._drift = t.clamp(self._drift)
                    if t.wants_jump(offset_ns):
                        state = ServoState.JUMP
                        step = -offset_ns
                    else:
                        state = ServoState.LOCKED
                    ppb = self._drift
                    self._count = 2
                    if not self._has_estimate:  # the first estimate: nothing earlier to average
                        self._hold.clear()
                        self._hold_sum = 0.0
                        self._hold_from_ns = local_ts_ns + int(HOLDOVER_SETTLE_S * 1e9)
                    self._has_estimate = True
        else:
            if t.step_threshold_ns and t.step_threshold_ns < abs(offset_ns):
                self._count = 0
                state = ServoState.UNLOCKED
            elif self._outlier(offset_ns):
                state = ServoState.LOCKED   # the last output stays
            else:
                ki_term = self.ki * offset_ns * weight
                ppb = self.kp * offset_ns * weight + self._drift + ki_term
                if ppb < -t.max_frequency_ppb:
                    ppb = -t.max_frequency_ppb
                elif ppb > t.max_frequency_ppb:
                    ppb = t.max_frequency_ppb
                else:
                    self._drift += ki_term
                self._average_drift(offset_ns, local_ts_ns)
                state = ServoState.LOCKED
        if state in (ServoState.JUMP, ServoState.LOCKED):
            t.first_update = False
        if step is not None:
            self._new_segment()
            self._applied_at = local_ts_ns
        self._last_ppb = ppb
        self.state = state
        return ServoOutput(state, -ppb, step)


class LinRegServo:
    """Linear regression over the recent (local time, free-running offset) points.

    Each offset is corrected by what our own frequency adjustments added since the first point,
    so the fit sees the free-running clock: its slope is the frequency error, its value at the
    sample time the offset. The output cancels the slope and removes the offset over
    ``correction_intervals`` sync intervals.
    """

    def __init__(
        self,
        *,
        step_threshold_ns: int = 0,
        first_step_threshold_ns: int = 20_000,
        max_frequency_ppb: float = 900_000_000,
        window: int = 16,
        correction_intervals: float = 4.0,
        initial_freq_ppb: float = 0.0,
    ) -> None:
        if window < 3:
            raise ValueError("window must hold at least 3 points")
        self._t = _Thresholds(step_threshold_ns, first_step_threshold_ns, max_frequency_ppb)
        self._points: deque[tuple[float, float]] = deque(maxlen=window)
        self._freq_ppb = initial_freq_ppb
        self._applied_ns = 0.0  # cumulative correction our frequency setting added since the first point
        self._last_local: int | None = None
        self._interval_s = 1.0
        self._correction_intervals = correction_intervals
        self._slope_freq_ppb: float | None = None
        self.state = ServoState.UNLOCKED

    def sync_interval(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"sync interval must be > 0 s, got {interval_s}")
        self._interval_s = interval_s

    def reset(self) -> None:
        self._points.clear()
        self._applied_ns = 0.0
        self._last_local = None
        self.state = ServoState.UNLOCKED

    def holdover_freq_ppb(self) -> float | None:
        """The fitted frequency (the slope) without the offset-correction term; None before a fit."""
        return self._slope_freq_ppb

    def sample(self, offset_ns: int, local_ts_ns: int, weight: float = 1.0) -> ServoOutput:
        t = self._t
        if self._last_local is not None:
            if local_ts_ns <= self._last_local:
                self.reset()
            else:
                self._applied_ns += (local_ts_ns - self._last_local) * self._freq_ppb / 1e9
        if self._points and t.step_threshold_ns and abs(offset_ns) > t.step_threshold_ns:
            self.reset()
            self._last_local = local_ts_ns
            self._points.append((0.0, float(offset_ns)))
            self._x0 = local_ts_ns
            return ServoOutput(ServoState.UNLOCKED, self._freq_ppb)
        if not self._points:
            self._x0 = local_ts_ns
        self._last_local = local_ts_ns
        x = float(local_ts_ns - self._x0)
        self._points.append((x, offset_ns - self._applied_ns))
        if len(self._points) < 2:
            self.state = ServoState.UNLOCKED
            return ServoOutput(self.state, self._freq_ppb)
        n = len(self._points)
        mx = sum(p[0] for p in self._points) / n
        my = sum(p[1] for p in self._points) / n
        sxx = sum((p[0] - mx) ** 2 for p in self._points)
        sxy = sum((p[0] - mx) * (p[1] - my) for p in self._points)
        slope = sxy / sxx if sxx > 0 else 0.0  # ns per ns of the free-running clock
        predicted_free = my + slope * (x - mx)
        predicted_offset = predicted_free + self._applied_ns
        step: int | None = None
        if t.wants_jump(int(predicted_offset)):
            step = -offset_ns
            # the step removes the offset: restart the fit, keep the frequency estimate
            self._freq_ppb = t.clamp(-slope * 1e9)
            self._points.clear()
            self._applied_ns = 0.0
            self._last_local = None
            self.state = ServoState.JUMP
            t.first_update = False
            return ServoOutput(self.state, self._freq_ppb, step)
        horizon_ns = self._correction_intervals * self._interval_s * 1e9
        if n >= 3:
            self._slope_freq_ppb = t.clamp(-slope * 1e9)
        self._freq_ppb = t.clamp(-slope * 1e9 - predicted_offset / horizon_ns * 1e9)
        self.state = ServoState.LOCKED if n >= 3 else ServoState.UNLOCKED
        if self.state is ServoState.LOCKED:
            t.first_update = False
        return ServoOutput(self.state, self._freq_ppb)


def make_servo(cfg: ClockConfig, *, initial_freq_ppb: float = 0.0) -> Servo:
    """The servo ``cfg.clock_servo`` names, with ptp4l's thresholds converted to ns."""
    common = dict(
        step_threshold_ns=int(round(cfg.step_threshold * 1e9)),
        first_step_threshold_ns=int(round(cfg.first_step_threshold * 1e9)),
        max_frequency_ppb=float(cfg.max_frequency or 900_000_000),  # 0: the clock's maximum
        initial_freq_ppb=initial_freq_ppb,
    )
    if cfg.clock_servo is ClockServo.LINREG:
        return LinRegServo(**common)  # type: ignore[arg-type]
    gains = PiGains(cfg.pi_proportional_scale, cfg.pi_proportional_exponent, cfg.pi_proportional_norm_max,
                    cfg.pi_integral_scale, cfg.pi_integral_exponent, cfg.pi_integral_norm_max)
    return PiServo(
        software_timestamps=cfg.time_stamping is TimeStamping.SOFTWARE,
        kp=cfg.pi_proportional_const,
        ki=cfg.pi_integral_const,
        gains=gains,
        **common,  # type: ignore[arg-type]
    )
