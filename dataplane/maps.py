"""ctypes mirrors of dataplane/bpf/ptp_shared.h and typed access to the dataplane's maps.

The loader checks every mirror against the type BCC derives from the C at load time
(:func:`check_against_bcc`), so a struct changed on one side only fails at attach, not silently.
:class:`DataplaneMaps` works on map file descriptors: from a BCC module or from /sys/fs/bpf pins.
"""

from __future__ import annotations

import ctypes
import time
import enum
import os
from dataclasses import dataclass

from controlplane.codec.enums import MessageType
from dataplane import libbpf

MAX_PORTS = 64
MAX_IFINDEX = 8192            # port_cfg is an array indexed by ifindex
STAMP_SLOTS = 4096            # ingress stamp ring
TWOSTEP_SLOTS = 4096          # two-step ring
NSLOTS = 17
SLOT_MALFORMED = 16
RATE_ONE_Q32 = 1 << 32
SCALED_NS = 1 << 16   # correctionField unit: ns * 2^16

PORT_ENABLED = 0x1
PORT_PRESENT = 0x2
STAMP_VALID = 0x1
STAMP_LOCAL = 0x2   # user space's record of its own one-step send (ptp_egress.c ptp_local_one_step)
G_DOMAIN_FILTER = 0x1
G_TWO_STEP_TC = 0x2
G_RX_TSTAMP = 0x4      # tc_ingress back-dates to skb->tstamp (tai_minus_rt_ns valid)
TS_RESIDENCE = 0x1
TS_GENERAL_PASSED = 0x2

DEFAULT_STALE_AGE_NS = 100_000_000          # 100 ms: no sane switch holds a PTP frame longer
DEFAULT_EGRESS_PRIORITY = 0x00010001        # HTB class 1:1 (the lab shaper's strict-priority class)
MAX_STALE_AGE_NS = 1_000_000_000            # keeps age * rate_ratio_q32 inside 64 bits
RATE_RATIO_RANGE = (0.5, 1.5)


class Mode(enum.IntEnum):
    E2E = 0
    P2P = 1


def slot_name(slot: int) -> str:
    """A counter slot's name: the messageType (IEEE 1588-2019 Table 36) it counts, or MALFORMED."""
    if slot == SLOT_MALFORMED:
        return "MALFORMED"
    try:
        return MessageType(slot).name
    except ValueError:
        return f"TYPE_{slot:X}"


class Counter(enum.IntEnum):
    """Indices into struct ptp_counters.v (enum ptp_counter in ptp_shared.h)."""

    RX = 0
    TX = 1
    CORRECTED = 2
    TWO_STEP_STORED = 3
    TWO_STEP_MATCHED = 4
    TWO_STEP_MISSED = 5
    TWO_STEP_LATE = 6
    MALFORMED = 7
    STALE = 8
    DROPPED = 9
    NO_INGRESS = 10
    FILTERED = 11
    LOCAL = 12
    TRAILER = 13
    PRIORITY_SET = 14
    ERROR = 15
    BACKDATED = 16


NCOUNTERS = len(Counter)


class PtpKey(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint8), ("msg_type", ctypes.c_uint8), ("seq", ctypes.c_uint16),
                ("port_id", ctypes.c_uint8 * 10), ("pad", ctypes.c_uint16)]

    @classmethod
    def make(cls, domain: int, msg_type: int, sequence_id: int, port_identity: bytes) -> "PtpKey":
        if len(port_identity) != 10:
            raise ValueError(f"port identity must be 10 bytes, got {len(port_identity)}")
        k = cls()
        k.domain, k.msg_type = domain, msg_type
        k.seq = int.from_bytes(sequence_id.to_bytes(2, "big"), "little")   # stored as on the wire
        k.port_id[:] = list(port_identity)
        return k


    @property
    def sequence_id(self) -> int:
        return int.from_bytes(self.seq.to_bytes(2, "little"), "big")

    def same(self, other: "PtpKey") -> bool:
        return bytes(self) == bytes(other)


