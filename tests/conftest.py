"""Shared test policy.

Layers: tests/unit (pure), tests/property (hypothesis), tests/sim (simulated clocks and links),
tests/bpf (BPF_PROG_TEST_RUN fixtures), tests/lab (netns + real daemons + ptp4l).

Kernel tests (marker ``kernel`` or ``lab``, or anything under tests/bpf and tests/lab) skip with
the reason when the machine lacks root or BPF. Under ``CI=true`` such a skip is a failure: CI runs
as root on a kernel with the features, so a silent skip would hide breakage.
"""

from __future__ import annotations

import os
import pathlib

import pytest

_KERNEL_DIRS = ("bpf", "lab")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _kernel_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (BPF programs and network namespaces)"
    if not pathlib.Path("/sys/fs/bpf").exists():
        return "no /sys/fs/bpf: BPF unavailable"
    try:
        import bcc  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"BCC does not import ({exc}); run `make setup`"
    return None


def _is_kernel_test(item: pytest.Item) -> bool:
    parts = pathlib.Path(str(item.fspath)).parts
    return bool(item.get_closest_marker("kernel") or item.get_closest_marker("lab")) or any(
        d in parts for d in _KERNEL_DIRS
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _kernel_unavailable_reason()
    for item in items:
        parts = pathlib.Path(str(item.fspath)).parts
        if "lab" in parts:
            item.add_marker(pytest.mark.lab)
        if _is_kernel_test(item):
            item.add_marker(pytest.mark.kernel)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[type-arg]
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and _is_kernel_test(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: kernel test would have skipped ({reason}); CI has root and BPF, so this is a failure"
