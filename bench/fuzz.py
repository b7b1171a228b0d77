"""ptp-switch fuzzing: dataplane (BPF_PROG_TEST_RUN), codec and core, with independent oracles.

Everything here is written from the dataplane's documented contract (dataplane/bpf/ptp_parse.h and
ptp_egress.c header comments, docs/ARCHITECTURE.md), not from its code paths: frames are built with
``struct`` (fast enough for a million frames) and the reference parser decides, for any byte string,
whether the programs must treat it as not-PTP, malformed or valid PTP, where the PTP header sits, and
what the egress program must do with it. scapy cross-checks the builder and the checksums on samples.
"""

from __future__ import annotations

import random
import struct
from array import array
from dataclasses import dataclass

# --- wire constants -------------------------------------------------------------------------
SYNC, DELAY_REQ, PDELAY_REQ, PDELAY_RESP = 0x0, 0x1, 0x2, 0x3
FOLLOW_UP, DELAY_RESP, PDELAY_RESP_FU, ANNOUNCE, SIGNALING, MANAGEMENT = 0x8, 0x9, 0xA, 0xB, 0xC, 0xD
EVENTS = (SYNC, DELAY_REQ, PDELAY_REQ, PDELAY_RESP)
GENERALS = (FOLLOW_UP, DELAY_RESP, PDELAY_RESP_FU, ANNOUNCE, SIGNALING, MANAGEMENT)
KNOWN = EVENTS + GENERALS
MIN_LEN = {SYNC: 44, DELAY_REQ: 44, FOLLOW_UP: 44, PDELAY_REQ: 54, PDELAY_RESP: 54, DELAY_RESP: 54,
           PDELAY_RESP_FU: 54, ANNOUNCE: 64, SIGNALING: 44, MANAGEMENT: 48}
EVENT_OF = {FOLLOW_UP: SYNC, DELAY_RESP: DELAY_REQ, PDELAY_RESP_FU: PDELAY_RESP}
GENERAL_OF = {SYNC: FOLLOW_UP, PDELAY_RESP: PDELAY_RESP_FU, DELAY_REQ: DELAY_RESP}
ETH_PTP, ETH_IP4, ETH_IP6, ETH_8021Q, ETH_8021AD = 0x88F7, 0x0800, 0x86DD, 0x8100, 0x88A8
TWO_STEP = 0x02
CORR = 8           # correctionField offset in the PTP header

# reference verdicts
NOT, SHORT, BAD, OK = "not", "short", "bad", "ok"
L2, UDP4, UDP6 = "l2", "udp4", "udp6"

ENCAPS = ("l2", "l2_pdelay", "l2_unicast", "l2_vlan", "l2_qinq", "l2_ad", "l2_3tags",
          "udp4", "udp4_opts", "udp4_vlan", "udp4_qinq", "udp4_frag_mf", "udp4_frag_off", "udp4_tcp",
          "udp4_port", "udp4_nocsum", "udp4_badcsum", "udp4_pad",
          "udp6", "udp6_trailer", "udp6_exthdr", "udp6_vlan", "udp6_badcsum")


# --- checksums --------------------------------------------------------------------------------
_LITTLE = array("H", b"\x01\x00")[0] == 1

def ones_sum(data: bytes) -> int:
    """16-bit one's complement sum (not inverted) of big-endian words."""
    if len(data) & 1:
        data = data + b"\0"
    a = array("H", data)          # native order; the one's complement sum is byte-order independent
    s = sum(a)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ((s & 0xFF) << 8) | (s >> 8) if _LITTLE else s


def _pseudo(frame: bytes, ref: "Ref") -> bytes:
    ulen = ref.payload_len + 8
    if ref.transport == UDP4:
        ip = ref.l3_off
        return frame[ip + 12:ip + 20] + struct.pack(">BBH", 0, 17, ulen)
    ip = ref.l3_off
    return frame[ip + 8:ip + 40] + struct.pack(">IxxxB", ulen, 17)


def udp_residual(frame: bytes, ref: "Ref") -> int:
    """One's complement sum over pseudo-header + UDP datagram: 0xFFFF iff the checksum is valid.
    Incremental updates (RFC 1624) keep it as it was; 0x0000 and 0xFFFF are both 'minus zero'."""
    s = ones_sum(_pseudo(frame, ref) + frame[ref.l4_off:ref.l4_off + ref.payload_len + 8])
    return 0xFFFF if s == 0 else s


def udp_checksum_field(frame: bytes, ref: "Ref") -> int:
    return struct.unpack_from(">H", frame, ref.l4_off + 6)[0]


def _udp_csum(src: bytes, dst: bytes, udp: bytes, v6: bool) -> int:
    ph = src + dst + (struct.pack(">IxxxB", len(udp), 17) if v6 else struct.pack(">BBH", 0, 17, len(udp)))
    c = 0xFFFF - ones_sum(ph + udp)
    return c or 0xFFFF


def _ip4_csum(hdr: bytes) -> int:
    return 0xFFFF - ones_sum(hdr)


# --- builders ---------------------------------------------------------------------------------
def ptp_message(rng: random.Random, msg_type: int, *, domain: int | None = None, seq: int | None = None,
                spi: bytes | None = None, req: bytes | None = None, flags0: int | None = None,
                corr: int | None = None, tlvs: bool | None = None) -> bytes:
    """A PTP v2 message of a type with random content, optionally bogus TLVs after the body;
    messageLength covers the TLVs (the dataplane must not care what they say)."""
    n = MIN_LEN.get(msg_type, 44)
    if domain is None:
        domain = rng.choice((0, 0, 0, 24, rng.randrange(256)))
    if seq is None:
        seq = rng.randrange(65536)
    if spi is None:
        spi = rng.randbytes(10)
    if flags0 is None:
        flags0 = rng.choice((0, TWO_STEP, rng.randrange(256)))
    if corr is None:
        corr = rng.choice((0, rng.randrange(-(1 << 40), 1 << 40), rng.randrange(-(1 << 63), 1 << 63),
                           (1 << 63) - 1 - rng.randrange(1 << 20), -(1 << 63) + rng.randrange(1 << 20)))
    minor = rng.choice((0, 1, 1, 1))
    hdr = struct.pack(">BBHBBBBq4s10sHBb", (rng.randrange(16) << 4 if rng.random() < 0.1 else 0) | msg_type,
                      (minor << 4) | 2, 0, domain, 0, flags0, rng.randrange(256), corr, rng.randbytes(4) if rng.random() < 0.1 else b"\0" * 4,
                      spi, seq, rng.randrange(256), rng.randrange(-128, 128))
    body = bytearray(rng.randbytes(n - 34))
    if msg_type in (DELAY_RESP, PDELAY_RESP, PDELAY_RESP_FU) and req is not None:
        body[10:20] = req
    extra = b""
    if tlvs if tlvs is not None else rng.random() < 0.3:
        for _ in range(rng.randrange(1, 4)):
            vlen = rng.choice((0, 2, 4, rng.randrange(0, 40)))
            declared = rng.choice((vlen, vlen, rng.randrange(65536)))      # bogus lengthField too
            extra += struct.pack(">HH", rng.choice((0x0001, 0x0003, 0x0008, 0x2000, 0x7FFF, rng.randrange(65536))),
                                 declared) + rng.randbytes(vlen)
    msg = bytearray(hdr + bytes(body) + extra)
    struct.pack_into(">H", msg, 2, len(msg))
    return bytes(msg)


def _eth(dst: bytes, tags: list[int], etype: int, rng: random.Random) -> bytes:
    out = dst + bytes.fromhex("020000000001")
    for tpid in tags:
        out += struct.pack(">H", tpid) + struct.pack(">H", rng.randrange(4096))
    return out + struct.pack(">H", etype)


MAC_PTP = bytes.fromhex("011b19000000")
MAC_PDELAY = bytes.fromhex("0180c200000e")
MAC_V4 = bytes.fromhex("01005e000181")
MAC_V6 = bytes.fromhex("333300000181")


