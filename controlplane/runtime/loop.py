"""The asyncio adapter: the only place that reads clocks for the core and executes its actions.

    kernel ──Received/TxTimestamp──> Runtime ──decode──> node.handle_message(...)  -> [Action]
    loop timer (monotonic) ────────> Runtime ──────────> node.handle_timer(now_ns) -> [Action]
    [Action] ──> SendMessage: encode + transport.send (event: remember tx_token)
                 AdjustClock: local clock; ProgramDataplane: BPF maps; StateChanged/...: logs

Two time bases, two names: ``now_ns`` is host monotonic time (timers), stamps handed to the node
are PTP time of the local clock (``clock.from_system_ns(kernel_stamp)``).

Errors say whose fault: a peer's malformed packet is counted and dropped; a socket or BPF failure
becomes a FAULT of that port (``node.handle_fault``), never an exception out of the loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import logging
import math
import statistics
import struct
import time
from typing import Any, Callable, Protocol, Sequence, assert_never


from controlplane.codec.enums import PortState
from controlplane.codec.errors import CodecError
from controlplane.codec.header import HEADER_LEN
from controlplane.codec.messages import PdelayResp, Sync, decode, encode
from controlplane.codec.types import TIMESTAMP_LEN, Timestamp
from controlplane.core.actions import (
    Action,
    AdjustClock,
    ArmTimer,
    Dest,
    Fault,
    OffsetSample,
    ParentChanged,
    ProgramDataplane,
    SendMessage,
    StateChanged,
)
from controlplane.runtime.ratelimit import MessageRateLimits
from controlplane.runtime.transport import Received, Transport, TransportError, TxTimestamp

log = logging.getLogger("ptp-switch")

UDS_PORT = 0  # the management socket is port 0, as in ptp4l
_TRANSIENT_SEND_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ENETUNREACH, errno.EHOSTUNREACH})
MAX_PENDING_TX_TOKENS = 1 << 16  # event sends whose TX stamp has not come back yet (older are forgotten)

# One-step sends with software stamps (``Runtime._one_step_*``): where the late clock read is patched in
# the encoded message. originTimestamp of a Sync follows the common header (codec: HEADER_LEN, a
# TIMESTAMP_LEN-byte Timestamp.pack()); correctionField is the int64 at header offset 8 (codec/header.py
# layout; tests/unit/test_one_step_latency.py checks both against the codec's decoder).
ORIGIN_TIMESTAMP_OFFSET = HEADER_LEN
CORRECTION_FIELD_OFFSET = 8
_CORRECTION = struct.Struct("!q")
MAX_PENDING_ONE_STEP = 1024  # one-step sends whose kernel TX stamp has not come back (older are forgotten)
ONE_STEP_LOG_AFTER = 64  # the learned latencies are logged once, after this many kernel TX stamps


class SendLatencyEstimator:
    """The fixed part of a one-step send's delay after its time was written: running median of
    (kernel TX stamp, in the clock's time scale) - (time written into the message) over the last
    ``window`` samples.

    A hardware one-step clock writes the time at its stamp point and adds any known fixed delay
    after it to the correctionField; with software stamps the "stamp point" is our clock read, and
    the delay after it (encode tail, syscall, qdisc, driver) is learned from the kernel's own TX
    stamp of the same message. Samples outside ``0..max_ns`` are rejected (a stepped clock, a
    stalled process); the median ignores the rest's outliers. ``estimate_ns`` is 0 until
    ``min_samples`` samples were accepted."""

    def __init__(self, *, window: int = 31, min_samples: int = 4, max_ns: int = 2_000_000) -> None:
        if window < 1 or not 1 <= min_samples <= window or max_ns <= 0:
            raise ValueError(f"bad estimator bounds: window={window} min_samples={min_samples} max_ns={max_ns}")
        self.min_samples = min_samples
        self.max_ns = max_ns
        self._samples: collections.deque[int] = collections.deque(maxlen=window)
        self.accepted = 0
        self.rejected = 0
        self.estimate_ns = 0

    def add(self, latency_ns: int) -> bool:
        """Feed one sample; True if it was accepted."""
        if not 0 <= latency_ns <= self.max_ns:
            self.rejected += 1
            return False
        self.accepted += 1
        self._samples.append(int(latency_ns))
        if len(self._samples) >= self.min_samples:
            self.estimate_ns = int(statistics.median_low(self._samples))
        return True

    @property
    def ready(self) -> bool:
        return len(self._samples) >= self.min_samples


class OneStepLatency:
    """One port's send latency, learned separately by how long the port had been idle before the
    send (time since its previous send of any message): a send after idle runs through cold caches
    (measured in the netns lab: median ~45 us after 125 ms idle, ~24 us right after another send, 5-7
    us in a tight loop), and a Sync that follows an Announce in the same batch is the fast kind. One
    median for all would put a fixed error on every such Sync - and ptp4l's free-running slave
    samples one Sync in eight, always the same phase of the GM's one-second cycle.

    ``gap_bounds_ns`` split the classes (default: < 1 ms, >= 1 ms; sends after 1-20 ms and after
    125 ms idle measured alike). A class with too few samples yet uses the nearest class that has
    enough."""

    def __init__(self, gap_bounds_ns: Sequence[int] = (1_000_000,), **estimator: Any) -> None:
        bounds = tuple(int(b) for b in gap_bounds_ns)
        if any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"gap bounds must be positive and increasing, got {gap_bounds_ns}")
        self.gap_bounds_ns = bounds
        self.classes = [SendLatencyEstimator(**estimator) for _ in range(len(bounds) + 1)]

    def class_of(self, gap_ns: int) -> int:
        return sum(1 for b in self.gap_bounds_ns if gap_ns >= b)

    def add(self, latency_ns: int, gap_ns: int) -> bool:
        return self.classes[self.class_of(gap_ns)].add(latency_ns)

    def estimate_ns(self, gap_ns: int) -> int:
        """The median of ``gap_ns``'s class, else of the nearest class that has one, else 0."""
        own = self.class_of(gap_ns)
        for i in sorted(range(len(self.classes)), key=lambda i: abs(i - own)):
            if self.classes[i].ready:
                return self.classes[i].estimate_ns
        return 0

    @property
    def ready(self) -> bool:
        return any(e.ready for e in self.classes)

    @property
    def accepted(self) -> int:
        return sum(e.accepted for e in self.classes)

    def describe(self) -> str:
        names = [f"< {self.gap_bounds_ns[0] / 1e6:g} ms"] + [
            f">= {b / 1e6:g} ms" for b in self.gap_bounds_ns]
        return ", ".join(f"{e.estimate_ns / 1e3:.1f} us after idle {n} ({e.accepted})" if e.ready else f"- after idle {n} ({e.accepted})"
                         for n, e in zip(names, self.classes))


class Node(Protocol):
    """What the runtime needs from the sans-IO core (a clock with its ports)."""

    def start(self, now_ns: int) -> list[Action]: ...

    def handle_message(self, port: int, message: Any, rx_ts_ns: int | None, now_ns: int, source: object) -> list[Action]: ...

    def handle_tx_timestamp(self, tx_token: int, tx_ts_ns: int, now_ns: int) -> list[Action]: ...

    def handle_timer(self, now_ns: int) -> list[Action]: ...

    def handle_fault(self, port: int, reason: str, now_ns: int) -> list[Action]: ...

    def next_deadline_ns(self) -> int | None: ...


class SteerableClock(Protocol):
    def read_ns(self) -> int: ...

    def from_system_ns(self, system_ns: int) -> int: ...

    def adjust_frequency(self, freq_ppb: float) -> None: ...

    def step(self, delta_ns: int) -> None: ...

    @property
    def frequency_ppb(self) -> float: ...


class DataplaneWriter(Protocol):
    def program_port(self, port: int, *, mean_link_delay_ns: int, delay_asymmetry_ns: int, rate_ratio: float, enabled: bool) -> None: ...


class OneStepStamper(Protocol):
    """The eBPF dataplane's help with one-step sends (``one_step_dataplane``): ``read`` gives one
    instant as (CLOCK_REALTIME ns, the dataplane's CLOCK_TAI ns); ``stamp`` records that the message
    ``ptp`` (encoded), written with the clock's time at that instant, is about to leave ``port``: its
    tc egress adds the time since then to the correctionField."""

    def read(self) -> tuple[int, int]: ...

    def stamp(self, port: int, ptp: bytes, tai_ns: int) -> None: ...


@dataclasses.dataclass
class Counters:
    rx_messages: int = 0
    rx_malformed: int = 0
    rx_no_timestamp: int = 0
    rx_unknown_port: int = 0
    tx_messages: int = 0
    tx_errors: int = 0
    tx_timestamps: int = 0
    tx_timestamps_unmatched: int = 0
    faults: int = 0
    clock_adjustments: int = 0
    dataplane_writes: int = 0
    rx_rate_limited: int = 0  # management/signaling over a rate limit (runtime/ratelimit.py)
    rx_node_errors: int = 0  # a received message whose handling raised (logged with its traceback)
    tx_timestamp_timeouts: int = 0  # TX stamps not back within tx_timestamp_timeout while none came at all (FAULT)
    one_step_dataplane_stamps: int = 0  # one-step sends recorded for the dataplane's egress stamp
    one_step_dataplane_errors: int = 0  # ... whose record could not be written (sent with the learned latency)
    tx_timestamps_lost: int = 0  # TX stamps not back in time while later ones did (queue overflow): counted only
    port_reopens: int = 0  # transports opened again when their port left FAULTY (fault_reset_interval)
    tx_dropped: int = 0  # sends lost without a FAULT: a unicast peer unreachable, or a full socket buffer
    one_step_sends: int = 0  # one-step Sync / Pdelay_Resp sent with the clock read just before the send
    one_step_tx_timestamps: int = 0  # their kernel TX stamps, fed to the send-latency estimator
    one_step_latency_rejected: int = 0  # ... of which outside the estimator's bounds (not used)


@dataclasses.dataclass
class _Summary:
    offsets: list[int] = dataclasses.field(default_factory=list)
    freqs: list[float] = dataclasses.field(default_factory=list)
    delays: list[int] = dataclasses.field(default_factory=list)
    started_ns: int = 0
    last_ns: int = 0


def _rms(values: Sequence[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else 0.0


def _sd(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


class Runtime:
    """Runs one node over its transports on the running asyncio loop."""

    def __init__(
        self,
        node: Node,
        ports: dict[int, Transport],
        clock: SteerableClock,
        *,
        dataplane: DataplaneWriter | None = None,
        summary_interval: int = 0,
        free_running: bool = False,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        on_action: Callable[[Action], None] | None = None,
        rate_limits: MessageRateLimits | None = None,
        tx_timestamp_timeout_ms: int | None = None,
        one_step_stamper: OneStepStamper | None = None,
    ) -> None:
        """``tx_timestamp_timeout_ms``: ptp4l's tx_timestamp_timeout (ms) - a TX stamp not back in
        that time FAULTs the port (see ``check_tx_timestamps``); None or 0: no check. The caller
        passes the configured value (``ClockConfig.tx_timestamp_timeout``). ``one_step_stamper``:
        one-step sends are finished by the dataplane's egress stamp instead of the learned latency."""
        self.node = node
        self.ports = dict(ports)
        self.clock = clock
        self.dataplane = dataplane
        self.one_step_stamper = one_step_stamper
        self._stamper_logged = False
        self.summary_interval_ns = int(2.0 ** summary_interval * 1e9)
        self.free_running = free_running
        self.monotonic_ns = monotonic_ns
        self.on_action = on_action
        self.counters = Counters()
        self._tx_drop_logged_s: int | None = None
        # management/signaling from PTP ports (not the UNIX socket) pass token buckets before decoding
        self.rate_limits = rate_limits if rate_limits is not None else MessageRateLimits(now_ns=monotonic_ns())
        self.last_offset: OffsetSample | None = None
        self.port_states: dict[int, str] = {}
        self._tokens: dict[tuple[int, int], int] = {}
        self._token_order: collections.deque[tuple[int, int]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline_ns: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._summaries: dict[int, _Summary] = {}
        self._open: set[int] = set()
        self._stopped = asyncio.Event()
        tx_timestamp_timeout_ms = tx_timestamp_timeout_ms or 0
        if tx_timestamp_timeout_ms < 0:
            raise ValueError(f"tx_timestamp_timeout must be >= 0 ms, got {tx_timestamp_timeout_ms}")
        self.tx_timestamp_timeout_ns = tx_timestamp_timeout_ms * 1_000_000
        # (deadline_ns, sent_ns, port, transport key) of every event send the core waits a stamp for
        self._tx_deadlines: collections.deque[tuple[int, int, int, int]] = collections.deque()
        self._last_stamp_ns: dict[int, int] = {}  # port -> monotonic time the latest TX stamp came back
        self._lost_logged_s: int | None = None
        self._unreachable_checked_ns = 0
        # one-step sends: (port, transport key) -> (message kind, PTP time written into it, idle gap before it)
        self._one_step_sent: dict[tuple[int, int], tuple[str, int, int]] = {}
        # (port, "Sync" | "PdelayResp") -> learned send latency: a Pdelay_Resp leaves right after the
        # Pdelay_Req woke the process, a Sync after a timer (measured: one shared median made a
        # ptp4l P2P slave's peer delay -6.4 us over a 1.4 us veth)
        self.one_step_latency: dict[tuple[int, str], OneStepLatency] = {}
        self._last_send_ns: dict[int, int] = {}  # port -> monotonic time of its latest send
        self._one_step_logged: set[tuple[int, str]] = set()

    # ---- lifecycle ------------------------------------------------------------------------
    def port_name(self, port: int) -> str:
        t = self.ports.get(port)
        return f"port {port} ({t.ifname})" if t is not None and port != UDS_PORT else f"port {port}"

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = self.monotonic_ns()
        faults: list[tuple[int, str]] = []
        for number, transport in self.ports.items():
            try:
                transport.open()
            except TransportError as exc:
                faults.append((number, str(exc)))
                continue
            self._open.add(number)
            for fd in transport.fds():
                self._loop.add_reader(fd, self._readable, number, fd)
        self._execute(self.node.start(now))
        for number, reason in faults:
            self._fault(number, reason)
        self._reschedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for number in list(self._open):
            self._close_port(number)
        self._stopped.set()

    async def run_until(self, stop: asyncio.Event) -> None:
        self.start()
        try:
            await stop.wait()
        finally:
            self.stop()

    def _close_port(self, number: int) -> None:
        transport = self.ports[number]
        if self._loop is not None:
            for fd in transport.fds():
                self._loop.remove_reader(fd)
        transport.close()
        self._open.discard(number)

    # ---- events in ------------------------------------------------------------------------
    def _readable(self, port: int, fd: int) -> None:
        transport = self.ports[port]
        try:
            events = transport.poll(fd)
        except TransportError as exc:
            self._fault(port, str(exc))
            return
        for ev in events:
            now = self.monotonic_ns()
            if isinstance(ev, TxTimestamp):
                sent = self._one_step_sent.pop((port, ev.token), None)
                if sent is not None:
                    self._one_step_tx_timestamp(port, *sent, ev.tx_ts_ns)
                    continue
                core_token = self._tokens.pop((port, ev.token), None)
                if core_token is None:
                    self.counters.tx_timestamps_unmatched += 1
                    continue
                self.counters.tx_timestamps += 1
                self._last_stamp_ns[port] = now
                self._execute(self.node.handle_tx_timestamp(core_token, self.clock.from_system_ns(ev.tx_ts_ns), now))
            elif isinstance(ev, Received):
                self._received(port, ev, now)
            else:  # pragma: no cover - closed set
                assert_never(ev)
        self._reschedule()

    def _received(self, port: int, ev: Received, now: int) -> None:
        if port != UDS_PORT and not self.rate_limits.admit(ev.data, ev.source, now):
            self.counters.rx_rate_limited += 1
            note = self.rate_limits.report(now)
            if note is not None:
                log.warning("%s: %s", self.port_name(port), note)
            return
        try:
            message = decode(ev.data)
        except CodecError as exc:
            self.counters.rx_malformed += 1
            log.debug("%s: dropped malformed message from %s: %s", self.port_name(port), ev.source, exc)
            return
        if ev.event and ev.rx_ts_ns is None:
            self.counters.rx_no_timestamp += 1
            log.debug("%s: dropped event message without RX timestamp", self.port_name(port))
            return
        self.counters.rx_messages += 1
        rx_ptp_ns = self.clock.from_system_ns(ev.rx_ts_ns) if ev.rx_ts_ns is not None else None
        try:
            actions = self.node.handle_message(port, message, rx_ptp_ns, now, ev.source)
        except Exception:  # our bug, triggered by a peer's message: that message is lost, not the others
            self.counters.rx_node_errors += 1
            if self.counters.rx_node_errors & (self.counters.rx_node_errors - 1) == 0:  # 1st, 2nd, 4th, 8th, ...
                log.exception("%s: error handling %s from %s (%d so far)", self.port_name(port), type(message).__name__,
                              ev.source, self.counters.rx_node_errors)
            return
        self._execute(actions)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline_ns = None
        self.check_tx_timestamps(self.monotonic_ns())
        self.check_unreachable(self.monotonic_ns())
        self._execute(self.node.handle_timer(self.monotonic_ns()))
        self._reschedule()

    def check_unreachable(self, now_ns: int) -> None:
        """At most once a second: unicast hosts the transports held every send to for seconds (no
        ARP/NDP answer, typically a forged REQUEST's source) lose their grants
        (``UnicastService.cancel_unreachable``, counted ``canceled_unreachable``)."""
        if now_ns - self._unreachable_checked_ns < 1_000_000_000:
            return
        self._unreachable_checked_ns = now_ns
        cancel = getattr(self.node, "cancel_unreachable", None)
        if cancel is None:
            return
        for port, transport in self.ports.items():
            take = getattr(transport, "take_unreachable", None)
            if take is None or port not in self._open:
                continue
            for host in take():   # on the transport's own clock, which timed the holds
                self._execute(cancel(port, host, self.monotonic_ns()))

    def check_tx_timestamps(self, now_ns: int) -> None:
        """tx_timestamp_timeout (ptp4l: "timed out while polling for tx timestamp" -> FAULT).

        A TX stamp the core waits for that is not back ``tx_timestamp_timeout`` after the send: the
        port's sockets are read first (the loop may simply not have run), then, if it is still
        missing and no other stamp came back on that port since the send, time-stamping is broken:
        FAULT on that port (it clears after fault_reset_interval). If later stamps did come back, this
        one was lost in a full error queue (a unicast server's Sync burst): counted, not a FAULT."""
        q = self._tx_deadlines
        while q and q[0][0] <= now_ns:
            _deadline, sent_ns, port, key = q.popleft()
            if (port, key) not in self._tokens:
                continue  # stamped (or forgotten)
            if port in self._open:
                for fd in self.ports[port].fds():
                    self._readable(port, fd)  # also handles any message waiting there
            if self._tokens.pop((port, key), None) is None:
                continue
            if self._last_stamp_ns.get(port, -1) >= sent_ns:
                self.counters.tx_timestamps_lost += 1
                now_s = now_ns // 1_000_000_000
                if now_s != self._lost_logged_s:
                    self._lost_logged_s = now_s
                    log.warning("%s: a tx timestamp did not come back (later ones did; %d lost so far)",
                                self.port_name(port), self.counters.tx_timestamps_lost)
                continue
            self.counters.tx_timestamp_timeouts += 1
            log.error("%s: timed out while polling for tx timestamp", self.port_name(port))
            log.error("increasing tx_timestamp_timeout may correct this issue, but it is likely caused by a driver bug")
            # the port's other pending stamps are void with it
            for k in [k for k in self._tokens if k[0] == port]:
                del self._tokens[k]
            self._fault(port, "tx timestamp timeout")

    def _reopen(self, port: int) -> None:
        """The port left FAULTY (fault_reset_interval): open its transport again (ptp4l
        port_initialize), or FAULT it again if that fails."""
        if port == UDS_PORT or port in self._open or port not in self.ports or self._loop is None:
            return
        transport = self.ports[port]
        try:
            transport.open()
        except TransportError as exc:
            self._fault(port, str(exc))
            return
        self._open.add(port)
        self.counters.port_reopens += 1
        for fd in transport.fds():
            self._loop.add_reader(fd, self._readable, port, fd)

    def _reschedule(self) -> None:
        if self._loop is None:
            return
        deadline = self.node.next_deadline_ns()
        if self._tx_deadlines and (deadline is None or self._tx_deadlines[0][0] < deadline):
            deadline = self._tx_deadlines[0][0]
        if deadline == self._timer_deadline_ns and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline_ns = deadline
        if deadline is not None:
            delay_s = max(0.0, (deadline - self.monotonic_ns()) / 1e9)
            self._timer = self._loop.call_later(delay_s, self._on_timer)

    def _fault(self, port: int, reason: str) -> None:
        self.counters.faults += 1
        log.warning("%s: FAULT: %s", self.port_name(port), reason)
        if port in self._open and port != UDS_PORT:
            self._close_port(port)
        self._execute(self.node.handle_fault(port, reason, self.monotonic_ns()))

    # ---- actions out ----------------------------------------------------------------------
    def execute(self, actions: list[Action]) -> None:
        """Run actions the node returned outside an event (a live reconfiguration from the control
        API), then re-arm the timer: the node's deadlines may have changed. Call on the loop."""
        self._execute(list(actions))
        self._reschedule()

    def _execute(self, actions: list[Action]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if self.on_action is not None:
                self.on_action(action)
            follow = self._do(action)
            if follow:
                pending.extend(follow)

    def _do(self, action: Action) -> list[Action] | None:
        if isinstance(action, SendMessage):
            return self._send(action)
        elif isinstance(action, ArmTimer):
            return None  # next_deadline_ns() is authoritative; _reschedule runs after every batch
        elif isinstance(action, AdjustClock):
            if self.free_running:
                return None
            self.counters.clock_adjustments += 1
            if action.freq_ppb is not None:
                self.clock.adjust_frequency(action.freq_ppb)
            if action.step_ns:
                self.clock.step(action.step_ns)
                log.info("clock stepped by %d ns (offset %s)", action.step_ns, action.offset_ns)
            return None
        elif isinstance(action, ProgramDataplane):
            if self.dataplane is None:
                return None
            try:
                self.dataplane.program_port(action.port, mean_link_delay_ns=action.mean_link_delay_ns,
                                            delay_asymmetry_ns=action.delay_asymmetry_ns,
                                            rate_ratio=action.rate_ratio, enabled=action.enabled)
                self.counters.dataplane_writes += 1
            except Exception as exc:  # a BPF map failure is a FAULT of that port
                self._fault(action.port, f"dataplane map write failed: {exc}")
            return None
        elif isinstance(action, StateChanged):
            self.port_states[action.port] = action.new.name
            log.info("%s: %s to %s on %s", self.port_name(action.port), action.old.name, action.new.name, action.event)
            if action.old is PortState.FAULTY and action.new not in (PortState.FAULTY, PortState.DISABLED):
                self._reopen(action.port)
            return None
        elif isinstance(action, ParentChanged):
            log.info("%s", action)
            return None
        elif isinstance(action, OffsetSample):
            self._offset(action)
            return None
        elif isinstance(action, Fault):
            log.warning("%s: %s", self.port_name(action.port), action.reason)
            return None
        else:
            assert_never(action)

    def _send(self, action: SendMessage) -> list[Action] | None:
        transport = self.ports.get(action.port)
        if transport is None or (action.port not in self._open):
            self.counters.tx_errors += 1
            return None
        message = action.message
        one_step = action.one_step and isinstance(message, (Sync, PdelayResp))
        gap_ns = 0
        if one_step:
            gap_ns = self.monotonic_ns() - self._last_send_ns.get(action.port, -(1 << 62))
            message = self._one_step_prepare(action, gap_ns)
        try:
            data = encode(message)
        except Exception as exc:  # our own bug: a message the codec refuses to encode
            self.counters.tx_errors += 1
            log.error("%s: cannot encode %s: %s", self.port_name(action.port), type(action.message).__name__, exc)
            return None
        dest = action.dest
        peer_delay = dest == Dest.PDELAY
        unicast = None if dest in (Dest.PRIMARY, Dest.PDELAY, None) else dest
        written_ns = None
        # a one-step send the dataplane stamps at its egress needs no kernel TX stamp, and making one would
        # put the stamp's work between that egress stamp and the wire (transport.send_without_tx_stamp)
        tx_stamp = not (one_step and self.one_step_stamper is not None)
        try:
            if one_step:  # the last thing before the send: read the clock and patch the bytes
                data, written_ns = self._one_step_stamp(action, data, gap_ns)
            token = transport.send(data, event=action.event, peer_delay=peer_delay, dest=unicast, tx_stamp=tx_stamp)
        except TransportError as exc:
            self.counters.tx_errors += 1
            if unicast is not None or getattr(exc.__cause__, "errno", None) in _TRANSIENT_SEND_ERRNOS:
                # one (possibly forged) peer unreachable or a momentarily full buffer: this message is
                # lost, the port is not faulty (a FAULT would let any sender take the port down)
                self.counters.tx_dropped += 1
                now_s = self.monotonic_ns() // 1_000_000_000
                if now_s != self._tx_drop_logged_s:  # at most one line a second
                    self._tx_drop_logged_s = now_s
                    log.warning("%s: %s (%d sends lost so far; port kept)", self.port_name(action.port), exc,
                                self.counters.tx_dropped)
                return None
            self._fault(action.port, str(exc))
            return None
        self.counters.tx_messages += 1
        self._last_send_ns[action.port] = self.monotonic_ns()
        if written_ns is not None:
            self.counters.one_step_sends += 1
            if token is not None:   # its kernel TX stamp will teach the send latency
                self._one_step_sent[(action.port, token)] = (type(action.message).__name__, written_ns, gap_ns)
                while len(self._one_step_sent) > MAX_PENDING_ONE_STEP:  # stamps that never came (dicts keep order)
                    del self._one_step_sent[next(iter(self._one_step_sent))]
        if action.event and action.tx_token is not None and token is not None:
            key = (action.port, token)
            self._tokens[key] = action.tx_token
            self._token_order.append(key)
            # a unicast send's stamp can be lost with its peer (a neighbour that failed after the
            # gate's last look): counted by the token table, never a FAULT of the whole port
            if self.tx_timestamp_timeout_ns and unicast is None:
                sent = self.monotonic_ns()
                self._tx_deadlines.append((sent + self.tx_timestamp_timeout_ns, sent, action.port, token))
            # stamps that never came; a unicast server may have thousands of Syncs in flight per burst
            while len(self._token_order) > MAX_PENDING_TX_TOKENS:
                self._tokens.pop(self._token_order.popleft(), None)
        return None

    # ---- one-step sends with software stamps -----------------------------------------------------
    def _one_step_prepare(self, action: SendMessage, gap_ns: int) -> Any:
        """Before encoding: a one-step Sync carries the learned send latency in its correctionField
        (the fixed delay after the time is written, as a hardware one-step clock adds it). The
        originTimestamp / Pdelay_Resp turnaround are written after encoding (``_one_step_stamp``)."""
        msg = action.message
        if self.one_step_stamper is not None:
            return msg   # the dataplane's egress adds the whole delay after the clock read
        lat = self.one_step_latency.get((action.port, "Sync"))
        latency_ns = lat.estimate_ns(gap_ns) if lat is not None else 0
        if isinstance(msg, Sync) and latency_ns:
            hdr = dataclasses.replace(msg.header, correction_scaled_ns=msg.header.correction_scaled_ns + latency_ns * 65536)
            return dataclasses.replace(msg, header=hdr)
        return msg

    def _one_step_stamp(self, action: SendMessage, data: bytes, gap_ns: int) -> tuple[bytes, int]:
        """Read the clock as late as possible and patch the encoded message: Sync originTimestamp =
        the time read; Pdelay_Resp correctionField += (time read - request receipt) + the learned
        send latency. Returns the bytes to send and the PTP time written (matched to the kernel TX
        stamp later, ``_one_step_tx_timestamp``)."""
        buf = bytearray(data)
        stamper = self.one_step_stamper
        if stamper is not None:
            return self._one_step_stamp_dataplane(action, buf, stamper)
        if isinstance(action.message, Sync):
            now_ptp = self.clock.read_ns()
            buf[ORIGIN_TIMESTAMP_OFFSET:ORIGIN_TIMESTAMP_OFFSET + TIMESTAMP_LEN] = Timestamp.from_ns(max(0, now_ptp)).pack()
            return bytes(buf), now_ptp
        lat = self.one_step_latency.get((action.port, "PdelayResp"))
        latency_ns = lat.estimate_ns(gap_ns) if lat is not None else 0
        (correction,) = _CORRECTION.unpack_from(buf, CORRECTION_FIELD_OFFSET)
        now_ptp = self.clock.read_ns()
        if action.request_receipt_ns is not None:  # PdelayResp: turnaround + latency
            turnaround_ns = now_ptp - action.request_receipt_ns + latency_ns
            _CORRECTION.pack_into(buf, CORRECTION_FIELD_OFFSET, correction + turnaround_ns * 65536)
        return bytes(buf), now_ptp

    def _one_step_stamp_dataplane(self, action: SendMessage, buf: bytearray, stamper: OneStepStamper) -> tuple[bytes, int]:
        """As ``_one_step_stamp``, with the clock read at an instant the dataplane knows (its TAI):
        the message is recorded for its port's tc egress, which adds the time from then on. If the
        record cannot be written the message still leaves, with the time read (and no latency)."""
        system_ns, tai_ns = stamper.read()
        now_ptp = self.clock.from_system_ns(system_ns)
        if isinstance(action.message, Sync):
            buf[ORIGIN_TIMESTAMP_OFFSET:ORIGIN_TIMESTAMP_OFFSET + TIMESTAMP_LEN] = Timestamp.from_ns(max(0, now_ptp)).pack()
        elif action.request_receipt_ns is not None:  # PdelayResp: the turnaround up to the clock read
            (correction,) = _CORRECTION.unpack_from(buf, CORRECTION_FIELD_OFFSET)
            _CORRECTION.pack_into(buf, CORRECTION_FIELD_OFFSET, correction + (now_ptp - action.request_receipt_ns) * 65536)
        data = bytes(buf)
        try:
            stamper.stamp(action.port, data, tai_ns)
            self.counters.one_step_dataplane_stamps += 1
        except Exception as exc:  # noqa: BLE001 - a map write failed: this send goes without the egress stamp
            self.counters.one_step_dataplane_errors += 1
            if not self._stamper_logged:
                self._stamper_logged = True
                log.warning("%s: one-step dataplane stamp not recorded: %s (further failures only counted)",
                            self.port_name(action.port), exc)
        return data, now_ptp

    def _one_step_tx_timestamp(self, port: int, kind: str, written_ns: int, gap_ns: int, tx_system_ns: int) -> None:
        """The kernel's TX stamp of a one-step send: learn how long after the written time the
        message really left (the stamp in the clock's time scale minus the value written)."""
        self.counters.one_step_tx_timestamps += 1
        key = (port, kind)
        lat = self.one_step_latency.get(key)
        if lat is None:
            lat = self.one_step_latency[key] = OneStepLatency()
        if not lat.add(self.clock.from_system_ns(tx_system_ns) - written_ns, gap_ns):
            self.counters.one_step_latency_rejected += 1
        if key not in self._one_step_logged and lat.accepted >= ONE_STEP_LOG_AFTER:
            self._one_step_logged.add(key)
            log.info("%s: one-step send latency of %s (kernel TX stamp - clock read, medians of the last sends) %s; %s",
                     self.port_name(port), kind, lat.describe(),
                     "added to its correctionField" if self.one_step_stamper is None
                     else "not added: the dataplane's egress stamp adds each send's own")

    def _offset(self, sample: OffsetSample) -> None:
        """ptp4l's summary: one "master offset" line per sample when samples come no faster than
        summary_interval, else one "rms ... max ... freq ... delay ..." line per interval."""
        self.last_offset = sample
        now = self.monotonic_ns()
        s = self._summaries.get(sample.port)
        if s is None:
            self._summaries[sample.port] = _Summary(started_ns=now, last_ns=now)
            log.info("%s", sample)
            return
        gap_ns, s.last_ns = now - s.last_ns, now
        if not s.offsets and gap_ns * 1.1 >= self.summary_interval_ns:
            s.started_ns = now
            log.info("%s", sample)
            return
        s.offsets.append(sample.offset_ns)
        s.freqs.append(sample.freq_ppb)
        s.delays.append(sample.mean_path_delay_ns)
        if now - s.started_ns < self.summary_interval_ns:
            return
        if len(s.offsets) == 1:
            log.info("%s", sample)
        else:
            log.info("rms %4.0f max %4d freq %+6.0f +/- %3.0f delay %5.0f +/- %3.0f",
                     _rms(s.offsets), max(abs(o) for o in s.offsets), sum(s.freqs) / len(s.freqs), _sd(s.freqs),
                     sum(s.delays) / len(s.delays), _sd(s.delays))
        s.offsets, s.freqs, s.delays, s.started_ns = [], [], [], now
