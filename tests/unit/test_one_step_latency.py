"""One-step sends with software stamps (runtime/loop.py, no sockets): the send-latency estimator fed
with injected numbers, the late patch of originTimestamp / correctionField checked against the
codec's decoder, and the runtime's path from a kernel TX stamp to the next Sync's correctionField.

The transport here is a recorder (the kernel's part is proven in tests/lab/test_dataplane_onestep.py);
the clock is a script of values, so every figure below is exact."""

from __future__ import annotations

import logging

import pytest

from controlplane.codec.header import Header
from controlplane.codec.messages import PdelayResp, Sync, decode, encode
from controlplane.codec.types import PortIdentity, Timestamp
from controlplane.core.actions import SendMessage
from controlplane.runtime.loop import (
    CORRECTION_FIELD_OFFSET,
    ONE_STEP_LOG_AFTER,
    ORIGIN_TIMESTAMP_OFFSET,
    OneStepLatency,
    Runtime,
    SendLatencyEstimator,
)
from controlplane.runtime.transport import TxTimestamp

SYSTEM_TO_PTP_NS = 37_000_000_000  # the fake clock's PTP time = system time + 37 s


# ---- the estimator -----------------------------------------------------------------------------
def test_estimate_is_zero_until_min_samples_then_the_median() -> None:
    est = SendLatencyEstimator(window=5, min_samples=3, max_ns=1_000_000)
    assert est.add(20_000) and est.estimate_ns == 0 and not est.ready
    assert est.add(40_000) and est.estimate_ns == 0
    assert est.add(30_000) and est.ready and est.estimate_ns == 30_000
    est.add(900_000)  # one slow send (a preempted process) does not move the median far
    assert est.estimate_ns == 30_000
    assert est.accepted == 4 and est.rejected == 0


def test_window_slides() -> None:
    est = SendLatencyEstimator(window=3, min_samples=1, max_ns=1_000_000)
    for v in (10_000, 10_000, 10_000, 50_000, 50_000):
        est.add(v)
    assert est.estimate_ns == 50_000  # only the last three count


@pytest.mark.parametrize("bad", [-1, -5_000_000, 2_000_001, 10**12])
def test_out_of_bounds_samples_are_rejected_and_counted(bad: int) -> None:
    est = SendLatencyEstimator(window=7, min_samples=1, max_ns=2_000_000)
    est.add(15_000)
    assert not est.add(bad)
    assert est.rejected == 1 and est.accepted == 1 and est.estimate_ns == 15_000


def test_bounds_edges_are_accepted() -> None:
    est = SendLatencyEstimator(window=3, min_samples=1, max_ns=2_000_000)
    assert est.add(0) and est.add(2_000_000)


@pytest.mark.parametrize("kw", [{"window": 0}, {"min_samples": 0}, {"window": 3, "min_samples": 4}, {"max_ns": 0}])
def test_bad_estimator_bounds_raise(kw: dict) -> None:
    with pytest.raises(ValueError):
        SendLatencyEstimator(**kw)


# ---- classes by idle gap ------------------------------------------------------------------------
def test_latency_is_learned_per_idle_class() -> None:
    lat = OneStepLatency((1_000_000, 20_000_000), window=5, min_samples=2)
    assert [lat.class_of(g) for g in (0, 999_999, 1_000_000, 19_999_999, 20_000_000, 10**12)] == [0, 0, 1, 1, 2, 2]
    assert lat.estimate_ns(125_000_000) == 0 and not lat.ready
    for v in (45_000, 47_000, 46_000):
        lat.add(v, 125_000_000)  # a Sync after 125 ms idle: cold caches
    assert lat.estimate_ns(125_000_000) == 46_000
    assert lat.estimate_ns(50_000) == 46_000  # its own class is empty: the nearest class that has one
    for v in (24_000, 22_000):
        lat.add(v, 50_000)  # a Sync right after the Announce: the fast kind
    assert lat.estimate_ns(50_000) == 22_000 and lat.estimate_ns(125_000_000) == 46_000
    assert lat.estimate_ns(5_000_000) == 22_000  # class 1 empty: classes 0 and 2 equally near, the lower first
    assert lat.accepted == 5 and "46.0 us after idle >= 20 ms (3)" in lat.describe()


@pytest.mark.parametrize("bounds", [(), (0,), (5, 5), (20, 10), (-1, 10)])
def test_bad_gap_bounds_raise(bounds: tuple) -> None:
    if bounds == ():
        assert OneStepLatency(()).class_of(10**9) == 0  # one class for every gap: allowed
        return
    with pytest.raises(ValueError):
        OneStepLatency(bounds)


