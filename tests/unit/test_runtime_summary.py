"""Runtime's ptp4l-style offset summary and the run command's ptp4l option mapping (no sockets)."""

from __future__ import annotations

import argparse
import logging

import pytest

from controlplane.core.actions import OffsetSample
from controlplane.runtime.loop import Runtime
from controlplane.services.cli import build_parser
from controlplane.services.commands.run import overrides_from_args


class _Clock:
    def from_system_ns(self, ns: int) -> int:
        return ns

    def adjust_frequency(self, freq_ppb: float) -> None:
        raise AssertionError("not expected")

    def step(self, delta_ns: int) -> None:
        raise AssertionError("not expected")

    frequency_ppb = 0.0


class _Now:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def _runtime(summary_interval: int, now: _Now) -> Runtime:
    return Runtime(node=None, ports={}, clock=_Clock(), summary_interval=summary_interval, monotonic_ns=now)  # type: ignore[arg-type]


@pytest.mark.parametrize("summary_interval, period_ns, want", [(-3, 125_000_000, "master offset"), (0, 125_000_000, "rms")])
def test_summary_lines_like_ptp4l(summary_interval: int, period_ns: int, want: str, caplog: pytest.LogCaptureFixture) -> None:
    now = _Now()
    rt = _runtime(summary_interval, now)
    with caplog.at_level(logging.INFO, logger="ptp-switch"):
        for i in range(20):
            now.ns = i * period_ns
            rt._offset(OffsetSample(1, (-1) ** i * 100, 1500, 2.0, 2))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("master offset")
    assert all(want in line for line in lines[1:]) and len(lines) >= 2
    if want == "rms":
        assert lines[1].startswith("rms  100 max  100") and len(lines) <= 4


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_run_options_map_to_ptp4l_option_names() -> None:
    o = dict(overrides_from_args(_args("-i", "a", "-i", "b", "-2", "-P", "-s", "-H")))
    assert o == {"network_transport": "L2", "delay_mechanism": "P2P", "slaveOnly": "1", "time_stamping": "hardware",
                 "clock_type": "BC"}
    o = dict(overrides_from_args(_args("-i", "a", "-6", "--clock-type", "P2P_TC", "--uds", "/tmp/x")))
    assert o == {"network_transport": "UDPv6", "clock_type": "P2P_TC", "uds_address": "/tmp/x"}
    with pytest.raises(SystemExit):
        _args("-i", "a", "-2", "-4")
