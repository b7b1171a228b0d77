"""Section 4 of the bench: failover times, ptp-switch next to linuxptp in the same run.

Dual grandmaster (``gm1@10 sw1 | gm2@20 sw1 | sw1 sl``, bare switch ports, UDPv4): two ptp4l
grandmasters, a boundary clock in sw1 (``ptp-switch run --clock-type BC`` or ptp4l as BC, both with
section 1's configuration, free_running 1), a free-running ptp4l slave behind it. Per trial the
better grandmaster (priority1 10) is SIGKILLed and we time
- ``switched_s``: kill -> the BC's PARENT_DATA_SET names the priority1-20 grandmaster (pmc over the
  BC's UNIX socket, polled every 0.1 s);
- ``downstream_s``: kill -> the slave behind the BC logs ``selected best master clock <gm2>`` (ptp4l's
  own CLOCK_MONOTONIC stamps);
then gm1 is restarted and ``returned_s`` = restart -> the BC's parent is gm1 again.

ATR client (``srv1@10 sw1 | srv2@20 sw1 | sw1 r1 cl | r1 cl2``, tests/lab/test_atr.py's side-by-side
lab): two ptp4l unicast servers; the ptp-switch client on cl and a ptp4l client on cl2 have the same
unicast master table (srv1, srv2). Per trial srv1 is SIGKILLed; for each client
``switched_s`` = kill -> it selects srv2 and ``downstream_s`` = kill -> its first offset from srv2;
srv1 restarted, ``returned_s`` = restart -> it selects srv1 again (linuxptp 3.1.1 may never return).

Nothing here steps or slews a clock: every ptp4l and ptp-switch runs free_running 1.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.scenarios import ChainSpec, Impl
from topologies import catalog
from topologies import ptp4l as p4
from topologies.model import SwitchMode

DUAL_GM = "gm1@10 sw1 | gm2@20 sw1 | sw1 sl"
ATR2 = "srv1@10 sw1 | srv2@20 sw1 | sw1 r1 cl | r1 cl2"
_SELECTED = re.compile(r"ptp4l\[(\d+\.\d+)\]: selected best master clock (\S+)")
_LOCAL = re.compile(r"selected local clock (\S+) as best master")
_UNICAST = re.compile(r"unicast (\S+) (\S+)")


@dataclass
class Trial:
    scenario: str  # "dual-gm" | "atr"
    impl: str  # label
    trial: int
    switched_s: float | None = None
    downstream_s: float | None = None
    returned_s: float | None = None
    note: str = ""


@dataclass
class FailoverResult:
    trials: list[Trial] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _lab(text: str, mode: SwitchMode, commands: list[str]) -> Any:
    from topologies.netns import Lab

    last: Exception | None = None
    for attempt in range(4):
        lab = Lab(catalog.parse(text, name="bench-failover", mode=mode))
        try:
            lab.up()
            commands.append(f"# lab {lab.run_id}: {text}  ({mode} switch ports; namespaces {lab.ns(lab.topology.nodes[0].name)} ...)")
            return lab
        except Exception as exc:  # noqa: BLE001 - a concurrent run can break a build; retried
            last = exc
            time.sleep(1 + attempt)
    raise RuntimeError(f"lab build failed 4 times: {last}")


def _ptp_switch() -> str:
    exe = pathlib.Path(sys.executable).with_name("ptp-switch")
    if not exe.exists():
        raise RuntimeError(f"{exe} not found: run `make setup`")
    return str(exe)


def _wait(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> float | None:
    """Seconds until ``cond()`` holds (polled), or None after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(step_s)
    return None


def _gm_identity(run: p4.Ptp4lRun, timeout_s: float = 10) -> str | None:
    found: list[str] = []

    def ok() -> bool:
        m = _LOCAL.search(run.text())
        if m:
            found.append(m.group(1))
        return bool(m)

    _wait(ok, timeout_s, 0.2)
    return found[0] if found else None


def _selected_after(text: str, identity: str | None, after_mono: float) -> float | None:
    for m in _SELECTED.finditer(text):
        t = float(m.group(1))
        if t > after_mono and (identity is None or m.group(2) == identity):
            return t
    return None


