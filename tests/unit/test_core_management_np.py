"""pmc's common queries answered by the core: TIME_STATUS_NP, GRANDMASTER_SETTINGS_NP,
PORT_PROPERTIES_NP (linuxptp implementation-specific) and CLOCK_DESCRIPTION."""

from __future__ import annotations

from controlplane.codec import management as cm
from controlplane.codec import messages as m
from controlplane.codec.enums import ManagementAction, ManagementId, PortState
from tests.unit.test_core_clock import GM_ID, S, exchange, make_slave, mgmt, only_tlv, run_master


def _get(clock, mid):  # noqa: ANN001, ANN202
    return only_tlv(clock.handle_message(1, mgmt(ManagementAction.GET, mid), None, S))[1]


def test_time_status_np_on_a_slave_and_on_the_grandmaster() -> None:
    sl = make_slave(free_running="1")
    for k in range(24):
        exchange(sl, k, offset_ns=-4_321, delay_ns=3_000, now_ns=S + k * S // 8)
    tlv = _get(sl, ManagementId.TIME_STATUS_NP)
    assert isinstance(tlv.data, cm.TimeStatusNp)
    d = tlv.data
    assert d.master_offset_ns == -4_321 and d.gm_present == 1 and d.gm_identity == GM_ID
    t1_last = 1_700_000_000 * S + 23 * S // 8
    assert d.ingress_time_ns == t1_last + 3_000 - 4_321  # the last Sync's t2
    assert d.cumulative_scaled_rate_offset == 0  # E2E: no neighbour rate ratio
    gm, _ = run_master()
    d = _get(gm, ManagementId.TIME_STATUS_NP).data
    assert d.gm_present == 0 and d.gm_identity == GM_ID and d.master_offset_ns == 0 and d.ingress_time_ns == 0


def test_grandmaster_settings_port_properties_clock_description() -> None:
    gm, _ = run_master(clockClass="6", time_stamping="software")
    d = _get(gm, ManagementId.GRANDMASTER_SETTINGS_NP).data
    assert isinstance(d, cm.GrandmasterSettingsNp) and d.clock_quality.clock_class == 6 and d.time_flags & 0x08
    out = gm.handle_message(1, mgmt(ManagementAction.GET, ManagementId.PORT_PROPERTIES_NP), None, S)
    (s,) = [a for a in out if isinstance(a.message, m.Management)]
    d = m.decode(m.encode(s.message)).management_tlv.data
    assert isinstance(d, cm.PortPropertiesNp) and d.port_state == PortState.MASTER
    assert d.timestamping == cm.NpTimestamping.SOFTWARE and bytes(d.interface.text) == b"eth0"
    d = _get(gm, ManagementId.CLOCK_DESCRIPTION).data
    assert isinstance(d, cm.ClockDescription) and d.clock_type == 0x8000 and d.profile_identity == bytes.fromhex("001b19000100")
    assert d.protocol_address.network_protocol == 1 and bytes(d.physical_layer_protocol.text) == b"IEEE 802.3"
    # still read-only
    _, tlv = only_tlv(gm.handle_message(1, mgmt(ManagementAction.SET, ManagementId.TIME_STATUS_NP, cm.TimeStatusNp()), None, S))
    assert tlv.management_error_id.name in ("NOT_SETABLE", "NOT_SUPPORTED")
