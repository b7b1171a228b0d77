"""PTP v2 wire codec: bytes <-> frozen dataclasses. Pure: no I/O, no clock."""
