"""Clock/port entry points driven by hand: sequenceIds, Follow_Up pairing, Delay_Resp, faults,
management, free running, misuse. (Whole networks are in tests/sim.)"""

from __future__ import annotations

import random

import pytest

from controlplane.codec import management as cm
from controlplane.codec import messages as m
from controlplane.codec.enums import ManagementAction, ManagementErrorId, ManagementId, PortState
from controlplane.codec.header import Header
from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS, PortIdentity, Timestamp
from controlplane.core.actions import AdjustClock, Fault, OffsetSample, SendMessage, StateChanged
from controlplane.core.clock import Clock, CoreUsageError
from controlplane.core.config import parse
from controlplane.core.delay import OutlierFilter, e2e_mean_path_delay, offset_from_master, p2p_mean_link_delay

S = 1_000_000_000
FAST = {"logSyncInterval": "-3", "logAnnounceInterval": "0", "logMinDelayReqInterval": "-3"}
GM_ID = bytes.fromhex("0200000000000001")
SL_ID = bytes.fromhex("0200000000000002")


def sends(actions, cls=None):
    return [a for a in actions if isinstance(a, SendMessage) and (cls is None or isinstance(a.message, cls))]


def run_master(now_ns: int = 0, **extra: str):
    gm = Clock(parse({"global": {**FAST, "priority1": "10", **extra}}), GM_ID, ["eth0"], rng=random.Random(1))
    out = gm.start(now_ns)
    out += gm.handle_timer(gm.next_deadline_ns())  # announce receipt timeout -> MASTER
    return gm, out


