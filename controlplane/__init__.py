"""ptp-switch control plane: codec <- core (sans-IO) <- runtime (asyncio, sockets, clocks, BPF maps) <- services."""

__version__ = "0.1.0"
