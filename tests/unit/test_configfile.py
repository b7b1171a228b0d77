"""The ptp4l-format config reader (runtime/configfile.py): sections, unicast tables, errors with line numbers."""

from __future__ import annotations

import pytest

from controlplane.core.config import ClockType, DelayMechanismOption, NetworkTransport
from controlplane.runtime.configfile import ConfigFileError, parse_config_text, read_config_file

GOOD = """\
# grandmaster-ish
[global]
priority1		10
logSyncInterval		-3
clock_type		BC
free_running		1
[eth1]
delay_mechanism		P2P   # trailing comment
[unicast_master_table]
table_id		1
logQueryInterval	0
UDPv4			10.250.210.1
UDPv6			fd00::1
[unicast_master_table]
table_id		2
L2			02:00:00:00:00:01
[eth2]
unicast_master_table	1
"""


def test_good_file_parses() -> None:
    cfg = parse_config_text(GOOD, filename="x.cfg", interfaces=("eth0",))
    c = cfg.clock
    assert c.priority1 == 10 and c.clock_type is ClockType.BC and c.free_running
    assert c.port("eth1").delay_mechanism is DelayMechanismOption.P2P
    assert c.port("eth1").log_sync_interval == -3  # [global] port options are every port's default
    assert c.port("eth0").delay_mechanism is DelayMechanismOption.E2E
    assert [t.table_id for t in cfg.unicast_master_tables] == [1, 2]
    t1 = cfg.unicast_table(1)
    assert t1 is not None and [(m.transport, m.address) for m in t1.masters] == [("UDPv4", "10.250.210.1"), ("UDPv6", "fd00::1")]
    assert c.port("eth2").unicast_master_table == 1


def test_overrides_win_over_global_but_not_port_sections() -> None:
    cfg = parse_config_text(GOOD, overrides={"network_transport": "L2", "delay_mechanism": "E2E", "priority1": "20"})
    assert cfg.clock.priority1 == 20
    assert cfg.clock.port_defaults.network_transport is NetworkTransport.L2
    assert cfg.clock.port("eth1").delay_mechanism is DelayMechanismOption.P2P


@pytest.mark.parametrize(
    "text, line, option, section, fragment",
    [
        ("[global]\npriority1 300\n", 2, "priority1", "global", "[0, 255]"),
        ("[global]\n\nprioriti1 3\n", 3, "prioriti1", "global", "unknown"),
        ("[global]\n[eth0]\npriority1 3\n", 3, "priority1", "eth0", "global"),
        ("[global]\nlogSyncInterval x\n", 2, "logSyncInterval", "global", ""),
        ("[global]\npriority1 1\npriority1 2\n", 3, "priority1", "global", "twice"),
        ("[global]\npriority1\n", 2, "priority1", "global", "without a value"),
        ("[unicast_master_table]\ntable_id 1\nUDPv4 10.0.0.300\n", 3, "UDPv4", "unicast_master_table", ""),
        ("[unicast_master_table]\ntable_id 1\nfoo 1\n", 3, "foo", "unicast_master_table", "unknown entry"),
    ],
)
def test_errors_name_line_section_option(text: str, line: int, option: str, section: str, fragment: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config_text(text, filename="bad.cfg")
    err = info.value
    assert (err.line, err.option, err.section) == (line, option, section)
    assert fragment in str(err) and f"bad.cfg:{line}" in str(err)


def test_missing_unicast_table_and_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigFileError, match="table_id 7"):
        parse_config_text("[eth0]\nunicast_master_table 7\n")
    with pytest.raises(ConfigFileError, match="cannot read"):
        read_config_file(str(tmp_path / "nope.cfg"))
    p = tmp_path / "bin.cfg"
    p.write_bytes(b"\xff\xfe[global]\n")
    with pytest.raises(ConfigFileError, match="UTF-8"):
        read_config_file(str(p))