# ---- the runtime's one-step path ------------------------------------------------------------------
class _Recorder:
    ifname = "eth9"

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.tx_stamp: list[bool] = []     # what each send asked of the kernel
        self.keys = 0

    def send(self, data, *, event, peer_delay=False, dest=None, tx_stamp=True):  # noqa: ANN001
        self.sent.append(bytes(data))
        self.tx_stamp.append(tx_stamp)
        if not (event and tx_stamp):
            return None
        self.keys += 1                     # the kernel's OPT_ID key: 0, 1, 2, ... (stamped sends only)
        return self.keys - 1

    def poll(self, fd):  # noqa: ANN001
        out, self.pending = self.pending, []
        return out

    def fds(self):  # noqa: ANN201
        return []

    def close(self) -> None:
        pass


class _ScriptClock:
    """read_ns returns the scripted values in turn; system -> PTP is a fixed offset."""

    def __init__(self, reads: list[int]) -> None:
        self.reads = list(reads)

    def read_ns(self) -> int:
        return self.reads.pop(0)

    def from_system_ns(self, system_ns: int) -> int:
        return system_ns + SYSTEM_TO_PTP_NS


class _Node:
    def next_deadline_ns(self):  # noqa: ANN201
        return None

    def handle_tx_timestamp(self, *a):  # noqa: ANN001, ANN002
        raise AssertionError("a one-step stamp must not reach the core")


def _runtime(reads: list[int]) -> tuple[Runtime, _Recorder]:
    tr = _Recorder()
    mono = iter(range(10**12, 10**13, 125_000_000))  # every monotonic read 125 ms after the last: all sends "after idle"
    rt = Runtime(_Node(), {1: tr}, clock=_ScriptClock(reads), monotonic_ns=lambda: next(mono))  # type: ignore[arg-type]
    rt._open.add(1)
    return rt, tr


def _sync(seq: int, correction_scaled_ns: int = 0) -> SendMessage:
    hdr = Header(sequence_id=seq, correction_scaled_ns=correction_scaled_ns, source_port_identity=PortIdentity(b"\x01" * 8, 1))
    return SendMessage(port=1, message=Sync(header=hdr), event=True, one_step=True)


def _stamp(rt: Runtime, tr: _Recorder, key: int, tx_ptp_ns: int) -> None:
    tr.pending = [TxTimestamp(token=key, tx_ts_ns=tx_ptp_ns - SYSTEM_TO_PTP_NS)]
    rt._readable(1, 0)


def test_layout_constants_match_the_codec() -> None:
    """The offsets the runtime patches at are where the codec puts originTimestamp and correctionField."""
    t = Timestamp(0x123456789A, 987_654_321)
    data = encode(Sync(header=Header(correction_scaled_ns=-0x0102030405060708), origin_timestamp=t))
    assert data[ORIGIN_TIMESTAMP_OFFSET:ORIGIN_TIMESTAMP_OFFSET + 10] == t.pack()
    assert int.from_bytes(data[CORRECTION_FIELD_OFFSET:CORRECTION_FIELD_OFFSET + 8], "big", signed=True) == -0x0102030405060708


def test_sync_origin_timestamp_is_the_late_clock_read() -> None:
    rt, tr = _runtime([1_700_000_000_123_456_789])
    rt._send(_sync(7, correction_scaled_ns=5 * 65536))
    msg = decode(tr.sent[0])
    assert isinstance(msg, Sync) and not msg.header.two_step
    assert msg.origin_timestamp.to_ns() == 1_700_000_000_123_456_789
    assert msg.header.correction_scaled_ns == 5 * 65536  # no estimate yet: unchanged
    assert rt.counters.one_step_sends == 1


def test_learned_latency_goes_into_the_next_syncs_correction(caplog: pytest.LogCaptureFixture) -> None:
    n = ONE_STEP_LOG_AFTER + 10
    written = [10_000_000_000 + i * 125_000_000 for i in range(n + 1)]
    rt, tr = _runtime(written)
    lat = [21_000, 25_000, 23_000, 400_000, 22_000]  # ns after the clock read; one slow send
    caplog.set_level(logging.INFO, logger="ptp-switch")
    for i, d in enumerate(lat):
        rt._send(_sync(i))
        _stamp(rt, tr, i, written[i] + d)
    assert rt.one_step_latency[(1, "Sync")].estimate_ns(10**9) == 23_000  # median_low of the five
    assert rt.counters.one_step_tx_timestamps == 5 and rt.counters.tx_timestamps_unmatched == 0
    rt._send(_sync(5, correction_scaled_ns=1000))
    sixth = decode(tr.sent[5])
    assert sixth.origin_timestamp.to_ns() == written[5]
    assert sixth.header.correction_scaled_ns == 1000 + 23_000 * 65536
    _stamp(rt, tr, 5, written[5] + 23_000)
    for i in range(6, n):
        rt._send(_sync(i))
        _stamp(rt, tr, i, written[i] + 23_000)
    lines = [r.getMessage() for r in caplog.records if "one-step send latency" in r.getMessage()]
    assert len(lines) == 1 and "port 1 (eth9)" in lines[0] and "23.0 us" in lines[0], lines  # logged once


