"""``ptp-switch ctl``: a pmc-like client of the gRPC control API.

    ptp-switch ctl get current|default|parent|time-properties|clock
    ptp-switch ctl ports
    ptp-switch ctl port IF
    ptp-switch ctl port IF set delay-mechanism p2p [log-sync-interval -3 ...] [--persist] [--dry-run]
    ptp-switch ctl port IF enable|disable [--persist]
    ptp-switch ctl grants [IF]
    ptp-switch ctl watch [--kind port-state ...] [--count N] [--duration S]

Tables for people, ``--json`` for scripts. ``--socket PATH`` (default
/var/run/ptp-switch/<--name>.sock) or ``--address HOST:PORT`` with ``--tls-ca`` and ``--token-file``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from controlplane.services.cli import CliError

SETTINGS_HELP = """settings (KEY VALUE; ptp4l spellings such as logSyncInterval are accepted too):
  port-enable on|off              delay-mechanism e2e|p2p
  log-announce-interval N         log-sync-interval N
  log-min-delay-req-interval N    log-min-pdelay-req-interval N
  announce-receipt-timeout N      delay-asymmetry NS
  master-only on|off              slave-only on|off
  unicast-master-table UDPv4:10.0.0.1,UDPv4:10.0.0.2|none
  log-query-interval N"""

# CLI key -> (request field, kind)
_KEYS: dict[str, tuple[str, str]] = {
    "port-enable": ("port_enable", "bool"),
    "enable": ("port_enable", "bool"),
    "delay-mechanism": ("delay_mechanism", "mech"),
    "log-announce-interval": ("log_announce_interval", "int"),
    "log-sync-interval": ("log_sync_interval", "int"),
    "log-min-delay-req-interval": ("log_min_delay_req_interval", "int"),
    "log-min-pdelay-req-interval": ("log_min_pdelay_req_interval", "int"),
    "announce-receipt-timeout": ("announce_receipt_timeout", "int"),
    "delay-asymmetry": ("delay_asymmetry_ns", "int"),
    "master-only": ("master_only", "bool"),
    "slave-only": ("slave_only", "bool"),
    "unicast-master-table": ("unicast_master_table", "table"),
    "log-query-interval": ("log_query_interval", "int"),
}
_PTP4L_NAMES = {
    "delay_mechanism": "delay-mechanism", "logAnnounceInterval": "log-announce-interval",
    "logSyncInterval": "log-sync-interval", "logMinDelayReqInterval": "log-min-delay-req-interval",
    "logMinPdelayReqInterval": "log-min-pdelay-req-interval", "announceReceiptTimeout": "announce-receipt-timeout",
    "delayAsymmetry": "delay-asymmetry", "masterOnly": "master-only", "slaveOnly": "slave-only",
    "logQueryInterval": "log-query-interval",
}
_KINDS = ("port-state", "grandmaster", "offset", "path-delay", "unicast-grant", "port-config")
_TRUE = {"1", "on", "true", "yes", "enable", "enabled"}
_FALSE = {"0", "off", "false", "no", "disable", "disabled"}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "ctl", help="query and configure a running ptp-switch over its gRPC API (pmc-like)",
        description="Query and configure a running ptp-switch daemon over its gRPC API.",
        epilog=SETTINGS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the daemon's UNIX socket (default /var/run/ptp-switch/NAME.sock)")
    where.add_argument("--address", metavar="HOST:PORT", help="TCP address of the daemon's API (TLS)")
    p.add_argument("--name", default="ptp-switch", help="daemon instance name for the default socket (default %(default)s)")
    p.add_argument("--tls-ca", metavar="PEM", help="CA certificate that signed the daemon's TLS certificate (TCP)")
    p.add_argument("--server-name", metavar="NAME", help="expected TLS server name, if not the host in --address")
    p.add_argument("--token-file", metavar="FILE", help="file holding the bearer token (TCP)")
    p.add_argument("--json", action="store_true", help="JSON output (one object; one per line for watch)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per-call timeout in seconds (default %(default)s)")
    sub = p.add_subparsers(dest="ctl_command", metavar="ACTION", required=True)

    g = sub.add_parser("get", help="clock data sets")
    g.add_argument("dataset", choices=["current", "default", "parent", "time-properties", "clock"],
                   help="which data set (clock: all of them)")
    g.set_defaults(func=_cmd_get)

    sub.add_parser("ports", help="all ports, one line each").set_defaults(func=_cmd_ports)

    pt = sub.add_parser("port", help="one port; or change its settings live",
                        epilog=SETTINGS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    pt.add_argument("interface", help="interface name (or port number)")
    pt.add_argument("action", nargs="?", choices=["set", "enable", "disable"], help="set KEY VALUE..., enable, disable")
    pt.add_argument("pairs", nargs="*", metavar="KEY VALUE", help="settings to change (with set)")
    pt.add_argument("--persist", action="store_true", help="keep the change across a daemon restart")
    pt.add_argument("--dry-run", action="store_true", help="validate only; change nothing")
    pt.set_defaults(func=_cmd_port)

    gr = sub.add_parser("grants", help="unicast grants (both directions)")
    gr.add_argument("interface", nargs="?", default="", help="only this port")
    gr.set_defaults(func=_cmd_grants)

    w = sub.add_parser("watch", help="stream events: state changes, grandmaster changes, samples, grants")
    w.add_argument("--kind", action="append", choices=_KINDS, default=[], help="only these kinds (repeat)")
    w.add_argument("--count", type=int, default=0, help="stop after N events (default: run until interrupted)")
    w.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds")
    w.set_defaults(func=_cmd_watch)


# ------------------------------------------------------------------ plumbing


def _grpc() -> tuple[Any, Any, Any]:
    try:
        import grpc

        from controlplane.services import grpc_server as G
    except Exception as exc:  # generated code missing / grpc not installed
        raise CliError(f"the gRPC client is unavailable ({exc}); run `make setup`") from None
    return grpc, G, G.pb2


class _Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.grpc, G, self.pb2 = _grpc()
        token = None
        if args.token_file:
            try:
                with open(args.token_file) as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise CliError(f"cannot read the token file: {exc}") from None
        target = args.address if args.address else (args.socket or None)
        try:
            self.channel = G.open_channel(target, name=args.name, tls_ca=args.tls_ca, token=token,
                                          server_name=args.server_name)
        except (G.AddressError, OSError) as exc:
            raise CliError(str(exc)) from None
        self.where = args.address or args.socket or G.default_socket_path(args.name)
        self.stub = G.stub(self.channel)
        self.timeout = args.timeout

    def call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except self.grpc.RpcError as exc:
            raise _rpc_error(exc, self.where) from None


def _rpc_error(exc: Any, where: str) -> CliError:
    code = exc.code()
    name = getattr(code, "name", str(code))
    if name == "UNAVAILABLE" and "could not apply" not in (exc.details() or "") and "state file" not in (exc.details() or ""):
        return CliError(f"cannot reach the daemon at {where}: {exc.details()}")
    return CliError(f"{exc.details()} ({name})")


def _to_dict(msg: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True,
                                     unquote_int64_if_possible=True)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _enum_short(enum_name: str, prefix: str) -> str:
    return enum_name[len(prefix):] if enum_name.startswith(prefix) else enum_name


def _kv(title: str, rows: list[tuple[str, Any]]) -> None:
    print(title)
    width = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _yn(b: bool) -> str:
    return "yes" if b else "no"


# ------------------------------------------------------------------ get


def _cmd_get(args: argparse.Namespace) -> int:
    c = _Client(args)
    clock = c.call("GetClock", c.pb2.GetClockRequest())
    parts = {"default": "default_ds", "current": "current_ds", "parent": "parent_ds",
             "time-properties": "time_properties_ds"}
    if args.json:
        d = _to_dict(clock)
        _print_json(d if args.dataset == "clock" else d[parts[args.dataset]])
        return 0
    wanted = list(parts) if args.dataset == "clock" else [args.dataset]
    for name in wanted:
        _print_dataset(name, getattr(clock, parts[name]))
    if args.dataset in ("clock", "current"):
        _kv("servo", [("frequency-adjustment", f"{clock.frequency_adjustment_ppb:+.1f} ppb"),
                      ("servo-state", clock.servo_state or "-")])
    return 0


def _print_dataset(name: str, ds: Any) -> None:
    if name == "default":
        q = ds.clock_quality
        _kv("default-ds", [("clock-identity", ds.clock_identity), ("clock-type", ds.clock_type),
                           ("number-ports", ds.number_ports), ("two-step-flag", _yn(ds.two_step_flag)),
                           ("slave-only", _yn(ds.slave_only)), ("priority1", ds.priority1), ("priority2", ds.priority2),
                           ("clock-class", q.clock_class), ("clock-accuracy", f"0x{q.clock_accuracy:02x}"),
                           ("offset-scaled-log-variance", f"0x{q.offset_scaled_log_variance:04x}"),
                           ("domain-number", ds.domain_number)])
    elif name == "current":
        _kv("current-ds", [("steps-removed", ds.steps_removed), ("offset-from-master", f"{ds.offset_from_master_ns} ns"),
                           ("mean-path-delay", f"{ds.mean_path_delay_ns} ns")])
    elif name == "parent":
        q = ds.grandmaster_clock_quality
        _kv("parent-ds", [
            ("parent-port-identity", f"{ds.parent_port_identity.clock_identity}-{ds.parent_port_identity.port_number}"),
            ("parent-stats", _yn(ds.parent_stats)),
            ("observed-parent-offset-scaled-log-variance", f"0x{ds.observed_parent_offset_scaled_log_variance:04x}"),
            ("observed-parent-clock-phase-change-rate", f"0x{ds.observed_parent_clock_phase_change_rate & 0xffffffff:08x}"),
            ("grandmaster-identity", ds.grandmaster_identity), ("grandmaster-priority1", ds.grandmaster_priority1),
            ("grandmaster-clock-class", q.clock_class), ("grandmaster-clock-accuracy", f"0x{q.clock_accuracy:02x}"),
            ("grandmaster-offset-scaled-log-variance", f"0x{q.offset_scaled_log_variance:04x}"),
            ("grandmaster-priority2", ds.grandmaster_priority2)])
    else:
        _kv("time-properties-ds", [
            ("current-utc-offset", ds.current_utc_offset), ("current-utc-offset-valid", _yn(ds.current_utc_offset_valid)),
            ("leap59", _yn(ds.leap59)), ("leap61", _yn(ds.leap61)), ("time-traceable", _yn(ds.time_traceable)),
            ("frequency-traceable", _yn(ds.frequency_traceable)), ("ptp-timescale", _yn(ds.ptp_timescale)),
            ("time-source", f"0x{ds.time_source:02x}")])


# ------------------------------------------------------------------ ports


def _state_name(pb2: Any, v: int) -> str:
    return _enum_short(pb2.PortState.Name(v), "PORT_STATE_") if v in pb2.PortState.values() else str(v)


def _mech_name(pb2: Any, v: int) -> str:
    return _enum_short(pb2.DelayMechanism.Name(v), "DELAY_MECHANISM_") if v in pb2.DelayMechanism.values() else str(v)


def _cmd_ports(args: argparse.Namespace) -> int:
    c = _Client(args)
    ports = c.call("ListPorts", c.pb2.ListPortsRequest()).ports
    if args.json:
        _print_json([_to_dict(p) for p in ports])
        return 0
    header = ("PORT", "INTERFACE", "STATE", "ENABLED", "DELAY", "ANN", "SYNC", "DREQ", "PDREQ", "ART",
              "ASYM_NS", "PEER_DELAY_NS", "MEAN_DELAY_NS", "ROLE")
    rows = [header]
    for p in ports:
        d = p.port_ds
        role = "master-only" if d.master_only else "slave-only" if p.slave_only else "-"
        rows.append((str(p.port_index), p.underlying_interface, _state_name(c.pb2, d.port_state), _yn(d.port_enable),
                     _mech_name(c.pb2, d.delay_mechanism), str(d.log_announce_interval), str(d.log_sync_interval),
                     str(d.log_min_delay_req_interval), str(d.log_min_pdelay_req_interval),
                     str(d.announce_receipt_timeout), str(d.delay_asymmetry_ns), str(d.peer_mean_path_delay_ns),
                     str(p.mean_path_delay_ns), role))
    _table(rows)
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _print_port(pb2: Any, p: Any) -> None:
    d = p.port_ds
    umt = ", ".join(f"{a.network_protocol} {a.address}" for a in p.unicast_master_table.addresses) or "none"
    _kv(f"port-ds {p.underlying_interface}", [
        ("port-index", p.port_index), ("underlying-interface", p.underlying_interface),
        ("port-identity", f"{d.port_identity.clock_identity}-{d.port_identity.port_number}"),
        ("port-state", _state_name(pb2, d.port_state)), ("port-enable", _yn(d.port_enable)),
        ("delay-mechanism", _mech_name(pb2, d.delay_mechanism)),
        ("log-announce-interval", d.log_announce_interval), ("announce-receipt-timeout", d.announce_receipt_timeout),
        ("log-sync-interval", d.log_sync_interval), ("log-min-delay-req-interval", d.log_min_delay_req_interval),
        ("log-min-pdelay-req-interval", d.log_min_pdelay_req_interval),
        ("peer-mean-path-delay", f"{d.peer_mean_path_delay_ns} ns"), ("mean-path-delay", f"{p.mean_path_delay_ns} ns"),
        ("delay-asymmetry", f"{d.delay_asymmetry_ns} ns"), ("master-only", _yn(d.master_only)),
        ("slave-only", _yn(p.slave_only)), ("version-number", d.version_number),
        ("unicast-master-table", umt), ("log-query-interval", p.unicast_master_table.log_query_interval)])
    if p.dataplane_counters:
        _kv("dataplane-counters", sorted(p.dataplane_counters.items()))


def _cmd_port(args: argparse.Namespace) -> int:
    c = _Client(args)
    if args.action is None:
        if args.pairs:
            raise CliError(f"unexpected {' '.join(args.pairs)!r}; did you mean `port {args.interface} set ...`?")
        port = c.call("GetPort", c.pb2.GetPortRequest(underlying_interface=args.interface))
        if args.json:
            _print_json(_to_dict(port))
        else:
            _print_port(c.pb2, port)
        return 0
    req = c.pb2.SetPortConfigRequest(underlying_interface=args.interface, persist=args.persist,
                                     validate_only=args.dry_run)
    if args.action in ("enable", "disable"):
        if args.pairs:
            raise CliError(f"`{args.action}` takes no settings (got {' '.join(args.pairs)!r})")
        req.port_enable = args.action == "enable"
    else:
        if not args.pairs or len(args.pairs) % 2:
            raise CliError("set needs KEY VALUE pairs, e.g. `set delay-mechanism p2p`")
        _fill_request(c, req, args.interface, list(zip(args.pairs[0::2], args.pairs[1::2])))
    resp = c.call("SetPortConfig", req)
    if args.json:
        _print_json({"port": _to_dict(resp.port), "persisted": resp.persisted, "applied": not args.dry_run})
    else:
        what = "valid (dry run, nothing changed)" if args.dry_run else "applied" + (" and persisted" if resp.persisted else "")
        print(f"port {resp.port.underlying_interface}: {what}")
        _print_port(c.pb2, resp.port)
    return 0


def _fill_request(c: _Client, req: Any, interface: str, pairs: list[tuple[str, str]]) -> None:
    pb2 = c.pb2
    seen: set[str] = set()
    table: list[tuple[str, str]] | None = None
    log_query: int | None = None
    for key, value in pairs:
        norm = _PTP4L_NAMES.get(key, key).replace("_", "-").lower()
        if norm not in _KEYS:
            raise CliError(f"unknown setting {key!r}; known: {', '.join(k for k in _KEYS if k != 'enable')}")
        field, kind = _KEYS[norm]
        if field in seen:
            raise CliError(f"{norm} given twice")
        seen.add(field)
        if kind == "int":
            try:
                number = int(value, 0)
            except ValueError:
                raise CliError(f"{norm}: {value!r} is not an integer") from None
            if field == "log_query_interval":
                log_query = number
            else:
                setattr(req, field, number)
        elif kind == "bool":
            if value.lower() not in _TRUE | _FALSE:
                raise CliError(f"{norm}: {value!r} is not on/off")
            setattr(req, field, value.lower() in _TRUE)
        elif kind == "mech":
            mech = {"e2e": pb2.DELAY_MECHANISM_E2E, "p2p": pb2.DELAY_MECHANISM_P2P}.get(value.lower())
            if mech is None:
                raise CliError(f"{norm}: {value!r} is not e2e or p2p")
            req.delay_mechanism = mech
        else:
            table = []
            if value.lower() not in ("", "none", "-"):
                for item in value.split(","):
                    proto, sep, addr = item.strip().partition(":")
                    if not sep or not addr:
                        raise CliError(f"{norm}: {item!r} is not PROTOCOL:ADDRESS (e.g. UDPv4:10.0.0.1)")
                    table.append((proto, addr))
    if table is not None or log_query is not None:
        if table is None or log_query is None:  # keep the half that was not given
            current = c.call("GetPort", pb2.GetPortRequest(underlying_interface=interface)).unicast_master_table
            if table is None:
                table = [(a.network_protocol, a.address) for a in current.addresses]
            if log_query is None:
                log_query = current.log_query_interval
        req.unicast_master_table.SetInParent()
        for proto, addr in table:
            req.unicast_master_table.addresses.add(network_protocol=proto, address=addr)
        req.unicast_master_table.log_query_interval = log_query


# ------------------------------------------------------------------ grants


_MTYPE = {1: "Sync", 4: "Pdelay_Resp", 10: "Delay_Resp", 12: "Announce"}


def _cmd_grants(args: argparse.Namespace) -> int:
    c = _Client(args)
    grants = c.call("ListUnicastGrants", c.pb2.ListUnicastGrantsRequest(underlying_interface=args.interface)).grants
    if args.json:
        _print_json([_to_dict(g) for g in grants])
        return 0
    rows = [("PORT", "ROLE", "PEER", "MESSAGE", "LOG_PERIOD", "DURATION_S", "REMAINING_S", "RENEWAL")]
    for g in grants:
        rows.append((g.underlying_interface, g.role, g.address, _MTYPE.get(g.message_type, str(g.message_type)),
                     str(g.log_inter_message_period), str(g.duration_s), f"{g.remaining_ns / 1e9:.1f}",
                     _yn(g.renewal_invited)))
    _table(rows)
    if not grants:
        print("(no unicast grants)")
    return 0


# ------------------------------------------------------------------ watch


def _event_line(pb2: Any, ev: Any) -> str:
    kind = ev.WhichOneof("event")
    t = time.strftime("%H:%M:%S", time.localtime(ev.time_unix_ns / 1e9)) + f".{ev.time_unix_ns % 1_000_000_000 // 1_000_000:03d}"
    if kind == "port_state":
        e = ev.port_state
        body = (f"port {e.port_number} ({e.underlying_interface}): {_state_name(pb2, e.old_state)} to "
                f"{_state_name(pb2, e.new_state)}" + (f" on {e.reason}" if e.reason else ""))
    elif kind == "grandmaster":
        e = ev.grandmaster
        body = f"grandmaster {e.old_grandmaster_identity or '-'} -> {e.new_grandmaster_identity or '-'} (steps removed {e.steps_removed})"
    elif kind == "offset":
        e = ev.offset
        body = (f"master offset {e.offset_from_master_ns:10d} {e.servo_state or '-':>8} freq "
                f"{e.frequency_adjustment_ppb:+9.1f} path delay {e.mean_path_delay_ns:9d}")
    elif kind == "path_delay":
        e = ev.path_delay
        body = f"port {e.underlying_interface}: {_mech_name(pb2, e.delay_mechanism)} path delay {e.mean_path_delay_ns} ns"
    elif kind == "unicast_grant":
        e = ev.unicast_grant
        body = (f"port {e.underlying_interface}: unicast {_MTYPE.get(e.message_type, e.message_type)} {e.change} "
                f"{e.address} log period {e.log_inter_message_period} for {e.duration_s} s")
    elif kind == "port_config":
        p = ev.port_config.port
        body = (f"port {p.underlying_interface}: configuration changed: {_mech_name(pb2, p.port_ds.delay_mechanism)}, "
                f"enabled {_yn(p.port_ds.port_enable)}, sync {p.port_ds.log_sync_interval}"
                + (" (persisted)" if ev.port_config.persisted else ""))
    else:
        body = f"unknown event {kind}"
    return f"{t} #{ev.sequence} {body}"


def _cmd_watch(args: argparse.Namespace) -> int:
    c = _Client(args)
    pb2 = c.pb2
    kinds = [getattr(pb2, "EVENT_KIND_" + k.upper().replace("-", "_")) for k in args.kind]
    timeout = args.duration if args.duration > 0 else None
    stream = c.stub.WatchEvents(pb2.WatchEventsRequest(kinds=kinds), timeout=timeout)
    n = 0
    out: Callable[[Any], str] = (lambda ev: json.dumps(_to_dict(ev))) if args.json else (lambda ev: _event_line(pb2, ev))
    try:
        for ev in stream:
            print(out(ev), flush=True)
            n += 1
            if args.count and n >= args.count:
                stream.cancel()
                break
    except c.grpc.RpcError as exc:
        if exc.code() == c.grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
            return 0
        if exc.code() == c.grpc.StatusCode.CANCELLED and args.count and n >= args.count:
            return 0
        raise _rpc_error(exc, c.where) from None
    except KeyboardInterrupt:
        stream.cancel()
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