def test_master_sequence_ids_and_follow_up() -> None:
    gm, out = run_master()
    assert gm.port(1).state is PortState.MASTER
    t = gm.next_deadline_ns()
    syncs = []
    for k in range(3):
        acts = gm.handle_timer(t)
        syncs += sends(acts, m.Sync)
        t = gm.next_deadline_ns()
    seqs = [s.message.header.sequence_id for s in syncs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[1] == seqs[0] + 1
    s0 = syncs[0]
    assert s0.event and s0.tx_token is not None and s0.message.header.two_step
    fup = sends(gm.handle_tx_timestamp(s0.tx_token, 1_700_000_000_123_456_789, t), m.FollowUp)
    assert len(fup) == 1 and not fup[0].event
    assert fup[0].message.header.sequence_id == s0.message.header.sequence_id
    assert fup[0].message.precise_origin_timestamp == Timestamp(1_700_000_000, 123_456_789)
    assert gm.handle_tx_timestamp(s0.tx_token, 1, t) == []  # a token is used once
    # Announce: GM's own data, stepsRemoved 0
    ann = sends(out, m.Announce)[0].message
    assert ann.grandmaster_identity == GM_ID and ann.steps_removed == 0 and ann.grandmaster_priority1 == 10
    assert m.decode(m.encode(ann)) == m.decode(m.encode(ann))  # encodes


def test_master_answers_delay_req_with_its_sequence_and_correction() -> None:
    gm, _ = run_master()
    req = m.DelayReq(header=Header(sequence_id=77, source_port_identity=PortIdentity(SL_ID, 1), correction_scaled_ns=-5 * 65536))
    out = gm.handle_message(1, req, 1_700_000_000_000_000_500, 10)
    (resp,) = sends(out, m.DelayResp)
    r = resp.message
    assert r.header.sequence_id == 77 and r.requesting_port_identity == PortIdentity(SL_ID, 1)
    assert r.receive_timestamp.to_ns() == 1_700_000_000_000_000_500 and r.header.correction_scaled_ns == -5 * 65536
    # other domain: dropped
    other = m.DelayReq(header=Header(domain_number=3, source_port_identity=PortIdentity(SL_ID, 1)))
    assert gm.handle_message(1, other, 1, 10) == []


def announce_from(sender: bytes, seq: int, prio: int = 10, steps: int = 0) -> m.Announce:
    return m.Announce(header=Header(sequence_id=seq, source_port_identity=PortIdentity(sender, 1), log_message_interval=0),
                      grandmaster_priority1=prio, grandmaster_identity=sender, steps_removed=steps)


def make_slave(**extra: str) -> Clock:
    sl = Clock(parse({"global": {**FAST, "slaveOnly": "1", **extra}}), SL_ID, ["eth0"], rng=random.Random(2))
    sl.start(0)
    sl.handle_message(1, announce_from(GM_ID, 0), None, 0)
    out = sl.handle_message(1, announce_from(GM_ID, 1), None, S)
    assert any(isinstance(a, StateChanged) and a.new is PortState.UNCALIBRATED for a in out)
    assert sl.current_ds.steps_removed == 1 and sl.parent_ds.grandmaster_identity == GM_ID
    return sl


def exchange(sl: Clock, k: int, offset_ns: int, delay_ns: int, now_ns: int):
    """One Sync/Follow_Up + Delay_Req/Resp round with the slave ``offset_ns`` ahead, path ``delay_ns``."""
    t1 = 1_700_000_000 * S + k * S // 8
    t2 = t1 + delay_ns + offset_ns
    gm_pid = PortIdentity(GM_ID, 1)
    out = sl.handle_message(1, announce_from(GM_ID, 2 + k), None, now_ns) if k % 8 == 0 else []
    out += sl.handle_message(1, m.Sync(header=Header(sequence_id=k, source_port_identity=gm_pid, two_step=True, log_message_interval=-3)), t2, now_ns)
    out += sl.handle_message(1, m.FollowUp(header=Header(sequence_id=k, source_port_identity=gm_pid, log_message_interval=-3),
                                           precise_origin_timestamp=Timestamp.from_ns(t1)), None, now_ns)
    while (d := sl.next_deadline_ns()) is not None and d <= now_ns:
        out += sl.handle_timer(d)
    for a in sends(out, m.DelayReq):
        t3 = t2 + 1000
        t4 = t3 + delay_ns - offset_ns
        out += sl.handle_tx_timestamp(a.tx_token, t3, now_ns)
        out += sl.handle_message(1, m.DelayResp(header=Header(sequence_id=a.message.header.sequence_id, source_port_identity=gm_pid,
                                                              log_message_interval=-3),
                                                receive_timestamp=Timestamp.from_ns(t4), requesting_port_identity=a.message.header.source_port_identity),
                                 None, now_ns)
    return out


def test_slave_measures_offset_and_path_delay_free_running() -> None:
    sl = make_slave(free_running="1")
    samples = []
    for k in range(40):
        out = exchange(sl, k, offset_ns=12_345, delay_ns=3_000, now_ns=S + k * S // 8)
        assert not [a for a in out if isinstance(a, AdjustClock)], "free_running never adjusts"
        samples += [a for a in out if isinstance(a, OffsetSample)]
    assert samples, "no offsets"
    assert samples[-1].offset_ns == 12_345 and samples[-1].mean_path_delay_ns == 3_000
    assert sl.port(1).state is PortState.SLAVE


def test_slave_servo_steps_first_then_adjusts() -> None:
    sl = make_slave()
    adj = []
    for k in range(40):
        adj += [a for a in exchange(sl, k, offset_ns=500_000, delay_ns=3_000, now_ns=S + k * S // 8) if isinstance(a, AdjustClock)]
    assert adj and adj[0].step_ns == -500_000  # above first_step_threshold (20 us): step


def test_announce_receipt_timeout_slave_only_returns_to_listening() -> None:
    sl = make_slave()
    deadline = sl.next_deadline_ns()
    out = []
    t = deadline
    while sl.port(1).state is not PortState.LISTENING and t < 20 * S:
        out += sl.handle_timer(t)
        t = sl.next_deadline_ns()
    assert sl.port(1).state is PortState.LISTENING
    assert any(isinstance(a, StateChanged) and a.event == "ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES" for a in out)


def test_announce_steps_removed_255_ignored() -> None:
    sl = Clock(parse({"global": {**FAST, "slaveOnly": "1"}}), SL_ID, ["eth0"], rng=random.Random(2))
    sl.start(0)
    for k in range(4):
        sl.handle_message(1, announce_from(GM_ID, k, steps=255), None, k * S // 2)
    assert sl.port(1).state is PortState.LISTENING


def test_fault_and_reset() -> None:
    gm, _ = run_master()
    out = gm.handle_fault(1, "tx timestamp timeout", 5 * S)
    assert Fault(1, "tx timestamp timeout") in out and gm.port(1).state is PortState.FAULTY
    assert gm.next_deadline_ns() == 5 * S + 16 * S  # fault_reset_interval 4 -> 16 s
    out = gm.handle_timer(21 * S)
    assert gm.port(1).state in (PortState.LISTENING, PortState.MASTER)
    assert any(isinstance(a, StateChanged) and a.event == "FAULT_CLEARED" for a in out)


def test_misuse_raises_typed_error() -> None:
    gm, _ = run_master()
    with pytest.raises(CoreUsageError):
        gm.handle_message(2, announce_from(SL_ID, 0), None, 0)
    with pytest.raises(CoreUsageError):
        Clock(parse({}), GM_ID, ["a", "b"], rng=random.Random(1))  # OC with two ports
    with pytest.raises(CoreUsageError):
        gm.start(0)


def mgmt(action: ManagementAction, mid: int, data=None, target=ALL_CLOCKS, port=ALL_PORTS) -> m.Management:
    return m.Management(header=Header(sequence_id=9, source_port_identity=PortIdentity(SL_ID, 0x55)),
                        target_port_identity=PortIdentity(target, port), starting_boundary_hops=1, boundary_hops=1,
                        action_field=action, tlvs=(cm.ManagementTlv(mid, data),))


def only_tlv(out):
    (s,) = sends(out, m.Management)
    back = m.decode(m.encode(s.message))  # the response encodes and decodes
    assert back.header.sequence_id == 9 and back.target_port_identity == PortIdentity(SL_ID, 0x55)
    return back.action_field, back.tlvs[0]


def test_management_get_set_and_errors() -> None:
    # SET/COMMAND from a PTP port need the option (default refusal: tests/unit/test_core_management.py)
    gm, _ = run_master(allow_network_management_set="1")
    act, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.GET, ManagementId.DEFAULT_DATA_SET), None, S))
    assert act is ManagementAction.RESPONSE and tlv.data.priority1 == 10 and tlv.data.clock_identity == GM_ID
    _, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.GET, ManagementId.PORT_DATA_SET), None, S))
    assert tlv.data.port_state is PortState.MASTER and tlv.data.log_sync_interval == -3
    _, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.SET, ManagementId.PRIORITY1, cm.Priority1(20)), None, S))
    assert tlv.data.priority1 == 20 and gm.default_ds.priority1 == 20 and gm.parent_ds.grandmaster_priority1 == 20
    _, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.SET, ManagementId.DOMAIN, cm.Domain(3)), None, S))
    assert tlv.management_error_id is ManagementErrorId.NOT_SETABLE
    _, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.GET, 0x1FFF), None, S))
    assert tlv.management_error_id is ManagementErrorId.NO_SUCH_ID
    _, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.GET, ManagementId.FAULT_LOG), None, S))
    assert tlv.management_error_id is ManagementErrorId.NOT_SUPPORTED
    _, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.SET, ManagementId.PRIORITY2), None, S))
    assert tlv.management_error_id is ManagementErrorId.WRONG_LENGTH
    assert gm.handle_message(1, mgmt(ManagementAction.GET, ManagementId.DEFAULT_DATA_SET, target=SL_ID), None, S) == []
    out = gm.handle_message(1, mgmt(ManagementAction.COMMAND, ManagementId.DISABLE_PORT), None, S)
    assert gm.port(1).state is PortState.DISABLED
    act, tlv = only_tlv([a for a in out if isinstance(a, SendMessage)])
    assert act is ManagementAction.ACKNOWLEDGE


