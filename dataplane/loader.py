"""Compile, attach, detach and find the in-kernel transparent clock.

``Dataplane(ifaces, mode=...)`` compiles dataplane/bpf with BCC, attaches on each port
  * ingress: XDP (native, the earliest hook), or tc ingress when XDP cannot attach / is not wanted,
  * egress:  tc egress (after the bridge's forwarding decision, once per egress copy),
  tc programs through tcx (kernel >= 6.6), else a cls_bpf filter in clsact,
with pyroute2 (XDP, clsact) or the bpf syscall (tcx) in the current network namespace, and writes the
configuration maps.

Attaching replaces whatever ptp-switch program was there (XDP and tcx are replaced atomically; a
clsact filter uses a fixed priority/handle with "replace"), so a second attach never stacks.
The kernel keeps the programs and their maps after the process exits: a later process finds them
through the programs attached to the interfaces (``AttachedDataplane.find``, ``Dataplane.adopt``) —
this works even inside ``ip netns exec``. Programs and maps are also pinned under
<bpffs>/ptp-switch/<netns inode>/ (``pin_base()``: /sys/fs/bpf, or — inside ``ip netns exec``, whose
private mount namespace remounts /sys and hides the host's bpffs — the host bpffs seen through the
root of the nearest ancestor process in another mount namespace, i.e. the caller of ``ip netns exec``).
``Dataplane.adopt(ifaces)`` takes over a running dataplane without recompiling or re-attaching
(a restarted daemon: correction never stops, counters and pending two-step state are kept).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import pathlib
import re
from dataclasses import dataclass, field

from dataplane import libbpf
from dataplane.maps import (
    DEFAULT_EGRESS_PRIORITY,
    DEFAULT_STALE_AGE_NS,
    MAP_TYPES,
    DataplaneMaps,
    GlobalConfig,
    Mode,
    PortConfig,
    RATE_ONE_Q32,
    PtpKey,
    check_against_bcc,
)

log = logging.getLogger(__name__)

BPF_DIR = pathlib.Path(__file__).resolve().parent / "bpf"
UNIT_FILES = ("ptp_switch.c", "ptp_ingress.c", "ptp_egress.c")
PROGRAMS = ("xdp_ingress", "tc_ingress", "tc_egress")
PIN_ROOT = pathlib.Path("/sys/fs/bpf/ptp-switch")
TC_PRIO = 0xC0DE & 0xFFFF          # our filter's priority in the clsact hooks (fixed: replace, never stack)
TC_HANDLE = 1
TC_NAME_EGRESS = "ptp_switch_egress"
TC_NAME_INGRESS = "ptp_switch_ingress"
CLSACT_INGRESS = 0xFFFFFFF2
CLSACT_EGRESS = 0xFFFFFFF3
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
BPF_FS_MAGIC = 0xCAFE4A11


class DataplaneError(RuntimeError):
    """The dataplane could not be built, attached or found (reason in the message)."""


def netns_id() -> int:
    """Inode of this thread's network namespace (setns is per thread): names its pin directory."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def _is_bpffs(path: pathlib.Path) -> bool:
    """statfs(2) f_type == BPF_FS_MAGIC (works through /proc/<pid>/root paths too)."""
    buf = ctypes.create_string_buffer(256)      # struct statfs; f_type (a long) comes first
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(str(path).encode(), buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF == BPF_FS_MAGIC


def _ppid(pid: int) -> int:
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])


def pin_base() -> pathlib.Path | None:
    """The bpffs to pin into, shared with later processes; None when there is none.
    /sys/fs/bpf when it is a bpffs here; else (``ip netns exec`` gave this process a private mount
    namespace with a fresh /sys) the host's /sys/fs/bpf seen through the root of the nearest
    ancestor in another mount namespace (the caller of ``ip netns exec``)."""
    if _is_bpffs(PIN_ROOT.parent):
        return PIN_ROOT.parent
    try:
        mine = os.readlink("/proc/thread-self/ns/mnt")
        pid = os.getppid()
        for _ in range(16):
            if pid <= 1:
                break
            if os.readlink(f"/proc/{pid}/ns/mnt") != mine:
                cand = pathlib.Path(f"/proc/{pid}/root/sys/fs/bpf")
                if _is_bpffs(cand):
                    return cand
            pid = _ppid(pid)
    except (OSError, ValueError, IndexError):
        pass
    return None


