"""Per-port protocol state: port data set, foreign masters, timers, sequenceIds, pending exchanges,
and builders for the messages a port sends. The decisions that need the whole clock (BMCA, servo)
live in clock.py; this module holds what belongs to one port.

Timers are named deadlines in host monotonic ns (``now_ns``). Timestamps of messages are PTP time
of the local clock (``rx_ts_ns`` / ``tx_ts_ns``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from controlplane.codec.enums import DelayMechanism, MessageType, PortState
from controlplane.codec.header import Header
from controlplane.codec.messages import (
    Announce,
    DelayReq,
    DelayResp,
    FollowUp,
    PdelayReq,
    PdelayResp,
    PdelayRespFollowUp,
    Sync,
)
from controlplane.codec.tlv import PathTraceTlv
from controlplane.codec.types import PortIdentity, Timestamp
from controlplane.core.bmca import ForeignMasterTable
from controlplane.core.config import DelayMechanismOption, PortConfig
from controlplane.core.datasets import PortDS
from controlplane.core.delay import MovingMedian, OutlierFilter, PeerDelayExchange, RateRatioEstimator

__all__ = ["Port", "TimerName", "interval_ns"]

NS_PER_S = 1_000_000_000


def interval_ns(log_interval: int) -> int:
    return int(round((2.0**log_interval) * NS_PER_S))


class TimerName:
    ANNOUNCE_TX = "announce_tx"
    SYNC_TX = "sync_tx"
    DELAY_REQ_TX = "delay_req_tx"
    PDELAY_REQ_TX = "pdelay_req_tx"
    ANNOUNCE_RECEIPT = "announce_receipt"
    QUALIFICATION = "qualification"
    FAULT_RESET = "fault_reset"
    SYNC_RECEIPT = "sync_receipt"  # syncReceiptTimeout (ptp4l FD_SYNC_RX_TIMER)


def _ts(ns: int) -> Timestamp:
    return Timestamp.from_ns(max(0, ns))


@dataclass
class PendingSync:
    """A Sync received from the parent, waiting for its Follow_Up (two-step)."""

    sequence_id: int
    t2: int
    c_sync_ns: int
    log_interval: int
    source: PortIdentity


@dataclass
class SlaveMeasure:
    """Slave-side E2E state: last t1/t2 pair, outstanding Delay_Req, filters."""

    pending_sync: PendingSync | None = None
    pending_fup: tuple[int, int, int] | None = None  # Follow_Up that came before its Sync: (seq, t1, c)
    last_sync: tuple[int, int, int] | None = None  # (t1, t2, c_ms_ns) of the latest Sync
    delay_req_seq: int | None = None
    t3: int | None = None
    pending_resp: tuple[int, int] | None = None  # Delay_Resp (t4, c_ns) that beat its TX timestamp
    mean_path_delay_ns: int | None = None
    filter: MovingMedian = field(default_factory=MovingMedian)


class Port:
    def __init__(self, port_number: int, name: str, clock_identity: bytes, cfg: PortConfig, *, two_step: bool,
                 domain_number: int, outlier_threshold: float | None, rng: random.Random) -> None:
        self.number = port_number
        self.name = name
        self.cfg = cfg
        self.identity = PortIdentity(clock_identity, port_number)
        self.two_step = two_step
        self.domain_number = domain_number
        self.rng = rng
        mech = DelayMechanism.P2P if cfg.delay_mechanism is DelayMechanismOption.P2P else DelayMechanism.E2E
        self.ds = PortDS(
            port_identity=self.identity,
            log_min_delay_req_interval=cfg.log_min_delay_req_interval,
            log_announce_interval=cfg.log_announce_interval,
            announce_receipt_timeout=cfg.announce_receipt_timeout,
            log_sync_interval=cfg.log_sync_interval,
            delay_mechanism=mech,
            log_min_pdelay_req_interval=cfg.log_min_pdelay_req_interval,
            delay_asymmetry_ns=cfg.delay_asymmetry,
            master_only=cfg.master_only,
        )
        self.foreign = ForeignMasterTable(clock_identity, self.identity)
        self.slave_only = False  # per-port slave-only (control API); the clock's slaveOnly covers every port
        self.timers: dict[str, int] = {}
        # sequenceIds (7.3.7): one counter per message type this port originates
        self.seq = {"announce": 0, "sync": 0, "delay_req": 0, "pdelay_req": 0}
        self.slave = SlaveMeasure(filter=MovingMedian(cfg.delay_filter_length))
        self.delay_outliers = OutlierFilter(outlier_threshold) if outlier_threshold else None
        # peer delay (requester)
        self.pdelay: PeerDelayExchange | None = None
        self.peer_delay_filter = MovingMedian(cfg.delay_filter_length)
        self.rate_ratio = RateRatioEstimator()
        self.peer_mean_link_delay_ns: int | None = None
        self.pdelay_lost = 0
        # counters (management / metrics)
        self.rx_count: dict[str, int] = {}
        self.tx_count: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    # -- properties --------------------------------------------------------------------------
    @property
    def state(self) -> PortState:
        return self.ds.port_state

    @property
    def p2p(self) -> bool:
        return self.ds.delay_mechanism is DelayMechanism.P2P

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def next_seq(self, kind: str) -> int:
        s = self.seq[kind]
        self.seq[kind] = (s + 1) & 0xFFFF
        return s

    # -- timers ------------------------------------------------------------------------------
    def arm(self, name: str, deadline_ns: int) -> None:
        self.timers[name] = deadline_ns

    def cancel(self, *names: str) -> None:
        for n in names:
            self.timers.pop(n, None)

    def announce_receipt_timeout_ns(self, randomize: bool) -> int:
        """announceReceiptTimeout intervals, plus a random fraction of one interval (9.2.6.12)."""
        one = interval_ns(self.ds.log_announce_interval)
        extra = int(self.rng.random() * one) if randomize else 0
        return self.ds.announce_receipt_timeout * one + extra

    def delay_req_wait_ns(self) -> int:
        """Random in [0, 2 x 2^logMinDelayReqInterval] (9.5.11.2, as ptp4l)."""
        return int(self.rng.uniform(0.0, 2.0) * interval_ns(self.ds.log_min_delay_req_interval))

    # -- message builders --------------------------------------------------------------------
    def header(self, message_type: MessageType, sequence_id: int, log_interval: int, **flags: object) -> Header:
        return Header(message_type=message_type, sequence_id=sequence_id, domain_number=self.domain_number, source_port_identity=self.identity,
                      log_message_interval=log_interval, transport_specific=self.cfg.transport_specific, **flags)  # type: ignore[arg-type]

    def build_announce(self, clock: object, path_trace: bool) -> Announce:
        c = clock  # Clock (typed loosely to avoid the import cycle)
        tp = c.time_properties_ds  # type: ignore[attr-defined]
        parent = c.parent_ds  # type: ignore[attr-defined]
        hdr = self.header(MessageType.ANNOUNCE, self.next_seq("announce"), self.ds.log_announce_interval,
                          leap61=tp.leap61, leap59=tp.leap59, current_utc_offset_valid=tp.current_utc_offset_valid,
                          ptp_timescale=tp.ptp_timescale, time_traceable=tp.time_traceable,
                          frequency_traceable=tp.frequency_traceable)
        tlvs: tuple[object, ...] = ()
        if path_trace:
            tlvs = (PathTraceTlv(tuple(c.path_trace) + (bytes(self.identity.clock_identity),)),)  # type: ignore[attr-defined]
        return Announce(
            header=hdr,
            origin_timestamp=Timestamp(),
            current_utc_offset=tp.current_utc_offset,
            grandmaster_priority1=parent.grandmaster_priority1,
            grandmaster_clock_quality=parent.grandmaster_clock_quality,
            grandmaster_priority2=parent.grandmaster_priority2,
            grandmaster_identity=parent.grandmaster_identity,
            steps_removed=c.current_ds.steps_removed,  # type: ignore[attr-defined]
            time_source=tp.time_source,
            tlvs=tlvs,  # type: ignore[arg-type]
        )

    def build_sync(self) -> Sync:
        return Sync(header=self.header(MessageType.SYNC, self.next_seq("sync"), self.ds.log_sync_interval, two_step=self.two_step))

    def build_follow_up(self, sync_seq: int, t1: int) -> FollowUp:
        return FollowUp(header=self.header(MessageType.FOLLOW_UP, sync_seq, self.ds.log_sync_interval), precise_origin_timestamp=_ts(t1))

    def build_delay_req(self) -> DelayReq:
        # correctionField = -delayAsymmetry (11.6 / as ptp4l), so the Delay_Resp carries it back
        return DelayReq(header=Header(message_type=MessageType.DELAY_REQ, sequence_id=self.next_seq("delay_req"), domain_number=self.domain_number,
                                      source_port_identity=self.identity, log_message_interval=0x7F,
                                      transport_specific=self.cfg.transport_specific,
                                      correction_scaled_ns=-self.ds.delay_asymmetry_ns * 65536))

    def build_delay_resp(self, req: DelayReq, t4: int) -> DelayResp:
        h = req.header
        return DelayResp(
            header=Header(message_type=MessageType.DELAY_RESP, sequence_id=h.sequence_id, domain_number=self.domain_number,
                          source_port_identity=self.identity, log_message_interval=self.ds.log_min_delay_req_interval, correction_scaled_ns=h.correction_scaled_ns,
                          transport_specific=self.cfg.transport_specific, unicast=h.unicast),
            receive_timestamp=_ts(t4),
            requesting_port_identity=h.source_port_identity,
        )

    def build_pdelay_req(self) -> PdelayReq:
        return PdelayReq(header=Header(message_type=MessageType.PDELAY_REQ, sequence_id=self.next_seq("pdelay_req"), domain_number=self.domain_number,
                                       source_port_identity=self.identity, log_message_interval=0x7F,
                                       transport_specific=self.cfg.transport_specific))

    def build_pdelay_resp(self, req: PdelayReq, t2: int, one_step: bool) -> PdelayResp:
        h = req.header
        # two-step: t2 in requestReceiptTimestamp; one-step: zero here, turnaround added to the
        # correctionField at transmission (SendMessage.one_step with request_receipt_ns = t2)
        return PdelayResp(
            header=Header(message_type=MessageType.PDELAY_RESP, sequence_id=h.sequence_id, domain_number=self.domain_number, source_port_identity=self.identity,
                          log_message_interval=0x7F, two_step=not one_step,
                          correction_scaled_ns=h.correction_scaled_ns if one_step else 0,
                          transport_specific=self.cfg.transport_specific),
            request_receipt_timestamp=Timestamp() if one_step else _ts(t2),
            requesting_port_identity=h.source_port_identity,
        )

    def build_pdelay_resp_follow_up(self, req_header: Header, t3: int) -> PdelayRespFollowUp:
        return PdelayRespFollowUp(
            header=Header(message_type=MessageType.PDELAY_RESP_FOLLOW_UP, sequence_id=req_header.sequence_id, domain_number=self.domain_number, source_port_identity=self.identity,
                          log_message_interval=0x7F, correction_scaled_ns=req_header.correction_scaled_ns,
                          transport_specific=self.cfg.transport_specific),
            response_origin_timestamp=_ts(t3),
            requesting_port_identity=req_header.source_port_identity,
        )
