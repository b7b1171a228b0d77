"""Management GET/SET over the data sets (IEEE 1588 clause 15), so the daemon can answer pmc.

``handle(clock, port, msg, now_ns, src)`` returns the response as SendMessage actions: a
RESPONSE / ACKNOWLEDGE with the MANAGEMENT TLV, or a MANAGEMENT_ERROR_STATUS TLV
(NO_SUCH_ID, NOT_SETABLE, WRONG_VALUE, NOT_SUPPORTED, ...).
"""

from __future__ import annotations

from typing import Any

__all__ = ["handle"]


def handle(clock: Any, port: Any, msg: Any, now_ns: int, src: object = None) -> list[Any]:
    from controlplane.core import management_impl

    return management_impl.handle(clock, port, msg, now_ns, src)