def pin_dir() -> pathlib.Path | None:
    """This network namespace's pin directory (may not exist yet)."""
    base = pin_base()
    return base / PIN_ROOT.name / str(netns_id()) if base else None


def _inline_source(name: str, seen: set[str]) -> str:
    """BCC turns only main-file functions into programs and rewrites map calls only there, so the
    local headers are inlined textually (include guards still apply)."""
    out = []
    for line in (BPF_DIR / name).read_text().splitlines(keepends=True):
        m = re.match(r'\s*#include\s+"([^"]+)"', line)
        if m:
            if m.group(1) not in seen:
                seen.add(m.group(1))
                out.append(_inline_source(m.group(1), seen))
            continue
        out.append(line)
    return "".join(out)


def bpf_source() -> str:
    seen: set[str] = set()
    return "".join(_inline_source(f, seen) for f in UNIT_FILES)


def build_id() -> int:
    """64-bit hash of the dataplane's C sources as compiled (all includes inlined): stored in global_cfg
    at load, compared by :meth:`Dataplane.adopt`."""
    import hashlib

    return int.from_bytes(hashlib.sha256(bpf_source().encode()).digest()[:8], "little")


def compile_module(defines: dict[str, int] | None = None):  # -> bcc.BPF
    """Compile the dataplane with BCC and load its programs; returns (bpf, {prog name: fd}).
    ``defines`` adds -D flags (bench/dataplane.py's PTP_BENCH_STAGE cut-offs; never in production)."""
    try:
        from bcc import BPF
    except Exception as exc:  # pragma: no cover - machine dependent
        raise DataplaneError(f"BCC does not import ({exc}); run `make setup`") from exc
    try:
        extra = [f"-D{k}={int(v)}" for k, v in (defines or {}).items()]
        bpf = BPF(text=bpf_source().encode(), cflags=[f"-I{BPF_DIR}", "-w", *extra])
    except Exception as exc:
        raise DataplaneError(f"BCC could not compile dataplane/bpf: {exc}") from exc
    check_against_bcc(bpf)
    fds = {}
    for name in PROGRAMS:
        kind = BPF.XDP if name.startswith("xdp") else BPF.SCHED_CLS
        try:
            fds[name] = bpf.load_func(name.encode(), kind).fd
        except Exception as exc:
            raise DataplaneError(f"the verifier rejected {name}: {exc}") from exc
    return bpf, fds


def _ipr():
    from pyroute2 import IPRoute

    return IPRoute()


def _ifindex(ipr, ifname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise DataplaneError(f"no interface {ifname!r} in this network namespace")
    return idx[0]


def _xdp_prog_id(ipr, ifindex: int) -> int | None:
    link = ipr.get_links(ifindex)[0]
    xdp = link.get("IFLA_XDP")
    if not xdp:
        return None
    for k, v in xdp.get("attrs", []):
        if k in ("IFLA_XDP_PROG_ID", "IFLA_XDP_DRV_PROG_ID", "IFLA_XDP_SKB_PROG_ID") and v:
            return int(v)
    return None


def _tc_filters(ipr, ifindex: int, parent: int) -> list:
    try:
        return [f for f in ipr.get_filters(index=ifindex, parent=parent) if f.get("kind") == "bpf"]
    except Exception:
        return []


def _ensure_clsact(ipr, ifindex: int) -> None:
    try:
        ipr.tc("add", "clsact", ifindex)
    except Exception as exc:
        if getattr(exc, "code", None) != errno.EEXIST:
            raise DataplaneError(f"cannot add clsact qdisc on ifindex {ifindex}: {exc}") from exc


def _tc_attach(ipr, ifindex: int, parent: int, fd: int, name: str) -> None:
    _ensure_clsact(ipr, ifindex)
    try:
        ipr.tc("replace-filter", "bpf", ifindex, TC_HANDLE, fd=fd, name=name, parent=parent, prio=TC_PRIO,
               protocol=0x0003, direct_action=True)
    except Exception as exc:
        raise DataplaneError(f"cannot attach tc {name} on ifindex {ifindex}: {exc}") from exc


def _tc_detach(ipr, ifindex: int, parent: int) -> bool:
    try:
        ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE, parent=parent, prio=TC_PRIO, protocol=0x0003)
        return True
    except Exception:
        return False


