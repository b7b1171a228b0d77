"""BPF_PROG_TEST_RUN on the dataplane's programs (libbpf's bpf_prog_test_run_opts through ctypes).

``run_xdp`` / ``run_tc`` feed one packet (bytes) to a loaded program fd and return the verdict, the
packet as the program left it and, with ``repeat``, the kernel's mean run time per packet.
The kernel builds a real xdp_buff / sk_buff for each run; the program's map operations are real.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from dataplane import libbpf

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
TC_ACT_OK, TC_ACT_SHOT = 0, 2


class XdpMd(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("rx_queue_index", ctypes.c_uint32),
                ("egress_ifindex", ctypes.c_uint32)]


class SkBuff(ctypes.Structure):
    """struct __sk_buff (uapi/linux/bpf.h); BPF_PROG_TEST_RUN accepts mark, priority, ingress_ifindex,
    ifindex, cb, tstamp, wire_len, gso_segs, gso_size, hwtstamp from user space."""

    _fields_ = [("len", ctypes.c_uint32), ("pkt_type", ctypes.c_uint32), ("mark", ctypes.c_uint32),
                ("queue_mapping", ctypes.c_uint32), ("protocol", ctypes.c_uint32), ("vlan_present", ctypes.c_uint32),
                ("vlan_tci", ctypes.c_uint32), ("vlan_proto", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("ifindex", ctypes.c_uint32), ("tc_index", ctypes.c_uint32),
                ("cb", ctypes.c_uint32 * 5), ("hash", ctypes.c_uint32), ("tc_classid", ctypes.c_uint32),
                ("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32), ("napi_id", ctypes.c_uint32),
                ("family", ctypes.c_uint32), ("remote_ip4", ctypes.c_uint32), ("local_ip4", ctypes.c_uint32),
                ("remote_ip6", ctypes.c_uint32 * 4), ("local_ip6", ctypes.c_uint32 * 4),
                ("remote_port", ctypes.c_uint32), ("local_port", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("flow_keys", ctypes.c_uint64), ("tstamp", ctypes.c_uint64), ("wire_len", ctypes.c_uint32),
                ("gso_segs", ctypes.c_uint32), ("sk", ctypes.c_uint64), ("gso_size", ctypes.c_uint32),
                ("tstamp_type", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3), ("hwtstamp", ctypes.c_uint64)]


assert ctypes.sizeof(SkBuff) == 192, ctypes.sizeof(SkBuff)


@dataclass(frozen=True)
class RunResult:
    retval: int
    data: bytes            # packet after the program
    duration_ns: int       # kernel's mean per run (meaningful with repeat > 1)
    priority: int | None = None   # skb->priority after a tc program


def _run(fd: int, data: bytes, ctx, repeat: int) -> tuple[libbpf.BpfTestRunOpts, bytes]:
    if not data:
        raise ValueError("empty packet")
    inbuf = ctypes.create_string_buffer(bytes(data), len(data))
    outbuf = ctypes.create_string_buffer(len(data) + 512)
    opts = libbpf.BpfTestRunOpts()
    opts.data_in = ctypes.cast(inbuf, ctypes.c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(outbuf, ctypes.c_void_p)
    opts.data_size_out = len(outbuf)
    if ctx is not None:
        opts.ctx_in = ctypes.addressof(ctx)
        opts.ctx_size_in = ctypes.sizeof(ctx)
        opts.ctx_out = ctypes.addressof(ctx)
        opts.ctx_size_out = ctypes.sizeof(ctx)
    opts.repeat = max(1, repeat)
    libbpf.prog_test_run(opts, fd)
    return opts, outbuf.raw[: opts.data_size_out]


def run_xdp(fd: int, data: bytes, *, ingress_ifindex: int = 1, repeat: int = 1) -> RunResult:
    ctx = XdpMd(data=0, data_end=len(data), ingress_ifindex=ingress_ifindex)
    opts, out = _run(fd, data, ctx if ingress_ifindex else None, repeat)
    return RunResult(retval=opts.retval, data=out, duration_ns=opts.duration)


def run_tc(fd: int, data: bytes, *, ifindex: int = 1, ingress_ifindex: int = 0, priority: int = 0,
           tstamp_ns: int = 0, repeat: int = 1) -> RunResult:
    """Run a tc (sched_cls) program as if the packet were leaving ``ifindex`` (must exist in this netns;
    1 = lo) after arriving on ``ingress_ifindex`` (any number; 0 = locally originated); ``tstamp_ns``
    = skb->tstamp (realtime, as the stack's RX stamp; 0 = none)."""
    ctx = SkBuff(ifindex=ifindex, ingress_ifindex=ingress_ifindex, priority=priority, tstamp=tstamp_ns)
    opts, out = _run(fd, data, ctx, repeat)
    return RunResult(retval=opts.retval, data=out, duration_ns=opts.duration, priority=ctx.priority)
