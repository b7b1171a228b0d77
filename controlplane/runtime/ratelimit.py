"""Token-bucket rate limits for the control plane's expensive, unauthenticated inputs.

PTP has no authentication: anyone on a segment can send Management requests (each answered with
a response the core builds) and Signaling (unicast negotiation: each REQUEST allocates or renews a
grant). A flood of either would otherwise cost the event loop CPU in proportion to the sender's
rate and starve the messages the clock lives on (Sync, Follow_Up, Delay_Resp, Announce).

``MessageRateLimits.admit(data, source, now_ns)`` is called by the runtime for every received
datagram *before* decoding; it looks at the messageType nibble only and limits Management (0xD) and
Signaling (0xC) messages, each with

* a per-source token bucket (``rate`` messages/s, burst ``2 * rate``), keyed by the sender's
  address (the IP address without the UDP port, or the MAC for L2), held in a bounded LRU table
  (``max_sources``; the least recently seen source's bucket is forgotten when it is full), and
* a global bucket for the kind (``global rate`` messages/s, burst ``2 * global rate``), which bounds
  the total whatever the number of (forged) source addresses.

A rate of 0 disables that bucket. The totals are low by default (50/s per kind): every admitted
request is answered to its source address, which may be forged, and costs the daemon CPU. (Replies
to addresses that never answer ARP used to wait in the kernel's neighbour queues and fill the socket
buffers the port's multicast Sync/Follow_Up need; the UDP transports' neighbour gate,
controlplane/runtime/neighbours.py, now keeps them out of the kernel: a 2,000/s signaling limit held
the slave in the lab, tests/lab/test_load.py.) Raise ``signaling_global_rate_limit`` for many unicast
clients. Every drop is counted (``stats()``); ``report(now_ns)`` returns a
one-line summary of the drops since the previous report, at most once per ``report_interval_ns``,
for the runtime to log. Time is an argument (host monotonic ns); nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Hashable

__all__ = ["KIND_NAMES", "MessageRateLimits", "RateLimitConfig", "RateLimiter", "TokenBucket", "source_key"]

MANAGEMENT = 0xD  # messageType values (IEEE 1588 Table 36)
SIGNALING = 0xC
KIND_NAMES = {MANAGEMENT: "management", SIGNALING: "signaling"}
_NS = 1_000_000_000


class TokenBucket:
    """``rate_per_s`` tokens per second up to ``burst``; ``take(now_ns)`` spends one if available."""

    __slots__ = ("rate_per_s", "burst", "tokens", "last_ns")

    def __init__(self, rate_per_s: float, burst: float, now_ns: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last_ns = now_ns

    def take(self, now_ns: int) -> bool:
        elapsed_ns = now_ns - self.last_ns
        if elapsed_ns > 0:
            self.tokens = min(self.burst, self.tokens + elapsed_ns * self.rate_per_s / _NS)
            self.last_ns = now_ns
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclasses.dataclass
class LimiterStats:
    admitted: int = 0
    dropped_source: int = 0  # over the sender's own rate
    dropped_global: int = 0  # over the kind's total rate
    sources_evicted: int = 0  # buckets forgotten because the source table was full
    sources: int = 0  # buckets held now


class RateLimiter:
    """Per-source buckets in a bounded LRU table plus one global bucket (either may be disabled)."""

    def __init__(self, rate_per_s: float, global_rate_per_s: float, *, max_sources: int = 4096, now_ns: int = 0) -> None:
        if rate_per_s < 0 or global_rate_per_s < 0:
            raise ValueError("rates must be >= 0 (0 = unlimited)")
        if max_sources < 1:
            raise ValueError(f"max_sources must be >= 1, got {max_sources}")
        self.rate_per_s = rate_per_s
        self.max_sources = max_sources
        self._global = TokenBucket(global_rate_per_s, max(1.0, 2 * global_rate_per_s), now_ns) if global_rate_per_s > 0 else None
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self.stats = LimiterStats()

    def admit(self, key: Hashable, now_ns: int) -> bool:
        if self.rate_per_s > 0:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_sources:
                    self._buckets.popitem(last=False)
                    self.stats.sources_evicted += 1
                bucket = self._buckets[key] = TokenBucket(self.rate_per_s, max(1.0, 2 * self.rate_per_s), now_ns)
            else:
                self._buckets.move_to_end(key)
            if not bucket.take(now_ns):
                self.stats.dropped_source += 1
                return False
        if self._global is not None and not self._global.take(now_ns):
            self.stats.dropped_global += 1
            return False
        self.stats.admitted += 1
        return True

    def snapshot(self) -> LimiterStats:
        return dataclasses.replace(self.stats, sources=len(self._buckets))


@dataclasses.dataclass(frozen=True)
class RateLimitConfig:
    """Messages per second (0 = unlimited); defaults match core/config.py's option table."""

    mgmt_rate: float = 10.0
    mgmt_global_rate: float = 50.0
    signaling_rate: float = 20.0
    signaling_global_rate: float = 50.0
    max_sources: int = 4096

    @classmethod
    def from_clock_config(cls, c: object) -> "RateLimitConfig":
        """From a core ``ClockConfig`` (options mgmt_rate_limit, ..., rate_limit_max_sources)."""
        return cls(mgmt_rate=c.mgmt_rate_limit, mgmt_global_rate=c.mgmt_global_rate_limit,  # type: ignore[attr-defined]
                   signaling_rate=c.signaling_rate_limit, signaling_global_rate=c.signaling_global_rate_limit,  # type: ignore[attr-defined]
                   max_sources=c.rate_limit_max_sources)  # type: ignore[attr-defined]


