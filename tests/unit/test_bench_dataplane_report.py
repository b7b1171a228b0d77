"""bench.report_dataplane: bench.dataplane's flat JSON rows -> section 3's readable tables (pure)."""

from __future__ import annotations

from bench.report import MEASURED, Report, Section, from_json, to_json, to_markdown
from bench.report_dataplane import dataplane_tables

DATA = {
    "benchmark": "dataplane", "repeat": 200000, "rounds": 5, "floor_xdp_ns": 21, "floor_tc_ns": 26,
    "unit": "kernel mean ns per run", "residence_topology": "gm sw1 >i sl | sw1 sl2",
    "rows": [
        {"section": "cost", "frame": "non_ptp_udp4", "hook": "xdp_ingress", "variant": "full program",
         "ns_per_packet": 25, "above_floor_ns": 4, "spread_ns": 1},
        {"section": "cost", "frame": "ptp_event_udp4", "hook": "tc_egress", "variant": "full program",
         "ns_per_packet": 105, "above_floor_ns": 79, "spread_ns": 6},
        {"section": "cost", "frame": "ptp_event_udp4", "hook": "tc_egress", "variant": "cut after parse",
         "ns_per_packet": 35, "above_floor_ns": 9, "spread_ns": 7},
        {"section": "cost", "frame": "ptp_general_udp4", "hook": "tc_egress", "variant": "full program",
         "ns_per_packet": 79, "above_floor_ns": 53, "spread_ns": 2},
        {"section": "throughput", "payload_bytes": 64, "mode": "bridge", "reps": 6, "duration_s": 3,
         "forwarded_kpps_mean": 208, "forwarded_kpps_sd": 45.5, "mbit_s_mean": 176, "overhead_pct": None,
         "overhead_ci95_pct": None},
        {"section": "throughput", "payload_bytes": 64, "mode": "bridge+ebpf", "reps": 6, "duration_s": 3,
         "forwarded_kpps_mean": 190, "forwarded_kpps_sd": 43.5, "mbit_s_mean": 161, "overhead_pct": 8.44,
         "overhead_ci95_pct": 24.3},
        {"section": "residence", "egress_port": "p2", "sent": 1000, "matched": 998, "residence_p50_us": 312,
         "residence_p99_us": 1000, "abs_error_p50_ns": 291, "abs_error_p99_ns": 1340, "abs_error_max_ns": 40000,
         "mean_error_ns": -311, "transport": "udp4", "ingress_hook": "xdp", "port_to": "sl (queue inside)"},
    ],
}


def test_main_table_is_kind_by_hook_with_targets() -> None:
    cols, rows, notes, tables = dataplane_tables(DATA)
    assert [c.key for c in cols][:4] == ["kind", "hook", "ns", "above_ns"]
    by = {(r["kind"], r["hook"]): r for r in rows}
    assert len(rows) == 3  # full programs only; the cut goes to the breakdown table
    non = by[("non-PTP (UDP/IPv4, port 53)", "XDP ingress")]
    assert (non["target_ns"], non["met_floor"], non["met_raw"]) == (15, "yes", "no")
    ev = by[("PTP event (Sync, UDP/IPv4)", "tc egress")]
    assert (ev["target_ns"], ev["met_floor"], ev["met_raw"]) == (80, "yes", "no")
    gen = by[("PTP general (Follow_Up, UDP/IPv4)", "tc egress")]
    assert gen["target_ns"] is None and gen["met_floor"] == "—"
    assert any("XDP 21 ns, tc 26 ns" in n for n in notes)
    titles = [t.title for t in tables]
    assert len(tables) == 3 and "profiling cut" in titles[0] and "throughput" in titles[1] and "residence" in titles[2]
    cut = tables[0].rows
    assert [r["stage"] for r in cut] == ["cut after parse", "full program"]
    tp = {r["mode"]: r for r in tables[1].rows}
    assert tp["bridge"]["met"] == "baseline" and tp["bridge+ebpf"]["met"] == "no" and tp["bridge+ebpf"]["overhead"] == 8.44
    res = tables[2].rows[0]
    assert res["res_p50"] == 312_000 and res["matched"] == "998 / 1000" and res["to"] == "sl (queue inside)"


def test_tables_render_and_survive_json() -> None:
    cols, rows, notes, tables = dataplane_tables(DATA)
    sec = Section(3, "Dataplane cost", MEASURED, columns=cols, rows=rows, notes=notes, tables=tables)
    rep = Report(started_utc="2026-11-21T15:30:00Z", command="make bench", machine={}, sections=[sec])
    md = to_markdown(rep)
    assert "| PTP event (Sync, UDP/IPv4) | tc egress | 105 ns | 79 ns |" in md
    assert "**Bulk UDP throughput" in md and "| 64 | bridge+ebpf | 190 |" in md and "8.4 %" in md
    back = from_json(to_json(rep))
    assert back.sections[0].tables[1].rows == tables[1].rows
    assert to_markdown(back) == md


def test_missing_cost_promotes_the_next_table() -> None:
    data = {"rows": [r for r in DATA["rows"] if r["section"] != "cost"]}
    cols, rows, notes, tables = dataplane_tables(data)
    assert rows and rows[0]["mode"] == "bridge" and len(tables) == 1


def test_oracle_and_unknown_sections_get_tables() -> None:
    data = {"oracle_duration_s": 26, "rows": DATA["rows"] + [
        {"section": "oracle", "case": "direct veth", "transport": "UDPv4", "samples": 20, "rms_ns": 592,
         "max_abs_ns": 1400, "mean_ns": -30, "mean_path_delay_ns": 1500},
        {"section": "budget", "hook": "tc", "hops": 3, "part": "slave sl", "rms_ns": 6400, "extra": [1, 2]},
    ]}
    _, _, _, tables = dataplane_tables(data)
    orc = next(t for t in tables if "oracle" in t.title)
    assert orc.rows[0]["rms"] == 592 and orc.rows[0]["case"] == "direct veth"
    budget = next(t for t in tables if "'budget'" in t.title)
    assert budget.rows == [{"hook": "tc", "hops": 3, "part": "slave sl", "rms_ns": 6400}]
    assert [c.key for c in budget.columns] == ["hook", "hops", "part", "rms_ns"]
