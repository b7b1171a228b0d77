"""bench.scenarios_run._LogTail: incremental reading of a growing ptp4l log through the project's one
parser (topologies.ptp4l.parse_offsets), partial lines kept until their newline arrives."""

from __future__ import annotations

import pathlib

from bench.scenarios_run import _LogTail

LINES = [
    "ptp4l[1203.456]: selected best master clock 0a1b2c.fffe.3d4e5f\n",
    "ptp4l[1204.001]: master offset        -89 s0 freq      +0 path delay      2784\n",
    "ptp4l[1204.126]: eth0: master offset       1234 s0 freq      +0 path delay      2790\n",
]


def test_logtail_reads_offsets_incrementally(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "sl.log"
    tail = _LogTail(log)
    tail.poll()  # missing file: nothing, no error
    assert tail.offsets == []
    log.write_text(LINES[0] + LINES[1] + LINES[2][:30])  # the third line is half written
    tail.poll()
    assert tail.offsets == [(1204.001, -89, 2784)]
    with log.open("a") as f:
        f.write(LINES[2][30:])
    tail.poll()
    assert tail.offsets == [(1204.001, -89, 2784), (1204.126, 1234, 2790)]
    tail.poll()  # nothing new
    assert len(tail.offsets) == 2
