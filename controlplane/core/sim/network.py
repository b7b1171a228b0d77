"""Nodes and the network of the simulator.

- ``PtpNode`` runs the core ``Clock`` (OC or BC): it executes the core's actions exactly as the
  runtime does (send, TX-timestamp callback, AdjustClock on a VirtualClockMath, timers).
- ``SwitchNode`` forwards frames between its ports after a random residence time. As a
  transparent clock it also does what the eBPF dataplane does: adds the measured residence (and
  for P2P the ingress port's mean link delay from its ProgramDataplane) to the correctionField of
  event messages; its core Clock (E2E_TC / P2P_TC) measures peer delay. As a plain bridge it
  adds nothing.
- ``Network`` owns the nodes and the segments (broadcast domains) between their ports.

Every message crosses the network as codec-encoded bytes and is decoded on receipt.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import statistics
from dataclasses import dataclass, field
from typing import Iterable

from controlplane.codec import messages as m
from controlplane.codec.enums import MessageType, PortState
from controlplane.codec.errors import CodecError
from controlplane.codec.types import Timestamp
from controlplane.core.actions import (
    AdjustClock,
    ArmTimer,
    Fault,
    OffsetSample,
    ParentChanged,
    ProgramDataplane,
    SendMessage,
    StateChanged,
)
from controlplane.core.clock import Clock
from controlplane.core.clocks import VirtualClockMath
from controlplane.core.config import ClockConfig, ClockType
from controlplane.core.sim.engine import Oscillator, Simulator, Wire

__all__ = ["Network", "PtpNode", "SwitchKind", "SwitchNode"]

EPOCH_NS = 1_700_000_000 * 1_000_000_000  # PTP times start near a realistic TAI value
TX_STAMP_LATENCY_NS = 5_000  # when the TX timestamp reaches the core after the send


class SwitchKind(enum.StrEnum):
    BRIDGE = "bridge"
    E2E_TC = "e2e_tc"
    P2P_TC = "p2p_tc"


@dataclass
class _Member:
    node: "Node"
    port: int


@dataclass
class Segment:
    """A broadcast domain: a frame sent by one member reaches every other member."""

    members: list[_Member]
    wire: Wire
    up: bool = True


class Node:
    name: str
    net: "Network"

    def receive(self, port: int, data: bytes, t_ns: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Trace:
    offsets: list[tuple[int, int]] = field(default_factory=list)  # (true t, reported offset)
    states: list[tuple[int, StateChanged]] = field(default_factory=list)
    parents: list[tuple[int, ParentChanged]] = field(default_factory=list)
    faults: list[tuple[int, Fault]] = field(default_factory=list)
    dataplane: list[tuple[int, ProgramDataplane]] = field(default_factory=list)


class PtpNode(Node):
    """An ordinary or boundary clock running the core on a simulated oscillator."""

    def __init__(self, net: Network, name: str, cfg: ClockConfig, clock_identity: bytes, n_ports: int, *,
                 freq_ppb: float, wander_ppb_per_sqrt_s: float = 0.0, initial_offset_ns: int = 0,
                 timestamp_noise_ns: int = 0) -> None:
        self.net = net
        self.name = name
        rng = random.Random(net.sim.rng.getrandbits(64))
        self.rng = rng
        self.osc = Oscillator(freq_ppb, random.Random(rng.getrandbits(64)), wander_ppb_per_sqrt_s=wander_ppb_per_sqrt_s)
        self.vclock = VirtualClockMath(0, offset_ns=EPOCH_NS + initial_offset_ns)
        self.timestamp_noise_ns = timestamp_noise_ns
        self.clock = Clock(cfg, clock_identity, [f"p{i}" for i in range(1, n_ports + 1)], rng=random.Random(rng.getrandbits(64)))
        self.trace = Trace()
        self._timer_gen = 0
        self.alive = True
        self.decode_errors = 0
        self.transmit_as: Node = self  # a switch's embedded TC core sends as the switch

    # time
    def ptp_time(self, t_ns: int) -> int:
        return self.vclock.time(self.osc.base(t_ns))

    def _stamp(self, t_ns: int) -> int:
        ts = self.ptp_time(t_ns)
        if self.timestamp_noise_ns:
            ts += round(self.rng.gauss(0, self.timestamp_noise_ns))
        return ts

    # lifecycle
    def start(self) -> None:
        self._execute(self.clock.start(self.net.sim.now_ns))

    def kill(self) -> None:
        """Power off: no more timers, frames or actions."""
        self.alive = False

    def receive(self, port: int, data: bytes, t_ns: int) -> None:
        if not self.alive:
            return
        rx_ts = self._stamp(t_ns)
        try:
            msg = m.decode(data)
        except CodecError:
            self.decode_errors += 1
            return
        self._execute(self.clock.handle_message(port, msg, rx_ts, t_ns))

    def _on_timer(self, gen: int) -> None:
        if not self.alive or gen != self._timer_gen:
            return
        self._execute(self.clock.handle_timer(self.net.sim.now_ns))

    def _execute(self, actions: list) -> None:
        sim = self.net.sim
        now = sim.now_ns
        for a in actions:
            if isinstance(a, SendMessage):
                self._send(a, now)
            elif isinstance(a, AdjustClock):
                base = self.osc.base(now)
                if a.step_ns is not None:
                    self.vclock.step(a.step_ns)
                if a.freq_ppb is not None:
                    self.vclock.adjust_frequency(a.freq_ppb, base)
            elif isinstance(a, OffsetSample):
                self.trace.offsets.append((now, a.offset_ns))
            elif isinstance(a, StateChanged):
                self.trace.states.append((now, a))
            elif isinstance(a, ParentChanged):
                self.trace.parents.append((now, a))
            elif isinstance(a, Fault):
                self.trace.faults.append((now, a))
            elif isinstance(a, ProgramDataplane):
                self.trace.dataplane.append((now, a))
            elif isinstance(a, ArmTimer):
                pass
            else:  # pragma: no cover - closed set
                raise TypeError(f"unknown action {a!r}")
        deadline = self.clock.next_deadline_ns()
        if deadline is not None:
            self._timer_gen += 1
            gen = self._timer_gen
            sim.schedule(deadline, lambda: self._on_timer(gen))

    def _send(self, a: SendMessage, now: int) -> None:
        msg = a.message
        tx_ts = self._stamp(now)
        if a.one_step:
            if isinstance(msg, m.Sync):
                msg = dataclasses.replace(msg, origin_timestamp=Timestamp.from_ns(tx_ts))
            elif isinstance(msg, m.PdelayResp) and a.request_receipt_ns is not None:
                h = msg.header
                msg = dataclasses.replace(msg, header=dataclasses.replace(
                    h, correction_scaled_ns=h.correction_scaled_ns + (tx_ts - a.request_receipt_ns) * 65536))
        data = m.encode(msg)
        self.net.transmit(self.transmit_as, a.port, data, now)
        if a.tx_token is not None:
            token = a.tx_token
            self.net.sim.schedule(now + TX_STAMP_LATENCY_NS, lambda: self._tx_stamp(token, tx_ts))

    def _tx_stamp(self, token: int, tx_ts: int) -> None:
        if self.alive:
            self._execute(self.clock.handle_tx_timestamp(token, tx_ts, self.net.sim.now_ns))

    def port_states(self) -> list[PortState]:
        return [p.state for p in self.clock.ports]


class SwitchNode(Node):
    """A switch: plain bridge, or a transparent clock (the simulated dataplane + the core's TC control)."""

    def __init__(self, net: Network, name: str, n_ports: int, kind: SwitchKind, cfg: ClockConfig | None,
                 clock_identity: bytes, *, freq_ppb: float, residence_min_ns: int, residence_mean_ns: int) -> None:
        self.net = net
        self.name = name
        self.kind = kind
        self.n_ports = n_ports
        self.residence_min_ns = residence_min_ns
        self.residence_mean_ns = residence_mean_ns
        self.rng = random.Random(net.sim.rng.getrandbits(64))
        self.ptp: PtpNode | None = None
        self.dataplane: dict[int, ProgramDataplane] = {}
        self.residences_ns: list[int] = []
        if kind is not SwitchKind.BRIDGE:
            assert cfg is not None
            self.ptp = PtpNode(net, name, cfg, clock_identity, n_ports, freq_ppb=freq_ppb)
            self.ptp.transmit_as = self
        self._dp_seen = 0

    def start(self) -> None:
        if self.ptp is not None:
            self.ptp.start()
            self._refresh_dataplane()

    def receive(self, port: int, data: bytes, t_ns: int) -> None:
        if len(data) < 1:
            return
        mtype = data[0] & 0x0F
        link_local = mtype in (MessageType.PDELAY_REQ, MessageType.PDELAY_RESP, MessageType.PDELAY_RESP_FOLLOW_UP)
        if self.ptp is not None and (link_local and self.kind is SwitchKind.P2P_TC):
            self.ptp.receive(port, data, t_ns)
            self._refresh_dataplane()
            return
        if self.ptp is not None and mtype in (MessageType.SYNC, MessageType.FOLLOW_UP):
            # the TC's control plane sees the Syncs too (rate ratio to the grandmaster)
            self.ptp.receive(port, data, t_ns)
            self._refresh_dataplane()
        residence = self.residence_min_ns + int(min(self.rng.expovariate(1.0 / max(1, self.residence_mean_ns - self.residence_min_ns)),
                                                    20 * self.residence_mean_ns))
        out_t = t_ns + residence
        event = mtype < 0x8
        if self.ptp is not None and event and not (self.kind is SwitchKind.P2P_TC and mtype == MessageType.DELAY_REQ):
            # what the eBPF dataplane does: residence measured by this switch's own (free-running)
            # clock, plus (P2P) the ingress port's peer delay, added to the correctionField
            measured = self.ptp.ptp_time(out_t) - self.ptp.ptp_time(t_ns)
            pd = self.dataplane.get(port)  # the ingress port's programming, as the eBPF egress reads it
            add = round(measured * pd.rate_ratio) if pd is not None else measured
            if self.kind is SwitchKind.P2P_TC and mtype == MessageType.SYNC:
                add += pd.mean_link_delay_ns if pd is not None else 0
            self.residences_ns.append(measured)
            data = _add_correction(data, add)
        for p in range(1, self.n_ports + 1):
            if p != port:
                self.net.sim.schedule(out_t, lambda p=p, d=data: self.net.transmit(self, p, d, self.net.sim.now_ns))

    def _refresh_dataplane(self) -> None:
        if self.ptp is not None:
            dp = self.ptp.trace.dataplane
            for _, pd in dp[self._dp_seen:]:
                self.dataplane[pd.port] = pd
            self._dp_seen = len(dp)


def _add_correction(data: bytes, add_ns: int) -> bytes:
    """Add ``add_ns`` to the correctionField in place (bytes 8..16, signed, ns * 2^16)."""
    cur = int.from_bytes(data[8:16], "big", signed=True)
    new = cur + add_ns * 65536
    return data[:8] + new.to_bytes(8, "big", signed=True) + data[16:]


class Network:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.nodes: dict[str, Node] = {}
        self._segments: list[Segment] = []
        self._port_segment: dict[tuple[int, int], Segment] = {}
        self._ids = 0
        self.frames = 0

    def _new_identity(self) -> bytes:
        self._ids += 1
        return bytes([0x02, 0x00, 0x00, 0xFF, 0xFE, 0x00, self._ids >> 8, self._ids & 0xFF])

    def add_clock(self, name: str, cfg: ClockConfig, *, n_ports: int = 1, freq_ppb: float = 0.0, wander_ppb_per_sqrt_s: float = 0.0,
                  initial_offset_ns: int = 0, clock_identity: bytes | None = None, timestamp_noise_ns: int = 0) -> PtpNode:
        if cfg.clock_type is ClockType.OC and n_ports > 1:
            cfg = dataclasses.replace(cfg, clock_type=ClockType.BC)
        node = PtpNode(self, name, cfg, clock_identity or self._new_identity(), n_ports, freq_ppb=freq_ppb,
                       wander_ppb_per_sqrt_s=wander_ppb_per_sqrt_s, initial_offset_ns=initial_offset_ns,
                       timestamp_noise_ns=timestamp_noise_ns)
        self.nodes[name] = node
        return node

    def add_switch(self, name: str, n_ports: int, kind: SwitchKind, cfg: ClockConfig | None = None, *, freq_ppb: float = 0.0,
                   residence_min_ns: int = 5_000, residence_mean_ns: int = 50_000) -> SwitchNode:
        if kind is not SwitchKind.BRIDGE and cfg is None:
            from controlplane.core.config import parse

            cfg = parse({"global": {"clock_type": "E2E_TC" if kind is SwitchKind.E2E_TC else "P2P_TC"}})
        node = SwitchNode(self, name, n_ports, kind, cfg, self._new_identity(), freq_ppb=freq_ppb,
                          residence_min_ns=residence_min_ns, residence_mean_ns=residence_mean_ns)
        self.nodes[name] = node
        return node

    def connect(self, members: Iterable[tuple[str, int]], wire: Wire | None = None) -> Segment:
        seg = Segment([_Member(self.nodes[n], p) for n, p in members], wire or Wire())
        for mem in seg.members:
            key = (id(mem.node), mem.port)
            if key in self._port_segment:
                raise ValueError(f"{mem.node.name} port {mem.port} is already connected")
            self._port_segment[key] = seg
        self._segments.append(seg)
        return seg

    def transmit(self, node: Node, port: int, data: bytes, t_ns: int) -> None:
        seg = self._port_segment.get((id(node), port))
        if seg is None or not seg.up:
            return
        self.frames += 1
        first = seg.members[0].node is node and seg.members[0].port == port
        for mem in seg.members:
            if mem.node is node and mem.port == port:
                continue
            forward = first  # "a->b" = from the first member
            delay = seg.wire.sample(forward, self.sim.rng)
            target, tport = mem.node, mem.port
            self.sim.schedule(t_ns + delay, lambda target=target, tport=tport: target.receive(tport, data, self.sim.now_ns))

    def start(self) -> None:
        for n in self.nodes.values():
            n.start()  # type: ignore[attr-defined]

    def clocks(self) -> list[PtpNode]:
        return [n for n in self.nodes.values() if isinstance(n, PtpNode)]

    def true_offset_ns(self, a: str, b: str) -> int:
        """PTP time of node a minus node b right now (the oracle the protocol never sees)."""
        na, nb = self.nodes[a], self.nodes[b]
        assert isinstance(na, PtpNode) and isinstance(nb, PtpNode)
        return na.ptp_time(self.sim.now_ns) - nb.ptp_time(self.sim.now_ns)


def rms(values: list[int]) -> float:
    return (sum(v * v for v in values) / len(values)) ** 0.5 if values else float("nan")


def summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": statistics.fmean(values), "rms": rms(values), "max_abs": max(abs(v) for v in values)}
