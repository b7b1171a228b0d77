"""The accuracy oracle: free-running ptp4l slave offsets (pure error, one shared clock).

direct veth < plain bridge << congested bridge. Generous ordering bounds (shared 2-vCPU machine).
"""

from __future__ import annotations

import pytest

from topologies import ptp4l
from topologies.model import Shaping

_RESULTS: dict[str, ptp4l.OffsetStats] = {}


@pytest.mark.parametrize("case", ["direct", "line-1", "line-1-congested"])
def test_oracle(make_lab, case: str) -> None:  # type: ignore[no-untyped-def]
    if case == "line-1-congested":
        lab = make_lab("line-1", shaping=Shaping())
    else:
        lab = make_lab(case)
    stats = ptp4l.run_pair(lab, "gm", "sl", duration_s=22, warmup_s=3)
    print(f"\n{case}: {stats.line()}")
    _RESULTS[case] = stats
    assert stats.samples >= 8
    assert stats.first_offset_after_s is not None and stats.first_offset_after_s < 15
    if case == "direct":
        assert stats.rms_ns < 20_000 and stats.mean_path_delay_ns < 30_000
    elif case == "line-1":
        assert stats.rms_ns < 100_000 and stats.mean_path_delay_ns < 100_000
    else:
        assert stats.rms_ns > 30_000 and stats.mean_path_delay_ns > 40_000
        if "direct" in _RESULTS:
            assert stats.rms_ns > 10 * _RESULTS["direct"].rms_ns
        if "line-1" in _RESULTS:
            assert stats.rms_ns > 3 * _RESULTS["line-1"].rms_ns
