"""Discrete-event simulator: event queue, oscillators, wires, segments.

Time here is the simulation's TRUE time in integer ns (``t_ns``). Each node has an Oscillator that
turns true time into its free-running base time (frequency error up to +-100 ppm plus a random
walk), and a VirtualClockMath (the same maths the runtime uses) that turns base time into the
node's PTP time; AdjustClock actions act on that. Messages travel as encoded bytes.
All randomness comes from one injected ``random.Random``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass
from typing import Callable

__all__ = ["Oscillator", "Simulator", "Wire"]


class Oscillator:
    """Free-running base time of a node: base(t) = integral of (1 + y(t)) dt, y in ppb.

    ``freq_ppb`` is the initial fractional frequency error; every ``wander_step_ns`` of true time
    y takes a random-walk step of N(0, wander_ppb_per_sqrt_s * sqrt(step s)). Queries must come in
    non-decreasing true time (the event loop guarantees it).
    """

    def __init__(self, freq_ppb: float, rng: random.Random, *, wander_ppb_per_sqrt_s: float = 0.0,
                 wander_step_ns: int = 1_000_000_000, start_base_ns: int = 0) -> None:
        self.freq_ppb = float(freq_ppb)
        self._rng = rng
        self._wander = wander_ppb_per_sqrt_s
        self._step_ns = wander_step_ns
        self._t_anchor = 0
        self._base_anchor = float(start_base_ns)
        self._next_wander = wander_step_ns

    def base(self, t_ns: int) -> int:
        if t_ns < self._t_anchor:
            raise ValueError(f"oscillator queried backwards in time ({t_ns} < {self._t_anchor})")
        while self._wander and self._next_wander <= t_ns:
            self._advance(self._next_wander)
            self.freq_ppb += self._rng.gauss(0.0, self._wander * math.sqrt(self._step_ns / 1e9))
            self._next_wander += self._step_ns
        d = t_ns - self._t_anchor
        return int(self._base_anchor + d + d * self.freq_ppb / 1e9)

    def _advance(self, t_ns: int) -> None:
        d = t_ns - self._t_anchor
        self._base_anchor += d + d * self.freq_ppb / 1e9
        self._t_anchor = t_ns


@dataclass(frozen=True)
class Wire:
    """A link's one-way delays: a->b = delay + asymmetry, b->a = delay - asymmetry, each plus a
    non-negative random queueing term (exponential with mean ``jitter_ns``, capped at 10x)."""

    delay_ns: int = 1_000
    asymmetry_ns: int = 0
    jitter_ns: int = 0

    def sample(self, forward: bool, rng: random.Random) -> int:
        base = self.delay_ns + (self.asymmetry_ns if forward else -self.asymmetry_ns)
        if self.jitter_ns > 0:
            base += int(min(rng.expovariate(1.0 / self.jitter_ns), 10 * self.jitter_ns))
        return max(0, base)


class Simulator:
    """Event queue in true time. ``schedule(t_ns, fn)``; ``run_until(t_ns)``."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.now_ns = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.events_run = 0

    def schedule(self, t_ns: int, fn: Callable[[], None]) -> None:
        if t_ns < self.now_ns:
            t_ns = self.now_ns
        heapq.heappush(self._queue, (t_ns, next(self._seq), fn))

    def run_until(self, t_end_ns: int) -> None:
        q = self._queue
        while q and q[0][0] <= t_end_ns:
            t, _, fn = heapq.heappop(q)
            self.now_ns = t
            fn()
            self.events_run += 1
        self.now_ns = max(self.now_ns, t_end_ns)
