"""``ptp-switch dataplane attach|stats|detach``: the in-kernel transparent clock on its own.

Run inside the switch's network namespace (``ip netns exec SW ptp-switch dataplane ...``).
``attach`` loads, attaches and exits; the kernel keeps the programs and maps, and ``stats`` /
``detach`` in a later process find them through the programs attached to the interfaces.
"""

from __future__ import annotations

import argparse
import json

from controlplane.services.cli import CliError

COLUMNS = ("rx", "tx", "corrected", "two_step_stored", "two_step_matched", "two_step_missed", "two_step_late",
           "malformed", "stale", "dropped", "no_ingress", "filtered", "local")


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dataplane", help="attach/inspect/detach the eBPF transparent clock on switch ports")
    dsub = p.add_subparsers(dest="dp_command", metavar="ACTION")

    a = dsub.add_parser("attach", help="attach (replacing any previous ptp-switch programs) and exit")
    a.add_argument("-i", "--interface", action="append", required=True, dest="ifaces", help="switch port (repeat)")
    a.add_argument("--mode", choices=("e2e", "p2p"), default="e2e")
    a.add_argument("--domain", type=_int, default=None, help="only this domainNumber (default: all)")
    a.add_argument("--two-step-tc", action="store_true", help="Delay_Req residence into the Delay_Resp")
    a.add_argument("--egress-priority", type=_int, default=None,
                   help="skb->priority for event messages at egress (default 0x00010001 = HTB class 1:1; 0 = off)")
    a.add_argument("--stale-age-ms", type=float, default=None, help="ingress stamps older than this are stale (default 100)")
    a.add_argument("--ingress-hook", choices=("auto", "xdp", "tc"), default="auto")
    a.set_defaults(func=_attach)

    s = dsub.add_parser("stats", help="per-port, per-message-type counters")
    s.add_argument("-i", "--interface", action="append", required=True, dest="ifaces")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_stats)

    d = dsub.add_parser("detach", help="remove ptp-switch programs from ports")
    d.add_argument("-i", "--interface", action="append", required=True, dest="ifaces")
    d.set_defaults(func=_detach)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _attach(args: argparse.Namespace) -> int:
    from dataplane.loader import Dataplane, DataplaneError
    from dataplane.maps import DEFAULT_EGRESS_PRIORITY, DEFAULT_STALE_AGE_NS

    try:
        dp = Dataplane(args.ifaces, mode=args.mode, domain=args.domain, two_step_tc=args.two_step_tc,
                       egress_priority=DEFAULT_EGRESS_PRIORITY if args.egress_priority is None else args.egress_priority,
                       stale_age_ns=DEFAULT_STALE_AGE_NS if args.stale_age_ms is None else int(args.stale_age_ms * 1e6),
                       ingress_hook=args.ingress_hook)
        dp.attach()
    except (DataplaneError, OSError) as exc:
        raise CliError(str(exc)) from None
    for st in dp.ports.values():
        print(f"{st.ifname}: ingress {st.ingress_hook}, egress {st.tc_api or 'tc'} ({args.mode})")
    if dp.pin_dir:
        print(f"pinned under {dp.pin_dir}")
    dp.close()
    return 0


def _stats(args: argparse.Namespace) -> int:
    from dataplane.loader import AttachedDataplane, DataplaneError

    try:
        adp = AttachedDataplane.find(args.ifaces)
    except (DataplaneError, OSError) as exc:
        raise CliError(str(exc)) from None
    try:
        stats = adp.stats()
    finally:
        adp.close()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    head = ["port", "message"] + [c.replace("two_step_", "2s_") for c in COLUMNS]
    rows = [head]
    for port, types in stats.items():
        if not types:
            rows.append([port, "-"] + ["0"] * len(COLUMNS))
        for t, c in types.items():
            rows.append([port, t] + [str(c.get(k, 0)) for k in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return 0


def _detach(args: argparse.Namespace) -> int:
    from dataplane.loader import DataplaneError, detach

    try:
        out = detach(args.ifaces)
    except (DataplaneError, OSError) as exc:
        raise CliError(str(exc)) from None
    for name, removed in out.items():
        print(f"{name}: removed {', '.join(removed) if removed else 'nothing (no ptp-switch programs)'}")
    return 0
