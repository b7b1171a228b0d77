"""The ptp-switch gRPC API (package ptpswitch.v1). ``pb()`` returns the generated modules,
building them first if ``make setup`` has not (generated files are not in git)."""

from __future__ import annotations

from types import ModuleType


def pb() -> tuple[ModuleType, ModuleType]:
    """(ptpswitch_pb2, ptpswitch_pb2_grpc), generating them from ptpswitch.proto when needed."""
    from . import build

    build.ensure_built()
    from . import ptpswitch_pb2, ptpswitch_pb2_grpc

    return ptpswitch_pb2, ptpswitch_pb2_grpc
