"""Build a Topology as network namespaces with pyroute2; always tear it down.

    with Lab(catalog.get("line-1")) as lab:
        lab.run("gm", ["ping", "-c1", lab.addr("sl", "gm")])
        proc = lab.popen("sl", ["ptp4l", ...])          # killed on down

Names: netns ``pts<runid>-<node>``; the run id is short and unique per Lab. Veth pairs are created
directly inside the namespaces (never a name in the root namespace: other labs are built at the
same time). Every live lab is recorded in ``/run/ptp-switch/labs/<runid>.json`` with its owner PID;
``sweep()`` removes labs whose owner is dead (``force=True``: all of them, also persistent ones).
Teardown runs on normal exit, on exceptions (context manager), on SIGTERM/SIGHUP (a handler that
raises SystemExit so the ``with`` unwinds), at interpreter exit (atexit), and for a killed run the
next ``up()`` sweeps it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import json
import logging
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pyroute2 import NetNS, netns

from topologies.model import Role, SwitchMode, Topology, Where

log = logging.getLogger(__name__)

PREFIX = "pts"
LAB_DIR = pathlib.Path("/run/ptp-switch/labs")
NETNS_DIR = pathlib.Path("/run/netns")
UDS_DIR = pathlib.Path("/var/run")
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not be built or used (machine state, permissions, a command that failed)."""


# -- namespaces and processes -----------------------------------------------------------------
def _ns_ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_netns(ns_name: str) -> list[int]:
    """PIDs whose network namespace is ``ns_name`` (only processes inside OUR namespace)."""
    ident = _ns_ident(str(NETNS_DIR / ns_name))
    if ident is None:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            if _ns_ident(f"/proc/{entry}/ns/net") == ident:
                out.append(int(entry))
    return out


def _proc_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    if not pid:
        return False
    st = _proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


