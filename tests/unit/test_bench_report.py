"""bench.report: statistics, formatting, and the JSON / markdown report (pure, no root)."""

from __future__ import annotations

import json
import math

import pytest

from bench.report import (
    MEASURED,
    NOT_MEASURED,
    PARTIAL,
    Column,
    Report,
    ReportError,
    Section,
    fmt_ns,
    from_json,
    percentile,
    summarize,
    to_json,
    to_markdown,
    write_report,
)


def _report(**kw) -> Report:
    s1 = Section(
        number=1,
        title="slave error vs hops",
        status=PARTIAL,
        columns=[Column("impl", "implementation"), Column("hops", "hops"), Column("rms_ns", "offset rms", "ns"),
                 Column("max_ns", "max |offset|", "ns")],
        rows=[
            {"impl": "plain bridge", "hops": 1, "rms_ns": 273_000, "max_ns": 1_860_000},
            {"impl": "linuxptp E2E_TC", "hops": 1, "rms_ns": 2_800.4, "max_ns": 9_769},
            {"impl": "ptp-switch BC", "hops": 1, "reason": "daemon has no BC mode yet"},
        ],
        commands=["ip netns exec pts1-gm ptp4l -i eth0 -S -4 -m -f gm.cfg"],
        notes=["load average 1.2 during the run"],
        elapsed_s=61.0,
    )
    s3 = Section.not_measured(3, "dataplane ns/packet", "bench.dataplane is not in the tree yet")
    base = dict(started_utc="2026-11-21T13:40:05Z", command="make bench", machine={"kernel": "6.18.0", "cpus": "2"},
                sections=[s1, s3])
    base.update(kw)
    return Report(**base)


def test_summarize_known_series() -> None:
    st = summarize([3, -4, 0, 4, -3])
    assert st is not None
    assert st.n == 5
    assert st.mean_ns == 0
    assert st.rms_ns == pytest.approx(math.sqrt(50 / 5))
    assert st.sd_ns == pytest.approx(st.rms_ns)
    assert st.max_abs_ns == 4
    assert st.p50_abs_ns == 3


def test_summarize_empty_and_bad() -> None:
    assert summarize([]) is None
    with pytest.raises(ReportError):
        summarize([1.0, float("nan")])


def test_percentile_interpolates_and_checks() -> None:
    assert percentile([0, 10], 50) == 5
    assert percentile([1, 2, 3, 4, 5], 99) == pytest.approx(4.96)
    with pytest.raises(ReportError):
        percentile([], 50)
    with pytest.raises(ReportError):
        percentile([1], 101)


@pytest.mark.parametrize(
    ("ns", "text"),
    [(328, "328 ns"), (-999, "-999 ns"), (2_800, "2.80 µs"), (17_424, "17.4 µs"), (273_000, "273 µs"),
     (1_990_000, "1.99 ms"), (4_600_000_000, "4.60 s"), (None, "—")],
)
def test_fmt_ns(ns, text) -> None:
    assert fmt_ns(ns) == text


def test_markdown_has_every_section_reason_and_command() -> None:
    md = to_markdown(_report())
    assert "# ptp-switch bench, 2026-11-21T13:40:05Z (full run)" in md
    assert "| kernel | 6.18.0 |" in md
    assert "## 1. slave error vs hops" in md
    assert "| plain bridge | 1 | 273 µs | 1.86 ms |" in md
    assert "| linuxptp E2E_TC | 1 | 2.80 µs | 9.77 µs |" in md
    assert "| ptp-switch BC | 1 | — | not measured: daemon has no BC mode yet |" in md
    assert "**not measured:** bench.dataplane is not in the tree yet" in md
    assert "| 3. dataplane ns/packet | not measured: bench.dataplane is not in the tree yet |" in md
    assert "ip netns exec pts1-gm ptp4l" in md
    assert "quick" not in md


def test_json_round_trip_keeps_raw_numbers() -> None:
    rep = _report()
    text = to_json(rep)
    data = json.loads(text)
    assert data["sections"][0]["rows"][0]["rms_ns"] == 273_000
    assert data["sections"][1]["status"] == NOT_MEASURED
    back = from_json(text)
    assert to_markdown(back) == to_markdown(rep)


@pytest.mark.parametrize(
    "section",
    [
        Section(number=2, title="x", status=NOT_MEASURED),  # no reason
        Section(number=2, title="x", status=MEASURED),  # no rows
        Section(number=2, title="x", status="done", rows=[{"a": 1}], columns=[Column("a", "a")]),
        Section(number=2, title="x", status=MEASURED, rows=[{"b": 1}], columns=[Column("a", "a")]),
        Section(number=2, title="x", status=NOT_MEASURED, reason="r", rows=[{"a": 1}], columns=[Column("a", "a")]),
    ],
)
def test_inconsistent_sections_are_refused(section: Section) -> None:
    with pytest.raises(ReportError):
        to_markdown(_report(sections=[section]))


def test_write_report_files_and_latest(tmp_path) -> None:
    paths = write_report(_report(), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["2026-11-21_1340.json", "2026-11-21_1340.md", "latest.md"]
    assert (tmp_path / "latest.md").read_text() == (tmp_path / "2026-11-21_1340.md").read_text()


def test_quick_run_is_labelled_and_leaves_latest_alone(tmp_path) -> None:
    (tmp_path / "latest.md").write_text("full\n")
    paths = write_report(_report(quick=True), tmp_path, update_latest=False)
    assert sorted(p.name for p in paths) == ["quick-2026-11-21_1340.json", "quick-2026-11-21_1340.md"]
    assert (tmp_path / "latest.md").read_text() == "full\n"
    assert "quick smoke run" in (tmp_path / "quick-2026-11-21_1340.md").read_text()


def test_bad_start_time_is_refused() -> None:
    with pytest.raises(ReportError):
        _ = _report(started_utc="yesterday").stem
