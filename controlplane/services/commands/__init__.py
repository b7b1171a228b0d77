"""CLI subcommands. Every module here exposes ``register(subparsers)``; cli.py discovers them.

A module registers one top-level command (``decode``, ``lab``, ``dataplane``, ``run``, ``ctl`` ...)
with ``subparsers.add_parser(NAME, help=...)`` and sets ``func=`` on the parser's defaults to a
callable taking the parsed ``argparse.Namespace`` and returning an exit code.
"""
