"""Rate limits for management and signaling (runtime/ratelimit.py) and the runtime's gate before decoding."""

from __future__ import annotations

import logging
import tracemalloc

import pytest

from controlplane.codec import encode
from controlplane.codec import management as cm
from controlplane.codec.enums import ManagementAction, ManagementId
from controlplane.codec.header import Header
from controlplane.codec.messages import Management
from controlplane.codec.samples import all_samples
from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS, PortIdentity
from controlplane.core.config import ConfigError, parse
from controlplane.runtime.loop import UDS_PORT, Runtime
from controlplane.runtime.ratelimit import MessageRateLimits, RateLimitConfig, RateLimiter, TokenBucket, source_key
from controlplane.runtime.transport import Received

S = 1_000_000_000


def _mgmt_bytes() -> bytes:
    msg = Management(Header(sequence_id=1, source_port_identity=PortIdentity(b"\x06" * 8, 1), log_message_interval=0x7F),
                     PortIdentity(ALL_CLOCKS, ALL_PORTS), 1, 1, ManagementAction.GET,
                     tlvs=(cm.ManagementTlv(ManagementId.DEFAULT_DATA_SET, None),))
    return encode(msg)


def _sample(name: str) -> bytes:
    return encode(next(m for m in all_samples().values() if type(m).__name__ == name))


def test_token_bucket_rate_and_burst() -> None:
    b = TokenBucket(10.0, 20, 0)
    assert sum(b.take(0) for _ in range(100)) == 20  # the burst, then nothing
    assert sum(b.take(S) for _ in range(100)) == 10  # one second refills 10
    assert sum(b.take(100 * S) for _ in range(100)) == 20  # never more than the burst
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0)


def test_per_source_and_global_buckets() -> None:
    lim = RateLimiter(5.0, 20.0, max_sources=100)
    assert sum(lim.admit("10.0.0.1", 0) for _ in range(50)) == 10  # per-source burst 2x5
    # many sources: the global burst (40) caps the total; first source already spent 10
    admitted = sum(lim.admit(f"10.0.1.{i}", 0) for i in range(100))
    assert admitted == 30
    assert lim.stats.dropped_source == 40 and lim.stats.dropped_global == 70


def test_source_table_is_bounded_and_evictions_counted() -> None:
    lim = RateLimiter(1.0, 0.0, max_sources=64)
    tracemalloc.start()
    for i in range(100_000):
        lim.admit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", i)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    snap = lim.snapshot()
    assert snap.sources == 64 and snap.sources_evicted == 100_000 - 64
    assert peak < 2 * 2**20, peak


def test_source_key_ignores_the_udp_port() -> None:
    assert source_key(("10.0.0.1", 319)) == source_key(("10.0.0.1", 40000)) == "10.0.0.1"
    assert source_key(("fd00::1", 320, 0, 0)) == "fd00::1"
    assert source_key(b"\x02\x00\x00\x00\x00\x01") == b"\x02\x00\x00\x00\x00\x01"


def test_only_management_and_signaling_are_limited() -> None:
    g = MessageRateLimits(RateLimitConfig(mgmt_rate=1, mgmt_global_rate=0, signaling_rate=1, signaling_global_rate=0))
    src = ("10.0.0.9", 320)
    for name in ("Sync", "FollowUp", "DelayReq", "DelayResp", "Announce", "PdelayReq"):
        data = _sample(name)
        if data[0] & 0x0F in (0xC, 0xD):
            continue
        assert all(g.admit(data, src, 0) for _ in range(1000)), name
    mgmt = _mgmt_bytes()
    assert sum(g.admit(mgmt, src, 0) for _ in range(10)) == 2
    sig = _sample("Signaling")
    assert sum(g.admit(sig, src, 0) for _ in range(10)) == 2
    assert g.dropped() == 16
    assert g.admit(b"", src, 0)  # empty: left to the decoder
    note = g.report(0)
    assert note is not None and "8 management" in note and "8 signaling" in note
    assert g.report(S // 2) is None  # at most once per interval
    assert g.stats()["management"]["dropped_source"] == 8


def test_options_in_the_table() -> None:
    c = parse({})
    assert RateLimitConfig.from_clock_config(c) == RateLimitConfig()
    c = parse({"global": {"mgmt_rate_limit": "0", "signaling_global_rate_limit": "50", "rate_limit_max_sources": "8"}})
    assert RateLimitConfig.from_clock_config(c) == RateLimitConfig(mgmt_rate=0.0, signaling_global_rate=50.0, max_sources=8)
    with pytest.raises(ConfigError, match="rate_limit_max_sources"):
        parse({"global": {"rate_limit_max_sources": "0"}})


class _Clock:
    def from_system_ns(self, ns: int) -> int:
        return ns


class _Node:
    def __init__(self) -> None:
        self.messages: list[tuple[int, str]] = []

    def handle_message(self, port, message, rx_ts_ns, now_ns, source):  # noqa: ANN001
        self.messages.append((port, type(message).__name__))
        return []


def test_runtime_drops_a_management_flood_before_the_core_but_not_the_socket(caplog: pytest.LogCaptureFixture) -> None:
    node = _Node()
    now = [0]
    rt = Runtime(node, {}, _Clock(), monotonic_ns=lambda: now[0],  # type: ignore[arg-type]
                 rate_limits=MessageRateLimits(RateLimitConfig(mgmt_rate=10, mgmt_global_rate=0)))
    mgmt, sync = _mgmt_bytes(), _sample("Sync")
    with caplog.at_level(logging.WARNING, logger="ptp-switch"):
        for i in range(1000):
            now[0] = i * 1_000_000  # 1000/s for 1 s
            rt._received(1, Received(mgmt, None, ("10.0.0.66", 320), False), now[0])
            rt._received(1, Received(sync, i, ("10.0.0.1", 319), True), now[0])
            rt._received(UDS_PORT, Received(mgmt, None, "/tmp/pmc", False), now[0])
    to_core = [m for p, m in node.messages if p == 1 and m == "Management"]
    assert 20 <= len(to_core) <= 32  # burst 20 + ~10/s
    assert sum(m == "Sync" for _, m in node.messages) == 1000
    assert sum(p == UDS_PORT for p, _ in node.messages) == 1000
    assert rt.counters.rx_rate_limited == 1000 - len(to_core)
    warnings = [r.getMessage() for r in caplog.records if "rate limit dropped" in r.getMessage()]
    assert 1 <= len(warnings) <= 2 and "management" in warnings[0]
