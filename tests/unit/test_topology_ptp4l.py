"""Pure parsing of ptp4l 3.1.1 output (lines captured from this project's labs) and config writing."""

from __future__ import annotations

import math

import pytest

from topologies import ptp4l

# captured: ptp4l -S -4 -s -m (slave.cfg of ANCHORS.md, free_running 1), direct veth lab
SLAVE_LOG = """\
ptp4l[1014.914]: port 1: INITIALIZING to LISTENING on INIT_COMPLETE
ptp4l[1014.914]: port 0: INITIALIZING to LISTENING on INIT_COMPLETE
ptp4l[1018.170]: port 1: new foreign master 6a45a3.fffe.9aa45b-1
ptp4l[1018.749]: selected local clock 2aa75d.fffe.d61a72 as best master
ptp4l[1020.176]: selected best master clock 6a45a3.fffe.9aa45b
ptp4l[1020.176]: foreign master not using PTP timescale
ptp4l[1020.176]: port 1: LISTENING to UNCALIBRATED on RS_SLAVE
ptp4l[1021.296]: master offset       -651 s0 freq  -15317 path delay      1833
ptp4l[1022.300]: master offset       -408 s0 freq     -41 path delay      1549
ptp4l[1023.303]: master offset        515 s0 freq   +1378 path delay      2008
ptp4l[1024.304]: master offset       -516 s0 freq    -861 path delay      2178
ptp4l[1025.304]: master offset      -1309 s0 freq   -1131 path delay      1840
ptp4l[1026.308]: master offset       -247 s0 freq    +638 path delay      1419
ptp4l[1027.310]: master offset        122 s0 freq    +719 path delay      1770
ptp4l[1028.311]: master offset      -1189 s0 freq   -1140 path delay      1940
"""
# captured: the GM side
GM_LOG = """\
ptp4l[1014.412]: port 1: INITIALIZING to LISTENING on INIT_COMPLETE
ptp4l[1014.412]: port 0: INITIALIZING to LISTENING on INIT_COMPLETE
ptp4l[1018.169]: port 1: LISTENING to MASTER on ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES
ptp4l[1018.169]: selected local clock 6a45a3.fffe.9aa45b as best master
ptp4l[1018.169]: port 1: assuming the grand master role
"""
# the summary form (format of linuxptp clock.c stats output with summary_interval above the sync
# interval; written from that format, not captured)
SUMMARY_LOG = """\
ptp4l[100.000]: port 1: LISTENING to UNCALIBRATED on RS_SLAVE
ptp4l[104.000]: rms  412 max  801 freq   +12 +/-  30 delay  1500 +/-  90
ptp4l[108.000]: rms  300 max  700 freq   +10 +/-  20 delay  1400 +/-  80
ptp4l[112.000]: rms  500 max 1200 freq    -3 +/-  25
"""


def test_parse_offsets() -> None:
    s = ptp4l.parse_offsets(SLAVE_LOG)
    assert len(s) == 8
    assert s[0] == ptp4l.OffsetSample(1021.296, -651, 0, -15317, 1833)
    assert s[2].freq_ppb == 1378 and s[-1].offset_ns == -1189


def test_offset_stats_skip_warmup() -> None:
    st = ptp4l.offset_stats(SLAVE_LOG, warmup_s=3.0)
    offs = [-516, -1309, -247, 122, -1189]
    assert st.samples == 5
    assert st.max_abs_ns == 1309
    assert st.mean_ns == pytest.approx(sum(offs) / 5)
    assert st.rms_ns == pytest.approx(math.sqrt(sum(o * o for o in offs) / 5))
    assert st.mean_path_delay_ns == pytest.approx((2178 + 1840 + 1419 + 1770 + 1940) / 5)
    assert st.first_offset_after_s == pytest.approx(1021.296 - 1014.914)
    kept = [-516, -247, 122, -1189]   # without the largest |offset| (-1309)
    assert st.rms_without_worst_ns == pytest.approx(math.sqrt(sum(o * o for o in kept) / 4))
    assert "without the worst" in st.line()


def test_rms_without_worst() -> None:
    assert ptp4l.rms_without_worst([3, -4, 40_000]) == pytest.approx(5 / math.sqrt(2))
    assert ptp4l.rms_without_worst([3, -50_000, 4, 40_000], drop=2) == pytest.approx(5 / math.sqrt(2))
    assert math.isnan(ptp4l.rms_without_worst([7]))
    assert math.isnan(ptp4l.rms_without_worst([]))


def test_offset_stats_empty_and_all_warmup() -> None:
    assert ptp4l.offset_stats(GM_LOG).samples == 0
    assert ptp4l.offset_stats("").samples == 0
    assert ptp4l.offset_stats(SLAVE_LOG, warmup_s=100).samples == 0


def test_summary_form() -> None:
    sums = ptp4l.parse_summaries(SUMMARY_LOG)
    assert [(x.rms_ns, x.max_ns, x.delay_ns) for x in sums] == [(412, 801, 1500), (300, 700, 1400), (500, 1200, None)]
    st = ptp4l.offset_stats(SUMMARY_LOG, warmup_s=0)
    assert st.summaries == 3 and st.max_abs_ns == 1200 and st.rms_ns == pytest.approx(404)
    assert st.mean_path_delay_ns == pytest.approx(1450)


def test_states() -> None:
    ch = ptp4l.parse_states(GM_LOG)
    assert [(c.port, c.old, c.new, c.event) for c in ch] == [
        (1, "INITIALIZING", "LISTENING", "INIT_COMPLETE"),
        (0, "INITIALIZING", "LISTENING", "INIT_COMPLETE"),
        (1, "LISTENING", "MASTER", "ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES"),
    ]
    assert ptp4l.final_states(SLAVE_LOG) == {1: "UNCALIBRATED", 0: "LISTENING"}
    # linuxptp 4.x adds the interface name: "port 1 (eth0): ..."
    assert ptp4l.final_states("ptp4l[5.0]: port 1 (eth0): UNCALIBRATED to SLAVE on MASTER_CLOCK_SELECTED") == {1: "SLAVE"}


def test_config_text_forces_free_running_and_uds() -> None:
    cfg = ptp4l.config_text("slave", "/var/run/ptp4l-ptsabc-sl", {"logSyncInterval": -4})
    assert "free_running\t\t1" in cfg and "slaveOnly\t\t1" in cfg and "uds_address\t\t/var/run/ptp4l-ptsabc-sl" in cfg
    assert "logSyncInterval\t\t-4" in cfg and cfg.startswith("# ptp-switch lab: slave\n[global]\n")
    assert "clock_type\t\tE2E_TC" in ptp4l.config_text("e2e_tc", "/x")
    with pytest.raises(ptp4l.Ptp4lError, match="free_running"):
        ptp4l.config_text("bc", "/x", {"free_running": 0})
    with pytest.raises(ptp4l.Ptp4lError, match="unknown ptp4l role"):
        ptp4l.config_text("oc", "/x")
