"""Where the uncorrected time lies, per PTP frame (needs root): ``python -m bench.tails [--out FILE]``.

Every software time stamp (a sender's egress clock read, the switch's egress clock read) is followed by
work the correction does not cover: the rest of the sender's transmit path up to the peer's RX stamp.
This measures that "tail" for every frame, from the kernel's own RX stamps, with no change to the
dataplane: a BPF program on the ``net:netif_rx`` raw tracepoint (BCC) records, for each PTP/UDPv4 event
frame queued to a device in the lab's namespaces (on veth: by the sender's ``veth_xmit``), its
``skb->tstamp`` (the RX stamp ptp4l and the dataplane's back-dated ingress use), the namespace,
messageType, sequenceId, correctionField and originTimestamp. Per one-step Sync and Delay_Req:

  GM tail      = sw1's RX stamp - (originTimestamp + the GM's correction)   [GM egress clock read -> sw1]
  sw1 tail     = next RX stamp - (sw1's RX stamp + the residence sw1 added) [sw1 egress clock read -> next]
  Sync U       = slave's RX stamp - originTimestamp - final correction      [all uncorrected time, forward]

A TC's own residence error would show in the sw1 tails; a path that differs between the directions
shows as sw1 tail (Sync) != sw1 tail (Delay_Req). Runs: the one-step GM (topologies.onestep) direct to
a free-running ptp4l slave, and through the congested eBPF TC lab (``gm sw1 >i sl``), at 1 Sync/s and
at 8 Sync/s (where the per-Sync pattern shows which Syncs found the transmit path in cache).

The offsets of ``sk_buff.{data,dev,tstamp}``, ``net_device.nd_net`` and ``net.ns.inum`` come from
the running kernel's BTF (bpftool dumps vmlinux.h, clang compiles ``offsetof``s): the installed kernel
headers are of another version.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FIELDS = {"skb_data": ("struct sk_buff", "data"), "skb_dev": ("struct sk_buff", "dev"),
          "skb_tstamp": ("struct sk_buff", "tstamp"),
          "dev_nd_net": ("struct net_device", "nd_net"), "net_inum": ("struct net", "ns.inum")}


class TailsError(RuntimeError):
    """The kernel's BTF, bpftool or clang is missing, or the tracer cannot load."""


