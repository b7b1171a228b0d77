"""The ``ptp-switch`` console script: discovers subcommands in controlplane.services.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from controlplane import __version__
from controlplane.services import commands as _commands


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 (never a traceback)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptp-switch",
        description="IEEE 1588 (PTP v2) transparent/boundary clock switch for Linux "
        "(eBPF dataplane, Python control plane).",
    )
    parser.add_argument("--version", action="version", version=f"ptp-switch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except CliError as exc:
        print(f"ptp-switch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ptp-switch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
