"""Shared lab fixtures: ``make_lab("line-1", shaping=..., mode=...)`` builds a netns lab that is
always torn down (also when the test fails); every lab of the test is removed at its end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from topologies import catalog
from topologies.model import Topology
from topologies.netns import Lab


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(spec: str | Topology, **kw: Any) -> Lab:
        topo = spec if isinstance(spec, Topology) else catalog.get(spec, **kw)
        lab = Lab(topo)
        labs.append(lab)
        lab.up()
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.down()
