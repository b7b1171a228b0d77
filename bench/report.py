"""Statistics and the bench report (JSON + markdown), kept pure so a unit test can check every line.

A run is a ``Report``: the machine it ran on, the load around it, and one ``Section`` per suite
section. A section is either measured (a table of rows; numbers in nanoseconds are kept as integers
in the JSON and rendered with a unit in the markdown) or "not measured" with the reason — a section
never holds an invented figure. ``write_report`` is the only function here that touches the disk.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

MEASURED = "measured"
PARTIAL = "partial"  # some rows measured, others carry a reason
NOT_MEASURED = "not measured"
_STATUSES = (MEASURED, PARTIAL, NOT_MEASURED)


class ReportError(ValueError):
    """A report or section was built with inconsistent data (the caller's bug)."""


# -- statistics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stats:
    """Summary of a series of signed values in nanoseconds (offsets, residence errors)."""

    n: int
    mean_ns: float
    rms_ns: float
    sd_ns: float
    max_abs_ns: float
    p50_abs_ns: float
    p99_abs_ns: float

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ReportError("percentile of an empty series")
    if not 0.0 <= q <= 100.0:
        raise ReportError(f"percentile {q} outside 0..100")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values_ns: Iterable[float]) -> Stats | None:
    """n, mean, rms, sd, max |x|, p50 |x|, p99 |x| of a series; ``None`` for an empty one."""
    vals = [float(v) for v in values_ns]
    if not vals:
        return None
    if any(math.isnan(v) or math.isinf(v) for v in vals):
        raise ReportError("series contains NaN or infinity")
    n = len(vals)
    mean = sum(vals) / n
    rms = math.sqrt(sum(v * v for v in vals) / n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / n)
    absv = sorted(abs(v) for v in vals)
    return Stats(n=n, mean_ns=mean, rms_ns=rms, sd_ns=sd, max_abs_ns=absv[-1],
                 p50_abs_ns=percentile(absv, 50), p99_abs_ns=percentile(absv, 99))


# -- formatting ------------------------------------------------------------------------------
def fmt_ns(value: float | int | None) -> str:
    """A duration in ns with a readable unit: ``328 ns``, ``2.8 µs``, ``1.99 ms``, ``4.6 s``."""
    if value is None:
        return "—"
    v = float(value)
    a = abs(v)
    if a < 1e3:
        return f"{v:.0f} ns"
    for div, unit in ((1e3, "µs"), (1e6, "ms"), (1e9, "s")):
        if a < div * 1e3 or unit == "s":
            x = v / div
            digits = 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0
            return f"{x:.{digits}f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_value(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if unit == "ns":
        return fmt_ns(value)
    if unit == "s":
        return f"{float(value):.1f} s"
    if unit == "%":
        return f"{float(value):.1f} %"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- report model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    key: str
    title: str
    unit: str = ""  # "ns" (rendered with a unit), "s", "%", or "" (as is)


@dataclass
class Table:
    """A further table of a section (a section's main table is its own columns/rows)."""

    title: str
    columns: list[Column] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    number: int
    title: str
    status: str = NOT_MEASURED
    reason: str = ""
    columns: list[Column] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    tables: list[Table] = field(default_factory=list)  # further tables, rendered after the main one

    def check(self) -> None:
        if self.status not in _STATUSES:
            raise ReportError(f"section {self.number}: status {self.status!r} not one of {_STATUSES}")
        if self.status == NOT_MEASURED and not self.reason:
            raise ReportError(f"section {self.number}: 'not measured' needs a reason")
        if self.status == NOT_MEASURED and self.rows:
            raise ReportError(f"section {self.number}: 'not measured' but has rows")
        if self.status in (MEASURED, PARTIAL) and not self.rows:
            raise ReportError(f"section {self.number}: status {self.status!r} without rows")
        keys = {c.key for c in self.columns}
        for i, row in enumerate(self.rows):
            unknown = set(row) - keys - {"reason", "extra"}
            if unknown:
                raise ReportError(f"section {self.number} row {i}: keys {sorted(unknown)} have no column")
        if self.status == NOT_MEASURED and self.tables:
            raise ReportError(f"section {self.number}: 'not measured' but has tables")
        for t in self.tables:
            tkeys = {c.key for c in t.columns}
            for i, row in enumerate(t.rows):
                unknown = set(row) - tkeys - {"reason", "extra"}
                if unknown:
                    raise ReportError(f"section {self.number} table {t.title!r} row {i}: keys {sorted(unknown)} have no column")

    @classmethod
    def not_measured(cls, number: int, title: str, reason: str, **kw: Any) -> Section:
        return cls(number=number, title=title, status=NOT_MEASURED, reason=reason, **kw)


