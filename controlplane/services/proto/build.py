"""Generate ptpswitch_pb2.py / ptpswitch_pb2_grpc.py next to ptpswitch.proto (grpcio-tools).

Run by ``make setup`` (scripts/setup.sh step 5): ``python -m controlplane.services.proto.build``.
The generated files are git-ignored. The generated ``*_pb2_grpc.py`` imports its sibling as a
top-level module (``import ptpswitch_pb2``); this rewrites that to a package-relative import.
Also importable: ``ensure_built()`` regenerates when the proto is newer than the output.
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE / "ptpswitch.proto"
OUTPUTS = (HERE / "ptpswitch_pb2.py", HERE / "ptpswitch_pb2_grpc.py")


class ProtoBuildError(RuntimeError):
    """protoc (grpcio-tools) failed or is missing."""


def build() -> list[pathlib.Path]:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ProtoBuildError(f"grpcio-tools is not installed ({exc}); run `make setup`") from exc
    include = pathlib.Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{HERE}",
        f"-I{include}",
        f"--python_out={HERE}",
        f"--grpc_python_out={HERE}",
        str(PROTO),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise ProtoBuildError(f"protoc exited with {rc} for {PROTO}")
    grpc_file = OUTPUTS[1]
    text = grpc_file.read_text()
    text = text.replace("import ptpswitch_pb2 as ptpswitch__pb2", "from . import ptpswitch_pb2 as ptpswitch__pb2")
    grpc_file.write_text(text)
    return list(OUTPUTS)


def ensure_built() -> None:
    """Regenerate when an output is missing or older than the proto (cheap when up to date)."""
    mtime = PROTO.stat().st_mtime
    if all(p.exists() and p.stat().st_mtime >= mtime for p in OUTPUTS):
        return
    build()


def main() -> int:
    try:
        for path in build():
            print(f"generated {path}")
    except ProtoBuildError as exc:
        print(f"proto build: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
