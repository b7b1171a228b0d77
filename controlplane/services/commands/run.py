"""``ptp-switch run``: the daemon, with ptp4l's command line.

    ptp-switch run -i IF [-i IF ...] [-f CONFIG] [-2|-4|-6] [-E|-P] [-S|-H] [-s] [-m]
                   [--clock-type OC|BC|E2E_TC|P2P_TC] [--json-log]
                   [--grpc [ADDR]] [--metrics [ADDR]] [--state-file [PATH]] [--name NAME]

Command-line options override the config file's [global] (per-interface sections still win).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from controlplane.runtime.configfile import ConfigFileError
from controlplane.services.cli import CliError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("run", help="run the PTP daemon on interfaces (like ptp4l)",
                              description="Run ptp-switch as an OC, BC, E2E_TC or P2P_TC on real interfaces.")
    p.add_argument("-i", dest="interfaces", action="append", default=[], metavar="IF", help="interface (repeat for more ports)")
    p.add_argument("-f", dest="config_file", metavar="CONFIG", help="ptp4l-format configuration file")
    tr = p.add_mutually_exclusive_group()
    tr.add_argument("-2", dest="transport", action="store_const", const="L2", help="IEEE 802.3 (L2)")
    tr.add_argument("-4", dest="transport", action="store_const", const="UDPv4", help="UDP over IPv4 (default)")
    tr.add_argument("-6", dest="transport", action="store_const", const="UDPv6", help="UDP over IPv6")
    dm = p.add_mutually_exclusive_group()
    dm.add_argument("-E", dest="delay", action="store_const", const="E2E", help="end-to-end delay mechanism (default)")
    dm.add_argument("-P", dest="delay", action="store_const", const="P2P", help="peer-to-peer delay mechanism")
    ts = p.add_mutually_exclusive_group()
    ts.add_argument("-S", dest="stamping", action="store_const", const="software", help="software timestamping (default)")
    ts.add_argument("-H", dest="stamping", action="store_const", const="hardware", help="hardware timestamping")
    p.add_argument("-s", dest="slave_only", action="store_true", help="slave only")
    p.add_argument("-m", dest="stdout", action="store_true", help="print messages to stdout")
    p.add_argument("--clock-type", choices=["OC", "BC", "E2E_TC", "P2P_TC"], help="clock type (default OC, or BC with >1 port)")
    g = p.add_argument_group("control API (gRPC, metrics, persisted settings)")
    g.add_argument("--grpc", metavar="ADDR", nargs="?", const="",
                   help="serve the gRPC API: unix:/PATH (default /var/run/ptp-switch/NAME.sock) or HOST:PORT (needs TLS + token)")
    g.add_argument("--grpc-tls-cert", metavar="PEM", help="TLS certificate for a TCP --grpc address")
    g.add_argument("--grpc-tls-key", metavar="PEM", help="TLS private key for a TCP --grpc address")
    g.add_argument("--grpc-token-file", metavar="FILE", help="bearer token clients must send (TCP --grpc address)")
    g.add_argument("--grpc-allow-all-addresses", action="store_true", help="allow --grpc on 0.0.0.0/:: (refused otherwise)")
    g.add_argument("--metrics", metavar="ADDR", nargs="?", const="",
                   help="Prometheus text endpoint on HOST:PORT (default 127.0.0.1:9469; off unless given)")
    g.add_argument("--metrics-allow-remote", action="store_true", help="allow a non-loopback --metrics address")
    g.add_argument("--state-file", metavar="PATH", nargs="?", const="",
                   help="where settings set with persist are kept and restored at start (default /var/lib/ptp-switch/NAME.state.json)")
    g.add_argument("--name", default="ptp-switch", help="instance name for the default socket and state file (default %(default)s)")
    p.add_argument("--json-log", action="store_true", help="JSON log lines")
    p.add_argument("--uds", metavar="PATH", help="management UNIX socket (default uds_address, else /var/run/ptp-switch-PID)")
    p.add_argument("--clock-offset-ns", type=int, default=0, help=argparse.SUPPRESS)  # lab: deliberate initial error
    p.add_argument("--clock-freq-ppb", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--lab-truth", action="store_true", help=argparse.SUPPRESS)  # lab: log true clock error
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    if args.transport:
        out.append(("network_transport", args.transport))
    if args.delay:
        out.append(("delay_mechanism", args.delay))
    if args.stamping:
        out.append(("time_stamping", args.stamping))
    if args.slave_only:
        out.append(("slaveOnly", "1"))
    if args.clock_type:
        out.append(("clock_type", args.clock_type))
    elif len(args.interfaces) > 1 and not _file_sets(args.config_file, "clock_type"):
        out.append(("clock_type", "BC"))  # several ports and no clock type: a boundary clock, as ptp4l
    if args.uds:
        out.append(("uds_address", args.uds))
    if args.stdout:
        out.append(("verbose", "1"))
    return tuple(out)


def _file_sets(path: str | None, option: str) -> bool:
    if not path:
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any(line.split("#", 1)[0].split()[:1] == [option] for line in f)
    except OSError:
        return False


def _file_stamping(path: str | None) -> bool:
    return _file_sets(path, "time_stamping")


def run(args: argparse.Namespace) -> int:
    from controlplane.services.daemon import Daemon, DaemonError, DaemonOptions
    from controlplane.services.logging_setup import setup_daemon_logging

    overrides = list(overrides_from_args(args))
    if not args.stamping and not _file_stamping(args.config_file):
        # ptp4l defaults to hardware stamps; ptp-switch to software unless -H or the file asks
        overrides.append(("time_stamping", "software"))
    from controlplane.services.control import ControlOptions

    control = ControlOptions(grpc_address=args.grpc, grpc_tls_cert=args.grpc_tls_cert, grpc_tls_key=args.grpc_tls_key,
                             grpc_token_file=args.grpc_token_file, grpc_allow_all_addresses=args.grpc_allow_all_addresses,
                             metrics_address=args.metrics, metrics_allow_remote=args.metrics_allow_remote,
                             state_file=args.state_file, name=args.name)
    opts = DaemonOptions(interfaces=tuple(args.interfaces), config_file=args.config_file, overrides=tuple(overrides),
                         to_stdout=args.stdout, json_log=args.json_log, grpc_address=args.grpc, control=control,
                         clock_offset_ns=args.clock_offset_ns, clock_freq_ppb=args.clock_freq_ppb, seed=args.seed,
                         lab_truth=args.lab_truth)
    level = logging.DEBUG if args.verbose >= 2 else logging.INFO
    setup_daemon_logging(to_stdout=args.stdout, json_lines=args.json_log, level=level)
    try:
        daemon = Daemon(opts)
        asyncio.run(daemon.run())
    except (ConfigFileError, DaemonError) as exc:
        raise CliError(str(exc)) from None
    return 0
