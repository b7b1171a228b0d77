"""The machine a bench ran on: kernel, CPU, linuxptp/tshark versions, load (read, never changed)."""

from __future__ import annotations

import os
import platform
import re
import subprocess


def _first_line(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0].strip() if text else "unavailable"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def other_ptp_processes() -> int:
    """How many ptp4l / ptp-switch / pacer processes run on the machine (other engineers' labs too)."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if re.search(rb"(^|/)ptp4l |topologies\.shaping pace|ptp-switch run", cmd):
            n += 1
    return n


def machine_info() -> dict[str, str]:
    uname = platform.uname()
    tshark = _first_line(["tshark", "--version"])
    m = re.search(r"TShark \(Wireshark\) (\S+)", tshark)
    tshark = m.group(1) if m else tshark
    return {
        "kernel": f"{uname.system} {uname.release} {uname.machine}",
        "cpu": f"{cpu_model()} x {os.cpu_count()}",
        "memory": _meminfo(),
        "os": _os_release(),
        "python": platform.python_version(),
        "linuxptp (ptp4l -v)": _first_line(["ptp4l", "-v"]),
        "tshark": tshark,
        "timestamping": "software (veth in network namespaces; every ptp4l free_running 1)",
    }


def load_snapshot(tag: str) -> dict[str, str]:
    return {f"load average {tag}": loadavg(), f"PTP processes on the machine {tag}": str(other_ptp_processes())}


def _meminfo() -> str:
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"