def test_a_stamp_before_the_read_is_rejected_and_counted() -> None:
    rt, tr = _runtime([10_000_000_000])
    rt._send(_sync(1))
    _stamp(rt, tr, 0, 10_000_000_000 - 5_000)  # the clock was stepped in between: not a latency
    assert rt.counters.one_step_latency_rejected == 1 and rt.one_step_latency[(1, "Sync")].estimate_ns(10**9) == 0


def test_pdelay_resp_turnaround_is_the_late_read_minus_receipt_plus_latency() -> None:
    rx_ns = 50_000_000_000
    reads = [rx_ns + 80_000 + i * 1_000_000 for i in range(5)]
    rt, tr = _runtime(reads)
    rt.one_step_latency[(1, "PdelayResp")] = lat = OneStepLatency((), min_samples=1)
    lat.add(20_000, 10**9)
    hdr = Header(correction_scaled_ns=3 * 65536, two_step=False)
    resp = PdelayResp(header=hdr, requesting_port_identity=PortIdentity(b"\x02" * 8, 1))
    rt._send(SendMessage(port=1, message=resp, event=True, one_step=True, request_receipt_ns=rx_ns))
    out = decode(tr.sent[0])
    assert isinstance(out, PdelayResp)
    assert out.header.correction_scaled_ns == 3 * 65536 + (80_000 + 20_000) * 65536
    assert out.request_receipt_timestamp.to_ns() == 0
    _stamp(rt, tr, 0, reads[0] + 30_000)  # its kernel stamp feeds the Pdelay_Resp estimator, not the Sync's
    assert lat.accepted == 2 and (1, "Sync") not in rt.one_step_latency


def test_pending_one_step_stamps_are_bounded() -> None:
    from controlplane.runtime import loop

    n = loop.MAX_PENDING_ONE_STEP + 10
    rt, tr = _runtime([10**10 + i for i in range(n)])
    for i in range(n):
        rt._send(_sync(i % 65536))
    assert len(rt._one_step_sent) == loop.MAX_PENDING_ONE_STEP


def test_a_sync_right_after_another_send_uses_the_fast_class() -> None:
    """The idle gap is measured per port from its previous send of any message (here an Announce-like
    general send 200 us before the Sync)."""
    tr = _Recorder()
    mono = [0]
    rt = Runtime(_Node(), {1: tr}, clock=_ScriptClock([10**10, 2 * 10**10]), monotonic_ns=lambda: mono[0])  # type: ignore[arg-type]
    rt._open.add(1)
    rt.one_step_latency[(1, "Sync")] = lat = OneStepLatency((1_000_000,), min_samples=1)
    lat.add(45_000, 125_000_000)  # after idle
    lat.add(20_000, 200_000)  # right after another send
    mono[0] = 5 * 10**9
    rt._send(_sync(1))  # 5 s after nothing: the slow class
    general = SendMessage(port=1, message=Sync(header=Header(sequence_id=9)), event=False)
    mono[0] += 125_000_000
    rt._send(general)
    mono[0] += 200_000
    rt._send(_sync(2))
    assert decode(tr.sent[0]).header.correction_scaled_ns == 45_000 * 65536
    assert decode(tr.sent[2]).header.correction_scaled_ns == 20_000 * 65536
    assert rt._one_step_sent[(1, 1)] == ("Sync", 2 * 10**10, 200_000)  # (time written, idle gap) for its TX stamp (key 1: the second stamped send)


# ---- one_step_dataplane: the eBPF egress finishes the stamp -----------------------------------------
class _Stamper:
    """A scripted instant (REALTIME, TAI) and a record of the stamp requests (the real one writes a BPF
    map: tests/bpf/test_dataplane_bpf.py and tests/lab/test_dataplane_onestep.py)."""

    def __init__(self, system_ns: int, fail: bool = False) -> None:
        self.system_ns, self.fail = system_ns, fail
        self.stamps: list[tuple[int, bytes, int]] = []

    def read(self) -> tuple[int, int]:
        return self.system_ns, self.system_ns + 37_000_000_000

    def stamp(self, port: int, ptp: bytes, tai_ns: int) -> None:
        if self.fail:
            raise OSError("map update failed")
        self.stamps.append((port, ptp, tai_ns))


