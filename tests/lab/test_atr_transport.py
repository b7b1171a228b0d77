"""UDP transport under an event loop: an idle transport must not burn CPU after it has sent.

Regression test (UDP, L2 and the raw-UDP packet-socket transport of bridge ports) for the general
socket's TX-stamp error queue: with SOF_TIMESTAMPING_TX_SOFTWARE on
the general socket, every general send (Announce, Follow_Up, Signaling, Delay_Resp) queued an
error-queue entry that nothing read; a queued entry keeps EPOLLERR raised, so the asyncio reader
fired in a loop and the daemon (and the unicast server) spun at 100 % CPU.
Real sockets in a network namespace made here (a veth pair), removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Iterator

import pytest

from controlplane.runtime.l2 import L2Transport
from controlplane.runtime.rawudp import RawUdpV4Transport
from controlplane.runtime.udp import UdpV4Transport, UdpV6Transport
from tests.lab.conftest import in_netns, veth_netns_pair

@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    with veth_netns_pair("U", "10.252.0", "fd00:252") as pair:
        yield pair


def _idle_cpu_s(transport, seconds: float) -> tuple[float, int]:
    """CPU seconds this process spends while an asyncio loop watches the transport's fds."""
    calls = 0

    def readable(fd: int) -> None:
        nonlocal calls
        calls += 1
        transport.poll(fd)

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        for fd in transport.fds():
            loop.add_reader(fd, readable, fd)
        try:
            await asyncio.sleep(seconds)
        finally:
            for fd in transport.fds():
                loop.remove_reader(fd)

    before = time.process_time()
    asyncio.run(watch())
    return time.process_time() - before, calls


@pytest.mark.parametrize("cls,dest", [(UdpV4Transport, "10.252.0.2"), (UdpV6Transport, "fd00:252::2"),
                                       (L2Transport, None), (RawUdpV4Transport, None)],
                         ids=["UDPv4", "UDPv6", "L2", "raw-UDPv4"])
def test_idle_transport_after_general_sends_does_not_spin(netns_pair, cls, dest) -> None:
    a, _b = netns_pair
    with in_netns(a):
        t = cls("eth0")
        t.open()
    try:
        for _ in range(50):  # Announce-like general messages and Sync-like event messages
            t.send(b"\x0b\x02" + b"g" * 62, event=False, dest=dest)
            t.send(b"\x00\x02" + b"e" * 42, event=True, dest=dest)
        time.sleep(0.2)
        cpu_s, calls = _idle_cpu_s(t, 1.0)
        # the event socket's 50 stamps are read once; a spinning reader ran ~10^5 times and ~1 CPU s
        assert calls < 200, f"reader woke {calls} times in 1 s of idle"
        assert cpu_s < 0.3, f"idle loop used {cpu_s:.2f} CPU s in 1 s"
        general = socket.socket(fileno=os.dup(t.fds()[1]))
        try:
            with pytest.raises(BlockingIOError):
                general.recvmsg(64, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        finally:
            general.close()
    finally:
        t.close()


def _burst_stamps(t, dest: str, n: int) -> set[int]:
    """Send n event messages back to back (no reads in between, as a unicast server's Sync burst),
    then read every TX stamp that comes back; the set of send tokens they carry."""
    from controlplane.runtime.transport import TxTimestamp

    tokens = [t.send(b"\x00\x02" + b"e" * 42, event=True, dest=dest) for _ in range(n)]
    assert tokens == list(range(n))
    got: set[int] = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and len(got) < n:
        events = [ev for fd in t.fds() for ev in t.poll(fd)]
        got |= {ev.token for ev in events if isinstance(ev, TxTimestamp)}
        if not events:
            time.sleep(0.01)
    return got


def test_a_burst_of_event_sends_keeps_every_tx_stamp(netns_pair) -> None:
    """The TX-stamp error queue is bounded by the receive buffer: with the kernel default (~208 KiB,
    ~300 stamps) a burst of Syncs lost the tail's stamps, so those clients got no Follow_Up."""
    a, _b = netns_pair
    with in_netns(a):
        t = UdpV4Transport("eth0")
        t.open()
        small = UdpV4Transport("eth0", rcvbuf_bytes=0, event_port=20319, general_port=20320)  # kernel default
        small.open()
    try:
        n = 3000
        got = _burst_stamps(t, "10.252.0.2", n)
        got_default = _burst_stamps(small, "10.252.0.2", n)
        print(f"TX stamps back after a burst of {n}: {len(got)} (4 MiB buffer), {len(got_default)} (kernel default)")
        assert len(got) == n, f"{n - len(got)} TX stamps lost"
    finally:
        t.close()
        small.close()