def encapsulate(rng: random.Random, encap: str, ptp: bytes, *, event: bool) -> bytes:
    """Wrap a PTP message. Variants named *_frag*, *_tcp, *_port, *_exthdr, *_3tags are not PTP
    to the dataplane by contract; *_badcsum carry a wrong UDP checksum (still PTP)."""
    port = 319 if event else 320
    if encap.startswith("l2"):
        tags = {"l2_vlan": [ETH_8021Q], "l2_qinq": [ETH_8021AD, ETH_8021Q], "l2_ad": [ETH_8021AD],
                "l2_3tags": [ETH_8021Q, ETH_8021Q, ETH_8021Q]}.get(encap, [])
        if encap == "l2_qinq" and rng.random() < 0.3:
            tags = [ETH_8021Q, ETH_8021Q]
        dst = {"l2_pdelay": MAC_PDELAY, "l2_unicast": bytes.fromhex("020000000002")}.get(encap, MAC_PTP)
        frame = _eth(dst, tags, ETH_PTP, rng) + ptp
        if rng.random() < 0.2:
            frame += rng.randbytes(rng.randrange(1, 20))      # Ethernet padding / FCS-like junk
        return frame
    tags = {"udp4_vlan": [ETH_8021Q], "udp4_qinq": [ETH_8021AD, ETH_8021Q], "udp6_vlan": [ETH_8021Q]}.get(encap, [])
    payload = ptp
    if encap == "udp6_trailer":
        payload = ptp + b"\0\0"
    elif rng.random() < 0.1:
        payload = ptp + rng.randbytes(rng.randrange(1, 8))    # UDP payload longer than messageLength
    sport = rng.choice((319, 320, rng.randrange(1024, 65536)))
    dport = rng.choice((53, 318, 321, 1319)) if encap == "udp4_port" else port
    udp = bytearray(struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload)
    if encap.startswith("udp4"):
        src, dst = bytes([10, 0, rng.randrange(256), 1]), bytes([224, 0, 1, 129])
        nopt = rng.randrange(1, 11) if encap == "udp4_opts" else 0
        opts = bytes(rng.choice((1, 0, rng.randrange(256))) for _ in range(4 * nopt))
        frag = {"udp4_frag_mf": 0x2000, "udp4_frag_off": rng.randrange(1, 0x2000)}.get(encap, rng.choice((0, 0x4000)))
        proto = 6 if encap == "udp4_tcp" else 17
        if encap != "udp4_nocsum":
            struct.pack_into(">H", udp, 6, _udp_csum(src, dst, bytes(udp), False))
        if encap == "udp4_badcsum":
            struct.pack_into(">H", udp, 6, (udp[6] << 8 | udp[7]) ^ (1 + rng.randrange(0xFFFE)))
        hdr = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45 + nopt, 0, 20 + 4 * nopt + len(udp), rng.randrange(65536),
                                    frag, 1, proto, 0, src, dst) + opts)
        struct.pack_into(">H", hdr, 10, _ip4_csum(bytes(hdr)))
        frame = _eth(MAC_V4, tags, ETH_IP4, rng) + bytes(hdr) + bytes(udp)
        if encap == "udp4_pad" or rng.random() < 0.1:
            frame += bytes(max(0, 60 - len(frame))) + rng.randbytes(rng.randrange(0, 6))
        return frame
    src, dst = bytes.fromhex("fd00000000000000000000000000") + rng.randbytes(2), bytes.fromhex("ff0e0000000000000000000000000181")
    nh = 17
    ext = b""
    if encap == "udp6_exthdr":
        nh = rng.choice((0, 60, 43, 44))
        ext = bytes([17, 0]) + bytes(6)
    struct.pack_into(">H", udp, 6, _udp_csum(src, dst, bytes(udp), True))
    if encap == "udp6_badcsum":
        struct.pack_into(">H", udp, 6, (udp[6] << 8 | udp[7]) ^ (1 + rng.randrange(0xFFFE)))
    hdr = struct.pack(">IHBB16s16s", 0x60000000, len(ext) + len(udp), nh, 1, src, dst)
    frame = _eth(MAC_V6, tags, ETH_IP6, rng) + hdr + ext + bytes(udp)
    if rng.random() < 0.1:
        frame += rng.randbytes(rng.randrange(1, 6))
    return frame


# --- reference parser ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    kind: str                      # NOT / SHORT / BAD / OK
    transport: str = ""
    l3_off: int = 0
    l4_off: int = 0
    ptp_off: int = 0
    payload_len: int = 0           # bytes of PTP payload (UDP payload, or rest of the frame for L2)
    msg_type: int = -1
    msg_len: int = 0
    flags0: int = 0
    domain: int = 0
    seq_raw: bytes = b""
    spi: bytes = b""
    req: bytes = b""

    @property
    def event(self) -> bool:
        return self.kind == OK and self.msg_type in EVENTS


def ref_parse(f: bytes) -> Ref:
    """What the dataplane's contract says a frame is (see module docstring)."""
    n = len(f)
    if n < 14:
        return Ref(SHORT)
    proto = struct.unpack_from(">H", f, 12)[0]
    off = 14
    for _ in range(2):
        if proto in (ETH_8021Q, ETH_8021AD):
            if off + 4 > n:
                return Ref(SHORT)
            proto = struct.unpack_from(">H", f, off + 2)[0]
            off += 4
    l3 = off
    if proto == ETH_PTP:
        transport, ptp_off, l4, payload = L2, off, 0, n - off
    elif proto == ETH_IP4:
        if off + 20 > n:
            return Ref(SHORT)
        vihl, proto4, frag = f[off], f[off + 9], struct.unpack_from(">H", f, off + 6)[0]
        if vihl >> 4 != 4 or proto4 != 17 or frag & 0x3FFF or (vihl & 15) < 5:
            return Ref(NOT)
        transport, off = UDP4, off + (vihl & 15) * 4
    elif proto == ETH_IP6:
        if off + 40 > n:
            return Ref(SHORT)
        if f[off + 6] != 17:
            return Ref(NOT)
        transport, off = UDP6, off + 40
    else:
        return Ref(NOT)
    if transport != L2:
        if off + 8 > n:
            return Ref(SHORT)
        if struct.unpack_from(">H", f, off + 2)[0] not in (319, 320):
            return Ref(NOT)
        ulen = struct.unpack_from(">H", f, off + 4)[0]
        if ulen < 8 or off + ulen > n:
            return Ref(BAD, transport, l3, off, off + 8)
        l4, ptp_off, payload = off, off + 8, ulen - 8
    base = dict(transport=transport, l3_off=l3, l4_off=l4, ptp_off=ptp_off, payload_len=payload)
    h = ptp_off
    if h + 34 > n or payload < 34:
        return Ref(BAD, **base)
    if f[h + 1] & 0x0F != 2 or f[h + 1] >> 4 > 1:
        return Ref(BAD, **base)
    t = f[h] & 0x0F
    if t not in MIN_LEN:
        return Ref(BAD, **base)
    mlen = struct.unpack_from(">H", f, h + 2)[0]
    if mlen < MIN_LEN[t] or mlen > payload:
        return Ref(BAD, msg_type=t, **base)
    return Ref(OK, msg_type=t, msg_len=mlen, flags0=f[h + 6], domain=f[h + 4], seq_raw=f[h + 30:h + 32],
               spi=f[h + 20:h + 30], req=f[h + 44:h + 54] if mlen >= 54 else bytes(10), **base)


def correction(frame: bytes, ref: Ref) -> int:
    return struct.unpack_from(">q", frame, ref.ptp_off + CORR)[0]


# --- mutations ----------------------------------------------------------------------------------
def mutate(rng: random.Random, frame: bytes) -> tuple[str, bytes]:
    """One random structural or byte-level mutation of a frame; returns (what, new frame)."""
    f = bytearray(frame)
    ref = ref_parse(frame)
    op = rng.randrange(10)
    if op == 0:
        cut = rng.randrange(14, len(f)) if len(f) > 14 else 14
        return f"truncate@{cut}", bytes(f[:cut])
    if op == 1:
        for _ in range(rng.randrange(1, 5)):
            i = rng.randrange(len(f))
            f[i] ^= 1 << rng.randrange(8)
        return "bitflip", bytes(f)
    if op == 2:
        for _ in range(rng.randrange(1, 4)):
            f[rng.randrange(len(f))] = rng.randrange(256)
        return "byteset", bytes(f)
    if op == 3 and ref.kind in (OK, BAD) and ref.ptp_off + 4 <= len(f):
        t = f[ref.ptp_off] & 0x0F
        v = rng.choice((0, 1, 33, 34, 43, 44, 53, 54, 63, 64, MIN_LEN.get(t, 44) - 1, ref.payload_len,
                        ref.payload_len + 1, ref.payload_len - 1, 0xFFFF, rng.randrange(65536)))
        struct.pack_into(">H", f, ref.ptp_off + 2, v & 0xFFFF)
        return f"msglen={v}", bytes(f)
    if op == 4 and ref.kind in (OK, BAD) and ref.transport in (UDP4, UDP6) and ref.l4_off + 6 <= len(f):
        v = rng.choice((0, 7, 8, 9, 41, 42, ref.payload_len + 7, ref.payload_len + 9, len(f) - ref.l4_off,
                        len(f) - ref.l4_off + 1, 0xFFFF, rng.randrange(65536)))
        struct.pack_into(">H", f, ref.l4_off + 4, v & 0xFFFF)
        return f"udplen={v}", bytes(f)
    if op == 5 and ref.transport == UDP4:
        f[ref.l3_off] = (f[ref.l3_off] & 0xF0) | rng.randrange(16)
        return f"ihl={f[ref.l3_off] & 15}", bytes(f)
    if op == 6 and ref.kind in (OK, BAD) and ref.ptp_off + 2 <= len(f):
        i = ref.ptp_off + rng.randrange(2)
        f[i] = rng.randrange(256)
        return f"ptp[{i - ref.ptp_off}]={f[i]:#x}", bytes(f)
    if op == 7:
        i = rng.randrange(12, len(f) + 1)
        if rng.random() < 0.5:
            return f"insert@{i}", bytes(f[:i] + rng.randbytes(rng.randrange(1, 9)) + f[i:])
        return f"delete@{i}", bytes(f[:i] + f[i + rng.randrange(1, 9):])
    if op == 8:
        return "append", bytes(f + rng.randbytes(rng.randrange(1, 64)))
    if ref.transport == UDP4 and ref.l3_off + 8 <= len(f):
        struct.pack_into(">H", f, ref.l3_off + 6, rng.choice((0x2000, 0x0001, 0x3FFF, 0x4000, rng.randrange(65536))))
        return "ipv4_frag_bits", bytes(f)
    i = rng.randrange(len(f))
    f[i] ^= 0xFF
    return "invert", bytes(f)


