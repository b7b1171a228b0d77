"""A ONE-STEP grandmaster and a free-running ptp4l slave in a netns lab: one run, its figures. Shared by
``tests/lab/test_dataplane_onestep.py`` (bounds) and ``bench/dataplane.py`` (section "onestep").

ptp4l cannot be one-step with software stamps, so the GM is a ptp-switch daemon (``GM_OPTIONS``):
``twoStepFlag 0``, ``free_running 1`` (its virtual clock over CLOCK_REALTIME never touches the system
clock) and ``one_step_dataplane 1``: it reads its clock, writes that time into the Sync, records the
send for its own eBPF dataplane, and its port's tc egress adds the time from the clock read to there.

One Sync a second (``logSyncInterval 0``, the default profile's rate). A free-running ptp4l 3.1.1 logs
the offset of one Sync per ``freq_est_interval`` (1 s here), so at 8 Sync/s the figures would be those
of one Sync in eight, always the same one of the eight within a run and a different one from run to run.
Those eight are not alike on this VM: measured with tracepoints (a one-step GM on a direct veth, 8
Sync/s), the time from the GM's egress clock read to the peer's RX stamp was 4.0-4.7 us for the Sync
sent 0.2 ms after an Announce (code and data still in cache) and 7-9 us for the other seven. So which
Sync ptp4l happened to log moved a run's mean offset by ~2 us, and direct and switched runs beside each
other drew independently. At one Sync a second every Sync is logged.
"""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from topologies import ptp4l as p4
from topologies.daemon import start_switch
from topologies.netns import Lab, stop_process

FLAG = {"UDPv4": "-4", "UDPv6": "-6", "L2": "-2"}
GM_OPTIONS = {"priority1": "10", "twoStepFlag": "0", "free_running": "1", "one_step_dataplane": "1",
              "logSyncInterval": "0"}
STAMPER_LINE = "stamped at tc egress by the eBPF dataplane"     # the GM's dataplane is attached
STAMPED = re.compile(r"one-step (\d+) \(dataplane-stamped (\d+), not recorded (\d+)\)")   # its stop line
TRIM = 0.05   # "core rms": without the largest 5 % of |offset| (1-2 of ~30)


class OneStepError(RuntimeError):
    """The one-step GM did not start or the slave logged too few offsets."""


def trimmed_rms(offsets: "list[int] | tuple[int, ...]", trim: float = TRIM) -> float:
    """rms of ``offsets`` without the largest ``trim`` share of |offset| (nan if nothing is left)."""
    return p4.rms_without_worst(offsets, drop=math.ceil(trim * len(offsets)))


@dataclasses.dataclass(frozen=True)
class OneStepRun:
    stats: p4.OffsetStats        # every sample after the warm-up (ptp4l's usual figures)
    core_rms_ns: float           # rms without the largest TRIM share of |offset|
    offsets: tuple[int, ...]     # the samples after the warm-up
    gm_text: str                 # the GM's log
    capture: Path | None         # tshark capture on ``capture_on``, if asked
    sends: int | None            # the GM's one-step sends, and how many were recorded for its egress stamp
    stamped: int | None
    not_recorded: int | None

    def line(self) -> str:
        return f"{self.stats.line()} core_rms={self.core_rms_ns:.0f}"

    def row(self) -> dict[str, Any]:
        """The figures as a bench / results row (ns, rounded)."""
        st = self.stats
        ok = st.samples > 0
        return {"samples": st.samples, "rms_ns": round(st.rms_ns) if ok else None,
                "core_rms_ns": round(self.core_rms_ns) if not math.isnan(self.core_rms_ns) else None,
                "max_abs_ns": st.max_abs_ns, "mean_ns": round(st.mean_ns) if ok else None,
                "over_10us": sum(abs(o) > 10_000 for o in self.offsets),
                "mean_path_delay_ns": round(st.mean_path_delay_ns) if ok else None,
                "gm_one_step_sends": self.sends, "gm_dataplane_stamped": self.stamped}


def run(lab: Lab, transport: str, tag: str, *, duration_s: float, warmup_s: float, min_samples: int = 8,
        capture_on: str | None = None, capture_node: str = "sw1", capture_s: float = 5,
        gm_options: Mapping[str, str] | None = None) -> OneStepRun:
    """One-step GM on node ``gm`` -> free-running ptp4l slave on ``sl`` for ``duration_s``; the slave's
    offsets after ``warmup_s``. ``tag`` names this run's files and UDS (several runs per lab). With
    ``capture_on`` a tshark capture of ``capture_s`` on that interface of ``capture_node`` after the
    warm-up. ``gm_options`` replaces GM_OPTIONS (e.g. another Sync rate). Raises OneStepError if the GM
    does not come up in 60 s or the slave logs too few offsets."""
    gm, gm_log, _uds = start_switch(lab, "gm", GM_OPTIONS if gm_options is None else gm_options, [FLAG[transport]],
                                    tag=f"os-{tag}")
    cap = None
    try:
        deadline = time.monotonic() + 60   # the GM compiles and attaches its own dataplane first
        while STAMPER_LINE not in gm_log.read_text(errors="replace"):
            if gm.poll() is not None or time.monotonic() > deadline:
                raise OneStepError(f"{tag}: one-step GM did not start:\n{gm_log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        sl = p4.start_ptp4l(lab, "sl", "slave", transport=FLAG[transport], duration_s=duration_s, tag=tag)
        if capture_on is not None:
            time.sleep(warmup_s)
            proc, cap = p4.start_tshark(lab, capture_node, capture_on, duration_s=capture_s)
        try:
            sl.proc.wait(timeout=duration_s + 15)
        except subprocess.TimeoutExpired:
            pass
        text = sl.stop()
        if capture_on is not None:
            proc.wait(timeout=30)
    finally:
        stop_process(gm)
    gm_text = gm_log.read_text(errors="replace")
    st = p4.offset_stats(text, warmup_s=warmup_s)
    if st.samples < min_samples:
        raise OneStepError(f"{tag}: slave produced {st.samples} samples\nslave:\n{text[-1500:]}\nGM:\n{gm_text[-1500:]}")
    samples = p4.parse_offsets(text)
    after = tuple(x.offset_ns for x in samples if x.t_s - samples[0].t_s >= warmup_s)
    m = STAMPED.search(gm_text)
    sends, stamped, lost = (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (None, None, None)
    return OneStepRun(st, trimmed_rms(after), after, gm_text, cap, sends, stamped, lost)
