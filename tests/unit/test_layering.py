"""The dependency arrows: codec <- core <- runtime <- services; runtime -> dataplane.

Parses imports with ast, so a layer that reaches for I/O or a higher layer fails here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

IO_MODULES = {"socket", "asyncio", "time", "bcc", "pyroute2", "grpc", "select", "subprocess", "threading", "selectors", "ctypes"}
# layer -> packages it must not import
FORBIDDEN = {
    "controlplane/codec": IO_MODULES | {"controlplane.core", "controlplane.runtime", "controlplane.services", "dataplane", "random", "datetime", "os"},
    "controlplane/core": IO_MODULES | {"controlplane.runtime", "controlplane.services", "dataplane", "datetime"},
    "controlplane/runtime": {"controlplane.services", "grpc"},
    "dataplane": {"controlplane.services", "controlplane.runtime", "controlplane.core"},
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for name in _imports(path):
            for forbidden in FORBIDDEN[layer]:
                if name == forbidden or name.startswith(forbidden + "."):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    assert (ROOT / layer).is_dir(), f"missing layer {layer}"
    assert _violations(layer) == []


def test_checker_catches_a_violation(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import socket\nfrom time import monotonic\n")
    assert _imports(bad) == {"socket", "time"}