def random_frame(rng: random.Random) -> bytes:
    """Random bytes, half of them behind an ethertype (and IP/UDP ports) that make them look like PTP."""
    n = rng.randrange(14, 200)
    f = bytearray(rng.randbytes(n))
    if rng.random() < 0.5:
        struct.pack_into(">H", f, 12, rng.choice((ETH_PTP, ETH_IP4, ETH_IP6, ETH_8021Q, ETH_8021AD)))
        if f[12:14] == b"\x08\x00" and n > 40:
            f[14] = 0x45
            f[14 + 9] = 17
            f[20] &= 0x1F
            f[21] = 0
            struct.pack_into(">H", f, 36, rng.choice((319, 320)))
        elif f[12:14] == b"\x86\xdd" and n > 60:
            f[14 + 6] = 17
            struct.pack_into(">H", f, 56, rng.choice((319, 320)))
        elif f[12:14] == b"\x88\xf7" and n > 16:
            f[15] = rng.choice((0x02, 0x12, f[15]))
    return bytes(f)


# =================================================================================================
# Dataplane fuzzing through BPF_PROG_TEST_RUN
# =================================================================================================
LO, PEER = 1, 7                    # egress device for tc runs must exist (lo); PEER is only a number
SLOT = {LO: 0, PEER: 1}
RES_NS = 300_000                   # seeded residence
STALE_AGE_NS = 1_000_000_000       # the fuzzer's stale age (the maps' maximum)
P2P_DROP = (PDELAY_REQ, PDELAY_RESP, PDELAY_RESP_FU, DELAY_REQ)
COUNTERS = ("rx", "tx", "corrected", "two_step_stored", "two_step_matched", "two_step_missed", "two_step_late",
            "malformed", "stale", "dropped", "no_ingress", "filtered", "local", "trailer", "priority_set", "error")


@dataclass(frozen=True)
class DpConfig:
    """One map configuration the programs are fuzzed under (what the control plane could write)."""

    name: str
    mode: str = "e2e"                  # both ports
    domain: int | None = None          # domain filter
    two_step_tc: bool = False
    rate_ratio: float = 1.0            # PEER's (the ingress port's) rate ratio
    link_ns: float = 0.0               # PEER's meanLinkDelay (P2P)
    asym_ns: float = 0.0               # PEER's delayAsymmetry (P2P)
    egress_priority: int = 0x00010001


DP_CONFIGS = (
    DpConfig("e2e"),
    DpConfig("e2e_domain24", domain=24, egress_priority=0),
    DpConfig("e2e_two_step_tc_rr", two_step_tc=True, rate_ratio=1.000123),
    DpConfig("p2p", mode="p2p", link_ns=1500.5, asym_ns=-100.25, rate_ratio=0.999877, egress_priority=0x00020003),
)


def mono_ns() -> int:
    import time

    return time.clock_gettime_ns(time.CLOCK_TAI)       # the dataplane's clock (bpf_ktime_get_tai_ns())


def _s64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


