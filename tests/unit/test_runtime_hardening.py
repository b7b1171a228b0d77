"""Runtime hardening (no sockets): a failed send to one unicast peer, or a full socket buffer, loses
that message but does not FAULT the port (a forged source address must not take a port down); any
other send failure still faults it."""

from __future__ import annotations

import errno

from controlplane.codec.samples import all_samples
from controlplane.core.actions import SendMessage
from controlplane.runtime.loop import Runtime
from controlplane.runtime.transport import TransportError


class _Transport:
    ifname = "eth9"

    def __init__(self, err: int) -> None:
        self.err = err

    def send(self, data, *, event, peer_delay=False, dest=None, tx_stamp=True):  # noqa: ANN001
        raise TransportError(self.ifname, f"send to {dest or 'group'} failed", OSError(self.err, "boom")) from OSError(self.err, "boom")

    def fds(self):  # noqa: ANN201
        return []

    def close(self) -> None:
        pass


class _Node:
    def __init__(self) -> None:
        self.faults: list[tuple[int, str]] = []

    def handle_fault(self, port, reason, now_ns):  # noqa: ANN001
        self.faults.append((port, reason))
        return []

    def next_deadline_ns(self):  # noqa: ANN201
        return None


def _runtime(err: int) -> tuple[Runtime, _Node]:
    node = _Node()
    rt = Runtime(node, {1: _Transport(err)}, clock=None, monotonic_ns=lambda: 5 * 10**9)  # type: ignore[arg-type]
    rt._open.add(1)
    return rt, node


def _send(dest: object) -> SendMessage:
    msg = next(m for m in all_samples().values() if type(m).__name__ == "Signaling")
    return SendMessage(port=1, message=msg, event=False, dest=dest)


def test_unicast_send_failure_does_not_fault_the_port() -> None:
    rt, node = _runtime(errno.EINVAL)
    for _ in range(100):
        rt._send(_send(("198.18.0.1", 320)))
    assert node.faults == [] and rt.counters.tx_dropped == 100 and 1 in rt._open


def test_full_buffer_on_a_group_send_does_not_fault_the_port() -> None:
    rt, node = _runtime(errno.EAGAIN)
    rt._send(_send(None))
    assert node.faults == [] and rt.counters.tx_dropped == 1


def test_other_group_send_failure_faults_the_port() -> None:
    rt, node = _runtime(errno.ENODEV)
    rt._send(_send(None))
    assert rt.counters.faults == 1 and rt.counters.tx_dropped == 0


class _RaisingNode:
    def __init__(self) -> None:
        self.calls = 0

    def handle_message(self, port, message, rx_ts_ns, now_ns, source):  # noqa: ANN001
        self.calls += 1
        raise ValueError("bug")

    def next_deadline_ns(self):  # noqa: ANN201
        return None


def test_an_exception_in_the_node_loses_that_message_only(caplog) -> None:  # noqa: ANN001
    import logging

    from controlplane.codec import encode
    from controlplane.runtime.transport import Received

    node = _RaisingNode()
    rt = Runtime(node, {}, clock=None, monotonic_ns=lambda: 0)  # type: ignore[arg-type]
    data = encode(next(m for m in all_samples().values() if type(m).__name__ == "Announce"))
    with caplog.at_level(logging.ERROR, logger="ptp-switch"):
        for _ in range(10):
            rt._received(1, Received(data, None, ("10.0.0.1", 320), False), 0)
    assert node.calls == 10 and rt.counters.rx_node_errors == 10
    logged = [r for r in caplog.records if "error handling Announce" in r.getMessage()]
    assert len(logged) == 4 and logged[0].exc_info is not None  # 1st, 2nd, 4th, 8th
