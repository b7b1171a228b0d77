"""Frame generation and an independent reference model of the dataplane, for fuzzing.

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

    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)       # bpf_ktime_get_ns()'s clock


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
        self.glob = GlobalConfig(domain=cfg.domain, two_step_tc=cfg.two_step_tc, egress_priority=cfg.egress_priority)
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
        fd_i, fd_t = self.maps.fds["ptp_ingress"], self.maps.fds["ptp_twostep"]
        for ref in refs:
            ek = self._ekey(ref)
            if ek is None:
                continue
            k = self._key(*ek)
            self._libbpf.map_delete(fd_i, k)
            for ifx in (LO, PEER):
                self._libbpf.map_delete(fd_t, self._TwostepKey(k=k, ifindex=ifx))

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
                self._libbpf.map_delete(self.maps.fds["ptp_ingress"], k)
        iif = 0 if scenario == "local" else PEER
        r = self._run_tc(self.fd_egr, frame, ifindex=LO, ingress_ifindex=iif)
        t1 = mono_ns()
        self.last_out = r.data

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