class DataplaneFuzzer:
    """Loads the real programs (BCC compile + kernel verifier), writes one DpConfig into the real maps
    and checks every frame: XDP and tc ingress pass it byte-identical; tc egress does exactly what the
    reference model says (unchanged, dropped, or only correctionField + UDP checksum / IPv6 trailer
    changed, by the residence seeded in the ingress map, within the measured time window)."""

    def __init__(self, cfg: DpConfig) -> None:
        from dataplane.loader import Dataplane
        from dataplane.maps import GlobalConfig, Mode, PortConfig

        self.cfg = cfg
        self.dp = Dataplane(["lo"], pin=False)
        self.dp.load()                       # raises DataplaneError if the verifier rejects a program
        self.maps = self.dp.maps
        mode = Mode.P2P if cfg.mode == "p2p" else Mode.E2E
        self.ports = {
            LO: PortConfig(ifindex=LO, slot=SLOT[LO], mode=mode),
            PEER: PortConfig(ifindex=PEER, slot=SLOT[PEER], mode=mode, rate_ratio=cfg.rate_ratio,
                             mean_link_delay_ns=cfg.link_ns if cfg.mode == "p2p" else 0.0,
                             delay_asymmetry_ns=cfg.asym_ns if cfg.mode == "p2p" else 0.0),
        }
        # the longest stale age the maps take: a seeded stamp turns stale only if this process stalls
        # for a second between seeding and the egress run (checked per frame below)
        self.glob = GlobalConfig(domain=cfg.domain, two_step_tc=cfg.two_step_tc, egress_priority=cfg.egress_priority,
                                 stale_age_ns=STALE_AGE_NS)
        self.maps.clear_state()
        self.maps.reset_counters()
        self.maps.set_global(self.glob)
        for pc in self.ports.values():
            self.maps.set_port(pc)
        self.stale_ns = self.glob.stale_age_ns
        self.fd_xdp = self.dp.prog_fds["xdp_ingress"]
        self.fd_tci = self.dp.prog_fds["tc_ingress"]
        self.fd_egr = self.dp.prog_fds["tc_egress"]
        self.expect_ctr = dict.fromkeys(COUNTERS, 0)
        self.frames = 0
        self.verdicts = dict.fromkeys((NOT, SHORT, BAD, OK, "corrected", "dropped"), 0)
        self.failures: list[str] = []
        self.scapy_checked = 0
        from dataplane.maps import PtpKey, PtpTwostepKey

        self._PtpKey, self._TwostepKey = PtpKey, PtpTwostepKey
        from dataplane import libbpf

        self._libbpf = libbpf
        from dataplane.testrun import run_tc, run_xdp

        self._run_tc, self._run_xdp = run_tc, run_xdp

    def close(self) -> None:
        self.dp.detach()

    # -- map keys --------------------------------------------------------------------------------
    def _key(self, domain: int, msg_type: int, seq_raw: bytes, port: bytes):
        k = self._PtpKey()
        k.domain, k.msg_type = domain, msg_type
        k.seq = int.from_bytes(seq_raw, "little")          # as on the wire
        k.port_id[:] = list(port)
        return k

    def _ekey(self, ref: Ref) -> tuple | None:
        """The event key a frame's residence is stored under (event: itself; general: its event)."""
        if ref.kind != OK:
            return None
        if ref.msg_type in EVENTS:
            return (ref.domain, ref.msg_type, ref.seq_raw, ref.spi)
        if ref.msg_type == DELAY_RESP:
            return (ref.domain, DELAY_REQ, ref.seq_raw, ref.req)
        if ref.msg_type in EVENT_OF:
            return (ref.domain, EVENT_OF[ref.msg_type], ref.seq_raw, ref.spi)
        return None

    def _forget(self, refs: list[Ref]) -> None:
        """Clear the ingress stamp and two-step entries a flow's frames could find (the maps are
        rings: an entry is cleared only if its slot still holds this message)."""
        for ref in refs:
            ek = self._ekey(ref)
            if ek is None:
                continue
            k = self._key(*ek)
            self.maps.forget_ingress(k)
            for ifx in (LO, PEER):
                self.maps.forget_twostep(k, ifx)

    # -- expected residence ------------------------------------------------------------------------
    def _add_range(self, ref: Ref, seed_if: int, age_lo: int, age_hi: int) -> tuple[int, int]:
        pc = self.ports[seed_if]
        rr = round(pc.rate_ratio * (1 << 32)) or (1 << 32)
        lo, hi = (age_lo * rr) >> 16, (age_hi * rr) >> 16
        if ref.msg_type == SYNC and pc.mode == 1:
            extra = round(pc.mean_link_delay_ns * 65536) + round(pc.delay_asymmetry_ns * 65536)
            lo, hi = lo + extra, hi + extra
        return lo, hi

    # -- one flow ----------------------------------------------------------------------------------
    def check_flow(self, frames: list[tuple[str, bytes]], scenario: str = "seed", seed_if: int = PEER) -> None:
        refs = [ref_parse(f) for _, f in frames]
        self._forget(refs)
        model: dict[tuple, tuple] = {}
        for (label, frame), ref in zip(frames, refs):
            self._check_one(label, frame, ref, scenario, seed_if, model)

    def _fail(self, label: str, frame: bytes, why: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(f"[{self.cfg.name}] {label}: {why}\n    frame={frame.hex()}")
        else:
            self.failures.append("")

    def _check_one(self, label: str, frame: bytes, ref: Ref, scenario: str, seed_if: int, model: dict) -> None:
        from dataplane.testrun import TC_ACT_OK, TC_ACT_SHOT, XDP_PASS

        self.frames += 1
        self.verdicts[ref.kind] += 1
        e = self.expect_ctr
        rx = self._run_xdp(self.fd_xdp, frame, ingress_ifindex=LO)
        if rx.retval != XDP_PASS or rx.data != frame:
            self._fail(label, frame, f"xdp_ingress changed the frame or verdict {rx.retval}")
        if len(frame) < {b"\x08\x00": 34, b"\x86\xdd": 54}.get(frame[12:14], 14):
            # BPF_PROG_TEST_RUN refuses (EINVAL) to build an skb for an IP frame shorter than its IP
            # header; the stack never hands such an skb to tc. XDP ran above; nothing else to check.
            self.verdicts["kernel_refused"] = self.verdicts.get("kernel_refused", 0) + 1
            if ref.kind != SHORT:
                self._fail(label, frame, f"reference says {ref.kind} for a frame shorter than its IP header")
            return
        ti = self._run_tc(self.fd_tci, frame, ifindex=LO)
        if ti.retval != TC_ACT_OK or ti.data != frame:
            self._fail(label, frame, f"tc_ingress changed the frame or verdict {ti.retval}")
        seeded_t = None
        if ref.event:
            k = self._key(*self._ekey(ref))
            now = mono_ns()
            if scenario in ("seed", "local"):
                seeded_t = now - RES_NS
                self.maps.seed_ingress(k, seeded_t, seed_if)
            elif scenario == "stale":
                self.maps.seed_ingress(k, now - self.stale_ns - 5_000_000, seed_if)
            elif scenario == "future":
                self.maps.seed_ingress(k, now + 1_000_000_000, seed_if)
            else:
                self.maps.forget_ingress(k)
        iif = 0 if scenario == "local" else PEER
        r = self._run_tc(self.fd_egr, frame, ifindex=LO, ingress_ifindex=iif)
        t1 = mono_ns()
        self.last_out = r.data

        if seeded_t is not None and t1 - seeded_t >= self.stale_ns:
            self._fail(label, frame, f"harness stalled {(t1 - seeded_t) / 1e9:.2f} s between seeding and egress: "
                                     "the stamp may have gone stale (machine overloaded), result not judged")
            return
        # ---- the model --------------------------------------------------------------------------
        verdict, prio, add = TC_ACT_OK, 0, None     # add: (lo, hi) scaled ns expected in correctionField
        if ref.kind == BAD:
            e["malformed"] += 3
        elif ref.kind == OK:
            e["rx"] += 2
            e["tx"] += 1
            t = ref.msg_type
            filtered = self.glob.domain is not None and ref.domain != self.glob.domain
            if filtered:
                e["filtered"] += 3
            elif t in EVENTS and self.glob.egress_priority:
                prio = self.glob.egress_priority
                e["priority_set"] += 1
            if filtered:
                pass
            elif iif == 0:
                e["local"] += 1
            elif self.ports[LO].mode == 1 and t in P2P_DROP:
                verdict = TC_ACT_SHOT
                e["dropped"] += 1
            elif t in EVENTS:
                if seeded_t is None:
                    e["no_ingress" if scenario == "none" else "stale"] += 1
                else:
                    rng_ = self._add_range(ref, seed_if, RES_NS, t1 - seeded_t)
                    tk = None
                    if t in (SYNC, PDELAY_RESP) and ref.flags0 & TWO_STEP:
                        tk = (self._ekey(ref), LO)
                    elif t == DELAY_REQ and self.glob.two_step_tc:
                        tk = (self._ekey(ref), seed_if)
                    if tk is None:
                        add = rng_
                    elif model.get(tk, ("",))[0] == "passed":
                        del model[tk]
                        e["two_step_late"] += 1
                        add = rng_
                    else:
                        model[tk] = ("res", rng_)
                        e["two_step_stored"] += 1
            elif t in EVENT_OF and (t != DELAY_RESP or self.glob.two_step_tc):
                tk = (self._ekey(ref), LO)
                if model.get(tk, ("",))[0] == "res":
                    add = model.pop(tk)[1]
                    e["two_step_matched"] += 1
                else:
                    model[tk] = ("passed",)
                    e["two_step_missed"] += 1
        # ---- compare ----------------------------------------------------------------------------
        if r.retval != verdict:
            self._fail(label, frame, f"egress verdict {r.retval}, expected {verdict} ({ref})")
            return
        if r.priority != prio:
            self._fail(label, frame, f"egress priority {r.priority:#x}, expected {prio:#x} ({ref.kind} type {ref.msg_type})")
        if verdict == TC_ACT_SHOT:
            self.verdicts["dropped"] += 1
            if r.data != frame:
                self._fail(label, frame, "dropped frame was modified")
            return
        if add is None:
            if r.data != frame:
                diff = [i for i in range(min(len(frame), len(r.data))) if frame[i] != r.data[i]]
                self._fail(label, frame, f"must pass byte-identical ({ref.kind}, type {ref.msg_type}); "
                                         f"len {len(frame)}->{len(r.data)}, bytes changed at {diff[:12]}")
            return
        self._check_corrected(label, frame, r.data, ref, add)

    def _check_corrected(self, label: str, frame: bytes, out: bytes, ref: Ref, add: tuple[int, int]) -> None:
        e = self.expect_ctr
        e["corrected"] += 1
        self.verdicts["corrected"] += 1
        if len(out) != len(frame):
            self._fail(label, frame, f"length changed {len(frame)} -> {len(out)}")
            return
        got = _s64(correction(out, ref) - correction(frame, ref))
        if not add[0] <= got <= add[1]:
            self._fail(label, frame, f"correction added {got} scaled ns, expected {add[0]}..{add[1]}")
        allowed = set(range(ref.ptp_off + CORR, ref.ptp_off + CORR + 8))
        trailer = ref.transport == UDP6 and ref.msg_len % 2 == 0 and ref.payload_len >= ref.msg_len + 2
        if trailer:
            allowed |= {ref.ptp_off + ref.msg_len, ref.ptp_off + ref.msg_len + 1}
            e["trailer"] += 1
        elif ref.transport != L2:
            allowed |= {ref.l4_off + 6, ref.l4_off + 7}
        changed = {i for i in range(len(frame)) if frame[i] != out[i]}
        if not changed <= allowed:
            self._fail(label, frame, f"bytes changed outside correction/checksum/trailer: {sorted(changed - allowed)[:12]}")
        if ref.transport == L2:
            return
        c_in, c_out = udp_checksum_field(frame, ref), udp_checksum_field(out, ref)
        if c_in == 0:
            if c_out != 0:
                self._fail(label, frame, f"zero (absent) UDP checksum became {c_out:#06x}")
            return
        if udp_residual(frame, ref) != udp_residual(out, ref):
            self._fail(label, frame, f"UDP checksum not updated consistently: residual {udp_residual(frame, ref):#06x} "
                                     f"-> {udp_residual(out, ref):#06x} (csum {c_in:#06x} -> {c_out:#06x})")

    # -- counters ------------------------------------------------------------------------------------
    def counter_totals(self) -> dict[str, int]:
        tot = dict.fromkeys(COUNTERS, 0)
        for types in self.maps.slot_counters(SLOT[LO]).values():
            for name, v in types.items():
                tot[name] = tot.get(name, 0) + v
        return tot

    def check_counters(self) -> None:
        got = self.counter_totals()
        bad = {k: (got.get(k, 0), v) for k, v in self.expect_ctr.items() if got.get(k, 0) != v}
        if bad:
            self._fail("counters", b"", "counter totals (got, expected): " + ", ".join(f"{k}={g}/{x}" for k, (g, x) in bad.items()))

    def scapy_check(self, frame: bytes, out: bytes) -> None:
        """Cross-check with scapy: a corrected UDP frame whose input checksum scapy accepts must have
        a checksum scapy accepts too (scapy, not this module's arithmetic, recomputes both)."""
        from scapy.layers.inet import UDP
        from scapy.layers.l2 import Ether

        def ok(data: bytes) -> bool | None:
            pkt = Ether(data)
            if UDP not in pkt or pkt[UDP].chksum == 0:
                return None
            have = pkt[UDP].chksum
            del pkt[UDP].chksum
            return Ether(bytes(pkt))[UDP].chksum == have

        if ok(frame) is not True:
            return
        if ok(out) is not True:
            self._fail("scapy", frame, "scapy finds the corrected frame's UDP checksum wrong")
        self.scapy_checked += 1


# --- workloads ---------------------------------------------------------------------------------
VALID_ENCAPS = tuple(e for e in ENCAPS if e not in ("l2_3tags", "udp4_frag_mf", "udp4_frag_off", "udp4_tcp",
                                                     "udp4_port", "udp6_exthdr"))


def valid_frame(rng: random.Random, msg_type: int | None = None, encap: str | None = None, **kw) -> tuple[str, bytes]:
    t = msg_type if msg_type is not None else rng.choice(KNOWN + (rng.randrange(16),))
    enc = encap or rng.choice(ENCAPS)
    return f"gen:{enc}:type{t:x}", encapsulate(rng, enc, ptp_message(rng, t, **kw), event=t in EVENTS)


def pair_flow(rng: random.Random, cfg: DpConfig) -> tuple[list[tuple[str, bytes]], int]:
    """Two-step pairs in either order (and the two-step TC's Delay_Req/Delay_Resp): returns frames, seed port."""
    kind = rng.choice(("sync", "pdelay", "dreq") if cfg.two_step_tc else ("sync", "pdelay"))
    dom = cfg.domain if cfg.domain is not None else rng.randrange(256)
    seq, spi = rng.randrange(65536), rng.randbytes(10)
    enc = rng.choice(VALID_ENCAPS)
    if kind == "dreq":
        ev = encapsulate(rng, enc, ptp_message(rng, DELAY_REQ, domain=dom, seq=seq, spi=spi), event=True)
        ge = encapsulate(rng, enc, ptp_message(rng, DELAY_RESP, domain=dom, seq=seq, spi=rng.randbytes(10), req=spi), event=False)
        return [("pair:dreq", ev), ("pair:dresp", ge)], LO
    et = SYNC if kind == "sync" else PDELAY_RESP
    ev = encapsulate(rng, enc, ptp_message(rng, et, domain=dom, seq=seq, spi=spi, flags0=TWO_STEP | (rng.randrange(256) & ~TWO_STEP)), event=True)
    ge = encapsulate(rng, rng.choice(VALID_ENCAPS), ptp_message(rng, GENERAL_OF[et], domain=dom, seq=seq, spi=spi), event=False)
    pair = [(f"pair:{kind}:event", ev), (f"pair:{kind}:general", ge)]
    if rng.random() < 0.4:
        pair.reverse()
    return pair, PEER


def truncation_sweep(rng: random.Random, encaps=VALID_ENCAPS, types=KNOWN):
    """Every (encapsulation, message type) cut at every offset from 14 bytes to its full length."""
    for enc in encaps:
        for t in types:
            label, full = valid_frame(rng, t, enc)
            for cut in range(14, len(full) + 1):
                yield f"{label}:cut{cut}", full[:cut]


def fuzz_block(fz: DataplaneFuzzer, rng: random.Random, n_frames: int, scapy_every: int = 0) -> None:
    """n_frames of mixed generated, paired, mutated and random frames under fz's configuration."""
    scenarios = ("seed",) * 14 + ("none", "stale", "future", "local")
    done = 0
    while done < n_frames:
        x = rng.random()
        scen = rng.choice(scenarios)
        if x < 0.30:
            frames = [valid_frame(rng, domain=fz.cfg.domain if fz.cfg.domain is not None and rng.random() < 0.7 else None)]
            seed_if = PEER
        elif x < 0.40:
            frames, seed_if = pair_flow(rng, fz.cfg)
            scen = "seed"
        elif x < 0.90:
            label, f = valid_frame(rng, domain=fz.cfg.domain if fz.cfg.domain is not None and rng.random() < 0.7 else None)
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                what, f = mutate(rng, f)
                label += "|" + what
            if len(f) < 14:
                f = f + bytes(14 - len(f))
            frames, seed_if = [(label, f[:3400])], PEER
        else:
            frames, seed_if = [("random", random_frame(rng))], PEER
        fz.check_flow(frames, scen, seed_if)
        done += len(frames)
        if scapy_every and rng.randrange(scapy_every) == 0:
            lab, f = valid_frame(rng, SYNC, rng.choice(("udp4", "udp4_vlan", "udp6", "udp4_qinq", "udp6_vlan")),
                                 flags0=0, domain=fz.cfg.domain)
            ref = ref_parse(f)
            if ref.kind == OK and udp_residual(f, ref) == 0xFFFF:
                before = fz.verdicts["corrected"]
                fz.check_flow([(lab + ":scapy", f)], "seed", PEER)
                if fz.verdicts["corrected"] > before:
                    fz.scapy_check(f, fz.last_out)
                done += 1


# =================================================================================================
# Control-plane fuzzing: codec (bytes) and core (clocks fed messages, timers, faults, stamps)
# =================================================================================================
def codec_seeds() -> list[bytes]:
    from controlplane.codec import encode
    from controlplane.codec.samples import all_samples

    return [encode(m) for m in all_samples().values()]


def mutate_ptp(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """Byte-level and structure-aware mutations of a PTP message (header fields, TLV headers)."""
    f = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        op = rng.randrange(11)
        n = len(f)
        if op == 0 and n:
            f[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            f[rng.randrange(n)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op == 2:
            del f[rng.randrange(n + 1):]
        elif op == 3:
            f += rng.randbytes(rng.choice((1, 2, 4, rng.randrange(1, 64))))
        elif op == 4 and n >= 4:                                   # messageLength
            struct.pack_into(">H", f, 2, rng.choice((0, 33, 34, 44, n - 1, n, n + 1, n + 2, 0xFFFF, rng.randrange(65536))))
        elif op == 5 and n >= 2:                                   # messageType / version nibbles
            f[rng.randrange(2)] = rng.randrange(256)
        elif op == 6 and n > 40:                                   # a TLV header somewhere after the body
            i = rng.randrange(34, n - 3) & ~1
            struct.pack_into(">HH", f, i, rng.choice((0x0001, 0x0003, 0x0004, 0x0005, 0x0006, 0x0007, 0x0008,
                                                      0x2000, 0x4000, 0x8000, rng.randrange(65536))),
                             rng.choice((0, 1, 2, 3, 4, 10, n - i, 0xFFFF, rng.randrange(65536))))
        elif op == 7:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            f = f[:rng.randrange(n + 1)] + bytearray(other[cut:])
        elif op == 8 and n > 34:
            i = rng.randrange(34, n)
            f[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 9 and n >= 52:                                   # management: action field / id
            f[46] = rng.randrange(256)
            if n >= 54:
                struct.pack_into(">H", f, 52, rng.randrange(65536))
        elif n:
            i = rng.randrange(n)
            f[i:i + rng.randrange(1, 9)] = b""
    return bytes(f)


@dataclass
class CodecStats:
    inputs: int = 0
    decoded: int = 0
    rejected: dict = None          # reason stage -> count
    frames: int = 0
    captures: int = 0
    failures: list = None

    def __post_init__(self) -> None:
        self.rejected = {}
        self.failures = []


def fuzz_codec_one(data: bytes, st: CodecStats) -> None:
    """decode() raises only CodecError; what it accepts re-encodes byte-exact and renders."""
    from controlplane.codec import CodecError, decode, encode
    from controlplane.codec.render import summary, to_dict

    st.inputs += 1
    try:
        msg = decode(data)
    except CodecError as exc:
        st.rejected[exc.stage] = st.rejected.get(exc.stage, 0) + 1
        if not isinstance(exc.reason, str) or not exc.reason:
            st.failures.append(f"CodecError without a reason for {data.hex()}")
        return
    except Exception as exc:                               # noqa: BLE001 - the point of the fuzzer
        st.failures.append(f"decode raised {type(exc).__name__}: {exc} for {data.hex()}")
        return
    st.decoded += 1
    try:
        again = encode(msg)
    except Exception as exc:                               # noqa: BLE001
        st.failures.append(f"encode(decode(x)) raised {type(exc).__name__}: {exc} for {data.hex()}")
        return
    if again != data:
        st.failures.append(f"re-encode differs: {data.hex()} -> {again.hex()}")
    try:
        to_dict(msg)
        summary(msg)
    except Exception as exc:                               # noqa: BLE001
        st.failures.append(f"render raised {type(exc).__name__}: {exc} for {data.hex()}")


def fuzz_frame_one(data: bytes, st: CodecStats) -> None:
    from controlplane.codec import CodecError
    from controlplane.codec.frames import parse_frame
    from controlplane.codec.pcap import read_capture

    st.frames += 1
    try:
        parse_frame(data)
    except CodecError:
        pass
    except Exception as exc:                               # noqa: BLE001
        st.failures.append(f"parse_frame raised {type(exc).__name__}: {exc} for {data.hex()}")
    st.captures += 1
    for blob in (b"\xd4\xc3\xb2\xa1" + data, b"\x0a\x0d\x0d\x0a" + data, data):
        try:
            read_capture(blob)
        except CodecError:
            pass
        except Exception as exc:                           # noqa: BLE001
            st.failures.append(f"read_capture raised {type(exc).__name__}: {exc} for {blob.hex()}")


def fuzz_codec(rng: random.Random, n: int, st: CodecStats | None = None, frames_every: int = 8) -> CodecStats:
    st = st or CodecStats()
    seeds = codec_seeds()
    for i in range(n):
        x = rng.random()
        if x < 0.85:
            data = mutate_ptp(rng, rng.choice(seeds), seeds)
        elif x < 0.95:
            data = rng.choice(seeds)[:34] + rng.randbytes(rng.randrange(0, 80))
        else:
            data = rng.randbytes(rng.randrange(0, 120))
        fuzz_codec_one(data, st)
        if frames_every and i % frames_every == 0:
            _, fr = valid_frame(rng)
            if rng.random() < 0.7:
                _, fr = mutate(rng, fr)
            fuzz_frame_one(fr, st)
    return st


# --- core ------------------------------------------------------------------------------------------
CORE_KINDS = ("oc", "oc_slave_only", "oc_p2p", "bc3", "e2e_tc", "p2p_tc", "oc_free_running")
FOREIGN = [bytes.fromhex(x) for x in ("0200000000000a01", "0200000000000b02", "0200000000000c03", "02005efffe770001")]
S_NS = 1_000_000_000


def make_clock(kind: str, rng: random.Random):
    from controlplane.core.clock import Clock
    from controlplane.core.config import parse

    fast = {"logSyncInterval": "-3", "logAnnounceInterval": "-2", "logMinDelayReqInterval": "-3",
            "logMinPdelayReqInterval": "-2", "announceReceiptTimeout": "2"}
    g = dict(fast)
    ports = ["eth0"]
    if kind == "oc_slave_only":
        g["slaveOnly"] = "1"
    elif kind == "oc_p2p":
        g["delay_mechanism"] = "P2P"
    elif kind == "bc3":
        g["clock_type"] = "BC"
        ports = ["p1", "p2", "p3"]
    elif kind == "e2e_tc":
        g["clock_type"] = "E2E_TC"
        ports = ["p1", "p2"]
    elif kind == "p2p_tc":
        g["clock_type"] = "P2P_TC"
        g["delay_mechanism"] = "P2P"
        ports = ["p1", "p2"]
    elif kind == "oc_free_running":
        g["free_running"] = "1"
    g["priority1"] = str(rng.choice((0, 10, 128, 200, 255)))
    return Clock(parse({"global": g}), bytes.fromhex("02000000000000") + bytes([rng.randrange(256)]), ports, rng=rng)


def _ts(ns: int):
    from controlplane.codec.types import Timestamp

    ns = max(0, min(ns, (1 << 48) * S_NS - 1))
    return Timestamp.from_ns(ns)


def core_message(rng: random.Random, clock, ptp_now: int, seeds: dict):
    """A decoded message the runtime could hand the core: usually in the clock's domain, from a
    small pool of foreign clocks (so BMCA and servo paths are reached), sometimes mutated bytes."""
    import dataclasses as dc

    from controlplane.codec import CodecError, decode, encode
    from controlplane.codec import messages as M
    from controlplane.codec.types import ClockQuality, PortIdentity

    if rng.random() < 0.15:
        enc = [encode(m) for m in seeds.values()]
        data = mutate_ptp(rng, rng.choice(enc), enc)
        try:
            return decode(data)
        except CodecError:
            return None
    by_type = {type(m).__name__: m for m in seeds.values()}
    if rng.random() < 0.5:      # the messages that drive BMCA and the servo, from a consistent master
        base = by_type[rng.choice(("Announce", "Announce", "Sync", "FollowUp", "DelayResp", "PdelayResp",
                                   "PdelayRespFollowUp"))]
    else:
        base = rng.choice(list(seeds.values()))
    port = rng.choice(clock.ports)
    src = PortIdentity(rng.choice(FOREIGN[:1] * 6 + FOREIGN + [clock.clock_identity]) if rng.random() < 0.95 else rng.randbytes(8),
                       rng.choice((1, 1, 1, 1, 2, 0xFFFF)))
    sent = port.seq
    seq = rng.choice((rng.randrange(65536), max(0, sent["sync"] - 1), max(0, sent["delay_req"] - 1),
                      max(0, sent["pdelay_req"] - 1), 0, 0xFFFF))
    hdr = dc.replace(base.header, domain_number=clock.default_ds.domain_number if rng.random() < 0.9 else rng.randrange(256),
                     source_port_identity=src, sequence_id=seq, two_step=rng.random() < 0.5,
                     correction_scaled_ns=rng.choice((0, 0, rng.randrange(-(1 << 40), 1 << 40), rng.randrange(-(1 << 63), 1 << 63))),
                     log_message_interval=rng.choice((-3, -2, 0, 1, 0x7F, -128)))
    jitter = rng.choice((0, rng.randrange(-10_000, 10_000), rng.randrange(-S_NS, S_NS), rng.randrange(-(1 << 50), 1 << 50)))
    kw: dict = {"header": hdr}
    t = type(base)
    if t in (M.Sync, M.DelayReq, M.PdelayReq, M.Announce):
        kw["origin_timestamp"] = _ts(ptp_now + jitter)
    if t is M.FollowUp:
        kw["precise_origin_timestamp"] = _ts(ptp_now + jitter)
    if t in (M.DelayResp, M.PdelayResp, M.PdelayRespFollowUp):
        kw["requesting_port_identity"] = port.identity if rng.random() < 0.8 else src
    if t is M.DelayResp:
        kw["receive_timestamp"] = _ts(ptp_now + jitter)
    if t is M.PdelayResp:
        kw["request_receipt_timestamp"] = _ts(ptp_now + jitter)
    if t is M.PdelayRespFollowUp:
        kw["response_origin_timestamp"] = _ts(ptp_now + jitter)
    if t is M.Announce:
        kw.update(grandmaster_identity=src.clock_identity if rng.random() < 0.8 else rng.choice(FOREIGN),
                  grandmaster_priority1=rng.choice((0, 10, 128, 255, rng.randrange(256))),
                  grandmaster_priority2=rng.choice((0, 128, 255)),
                  grandmaster_clock_quality=ClockQuality(rng.choice((6, 7, 52, 135, 248, 255, rng.randrange(256))),
                                                         rng.choice((0x20, 0x21, 0xFE, rng.randrange(256))), rng.randrange(65536)),
                  steps_removed=rng.choice((0, 1, 2, 254, 255, 0xFFFF)))
    if t is M.Management:
        from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS

        kw["target_port_identity"] = rng.choice((PortIdentity(ALL_CLOCKS, ALL_PORTS), PortIdentity(clock.clock_identity, 1),
                                                 PortIdentity(clock.clock_identity, rng.randrange(65536)), base.target_port_identity))
        kw["action_field"] = rng.choice(list(type(base.action_field))) if rng.random() < 0.7 else base.action_field
    msg = t(**{**{f.name: getattr(base, f.name) for f in dc.fields(base)}, **kw})
    try:
        return decode(encode(msg))          # as the runtime would see it
    except CodecError:
        return None


@dataclass
class CoreStats:
    inputs: int = 0
    clocks: int = 0
    actions: int = 0
    sends: int = 0
    adjusts: int = 0
    state_changes: int = 0
    states_seen: set = None
    failures: list = None

    def __post_init__(self) -> None:
        self.states_seen = set()
        self.failures = []


def check_core_invariants(clock, actions: list, now_ns: int, st: CoreStats, trace: list[str], after_timer: bool) -> None:
    import math

    from controlplane.codec import encode
    from controlplane.codec.enums import PortState
    from controlplane.core import actions as A

    def fail(why: str) -> None:
        if len(st.failures) < 50:
            st.failures.append(f"{why}\n    last inputs: {' ; '.join(trace[-6:])}")

    closed = tuple(getattr(A, n) for n in ("SendMessage", "ArmTimer", "AdjustClock", "ProgramDataplane", "StateChanged",
                                           "ParentChanged", "OffsetSample", "Fault") if hasattr(A, n))
    for a in actions:
        st.actions += 1
        if not isinstance(a, closed):
            fail(f"action outside the closed set: {a!r}")
        if isinstance(a, A.SendMessage):
            st.sends += 1
            try:
                data = encode(a.message)
            except Exception as exc:                         # noqa: BLE001
                fail(f"core sent a message that does not encode: {type(exc).__name__}: {exc}: {a.message!r}")
                continue
            if not 0 <= a.message.header.sequence_id <= 0xFFFF:
                fail(f"sequenceId out of range {a.message.header.sequence_id}")
            if not 1 <= a.port <= len(clock.ports):
                fail(f"SendMessage on port {a.port}")
            del data
        elif isinstance(a, A.AdjustClock):
            st.adjusts += 1
            for v in (a.freq_ppb, a.step_ns, a.offset_ns):
                if v is not None and isinstance(v, float) and not math.isfinite(v):
                    fail(f"AdjustClock with a non-finite value: {a!r}")
            if a.freq_ppb is not None and abs(a.freq_ppb) > 1e9:
                fail(f"AdjustClock frequency beyond 1e9 ppb: {a!r}")
            if clock.cfg.free_running and (a.step_ns or a.freq_ppb):
                fail(f"free_running clock asked to adjust: {a!r}")
        elif isinstance(a, A.StateChanged):
            st.state_changes += 1
        elif isinstance(a, A.OffsetSample):
            if not isinstance(a.offset_ns, int) or not isinstance(a.mean_path_delay_ns, int):
                fail(f"OffsetSample not integer ns: {a!r}")
    states = [p.state for p in clock.ports]
    for p, s in zip(clock.ports, states):
        if not isinstance(s, PortState):
            fail(f"port {p.number} state {s!r} is not a PortState")
        st.states_seen.add(s.name)
        for k, v in p.seq.items():
            if not 0 <= v <= 0xFFFF:
                fail(f"port {p.number} next {k} sequenceId {v} out of range")
        for name, d in p.timers.items():
            if not isinstance(d, int):
                fail(f"timer {name} deadline {d!r} not int ns")
            elif after_timer and d <= now_ns:
                fail(f"timer {name} still due ({d} <= now {now_ns}) after handle_timer")
        if p.ds.log_announce_interval is not None and not -128 <= p.ds.log_announce_interval <= 127:
            fail(f"logAnnounceInterval {p.ds.log_announce_interval}")
        if p.peer_mean_link_delay_ns is not None and not isinstance(p.peer_mean_link_delay_ns, int):
            fail(f"meanLinkDelay not int: {p.peer_mean_link_delay_ns!r}")
    slaves = [p.number for p, s in zip(clock.ports, states) if s in (PortState.SLAVE, PortState.UNCALIBRATED)]
    if len(slaves) > 1:
        fail(f"more than one SLAVE/UNCALIBRATED port: {slaves}")
    if clock.is_tc and any(s in (PortState.SLAVE, PortState.UNCALIBRATED) for s in states) and False:
        fail("TC port in SLAVE")
    if clock.default_ds.slave_only and PortState.MASTER in states:
        fail("slaveOnly clock has a MASTER port")
    if len(clock._tokens) > 1100:
        fail(f"tx token table grows: {len(clock._tokens)}")


def fuzz_core_clock(rng: random.Random, steps: int, st: CoreStats, kind: str | None = None) -> None:
    """One clock of a random kind driven by `steps` random inputs; invariants after every one."""
    from controlplane.codec.samples import all_samples
    from controlplane.core.actions import SendMessage

    seeds = all_samples()
    kind = kind or rng.choice(CORE_KINDS)
    clock = make_clock(kind, rng)
    st.clocks += 1
    now = rng.randrange(1 << 40)
    ptp_offset = rng.choice((0, rng.randrange(-S_NS, S_NS), 1_700_000_000 * S_NS))
    trace = [f"{kind} start@{now}"]
    tokens: list[int] = []
    try:
        acts = clock.start(now)
    except Exception as exc:                                   # noqa: BLE001
        st.failures.append(f"{kind}: start raised {type(exc).__name__}: {exc}")
        return
    check_core_invariants(clock, acts, now, st, trace, False)
    for _ in range(steps):
        st.inputs += 1
        x = rng.random()
        after_timer = False
        if 0.45 <= x < 0.55:
            try:
                acts = _coherent_master(rng, clock, now, ptp_offset, seeds, trace)
            except Exception as exc:                           # noqa: BLE001
                _core_exc(st, kind, exc, trace)
                return
            check_core_invariants(clock, acts, now, st, trace, False)
            if not _stamp_sends(rng, clock, acts, now, ptp_offset, st, kind, trace, tokens):
                return
            now += rng.randrange(1, S_NS // 8)
            continue
        msg = core_message(rng, clock, now + ptp_offset, seeds) if x < 0.45 else None
        if x < 0.45 and msg is None:
            continue
        try:
            if x < 0.45:
                pn = rng.randrange(1, len(clock.ports) + 1)
                rx = None if rng.random() < 0.05 else now + ptp_offset + rng.randrange(-50_000, 50_000)
                trace.append(f"rx p{pn} {type(msg).__name__} seq={msg.header.sequence_id} dom={msg.header.domain_number}")
                acts = clock.handle_message(pn, msg, rx, now, src=rng.choice((None, "10.0.0.9")))
            elif x < 0.85:
                d = clock.next_deadline_ns()
                now = max(now, d) if d is not None and rng.random() < 0.9 else now + rng.randrange(1, 3 * S_NS)
                trace.append(f"timer@{now}")
                acts = clock.handle_timer(now)
                after_timer = True
            elif x < 0.93 and tokens:
                tok = rng.choice(tokens) if rng.random() < 0.9 else rng.randrange(1 << 20)
                trace.append(f"txts {tok}")
                acts = clock.handle_tx_timestamp(tok, now + ptp_offset + rng.randrange(0, 100_000), now)
            elif x < 0.96:
                pn = rng.randrange(1, len(clock.ports) + 1)
                trace.append(f"fault p{pn}")
                acts = clock.handle_fault(pn, "fuzz: link down", now)
            elif x < 0.99:
                pn = rng.randrange(1, len(clock.ports) + 1)
                en = rng.random() < 0.6
                trace.append(f"enable p{pn}={en}")
                acts = clock.set_port_enabled(pn, en, now)
            else:
                which, v = rng.choice(("priority1", "priority2")), rng.randrange(256)
                trace.append(f"set {which}={v}")
                acts = clock.set_priority(which, v, now)
        except Exception as exc:                               # noqa: BLE001
            _core_exc(st, kind, exc, trace)
            return
        check_core_invariants(clock, acts, now, st, trace, after_timer)
        if not _stamp_sends(rng, clock, acts, now, ptp_offset, st, kind, trace, tokens):
            return
        del trace[:-8]


def _core_exc(st: CoreStats, kind: str, exc: BaseException, trace: list[str]) -> None:
    import traceback

    tb = traceback.extract_tb(exc.__traceback__)[-1]
    if len(st.failures) < 50:
        st.failures.append(f"{kind}: {type(exc).__name__}: {exc} at {tb.filename.split('/work/main/')[-1]}:{tb.lineno}"
                           f"\n    last inputs: {' ; '.join(trace[-6:])}")


def _stamp_sends(rng, clock, acts, now, ptp_offset, st, kind, trace, tokens) -> bool:
    """As the runtime does: most sent event messages get their TX timestamp back at once (the rest
    later, late, twice or never)."""
    from controlplane.core.actions import SendMessage

    pending = [a.tx_token for a in acts if isinstance(a, SendMessage) and a.tx_token is not None]
    while pending:
        tok = pending.pop(0)
        if rng.random() < 0.2:
            tokens.append(tok)
            del tokens[:-64]
            continue
        trace.append(f"txts {tok}")
        try:
            more = clock.handle_tx_timestamp(tok, now + ptp_offset + rng.randrange(0, 20_000), now)
        except Exception as exc:                               # noqa: BLE001
            _core_exc(st, kind, exc, trace)
            return False
        st.inputs += 1
        check_core_invariants(clock, more, now, st, trace, False)
        pending += [a.tx_token for a in more if isinstance(a, SendMessage) and a.tx_token is not None]
    return True


def _coherent_master(rng: random.Random, clock, now: int, ptp_offset: int, seeds: dict, trace: list[str]) -> list:
    """A well-behaved master's exchange (Announce, two-step Sync + Follow_Up, Delay_Resp / Pdelay_Resp
    to our last request) so BMCA, servo and delay paths run under the random noise around it."""
    import dataclasses as dc

    from controlplane.codec import decode, encode
    from controlplane.codec import messages as M
    from controlplane.codec.types import ClockQuality, PortIdentity

    by_type = {type(m).__name__: m for m in seeds.values()}
    pn = 1 if rng.random() < 0.8 else rng.randrange(1, len(clock.ports) + 1)
    port = clock.port(pn)
    gm = PortIdentity(FOREIGN[0], 1)
    dom = clock.default_ds.domain_number
    ptp_now = now + ptp_offset
    err = rng.choice((0, rng.randrange(-2000, 2000), rng.randrange(-S_NS, S_NS)))
    delay = rng.randrange(0, 50_000)

    def h(base, seq, **kw):
        return dc.replace(base.header, domain_number=dom, source_port_identity=gm, sequence_id=seq & 0xFFFF,
                          correction_scaled_ns=0, log_message_interval=-3, **kw)

    seq = (now // (S_NS // 8)) & 0xFFFF
    a = by_type["Announce"]
    out = []
    msgs = [dc.replace(a, header=h(a, seq), grandmaster_identity=gm.clock_identity, grandmaster_priority1=1,
                       grandmaster_clock_quality=ClockQuality(6, 0x21, 0x4E5D), steps_removed=0)]
    syn, fu = by_type["Sync"], by_type["FollowUp"]
    t1 = ptp_now - delay - err
    msgs.append(dc.replace(syn, header=h(syn, seq, two_step=True), origin_timestamp=_ts(0)))
    msgs.append(dc.replace(fu, header=h(fu, seq), precise_origin_timestamp=_ts(t1)))
    dr = by_type["DelayResp"]
    msgs.append(dc.replace(dr, header=h(dr, port.seq["delay_req"] - 1), receive_timestamp=_ts(ptp_now + delay - err),
                           requesting_port_identity=port.identity))
    for m in msgs:
        m = decode(encode(m))
        trace.append(f"coherent p{pn} {type(m).__name__} seq={m.header.sequence_id}")
        rx = ptp_now if isinstance(m, M.Sync) else None
        out += clock.handle_message(pn, m, rx, now, src=None)
    return out


def fuzz_core(rng: random.Random, n_inputs: int, st: CoreStats | None = None, steps_per_clock: int = 400) -> CoreStats:
    st = st or CoreStats()
    target = st.inputs + n_inputs
    while st.inputs < target:
        fuzz_core_clock(rng, min(steps_per_clock, target - st.inputs), st)
    return st


# =================================================================================================
# `make fuzz` (python -m bench.fuzz [--frames N] [--codec N] [--core N] [--seed S] [--only ...])
# =================================================================================================
def _progress(what: str, done: int, total: int, t0: float, extra: str = "") -> None:
    import sys
    import time

    dt = max(1e-9, time.monotonic() - t0)
    print(f"  {what}: {done:,}/{total:,} ({100 * done / max(1, total):.0f} %) {done / dt:,.0f}/s {extra}", flush=True)
    sys.stdout.flush()


def run_dataplane(n: int, seed: int, block: int = 50_000) -> tuple[int, list[str], dict]:
    import os
    import time

    if os.geteuid() != 0:
        return 0, ["dataplane fuzzing needs root (BPF_PROG_TEST_RUN): skipped"], {}
    rng = random.Random(f"dp-{seed}")
    t0 = time.monotonic()
    done, loads, failures = 0, 0, []
    verdicts: dict[str, int] = {}
    scapy = 0
    sweeps = set()
    i = 0
    while done < n:
        cfg = DP_CONFIGS[i % len(DP_CONFIGS)]
        i += 1
        try:
            fz = DataplaneFuzzer(cfg)       # fresh BCC compile + kernel verifier each block
        except Exception as exc:            # noqa: BLE001 - a rejected load is a finding, not a crash
            failures.append(f"[{cfg.name}] load #{loads + 1} failed: {exc}")
            break
        loads += 1
        try:
            if cfg.name not in sweeps:
                sweeps.add(cfg.name)
                for label, frame in truncation_sweep(rng):
                    fz.check_flow([(label, frame)], "seed")
            fuzz_block(fz, rng, min(block, max(1, n - done - fz.frames)), scapy_every=200)
            fz.check_counters()
        finally:
            fz.close()
        done += fz.frames
        scapy += fz.scapy_checked
        for k, v in fz.verdicts.items():
            verdicts[k] = verdicts.get(k, 0) + v
        failures += [f for f in fz.failures if f]
        _progress("dataplane frames", done, n, t0, f"[{cfg.name}] failures {len(failures)}")
    verdicts["program_loads"] = loads
    verdicts["scapy_checked"] = scapy
    verdicts["seconds"] = round(time.monotonic() - t0, 1)
    return done, failures, verdicts


def run_codec(n: int, seed: int) -> tuple[int, list[str], dict]:
    import time

    rng = random.Random(f"codec-{seed}")
    st_ = CodecStats()
    t0 = time.monotonic()
    step = max(1, n // 10)
    while st_.inputs < n:
        fuzz_codec(rng, min(step, n - st_.inputs), st_)
        _progress("codec inputs", st_.inputs, n, t0, f"decoded {st_.decoded:,} failures {len(st_.failures)}")
    return st_.inputs, st_.failures, {"decoded": st_.decoded, "rejected_by_stage": st_.rejected,
                                      "frames_parsed": st_.frames, "captures_parsed": st_.captures,
                                      "seconds": round(time.monotonic() - t0, 1)}


def run_core(n: int, seed: int) -> tuple[int, list[str], dict]:
    import time

    rng = random.Random(f"core-{seed}")
    st_ = CoreStats()
    t0 = time.monotonic()
    step = max(1, n // 10)
    while st_.inputs < n:
        fuzz_core(rng, min(step, n - st_.inputs), st_)
        _progress("core inputs", st_.inputs, n, t0, f"clocks {st_.clocks} failures {len(st_.failures)}")
    return st_.inputs, st_.failures, {"clocks": st_.clocks, "actions": st_.actions, "sends": st_.sends,
                                      "adjusts": st_.adjusts, "state_changes": st_.state_changes,
                                      "states_seen": sorted(st_.states_seen), "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000, help="dataplane frames (BPF_PROG_TEST_RUN)")
    ap.add_argument("--codec", type=int, default=1_000_000, help="codec inputs")
    ap.add_argument("--core", type=int, default=1_000_000, help="core inputs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=("dataplane", "codec", "core"), action="append")
    ap.add_argument("--json", help="write the summary here as JSON")
    a = ap.parse_args(argv)
    parts = a.only or ["dataplane", "codec", "core"]
    summary, bad = {}, 0
    for part, n, fn in (("dataplane", a.frames, run_dataplane), ("codec", a.codec, run_codec), ("core", a.core, run_core)):
        if part not in parts or n <= 0:
            continue
        print(f"{part}: {n:,} inputs, seed {a.seed}", flush=True)
        done, failures, info = fn(n, a.seed)
        skipped = done == 0 and failures and "skipped" in failures[0]
        summary[part] = {"inputs": done, "failures": 0 if skipped else len(failures), **info}
        if skipped:
            print(f"  {failures[0]}")
            continue
        bad += len(failures)
        for f in failures[:20]:
            print("  FAIL " + f)
    print("\nsummary (seed %d):" % a.seed)
    for part, info in summary.items():
        print(f"  {part:10s} {info['inputs']:>10,} inputs  {info['failures']} failures  "
              + "  ".join(f"{k}={v}" for k, v in info.items() if k not in ("inputs", "failures")))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"seed": a.seed, **summary}, fh, indent=2, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