def _xdp_attach(ipr, ifindex: int, fd: int, flags: int) -> None:
    ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]})


def _xdp_detach(ipr, ifindex: int) -> bool:
    done = False
    for flags in (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE):
        try:
            _xdp_attach(ipr, ifindex, -1, flags)
            done = True
        except Exception:
            pass
    return done


def _clsact_empty(ipr, ifindex: int) -> bool:
    return not (ipr.get_filters(index=ifindex, parent=CLSACT_INGRESS) or ipr.get_filters(index=ifindex, parent=CLSACT_EGRESS))


@dataclass
class PortState:
    ifname: str
    ifindex: int
    slot: int
    ingress_hook: str = ""      # "xdp" or "tc"
    tc_api: str = ""            # "tcx" (kernel >= 6.6) or "clsact" (cls_bpf filter)


@dataclass
class Dataplane:
    """The eBPF TC on a set of ports of this network namespace. Use as a context manager or call
    :meth:`attach` / :meth:`detach`. ``keep`` leaves it attached on exit (the CLI's attach)."""

    ifaces: list[str]
    mode: str = "e2e"
    domain: int | None = None
    two_step_tc: bool = False
    stale_age_ns: int = DEFAULT_STALE_AGE_NS
    egress_priority: int = DEFAULT_EGRESS_PRIORITY
    ingress_hook: str = "auto"        # "auto" (tc on veth, else XDP; tc if XDP does not attach), "xdp", "tc"
    pin: bool = True
    ports: dict[str, PortState] = field(default_factory=dict, init=False)
    maps: DataplaneMaps | None = field(default=None, init=False)
    prog_fds: dict[str, int] = field(default_factory=dict, init=False)
    pin_dir: pathlib.Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.ifaces:
            raise DataplaneError("no interfaces given")
        if len(set(self.ifaces)) != len(self.ifaces):
            raise DataplaneError(f"interface listed twice: {self.ifaces}")
        if self.mode not in ("e2e", "p2p"):
            raise DataplaneError(f"mode must be e2e or p2p, not {self.mode!r}")
        if self.ingress_hook not in ("auto", "xdp", "tc"):
            raise DataplaneError(f"ingress_hook must be auto, xdp or tc, not {self.ingress_hook!r}")
        try:
            self.global_config().validate()
        except ValueError as exc:
            raise DataplaneError(str(exc)) from exc
        self._bpf = None
        self._adopted = False          # maps / programs came from adopt(): fds we own, no BCC module

    def global_config(self) -> GlobalConfig:
        return GlobalConfig(domain=self.domain, two_step_tc=self.two_step_tc, stale_age_ns=self.stale_age_ns,
                            egress_priority=self.egress_priority)

    # --- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Compile and load (no attach): enough for BPF_PROG_TEST_RUN."""
        if self._bpf is not None or self._adopted:
            return
        self._bpf, self.prog_fds = compile_module()
        self.maps = DataplaneMaps({name: self._bpf[name.encode()].map_fd for name in MAP_TYPES})
        self.maps.build_id = build_id()
        self.maps.set_global(self.global_config())

    def attach(self) -> "Dataplane":
        self.load()
        assert self.maps is not None
        mode = Mode.P2P if self.mode == "p2p" else Mode.E2E
        with _ipr() as ipr:
            for slot, name in enumerate(self.ifaces):
                idx = _ifindex(ipr, name)
                self.ports[name] = PortState(name, idx, slot)
            for st in self.ports.values():
                try:
                    self.maps.set_port(PortConfig(ifindex=st.ifindex, slot=st.slot, mode=mode))
                except ValueError as exc:
                    raise DataplaneError(f"{st.ifname}: {exc}") from exc
            try:
                for st in self.ports.values():
                    self._attach_port(ipr, st)
            except Exception:
                self._detach_ports(ipr)
                raise
        if self.pin:
            self._pin()
        log.info("dataplane attached (%s) on %s", self.mode,
                 ", ".join(f"{p.ifname}[{p.ingress_hook}+{p.tc_api} egress]" for p in self.ports.values()))
        return self

    def _attach_port(self, ipr, st: PortState) -> None:
        # a previous run may have left a tc-ingress program: remove ours before choosing
        _tc_detach(ipr, st.ifindex, CLSACT_INGRESS)
        _tcx_detach(st.ifindex, libbpf.BPF_TCX_INGRESS, "tc_ingress")
        # auto: tc ingress on veth, XDP elsewhere. On veth, XDP switches the receive side to NAPI
        # mode: the frame then waits in the veth ring (behind cross traffic) BEFORE the XDP stamp, an
        # uncorrected, asymmetric link delay (3 hops: mean path delay 33 us vs 15 us), and veth copies
        # each skb. tc ingress instead back-dates its stamp to skb->tstamp, the stack's RX stamp taken
        # when the sender's veth_xmit queued the frame (before the backlog wait): README, Dataplane.
        hook = self.ingress_hook
        if hook == "auto":
            hook = "tc" if _link_kind(ipr, st.ifindex) == "veth" else "xdp"
        if hook == "xdp":
            try:
                _xdp_attach(ipr, st.ifindex, self.prog_fds["xdp_ingress"], XDP_FLAGS_DRV_MODE)
                st.ingress_hook = "xdp"
            except Exception as exc:
                if self.ingress_hook == "xdp":
                    raise DataplaneError(f"{st.ifname}: XDP does not attach ({exc})") from exc
                log.warning("%s: XDP does not attach (%s); stamping at tc ingress instead", st.ifname, exc)
        if not st.ingress_hook:
            if _xdp_is_ours(ipr, st.ifindex):
                _xdp_detach(ipr, st.ifindex)
            _hook_attach(ipr, st.ifindex, ingress=True, fd=self.prog_fds["tc_ingress"])
            st.ingress_hook = "tc"
        st.tc_api = _hook_attach(ipr, st.ifindex, ingress=False, fd=self.prog_fds["tc_egress"])

    def _detach_ports(self, ipr) -> None:
        for st in self.ports.values():
            detach_interface(ipr, st.ifindex)

    def detach(self, *, unload: bool = True) -> None:
        """Remove the programs from the ports; ``unload=False`` keeps the compiled module and its maps
        for a later :meth:`attach` (the throughput bench toggles the programs without recompiling)."""
        if self.ports:
            with _ipr() as ipr:
                self._detach_ports(ipr)
            self.ports = {}
        self._unpin()
        if unload:
            self._release()

    def _release(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        elif self._adopted:
            if self.maps is not None:
                self.maps.close()
            for fd in self.prog_fds.values():
                os.close(fd)
            self._adopted = False
        self.maps = None
        self.prog_fds = {}

    def close(self) -> None:
        """Forget the process's handles but leave everything attached (the kernel keeps it)."""
        self._release()

    def __enter__(self) -> "Dataplane":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # --- pins ------------------------------------------------------------------------------
    def _pin(self) -> None:
        d = pin_dir()
        if d is None:
            log.info("no bpffs reachable: not pinning; later processes find the dataplane through the "
                     "attached programs")
            return
        prune_stale_pins(d.parent)
        if d.exists():
            for p in d.iterdir():
                p.unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        for name, fd in self.prog_fds.items():
            libbpf.obj_pin(fd, str(d / f"prog_{name}"))
        assert self.maps is not None
        for name, fd in self.maps.fds.items():
            libbpf.obj_pin(fd, str(d / f"map_{name}"))
        self.pin_dir = d

    def _unpin(self) -> None:
        d = self.pin_dir or pin_dir()
        if d is not None and d.is_dir():
            for p in d.iterdir():
                p.unlink(missing_ok=True)
            d.rmdir()
        self.pin_dir = None

    # --- adoption --------------------------------------------------------------------------
    @classmethod
    def adopt(cls, ifaces: list[str], *, pin: bool = True) -> "Dataplane":
        """Take over the dataplane attached to ``ifaces`` in this network namespace (e.g. a daemon
        restarted after SIGKILL). Nothing is recompiled or re-attached, so correction continues without
        a gap; configuration, counters and pending two-step state are kept. Programs and maps come from
        the pins when they match the attached programs, else from the attached programs by id.
        The returned object behaves like an attached Dataplane (set_port, stats, detach)."""
        if not ifaces:
            raise DataplaneError("no interfaces given")
        with _ipr() as ipr:
            indexes = {name: _ifindex(ipr, name) for name in ifaces}
            egress = {name: _egress_prog_id(ipr, idx) for name, idx in indexes.items()}
            missing = [n for n, pid in egress.items() if pid is None]
            if missing:
                raise DataplaneError(f"no ptp-switch dataplane attached on {missing}: nothing to adopt")
            if len(set(egress.values())) != 1:
                raise DataplaneError(f"these interfaces belong to different dataplane instances: {egress}")
            hooks = {name: "xdp" if _xdp_is_ours(ipr, idx) else "tc" for name, idx in indexes.items()}
            xdp_id = next((_xdp_prog_id(ipr, idx) for idx in indexes.values() if _xdp_is_ours(ipr, idx)), None)
            tci_id = next((i for i in (_tc_ingress_prog_id(ipr, idx) for idx in indexes.values()) if i), None)
            apis = {name: "tcx" if _tcx_ours(idx, libbpf.BPF_TCX_EGRESS, "tc_egress") else "clsact"
                    for name, idx in indexes.items()}
        egress_id = next(iter(egress.values()))
        fds, prog_fds, source = _open_from_pins(egress_id)
        if fds is None:
            prog_fds = {"tc_egress": libbpf.prog_fd_by_id(egress_id)}
            if xdp_id:
                prog_fds["xdp_ingress"] = libbpf.prog_fd_by_id(xdp_id)
            if tci_id:
                prog_fds["tc_ingress"] = libbpf.prog_fd_by_id(tci_id)
            fds = _maps_of_prog(prog_fds["tc_egress"])
            source = "attached programs"
        try:
            maps = DataplaneMaps(fds, own_fds=True)
        except ValueError as exc:
            for fd in [*fds.values(), *prog_fds.values()]:
                os.close(fd)
            raise DataplaneError(f"dataplane found but its maps are incomplete: {exc}") from exc
        mine, theirs = build_id(), maps.get_build_id()
        if theirs != mine:
            maps.close()
            for fd in prog_fds.values():
                os.close(fd)
            raise DataplaneError(f"the dataplane attached on {', '.join(ifaces)} is another build "
                                 f"({theirs:016x}, these sources: {mine:016x}): attach a fresh one to replace it")
        maps.build_id = mine
        g = maps.get_global()
        cfgs = {name: maps.get_port(idx) for name, idx in indexes.items()}
        if any(c is None for c in cfgs.values()):
            maps.close()
            for fd in prog_fds.values():
                os.close(fd)
            raise DataplaneError(f"attached programs found but ports {[n for n, c in cfgs.items() if c is None]} "
                                 f"have no port configuration")
        first = next(iter(cfgs.values()))
        assert first is not None
        dp = cls(list(ifaces), mode="p2p" if first.mode == Mode.P2P else "e2e", domain=g.domain,
                 two_step_tc=g.two_step_tc, stale_age_ns=g.stale_age_ns, egress_priority=g.egress_priority, pin=pin)
        dp._adopted = True
        dp.maps, dp.prog_fds = maps, prog_fds
        dp.ports = {name: PortState(name, idx, cfgs[name].slot, hooks[name], apis[name])  # type: ignore[union-attr]
                    for name, idx in indexes.items()}
        if pin:
            dp._pin()
        log.info("dataplane adopted from %s on %s", source, ", ".join(ifaces))
        return dp

    # --- typed access ----------------------------------------------------------------------
    def _port(self, ifname: str) -> PortState:
        if ifname not in self.ports:
            raise DataplaneError(f"{ifname!r} is not a dataplane port ({sorted(self.ports)})")
        return self.ports[ifname]

    def set_port(self, ifname: str, *, mean_link_delay_ns: float | None = None,
                 delay_asymmetry_ns: float | None = None, rate_ratio: float | None = None,
                 mode: str | None = None, enabled: bool | None = None) -> PortConfig:
        assert self.maps is not None
        return set_port_config(self.maps, self._port(ifname).ifindex, mean_link_delay_ns=mean_link_delay_ns,
                               delay_asymmetry_ns=delay_asymmetry_ns, rate_ratio=rate_ratio, mode=mode,
                               enabled=enabled)

    def stamp_local_send(self, ifname: str, *, domain: int, msg_type: int, sequence_id: int,
                         source_port_identity: bytes, tai_ns: int) -> None:
        """Record this host's own one-step send just before it is handed to the socket: its clock was
        read at the CLOCK_TAI instant ``tai_ns`` and that time written into the message; tc egress on
        ``ifname`` adds the time from then to its correctionField (one map write, ~2 us from Python)."""
        assert self.maps is not None
        key = PtpKey.make(domain, msg_type, sequence_id, source_port_identity)
        # this host's clock, not a port's neighbour: rate ratio 1.0, no link delay (no port_cfg lookup)
        self.maps.seed_ingress(key, tai_ns, self._port(ifname).ifindex, RATE_ONE_Q32, 0, local=True)

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        assert self.maps is not None
        return {name: self.maps.slot_counters(st.slot) for name, st in self.ports.items()}

    def refresh_clock_offset(self) -> int | None:
        """Keep tc_ingress's TAI - REALTIME offset current (cheap: two clock reads, one map lookup; a
        write only when the kernel's TAI offset changed). Returns the new offset (ns) when it wrote one."""
        assert self.maps is not None
        new = self.maps.refresh_tai_offset()
        if new is not None:
            log.info("dataplane: TAI - REALTIME offset changed, now %d s", new // 1_000_000_000)
        return new


def set_port_config(maps: DataplaneMaps, ifindex: int, **changes) -> PortConfig:
    cur = maps.get_port(ifindex)
    if cur is None:
        raise DataplaneError(f"ifindex {ifindex} has no port configuration")
    kw = {k: v for k, v in changes.items() if v is not None}
    if "mode" in kw:
        if kw["mode"] not in ("e2e", "p2p"):
            raise DataplaneError(f"mode must be e2e or p2p, not {kw['mode']!r}")
        kw["mode"] = Mode.P2P if kw["mode"] == "p2p" else Mode.E2E
    new = PortConfig(**{**cur.__dict__, **kw})
    try:
        maps.set_port(new)
    except ValueError as exc:
        raise DataplaneError(str(exc)) from exc
    return new


def detach_interface(ipr, ifindex: int) -> list[str]:
    """Remove ptp-switch's programs from one interface (our XDP, tcx and clsact programs, an emptied
    clsact qdisc). Programs of others stay."""
    removed = []
    if _xdp_is_ours(ipr, ifindex) and _xdp_detach(ipr, ifindex):
        removed.append("xdp")
    if _tcx_detach(ifindex, libbpf.BPF_TCX_INGRESS, "tc_ingress"):
        removed.append("tcx-ingress")
    if _tcx_detach(ifindex, libbpf.BPF_TCX_EGRESS, "tc_egress"):
        removed.append("tcx-egress")
    if _tc_detach(ipr, ifindex, CLSACT_INGRESS):
        removed.append("tc-ingress")
    if _tc_detach(ipr, ifindex, CLSACT_EGRESS):
        removed.append("tc-egress")
    try:
        if _clsact_empty(ipr, ifindex):
            ipr.tc("del", "clsact", ifindex)
    except Exception:
        pass
    return removed


# --- tcx (kernel >= 6.6) with clsact + cls_bpf as the fallback ------------------------------------
def _prog_name_by_id(pid: int) -> str | None:
    try:
        fd = libbpf.prog_fd_by_id(pid)
    except libbpf.BpfError:
        return None
    try:
        return libbpf.prog_name(fd)
    finally:
        os.close(fd)


def _link_kind(ipr, ifindex: int) -> str | None:
    """rtnetlink IFLA_INFO_KIND of a link ("veth", "bridge", ...; None for a physical NIC)."""
    try:
        (link,) = ipr.get_links(ifindex)
        info = link.get_attr("IFLA_LINKINFO")
        return info.get_attr("IFLA_INFO_KIND") if info else None
    except Exception:  # noqa: BLE001 - unknown kind: treat as a NIC (XDP, the default)
        return None


def _xdp_is_ours(ipr, ifindex: int) -> bool:
    pid = _xdp_prog_id(ipr, ifindex)
    return pid is not None and _prog_name_by_id(pid) == "xdp_ingress"


def _tcx_ours(ifindex: int, attach_type: int, name: str) -> list[int]:
    """Ids of our program ``name`` (BCC names programs after their function) on a tcx hook."""
    return [pid for pid in libbpf.prog_query(ifindex, attach_type) if _prog_name_by_id(pid) == name]


def _tcx_detach(ifindex: int, attach_type: int, name: str) -> bool:
    done = False
    for pid in _tcx_ours(ifindex, attach_type, name):
        try:
            fd = libbpf.prog_fd_by_id(pid)
        except libbpf.BpfError:
            continue
        try:
            libbpf.prog_detach(fd, ifindex, attach_type)
            done = True
        except libbpf.BpfError:
            pass
        finally:
            os.close(fd)
    return done


def _hook_attach(ipr, ifindex: int, *, ingress: bool, fd: int) -> str:
    """Attach at the tc hook: tcx (no qdisc, no classifier walk), replacing our previous program
    atomically; on kernels without tcx, a cls_bpf filter in clsact. Returns "tcx" or "clsact"."""
    atype = libbpf.BPF_TCX_INGRESS if ingress else libbpf.BPF_TCX_EGRESS
    name = "tc_ingress" if ingress else "tc_egress"
    parent = CLSACT_INGRESS if ingress else CLSACT_EGRESS
    old = [pid for pid in _tcx_ours(ifindex, atype, name) if pid != libbpf.prog_id(fd)]
    try:
        if libbpf.prog_id(fd) in libbpf.prog_query(ifindex, atype):
            pass                                            # this very program is attached already
        elif old:
            ofd = libbpf.prog_fd_by_id(old.pop(0))
            try:
                libbpf.prog_attach(fd, ifindex, atype, replace_fd=ofd)
            finally:
                os.close(ofd)
        else:
            libbpf.prog_attach(fd, ifindex, atype)
    except libbpf.BpfError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, 524):     # 524: the kernel's ENOTSUPP
            raise DataplaneError(f"cannot attach {name} (tcx) on ifindex {ifindex}: {exc}") from exc
        log.info("tcx unavailable (%s): using clsact for %s on ifindex %d", exc, name, ifindex)
        _tc_attach(ipr, ifindex, parent, fd, TC_NAME_INGRESS if ingress else TC_NAME_EGRESS)
        return "clsact"
    for pid in old:                                         # more than one of ours: keep one
        try:
            ofd = libbpf.prog_fd_by_id(pid)
            try:
                libbpf.prog_detach(ofd, ifindex, atype)
            finally:
                os.close(ofd)
        except libbpf.BpfError:
            pass
    _tc_detach(ipr, ifindex, parent)                      # never run twice (an old clsact filter of ours)
    try:
        if _clsact_empty(ipr, ifindex):
            ipr.tc("del", "clsact", ifindex)
    except Exception:
        pass
    return "tcx"


def _egress_prog_id(ipr, ifindex: int) -> int | None:
    ours = _tcx_ours(ifindex, libbpf.BPF_TCX_EGRESS, "tc_egress")
    return ours[0] if ours else _tc_prog_id(ipr, ifindex, CLSACT_EGRESS, TC_NAME_EGRESS)


def _tc_ingress_prog_id(ipr, ifindex: int) -> int | None:
    ours = _tcx_ours(ifindex, libbpf.BPF_TCX_INGRESS, "tc_ingress")
    return ours[0] if ours else _tc_prog_id(ipr, ifindex, CLSACT_INGRESS, TC_NAME_INGRESS)


def _tc_prog_id(ipr, ifindex: int, parent: int, name: str) -> int | None:
    """The id of our tc program ``name`` on an interface. pyroute2 0.9 does not decode TCA_BPF_ID
    (attribute 11 of the bpf filter's options): read it from the attribute's raw bytes."""
    import struct

    for flt in _tc_filters(ipr, ifindex, parent):
        opts = flt.get("TCA_OPTIONS")
        if opts is None or opts.get("TCA_BPF_NAME") != name:
            continue
        for slot in opts["attrs"]:
            nla = slot.cell[1] if hasattr(slot, "cell") else slot[1]
            raw = getattr(nla, "data", None)
            off = getattr(nla, "offset", None)
            if raw is None or off is None or getattr(nla, "length", 0) < 8:
                continue
            length, ntype = struct.unpack_from("HH", raw, off)
            if ntype & 0x3FFF == 11 and length >= 8:
                return struct.unpack_from("I", raw, off + 4)[0]
    return None


def _maps_of_prog(prog_fd: int) -> dict[str, int]:
    fds: dict[str, int] = {}
    for mid in libbpf.prog_map_ids(prog_fd):
        fd, name = libbpf.map_fd_by_id(mid)
        match = [m for m in MAP_TYPES if m[:15] == name]
        if match and match[0] not in fds:
            fds[match[0]] = fd
        else:
            os.close(fd)
    return fds


def _open_from_pins(egress_id: int) -> tuple[dict[str, int] | None, dict[str, int], str]:
    """Maps and programs from this netns's pin directory, if its tc_egress is the attached one."""
    d = pin_dir()
    if d is None or not (d / "prog_tc_egress").exists():
        return None, {}, ""
    opened: list[int] = []
    try:
        egress_fd = libbpf.obj_get(str(d / "prog_tc_egress"))
        opened.append(egress_fd)
        if libbpf.prog_id(egress_fd) != egress_id:
            log.info("pins in %s belong to another dataplane instance (stale): ignoring them", d)
            raise FileNotFoundError(d)
        progs = {"tc_egress": egress_fd}
        for name in PROGRAMS:
            if name != "tc_egress" and (d / f"prog_{name}").exists():
                progs[name] = libbpf.obj_get(str(d / f"prog_{name}"))
                opened.append(progs[name])
        maps = {}
        for name in MAP_TYPES:
            maps[name] = libbpf.obj_get(str(d / f"map_{name}"))
            opened.append(maps[name])
        return maps, progs, "pins"
    except (OSError, libbpf.BpfError):
        for fd in opened:
            os.close(fd)
        return None, {}, ""


def prune_stale_pins(root: pathlib.Path) -> list[str]:
    """Remove <root>/<netns inode> pin directories whose network namespace no longer exists (a lab
    deleted while its dataplane was pinned). A namespace exists while a process lives in it or a
    /run/netns bind mount holds it."""
    if not root.is_dir():
        return []
    alive: set[int] = set()
    for pat in ("/proc/[0-9]*/ns/net", "/run/netns/*"):
        import glob

        for path in glob.glob(pat):
            try:
                alive.add(os.stat(path).st_ino)
            except OSError:
                pass
    removed = []
    for d in root.iterdir():
        if d.is_dir() and d.name.isdigit() and int(d.name) not in alive:
            for p in d.iterdir():
                p.unlink(missing_ok=True)
            d.rmdir()
            removed.append(d.name)
    return removed


@dataclass
class AttachedDataplane:
    """The dataplane as a later process sees it: found through the programs on the interfaces."""

    maps: DataplaneMaps
    ports: dict[str, PortState]

    @classmethod
    def find(cls, ifaces: list[str]) -> "AttachedDataplane":
        if not ifaces:
            raise DataplaneError("no interfaces given")
        prog_ids = {}
        with _ipr() as ipr:
            indexes = {name: _ifindex(ipr, name) for name in ifaces}
            for name, idx in indexes.items():
                pid = _egress_prog_id(ipr, idx)
                if pid is None:
                    raise DataplaneError(f"no ptp-switch dataplane on {name} (tc egress filter "
                                         f"{TC_NAME_EGRESS} not found); attach first")
                prog_ids[name] = pid
        if len(set(prog_ids.values())) != 1:
            raise DataplaneError(f"these interfaces belong to different dataplane instances: {prog_ids}")
        pfd = libbpf.prog_fd_by_id(next(iter(prog_ids.values())))
        try:
            fds = _maps_of_prog(pfd)
        finally:
            os.close(pfd)
        try:
            maps = DataplaneMaps(fds, own_fds=True)
        except ValueError as exc:
            for fd in fds.values():
                os.close(fd)
            raise DataplaneError(f"dataplane program found but its maps are incomplete: {exc}") from exc
        ports = {}
        for name, idx in indexes.items():
            cfg = maps.get_port(idx)
            if cfg is None:
                maps.close()
                raise DataplaneError(f"{name} has the program but no port configuration")
            ports[name] = PortState(name, idx, cfg.slot)
        return cls(maps=maps, ports=ports)

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        return {name: self.maps.slot_counters(st.slot) for name, st in self.ports.items()}

    def close(self) -> None:
        self.maps.close()


def detach(ifaces: list[str]) -> dict[str, list[str]]:
    """Detach ptp-switch programs from interfaces of this netns (no handles needed)."""
    out = {}
    with _ipr() as ipr:
        for name in ifaces:
            out[name] = detach_interface(ipr, _ifindex(ipr, name))
    d = pin_dir()
    if d is not None and d.is_dir():
        with _ipr() as ipr:
            still = any(_egress_prog_id(ipr, link["index"]) for link in ipr.get_links())
        if not still:
            for p in d.iterdir():
                p.unlink(missing_ok=True)
            d.rmdir()
    return out
