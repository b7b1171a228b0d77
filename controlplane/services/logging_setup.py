"""Daemon logging like ptp4l's: ``ptp-switch[<monotonic s>]: <message>`` lines, or JSON lines.

ptp4l -m prints to stdout; ptp-switch does the same with -m (otherwise stderr). ``--json-log``
writes one JSON object per line: {"ts": <unix s>, "mono": <monotonic s>, "level": ..., "logger": ...,
"msg": ...} so dashboards can parse without regular expressions.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class Ptp4lFormatter(logging.Formatter):
    def __init__(self, tag: str = "ptp-switch") -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.tag}[{time.monotonic():.3f}]: {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": round(record.created, 6), "mono": round(time.monotonic(), 6), "level": record.levelname,
                           "logger": record.name, "msg": record.getMessage()}, separators=(",", ":"))


def setup_daemon_logging(*, to_stdout: bool, json_lines: bool = False, level: int = logging.INFO,
                         tag: str = "ptp-switch") -> None:
    handler = logging.StreamHandler(sys.stdout if to_stdout else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else Ptp4lFormatter(tag))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # line-buffered output so `ptp-switch run -m | tee` and test harnesses see lines at once
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        pass
