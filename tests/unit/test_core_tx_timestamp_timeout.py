"""tx_timestamp_timeout in the runtime (controlplane/runtime/loop.py) over a real core Clock: a TX
stamp that does not come back FAULTs the port (ptp4l's log line), the fault clears after
fault_reset_interval and the port's transport is opened again; a stamp waiting in the socket is
read before judging; a stamp lost while later ones come back is counted, not a FAULT.
Injected monotonic time; a scripted transport stands in for the socket (no root)."""

from __future__ import annotations

import asyncio
import logging
import os
import random

from controlplane.codec.enums import PortState
from controlplane.core.actions import Dest, SendMessage
from controlplane.core.clock import Clock
from controlplane.core.config import parse
from controlplane.runtime.loop import Runtime
from controlplane.runtime.transport import TxTimestamp

S = 1_000_000_000
MS = 1_000_000
GM_ID = bytes.fromhex("0200000000000001")


class _Transport:
    ifname = "eth7"

    def __init__(self) -> None:
        self.opens = 0
        self.closes = 0
        self.sent: list[tuple[int, bytes]] = []  # (token, data) of event sends
        self.queued: list[TxTimestamp] = []  # stamps waiting in the "error queue"
        self.auto_stamp = False
        self._next = 0

    _fds: tuple[int, int] | None = None

    def open(self) -> None:
        self.opens += 1
        self._fds = os.pipe()  # a real descriptor for the event loop's reader (never written)

    def close(self) -> None:
        self.closes += 1
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def fds(self) -> tuple[int, ...]:
        return (self._fds[0],) if self._fds is not None else ()

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object = None, tx_stamp: bool = True) -> int | None:
        if not event:
            return None
        self._next += 1
        self.sent.append((self._next, data))
        if self.auto_stamp:
            self.queued.append(TxTimestamp(token=self._next, tx_ts_ns=1_700_000_000 * S + self._next))
        return self._next

    def poll(self, fd: int) -> list:
        out, self.queued = self.queued, []
        return out


class _Clock:
    frequency_ppb = 0.0

    def read_ns(self) -> int:
        return 1_700_000_000 * S

    def from_system_ns(self, ns: int) -> int:
        return ns

    def adjust_frequency(self, freq_ppb: float) -> None:
        self.frequency_ppb = freq_ppb

    def step(self, delta_ns: int) -> None:
        pass


class _Loop:
    """Injected monotonic time; the runtime's own timers are driven by hand."""

    def __init__(self) -> None:
        self.now = 0
        self.transport = _Transport()
        cfg = parse({"global": {"priority1": "10", "logSyncInterval": "-3", "logAnnounceInterval": "0"}})
        self.clock = Clock(cfg, GM_ID, ["eth7"], rng=random.Random(1))
        self.rt = Runtime(self.clock, {1: self.transport}, _Clock(), monotonic_ns=lambda: self.now, tx_timestamp_timeout_ms=1)

    def advance_to(self, t_ns: int) -> None:
        """Run every runtime deadline (core timers and TX-stamp checks) up to t_ns."""
        while True:
            d = self.rt.node.next_deadline_ns()
            if self.rt._tx_deadlines and (d is None or self.rt._tx_deadlines[0][0] < d):
                d = self.rt._tx_deadlines[0][0]
            if d is None or d > t_ns:
                break
            self.now = max(self.now, d)
            self.rt._on_timer()
        self.now = t_ns

    def deliver(self) -> None:
        """The socket became readable: what the event loop would do."""
        for fd in self.transport.fds():
            self.rt._readable(1, fd)


def _run(body) -> None:
    async def main() -> None:
        lp = _Loop()
        lp.rt.start()
        try:
            body(lp)
        finally:
            lp.rt.stop()
    asyncio.run(main())


def test_missing_tx_stamp_faults_the_port_then_clears_and_reopens(caplog) -> None:
    def body(lp: _Loop) -> None:
        lp.advance_to(4 * S)  # announce receipt timeout -> MASTER, Syncs go out, no stamp comes back
        assert lp.transport.sent, "a master sends Syncs"
        assert lp.clock.port(1).state is PortState.FAULTY
        assert lp.rt.counters.tx_timestamp_timeouts == 1 and lp.rt.counters.faults == 1
        assert lp.transport.closes == 1 and 1 not in lp.rt._open
        sent_before = len(lp.transport.sent)
        lp.advance_to(4 * S + 15 * S)  # fault_reset_interval 4 -> 16 s: still faulty, nothing sent
        assert lp.clock.port(1).state is PortState.FAULTY and len(lp.transport.sent) == sent_before
        lp.transport.auto_stamp = True  # the driver works again
        lp.advance_to(4 * S + 40 * S)
        assert lp.transport.opens == 2 and 1 in lp.rt._open and lp.rt.counters.port_reopens == 1
        assert lp.clock.port(1).state is PortState.MASTER
        lp.deliver()
        assert lp.rt.counters.tx_timestamp_timeouts == 1  # no further fault once stamps come back

    with caplog.at_level(logging.INFO, logger="ptp-switch"):
        _run(body)
    assert "port 1 (eth7): timed out while polling for tx timestamp" in caplog.text
    assert "MASTER to FAULTY on FAULT_DETECTED" in caplog.text and "FAULTY to INITIALIZING on FAULT_CLEARED" in caplog.text