def test_delay_formulas() -> None:
    # master->slave 1200 ns, slave->master 800 ns (asymmetry +200), slave 50 ns ahead
    t1, t2 = 0, 1200 + 50
    t3, t4 = 10_000, 10_000 + 800 - 50
    mpd = e2e_mean_path_delay(t1, t2, t3, t4, 0, 0)
    assert mpd == 1000
    assert offset_from_master(t1, t2, 0, mpd, 0) == 250  # asymmetry misread as offset
    assert offset_from_master(t1, t2, 0, mpd, 200) == 50
    # peer delay with a neighbour 100 ppm fast: turnaround measured by its clock
    # link 500 ns; the neighbour (100 ppm fast) turns around in 100000 of ITS ns = 99990 of ours
    assert p2p_mean_link_delay(0, 5_000, 105_000, 100_990, 0, 0, rate_ratio=1.0001) == 500
    assert p2p_mean_link_delay(0, 5_000, 105_000, 100_990, 0, 0, rate_ratio=1.0) == 495  # unsyntonized: 5 ns off
    assert p2p_mean_link_delay(0, 0, 0, 100_990, 100_000, 0, rate_ratio=1.0001) == 500  # one-step: turnaround in correction


def test_outlier_filter() -> None:
    f = OutlierFilter(threshold=5.0, floor_ns=100)
    for v in (1000, 1010, 990, 1005, 995):
        assert f.accept(v)
    assert not f.accept(50_000)
    assert f.accept(1002)
    for _ in range(4):
        assert not f.accept(80_000)
    assert f.accept(80_000)  # the path really changed: accept and restart


def test_outgoing_headers_name_their_message_type() -> None:
    gm, out = run_master()
    out += gm.handle_timer(gm.next_deadline_ns())
    for a in sends(out):
        assert a.message.header.message_type == type(a.message).MESSAGE_TYPE
        assert m.decode(m.encode(a.message)).header.message_type == a.message.header.message_type
