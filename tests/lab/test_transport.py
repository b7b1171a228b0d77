"""Transports on real sockets in two network namespaces joined by a veth pair.

Checks bytes sent == bytes received for event/general x primary/peer-delay on UDPv4, UDPv6 and L2,
the sender's TX stamp (error queue, matched by token) and the receiver's RX stamp: both
CLOCK_REALTIME, tx < rx, rx - tx below a few ms. Also: L2 receives on a bridge port; an event send
with ``tx_stamp=False`` arrives, gets no TX stamp, and the next stamped send's token still matches.
"""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest

from controlplane.runtime.l2 import L2Transport
from controlplane.runtime.rawudp import RawUdpV4Transport
from controlplane.runtime.transport import Received, TransportError, TxTimestamp
from controlplane.runtime.udp import UdpV4Transport, UdpV6Transport
from tests.lab.conftest import in_netns, open_pair, veth_netns_pair
from tests.lab.conftest import sh as _sh


@pytest.fixture
def two_ns() -> Iterator[tuple[str, str]]:
    with veth_netns_pair("T", "10.251.0", "fd00:251") as pair:
        yield pair


def _collect(t, want, timeout_s: float = 2.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not want(out):
        for fd in t.fds():
            out.extend(t.poll(fd))
        time.sleep(0.005)
    return out


@pytest.mark.parametrize("cls", [UdpV4Transport, UdpV6Transport, L2Transport], ids=lambda c: c.network_protocol)
def test_send_receive_with_timestamps(two_ns: tuple[str, str], cls) -> None:
    a, b = two_ns
    ta, tb = open_pair(a, b, lambda: cls("eth0"))
    try:
        time.sleep(0.3)  # the kernel enables RX stamping (a static key) from a work item
        assert len(ta.fds()) == 2 and len(ta.protocol_address()) in (4, 6, 16)
        tokens = set()
        for msg_type, event, peer_delay in ((0x0, True, False), (0xB, False, False), (0x2, True, True), (0xA, False, True)):
            payload = bytes([msg_type, 0x02]) + os.urandom(42)
            before_ns = time.time_ns()
            token = ta.send(payload, event=event, peer_delay=peer_delay)
            got = _collect(tb, lambda out: any(isinstance(e, Received) for e in out))
            rx = [e for e in got if isinstance(e, Received)]
            assert [r.data for r in rx] == [payload]
            assert rx[0].event is event
            if not event:
                assert token is None
                continue
            assert token is not None and token not in tokens
            tokens.add(token)
            stamps = _collect(ta, lambda out: any(isinstance(e, TxTimestamp) for e in out))
            tx = [e for e in stamps if isinstance(e, TxTimestamp)]
            assert [s.token for s in tx] == [token]
            tx_ns, rx_ns = tx[0].tx_ts_ns, rx[0].rx_ts_ns
            assert rx_ns is not None
            # CLOCK_REALTIME stamps, in order, and close together
            assert before_ns - 1_000_000 < tx_ns < rx_ns < time.time_ns()
            assert rx_ns - tx_ns < 5_000_000
    finally:
        ta.close()
        tb.close()


def test_unicast_send(two_ns: tuple[str, str]) -> None:
    a, b = two_ns
    ta, tb = open_pair(a, b, lambda: UdpV4Transport("eth0"))
    try:
        time.sleep(0.2)
        token = ta.send(b"\x01\x02" + b"u" * 42, event=True, dest=("10.251.0.2", 0))
        rx = [e for e in _collect(tb, lambda o: bool(o)) if isinstance(e, Received)]
        assert rx and rx[0].source == ("10.251.0.1", 319) and token == 0
    finally:
        ta.close()
        tb.close()


def test_l2_receives_on_a_bridge_port(two_ns: tuple[str, str]) -> None:
    """The bridge's rx_handler consumes frames on an enslaved port; the ETH_P_ALL tap still sees them."""
    a, b = two_ns
    _sh("ip", "-n", b, "link", "add", "br0", "type", "bridge")
    _sh("ip", "-n", b, "link", "set", "eth0", "master", "br0")
    _sh("ip", "-n", b, "link", "set", "br0", "up")
    ta, tb = open_pair(a, b, lambda: L2Transport("eth0"))
    try:
        time.sleep(0.3)
        payload = b"\x00\x02" + b"b" * 42
        ta.send(payload, event=True)
        rx = [e for e in _collect(tb, lambda o: bool(o)) if isinstance(e, Received)]
        assert [r.data for r in rx] == [payload] and rx[0].rx_ts_ns is not None
    finally:
        ta.close()
        tb.close()


def test_missing_interface_is_a_typed_error(two_ns: tuple[str, str]) -> None:
    with in_netns(two_ns[0]):
        for cls in (UdpV4Transport, UdpV6Transport, L2Transport):
            with pytest.raises(TransportError, match="nosuch0"):
                cls("nosuch0").open()


@pytest.mark.parametrize("cls", [UdpV4Transport, UdpV6Transport, L2Transport, RawUdpV4Transport],
                         ids=["UDPv4", "UDPv6", "L2", "raw-UDPv4"])
def test_event_send_without_tx_stamp(two_ns: tuple[str, str], cls) -> None:
    """The kernel makes no TX stamp for a ``tx_stamp=False`` send (a per-send SO_TIMESTAMPING control
    message without TX flags) and takes no OPT_ID key for it: the transport's token counter and the
    kernel's keys stay in step, so the stamped send after it is matched to its own token."""
    a, b = two_ns
    ta, tb = open_pair(a, b, lambda: cls("eth0"))
    try:
        time.sleep(0.3)
        first = ta.send(b"\x00\x02" + b"a" * 42, event=True)      # stamped: token 0
        stamps = _collect(ta, lambda out: any(isinstance(e, TxTimestamp) for e in out))
        assert [e.token for e in stamps if isinstance(e, TxTimestamp)] == [first]
        quiet = b"\x00\x02" + os.urandom(42)
        assert ta.send(quiet, event=True, tx_stamp=False) is None
        got = _collect(tb, lambda out: any(isinstance(e, Received) and e.data == quiet for e in out))
        assert any(isinstance(e, Received) and e.data == quiet for e in got), "the unstamped send never arrived"
        # no stamp comes for it (the stamp of a send on veth arrives within microseconds)
        late = _collect(ta, lambda out: False, timeout_s=0.3)
        assert not [e for e in late if isinstance(e, TxTimestamp)], "a TX stamp came for a tx_stamp=False send"
        second = ta.send(b"\x00\x02" + b"b" * 42, event=True)
        stamps = _collect(ta, lambda out: any(isinstance(e, TxTimestamp) for e in out))
        assert second == first + 1
        assert [e.token for e in stamps if isinstance(e, TxTimestamp)] == [second]
    finally:
        ta.close()
        tb.close()