def test_stamp_waiting_in_the_socket_is_read_before_judging() -> None:
    def body(lp: _Loop) -> None:
        lp.transport.auto_stamp = True  # stamps queue up but the loop never saw the socket readable
        lp.advance_to(20 * S)
        assert lp.clock.port(1).state is PortState.MASTER
        assert lp.rt.counters.tx_timestamp_timeouts == 0 and lp.rt.counters.tx_timestamps >= 100

    _run(body)


def test_a_lost_stamp_among_returning_ones_is_counted_not_a_fault() -> None:
    def body(lp: _Loop) -> None:
        lp.transport.auto_stamp = True
        lp.advance_to(5 * S)
        assert lp.clock.port(1).state is PortState.MASTER
        # the error queue overflows: this Sync's stamp is dropped by the kernel ...
        lp.transport.auto_stamp = False
        lp.advance_to(lp.clock.next_deadline_ns())
        lost = lp.transport.sent[-1][0]
        # ... while a later event message's stamp comes back within the timeout
        lp.transport.auto_stamp = True
        lp.now += MS // 4
        lp.rt.execute([SendMessage(1, lp.clock.port(1).build_sync(), True, Dest.PRIMARY, 999_999)])
        lp.deliver()
        assert (1, lost) in lp.rt._tokens
        lp.advance_to(lp.now + S)
        assert (1, lost) not in lp.rt._tokens
        assert lp.rt.counters.tx_timestamps_lost == 1 and lp.rt.counters.tx_timestamp_timeouts == 0
        assert lp.clock.port(1).state is PortState.MASTER and lp.rt.counters.faults == 0

    _run(body)


def test_no_timeout_configured_means_no_check() -> None:
    async def main() -> None:
        lp = _Loop()
        lp.rt = Runtime(lp.clock, {1: lp.transport}, _Clock(), monotonic_ns=lambda: lp.now)
        lp.rt.start()
        try:
            lp.advance_to(10 * S)
            assert lp.transport.sent and lp.clock.port(1).state is PortState.MASTER and not lp.rt._tx_deadlines
        finally:
            lp.rt.stop()
    asyncio.run(main())


def test_unicast_send_without_stamp_is_not_a_port_fault() -> None:
    """A unicast Sync whose stamp never comes (its peer's neighbour failed after the gate looked) is
    not a FAULT of the port: only port-wide (multicast) sends arm tx_timestamp_timeout."""
    from controlplane.core.actions import SendMessage
    from controlplane.codec.messages import Sync
    from controlplane.codec.header import Header
    from controlplane.codec.types import PortIdentity, Timestamp

    def body(lp: _Loop) -> None:
        sync = Sync(header=Header(source_port_identity=PortIdentity(GM_ID, 1), two_step=True), origin_timestamp=Timestamp(0, 0))
        lp.rt.execute([SendMessage(port=1, message=sync, event=True, dest="10.0.0.9", tx_token=77)])
        assert lp.rt._tokens and not lp.rt._tx_deadlines
        lp.now += 10 * MS
        lp.rt.check_tx_timestamps(lp.now)
        assert lp.rt.counters.tx_timestamp_timeouts == 0 and lp.rt.counters.faults == 0

    _run(body)


def test_unreachable_unicast_hosts_go_to_the_node_once_a_second() -> None:
    """The transport's take_unreachable() hosts reach the node's cancel_unreachable() (at most one
    check a second), whose actions the runtime executes."""
    calls: list[tuple[int, str]] = []

    def body(lp: _Loop) -> None:
        hosts = [["10.0.0.9"], [], ["10.0.0.10"]]
        lp.transport.take_unreachable = lambda now_ns=None: hosts.pop(0) if hosts else []  # type: ignore[attr-defined]
        lp.rt.node.cancel_unreachable = lambda port, host, now_ns: calls.append((port, host)) or []  # type: ignore[attr-defined]
        lp.now = 2 * S
        lp.rt.check_unreachable(lp.now)
        lp.rt.check_unreachable(lp.now + 500 * MS)  # within the second: not asked
        lp.rt.check_unreachable(lp.now + 1 * S)
        lp.rt.check_unreachable(lp.now + 2 * S)
        assert calls == [(1, "10.0.0.9"), (1, "10.0.0.10")]

    _run(body)