def source_key(source: object) -> Hashable:
    """The sender's address: (ip, port[, flow, scope]) -> ip; MAC bytes as they are; else the repr."""
    if isinstance(source, tuple) and source:
        return source[0]
    if isinstance(source, (bytes, str, int)):
        return source
    return repr(source)


class MessageRateLimits:
    """The runtime's gate: Management and Signaling limited, everything else passes untouched."""

    def __init__(self, config: RateLimitConfig = RateLimitConfig(), *, now_ns: int = 0,
                 report_interval_ns: int = _NS) -> None:
        self.config = config
        self.limiters = {
            MANAGEMENT: RateLimiter(config.mgmt_rate, config.mgmt_global_rate, max_sources=config.max_sources, now_ns=now_ns),
            SIGNALING: RateLimiter(config.signaling_rate, config.signaling_global_rate, max_sources=config.max_sources,
                                   now_ns=now_ns),
        }
        self.report_interval_ns = report_interval_ns
        self._last_report_ns: int | None = None
        self._reported = {kind: 0 for kind in self.limiters}

    def admit(self, data: bytes, source: object, now_ns: int) -> bool:
        if not data:
            return True  # the decoder counts it as malformed
        limiter = self.limiters.get(data[0] & 0x0F)
        if limiter is None:
            return True
        return limiter.admit(source_key(source), now_ns)

    def dropped(self) -> int:
        return sum(lim.stats.dropped_source + lim.stats.dropped_global for lim in self.limiters.values())

    def stats(self) -> dict[str, dict[str, int]]:
        """{"management": {"admitted": .., "dropped_source": .., ...}, "signaling": {...}}"""
        return {KIND_NAMES[k]: dataclasses.asdict(lim.snapshot()) for k, lim in self.limiters.items()}

    def report(self, now_ns: int) -> str | None:
        """A summary of drops since the last report, if any and at most once per report interval."""
        if self._last_report_ns is not None and now_ns - self._last_report_ns < self.report_interval_ns:
            return None
        parts = []
        for kind, lim in self.limiters.items():
            total = lim.stats.dropped_source + lim.stats.dropped_global
            new = total - self._reported[kind]
            if new:
                parts.append(f"{new} {KIND_NAMES[kind]} (total {total}: {lim.stats.dropped_source} over the per-source "
                             f"rate, {lim.stats.dropped_global} over the global rate; {len(lim._buckets)} sources tracked)")
            self._reported[kind] = total
        if not parts:
            return None
        self._last_report_ns = now_ns
        return "rate limit dropped " + "; ".join(parts)
