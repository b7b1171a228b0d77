"""runtime.loop.Runtime on real sockets in two namespaces, driven by small scripted nodes.

The node here is a stand-in for the core (it scripts a few actions); the kernel, sockets, stamps,
codec and clock are real. Checks: SendMessage reaches the peer decoded, with an RX stamp in the
receiver's virtual-clock time; the TX stamp comes back with the core's tx_token; timers fire;
a malformed packet is counted and dropped; a port whose interface is missing becomes a FAULT
through handle_fault while the loop keeps running; every action variant is executed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterator

import pytest

from controlplane.codec.enums import PortState
from controlplane.codec.header import Header
from controlplane.codec.messages import Sync
from controlplane.codec.types import PortIdentity, Timestamp
from controlplane.core.actions import (
    AdjustClock,
    ArmTimer,
    Dest,
    Fault,
    OffsetSample,
    ParentChanged,
    ProgramDataplane,
    SendMessage,
    StateChanged,
)
from controlplane.runtime.clock import VirtualClock
from controlplane.runtime.loop import Runtime
from controlplane.runtime.udp import UdpV4Transport
from tests.lab.conftest import in_netns, open_pair, veth_netns_pair


@pytest.fixture
def two_ns() -> Iterator[tuple[str, str]]:
    with veth_netns_pair("L", "10.252.0") as pair:
        yield pair


def _sync(seq: int) -> Sync:
    pid = PortIdentity(bytes.fromhex("020000fffe000001"), 1)
    return Sync(header=Header(sequence_id=seq, source_port_identity=pid, two_step=True), origin_timestamp=Timestamp(0, 0))


class Sender:
    """Sends a Sync at start and another (to the peer-delay group) from a timer 50 ms later."""

    def __init__(self) -> None:
        self.tx: list[tuple[int, int]] = []
        self.deadline: int | None = None
        self.faults: list[tuple[int, str]] = []

    def start(self, now_ns: int) -> list[Any]:
        self.deadline = now_ns + 50_000_000
        return [SendMessage(port=1, message=_sync(1), event=True, tx_token=101), ArmTimer(self.deadline),
                StateChanged(1, PortState.INITIALIZING, PortState.LISTENING, "INIT_COMPLETE")]

    def handle_timer(self, now_ns: int) -> list[Any]:
        self.deadline = None
        return [SendMessage(port=1, message=_sync(2), event=True, dest=Dest.PDELAY, tx_token=102),
                ParentChanged(PortIdentity(b"\1" * 8, 1), b"\1" * 8, 1),
                OffsetSample(1, 12, 1500, 3.0, 2), Fault(1, "test fault line")]

    def next_deadline_ns(self) -> int | None:
        return self.deadline

    def handle_tx_timestamp(self, tx_token: int, tx_ts_ns: int, now_ns: int) -> list[Any]:
        self.tx.append((tx_token, tx_ts_ns))
        return []

    def handle_message(self, *a: Any) -> list[Any]:
        return []

    def handle_fault(self, port: int, reason: str, now_ns: int) -> list[Any]:
        self.faults.append((port, reason))
        return []


class Receiver(Sender):
    def __init__(self) -> None:
        super().__init__()
        self.rx: list[tuple[int, Any, int | None, Any]] = []

    def start(self, now_ns: int) -> list[Any]:
        return [AdjustClock(freq_ppb=0.0, step_ns=0), ProgramDataplane(1, 1000, 0, 1.0, True)]

    def next_deadline_ns(self) -> int | None:
        return None

    def handle_message(self, port: int, message: Any, rx_ts_ns: int | None, now_ns: int, source: object) -> list[Any]:
        self.rx.append((port, message, rx_ts_ns, source))
        return []


def test_runtime_moves_messages_stamps_timers_and_faults(two_ns: tuple[str, str]) -> None:
    a, b = two_ns
    ta, tb = open_pair(a, b, lambda: UdpV4Transport("eth0"))
    with in_netns(b):
        missing = UdpV4Transport("nosuch0")
    sender, receiver = Sender(), Receiver()
    rx_clock = VirtualClock(offset_ns=5_000_000)

    async def scenario() -> tuple[Runtime, Runtime]:
        time.sleep(0.3)  # RX stamping static key
        ra = Runtime(sender, {1: ta}, VirtualClock())
        rb = Runtime(receiver, {1: tb, 2: missing}, rx_clock, free_running=True)
        rb.start()
        ra.start()
        ta.send(b"\x00\x02garbage", event=True)  # a malformed "Sync"
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(receiver.rx) >= 2 and len(sender.tx) >= 2:
                break
        ra.stop()
        rb.stop()
        return ra, rb

    ra, rb = asyncio.run(scenario())
    assert [m.header.sequence_id for _, m, _, _ in receiver.rx] == [1, 2]
    assert all(port == 1 and src[0] == "10.252.0.1" for port, _, _, src in receiver.rx)
    assert [t for t, _ in sender.tx] == [101, 102]
    for (_, _, rx_ts, _), (_, tx_ts) in zip(receiver.rx, sender.tx):
        # receiver's clock is 5 ms ahead of CLOCK_REALTIME; sender's is CLOCK_REALTIME
        assert rx_ts is not None and 0 < rx_ts - 5_000_000 - tx_ts < 5_000_000
    assert rb.counters.rx_malformed == 1 and rb.counters.rx_messages == 2
    assert receiver.faults and receiver.faults[0][0] == 2 and "nosuch0" in receiver.faults[0][1]
    assert ra.counters.tx_messages == 2 and ra.counters.tx_timestamps == 2
    assert ra.port_states == {1: "LISTENING"}
    assert rb.counters.clock_adjustments == 0  # free_running: AdjustClock is not applied
    assert ta.fds() == () and tb.fds() == ()  # stop() closed the sockets


def test_daemon_passes_config_to_the_runtime(two_ns: tuple[str, str], tmp_path: Any) -> None:
    """The daemon's Runtime gets the configured tx_timestamp_timeout (ptp4l's option, ms): a real
    Daemon built on a real port in a namespace; the default (1 ms, ptp4l's) when the file omits it."""
    from controlplane.services.daemon import Daemon, DaemonOptions

    a, _b = two_ns
    for text, want_ns in (("tx_timestamp_timeout 7\n", 7_000_000), ("", 1_000_000)):
        cfg = tmp_path / "d.cfg"
        cfg.write_text(f"[global]\nfree_running 1\n{text}uds_address {tmp_path / 'uds'}\n")
        with in_netns(a):
            d = Daemon(DaemonOptions(interfaces=("eth0",), config_file=str(cfg), overrides=(("network_transport", "UDPv4"), ("time_stamping", "software"))))
            try:
                rt = d.build()
                assert rt.tx_timestamp_timeout_ns == want_ns
            finally:
                d.close()
