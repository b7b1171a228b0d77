"""The option table, its dataclasses and parse()."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.core import config as c


def test_table_and_dataclasses_agree() -> None:
    """Every option has exactly one attribute with the table's default, and vice versa."""
    clock_fields = {f.name: f for f in dataclasses.fields(c.ClockConfig)}
    port_fields = {f.name: f for f in dataclasses.fields(c.PortConfig)}
    seen_global, seen_port = set(), set()
    for opt in c.OPTIONS:
        fields = clock_fields if opt.scope is c.Scope.GLOBAL else port_fields
        assert opt.attr in fields, opt.name
        assert fields[opt.attr].default == opt.default, opt.name
        (seen_global if opt.scope is c.Scope.GLOBAL else seen_port).add(opt.attr)
    assert set(clock_fields) - {"port_defaults", "ports"} == seen_global
    assert set(port_fields) == seen_port
    assert len({o.name for o in c.OPTIONS}) == len(c.OPTIONS)


def test_empty_is_ptp4l_defaults() -> None:
    cfg = c.parse({})
    assert cfg == c.ClockConfig()
    assert cfg.priority1 == 128 and cfg.first_step_threshold == 0.00002 and cfg.max_frequency == 900000000
    assert cfg.port("eth0").log_announce_interval == 1
    assert cfg.port("eth0").announce_receipt_timeout == 3


def test_anchor_gm_and_slave_files() -> None:
    """The ANCHORS gm.cfg / slave.cfg / tc_p2p.cfg parse as ptp4l reads them."""
    gm = c.parse({"global": {"priority1": "10", "logSyncInterval": "-3", "logMinDelayReqInterval": "-3",
                             "logMinPdelayReqInterval": "-3", "logAnnounceInterval": "0",
                             "announceReceiptTimeout": "3", "tx_timestamp_timeout": "50",
                             "free_running": "1", "freq_est_interval": "0", "summary_interval": "-3"}})
    assert gm.priority1 == 10 and gm.free_running is True and gm.port_defaults.log_sync_interval == -3
    sl = c.parse({"global": {"slaveOnly": "1", "priority1": "255"}})
    assert sl.slave_only and sl.clock_class == 255
    tc = c.parse({"global": {"clock_type": "P2P_TC", "delay_mechanism": "P2P", "tc_spanning_tree": "1"}})
    assert tc.clock_type is c.ClockType.P2P_TC and tc.port("p1").delay_mechanism == "P2P"


def test_port_sections_override_global_defaults() -> None:
    cfg = c.parse({"global": {"logSyncInterval": "-3", "delayAsymmetry": "100"},
                   "eth1": {"delayAsymmetry": "-250", "network_transport": "L2"}})
    assert cfg.port("eth1").delay_asymmetry == -250
    assert cfg.port("eth1").log_sync_interval == -3
    assert cfg.port("eth1").network_transport is c.NetworkTransport.L2
    assert cfg.port("eth0").delay_asymmetry == 100
    assert cfg.port_names == ("eth1",)


def test_hex_ints_and_case_folded_enums() -> None:
    cfg = c.parse({"global": {"clockAccuracy": "0x21", "clock_servo": "LINREG", "delay_mechanism": "auto"}})
    assert cfg.clock_accuracy == 0x21 and cfg.clock_servo is c.ClockServo.LINREG
    assert cfg.port_defaults.delay_mechanism is c.DelayMechanismOption.AUTO


@pytest.mark.parametrize(
    "options, option, section, fragment",
    [
        ({"global": {"priority3": "1"}}, "priority3", "global", "unknown option"),
        ({"global": {"Priority1": "1"}}, "Priority1", "global", "did you mean 'priority1'"),
        ({"global": {"priority1": "256"}}, "priority1", "global", "[0, 255]"),
        ({"global": {"priority1": "x"}}, "priority1", "global", "not an integer"),
        ({"global": {"domainNumber": "128"}}, "domainNumber", "global", "[0, 127]"),
        ({"global": {"announceReceiptTimeout": "1"}}, "announceReceiptTimeout", "global", "[2, 255]"),
        ({"eth0": {"announceReceiptTimeout": "1"}}, "announceReceiptTimeout", "eth0", "[2, 255]"),
        ({"global": {"free_running": "2"}}, "free_running", "global", "0 or 1"),
        ({"global": {"first_step_threshold": "-1"}}, "first_step_threshold", "global", "out of range"),
        ({"global": {"first_step_threshold": "nan"}}, "first_step_threshold", "global", "not finite"),
        ({"global": {"delay_mechanism": "XYZ"}}, "delay_mechanism", "global", "one of Auto, E2E, P2P"),
        ({"global": {"clock_type": "TC"}}, "clock_type", "global", "OC, BC, E2E_TC, P2P_TC"),
        ({"eth0": {"priority1": "1"}}, "priority1", "eth0", "global option"),
        ({"global": {"phc_device": "/tmp/x"}}, "phc_device", "global", "/dev/ptpN"),
        ({"global": {"one_step_dataplane": "1", "time_stamping": "software"}}, "one_step_dataplane", "global",
         "twoStepFlag 0"),
        ({"global": {"one_step_dataplane": "1", "twoStepFlag": "0"}}, "one_step_dataplane", "global",
         "time_stamping software"),
    ],
)
def test_errors_name_option_section_and_range(options, option, section, fragment) -> None:
    with pytest.raises(c.ConfigError) as err:
        c.parse(options)
    assert err.value.option == option
    assert err.value.section == section
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_one_step_dataplane_with_one_step_software_stamps() -> None:
    cfg = c.parse({"global": {"one_step_dataplane": "1", "twoStepFlag": "0", "time_stamping": "software"}})
    assert cfg.one_step_dataplane and not cfg.two_step_flag
    assert not c.parse({}).one_step_dataplane


def test_config_is_frozen() -> None:
    cfg = c.parse({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.priority1 = 1  # type: ignore[misc]