def _stamped_runtime(stamper: _Stamper) -> tuple[Runtime, _Recorder]:
    rt, tr = _runtime([])   # the clock's read_ns must not be used: the instant comes from the stamper
    rt.one_step_stamper = stamper
    return rt, tr


def test_dataplane_stamped_sync_writes_the_stampers_instant_and_no_latency() -> None:
    st = _Stamper(1_700_000_000_000_000_000)
    rt, tr = _stamped_runtime(st)
    rt.one_step_latency[(1, "Sync")] = lat = OneStepLatency((), min_samples=1)
    lat.add(20_000, 10**9)     # a learned latency exists, but the egress stamp replaces it
    rt._send(_sync(9, correction_scaled_ns=5 * 65536))
    msg = decode(tr.sent[0])
    assert msg.origin_timestamp.to_ns() == 1_700_000_000_000_000_000 + SYSTEM_TO_PTP_NS
    assert msg.header.correction_scaled_ns == 5 * 65536
    assert st.stamps == [(1, tr.sent[0], 1_700_000_000_000_000_000 + 37_000_000_000)]
    assert rt.counters.one_step_dataplane_stamps == 1 and rt.counters.one_step_sends == 1
    # no kernel TX stamp (its clone would sit between the egress stamp and the wire), so none is awaited
    assert tr.tx_stamp == [False] and rt._one_step_sent == {}


def test_without_a_stamper_one_step_sends_still_ask_for_the_tx_stamp() -> None:
    rt, tr = _runtime([2 * 10**10])
    rt._send(_sync(1))
    assert tr.tx_stamp == [True] and (1, 0) in rt._one_step_sent


def test_dataplane_stamped_pdelay_resp_carries_the_turnaround_to_the_read_only() -> None:
    rx_ns = 50_000_000_000
    st = _Stamper(rx_ns - SYSTEM_TO_PTP_NS + 80_000)   # read 80 us after the request's receipt
    rt, tr = _stamped_runtime(st)
    rt.one_step_latency[(1, "PdelayResp")] = lat = OneStepLatency((), min_samples=1)
    lat.add(20_000, 10**9)
    resp = PdelayResp(header=Header(correction_scaled_ns=3 * 65536, two_step=False),
                      requesting_port_identity=PortIdentity(b"\x02" * 8, 1))
    rt._send(SendMessage(port=1, message=resp, event=True, one_step=True, request_receipt_ns=rx_ns))
    out = decode(tr.sent[0])
    assert out.header.correction_scaled_ns == 3 * 65536 + 80_000 * 65536
    assert st.stamps[0][1] == tr.sent[0] and tr.tx_stamp == [False]


def test_a_failed_dataplane_record_still_sends_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    st = _Stamper(1_700_000_000_000_000_000, fail=True)
    rt, tr = _stamped_runtime(st)
    caplog.set_level(logging.WARNING, logger="ptp-switch")
    rt._send(_sync(1))
    rt._send(_sync(2))
    assert len(tr.sent) == 2 and rt.counters.one_step_dataplane_errors == 2
    assert sum("one-step dataplane stamp not recorded" in r.getMessage() for r in caplog.records) == 1


def test_the_daemons_stamper_reads_the_key_the_bpf_program_parses() -> None:
    """services/daemon.py's adapter takes domain, messageType, sequenceId and sourcePortIdentity from
    the encoded bytes, and TAI = REALTIME + whole seconds."""
    from controlplane.services.daemon import _OneStepStamper

    calls = []

    class _Dp:
        def stamp_local_send(self, ifname, **kw):  # noqa: ANN001, ANN003
            calls.append((ifname, kw))

    s = _OneStepStamper(_Dp(), {1: "eth0"})
    data = encode(Sync(header=Header(sequence_id=0xBEEF, domain_number=24,
                                     source_port_identity=PortIdentity(b"\x11" * 8, 0x0203))))
    rt_ns, tai_ns = s.read()
    assert (tai_ns - rt_ns) % 1_000_000_000 == 0 and 0 <= (tai_ns - rt_ns) // 1_000_000_000 <= 1000
    s.stamp(1, data, 123)
    assert calls == [("eth0", {"domain": 24, "msg_type": 0, "sequence_id": 0xBEEF,
                               "source_port_identity": b"\x11" * 8 + b"\x02\x03", "tai_ns": 123})]