# -- dual grandmaster -------------------------------------------------------------------------
def dual_gm(impl: Impl, trials: int, res: FailoverResult, log: Callable[[str], None]) -> None:
    """One lab, ``trials`` kills of the better GM, with ``impl`` (PTPS_BC or LINUXPTP_BC) in sw1."""
    from bench.scenarios_run import ptp4l_config

    label = {Impl.PTPS_BC: "ptp-switch BC", Impl.LINUXPTP_BC: "linuxptp BC"}[impl]
    lab = _lab(DUAL_GM, SwitchMode.BARE, res.commands)
    with lab:
        gm1 = p4.start_ptp4l(lab, "gm1", "gm", overrides={"priority1": "10"})
        gm2 = p4.start_ptp4l(lab, "gm2", "gm", overrides={"priority1": "20"})
        ports = list(lab.switch_ports("sw1"))
        uds = lab.uds_path("sw1", "bc")
        cfg = lab.workdir / "sw1-bc.cfg"
        if impl is Impl.PTPS_BC:
            cfg.write_text(ptp4l_config("ptps", ChainSpec(Impl.PTPS_BC, hops=1), uds))
            argv = [_ptp_switch(), "run", "-f", str(cfg), "-m", "--clock-type", "BC"]
        else:
            cfg.write_text(ptp4l_config("switch", ChainSpec(Impl.LINUXPTP_BC, hops=1), uds))
            argv = ["ptp4l", "-f", str(cfg), "-m", "-q"]
        for p in ports:
            argv += ["-i", p]
        sw_log = lab.workdir / "sw1-bc.log"
        sw = lab.popen("sw1", argv, stdout=sw_log.open("w"), stderr=subprocess.STDOUT)
        res.commands.append(f"ip netns exec {lab.ns('sw1')} {' '.join(argv)}   # {label}, section-1 config")
        time.sleep(0.5)
        sl = p4.start_ptp4l(lab, "sl", "slave")
        if len(res.commands) < 8:
            res.commands += [f"ip netns exec {lab.ns(r.node)} {' '.join(r.argv)}" for r in (gm1, gm2, sl)]
        gm1_id, gm2_id = _gm_identity(gm1), _gm_identity(gm2)

        def parent_p1() -> str | None:
            try:
                out = p4.pmc(lab, "sw1", uds, "GET PARENT_DATA_SET", timeout_s=3)
            except Exception:  # noqa: BLE001 - a busy daemon may miss one poll
                return None
            m = re.search(r"grandmasterPriority1\s+(\d+)", out)
            return m.group(1) if m else None

        def fail(why: str) -> None:
            tail = sw_log.read_text(errors="replace")[-600:]
            res.errors.append(f"{label}: {why}; sw1 exit {sw.poll()}; log tail: {tail!r}")

        if _wait(lambda: parent_p1() == "10", 25, 0.25) is None:
            fail("never selected gm1 (priority1 10)")
            return
        if _wait(lambda: _selected_after(sl.text(), gm1_id, 0.0) is not None, 20, 0.25) is None:
            fail("the slave never selected gm1")
            return
        for k in range(1, trials + 1):
            time.sleep(2.0)
            tr = Trial("dual-gm", label, k)
            kill_mono = time.monotonic()
            gm1.proc.kill()
            gm1.proc.wait(timeout=5)
            tr.switched_s = _wait(lambda: parent_p1() == "20", 15)
            if _wait(lambda: _selected_after(sl.text(), gm2_id, kill_mono) is not None, 10, 0.25) is not None:
                t = _selected_after(sl.text(), gm2_id, kill_mono)
                tr.downstream_s = None if t is None else t - kill_mono
            gm1 = p4.start_ptp4l(lab, "gm1", "gm", overrides={"priority1": "10"}, tag=f"r{k}")
            tr.returned_s = _wait(lambda: parent_p1() == "10", 20)
            if tr.switched_s is None:
                tr.note = "BC did not select gm2 within 15 s"
            elif tr.downstream_s is None:
                tr.note = "slave logged no change of grandmaster within 10 s"
            res.trials.append(tr)
            log(f"  [4] dual-gm {label} trial {k}: switched {_fmt(tr.switched_s)}, slave {_fmt(tr.downstream_s)}, "
                f"returned {_fmt(tr.returned_s)}")
            # the slave must be on gm1 again before the next kill
            again = time.monotonic()
            _wait(lambda: _selected_after(sl.text(), gm1_id, kill_mono) is not None or time.monotonic() - again > 8, 9, 0.25)
        gm2.stop()


# -- ATR client ------------------------------------------------------------------------------
def _ptp4l_server_cfg(uds: str, priority1: int) -> str:
    return (f"[global]\npriority1 {priority1}\nfree_running 1\nunicast_listen 1\ninhibit_multicast_service 1\n"
            f"logAnnounceInterval 0\nlogSyncInterval 0\ntx_timestamp_timeout 50\nuds_address {uds}\n")


