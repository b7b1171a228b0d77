"""ptp4l-format configuration files, validated over the core's option table.

    # comment
    [global]
    priority1        10
    [eth0]                       # per-interface section: port options only
    delay_mechanism  P2P
    [unicast_master_table]       # may repeat; not options
    table_id         1
    logQueryInterval 0
    UDPv4            10.0.0.1
    peer_address     10.0.0.9    # optional

Errors (``ConfigFileError``) name the file, the line, the section, the option and what is allowed.
Command-line overrides (ptp4l's -2/-4/-6/-E/-P/-s/-S) go into [global] and win over the file's
[global], while per-interface sections still win over both (as in ptp4l).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Mapping

from controlplane.core import config as core_config
from controlplane.core.config import ClockConfig, ConfigError

UNICAST_SECTION = "unicast_master_table"
_TRANSPORTS = ("UDPv4", "UDPv6", "L2")
_SECTION_RE = re.compile(r"^\[\s*([^\]\s]+)\s*\]$")


class ConfigFileError(ValueError):
    """A bad configuration file: ``file:line: [section] option: reason``."""

    def __init__(self, reason: str, *, filename: str, line: int | None = None, section: str | None = None,
                 option: str | None = None) -> None:
        self.reason = reason
        self.filename = filename
        self.line = line
        self.section = section
        self.option = option
        where = filename + (f":{line}" if line is not None else "")
        what = " ".join(x for x in (f"[{section}]" if section else "", f"option {option!r}" if option else "") if x)
        super().__init__(f"{where}: {what + ': ' if what else ''}{reason}")


@dataclasses.dataclass(frozen=True)
class UnicastMaster:
    transport: str  # "UDPv4" | "UDPv6" | "L2"
    address: str


@dataclasses.dataclass(frozen=True)
class UnicastMasterTable:
    table_id: int
    log_query_interval: int = 0
    peer_address: str | None = None
    masters: tuple[UnicastMaster, ...] = ()


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    clock: ClockConfig
    unicast_master_tables: tuple[UnicastMasterTable, ...] = ()

    def unicast_table(self, table_id: int) -> UnicastMasterTable | None:
        for t in self.unicast_master_tables:
            if t.table_id == table_id:
                return t
        return None


def _check_address(transport: str, text: str) -> str:
    if transport == "UDPv4":
        ipaddress.IPv4Address(text)
    elif transport == "UDPv6":
        ipaddress.IPv6Address(text)
    else:
        if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", text):
            raise ValueError("not a MAC address aa:bb:cc:dd:ee:ff")
    return text


def parse_config_text(text: str, *, filename: str = "<config>", overrides: Mapping[str, str] | None = None,
                      interfaces: tuple[str, ...] = ()) -> DaemonConfig:
    """Parse and validate; ``interfaces`` from the command line get a port section if they had none."""
    sections: dict[str, dict[str, str]] = {"global": {}}
    lines: dict[tuple[str, str], int] = {}
    tables: list[UnicastMasterTable] = []
    section = "global"
    table: dict | None = None

    def close_table(at_line: int) -> None:
        nonlocal table
        if table is None:
            return
        if table["table_id"] is None:
            raise ConfigFileError("a unicast_master_table needs a table_id", filename=filename, line=at_line, section=UNICAST_SECTION)
        if any(t.table_id == table["table_id"] for t in tables):
            raise ConfigFileError(f"table_id {table['table_id']} defined twice", filename=filename, line=at_line,
                                  section=UNICAST_SECTION, option="table_id")
        tables.append(UnicastMasterTable(table["table_id"], table["lqi"], table["peer"], tuple(table["masters"])))
        table = None

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _SECTION_RE.match(line)
        if m:
            close_table(number)
            section = m.group(1)
            if section == UNICAST_SECTION:
                table = {"table_id": None, "lqi": 0, "peer": None, "masters": []}
            else:
                sections.setdefault(section, {})
            continue
        if line.startswith("["):
            raise ConfigFileError(f"malformed section header {line!r}", filename=filename, line=number)
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise ConfigFileError("option without a value", filename=filename, line=number, section=section, option=parts[0])
        name, value = parts[0], parts[1].strip()
        if table is not None:
            try:
                if name == "table_id":
                    tid = int(value)
                    if not 1 <= tid <= 2**31 - 1:
                        raise ValueError("expected an integer in 1..2147483647")
                    table["table_id"] = tid
                elif name == "logQueryInterval":
                    lqi = int(value)
                    if not -128 <= lqi <= 127:
                        raise ValueError("expected an integer in -128..127")
                    table["lqi"] = lqi
                elif name == "peer_address":
                    table["peer"] = value
                elif name in _TRANSPORTS:
                    table["masters"].append(UnicastMaster(name, _check_address(name, value)))
                else:
                    raise ValueError("unknown entry; expected table_id, logQueryInterval, peer_address, UDPv4, UDPv6 or L2")
            except ValueError as exc:
                raise ConfigFileError(str(exc), filename=filename, line=number, section=UNICAST_SECTION, option=name) from None
            continue
        if name in sections[section]:
            raise ConfigFileError(f"set twice (first on line {lines[(section, name)]})", filename=filename, line=number,
                                  section=section, option=name)
        sections[section][name] = value
        lines[(section, name)] = number
    close_table(len(text.splitlines()))

    for name, value in (overrides or {}).items():
        sections["global"][name] = value
        lines.pop(("global", name), None)
    for ifname in interfaces:
        sections.setdefault(ifname, {})
    try:
        clock = core_config.parse(sections)
    except ConfigError as exc:
        line = lines.get((exc.section or "", exc.option or ""))
        origin = filename if line is not None or exc.option not in (overrides or {}) else "command line"
        raise ConfigFileError(exc.reason, filename=origin, line=line, section=exc.section, option=exc.option) from None
    for ifname, port in clock.ports:
        if port.unicast_master_table and not any(t.table_id == port.unicast_master_table for t in tables):
            raise ConfigFileError(f"no [unicast_master_table] with table_id {port.unicast_master_table}",
                                  filename=filename, line=lines.get((ifname, "unicast_master_table")), section=ifname,
                                  option="unicast_master_table")
    return DaemonConfig(clock=clock, unicast_master_tables=tuple(tables))


def read_config_file(path: str, *, overrides: Mapping[str, str] | None = None, interfaces: tuple[str, ...] = ()) -> DaemonConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigFileError(f"cannot read: {exc.strerror}", filename=path) from None
    except UnicodeDecodeError:
        raise ConfigFileError("not UTF-8 text", filename=path) from None
    return parse_config_text(text, filename=path, overrides=overrides, interfaces=interfaces)
