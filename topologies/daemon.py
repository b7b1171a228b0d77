"""The ptp-switch daemon in a netns lab: its config file and its start, shared by the lab tests and the
benchmarks (``tests/lab/conftest.py`` re-exports these names for the tests).

- ``PTP_SWITCH``: the console script next to this interpreter (the project's venv).
- ``SWITCH_COMMON``: the lab's ptp4l options (``topologies.ptp4l.COMMON``) minus ``free_running`` and
  ``freq_est_interval``, which are ptp4l's: the daemon steers only its own virtual clock.
- ``switch_config_text`` / ``start_switch``: a config file with those options, then the caller's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from topologies import ptp4l as p4
from topologies.netns import Lab

PTP_SWITCH = str(Path(sys.executable).with_name("ptp-switch"))
SWITCH_COMMON = {k: v for k, v in p4.COMMON.items() if k not in ("free_running", "freq_est_interval")}


def switch_config_text(uds_address: str, options: Mapping[str, Any] | None = None) -> str:
    """A ptp-switch config: ``[global]`` with SWITCH_COMMON, then ``options`` (in order), then uds_address."""
    opts = {**SWITCH_COMMON, **(options or {})}
    return "[global]\n" + "".join(f"{k}\t\t{v}\n" for k, v in opts.items()) + f"uds_address\t\t{uds_address}\n"


def start_switch(lab: Lab, node: str, options: Mapping[str, Any], args: list[str], tag: str = "sw",
                 interfaces: list[str] | None = None) -> tuple[subprocess.Popen[Any], Path, str]:
    """``ptp-switch run`` in ``node`` (tracked by the lab); returns (process, log path, UDS path).
    ``tag`` names its files and UDS, so several daemons can run in one lab."""
    uds = lab.uds_path(node, tag)
    cfg = lab.workdir / f"{tag}-{node}.cfg"
    cfg.write_text(switch_config_text(uds, options))
    log = lab.workdir / f"{tag}-{node}.log"
    argv = [PTP_SWITCH, "run", "-m", "-f", str(cfg), *args]
    for i in interfaces or list(lab.topology.ports(node)):
        argv += ["-i", i]
    proc = lab.popen(node, argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, log, uds
