"""Runtime: asyncio event loop, sockets with kernel timestamps, clocks, BPF map writes."""