def _client_table(servers: list[str]) -> str:
    return ("[unicast_master_table]\ntable_id 1\nlogQueryInterval 0\n" + "".join(f"UDPv4 {s}\n" for s in servers)
            + "[eth0]\nunicast_master_table 1\n")


_CLIENT_GLOBAL = ("slaveOnly 1\nfree_running 1\nlogAnnounceInterval 0\nannounceReceiptTimeout 3\nlogSyncInterval 0\n"
                  "logMinDelayReqInterval 0\nunicast_req_duration 20\ntx_timestamp_timeout 50\n")


def _json_events(path: pathlib.Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        msg = rec.get("msg", "")
        m = _UNICAST.search(msg)
        if m and m.group(1) == "active_server":
            rec["kind"], rec["address"] = "active_server", m.group(2)
        elif "master offset" in msg:
            rec["kind"] = "offset"
        out.append(rec)
    return out


def atr(trials: int, res: FailoverResult, log: Callable[[str], None]) -> None:
    lab = _lab(ATR2, SwitchMode.BRIDGE, res.commands)
    with lab:
        s1, s2 = lab.addr("srv1", "r1"), lab.addr("srv2", "r1")

        def server(node: str, prio: int, tag: str) -> tuple[subprocess.Popen[Any], pathlib.Path]:
            cfg = lab.workdir / f"{node}-{tag}.cfg"
            cfg.write_text(_ptp4l_server_cfg(lab.uds_path(node, tag), prio))
            logp = lab.workdir / f"{node}-{tag}.log"
            argv = ["ptp4l", "-i", "eth0", "-S", "-4", "-m", "-f", str(cfg)]
            if tag == "a":
                res.commands.append(f"ip netns exec {lab.ns(node)} {' '.join(argv)}   # unicast server, priority1 {prio}")
            return lab.popen(node, argv, stdout=logp.open("w"), stderr=subprocess.STDOUT), logp

        srv1, srv1_log = server("srv1", 10, "a")
        _, srv2_log = server("srv2", 20, "a")
        time.sleep(1)
        cl_cfg = lab.workdir / "cl.cfg"
        cl_cfg.write_text(f"[global]\n{_CLIENT_GLOBAL}uds_address {lab.uds_path('cl', 'sw')}\n"
                          + _client_table([s1, s2]))
        cl_log = lab.workdir / "cl.jsonl"
        argv = [_ptp_switch(), "run", "-S", "-4", "-m", "--json-log", "-f", str(cl_cfg), "-i", "eth0"]
        lab.popen("cl", argv, stdout=cl_log.open("w"), stderr=subprocess.STDOUT)
        res.commands.append(f"ip netns exec {lab.ns('cl')} {' '.join(argv)}   # ptp-switch unicast client")
        cl2_cfg = lab.workdir / "cl2.cfg"
        cl2_cfg.write_text(f"[global]\n{_CLIENT_GLOBAL}freq_est_interval 0\nsummary_interval 0\nuds_address {lab.uds_path('cl2')}\n"
                           + _client_table([s1, s2]))
        cl2_log = lab.workdir / "cl2.log"
        argv2 = ["ptp4l", "-i", "eth0", "-S", "-4", "-m", "-f", str(cl2_cfg)]
        lab.popen("cl2", argv2, stdout=cl2_log.open("w"), stderr=subprocess.STDOUT)
        res.commands.append(f"ip netns exec {lab.ns('cl2')} {' '.join(argv2)}   # linuxptp unicast client (same table)")
        res.commands.append("# client config (both): " + _CLIENT_GLOBAL.replace("\n", "; ") + f"table: UDPv4 {s1}, UDPv4 {s2}")

        def local_id(path: pathlib.Path) -> str | None:
            _wait(lambda: _LOCAL.search(path.read_text(errors="replace")) is not None, 10, 0.25)
            m = _LOCAL.search(path.read_text(errors="replace"))
            return m.group(1) if m else None

        srv1_id, srv2_id = local_id(srv1_log), local_id(srv2_log)

        def ps_active(addr: str, after_mono: float) -> float | None:
            for e in _json_events(cl_log):
                if e.get("kind") == "active_server" and e.get("address") == addr and e.get("mono", 0) > after_mono:
                    return float(e["mono"])
            return None

        def ps_offset_after(t: float) -> float | None:
            for e in _json_events(cl_log):
                if e.get("kind") == "offset" and e.get("mono", 0) > t:
                    return float(e["mono"])
            return None

        def lp_offset_after(t: float) -> float | None:
            for o in p4.parse_offsets(cl2_log.read_text(errors="replace")):
                if o.t_s > t:
                    return o.t_s
            return None

        ok = _wait(lambda: ps_active(s1, 0.0) is not None and ps_offset_after(0.0) is not None
                   and lp_offset_after(0.0) is not None, 45, 0.5)
        lp_stuck = ok is None and lp_offset_after(0.0) is None and ps_offset_after(0.0) is not None
        if lp_stuck:  # linuxptp 3.1.1's unicast client sometimes never starts: time ptp-switch's client alone
            res.errors.append("ATR: the linuxptp client reported no offset within 45 s of its start (its log tail: "
                              + repr(cl2_log.read_text(errors="replace")[-200:]) + "); its rows show what it did after the kill")
        if ok is None and not lp_stuck:
            kinds = sorted({str(e.get("kind")) for e in _json_events(cl_log)})
            res.errors.append(f"ATR: the clients did not both report offsets from srv1 within 45 s (ptp-switch client "
                              f"active server {ps_active(s1, 0.0)}, event kinds {kinds}; linuxptp client offsets: "
                              f"{lp_offset_after(0.0) is not None}; its log tail: "
                              + repr(cl2_log.read_text(errors="replace")[-300:]) + ")")
            return
        for k in range(1, trials + 1):
            time.sleep(3.0)
            kill_mono = time.monotonic()
            srv1.kill()
            srv1.wait(timeout=5)
            _wait(lambda: ps_active(s2, kill_mono) is not None and ps_offset_after(ps_active(s2, kill_mono) or 1e18) is not None
                  and lp_offset_after(_selected_after(cl2_log.read_text(errors="replace"), srv2_id, kill_mono) or 1e18) is not None,
                  15, 0.25)
            t_ps = ps_active(s2, kill_mono)
            t_lp = _selected_after(cl2_log.read_text(errors="replace"), srv2_id, kill_mono)
            ps = Trial("atr", "ptp-switch client", k, switched_s=None if t_ps is None else t_ps - kill_mono)
            lp = Trial("atr", "linuxptp client", k, switched_s=None if t_lp is None else t_lp - kill_mono)
            if t_ps is not None:
                o = ps_offset_after(t_ps)
                ps.downstream_s = None if o is None else o - kill_mono
            if t_lp is not None:
                o = lp_offset_after(t_lp)
                lp.downstream_s = None if o is None else o - kill_mono
            restart = time.monotonic()
            srv1, _ = server("srv1", 10, f"r{k}")
            _wait(lambda: ps_active(s1, restart) is not None
                  and _selected_after(cl2_log.read_text(errors="replace"), srv1_id, restart) is not None, 20, 0.25)
            t_back = ps_active(s1, restart)
            ps.returned_s = None if t_back is None else t_back - restart
            t_back2 = _selected_after(cl2_log.read_text(errors="replace"), srv1_id, restart)
            lp.returned_s = None if t_back2 is None else t_back2 - restart
            for tr, what in ((ps, "ptp-switch"), (lp, "linuxptp")):
                if tr.switched_s is None:
                    tr.note = "did not select srv2 within 15 s"
                elif tr.downstream_s is None:
                    tr.note = "no offset from srv2 within 15 s"
                elif tr.returned_s is None:
                    tr.note = "did not return to srv1 within 20 s of its restart"
                res.trials.append(tr)
                log(f"  [4] atr {what} client trial {k}: switched {_fmt(tr.switched_s)}, first offset {_fmt(tr.downstream_s)}, "
                    f"returned {_fmt(tr.returned_s)}")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def run_failover(trials: int = 2, log: Callable[[str], None] = print) -> FailoverResult:
    """Both scenarios, ptp-switch and linuxptp in each; a failed part becomes an error line, never a raise."""
    res = FailoverResult()
    for impl in (Impl.PTPS_BC, Impl.LINUXPTP_BC):
        try:
            dual_gm(impl, trials, res, log)
        except Exception as exc:  # noqa: BLE001 - reported in the section
            res.errors.append(f"dual-gm {impl}: {exc.__class__.__name__}: {exc}")
    try:
        atr(trials, res, log)
    except Exception as exc:  # noqa: BLE001
        res.errors.append(f"atr: {exc.__class__.__name__}: {exc}")
    return res
