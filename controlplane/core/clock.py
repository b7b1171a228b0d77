"""A PTP instance: ordinary clock, boundary clock (N ports) or transparent-clock control.

Events in, actions out (sans-IO):
    clock = Clock(cfg, clock_identity, ["eth0", "eth1"], rng=random.Random(1))
    actions = clock.start(now_ns)
    actions = clock.handle_message(port_number, msg, rx_ts_ns, now_ns, src=None)
    actions = clock.handle_tx_timestamp(tx_token, tx_ts_ns, now_ns)
    actions = clock.handle_timer(now_ns)            # when now_ns >= clock.next_deadline_ns()
    actions = clock.handle_fault(port_number, reason, now_ns)

Two time bases: ``now_ns`` is host monotonic time (timers only); ``rx_ts_ns``/``tx_ts_ns`` are the
local clock's PTP time (the disciplined clock the servo adjusts through AdjustClock actions).
Port numbers are 1-based in the order of ``port_names``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence

from controlplane.codec.enums import DelayMechanism, PortState, TimeSource
from controlplane.codec.messages import (
    Announce,
    DelayReq,
    DelayResp,
    FollowUp,
    Management,
    PdelayReq,
    PdelayResp,
    PdelayRespFollowUp,
    Signaling,
    Sync,
)
from controlplane.codec.tlv import PathTraceTlv
from controlplane.codec.types import ClockQuality, PortIdentity
from controlplane.core import bmca, management
from controlplane.core.actions import (
    Action,
    AdjustClock,
    Dest,
    Fault,
    OffsetSample,
    ParentChanged,
    ProgramDataplane,
    SendMessage,
    StateChanged,
)
from controlplane.core.config import ClockConfig, ClockType, DatasetComparison, DelayMechanismOption, PortConfig
from controlplane.core.datasets import CurrentDS, DefaultDS, ParentDS, TimePropertiesDS, TransparentClockDefaultDS
from controlplane.core.delay import GmRateRatioEstimator, PeerDelayExchange, correction_ns, e2e_mean_path_delay, offset_from_master, p2p_mean_link_delay
from controlplane.core.fsm import Event, transition
from controlplane.core.port import PendingSync, Port, TimerName, interval_ns
from controlplane.core.servo import ServoState, make_servo

__all__ = ["Clock", "CoreUsageError"]

_INACTIVE = (PortState.INITIALIZING, PortState.FAULTY, PortState.DISABLED)
_SLAVEISH = (PortState.SLAVE, PortState.UNCALIBRATED)
_TOKEN_TTL_NS = 10 * 1_000_000_000


class CoreUsageError(ValueError):
    """The caller misused the core API (unknown port number, ...): a bug on our side, not the peer's."""