class PtpStamp(ctypes.Structure):
    """One slot of the ingress stamp ring (struct ptp_stamp)."""

    _fields_ = [("key", PtpKey), ("t_ns", ctypes.c_uint64), ("ifindex", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("rate_ratio_q32", ctypes.c_uint64), ("link_delay_scaled", ctypes.c_int64),
                ("pad", ctypes.c_uint64 * 2)]


PtpIngressVal = PtpStamp        # the old name: what an ingress lookup returns (t_ns, ifindex)


class PtpTwostepKey(ctypes.Structure):
    _fields_ = [("k", PtpKey), ("ifindex", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class PtpTwostepVal(ctypes.Structure):
    """One slot of the two-step ring (struct ptp_twostep_val)."""

    _fields_ = [("tk", PtpTwostepKey), ("corr_scaled", ctypes.c_int64), ("t_ns", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


_M32 = 0xFFFFFFFF


def _key_mix(key: PtpKey) -> int:
    """ptp_key_mix() in ptp_common.h (little-endian words of the key, as the BPF target loads them)."""
    raw = bytes(key)
    w1, w2, w3 = (int.from_bytes(raw[i:i + 4], "little") for i in (4, 8, 12))
    h = w1 ^ ((w2 * 0x9E3779B1) & _M32) ^ ((w3 * 0x85EBCA6B) & _M32) ^ (key.domain << 8) ^ key.msg_type
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def stamp_slot(key: PtpKey) -> int:
    """Index of a message's slot in the ingress stamp ring (ptp_stamp_slot)."""
    return (_key_mix(key) + key.sequence_id) & (STAMP_SLOTS - 1)


def twostep_slot(key: PtpKey, ifindex: int) -> int:
    """Index of {message, port} in the two-step ring (ptp_twostep_slot)."""
    return (_key_mix(key) + ifindex * 0x61C88647 + key.sequence_id) & _M32 & (TWOSTEP_SLOTS - 1)


class PtpPortCfg(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("mode", ctypes.c_uint32), ("slot", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("mean_link_delay_scaled", ctypes.c_int64),
                ("delay_asymmetry_scaled", ctypes.c_int64), ("rate_ratio_q32", ctypes.c_uint64)]


class PtpGlobalCfg(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("domain", ctypes.c_uint32), ("stale_age_ns", ctypes.c_uint64),
                ("egress_priority", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("tai_minus_rt_ns", ctypes.c_int64),
                ("build_id", ctypes.c_uint64)]


class PtpCounters(ctypes.Structure):
    _fields_ = [("v", ctypes.c_uint64 * NCOUNTERS)]


# map name -> (key type, value type); value type is per CPU for PERCPU maps
MAP_TYPES: dict[str, tuple[type, type]] = {
    "ptp_ingress": (ctypes.c_uint32, PtpStamp),
    "ptp_twostep": (ctypes.c_uint32, PtpTwostepVal),
    "port_cfg": (ctypes.c_uint32, PtpPortCfg),
    "global_cfg": (ctypes.c_uint32, PtpGlobalCfg),
    "counters": (ctypes.c_uint32, PtpCounters),
}
PERCPU_MAPS = {"counters"}
EXPECTED_SIZES = {PtpKey: 16, PtpStamp: 64, PtpTwostepKey: 24, PtpTwostepVal: 48, PtpPortCfg: 40,
                  PtpGlobalCfg: 40, PtpCounters: 8 * 17}


class LayoutMismatch(RuntimeError):
    """The ctypes mirror and the C struct disagree (someone changed one side only)."""


def check_against_bcc(bpf) -> None:  # bpf: bcc.BPF
    for cls, size in EXPECTED_SIZES.items():
        if ctypes.sizeof(cls) != size:
            raise LayoutMismatch(f"{cls.__name__}: ctypes size {ctypes.sizeof(cls)} != asserted C size {size}")
    for name, (ktype, vtype) in MAP_TYPES.items():
        table = bpf[name.encode()]
        leaf = getattr(table, "sLeaf", None) if name in PERCPU_MAPS else table.Leaf
        if leaf is None:
            leaf = table.Leaf
        for what, mine, theirs in (("key", ktype, table.Key), ("value", vtype, leaf)):
            if ctypes.sizeof(mine) != ctypes.sizeof(theirs):
                raise LayoutMismatch(f"map {name} {what}: ctypes {mine.__name__} is {ctypes.sizeof(mine)} bytes, "
                                     f"BCC derived {ctypes.sizeof(theirs)}")
            mf = [f[0] for f in getattr(mine, "_fields_", [])]
            tf = [f[0] for f in getattr(theirs, "_fields_", [])]
            if mf and tf and mf != tf:
                raise LayoutMismatch(f"map {name} {what}: fields {mf} != BCC {tf}")


@dataclass(frozen=True)
class PortConfig:
    """What the control plane writes for one port (python units: ns, ratio)."""

    ifindex: int
    slot: int
    enabled: bool = True
    mode: Mode = Mode.E2E
    mean_link_delay_ns: float = 0.0
    delay_asymmetry_ns: float = 0.0
    rate_ratio: float = 1.0

    def validate(self) -> None:
        if not 0 < self.ifindex < MAX_IFINDEX:
            raise ValueError(f"ifindex {self.ifindex} outside 1..{MAX_IFINDEX - 1} (the dataplane's port table)")
        if not 0 <= self.slot < MAX_PORTS:
            raise ValueError(f"port slot {self.slot} outside 0..{MAX_PORTS - 1}")
        lo, hi = RATE_RATIO_RANGE
        if not lo <= self.rate_ratio <= hi:
            raise ValueError(f"rate_ratio {self.rate_ratio} outside {lo}..{hi}")
        for name in ("mean_link_delay_ns", "delay_asymmetry_ns"):
            if abs(getattr(self, name)) > 1e9:
                raise ValueError(f"{name} {getattr(self, name)} is more than 1 s")

    def to_c(self) -> PtpPortCfg:
        self.validate()
        c = PtpPortCfg()
        c.flags = PORT_PRESENT | (PORT_ENABLED if self.enabled else 0)
        c.mode = int(self.mode)
        c.slot = self.slot
        c.mean_link_delay_scaled = round(self.mean_link_delay_ns * SCALED_NS)
        c.delay_asymmetry_scaled = round(self.delay_asymmetry_ns * SCALED_NS)
        c.rate_ratio_q32 = round(self.rate_ratio * RATE_ONE_Q32)
        return c

    @classmethod
    def from_c(cls, ifindex: int, c: PtpPortCfg) -> "PortConfig":
        return cls(ifindex=ifindex, slot=c.slot, enabled=bool(c.flags & PORT_ENABLED), mode=Mode(c.mode),
                   mean_link_delay_ns=c.mean_link_delay_scaled / SCALED_NS,
                   delay_asymmetry_ns=c.delay_asymmetry_scaled / SCALED_NS,
                   rate_ratio=c.rate_ratio_q32 / RATE_ONE_Q32)


MAX_TAI_OFFSET_NS = 1000 * 1_000_000_000   # a TAI offset beyond +-1000 s is a mistake (it is 37 s since 2017)


def tai_minus_rt_ns(tries: int = 5) -> int:
    """CLOCK_TAI - CLOCK_REALTIME as a whole number of seconds, in ns (the kernel's TAI offset: 0 until
    someone sets it, 37 s on a host whose NTP daemon does). tc_ingress reads realtime "now" in the
    program as bpf_ktime_get_tai_ns() minus this, so the age of skb->tstamp (the stack's realtime RX
    stamp) needs no realtime/monotonic snapshot and is immune to realtime steps and slews. The two clocks
    are read back to back and rounded to the second (the difference is whole seconds by definition);
    a read pair that straddles a TAI-offset change is retried."""
    for _ in range(tries):
        a = time.clock_gettime_ns(time.CLOCK_TAI) - time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.clock_gettime_ns(time.CLOCK_TAI) - time.clock_gettime_ns(time.CLOCK_REALTIME)
        sa, sb = round(a / 1e9), round(b / 1e9)
        if sa == sb:
            return sa * 1_000_000_000
    return sb * 1_000_000_000


@dataclass(frozen=True)
class GlobalConfig:
    domain: int | None = None            # None: every domain
    two_step_tc: bool = False            # Delay_Req residence into Delay_Resp
    stale_age_ns: int = DEFAULT_STALE_AGE_NS
    egress_priority: int = DEFAULT_EGRESS_PRIORITY   # 0: leave skb->priority alone
    rx_tstamp: bool = True               # tc_ingress back-dates to skb->tstamp (the stack's RX stamp)
    tai_minus_rt_ns: int | None = None   # TAI - REALTIME, whole seconds in ns; None: the kernel's, read at write

    def validate(self) -> None:
        if self.domain is not None and not 0 <= self.domain <= 255:
            raise ValueError(f"domain {self.domain} outside 0..255")
        if not 0 < self.stale_age_ns <= MAX_STALE_AGE_NS:
            raise ValueError(f"stale_age_ns {self.stale_age_ns} outside 1..{MAX_STALE_AGE_NS}")
        if not 0 <= self.egress_priority <= 0xFFFFFFFF:
            raise ValueError(f"egress_priority {self.egress_priority:#x} is not a 32-bit value")
        if self.tai_minus_rt_ns is not None and (self.tai_minus_rt_ns % 1_000_000_000
                                                 or abs(self.tai_minus_rt_ns) > MAX_TAI_OFFSET_NS):
            raise ValueError(f"tai_minus_rt_ns {self.tai_minus_rt_ns} is not a whole number of seconds "
                             f"within +-{MAX_TAI_OFFSET_NS // 1_000_000_000} s")

    def to_c(self) -> PtpGlobalCfg:
        self.validate()
        c = PtpGlobalCfg()
        c.flags = ((G_DOMAIN_FILTER if self.domain is not None else 0) | (G_TWO_STEP_TC if self.two_step_tc else 0)
                   | (G_RX_TSTAMP if self.rx_tstamp else 0))
        c.domain = self.domain or 0
        c.stale_age_ns = self.stale_age_ns
        c.egress_priority = self.egress_priority
        c.tai_minus_rt_ns = tai_minus_rt_ns() if self.tai_minus_rt_ns is None else self.tai_minus_rt_ns
        return c

    @classmethod
    def from_c(cls, c: PtpGlobalCfg) -> "GlobalConfig":
        return cls(domain=c.domain if c.flags & G_DOMAIN_FILTER else None, two_step_tc=bool(c.flags & G_TWO_STEP_TC),
                   stale_age_ns=c.stale_age_ns, egress_priority=c.egress_priority,
                   rx_tstamp=bool(c.flags & G_RX_TSTAMP))  # the TAI offset is re-read at every write


class DataplaneMaps:
    """Typed access to the five maps, given their fds (owned by the caller unless ``own_fds``)."""

    def __init__(self, fds: dict[str, int], own_fds: bool = False) -> None:
        missing = set(MAP_TYPES) - set(fds)
        if missing:
            raise ValueError(f"missing map fds: {sorted(missing)}")
        self.fds = dict(fds)
        self._own = own_fds
        self._ncpu = libbpf.num_possible_cpus()

    def close(self) -> None:
        if self._own:
            for fd in self.fds.values():
                os.close(fd)
            self.fds = {}

    # --- configuration ---------------------------------------------------------------------
    def set_port(self, cfg: PortConfig) -> None:
        libbpf.map_update(self.fds["port_cfg"], ctypes.c_uint32(cfg.ifindex), cfg.to_c())

    def get_port(self, ifindex: int) -> PortConfig | None:
        c = PtpPortCfg()
        if not 0 < ifindex < MAX_IFINDEX:
            return None
        if not libbpf.map_lookup(self.fds["port_cfg"], ctypes.c_uint32(ifindex), c) or not c.flags & PORT_PRESENT:
            return None
        return PortConfig.from_c(ifindex, c)

    def ports(self) -> dict[int, PortConfig]:
        keys, vals, n = libbpf.map_lookup_batch(self.fds["port_cfg"], ctypes.c_uint32, PtpPortCfg, MAX_IFINDEX)
        return {int(keys[i]): PortConfig.from_c(int(keys[i]), vals[i]) for i in range(n) if vals[i].flags & PORT_PRESENT}

    def remove_port(self, ifindex: int) -> None:
        if 0 < ifindex < MAX_IFINDEX:
            libbpf.map_update(self.fds["port_cfg"], ctypes.c_uint32(ifindex), PtpPortCfg())

    build_id: int | None = None   # set by the loader that compiled the programs; else the stored one is kept

    def set_global(self, cfg: GlobalConfig) -> None:
        c = cfg.to_c()
        c.build_id = self.build_id if self.build_id is not None else self.get_build_id()
        libbpf.map_update(self.fds["global_cfg"], ctypes.c_uint32(0), c)

    def get_build_id(self) -> int:
        """Hash of the C sources of the programs using these maps (0: written by an older build)."""
        c = PtpGlobalCfg()
        libbpf.map_lookup(self.fds["global_cfg"], ctypes.c_uint32(0), c)
        return c.build_id

    def tai_minus_rt_ns(self) -> int:
        """The TAI - REALTIME offset (ns, whole seconds) the programs use now."""
        c = PtpGlobalCfg()
        libbpf.map_lookup(self.fds["global_cfg"], ctypes.c_uint32(0), c)
        return c.tai_minus_rt_ns

    def refresh_tai_offset(self) -> int | None:
        """Re-read the kernel's TAI - REALTIME offset and write it if it changed (someone set the TAI
        offset, e.g. an NTP daemon at start or a leap second). Costs two clock reads and one map lookup;
        the daemon may call it every few seconds. Returns the new offset when it wrote one, else None."""
        c = PtpGlobalCfg()
        libbpf.map_lookup(self.fds["global_cfg"], ctypes.c_uint32(0), c)
        now = tai_minus_rt_ns()
        if c.tai_minus_rt_ns == now:
            return None
        c.tai_minus_rt_ns = now
        libbpf.map_update(self.fds["global_cfg"], ctypes.c_uint32(0), c)
        return now

    def get_global(self) -> GlobalConfig:
        c = PtpGlobalCfg()
        libbpf.map_lookup(self.fds["global_cfg"], ctypes.c_uint32(0), c)
        return GlobalConfig.from_c(c)

    # --- state (tests, diagnostics) --------------------------------------------------------
    # The rings are arrays: "absent" is a slot holding another message (or nothing valid).
    def seed_ingress(self, key: PtpKey, t_ns: int, ifindex: int, rate_ratio_q32: int | None = None,
                     link_delay_scaled: int | None = None, *, local: bool = False) -> None:
        """Write an ingress stamp as the ingress program would have (tests, diagnostics); ``local``:
        the record of this host's own one-step send leaving through ``ifindex`` (clock read at the
        CLOCK_TAI instant ``t_ns``), whose egress adds the time since then (``Dataplane.stamp_local_send``).
        The stamp carries the ingress port's rate ratio (Q32, 1.0 == 1 << 32) and, for a Sync entering a
        P2P port, its meanLinkDelay + delayAsymmetry (scaled ns); egress uses these, not port_cfg.
        None (the default) takes them from port_cfg[ifindex] now, as the ingress program does: 1.0 and 0
        when the port is not configured."""
        if rate_ratio_q32 is None or link_delay_scaled is None:
            c = PtpPortCfg()
            ok = 0 < ifindex < MAX_IFINDEX and libbpf.map_lookup(self.fds["port_cfg"], ctypes.c_uint32(ifindex), c)
            if not ok or not c.flags & PORT_ENABLED:
                c = PtpPortCfg()
            if rate_ratio_q32 is None:
                rate_ratio_q32 = c.rate_ratio_q32 or RATE_ONE_Q32
            if link_delay_scaled is None:
                p2p_sync = key.msg_type == MessageType.SYNC and c.mode == Mode.P2P
                link_delay_scaled = c.mean_link_delay_scaled + c.delay_asymmetry_scaled if p2p_sync else 0
        if not 0 < rate_ratio_q32 < 1 << 64:
            raise ValueError(f"rate_ratio_q32 {rate_ratio_q32} outside 1..2**64-1")
        v = PtpStamp(key=key, t_ns=t_ns, ifindex=ifindex, flags=STAMP_VALID | (STAMP_LOCAL if local else 0),
                     rate_ratio_q32=rate_ratio_q32,
                     link_delay_scaled=link_delay_scaled)
        libbpf.map_update(self.fds["ptp_ingress"], ctypes.c_uint32(stamp_slot(key)), v)

    def ingress(self, key: PtpKey) -> PtpStamp | None:
        """The ingress stamp of this message, if its ring slot still holds it."""
        v = PtpStamp()
        libbpf.map_lookup(self.fds["ptp_ingress"], ctypes.c_uint32(stamp_slot(key)), v)
        return v if v.flags & STAMP_VALID and v.key.same(key) else None

    def forget_ingress(self, key: PtpKey) -> bool:
        """Clear this message's ingress stamp (True if it was there)."""
        had = self.ingress(key) is not None
        if had:
            libbpf.map_update(self.fds["ptp_ingress"], ctypes.c_uint32(stamp_slot(key)), PtpStamp())
        return had

    def twostep(self, key: PtpKey, ifindex: int) -> PtpTwostepVal | None:
        """The pending two-step entry (residence or marker) for {event message, port}, if any."""
        v = PtpTwostepVal()
        libbpf.map_lookup(self.fds["ptp_twostep"], ctypes.c_uint32(twostep_slot(key, ifindex)), v)
        return v if v.flags and v.tk.ifindex == ifindex and v.tk.k.same(key) else None

    def forget_twostep(self, key: PtpKey, ifindex: int) -> bool:
        had = self.twostep(key, ifindex) is not None
        if had:
            libbpf.map_update(self.fds["ptp_twostep"], ctypes.c_uint32(twostep_slot(key, ifindex)), PtpTwostepVal())
        return had

    def clear_state(self) -> None:
        for name, n in (("ptp_ingress", STAMP_SLOTS), ("ptp_twostep", TWOSTEP_SLOTS)):
            keys = (ctypes.c_uint32 * n)(*range(n))
            libbpf.map_update_batch(self.fds[name], keys, (MAP_TYPES[name][1] * n)())

    # --- counters --------------------------------------------------------------------------
    def slot_counters(self, slot: int) -> dict[str, dict[str, int]]:
        """{message type name: {counter name: sum over CPUs}} for one port slot (non-zero types only)."""
        out: dict[str, dict[str, int]] = {}
        arr = (PtpCounters * self._ncpu)()
        for t in range(NSLOTS):
            idx = ctypes.c_uint32(slot * NSLOTS + t)
            libbpf.map_lookup(self.fds["counters"], idx, arr)
            sums = [sum(arr[c].v[i] for c in range(self._ncpu)) for i in range(NCOUNTERS)]
            if any(sums):
                out[slot_name(t)] = {Counter(i).name.lower(): int(s) for i, s in enumerate(sums)}
        return out

    def reset_counters(self) -> None:
        n = MAX_PORTS * NSLOTS
        keys = (ctypes.c_uint32 * n)(*range(n))
        libbpf.map_update_batch(self.fds["counters"], keys, (PtpCounters * (n * self._ncpu))())
