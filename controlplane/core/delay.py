"""Delay maths (IEEE 1588-2019 11.3 / 11.4) and filters. Integers in nanoseconds, PTP time.

E2E (delay request-response), with c_* the correctionField values in ns:
    tms_raw = t2 - t1 - c_sync - c_follow_up            (master -> slave, includes +offset)
    tsm_raw = t4 - t3 - c_delay_resp                     (slave -> master, includes -offset)
    meanPathDelay = (tms_raw + tsm_raw) / 2
    offsetFromMaster = tms_raw - meanPathDelay - delayAsymmetry
delayAsymmetry is tms - meanPathDelay (positive when master -> slave is longer), as in 7.4.2.
On the wire (11.6, as ptp4l) the slave adds it to the Sync's correction at ingress and subtracts it
from the Delay_Req's at egress (the master copies that into Delay_Resp); with both in the c_* terms,
meanPathDelay comes out symmetric and offsetFromMaster = tms_raw - meanPathDelay (asymmetry 0 here).

P2P (peer delay), requester timestamps t1/t4 in our time base, responder t2/t3 in the peer's:
    turnaround = (t3 - t2) + c_pdelay_resp + c_pdelay_resp_follow_up
    meanLinkDelay = ((t4 - t1) * neighborRateRatio - turnaround) / 2
neighborRateRatio = (t3c_n - t3c_k) / (t4_n - t4_k) over a window of exchanges.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

__all__ = [
    "GmRateRatioEstimator",
    "MovingMedian",
    "OutlierFilter",
    "PeerDelayExchange",
    "RateRatioEstimator",
    "correction_ns",
    "e2e_mean_path_delay",
    "offset_from_master",
    "p2p_mean_link_delay",
]


def correction_ns(correction_scaled_ns: int) -> int:
    """correctionField (ns * 2^16, signed) rounded to integer ns."""
    return round(correction_scaled_ns / 65536)


def e2e_mean_path_delay(t1: int, t2: int, t3: int, t4: int, c_ms_ns: int, c_sm_ns: int) -> int:
    return round(((t2 - t1 - c_ms_ns) + (t4 - t3 - c_sm_ns)) / 2)


def offset_from_master(t1: int, t2: int, c_ms_ns: int, mean_path_delay_ns: int, delay_asymmetry_ns: int = 0) -> int:
    return t2 - t1 - c_ms_ns - mean_path_delay_ns - delay_asymmetry_ns


def p2p_mean_link_delay(t1: int, t2: int, t3: int, t4: int, c_resp_ns: int, c_fup_ns: int, rate_ratio: float = 1.0) -> int:
    turnaround = (t3 - t2) + c_resp_ns + c_fup_ns
    return round(((t4 - t1) * rate_ratio - turnaround) / 2)


class MovingMedian:
    """ptp4l's delay_filter moving_median over ``length`` samples."""

    def __init__(self, length: int = 10) -> None:
        if length < 1:
            raise ValueError("filter length must be >= 1")
        self._window: deque[int] = deque(maxlen=length)

    def add(self, value: int) -> int:
        self._window.append(value)
        return round(statistics.median(self._window))

    def reset(self) -> None:
        self._window.clear()

    def __len__(self) -> int:
        return len(self._window)


class OutlierFilter:
    """Rejects a sample further than ``threshold`` x max(MAD, floor_ns) from the recent median.

    Needs ``warmup`` accepted samples before it rejects anything; after ``max_consecutive``
    rejections in a row it accepts again (the path really changed) and restarts its window.
    """

    def __init__(self, threshold: float = 5.0, window: int = 16, floor_ns: int = 1_000, warmup: int = 4, max_consecutive: int = 4) -> None:
        self.threshold = threshold
        self.floor_ns = floor_ns
        self.warmup = warmup
        self.max_consecutive = max_consecutive
        self._window: deque[int] = deque(maxlen=window)
        self._rejected_in_row = 0
        self.rejected = 0

    def accept(self, value: int) -> bool:
        if len(self._window) >= self.warmup:
            med = statistics.median(self._window)
            mad = statistics.median(abs(v - med) for v in self._window)
            if abs(value - med) > self.threshold * max(mad, self.floor_ns):
                self._rejected_in_row += 1
                self.rejected += 1
                if self._rejected_in_row <= self.max_consecutive:
                    return False
                self._window.clear()
        self._rejected_in_row = 0
        self._window.append(value)
        return True

    def reset(self) -> None:
        self._window.clear()
        self._rejected_in_row = 0