def kill_pids(pids: Sequence[int], grace_s: float = 1.5) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if pid_alive(p) and not _is_zombie(p)]
        if remaining:
            time.sleep(0.05)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns_name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that joined ``ns_name`` (setns is per thread); return its result.

    Sockets created there stay in that namespace, so tests can open real sockets in a lab node.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(str(NETNS_DIR / ns_name), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise LabError(f"setns({ns_name}) failed: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns_name}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _sysctl_writer(values: dict[str, str]) -> Callable[[], None]:
    def write() -> None:
        for key, val in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path, "w") as f:
                    f.write(val)
            except OSError as exc:
                raise LabError(f"sysctl {key}={val}: {exc}") from exc

    return write


def create_netns(name: str) -> None:
    """``ip netns add`` (iproute2; pyroute2's forked create can fail silently) and verify it exists."""
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
    if res.returncode != 0 or not (NETNS_DIR / name).exists():
        raise LabError(f"could not create netns {name}: {res.stderr.strip() or 'not present after ip netns add'}")


# -- the registry of live labs ----------------------------------------------------------------
def _record_path(run_id: str) -> pathlib.Path:
    return LAB_DIR / f"{run_id}.json"


def list_records() -> list[dict[str, Any]]:
    out = []
    for path in sorted(LAB_DIR.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rec["alive"] = pid_alive(rec.get("owner_pid"), rec.get("owner_start"))
        out.append(rec)
    return out


def teardown_record(rec: dict[str, Any]) -> list[str]:
    """Remove everything a lab record names: processes in its namespaces, the namespaces, UDS files."""
    run_id = rec["run_id"]
    removed = []
    names = list(rec.get("namespaces", []))
    names += [p.name for p in NETNS_DIR.glob(f"{PREFIX}{run_id}-*") if p.name not in names]
    pids: list[int] = []
    for ns_name in names:
        pids += pids_in_netns(ns_name)
    kill_pids(pids)
    for ns_name in names:
        if (NETNS_DIR / ns_name).exists():
            try:
                netns.remove(ns_name)
                removed.append(ns_name)
            except OSError as exc:
                log.warning("could not remove netns %s: %s", ns_name, exc)
    for path in glob.glob(str(UDS_DIR / f"ptp4l-{PREFIX}{run_id}-*")) + glob.glob(f"/tmp/{PREFIX}{run_id}-*"):
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        _record_path(run_id).unlink()
    return removed


def sweep(force: bool = False, include_persistent: bool = False) -> list[str]:
    """Tear down leftover labs: those whose owner process is dead and that are not persistent
    (``ptp-switch lab up``); ``force``: every recorded lab."""
    done = []
    for rec in list_records():
        if force or (not rec["alive"] and (include_persistent or not rec.get("persistent"))):
            teardown_record(rec)
            done.append(rec["run_id"])
    return done


def new_run_id() -> str:
    for _ in range(100):
        rid = "".join(secrets.choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(5))
        if not _record_path(rid).exists() and not list(NETNS_DIR.glob(f"{PREFIX}{rid}-*")):
            return rid
    raise LabError("could not find a free run id")  # pragma: no cover


# -- signal/atexit teardown -------------------------------------------------------------------
_LIVE: dict[str, Lab] = {}
_HANDLERS_INSTALLED = False


_HANDLER_PID = 0


def _on_signal(signum: int, frame: Any) -> None:
    if os.getpid() != _HANDLER_PID:  # a forked child inherited the handler: default behaviour
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED, _HANDLER_PID
    if _HANDLERS_INSTALLED and _HANDLER_PID == os.getpid():
        return
    _HANDLERS_INSTALLED = True
    _HANDLER_PID = os.getpid()
    atexit.register(_atexit_down)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


def _atexit_down() -> None:
    # Only in the process that built the lab: pyroute2 forks helper children (NetNS sockets) that
    # inherit _LIVE and run atexit handlers when they exit; they must not tear the lab down.
    for lab in list(_LIVE.values()):
        if not lab.persistent and lab.owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                lab.down()


# -- the lab ----------------------------------------------------------------------------------
class Lab:
    """A Topology realised as network namespaces. Use as a context manager, or ``up()``/``down()``."""

    def __init__(self, topology: Topology, run_id: str | None = None, *, persistent: bool = False) -> None:
        self.topology = topology
        self.run_id = run_id or new_run_id()
        if not self.run_id.isalnum() or len(self.run_id) > 8:
            raise LabError(f"run id {self.run_id!r}: 1..8 letters/digits")
        self.persistent = persistent  # kept after the owner exits (the `ptp-switch lab up` CLI)
        self.is_up = False
        self.owner_pid = os.getpid()
        self.procs: list[subprocess.Popen[Any]] = []
        self.workdir = pathlib.Path(f"/tmp/{PREFIX}{self.run_id}-work")
        self._ports: dict[str, tuple[str, ...]] = {}
        self._bridges: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    # -- names --------------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        self.topology.node(node)
        return f"{PREFIX}{self.run_id}-{node}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(n.name) for n in self.topology.nodes]

    def ifname(self, node: str, peer: str) -> str:
        return self.topology.ifname(node, peer)

    def addr(self, node: str, peer: str, family: int = 4) -> str:
        return self.topology.addr(node, peer, family)

    def switch_ports(self, node: str) -> tuple[str, ...]:
        """The outer ports of a switch (what the dataplane attaches to), in link order."""
        if not self.topology.node(node).is_switch:
            raise LabError(f"{node} is not a switch")
        return self.topology.ports(node)

    @property
    def ports(self) -> dict[str, tuple[str, ...]]:
        return {n.name: self.topology.ports(n.name) for n in self.topology.nodes if n.is_switch}

    def bridges(self, node: str) -> tuple[str, ...]:
        return self._bridges.get(node, ())

    def uds_path(self, node: str, tag: str = "") -> str:
        """A UNIX socket path unique to this lab and node (UDS paths are not per-netns)."""
        return str(UDS_DIR / f"ptp4l-{self.ns(node)}{('-' + tag) if tag else ''}")

    def ipr(self, node: str) -> NetNS:
        return NetNS(self.ns(node))

    def socket(self, node: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
        return in_netns(self.ns(node), lambda: socket.socket(family, type, proto))

    def in_node(self, node: str, fn: Callable[[], T]) -> T:
        return in_netns(self.ns(node), fn)

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _write_record(self) -> None:
        LAB_DIR.mkdir(parents=True, exist_ok=True)
        from topologies.catalog import to_text

        rec = {
            "run_id": self.run_id,
            "topology": self.topology.name,
            "text": to_text(self.topology),
            "owner_pid": os.getpid(),
            "owner_start": _proc_start_time(os.getpid()),
            "persistent": self.persistent,
            "namespaces": self.namespaces,
            "created": time.time(),
            "modes": {n.name: str(n.mode) for n in self.topology.nodes if n.is_switch},
            "procs": [{"pid": p.pid, "argv": list(map(str, p.args))[3:] if isinstance(p.args, list) else str(p.args)} for p in self.procs],
        }
        tmp = _record_path(self.run_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        tmp.replace(_record_path(self.run_id))

    def up(self) -> Lab:
        if self.is_up:
            return self
        if os.geteuid() != 0:
            raise LabError("building a lab needs root (network namespaces)")
        self.owner_pid = os.getpid()
        sweep()
        _install_handlers()
        self._write_record()  # before the first namespace, so a crash leaves something to sweep
        _LIVE[self.run_id] = self
        self.is_up = True
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        if os.getpid() != self.owner_pid:
            return  # a forked child (pyroute2 helper, multiprocessing) never tears down its parent's lab
        with self._lock:
            if not self.is_up:
                return
            self.is_up = False
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2)
        for stream in ("stdout", "stderr"):
            for proc in self.procs:
                f = getattr(proc, stream)
                if f is not None:
                    with contextlib.suppress(Exception):
                        f.close()
        teardown_record({"run_id": self.run_id, "namespaces": self.namespaces})
        _LIVE.pop(self.run_id, None)

    # -- building -----------------------------------------------------------------------------
    def _build(self) -> None:
        topo = self.topology
        self.workdir.mkdir(parents=True, exist_ok=True)
        for n in topo.nodes:
            create_netns(self.ns(n.name))
            sysctls = {
                "net.ipv6.conf.all.accept_dad": "0",
                "net.ipv6.conf.default.accept_dad": "0",
                "net.ipv6.conf.all.accept_ra": "0",
                "net.ipv6.conf.default.accept_ra": "0",
            }
            if n.is_switch and n.mode is SwitchMode.BRIDGE:
                # the bridge itself is not a host: keep its stack quiet (no RS/MLD on the segment)
                sysctls["net.ipv6.conf.default.disable_ipv6"] = "1"
            if n.role is Role.ROUTER:
                sysctls["net.ipv4.ip_forward"] = "1"
                sysctls["net.ipv6.conf.all.forwarding"] = "1"
            in_netns(self.ns(n.name), _sysctl_writer(sysctls))
            with self.ipr(n.name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        # veth pairs, created inside the a-end namespace with the peer sent to the b-end namespace
        for link in topo.links:
            try:
                peer_fd = os.open(str(NETNS_DIR / self.ns(link.b)), os.O_RDONLY)
            except OSError as exc:
                raise LabError(f"netns {self.ns(link.b)} vanished while building (removed by another process?): {exc}") from exc
            try:
                with self.ipr(link.a) as ipr:
                    ipr.link("add", ifname=link.a_if, kind="veth", peer={"ifname": link.b_if, "net_ns_fd": peer_fd})
            except Exception as exc:
                raise LabError(f"veth {link.a}:{link.a_if} -- {link.b}:{link.b_if}: {exc}") from exc
            finally:
                os.close(peer_fd)
        for n in topo.nodes:
            with self.ipr(n.name) as ipr:
                for ifname in topo.ports(n.name):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
                if n.is_switch and n.mode is SwitchMode.BRIDGE:
                    self._build_bridges(n.name, ipr)
        # addresses and routes
        for subnet in topo.subnets:
            for m in subnet.members:
                with self.ipr(m.node) as ipr:
                    idx = ipr.link_lookup(ifname=m.ifname)[0]
                    a4, p4 = m.v4.split("/")
                    a6, p6 = m.v6.split("/")
                    ipr.addr("add", index=idx, address=a4, prefixlen=int(p4))
                    ipr.addr("add", index=idx, address=a6, prefixlen=int(p6))
        for r in topo.routes:
            with self.ipr(r.node) as ipr:
                ipr.route("add", dst=r.dst_v4, gateway=r.via_v4)
                ipr.route("add", dst=r.dst_v6, gateway=r.via_v6, family=socket.AF_INET6)
        if topo.shaped_links():
            from topologies import shaping

            shaping.apply(self)
        self._write_record()

    def _build_bridges(self, node: str, ipr: NetNS) -> None:
        topo = self.topology
        internal = [lk for lk in topo.links_of(node) if lk.shaping and lk.shaping.where is Where.INTERNAL and lk.shaped_sender == node]

        def bridge(name: str) -> int:
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_mcast_snooping=0, br_forward_delay=0)
            return ipr.link_lookup(ifname=name)[0]

        def enslave(ifname: str, br: int) -> None:
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], master=br, state="up")

        if not internal:
            br = bridge("br0")
            for port in topo.ports(node):
                enslave(port, br)
            ipr.link("set", index=br, state="up")
            self._bridges[node] = ("br0",)
            return
        egress_port = internal[0].end(node)
        br_a, br_b = bridge("brA"), bridge("brB")
        ipr.link("add", ifname="ia", kind="veth", peer={"ifname": "ib"})
        for port in topo.ports(node):
            enslave(port, br_b if port == egress_port else br_a)
        enslave("ia", br_a)
        enslave("ib", br_b)
        ipr.link("set", index=br_a, state="up")
        ipr.link("set", index=br_b, state="up")
        self._bridges[node] = ("brA", "brB")

    # -- processes ----------------------------------------------------------------------------
    def _argv(self, node: str, argv: Sequence[str]) -> list[str]:
        if not self.is_up:
            raise LabError("lab is not up")
        return ["ip", "netns", "exec", self.ns(node), *map(str, argv)]

    def run(self, node: str, argv: Sequence[str], *, timeout: float = 30, check: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command in a node's namespace (bounded by ``timeout``), capture its output."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        try:
            res = subprocess.run(self._argv(node, argv), timeout=timeout, start_new_session=True, **kw)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{node}: {' '.join(map(str, argv))} did not finish within {timeout} s") from exc
        if check and res.returncode != 0:
            raise LabError(f"{node}: {' '.join(map(str, argv))} failed ({res.returncode}): {(res.stderr or '').strip()[-400:]}")
        return res

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a tracked process in a node's namespace (own process group; killed on down)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        with self._lock:
            proc = subprocess.Popen(self._argv(node, argv), start_new_session=True, **kw)
            self.procs.append(proc)
        self._write_record()
        return proc

    def pids(self) -> dict[str, list[int]]:
        return {n.name: pids_in_netns(self.ns(n.name)) for n in self.topology.nodes}

    def ping(self, src: str, dst: str, *, family: int = 4, count: int = 1, timeout_s: float = 5) -> bool:
        argv = ["ping", "-6" if family == 6 else "-4", "-c", str(count), "-W", str(int(timeout_s)), "-i", "0.2", self.addr(dst, src, family)]
        return self.run(src, argv, timeout=timeout_s * count + 5).returncode == 0


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    """SIGTERM a process this code started, wait ``timeout_s``, then SIGKILL (and reap it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def lab(topology: Topology, run_id: str | None = None) -> Iterator[Lab]:
    with Lab(topology, run_id) as built:
        yield built
