"""Mininet custom file: ``mn --custom topologies/mn_custom.py --topo ptps,line-2 --switch lxbr --controller none --test pingall``.

``ptps,NAME`` builds the named topology of topologies/catalog.py (direct, line-N, star, dual-gm, atr;
ring needs STP: add ``--switch lxbr,stp=1``). Node names are the topology's own (gm, sw1, sl).
Hosts get their first lab address; multi-segment topologies (atr) need topologies.mininet.MininetLab
for routes.
"""

import os
import sys

try:
    _HERE = os.path.abspath(__file__)
except NameError:  # mn exec()s custom files without __file__: find it among mn's arguments
    _HERE = next((os.path.abspath(a) for a in sys.argv if a.endswith("mn_custom.py")), os.path.abspath("topologies/mn_custom.py"))
sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))

from topologies import catalog  # noqa: E402
from topologies.mininet import build_topo  # noqa: E402


def ptps(name="line-1"):
    return build_topo(catalog.get(str(name)))[0]


topos = {"ptps": ptps}