class Clock:
    def __init__(
        self,
        cfg: ClockConfig,
        clock_identity: bytes,
        port_names: Sequence[str],
        *,
        rng: random.Random,
        comparator: bmca.Comparator | None = None,
        ptp_timescale: bool = True,
    ) -> None:
        """``ptp_timescale``: whether the local clock keeps the PTP timescale (TAI). A clock over
        CLOCK_REALTIME keeps UTC: pass False and, as ptp4l does for such a clock
        (``time_flags = utc_timescale ? 0 : PTP_TIMESCALE``), the clock announces the ARB timescale
        (ptpTimescale 0) as grandmaster, so a linuxptp slave does not subtract currentUtcOffset."""
        if len(clock_identity) != 8:
            raise CoreUsageError("clock_identity must be 8 octets")
        if not port_names:
            raise CoreUsageError("a clock needs at least one port")
        if cfg.clock_type is ClockType.OC and len(port_names) > 1:
            raise CoreUsageError(f"clock_type OC has exactly one port, got {len(port_names)} (use BC)")
        self.cfg = cfg
        self.rng = rng
        self.ptp_timescale = bool(ptp_timescale)
        self.clock_type = cfg.clock_type
        self.is_tc = cfg.clock_type in (ClockType.E2E_TC, ClockType.P2P_TC)
        self.comparator: bmca.Comparator = comparator or (
            bmca.compare_g8275 if cfg.dataset_comparison is DatasetComparison.G8275 else bmca.compare
        )
        quality = ClockQuality(cfg.clock_class, cfg.clock_accuracy, cfg.offset_scaled_log_variance)
        self.default_ds = DefaultDS(clock_identity=bytes(clock_identity), number_ports=len(port_names), clock_quality=quality,
                                    priority1=cfg.priority1, priority2=cfg.priority2, domain_number=cfg.domain_number,
                                    slave_only=cfg.slave_only, two_step_flag=cfg.two_step_flag, local_priority=cfg.local_priority)
        self.current_ds = CurrentDS()
        self.parent_ds = self._own_parent()
        self.time_properties_ds = self._own_time_properties()
        self.tc_default_ds = TransparentClockDefaultDS(
            clock_identity=bytes(clock_identity), number_ports=len(port_names),
            delay_mechanism=DelayMechanism.P2P if cfg.clock_type is ClockType.P2P_TC else DelayMechanism.E2E,
            primary_domain=cfg.domain_number)
        outlier = cfg.outlier_filter_threshold if cfg.outlier_filter else None
        self.ports: list[Port] = []
        for i, name in enumerate(port_names, start=1):
            pcfg = cfg.port(name)
            if cfg.clock_type is ClockType.P2P_TC and pcfg.delay_mechanism != "P2P":
                pcfg = dataclasses.replace(pcfg, delay_mechanism=DelayMechanismOption.P2P)
            self.ports.append(Port(i, name, bytes(clock_identity), pcfg, two_step=cfg.two_step_flag,
                                   domain_number=cfg.domain_number, outlier_threshold=outlier, rng=rng))
        self.servo = make_servo(cfg)
        self.freq_ppb = 0.0
        self.servo_state = ServoState.UNLOCKED
        self.last_sync_ingress_ns = 0
        # TC syntonization: rate ratio to the grandmaster from the Syncs passing through (per source)
        self.syntonize_tc = True
        self._tc_rate: dict[PortIdentity, GmRateRatioEstimator] = {}
        self._tc_pending: dict[PortIdentity, tuple[int, int, int]] = {}  # two-step Sync: source -> (seq, rx, c)
        self._tc_source: PortIdentity | None = None
        self._tc_programmed_ratio = 1.0
        self.path_trace: list[bytes] = []
        self.slave_port: int | None = None
        self._tokens: dict[int, tuple[int, tuple[object, ...]]] = {}
        self._next_token = 1
        self._servo_log_interval: int | None = None
        # hook for unicast negotiation (controlplane/core/unicast*.py): (clock, port, msg, now_ns, src) -> actions
        self.signaling_handler: Callable[..., list[Action]] | None = None
        self.started = False
        self.user_description = cfg.user_description

    # ------------------------------------------------------------------------------------------
    # public entry points
    # ------------------------------------------------------------------------------------------
    @property
    def clock_identity(self) -> bytes:
        return self.default_ds.clock_identity

    def port(self, port_number: int) -> Port:
        if not isinstance(port_number, int) or not 1 <= port_number <= len(self.ports):
            raise CoreUsageError(f"no port {port_number!r} (this clock has ports 1..{len(self.ports)})")
        return self.ports[port_number - 1]

    def start(self, now_ns: int) -> list[Action]:
        """Power up: every port INITIALIZING -> LISTENING (TC: also program the dataplane)."""
        if self.started:
            raise CoreUsageError("start() called twice")
        self.started = True
        out: list[Action] = []
        for p in self.ports:
            out += self._enter(p, PortState.INITIALIZING, PortState.INITIALIZING, now_ns)
        return out

    def next_deadline_ns(self) -> int | None:
        deadlines = [d for p in self.ports for d in p.timers.values()]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now_ns: int) -> list[Action]:
        out: list[Action] = []
        while True:
            due = [(d, p.number, name) for p in self.ports for name, d in p.timers.items() if d <= now_ns]
            if not due:
                break
            due.sort()
            _, pn, name = due[0]
            port = self.port(pn)
            deadline = port.timers.pop(name)
            out += self._on_timer(port, name, deadline, now_ns)
        self._prune_tokens(now_ns)
        return out

    def handle_message(self, port_number: int, msg: object, rx_ts_ns: int | None, now_ns: int, src: object = None) -> list[Action]:
        port = self.port(port_number)
        kind = type(msg).__name__
        port.count(port.rx_count, kind)
        if isinstance(msg, Management):
            return management.handle(self, port, msg, now_ns, src)
        if port.state in _INACTIVE:
            port.count(port.dropped, "inactive")
            return []
        hdr = msg.header  # type: ignore[attr-defined]
        if hdr.domain_number != self.default_ds.domain_number:
            port.count(port.dropped, "domain")
            return []
        if bytes(hdr.source_port_identity.clock_identity) == self.clock_identity:
            port.count(port.dropped, "own")
            return []
        if isinstance(msg, Signaling):
            return self.signaling_handler(self, port, msg, now_ns, src) if self.signaling_handler else []
        if isinstance(msg, (PdelayReq, PdelayResp, PdelayRespFollowUp)):
            if rx_ts_ns is None and not isinstance(msg, PdelayRespFollowUp):
                port.count(port.dropped, "no_timestamp")
                return []
            if isinstance(msg, PdelayReq):
                return self._on_pdelay_req(port, msg, rx_ts_ns, src)  # type: ignore[arg-type]
            if isinstance(msg, PdelayResp):
                return self._on_pdelay_resp(port, msg, rx_ts_ns, now_ns)  # type: ignore[arg-type]
            return self._on_pdelay_resp_fup(port, msg, now_ns)
        if self.is_tc:
            if self.syntonize_tc and isinstance(msg, (Sync, FollowUp)):
                return self._tc_syntonize(msg, rx_ts_ns)
            return []  # the dataplane forwards (and corrects) everything else
        if isinstance(msg, Announce):
            return self._on_announce(port, msg, now_ns)
        if isinstance(msg, Sync):
            if rx_ts_ns is None:
                port.count(port.dropped, "no_timestamp")
                return []
            return self._on_sync(port, msg, rx_ts_ns, now_ns)
        if isinstance(msg, FollowUp):
            return self._on_follow_up(port, msg, now_ns)
        if isinstance(msg, DelayReq):
            if rx_ts_ns is None:
                port.count(port.dropped, "no_timestamp")
                return []
            return self._on_delay_req(port, msg, rx_ts_ns, src)
        if isinstance(msg, DelayResp):
            return self._on_delay_resp(port, msg, now_ns)
        port.count(port.dropped, "unhandled")
        return []

    def handle_tx_timestamp(self, token: int, tx_ts_ns: int, now_ns: int) -> list[Action]:
        entry = self._tokens.pop(token, None)
        if entry is None:
            return []  # late or unknown: nothing waits for it any more
        _, (kind, pn, *rest) = entry
        port = self.port(pn)  # type: ignore[arg-type]
        if kind == "sync":
            (seq,) = rest
            if port.state is PortState.MASTER and self.default_ds.two_step_flag:
                return [self._send(port, port.build_follow_up(seq, tx_ts_ns), event=False)]  # type: ignore[arg-type]
            return []
        if kind == "delay_req":
            (seq,) = rest
            if port.slave.delay_req_seq == seq:
                port.slave.t3 = tx_ts_ns
                if port.slave.pending_resp is not None:
                    t4, c = port.slave.pending_resp
                    port.slave.pending_resp = None
                    return self._e2e_delay(port, t4, c)
            return []
        if kind == "pdelay_req":
            (seq,) = rest
            if port.pdelay is not None and port.pdelay.sequence_id == seq:
                port.pdelay.t1 = tx_ts_ns
                return self._maybe_complete_pdelay(port, now_ns)
            return []
        if kind == "pdelay_resp":
            req_header, dest = rest
            return [self._send(port, port.build_pdelay_resp_follow_up(req_header, tx_ts_ns), event=False, dest=dest)]  # type: ignore[arg-type]
        return []

    def handle_fault(self, port_number: int, reason: str, now_ns: int) -> list[Action]:
        port = self.port(port_number)
        out: list[Action] = [Fault(port.number, reason)]
        out += self._dispatch(port, Event.FAULT_DETECTED, now_ns, "FAULT_DETECTED")
        return out

    def set_port_enabled(self, port_number: int, enabled: bool, now_ns: int) -> list[Action]:
        port = self.port(port_number)
        ev = Event.DESIGNATED_ENABLED if enabled else Event.DESIGNATED_DISABLED
        return self._dispatch(port, ev, now_ns, ev.name)

    def set_priority(self, which: str, value: int, now_ns: int) -> list[Action]:
        """Management SET of priority1/priority2: update the default data set and re-run the BMCA."""
        if which not in ("priority1", "priority2") or not 0 <= value <= 255:
            raise CoreUsageError(f"bad priority {which}={value}")
        setattr(self.default_ds, which, value)
        if self.parent_ds.grandmaster_identity == self.clock_identity:
            self.parent_ds = self._own_parent()
        return self._run_bmca(now_ns)

    def reconfigure_port(self, port_number: int, cfg: PortConfig, now_ns: int) -> list[Action]:
        """Apply a new PortConfig live. Intervals, timeouts and delayAsymmetry take effect at the next
        timer; a changed delay_mechanism or network_transport restarts the port (INITIALIZE)."""
        port = self.port(port_number)
        old = port.cfg
        port.cfg = cfg
        ds = port.ds
        ds.log_announce_interval = cfg.log_announce_interval
        ds.log_sync_interval = cfg.log_sync_interval
        ds.log_min_delay_req_interval = cfg.log_min_delay_req_interval
        ds.log_min_pdelay_req_interval = cfg.log_min_pdelay_req_interval
        ds.announce_receipt_timeout = cfg.announce_receipt_timeout
        ds.delay_asymmetry_ns = cfg.delay_asymmetry
        ds.master_only = cfg.master_only
        if cfg.delay_mechanism != old.delay_mechanism or cfg.network_transport != old.network_transport:
            ds.delay_mechanism = DelayMechanism.P2P if cfg.delay_mechanism is DelayMechanismOption.P2P else DelayMechanism.E2E
            return self._dispatch(port, Event.INITIALIZE, now_ns, "INITIALIZE")
        out: list[Action] = []
        if self.is_tc:
            out.append(self._program_dataplane(port, enabled=port.state not in (PortState.FAULTY, PortState.DISABLED)))
        return out

    def set_port_slave_only(self, port_number: int, slave_only: bool, now_ns: int) -> list[Action]:
        """Make one port slave-only (or not) live: it then only ever becomes SLAVE or LISTENING.
        A port that is MASTER, PRE_MASTER or PASSIVE when it becomes slave-only restarts (INITIALIZE)."""
        port = self.port(port_number)
        was, port.slave_only = port.slave_only, bool(slave_only)
        if port.slave_only and not was and port.state in (PortState.MASTER, PortState.PRE_MASTER, PortState.PASSIVE):
            return self._dispatch(port, Event.INITIALIZE, now_ns, "INITIALIZE")
        return []

    def forget_foreign_masters(self, port_number: int, *, keep: PortIdentity | None = None) -> int:
        """Drop the foreign-master records of one port, except ``keep``'s (e.g. a unicast client that
        switched server: only the new server may be a candidate). Returns how many were dropped. The
        state decision sees it at the next BMCA run (``run_state_decision``)."""
        table = self.port(port_number).foreign
        dropped = [s for s in table.senders() if s != keep]
        for sender in dropped:
            table.forget(sender)
        return len(dropped)

    def run_state_decision(self, now_ns: int) -> list[Action]:
        """Run the BMCA and the state decision of every port now (9.2.6), not at the next Announce or
        announce-interval timer; returns the resulting actions (state changes, parent change)."""
        return self._run_bmca(now_ns)

    def _slave_only(self, port: Port) -> bool:
        return self.default_ds.slave_only or port.slave_only

    # ------------------------------------------------------------------------------------------
    # state machine plumbing
    # ------------------------------------------------------------------------------------------
    def _dispatch(self, port: Port, event: Event, now_ns: int, why: str) -> list[Action]:
        old = port.state
        new = transition(old, event, slave_only=self._slave_only(port))
        if new is old:
            return []
        port.ds.port_state = new
        out: list[Action] = [StateChanged(port.number, old, new, why)]
        out += self._enter(port, old, new, now_ns)
        return out

    def _enter(self, port: Port, old: PortState, new: PortState, now_ns: int) -> list[Action]:
        out: list[Action] = []
        T = TimerName
        if new is PortState.INITIALIZING:
            port.cancel(*list(port.timers))
            port.foreign.clear()
            port.ds.port_state = PortState.INITIALIZING
            return out + self._dispatch(port, Event.INIT_COMPLETE, now_ns, "INIT_COMPLETE")
        if old in _SLAVEISH and new not in _SLAVEISH:
            port.cancel(T.DELAY_REQ_TX, T.SYNC_RECEIPT)
            port.slave.pending_sync = None
            port.slave.delay_req_seq = None
            if self.slave_port == port.number:
                self.slave_port = None
                # holdover on the frequency estimate, not on the last output (whose proportional
                # term corrected the last offsets: held for seconds it becomes the time error)
                hold = None if self.cfg.free_running else self.servo.holdover_freq_ppb()
                if hold is not None and abs(hold - self.freq_ppb) > 0.5:
                    self.freq_ppb = hold
                    out.append(AdjustClock(freq_ppb=hold))
                self.servo.reset()
                self.servo_state = ServoState.UNLOCKED
        if new in (PortState.FAULTY, PortState.DISABLED):
            port.cancel(*list(port.timers))
            port.foreign.clear()
            port.pdelay = None
            port.peer_mean_link_delay_ns = None
            port.rate_ratio.reset()
            if new is PortState.FAULTY:
                port.arm(T.FAULT_RESET, now_ns + interval_ns(port.cfg.fault_reset_interval))
            if self.is_tc:
                out.append(self._program_dataplane(port, enabled=False))
            return out
        if self.is_tc:
            # TC ports stay LISTENING: the TC does not synchronise itself; it measures peer delay
            if port.p2p and T.PDELAY_REQ_TX not in port.timers:
                port.arm(T.PDELAY_REQ_TX, now_ns)
            out.append(self._program_dataplane(port, enabled=True))
            return out
        if port.p2p and T.PDELAY_REQ_TX not in port.timers:
            port.arm(T.PDELAY_REQ_TX, now_ns)
        if new is PortState.MASTER:
            port.cancel(T.ANNOUNCE_RECEIPT, T.QUALIFICATION)
            port.arm(T.ANNOUNCE_TX, now_ns)
            port.arm(T.SYNC_TX, now_ns)
        else:
            port.cancel(T.ANNOUNCE_TX, T.SYNC_TX)
        if new is PortState.PRE_MASTER:
            port.cancel(T.ANNOUNCE_RECEIPT)
            n = self.current_ds.steps_removed + 1
            port.arm(T.QUALIFICATION, now_ns + n * interval_ns(port.ds.log_announce_interval))
        if new in (PortState.LISTENING, PortState.PASSIVE, PortState.UNCALIBRATED, PortState.SLAVE):
            if new not in _SLAVEISH or old not in _SLAVEISH:
                self._rearm_announce_receipt(port, now_ns)
        if new is PortState.UNCALIBRATED and old is not PortState.UNCALIBRATED:
            # ptp4l flush_last_sync() / flush_delay_req(): nothing measured before this point pairs
            # with what the (new) master sends next
            port.cancel(T.SYNC_RECEIPT)  # armed again by the first Sync from the new parent
            sm = port.slave
            sm.pending_sync = sm.pending_fup = sm.last_sync = None
            sm.delay_req_seq = sm.t3 = sm.pending_resp = None
        if new in _SLAVEISH and not port.p2p and T.DELAY_REQ_TX not in port.timers:
            port.arm(T.DELAY_REQ_TX, now_ns + port.delay_req_wait_ns())
        return out

    def _rearm_announce_receipt(self, port: Port, now_ns: int) -> None:
        port.arm(TimerName.ANNOUNCE_RECEIPT, now_ns + port.announce_receipt_timeout_ns(self.cfg.announce_receipt_randomization))

    def _on_timer(self, port: Port, name: str, deadline: int, now_ns: int) -> list[Action]:
        T = TimerName
        if name == T.ANNOUNCE_TX:
            if port.state is not PortState.MASTER:
                return []
            port.arm(T.ANNOUNCE_TX, _next(deadline, now_ns, interval_ns(port.ds.log_announce_interval)))
            if port.cfg.inhibit_announce:
                return []
            msg = port.build_announce(self, self.cfg.path_trace_enabled)
            return [self._send(port, msg, event=False)]
        if name == T.SYNC_TX:
            if port.state is not PortState.MASTER:
                return []
            port.arm(T.SYNC_TX, _next(deadline, now_ns, interval_ns(port.ds.log_sync_interval)))
            sync = port.build_sync()
            if self.default_ds.two_step_flag:
                return [self._send(port, sync, event=True, token_info=("sync", port.number, sync.header.sequence_id))]
            return [SendMessage(port.number, sync, True, Dest.PRIMARY, None, one_step=True)]
        if name == T.DELAY_REQ_TX:
            if port.state not in _SLAVEISH or port.p2p:
                return []
            port.arm(T.DELAY_REQ_TX, now_ns + port.delay_req_wait_ns())
            req = port.build_delay_req()
            port.slave.delay_req_seq = req.header.sequence_id
            port.slave.t3 = None
            port.slave.pending_resp = None
            return [self._send(port, req, event=True, token_info=("delay_req", port.number, req.header.sequence_id))]
        if name == T.PDELAY_REQ_TX:
            if port.state in _INACTIVE and not (self.is_tc and port.state is PortState.LISTENING):
                return []
            port.arm(T.PDELAY_REQ_TX, _next(deadline, now_ns, interval_ns(port.ds.log_min_pdelay_req_interval)))
            if port.pdelay is not None and not port.pdelay.complete():
                port.pdelay_lost += 1
            req = port.build_pdelay_req()
            port.pdelay = PeerDelayExchange(sequence_id=req.header.sequence_id)
            return [self._send(port, req, event=True, dest=Dest.PDELAY,
                               token_info=("pdelay_req", port.number, req.header.sequence_id))]
        if name == T.ANNOUNCE_RECEIPT:
            if port.state not in (PortState.LISTENING, PortState.PASSIVE, PortState.UNCALIBRATED, PortState.SLAVE):
                return []
            best = port.foreign.best(self.comparator)
            if port.state in _SLAVEISH:
                port.foreign.clear()
            elif best is not None:
                port.foreign.clear()
            out = self._dispatch(port, Event.ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES, now_ns, "ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES")
            if T.ANNOUNCE_RECEIPT not in port.timers and port.state in (PortState.LISTENING, PortState.PASSIVE):
                self._rearm_announce_receipt(port, now_ns)
            return out + self._run_bmca(now_ns)
        if name == T.SYNC_RECEIPT:
            # ptp4l: a sync receipt timeout is an announce receipt timeout that also forgets the
            # parent's foreign-master record, so the BMCA cannot pick the silent master again at once
            if port.state not in _SLAVEISH:
                return []
            port.foreign.forget(self.parent_ds.parent_port_identity)
            out = self._dispatch(port, Event.ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES, now_ns, "SYNC_RECEIPT_TIMEOUT_EXPIRES")
            if T.ANNOUNCE_RECEIPT not in port.timers and port.state in (PortState.LISTENING, PortState.PASSIVE):
                self._rearm_announce_receipt(port, now_ns)
            return out + self._run_bmca(now_ns)
        if name == T.QUALIFICATION:
            return self._dispatch(port, Event.QUALIFICATION_TIMEOUT_EXPIRES, now_ns, "QUALIFICATION_TIMEOUT_EXPIRES")
        if name == T.FAULT_RESET:
            return self._dispatch(port, Event.FAULT_CLEARED, now_ns, "FAULT_CLEARED")
        return []

    # ------------------------------------------------------------------------------------------
    # BMCA and data set updates
    # ------------------------------------------------------------------------------------------
    def _d0(self) -> bmca.ComparisonDataset:
        d = self.default_ds
        return bmca.dataset_of_default(d.clock_identity, d.clock_quality, d.priority1, d.priority2, d.local_priority)

    def _run_bmca(self, now_ns: int) -> list[Action]:
        if self.is_tc:
            return []
        erbest: dict[int, tuple[bmca.ComparisonDataset, object] | None] = {}
        for p in self.ports:
            if p.state in _INACTIVE:
                continue
            p.foreign.prune(now_ns, p.ds.log_announce_interval)
            erbest[p.number] = p.foreign.best(self.comparator)
        candidates = [e for e in erbest.values() if e is not None]
        ebest = None
        for e in candidates:
            if ebest is None or self.comparator(e[0], ebest[0]).a_better:
                ebest = e
        d0 = self._d0()
        decisions: dict[int, bmca.Decision] = {}
        for pn, er in erbest.items():
            p = self.port(pn)
            decisions[pn] = bmca.state_decision(
                d0, self.default_ds.clock_quality.clock_class, er[0] if er else None, ebest[0] if ebest else None,
                p.state, slave_only=self._slave_only(p), master_only=p.ds.master_only, comparator=self.comparator)
        out: list[Action] = []
        slave_pn = next((pn for pn, d in decisions.items() if d.code == "S1"), None)
        parent_changed = False
        if slave_pn is not None and ebest is not None:
            parent_changed = self._update_s1(ebest[0], ebest[1])
            if parent_changed:
                out.append(ParentChanged(self.parent_ds.parent_port_identity, self.parent_ds.grandmaster_identity,
                                         self.current_ds.steps_removed))
        elif any(d.code in ("M1", "M2") for d in decisions.values()):
            if self.parent_ds.grandmaster_identity != self.clock_identity:
                self._update_m1_m2()
                out.append(ParentChanged(self.parent_ds.parent_port_identity, self.clock_identity, 0))
                parent_changed = True
        for pn, d in decisions.items():
            p = self.port(pn)
            if d.code == "LISTENING":
                if self._slave_only(p) and p.state is not PortState.LISTENING:
                    out += self._dispatch(p, Event.RS_PASSIVE, now_ns, "RS_PASSIVE")  # slave-only table: -> LISTENING
                continue
            if d.code == "S1":
                if p.state is PortState.SLAVE and (parent_changed or self.slave_port != pn):
                    out += self._dispatch(p, Event.MASTER_CLOCK_CHANGED, now_ns, "RS_SLAVE")
                else:
                    out += self._dispatch(p, Event.RS_SLAVE, now_ns, "RS_SLAVE")
                if parent_changed or self.slave_port != pn:
                    self.servo.reset()
                    self.servo_state = ServoState.UNLOCKED
                    p.slave.pending_sync = None
                    # a new parent gets a full announce receipt timeout from now (ptp4l re-arms it on
                    # UNCALIBRATED); the running one was armed by the old parent's last Announce
                    self._rearm_announce_receipt(p, now_ns)
                self.slave_port = pn
                continue
            ev = Event[d.event_name]
            out += self._dispatch(p, ev, now_ns, ev.name)
        return out

    def _own_parent(self) -> ParentDS:
        d = self.default_ds
        return ParentDS(parent_port_identity=PortIdentity(d.clock_identity, 0), grandmaster_identity=d.clock_identity,
                        grandmaster_clock_quality=d.clock_quality, grandmaster_priority1=d.priority1,
                        grandmaster_priority2=d.priority2)

    def _own_time_properties(self) -> TimePropertiesDS:
        ts = self.cfg.time_source
        return TimePropertiesDS(current_utc_offset=self.cfg.utc_offset, current_utc_offset_valid=False, ptp_timescale=self.ptp_timescale,
                                time_source=TimeSource(ts) if ts in TimeSource._value2member_map_ else ts)

    def _update_m1_m2(self) -> None:
        self.current_ds = CurrentDS()
        self.parent_ds = self._own_parent()
        self.time_properties_ds = self._own_time_properties()
        self.path_trace = []

    def _update_s1(self, ds: bmca.ComparisonDataset, msg: object) -> bool:
        """Data sets after S1 (9.3.5 Table 30); returns True when the parent port changed."""
        ann: Announce = msg  # type: ignore[assignment]
        changed = self.parent_ds.parent_port_identity != ds.sender or self.parent_ds.grandmaster_identity != ds.grandmaster_identity
        self.current_ds.steps_removed = ds.steps_removed + 1
        self.parent_ds = ParentDS(parent_port_identity=ds.sender, grandmaster_identity=bytes(ds.grandmaster_identity),
                                  grandmaster_clock_quality=ds.grandmaster_clock_quality,
                                  grandmaster_priority1=ds.grandmaster_priority1, grandmaster_priority2=ds.grandmaster_priority2)
        h = ann.header
        self.time_properties_ds = TimePropertiesDS(
            current_utc_offset=ann.current_utc_offset, current_utc_offset_valid=h.current_utc_offset_valid,
            leap59=h.leap59, leap61=h.leap61, time_traceable=h.time_traceable, frequency_traceable=h.frequency_traceable,
            ptp_timescale=h.ptp_timescale, time_source=ann.time_source)
        trace = next((t for t in ann.tlvs if isinstance(t, PathTraceTlv)), None)
        self.path_trace = list(trace.path_sequence) if trace is not None else [bytes(ds.sender.clock_identity)]
        return changed

    # ------------------------------------------------------------------------------------------
    # message handlers
    # ------------------------------------------------------------------------------------------
    def _on_announce(self, port: Port, msg: Announce, now_ns: int) -> list[Action]:
        if self.cfg.path_trace_enabled:
            trace = next((t for t in msg.tlvs if isinstance(t, PathTraceTlv)), None)
            if trace is not None and self.clock_identity in (bytes(c) for c in trace.path_sequence):
                port.count(port.dropped, "path_trace_loop")
                return []
        sender = msg.header.source_port_identity
        changed = port.foreign.add(msg, now_ns, port.ds.log_announce_interval)
        if port.state in _SLAVEISH:
            if sender == self.parent_ds.parent_port_identity:
                self._rearm_announce_receipt(port, now_ns)
        elif port.state in (PortState.LISTENING, PortState.PASSIVE):
            self._rearm_announce_receipt(port, now_ns)
        if changed:
            return self._run_bmca(now_ns)
        return []

    def _is_from_parent(self, port: Port, msg: object) -> bool:
        return (self.slave_port == port.number and port.state in _SLAVEISH
                and msg.header.source_port_identity == self.parent_ds.parent_port_identity)  # type: ignore[attr-defined]

    def _on_sync(self, port: Port, msg: Sync, rx_ts_ns: int, now_ns: int) -> list[Action]:
        if not self._is_from_parent(port, msg):
            return []
        h = msg.header
        c = correction_ns(h.correction_scaled_ns)
        if h.two_step:
            port.slave.pending_sync = PendingSync(h.sequence_id, rx_ts_ns, c, h.log_message_interval, h.source_port_identity)
            fup = port.slave.pending_fup
            if fup is not None and fup[0] == h.sequence_id:
                port.slave.pending_fup = None
                port.slave.pending_sync = None
                return self._synchronize(port, fup[1], rx_ts_ns, c + fup[2], h.log_message_interval, now_ns)
            return []
        return self._synchronize(port, msg.origin_timestamp.to_ns(), rx_ts_ns, c, h.log_message_interval, now_ns)

    def _on_follow_up(self, port: Port, msg: FollowUp, now_ns: int) -> list[Action]:
        if not self._is_from_parent(port, msg):
            return []
        h = msg.header
        t1 = msg.precise_origin_timestamp.to_ns()
        c = correction_ns(h.correction_scaled_ns)
        ps = port.slave.pending_sync
        if ps is None or ps.sequence_id != h.sequence_id:
            port.slave.pending_fup = (h.sequence_id, t1, c)  # may precede its Sync (reordering)
            return []
        port.slave.pending_sync = None
        return self._synchronize(port, t1, ps.t2, ps.c_sync_ns + c, ps.log_interval, now_ns)

    def _synchronize(self, port: Port, t1: int, t2: int, c_ms_ns: int, log_interval: int, now_ns: int) -> list[Action]:
        # 11.6: delayAsymmetry is added to the Sync's correction at ingress (and subtracted from
        # the Delay_Req's at egress, see Port.build_delay_req), so meanPathDelay stays symmetric
        c_ms_ns += port.ds.delay_asymmetry_ns
        port.slave.last_sync = (t1, t2, c_ms_ns)
        li = log_interval if -10 <= log_interval <= 10 else port.ds.log_sync_interval
        if port.cfg.sync_receipt_timeout:
            # syncReceiptTimeout sync intervals without a complete Sync from the parent -> re-select
            port.arm(TimerName.SYNC_RECEIPT, now_ns + port.cfg.sync_receipt_timeout * interval_ns(li))
        mpd = port.peer_mean_link_delay_ns if port.p2p else port.slave.mean_path_delay_ns
        if mpd is None:
            return []
        offset = offset_from_master(t1, t2, c_ms_ns, mpd)
        self.current_ds.offset_from_master_ns = offset
        self.last_sync_ingress_ns = t2  # TIME_STATUS_NP ingress_time (ptp4l c->ingress_ts)
        self.current_ds.mean_path_delay_ns = mpd
        if li != self._servo_log_interval:
            self.servo.sync_interval(2.0**li)
            self._servo_log_interval = li
        out: list[Action] = []
        if self.cfg.free_running:
            out.append(OffsetSample(port.number, offset, mpd, self.freq_ppb, int(ServoState.UNLOCKED)))
            if port.state is PortState.UNCALIBRATED:
                out += self._dispatch(port, Event.MASTER_CLOCK_SELECTED, now_ns, "MASTER_CLOCK_SELECTED")
            return out
        res = self.servo.sample(offset, t2)
        self.servo_state = res.state
        if res.state is ServoState.UNLOCKED:
            out.append(OffsetSample(port.number, offset, mpd, self.freq_ppb, int(res.state)))
            if port.state is PortState.SLAVE:
                out += self._dispatch(port, Event.SYNCHRONIZATION_FAULT, now_ns, "SYNCHRONIZATION_FAULT")
            return out
        self.freq_ppb = res.freq_ppb
        out.append(AdjustClock(freq_ppb=res.freq_ppb, step_ns=res.step_ns, offset_ns=offset))
        out.append(OffsetSample(port.number, offset, mpd, res.freq_ppb, int(res.state)))
        if res.state is ServoState.JUMP:
            # timestamps taken before the step are void: restart the path delay measurement pairing
            port.slave.pending_sync = None
            port.slave.pending_fup = None
            port.slave.delay_req_seq = None
            port.slave.last_sync = None
            if port.state is PortState.SLAVE:
                out += self._dispatch(port, Event.SYNCHRONIZATION_FAULT, now_ns, "SYNCHRONIZATION_FAULT")
        elif port.state is PortState.UNCALIBRATED:
            out += self._dispatch(port, Event.MASTER_CLOCK_SELECTED, now_ns, "MASTER_CLOCK_SELECTED")
        return out

    def _on_delay_req(self, port: Port, msg: DelayReq, rx_ts_ns: int, src: object) -> list[Action]:
        if port.state is not PortState.MASTER or port.p2p:
            return []
        dest = src if (msg.header.unicast and src is not None) else Dest.PRIMARY
        return [self._send(port, port.build_delay_resp(msg, rx_ts_ns), event=False, dest=dest)]

    def _on_delay_resp(self, port: Port, msg: DelayResp, now_ns: int) -> list[Action]:
        if not self._is_from_parent(port, msg) or msg.requesting_port_identity != port.identity:
            return []
        sm = port.slave
        if sm.delay_req_seq != msg.header.sequence_id:
            return []
        if -10 <= msg.header.log_message_interval <= 10:
            port.ds.log_min_delay_req_interval = msg.header.log_message_interval
        t4, c = msg.receive_timestamp.to_ns(), correction_ns(msg.header.correction_scaled_ns)
        if sm.t3 is None:
            sm.pending_resp = (t4, c)  # the TX timestamp of our Delay_Req has not come back yet
            return []
        return self._e2e_delay(port, t4, c)

    def _e2e_delay(self, port: Port, t4: int, c_sm_ns: int) -> list[Action]:
        sm = port.slave
        last = sm.last_sync
        sm.delay_req_seq = None
        if sm.t3 is None or last is None:
            return []
        t1, t2, c_ms = last
        raw = e2e_mean_path_delay(t1, t2, sm.t3, t4, c_ms, c_sm_ns)
        if raw < 0 and sm.mean_path_delay_ns is not None:
            port.count(port.dropped, "negative_delay")
            return []
        if port.delay_outliers is not None and not port.delay_outliers.accept(raw):
            port.count(port.dropped, "delay_outlier")
            return []
        sm.mean_path_delay_ns = sm.filter.add(raw)
        return []

    def _on_pdelay_req(self, port: Port, msg: PdelayReq, rx_ts_ns: int, src: object) -> list[Action]:
        if not port.p2p:
            return []
        dest = src if (msg.header.unicast and src is not None) else Dest.PDELAY
        one_step = not self.default_ds.two_step_flag
        resp = port.build_pdelay_resp(msg, rx_ts_ns, one_step)
        if one_step:
            return [SendMessage(port.number, resp, True, dest, None, one_step=True, request_receipt_ns=rx_ts_ns)]
        return [self._send(port, resp, event=True, dest=dest, token_info=("pdelay_resp", port.number, msg.header, dest))]

    def _on_pdelay_resp(self, port: Port, msg: PdelayResp, rx_ts_ns: int, now_ns: int) -> list[Action]:
        ex = port.pdelay
        if ex is None or msg.header.sequence_id != ex.sequence_id or msg.requesting_port_identity != port.identity:
            return []
        if ex.got_resp:
            port.count(port.dropped, "multiple_pdelay_resp")
            return []
        ex.t4 = rx_ts_ns
        ex.t2 = msg.request_receipt_timestamp.to_ns()
        ex.c_resp_ns = correction_ns(msg.header.correction_scaled_ns)
        ex.two_step = msg.header.two_step
        ex.responder = msg.header.source_port_identity
        ex.got_resp = True
        return self._maybe_complete_pdelay(port, now_ns)

    def _on_pdelay_resp_fup(self, port: Port, msg: PdelayRespFollowUp, now_ns: int) -> list[Action]:
        ex = port.pdelay
        if (ex is None or msg.header.sequence_id != ex.sequence_id or msg.requesting_port_identity != port.identity
                or (ex.responder is not None and msg.header.source_port_identity != ex.responder)):
            return []
        ex.t3 = msg.response_origin_timestamp.to_ns()
        ex.c_fup_ns = correction_ns(msg.header.correction_scaled_ns)
        ex.got_fup = True
        return self._maybe_complete_pdelay(port, now_ns)

    def _maybe_complete_pdelay(self, port: Port, now_ns: int) -> list[Action]:
        ex = port.pdelay
        if ex is None or not ex.complete():
            return []
        port.pdelay = None
        assert ex.t1 is not None and ex.t4 is not None
        if ex.two_step:
            ratio = port.rate_ratio.add(ex.t3c(), ex.t4)
            t2, t3 = ex.t2_or_zero(), ex.t3 or 0
        else:
            ratio = port.rate_ratio.ratio
            t2 = t3 = 0
        raw = p2p_mean_link_delay(ex.t1, t2, t3, ex.t4, ex.c_resp_ns, ex.c_fup_ns, ratio)
        if port.delay_outliers is not None and not port.delay_outliers.accept(raw):
            port.count(port.dropped, "delay_outlier")
            return []
        port.peer_mean_link_delay_ns = port.peer_delay_filter.add(raw)
        port.ds.peer_mean_path_delay_ns = port.peer_mean_link_delay_ns
        if self.is_tc:
            return [self._program_dataplane(port, enabled=True)]
        return []

    # ------------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------------
    def tc_rate_ratio(self, port: Port) -> float:
        """The residence-time rate ratio the dataplane applies for frames entering ``port``: the
        grandmaster's rate over ours when the Syncs gave one (syntonized TC), else the port's
        neighborRateRatio (P2P; 1.0 for an E2E port)."""
        if self._tc_source is not None:
            est = self._tc_rate.get(self._tc_source)
            if est is not None and est.valid:
                return est.ratio
        return port.rate_ratio.ratio

    def _program_dataplane(self, port: Port, enabled: bool) -> ProgramDataplane:
        return ProgramDataplane(port.number, port.peer_mean_link_delay_ns or 0, port.ds.delay_asymmetry_ns,
                                self.tc_rate_ratio(port), enabled)

    def _tc_syntonize(self, msg: object, rx_ts_ns: int | None) -> list[Action]:
        """A Sync / Follow_Up seen by the TC: one (local rx, grandmaster time) point for the master
        that sent it; when the ratio of the source we follow moves by more than 0.1 ppm, program
        every active port with it. The source followed is the first one heard, until it has been
        silent for 10 s of local time."""
        h = msg.header  # type: ignore[attr-defined]
        src = h.source_port_identity
        c = correction_ns(h.correction_scaled_ns)
        point: tuple[int, int] | None = None
        if isinstance(msg, Sync):
            if rx_ts_ns is None:
                return []
            if h.two_step:
                self._tc_pending[src] = (h.sequence_id, rx_ts_ns, c)
                if len(self._tc_pending) > 64:
                    self._tc_pending.pop(next(iter(self._tc_pending)))
            else:
                point = (rx_ts_ns, msg.origin_timestamp.to_ns() + c)
        else:
            pend = self._tc_pending.get(src)
            if pend is not None and pend[0] == h.sequence_id:
                del self._tc_pending[src]
                point = (pend[1], msg.precise_origin_timestamp.to_ns() + pend[2] + c)  # type: ignore[attr-defined]
        if point is None:
            return []
        est = self._tc_rate.get(src)
        if est is None:
            if len(self._tc_rate) >= 16:
                oldest = min(self._tc_rate, key=lambda k: self._tc_rate[k].last_local_ns or 0)
                del self._tc_rate[oldest]
            est = self._tc_rate[src] = GmRateRatioEstimator()
        est.add(*point)
        cur = self._tc_rate.get(self._tc_source) if self._tc_source is not None else None
        if cur is None or cur.last_local_ns is None or point[0] - cur.last_local_ns > 10 * 1_000_000_000:
            self._tc_source = src
        if src != self._tc_source or not est.valid or abs(est.ratio - self._tc_programmed_ratio) <= 1e-7:
            return []
        self._tc_programmed_ratio = est.ratio
        return [self._program_dataplane(p, enabled=True) for p in self.ports if p.state not in (PortState.FAULTY, PortState.DISABLED)]

    def _send(self, port: Port, msg: object, *, event: bool, dest: object = Dest.PRIMARY,
              token_info: tuple[object, ...] | None = None) -> SendMessage:
        token = None
        if token_info is not None:
            token = self._next_token
            self._next_token += 1
            self._tokens[token] = (0, token_info)
        port.count(port.tx_count, type(msg).__name__)
        return SendMessage(port.number, msg, event, dest, token)

    def _prune_tokens(self, now_ns: int) -> None:
        # tokens carry no time; cap the table instead (a runtime that never returns stamps must not leak)
        if len(self._tokens) > 1024:
            for t in sorted(self._tokens)[: len(self._tokens) - 1024]:
                del self._tokens[t]


def _next(deadline: int, now_ns: int, period_ns: int) -> int:
    nxt = deadline + period_ns
    return nxt if nxt > now_ns else now_ns + period_ns
