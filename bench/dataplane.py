"""Dataplane benchmark: ns per packet through BPF_PROG_TEST_RUN with repeat, raw and minus the
empty-XDP floor measured in the same run. ``python -m bench.dataplane [--out FILE] [--repeat N]``
prints JSON (or writes it to FILE). Needs root. Bulk-forwarding throughput is not measured yet."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from dataplane.loader import Dataplane
from dataplane.maps import PortConfig, PtpKey
from dataplane.testrun import run_tc, run_xdp


def _empty_xdp_fd():
    from bcc import BPF

    b = BPF(text="int empty(struct xdp_md *ctx) { return XDP_PASS; }", cflags=["-w"])
    return b, b.load_func(b"empty", BPF.XDP).fd


def measure(repeat: int = 200_000, rounds: int = 5) -> dict:
    from tests.bpf import ptpfix as F   # the test fixtures' frame builders

    dp = Dataplane(["lo"], pin=False)
    dp.load()
    m = dp.maps
    m.set_port(PortConfig(ifindex=1, slot=0))
    m.set_port(PortConfig(ifindex=7, slot=1))
    frames = {
        "ptp_event_udp4": F.encap("udp4", F.ptp(F.SYNC)),
        "ptp_general_udp4": F.encap("udp4", F.ptp(F.FOLLOW_UP), event=False),
        "non_ptp_udp4": F.encap("udp4", F.ptp(F.SYNC))[:34] + b"\x00\x35\x00\x35" + F.encap("udp4", F.ptp(F.SYNC))[38:],
    }
    b, empty = _empty_xdp_fd()
    out: dict = {"repeat": repeat, "rounds": rounds, "unit": "ns/packet (kernel mean, median of rounds)"}
    floor = statistics.median(run_xdp(empty, frames["non_ptp_udp4"], repeat=repeat).duration_ns for _ in range(rounds))
    out["empty_xdp_floor"] = floor
    for name, frame in frames.items():
        x = statistics.median(run_xdp(dp.prog_fds["xdp_ingress"], frame, repeat=repeat).duration_ns for _ in range(rounds))
        # egress: event with a seeded ingress stamp (the stamp is refreshed each round; the
        # correction is added on every repeat, which is the real per-packet work)
        vals = []
        for _ in range(rounds):
            m.seed_ingress(PtpKey.make(0, 0, 100, F.GM_PORT), time.clock_gettime_ns(time.CLOCK_MONOTONIC), 7)
            vals.append(run_tc(dp.prog_fds["tc_egress"], frame, ifindex=1, ingress_ifindex=7, repeat=repeat).duration_ns)
        t = statistics.median(vals)
        out[name] = {"xdp_ingress": x, "xdp_ingress_minus_floor": x - floor, "tc_egress": t}
    b.cleanup()
    dp.detach()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dataplane")
    ap.add_argument("--out", help="write JSON here (default stdout)")
    ap.add_argument("--repeat", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    res = measure(args.repeat, args.rounds)
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
