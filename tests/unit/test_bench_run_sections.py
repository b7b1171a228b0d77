"""bench.run's section builders over stubbed measurements: every row fits the section's columns
(Section.check), the status follows the rows, and the markdown renders (no lab, no root)."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from bench import run as R
from bench import scenarios_cpu, scenarios_failover
from bench.report import MEASURED, NOT_MEASURED, PARTIAL, section_markdown
from bench.scenarios import ChainSpec, Impl
from bench.scenarios_capture import HopResidence, LinkDelay
from bench.scenarios_run import ChainResult


def _ctx(tmp_path: pathlib.Path, quick: bool = True) -> R.Ctx:
    return R.Ctx(argparse.Namespace(quick=quick, duration=None, out=tmp_path))


def test_section_cpu_rows_and_failures(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(grid, window_s, log=print):
        res = scenarios_cpu.CpuResult(commands=["ip netns exec x ptp-switch run ..."])
        res.rows = [scenarios_cpu.CpuRow("ptp-switch", 2, -3, window_s, 1.2, 67.0),
                    scenarios_cpu.CpuRow("linuxptp", 2, -3, error="RuntimeError: no offsets within 40 s")]
        return res

    monkeypatch.setattr(scenarios_cpu, "run_cpu", fake)
    sec = R.section_cpu(_ctx(tmp_path))
    sec.check()
    assert sec.status == PARTIAL and sec.rows[0]["us_pkt"] == 179 and sec.rows[0]["sync_rate"] == 8.0
    assert "no offsets" in sec.rows[1]["reason"]
    assert "| ptp-switch | BC, 2 ports | -3 | 8 | 67 | 1.2 % |" in "\n".join(section_markdown(sec))


def test_section_failover_rows(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(trials, log=print):
        res = scenarios_failover.FailoverResult(commands=["# lab"])
        res.trials = [scenarios_failover.Trial("dual-gm", "ptp-switch BC", 1, 2.8, 2.9, 3.8),
                      scenarios_failover.Trial("atr", "linuxptp client", 1, 3.7, None, None, note="no offset from srv2 within 15 s")]
        return res

    monkeypatch.setattr(scenarios_failover, "run_failover", fake)
    sec = R.section_failover(_ctx(tmp_path))
    sec.check()
    assert sec.status == PARTIAL and len(sec.rows) == 2
    monkeypatch.setattr(scenarios_failover, "run_failover",
                        lambda trials, log=print: scenarios_failover.FailoverResult(errors=["atr: LabError: boom"]))
    sec = R.section_failover(_ctx(tmp_path))
    sec.check()
    assert sec.status == NOT_MEASURED and "boom" in sec.reason


def test_section_residence_with_delay_req_and_links(tmp_path: pathlib.Path) -> None:
    ctx = _ctx(tmp_path)
    r = ChainResult(spec=ChainSpec(Impl.PTPS_E2E, hops=1), duration_s=10)
    r.hops = [HopResidence("sw1", [300_000.0], [300_500], [-500.0])]
    r.reverse_hops = [HopResidence("sw1", [20_000.0], [20_800], [-800.0])]
    r.links = [LinkDelay("gm->sw1", [10_000, 12_000], [2_000, 3_000])]
    bc = ChainResult(spec=ChainSpec(Impl.PTPS_BC, hops=1), duration_s=10)
    ctx.chains = [r, bc]
    sec = R.section_residence(ctx)
    sec.check()
    assert sec.status == MEASURED and [row["msg"] for row in sec.rows] == ["Sync (GM -> slave)", "Delay_Req (slave -> GM)"]
    (links,) = sec.tables
    assert links.rows[0]["asym_ns"] == round((11_000 - 2_500) / 2)
    assert "Link delays" in "\n".join(section_markdown(sec))


def test_hops_pivot() -> None:
    rows = [{"impl": "plain bridge", "hops": 1, "rms_ns": 272_000, "max_ns": 701_000},
            {"impl": "plain bridge", "hops": 2, "reason": "lab build failed"},
            {"impl": "linuxptp BC", "hops": 2, "rms_ns": 1_690, "max_ns": 3_820}]
    t = R.hops_pivot(rows, (1, 2, 4))
    assert [c.title for c in t.columns] == ["implementation", "1 hop", "2 hops", "4 hops"]
    assert t.rows == [{"impl": "plain bridge", "h1": "272 µs (701 µs)", "h2": "failed"},
                      {"impl": "linuxptp BC", "h2": "1.69 µs (3.82 µs)"}]