def kernel_offsets() -> dict[str, int]:
    """Byte offsets of FIELDS in the running kernel (its BTF), via bpftool + clang."""
    with tempfile.TemporaryDirectory() as d:
        vmlinux = Path(d) / "vmlinux.h"
        try:
            with vmlinux.open("w") as f:
                subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                               stdout=f, check=True, timeout=60)
            src = Path(d) / "off.c"
            src.write_text('#include "vmlinux.h"\n' + "".join(
                f"const volatile int {n} = __builtin_offsetof({t}, {m});\n" for n, (t, m) in FIELDS.items()))
            asm = subprocess.run(["clang", "-target", "bpf", "-O2", "-S", "-o", "-", str(src)], cwd=d,
                                 capture_output=True, text=True, check=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise TailsError(f"cannot read the kernel's struct layout from BTF (bpftool, clang): {exc}") from exc
    out = {}
    for name in FIELDS:
        m = re.search(rf"^{name}:\s*\n\s*\.long\s+(\d+)", asm, re.M)
        if m is None:
            raise TailsError(f"offset of {name} not found in clang's output")
        out[name] = int(m.group(1))
    return out


TRACER = r'''
#include <uapi/linux/ptrace.h>
struct ev { u64 tstamp; s64 corr; u64 origin_s; u32 origin_ns; u32 netns; u16 seq; u8 type; u8 pad; };
BPF_ARRAY(events, struct ev, 65536);
BPF_PERCPU_ARRAY(count, u32, 1);
BPF_HASH(netns_ok, u32, u8, 64);
RAW_TRACEPOINT_PROBE(netif_rx) {
    void *skb = (void *)ctx->args[0];
    void *dev = 0, *net = 0;
    unsigned char *data = 0;
    u8 h[42 + 44];
    struct ev e = {};
    u32 ns = 0, z = 0, i, *n;
    bpf_probe_read_kernel(&dev, sizeof(dev), skb + OFF_SKB_DEV);
    bpf_probe_read_kernel(&net, sizeof(net), dev + OFF_DEV_ND_NET);
    bpf_probe_read_kernel(&ns, sizeof(ns), net + OFF_NET_INUM);
    if (!netns_ok.lookup(&ns))
        return 0;
    bpf_probe_read_kernel(&data, sizeof(data), skb + OFF_SKB_DATA);
    if (bpf_probe_read_kernel(h, sizeof(h), data - 14) < 0)    /* eth_type_trans pulled the MAC header */
        return 0;
    if (h[12] != 0x08 || h[13] != 0x00 || h[14] != 0x45 || h[23] != 17 || h[36] != 0x01 || h[37] != 0x3f)
        return 0;                                               /* IPv4 without options, UDP, dport 319 */
    bpf_probe_read_kernel(&e.tstamp, sizeof(e.tstamp), skb + OFF_SKB_TSTAMP);
    e.type = h[42] & 0xf;
    e.seq = ((u16)h[72] << 8) | h[73];
    u64 c = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) c = (c << 8) | h[50 + k];
    e.corr = (s64)c;
    u64 s = 0;
#pragma unroll
    for (int k = 0; k < 6; k++) s = (s << 8) | h[76 + k];
    e.origin_s = s;
    e.origin_ns = ((u32)h[82] << 24) | ((u32)h[83] << 16) | ((u32)h[84] << 8) | h[85];
    e.netns = ns;
    n = count.lookup(&z);
    if (!n)
        return 0;
    i = ((bpf_get_smp_processor_id() & 1) << 15) | (*n & 32767);
    *n += 1;
    events.update(&i, &e);
    return 0;
}
'''


class RxTracer:
    """The netif_rx tracer for the namespaces given (their inode numbers); ``stop()`` returns the frames
    as dicts (rx_ns, corr_ns, origin_ns, netns, seq, type). Stores into an array (no wake-ups on the
    traced path); 32768 frames per CPU, 2 CPUs."""

    def __init__(self, netns_inodes: list[int], offsets: dict[str, int]) -> None:
        from bcc import BPF

        defs = [f"-DOFF_{k.upper()}={v}" for k, v in offsets.items()]   # OFF_SKB_DATA, ... (FIELDS)
        try:
            self.bpf = BPF(text=TRACER, cflags=["-w", *defs])
        except Exception as exc:
            raise TailsError(f"the netif_rx tracer does not load: {exc}") from exc
        ok = self.bpf["netns_ok"]
        for ino in netns_inodes:
            ok[ctypes.c_uint32(ino)] = ctypes.c_uint8(1)

    def stop(self) -> list[dict[str, int]]:
        counts = self.bpf["count"][ctypes.c_uint32(0)]
        arr = self.bpf["events"]
        out = []
        for cpu in range(min(2, len(counts))):
            for i in range(min(counts[cpu], 32768)):
                e = arr[ctypes.c_uint32(cpu * 32768 + i)]
                out.append({"rx_ns": e.tstamp, "corr_ns": e.corr >> 16, "origin_ns": e.origin_s * 10**9 + e.origin_ns,
                            "netns": e.netns, "seq": e.seq, "type": e.type})
        self.bpf.cleanup()
        return sorted(out, key=lambda f: f["rx_ns"])


def _pct(values: list[int]) -> dict[str, int] | None:
    if not values:
        return None
    v = sorted(values)
    return {"n": len(v), "p10": v[len(v) // 10], "p50": round(statistics.median(v)), "p90": v[(9 * len(v)) // 10],
            "max": v[-1], "over_10us": sum(x > 10_000 for x in v)}


def tails(frames: list[dict[str, int]], ns: dict[str, int]) -> dict[str, Any]:
    """Per-frame tails from the RX records of one run. ``ns``: node name -> netns inode (gm, sl, sw1?)."""
    by: dict[tuple[int, int], dict[int, dict[str, int]]] = {}
    for f in frames:   # in RX order: keep each namespace's first RX of a frame (a switch's ingress port; the
        by.setdefault((f["type"], f["seq"]), {}).setdefault(f["netns"], f)   # lab's internal veth comes later)
    out: dict[str, list[int]] = {"gm_tail": [], "sw_tail_sync": [], "sw_tail_delay_req": [], "sync_uncorrected": []}
    by_slot: dict[int, list[int]] = {}
    sw = ns.get("sw1")
    for (typ, seq), at in by.items():
        if typ == 0 and ns["sl"] in at:
            last = at[ns["sl"]]
            u = last["rx_ns"] - last["origin_ns"] - last["corr_ns"]
            out["sync_uncorrected"].append(u)
            by_slot.setdefault(seq % 8, []).append(u)
            first = at.get(sw) if sw is not None else last
            if first is not None:
                out["gm_tail"].append(first["rx_ns"] - first["origin_ns"] - first["corr_ns"])
            if sw is not None and sw in at:
                out["sw_tail_sync"].append(last["rx_ns"] - (at[sw]["rx_ns"] + last["corr_ns"] - at[sw]["corr_ns"]))
        elif typ == 1 and sw is not None and sw in at and ns["gm"] in at:
            a, b = at[sw], at[ns["gm"]]
            out["sw_tail_delay_req"].append(b["rx_ns"] - (a["rx_ns"] + b["corr_ns"] - a["corr_ns"]))
    res: dict[str, Any] = {k: _pct(v) for k, v in out.items() if v}
    # Syncs by sequenceId mod 8: at 8 Sync/s each slot is one fixed phase of the GM's second (the Announce
    # goes out just before one of them); ptp4l free-running logs one slot's Syncs only
    slots = [statistics.median(v) for v in by_slot.values() if len(v) >= 3]
    if len(slots) == 8:
        res["sync_uncorrected_slot_median_min_ns"] = round(min(slots))
        res["sync_uncorrected_slot_median_max_ns"] = round(max(slots))
    return res


def _netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def measure(duration_s: float = 30.0, warmup_s: float = 4.0, sync_logs: tuple[str, ...] = ("0", "-3")) -> dict[str, Any]:
    from dataplane.loader import Dataplane
    from topologies import catalog, onestep, shaping
    from topologies.model import Shaping
    from topologies.netns import Lab

    offsets = kernel_offsets()
    rows = []
    for log_sync in sync_logs:
        for case in ("direct", "eBPF TC"):
            topo = "gm sl" if case == "direct" else "gm sw1 >i sl"
            with Lab(catalog.parse(topo, name="tails")) as lab:
                dp = None
                if case != "direct":
                    port = lab.ifname("sw1", "sl")
                    shaping.install_htb(lab, "sw1", port, Shaping())
                    shaping.start_pacer(lab, "sw1", port, Shaping(), duration_s=duration_s + 60)
                    dp = Dataplane(list(lab.switch_ports("sw1")), pin=False)
                    lab.in_node("sw1", dp.attach)
                names = [n.name for n in lab.topology.nodes]
                ns = {n: _netns_inode(lab.ns(n)) for n in names}
                tracer = RxTracer(list(ns.values()), offsets)
                options = dict(onestep.GM_OPTIONS, logSyncInterval=log_sync)
                try:
                    run = onestep.run(lab, "UDPv4", f"tails{log_sync}", duration_s=duration_s, warmup_s=warmup_s,
                                      gm_options=options)
                finally:
                    frames = tracer.stop()
                    if dp is not None:
                        lab.in_node("sw1", dp.detach)
            row = {"section": "tails", "case": case, "sync_per_s": 2 ** -int(log_sync), **run.row(),
                   "frames": len(frames), **tails(frames, ns)}
            rows.append(row)
            print(f"tails {case} {row['sync_per_s']} Sync/s: " + ", ".join(
                f"{k} p50 {v['p50']} ns" for k, v in row.items() if isinstance(v, dict)) +
                (f", Sync slots {row['sync_uncorrected_slot_median_min_ns']}..{row['sync_uncorrected_slot_median_max_ns']} ns"
                 if "sync_uncorrected_slot_median_min_ns" in row else "") +
                f"; slave rms {row['rms_ns']} ns mean {row['mean_ns']} ns", file=sys.stderr, flush=True)
    return {"tails_duration_s": duration_s, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write JSON here (default stdout)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per run (>= 20)")
    args = ap.parse_args(argv)
    if args.duration < 20:
        ap.error("--duration must be at least 20 s (the slave logs its first offset ~6 s in, the first 4 s are dropped)")
    if os.geteuid() != 0:
        print("bench.tails needs root", file=sys.stderr)
        return 2
    from topologies.onestep import OneStepError

    try:
        data = measure(args.duration)
    except (TailsError, OneStepError) as exc:
        print(f"bench.tails: {exc}", file=sys.stderr)
        return 1
    data["command"] = "python -m bench.tails" + (f" --duration {args.duration:g}" if args.duration != 30 else "")
    data["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps(data, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
