"""The lab really produces the delay it claims: asymmetric, variable, from real queueing.

One-way delay is measured with timestamped UDP probes (kernel RX stamp minus send time; all
namespaces share one clock). Shaped direction: median > 100 us and spread (p90 - p10) > 50 us;
the other direction stays near the unshaped baseline.
"""

from __future__ import annotations

import time

import pytest

from topologies import shaping
from topologies.model import SHAPED_CLASSID, STRICT_PRIORITY_CLASSID, Shaping, Where


@pytest.mark.parametrize("where", [Where.EGRESS, Where.INTERNAL])
def test_shaping_delay_distribution(make_lab, where: Where) -> None:  # type: ignore[no-untyped-def]
    lab = make_lab("line-1", shaping=Shaping(where=where))
    time.sleep(0.5)
    fwd = shaping.measure_one_way(lab, "gm", "sl", count=300)
    rev = shaping.measure_one_way(lab, "sl", "gm", count=300)
    print(f"\n{where} gm->sl (shaped): {fwd.line()}\n{where} sl->gm (unshaped): {rev.line()}")
    assert fwd.samples >= 250 and rev.samples >= 250
    assert fwd.p50_us > 100, fwd.line()
    assert fwd.spread_us > 50, fwd.line()
    assert rev.p50_us < 0.5 * fwd.p50_us, (fwd.line(), rev.line())
    assert rev.p50_us < 200, rev.line()
    # the HTB has the strict-priority class and the shaped default class, and the shaped one did the work
    dev = "ia" if where is Where.INTERNAL else "p2"
    out = lab.run("sw1", ["tc", "-s", "class", "show", "dev", dev], check=True).stdout
    assert f"class htb 1:{STRICT_PRIORITY_CLASSID & 0xFFFF:x} " in out and f"class htb 1:{SHAPED_CLASSID & 0xFFFF:x} " in out


def test_strict_priority_class_skips_the_queue(make_lab) -> None:  # type: ignore[no-untyped-def]
    """Probes put into class 1:1 (SO_PRIORITY = 0x00010001, what the dataplane sets) are not delayed."""
    import socket

    lab = make_lab("line-1", shaping=Shaping(where=Where.EGRESS))
    # Frames sent on the shaped port with skb->priority = 0x00010001 (SO_PRIORITY; the dataplane sets
    # the same value from tc-BPF) must be counted by class 1:1, not by the shaped default class.
    sent_before = _class_packets(lab, "sw1", "p2", STRICT_PRIORITY_CLASSID)

    def send() -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("p2", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, STRICT_PRIORITY_CLASSID)
        frame = bytes.fromhex("0180c200000e") + s.getsockname()[4][:6] + b"\x88\xf7" + b"\x00" * 44
        for _ in range(20):
            s.send(frame)
        s.close()

    lab.in_node("sw1", send)
    assert _class_packets(lab, "sw1", "p2", STRICT_PRIORITY_CLASSID) - sent_before == 20


def _class_packets(lab, node: str, dev: str, classid: int) -> int:  # type: ignore[no-untyped-def]
    out = lab.run(node, ["tc", "-s", "class", "show", "dev", dev], check=True).stdout
    want = f"class htb 1:{classid & 0xFFFF:x} "
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(want):
            return int(lines[i + 1].split()[3])
    raise AssertionError(f"no {want} in {out}")
