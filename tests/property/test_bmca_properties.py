"""Hypothesis: the data set comparison is antisymmetric and transitive.

Figure 34 compares grandmaster identities FIRST and only then attributes, so a set of data sets is
totally (pre)ordered only if one grandmaster identity always carries the same attributes — which
is what a network shows at one instant. The strategy draws one attribute set per identity.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.codec.types import ClockQuality, PortIdentity
from controlplane.core.bmca import Comparison, ComparisonDataset, compare

N_IDS = 4
cids = st.integers(min_value=0, max_value=N_IDS - 1).map(lambda n: bytes([0, 0, 0, 0, 0, 0, 0, n]))
pids = st.builds(PortIdentity, cids, st.integers(min_value=1, max_value=3))
attrs = st.tuples(
    st.sampled_from([127, 128]),
    st.builds(ClockQuality, st.sampled_from([6, 248]), st.sampled_from([0x21, 0xFE]), st.sampled_from([0x4000, 0xFFFF])),
    st.sampled_from([127, 128]),
)


@st.composite
def consistent(draw, count: int) -> list[ComparisonDataset]:
    table = draw(st.lists(attrs, min_size=N_IDS, max_size=N_IDS))
    out = []
    for _ in range(count):
        gm = draw(st.integers(min_value=0, max_value=N_IDS - 1))
        p1, q, p2 = table[gm]
        out.append(ComparisonDataset(p1, bytes([0, 0, 0, 0, 0, 0, 0, gm]), q, p2,
                                     draw(st.integers(min_value=0, max_value=3)), draw(pids), draw(pids)))
    return out


any_datasets = st.builds(
    ComparisonDataset,
    grandmaster_priority1=st.sampled_from([127, 128]),
    grandmaster_identity=cids,
    grandmaster_clock_quality=attrs.map(lambda t: t[1]),
    grandmaster_priority2=st.sampled_from([127, 128]),
    steps_removed=st.integers(min_value=0, max_value=3),
    sender=pids,
    receiver=pids,
)


@settings(max_examples=800)
@given(any_datasets, any_datasets)
def test_antisymmetric(a: ComparisonDataset, b: ComparisonDataset) -> None:
    """Holds for any pair, consistent or not."""
    assert compare(b, a) is compare(a, b).swapped()
    if a == b:
        assert compare(a, b) in (Comparison.ERROR1, Comparison.ERROR2)


@settings(max_examples=1500)
@given(consistent(3))
def test_transitive(abc: list[ComparisonDataset]) -> None:
    a, b, c = abc
    ab, bc, ac = compare(a, b), compare(b, c), compare(a, c)
    if {ab, bc, ac} & {Comparison.ERROR1, Comparison.ERROR2}:
        return
    if ab.a_better and bc.a_better:
        assert ac.a_better
    if ab.b_better and bc.b_better:
        assert ac.b_better
