"""``ptp-switch lab up|down|status|show`` — netns labs built from topologies/ (kept until ``down``)."""

from __future__ import annotations

import argparse
import os
import time

from controlplane.services.cli import CliError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("lab", help="build, list and remove network-namespace labs (topologies/)")
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION")

    up = sub.add_parser("up", help="build a lab and keep it until `lab down`")
    up.add_argument("name", help="direct, line-N, star, dual-gm, ring, atr, or a text form like 'gm sw1 sl'")
    up.add_argument("--mode", choices=["bridge", "bare"], help="switch mode (default: bridge; ring: bare)")
    up.add_argument("--shape", choices=["egress", "internal"],
                    help="queueing delay on every switch port away from the GM (HTB + paced cross traffic)")
    up.add_argument("--rate-kbit", type=int, default=20_000, help="HTB serializer rate (default 20000)")
    up.add_argument("--cross-interval-us", type=int, default=720, help="cross-traffic frame interval (0 = none)")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="remove a lab (by run id or topology name), or all leftovers")
    down.add_argument("name", nargs="?", help="run id or topology name of a live lab")
    down.add_argument("--all", action="store_true", help="remove every recorded lab, also live ones (force)")
    down.add_argument("--dead", action="store_true", help="remove only labs whose owner process is gone")
    down.set_defaults(func=_down)

    status = sub.add_parser("status", help="list live labs, their namespaces and processes")
    status.set_defaults(func=_status)

    show = sub.add_parser("show", help="print a topology's nodes, links, subnets and routes (no root needed)")
    show.add_argument("name")
    show.add_argument("--mode", choices=["bridge", "bare"])
    show.add_argument("--shape", choices=["egress", "internal"])
    show.set_defaults(func=_show)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _topology(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from topologies import catalog
    from topologies.model import Shaping, TopologyError, Where

    try:
        shaping = None
        if getattr(args, "shape", None):
            shaping = Shaping(where=Where(args.shape), rate_kbit=getattr(args, "rate_kbit", 20_000),
                              cross_interval_us=getattr(args, "cross_interval_us", 720))
        return catalog.get(args.name, mode=args.mode, shaping=shaping)
    except TopologyError as exc:
        raise CliError(exc.reason) from exc


def _show(args: argparse.Namespace) -> int:
    print(_topology(args).describe())
    return 0


def _up(args: argparse.Namespace) -> int:
    from topologies.netns import Lab, LabError

    if os.geteuid() != 0:
        raise CliError("needs root (network namespaces)")
    topo = _topology(args)
    lab = Lab(topo, persistent=True)
    try:
        lab.up()
    except LabError as exc:
        raise CliError(str(exc)) from exc
    # the lab outlives this process: detach the records of tracked processes from our Popen objects
    lab.is_up = False  # nothing to do at exit; `lab down` removes it
    print(f"lab {lab.run_id} up: {topo.name}")
    print(topo.describe())
    print("namespaces: " + " ".join(lab.namespaces))
    print(f"run a command: ip netns exec {lab.ns(topo.nodes[0].name)} ping -c1 ...")
    print(f"remove it:     ptp-switch lab down {lab.run_id}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from topologies.netns import list_records, sweep, teardown_record

    if os.geteuid() != 0:
        raise CliError("needs root (network namespaces)")
    if args.all or args.dead:
        done = sweep(force=args.all, include_persistent=args.all)
        print(f"removed {len(done)} lab(s){': ' + ' '.join(done) if done else ''}")
        return 0
    if not args.name:
        raise CliError("give a run id or topology name (or --all / --dead)")
    recs = list_records()
    match = [r for r in recs if r["run_id"] == args.name] or [r for r in recs if r["topology"] == args.name]
    if not match:
        raise CliError(f"no live lab {args.name!r} (see `ptp-switch lab status`)")
    if len(match) > 1:
        raise CliError(f"{len(match)} labs named {args.name!r}: give a run id ({', '.join(r['run_id'] for r in match)})")
    rec = match[0]
    if rec["alive"] and not rec.get("persistent") and rec.get("owner_pid") != os.getpid():
        raise CliError(f"lab {rec['run_id']} belongs to running process {rec['owner_pid']}; it removes it itself (or use --all)")
    removed = teardown_record(rec)
    print(f"lab {rec['run_id']} down ({len(removed)} namespaces removed)")
    return 0


def _status(args: argparse.Namespace) -> int:
    from topologies.netns import list_records, pids_in_netns

    recs = list_records()
    if not recs:
        print("no labs")
        return 0
    for r in recs:
        owner = "persistent" if r.get("persistent") else (f"owner {r['owner_pid']} " + ("alive" if r["alive"] else "DEAD (leftover)"))
        age = time.time() - r.get("created", time.time())
        print(f"{r['run_id']}  {r['topology']}  {owner}  up {age:.0f} s  [{r.get('text', '')}]")
        for ns in r.get("namespaces", []):
            pids = pids_in_netns(ns)
            procs = []
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        procs.append(f"{pid}:" + f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:60])
                except OSError:
                    continue
            exists = os.path.exists(f"/run/netns/{ns}")
            print(f"    {ns}{'' if exists else ' (missing)'}  " + ("; ".join(procs) if procs else "no processes"))
    return 0
