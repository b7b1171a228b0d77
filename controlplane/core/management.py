"""Management GET/SET/COMMAND over the data sets (IEEE 1588 clause 15), so the daemon can answer pmc.

``handle(clock, port, msg, now_ns, src)`` returns SendMessage actions: a RESPONSE (GET/SET) or
ACKNOWLEDGE (COMMAND) with the MANAGEMENT TLV, or one with a MANAGEMENT_ERROR_STATUS TLV:
NO_SUCH_ID (an ID this standard does not define), NOT_SUPPORTED (defined, not implemented here),
NOT_SETABLE (read-only), WRONG_LENGTH (SET without a dataField), WRONG_VALUE (out of range).
A message for another clock identity gets no answer. Port-scoped IDs addressed to all ports
(portNumber 0xFFFF) get one response per port, as ptp4l does.

Policy: SET and COMMAND change the clock, so they are obeyed only from the local UNIX socket
(``local=True``: the daemon's port 0) unless the option ``allow_network_management_set 1`` is set.
From a PTP port they are refused with NOT_SUPPORTED, as ptp4l refuses SET on any port but its UDS
port (any host on the segment could otherwise win the BMCA with SET PRIORITY1 0 or disable ports).
GET and COMMAND NULL_MANAGEMENT change nothing and are answered from anywhere.

Forwarding (``forward``), as ptp4l's clock_forward_mgmt_msg: a management message with
boundaryHops > 0 goes out again with boundaryHops - 1 - a request from the local socket on every
active network port (so ``pmc -u -b 1`` reaches the neighbours), a message from the network on the
other ports in MASTER/PRE_MASTER/UNCALIBRATED/SLAVE (boundary clocks; a TC's bridge already
forwards), and a RESPONSE/ACKNOWLEDGE from the network to the local socket (the asking pmc).
Requests from the network are never forwarded to the local socket.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from controlplane.codec import management as cm
from controlplane.codec.enums import ManagementAction, ManagementErrorId, ManagementId, MessageType, PortState
from controlplane.codec.header import Header
from controlplane.codec.messages import Management
from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS, PortIdentity, PTPText
from controlplane.core.actions import Action, Dest, SendMessage

__all__ = ["CLOCK_IDS", "PORT_IDS", "forward", "handle"]

MID = ManagementId
CLOCK_IDS = {MID.NULL_MANAGEMENT, MID.DEFAULT_DATA_SET, MID.CURRENT_DATA_SET, MID.PARENT_DATA_SET,
             MID.TIME_PROPERTIES_DATA_SET, MID.PRIORITY1, MID.PRIORITY2, MID.DOMAIN, MID.SLAVE_ONLY,
             MID.USER_DESCRIPTION, MID.TRANSPARENT_CLOCK_DEFAULT_DATA_SET, MID.TIME_STATUS_NP,
             MID.GRANDMASTER_SETTINGS_NP}
# CLOCK_DESCRIPTION is port-scoped, as in ptp4l (physical/protocol address are a port's)
PORT_IDS = {MID.PORT_DATA_SET, MID.LOG_ANNOUNCE_INTERVAL, MID.ANNOUNCE_RECEIPT_TIMEOUT, MID.LOG_SYNC_INTERVAL,
            MID.DELAY_MECHANISM, MID.LOG_MIN_PDELAY_REQ_INTERVAL, MID.VERSION_NUMBER, MID.ENABLE_PORT,
            MID.DISABLE_PORT, MID.TRANSPARENT_CLOCK_PORT_DATA_SET, MID.CLOCK_DESCRIPTION, MID.PORT_PROPERTIES_NP}
SETTABLE = {MID.PRIORITY1, MID.PRIORITY2, MID.USER_DESCRIPTION}
COMMANDS = {MID.ENABLE_PORT, MID.DISABLE_PORT, MID.NULL_MANAGEMENT}


class _MgmtError(Exception):
    def __init__(self, error: ManagementErrorId, text: str) -> None:
        super().__init__(text)
        self.error = error
        self.text = text


_CLOCK_TYPE_BITS = {"OC": 0x8000, "BC": 0x4000, "P2P_TC": 0x2000, "E2E_TC": 0x1000}  # 15.5.3.1.2.1
_PROFILE_E2E = bytes.fromhex("001b19000100")  # default delay request-response profile (J.3)
_PROFILE_P2P = bytes.fromhex("001b19000200")  # default peer-to-peer profile (J.4)
_NETWORK_PROTOCOL = {"UDPv4": 1, "UDPv6": 2, "L2": 3}  # 7.4.1 networkProtocol
_POW2_41 = 1 << 41


def _time_status_np(clock: Any) -> Any:
    """linuxptp clock.c TLV_TIME_STATUS_NP: the last offset and Sync ingress time, the neighbour
    rate ratio as cumulativeScaledRateOffset ((ratio - 1) * 2^41; 1.0 for E2E), gmPresent when
    the grandmaster is another clock."""
    gm = bytes(clock.parent_ds.grandmaster_identity)
    ratio = 1.0
    sp = clock.slave_port
    if sp is not None and clock.port(sp).p2p:
        ratio = clock.port(sp).rate_ratio.ratio
    csro = max(-(2**31), min(2**31 - 1, round((ratio - 1.0) * _POW2_41)))
    return cm.TimeStatusNp(master_offset_ns=_clamp64(clock.current_ds.offset_from_master_ns),
                           ingress_time_ns=_clamp64(getattr(clock, "last_sync_ingress_ns", 0)),
                           cumulative_scaled_rate_offset=csro, gm_present=int(gm != bytes(clock.clock_identity)),
                           gm_identity=gm)


def _clamp64(v: int) -> int:
    return max(-(2**63), min(2**63 - 1, int(v)))


def _scaled(ns: int) -> int:
    v = int(ns) * 65536
    return max(-(2**63), min(2**63 - 1, v))


def _clock_data(clock: Any, mid: ManagementId) -> Any:
    d = clock.default_ds
    if mid is MID.NULL_MANAGEMENT:
        return None
    if mid is MID.DEFAULT_DATA_SET:
        return cm.DefaultDataSet(two_step_flag=d.two_step_flag, slave_only=d.slave_only, number_ports=d.number_ports,
                                 priority1=d.priority1, clock_quality=d.clock_quality, priority2=d.priority2,
                                 clock_identity=d.clock_identity, domain_number=d.domain_number)
    if mid is MID.CURRENT_DATA_SET:
        c = clock.current_ds
        return cm.CurrentDataSet(steps_removed=c.steps_removed, offset_from_master_scaled_ns=_scaled(c.offset_from_master_ns),
                                 mean_path_delay_scaled_ns=_scaled(c.mean_path_delay_ns))
    if mid is MID.PARENT_DATA_SET:
        p = clock.parent_ds
        return cm.ParentDataSet(parent_port_identity=p.parent_port_identity, parent_stats=p.parent_stats,
                                observed_parent_offset_scaled_log_variance=p.observed_parent_offset_scaled_log_variance,
                                observed_parent_clock_phase_change_rate=p.observed_parent_clock_phase_change_rate,
                                grandmaster_priority1=p.grandmaster_priority1, grandmaster_clock_quality=p.grandmaster_clock_quality,
                                grandmaster_priority2=p.grandmaster_priority2, grandmaster_identity=p.grandmaster_identity)
    if mid is MID.TIME_PROPERTIES_DATA_SET:
        t = clock.time_properties_ds
        return cm.TimePropertiesDataSet(current_utc_offset=t.current_utc_offset, leap61=t.leap61, leap59=t.leap59,
                                        current_utc_offset_valid=t.current_utc_offset_valid, ptp_timescale=t.ptp_timescale,
                                        time_traceable=t.time_traceable, frequency_traceable=t.frequency_traceable,
                                        time_source=t.time_source)
    if mid is MID.PRIORITY1:
        return cm.Priority1(d.priority1)
    if mid is MID.PRIORITY2:
        return cm.Priority2(d.priority2)
    if mid is MID.DOMAIN:
        return cm.Domain(d.domain_number)
    if mid is MID.SLAVE_ONLY:
        return cm.SlaveOnly(d.slave_only)
    if mid is MID.USER_DESCRIPTION:
        return cm.UserDescription(PTPText.of(clock.user_description))
    if mid is MID.TIME_STATUS_NP:
        return _time_status_np(clock)
    if mid is MID.GRANDMASTER_SETTINGS_NP:
        # linuxptp: this clock's own settings for when it is grandmaster (clockQuality, UTC offset,
        # the Announce time flags, timeSource)
        t = clock._own_time_properties()
        flags = (0x08 if t.ptp_timescale else 0) | (0x04 if t.current_utc_offset_valid else 0) \
            | (0x10 if t.time_traceable else 0) | (0x20 if t.frequency_traceable else 0)
        return cm.GrandmasterSettingsNp(clock_quality=d.clock_quality, utc_offset=t.current_utc_offset,
                                        time_flags=flags, time_source=int(t.time_source))
    if mid is MID.TRANSPARENT_CLOCK_DEFAULT_DATA_SET:
        if not clock.is_tc:
            raise _MgmtError(ManagementErrorId.NOT_SUPPORTED, "not a transparent clock")
        t = clock.tc_default_ds
        return cm.TransparentClockDefaultDataSet(clock_identity=t.clock_identity, number_ports=t.number_ports,
                                                 delay_mechanism=t.delay_mechanism, primary_domain=t.primary_domain)
    raise _MgmtError(ManagementErrorId.NOT_SUPPORTED, "not supported")  # pragma: no cover


def _port_data(clock: Any, port: Any, mid: ManagementId) -> Any:
    ds = port.ds
    if mid is MID.PORT_DATA_SET:
        return cm.PortDataSet(port_identity=ds.port_identity, port_state=ds.port_state,
                              log_min_delay_req_interval=ds.log_min_delay_req_interval,
                              peer_mean_path_delay_scaled_ns=_scaled(ds.peer_mean_path_delay_ns),
                              log_announce_interval=ds.log_announce_interval, announce_receipt_timeout=ds.announce_receipt_timeout,
                              log_sync_interval=ds.log_sync_interval, delay_mechanism=ds.delay_mechanism,
                              log_min_pdelay_req_interval=ds.log_min_pdelay_req_interval, version_number=ds.version_number)
    if mid is MID.LOG_ANNOUNCE_INTERVAL:
        return cm.LogAnnounceInterval(ds.log_announce_interval)
    if mid is MID.ANNOUNCE_RECEIPT_TIMEOUT:
        return cm.AnnounceReceiptTimeout(ds.announce_receipt_timeout)
    if mid is MID.LOG_SYNC_INTERVAL:
        return cm.LogSyncInterval(ds.log_sync_interval)
    if mid is MID.DELAY_MECHANISM:
        return cm.DelayMechanismData(int(ds.delay_mechanism))
    if mid is MID.LOG_MIN_PDELAY_REQ_INTERVAL:
        return cm.LogMinPdelayReqInterval(ds.log_min_pdelay_req_interval)
    if mid is MID.VERSION_NUMBER:
        return cm.VersionNumber(ds.version_number)
    if mid is MID.CLOCK_DESCRIPTION:
        transport = str(getattr(port.cfg, "network_transport", "UDPv4"))
        return cm.ClockDescription(
            clock_type=_CLOCK_TYPE_BITS.get(str(clock.clock_type), 0x8000),
            physical_layer_protocol=PTPText.of("IEEE 802.3"),
            protocol_address=cm.PortAddress(_NETWORK_PROTOCOL.get(transport, 0xFFFE), b""),
            product_description=PTPText.of(";ptp-switch;"), revision_data=PTPText.of(";;"),
            user_description=PTPText.of(clock.user_description),
            profile_identity=_PROFILE_P2P if port.p2p else _PROFILE_E2E)
    if mid is MID.PORT_PROPERTIES_NP:
        ts = str(getattr(clock.cfg, "time_stamping", "software"))
        kind = {"hardware": cm.NpTimestamping.HARDWARE, "legacy": cm.NpTimestamping.LEGACY_HW}.get(ts, cm.NpTimestamping.SOFTWARE)
        if kind == cm.NpTimestamping.HARDWARE and not clock.default_ds.two_step_flag:
            kind = cm.NpTimestamping.ONESTEP
        return cm.PortPropertiesNp(port_identity=ds.port_identity, port_state=int(ds.port_state), timestamping=kind,
                                   interface=PTPText.of(port.name))
    if mid is MID.TRANSPARENT_CLOCK_PORT_DATA_SET:
        if not clock.is_tc:
            raise _MgmtError(ManagementErrorId.NOT_SUPPORTED, "not a transparent clock")
        return cm.TransparentClockPortDataSet(port_identity=ds.port_identity, faulty_flag=ds.port_state.name == "FAULTY",
                                              log_min_pdelay_req_interval=ds.log_min_pdelay_req_interval,
                                              peer_mean_path_delay_scaled_ns=_scaled(ds.peer_mean_path_delay_ns))
    raise _MgmtError(ManagementErrorId.NOT_SUPPORTED, "not supported")


def _set_clock(clock: Any, mid: ManagementId, data: Any, now_ns: int) -> list[Action]:
    if data is None or isinstance(data, (bytes, bytearray)):
        raise _MgmtError(ManagementErrorId.WRONG_LENGTH, "SET needs a dataField")
    if mid in (MID.PRIORITY1, MID.PRIORITY2):
        value = data.priority1 if mid is MID.PRIORITY1 else data.priority2
        if not 0 <= value <= 255:
            raise _MgmtError(ManagementErrorId.WRONG_VALUE, f"{value} outside 0..255")
        return clock.set_priority(mid.name.lower(), value, now_ns)
    if mid is MID.USER_DESCRIPTION:
        try:
            text = bytes(data.user_description.text).decode("utf-8")
        except UnicodeDecodeError:
            raise _MgmtError(ManagementErrorId.WRONG_VALUE, "userDescription is not UTF-8") from None
        if len(text.encode()) > 128:
            raise _MgmtError(ManagementErrorId.WRONG_VALUE, "userDescription longer than 128 octets")
        clock.user_description = text
        return []
    raise _MgmtError(ManagementErrorId.NOT_SETABLE, "not settable")  # pragma: no cover


def network_changes_allowed(clock: Any) -> bool:
    """Whether SET/COMMAND received on a PTP port may change ``clock`` (option allow_network_management_set)."""
    return bool(getattr(getattr(clock, "cfg", None), "allow_network_management_set", False))


def handle(clock: Any, port: Any, msg: Management, now_ns: int, src: object = None, *, local: bool = False) -> list[Action]:
    """Answer one management message received on ``port``. ``local`` is True only for the local
    UNIX socket (the daemon's port 0); anything else is the network (see the policy above)."""
    target = msg.target_port_identity
    if bytes(target.clock_identity) not in (clock.clock_identity, ALL_CLOCKS):
        return []
    tlv = msg.management_tlv
    action = msg.action_field
    if not isinstance(tlv, cm.ManagementTlv) or action not in (ManagementAction.GET, ManagementAction.SET, ManagementAction.COMMAND):
        return []  # RESPONSE/ACKNOWLEDGE from someone else, or no TLV: nothing to answer
    mid_raw = tlv.management_id
    dest = src if src is not None and msg.header.unicast else Dest.PRIMARY
    reply_action = ManagementAction.ACKNOWLEDGE if action is ManagementAction.COMMAND else ManagementAction.RESPONSE

    def reply(p: Any, body: Any) -> SendMessage:
        h = msg.header
        hops = max(0, msg.starting_boundary_hops - msg.boundary_hops)
        rsp = Management(
            header=Header(message_type=MessageType.MANAGEMENT, sequence_id=h.sequence_id, domain_number=clock.default_ds.domain_number,
                          source_port_identity=p.identity if p is not None else PortIdentity(clock.clock_identity, 0),
                          log_message_interval=0x7F, unicast=h.unicast),
            target_port_identity=h.source_port_identity, starting_boundary_hops=hops, boundary_hops=hops,
            action_field=reply_action, tlvs=(body,))
        return SendMessage(port.number, rsp, False, dest, None)

    def error(err: ManagementErrorId, text: str) -> list[Action]:
        return [reply(port, cm.ManagementErrorStatusTlv(management_error_id=err, management_id=mid_raw,
                                                       display_data=PTPText.of(text)))]

    if not isinstance(mid_raw, ManagementId):
        return error(ManagementErrorId.NO_SUCH_ID, f"managementId 0x{int(mid_raw):04x} is not defined")
    mid = mid_raw
    if mid not in CLOCK_IDS and mid not in PORT_IDS:
        return error(ManagementErrorId.NOT_SUPPORTED, f"{mid.name} is not supported")
    if action is ManagementAction.COMMAND and mid not in COMMANDS:
        return error(ManagementErrorId.NOT_SUPPORTED, f"{mid.name} is not a command")
    if action is not ManagementAction.COMMAND and mid in (MID.ENABLE_PORT, MID.DISABLE_PORT):
        return error(ManagementErrorId.NOT_SUPPORTED, f"{mid.name} is a command")
    if (action is not ManagementAction.GET and mid is not MID.NULL_MANAGEMENT and not local
            and not network_changes_allowed(clock)):
        verb = "SET" if action is ManagementAction.SET else "COMMAND"
        return error(ManagementErrorId.NOT_SUPPORTED,
                     f"{verb} only on the local management socket (allow_network_management_set 0)")
    if action is ManagementAction.SET and mid not in SETTABLE:
        return error(ManagementErrorId.NOT_SETABLE, f"{mid.name} is not settable")
    try:
        out: list[Action] = []
        if mid in CLOCK_IDS:
            if action is ManagementAction.SET:
                out += _set_clock(clock, mid, tlv.data, now_ns)
            out.append(reply(port, cm.ManagementTlv(mid, _clock_data(clock, mid))))
            return out
        # port-scoped: the addressed port(s)
        if target.port_number == ALL_PORTS:
            ports = list(clock.ports)
        elif target.port_number == 0:
            ports = [port]
        else:
            if not 1 <= target.port_number <= len(clock.ports):
                return error(ManagementErrorId.WRONG_VALUE, f"no port {target.port_number}")
            ports = [clock.port(target.port_number)]
        for p in ports:
            if mid in (MID.ENABLE_PORT, MID.DISABLE_PORT):
                out += clock.set_port_enabled(p.number, mid is MID.ENABLE_PORT, now_ns)
                out.append(reply(p, cm.ManagementTlv(mid, None)))
            else:
                out.append(reply(p, cm.ManagementTlv(mid, _port_data(clock, p, mid))))
        return out
    except _MgmtError as exc:
        return error(exc.error, exc.text)


_FORWARDING = (PortState.MASTER, PortState.PRE_MASTER, PortState.UNCALIBRATED, PortState.SLAVE)
_INACTIVE = (PortState.INITIALIZING, PortState.FAULTY, PortState.DISABLED)
_REQUESTS = (ManagementAction.GET, ManagementAction.SET, ManagementAction.COMMAND)


def forward(clock: Any, msg: Management, ingress_port: int, *, local_port: int = 0) -> list[Action]:
    """Copies of ``msg`` to forward (boundaryHops - 1), see the module docstring. ``ingress_port``
    is the port it came in on; ``local_port`` the number of the local socket (the daemon's 0).
    A copy for the local socket is a SendMessage on ``local_port`` with dest None: the caller
    addresses it to the client that asked."""
    if msg.boundary_hops == 0 or msg.header.unicast:
        return []
    fwd = dataclasses.replace(msg, boundary_hops=msg.boundary_hops - 1)
    from_local = ingress_port == local_port
    out: list[Action] = []
    if from_local:
        if msg.action_field not in _REQUESTS:
            return []
        egress = [p for p in clock.ports if p.state not in _INACTIVE]
    elif getattr(clock, "is_tc", False):
        egress = []
    else:
        egress = [p for p in clock.ports if p.number != ingress_port and p.state in _FORWARDING]
    for p in egress:
        out.append(SendMessage(p.number, fwd, False, Dest.PRIMARY, None))
    if not from_local and msg.action_field in (ManagementAction.RESPONSE, ManagementAction.ACKNOWLEDGE):
        out.append(SendMessage(local_port, fwd, False, None, None))
    return out