@dataclass
class Report:
    started_utc: str  # ISO 8601, e.g. 2026-11-21T13:40:00Z
    command: str
    machine: dict[str, str]
    sections: list[Section]
    quick: bool = False
    finished_utc: str = ""
    load: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        """File name stem: ``2026-11-21_1340`` (``quick-`` prefixed for smoke runs)."""
        d = self.started_utc
        if len(d) < 16 or d[4] != "-" or d[10] != "T":
            raise ReportError(f"started_utc {d!r} is not ISO 8601 (YYYY-MM-DDTHH:MM...)")
        stem = f"{d[:10]}_{d[11:13]}{d[14:16]}"
        return f"quick-{stem}" if self.quick else stem


def to_json(report: Report) -> str:
    for s in report.sections:
        s.check()
    data = dataclasses.asdict(report)
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"


def from_json(text: str) -> Report:
    data = json.loads(text)
    sections = []
    for s in data.pop("sections"):
        cols = [Column(**c) for c in s.pop("columns")]
        tables = [Table(title=t["title"], columns=[Column(**c) for c in t["columns"]], rows=t["rows"], notes=t.get("notes", []))
                  for t in s.pop("tables", [])]
        sections.append(Section(columns=cols, tables=tables, **s))
    return Report(sections=sections, **data)


def to_markdown(report: Report) -> str:
    for s in report.sections:
        s.check()
    out: list[str] = []
    kind = "quick smoke run — short, figures are not representative" if report.quick else "full run"
    out.append(f"# ptp-switch bench, {report.started_utc} ({kind})")
    out.append("")
    out.append(f"Command: `{report.command}`")
    if report.finished_utc:
        out.append(f"Finished: {report.finished_utc}")
    out.append("")
    out.append("## Machine")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    for k, v in report.machine.items():
        out.append(f"| {_md_cell(k)} | {_md_cell(str(v))} |")
    for k, v in report.load.items():
        out.append(f"| {_md_cell(k)} | {_md_cell(str(v))} |")
    out.append("")
    for note in report.notes:
        out.append(f"- {note}")
    if report.notes:
        out.append("")
    out.append("## Summary")
    out.append("")
    out.append("| section | status |")
    out.append("|---|---|")
    for s in report.sections:
        status = s.status if s.status != NOT_MEASURED else f"not measured: {s.reason}"
        out.append(f"| {s.number}. {_md_cell(s.title)} | {_md_cell(status)} |")
    out.append("")
    for s in report.sections:
        out.extend(section_markdown(s))
    return "\n".join(out).rstrip() + "\n"


def section_markdown(s: Section) -> list[str]:
    out = [f"## {s.number}. {s.title}", ""]
    if s.status == NOT_MEASURED:
        out.append(f"**not measured:** {s.reason}")
        out.append("")
    else:
        if s.reason:
            out.append(f"({s.status}: {s.reason})")
            out.append("")
        out.extend(table_markdown(s.columns, s.rows))
        for t in s.tables:
            out.append(f"**{t.title}**")
            out.append("")
            out.extend(table_markdown(t.columns, t.rows))
            for note in t.notes:
                out.append(f"- {note}")
            if t.notes:
                out.append("")
    for note in s.notes:
        out.append(f"- {note}")
    if s.notes:
        out.append("")
    if s.commands:
        out.append("Commands:")
        out.append("")
        out.append("```")
        out.extend(s.commands)
        out.append("```")
        out.append("")
    if s.elapsed_s:
        out.append(f"(section took {s.elapsed_s:.0f} s)")
        out.append("")
    return out


def table_markdown(columns: list[Column], rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table (first column left-aligned, the others right-aligned) and its rows' reasons."""
    out = ["| " + " | ".join(_md_cell(c.title) for c in columns) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for row in rows:
        cells = []
        for i, c in enumerate(columns):
            if c.key in row:
                cells.append(_md_cell(fmt_value(row[c.key], c.unit)))
            elif i == len(columns) - 1 and row.get("reason"):
                cells.append(_md_cell(f"not measured: {row['reason']}"))
            else:
                cells.append("—")
        out.append("| " + " | ".join(cells) + " |")
    reasons = [r for r in rows if r.get("reason")]
    if reasons:
        out.append("")
        for r in reasons:
            label = r.get(columns[0].key, "?") if columns else "?"
            out.append(f"- {label}: not measured: {r['reason']}")
    out.append("")
    return out


def write_report(report: Report, outdir: pathlib.Path, *, update_latest: bool = True) -> list[pathlib.Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``outdir`` (and ``latest.md``); return the paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    js = to_json(report)
    md = to_markdown(report)
    paths = [outdir / f"{report.stem}.json", outdir / f"{report.stem}.md"]
    paths[0].write_text(js)
    paths[1].write_text(md)
    if update_latest:
        latest = outdir / "latest.md"
        latest.write_text(md)
        paths.append(latest)
    return paths