@dataclass
class PeerDelayExchange:
    """One Pdelay_Req/Resp/Resp_Follow_Up exchange being assembled (requester side)."""

    sequence_id: int
    t1: int | None = None
    t2: int | None = None
    t3: int | None = None
    t4: int | None = None
    c_resp_ns: int = 0
    c_fup_ns: int = 0
    two_step: bool = True
    responder: object = None  # PortIdentity of the responder
    got_resp: bool = False
    got_fup: bool = False

    def complete(self) -> bool:
        if self.t1 is None or self.t4 is None or not self.got_resp:
            return False
        return self.got_fup if self.two_step else True

    def t3c(self) -> int:
        """Responder's response time incl. corrections (t3 + c), in the responder's time base."""
        return (self.t3 or 0) + self.c_resp_ns + self.c_fup_ns

    def t2_or_zero(self) -> int:
        return self.t2 or 0


class RateRatioEstimator:
    """neighborRateRatio from (t3c, t4) pairs: slope of the peer's clock against ours."""

    def __init__(self, window: int = 8) -> None:
        self._points: deque[tuple[int, int]] = deque(maxlen=window)
        self.ratio = 1.0
        self.valid = False

    def add(self, t3c: int, t4: int) -> float:
        if self._points and t4 <= self._points[-1][1]:
            self._points.clear()
        self._points.append((t3c, t4))
        if len(self._points) >= 2:
            (a3, a4), (b3, b4) = self._points[0], self._points[-1]
            if b4 > a4:
                r = (b3 - a3) / (b4 - a4)
                if 0.998 < r < 1.002:  # within +-2000 ppm; else a step happened: restart
                    self.ratio = r
                    self.valid = True
                else:
                    self._points.clear()
                    self._points.append((t3c, t4))
        return self.ratio

    def reset(self) -> None:
        self._points.clear()
        self.ratio = 1.0
        self.valid = False


class GmRateRatioEstimator:
    """Rate ratio of the grandmaster's time to the local clock, for a transparent clock's residence
    (syntonization, 1588 10.2 / 11.5.2: residence is measured in the TC's time base and must be
    expressed in the grandmaster's).

    Points are (local ingress time of a Sync, the grandmaster time it carries: originTimestamp +
    correctionField of Sync and Follow_Up); the path delay to the TC is constant, so the slope of
    grandmaster time against local time is the ratio. Outlier-robust: the median of the slopes
    between points half a window apart (one late Sync spoils at most two of them). Valid once the
    points span ``min_span_ns``; a ratio beyond +-``max_ppm`` (a step of either clock) restarts.
    """

    def __init__(self, window: int = 32, min_span_ns: int = 2_000_000_000, max_ppm: float = 1_000.0) -> None:
        if window < 4:
            raise ValueError("window must hold at least 4 points")
        self._points: deque[tuple[int, int]] = deque(maxlen=window)
        self.min_span_ns = min_span_ns
        self.max_dev = max_ppm * 1e-6
        self.ratio = 1.0
        self.valid = False
        self.last_local_ns: int | None = None

    def add(self, local_ns: int, gm_ns: int) -> float | None:
        """Add one point; returns the ratio when valid, else None."""
        if self._points and local_ns <= self._points[-1][0]:
            self.reset()
        self._points.append((local_ns, gm_ns))
        self.last_local_ns = local_ns
        n = len(self._points)
        if n < 4 or self._points[-1][0] - self._points[0][0] < self.min_span_ns:
            return self.ratio if self.valid else None
        h = n // 2
        pts = list(self._points)
        slopes = sorted((pts[i + h][1] - pts[i][1]) / (pts[i + h][0] - pts[i][0]) for i in range(n - h))
        m = len(slopes)
        r = slopes[m // 2] if m % 2 else (slopes[m // 2 - 1] + slopes[m // 2]) / 2
        if abs(r - 1.0) > self.max_dev:
            self.reset()
            self._points.append((local_ns, gm_ns))
            self.last_local_ns = local_ns
            return None
        self.ratio = r
        self.valid = True
        return r

    def reset(self) -> None:
        self._points.clear()
        self.ratio = 1.0
        self.valid = False
        self.last_local_ns = None
