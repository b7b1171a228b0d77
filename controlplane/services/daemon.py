"""The ptp-switch daemon: builds everything from the configuration and runs it (no globals).

    DaemonOptions (CLI) ─> DaemonConfig (config file + overrides, validated by the core's table)
      ─> transports per port (UDPv4/UDPv6/L2) + UDS management (port 0)
      ─> local clock (VirtualClock by default, PhcClock when phc_device is set)
      ─> node (the core's clock with its ports) ─> Runtime (asyncio) until SIGINT/SIGTERM
      ─> E2E_TC/P2P_TC: the eBPF dataplane attached to every port, programmed by the node's
         ProgramDataplane actions.

The node is the core's ``controlplane.core.clock.Clock`` wrapped by ``ClockNode`` (port 0 = the
UDS management socket); ``NodeSpec`` is everything the core needs that only the runtime can know.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import time
from typing import Any, Callable

from controlplane.codec.header import decode_header
from controlplane.core.actions import SendMessage
from controlplane.core.config import ClockType, NetworkTransport, TimeStamping
from controlplane.runtime.clock import ClockError, PhcClock, VirtualClock
from controlplane.runtime.configfile import DaemonConfig, parse_config_text, read_config_file
from controlplane.runtime.l2 import L2Transport
from controlplane.runtime.loop import UDS_PORT, Node, Runtime
from controlplane.runtime.rawudp import RawUdpV4Transport, RawUdpV6Transport, is_bridge_port
from controlplane.runtime.ratelimit import MessageRateLimits, RateLimitConfig
from controlplane.runtime.transport import TimestampMode, Transport, TransportError
from controlplane.runtime.uds import UdsTransport
from controlplane.runtime.udp import UdpV4Transport, UdpV6Transport

log = logging.getLogger("ptp-switch")

PTP4L_DEFAULT_UDS = "/var/run/ptp4l"


class DaemonError(Exception):
    """A startup error the operator must fix (printed as one line by the CLI)."""


@dataclasses.dataclass(frozen=True)
class DaemonOptions:
    interfaces: tuple[str, ...] = ()
    config_file: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()  # ptp4l option name -> value, from -2/-4/-6/-E/-P/-s/...
    to_stdout: bool = False
    json_log: bool = False
    grpc_address: str | None = None
    # gRPC/metrics/state file (controlplane.services.control.ControlOptions); None: from grpc_address
    control: Any = None
    # lab instrumentation: start the virtual clock with a deliberate error
    clock_offset_ns: int = 0
    clock_freq_ppb: float = 0.0  # the virtual oscillator's own error (stays under the servo's adjustments)
    seed: int | None = None
    # lab instrumentation: log the virtual clock's true error (vs CLOCK_REALTIME) every second
    lab_truth: bool = False


@dataclasses.dataclass(frozen=True)
class PortSpec:
    number: int  # 1..N in -i order
    ifname: str
    network_protocol: str  # "UDPv4" | "UDPv6" | "L2"
    protocol_address: bytes
    mac: bytes


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """What the core's node factory receives."""

    config: DaemonConfig
    clock_identity: bytes  # EUI-64 from the first port's MAC unless clockIdentity is configured
    ports: tuple[PortSpec, ...]
    now_ns: int  # host monotonic at build time
    read_ptp_time_ns: Callable[[], int]  # the local clock (for management's CURRENT time only)
    utc_timescale: bool = False  # the local clock keeps UTC (virtual clock over CLOCK_REALTIME)


def interface_mac(ifname: str) -> bytes:
    try:
        with open(f"/sys/class/net/{ifname}/address") as f:
            return bytes.fromhex(f.read().strip().replace(":", ""))
    except (OSError, ValueError):
        return b"\0" * 6


def clock_identity_for(cfg: DaemonConfig, mac: bytes) -> bytes:
    text = cfg.clock.clock_identity
    if text and text != "000000.0000.000000":
        return bytes.fromhex(text.replace(".", "").replace(":", ""))
    return mac[:3] + b"\xff\xfe" + mac[3:]


def load_config(opts: DaemonOptions) -> DaemonConfig:
    overrides = dict(opts.overrides)
    if opts.config_file:
        return read_config_file(opts.config_file, overrides=overrides, interfaces=opts.interfaces)
    return parse_config_text("", filename="<no config file>", overrides=overrides, interfaces=opts.interfaces)


def make_transport(ifname: str, protocol: NetworkTransport, stamping: TimeStamping, udp_ttl: int = 1) -> Transport:
    mode = TimestampMode.HARDWARE if stamping == TimeStamping.HARDWARE else TimestampMode.SOFTWARE
    if protocol == NetworkTransport.L2:
        return L2Transport(ifname, timestamping=mode)
    if is_bridge_port(ifname):  # IP sockets do not receive on an enslaved port: UDP over AF_PACKET
        if protocol == NetworkTransport.UDPV6:
            return RawUdpV6Transport(ifname, timestamping=mode, ttl=udp_ttl)
        return RawUdpV4Transport(ifname, timestamping=mode, ttl=udp_ttl)
    if protocol == NetworkTransport.UDPV6:
        return UdpV6Transport(ifname, timestamping=mode, ttl=udp_ttl)
    return UdpV4Transport(ifname, timestamping=mode, ttl=udp_ttl)


@dataclasses.dataclass(frozen=True)
class _LocalPort:
    """Port 0 as the core's management module sees it (number and identity only)."""

    number: int
    identity: Any


class ClockNode:
    """The runtime's ``Node`` over the core's ``Clock`` (controlplane/core/clock.py).

    The clock numbers its ports 1..N in ``-i`` order, as the runtime does. Port 0 is the local
    management socket (ptp4l's UDS): only management messages are taken there, answered by the
    core's management module and sent back to the asking socket. Management messages with
    boundaryHops > 0 are forwarded as ptp4l does (core ``management.forward``): requests from the
    socket to the network ports, responses from the network to the last client of the socket.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._uds_client: object = None  # the last pmc that sent on the socket: forwarded responses go there

    def start(self, now_ns: int) -> list[Any]:
        return self.clock.start(now_ns)

    def handle_message(self, port: int, message: Any, rx_ts_ns: int | None, now_ns: int, source: object) -> list[Any]:
        if port == UDS_PORT:
            from controlplane.codec.messages import Management

            if not isinstance(message, Management):
                return []
            return self._uds_management(message, now_ns, source)
        from controlplane.codec.messages import Management
        from controlplane.core import management

        if isinstance(message, Management) and message.boundary_hops:
            out = self._to_uds_client(management.forward(self.clock, message, port, local_port=UDS_PORT))
            return out + self.clock.handle_message(port, message, rx_ts_ns, now_ns, source)
        return self.clock.handle_message(port, message, rx_ts_ns, now_ns, source)

    def _to_uds_client(self, actions: list[Any]) -> list[Any]:
        out = []
        for a in actions:
            if isinstance(a, SendMessage) and a.port == UDS_PORT:
                if self._uds_client is None:
                    continue
                a = dataclasses.replace(a, dest=self._uds_client)
            out.append(a)
        return out

    def _uds_management(self, message: Any, now_ns: int, source: object) -> list[Any]:
        """pmc over the UNIX socket: answer on port 0, to the asking socket's address.

        A port-scoped request addressed to port 0 (the socket itself) is answered for every port of
        the clock, as if addressed to all ports. With boundaryHops > 0 the request also goes out on
        the network ports (``pmc -b 1``); the answers come back through ``handle_message``."""
        from controlplane.codec.types import ALL_PORTS, PortIdentity
        from controlplane.core import management

        if source:
            self._uds_client = source
        forwarded = management.forward(self.clock, message, UDS_PORT, local_port=UDS_PORT)
        target = message.target_port_identity
        if target.port_number == 0:
            message = dataclasses.replace(message, target_port_identity=PortIdentity(target.clock_identity, ALL_PORTS))
        local = _LocalPort(UDS_PORT, PortIdentity(self.clock.clock_identity, 0))
        out = management.handle(self.clock, local, message, now_ns, source, local=True)
        return forwarded + [dataclasses.replace(a, dest=source) if isinstance(a, SendMessage) and a.port == UDS_PORT else a
                            for a in out]

    def handle_tx_timestamp(self, tx_token: int, tx_ts_ns: int, now_ns: int) -> list[Any]:
        return self.clock.handle_tx_timestamp(tx_token, tx_ts_ns, now_ns)

    def handle_timer(self, now_ns: int) -> list[Any]:
        return self.clock.handle_timer(now_ns)

    def handle_fault(self, port: int, reason: str, now_ns: int) -> list[Any]:
        if port == UDS_PORT:
            return []
        return self.clock.handle_fault(port, reason, now_ns)

    def next_deadline_ns(self) -> int | None:
        return self.clock.next_deadline_ns()


def build_clock_node(spec: NodeSpec, rng: random.Random) -> ClockNode:
    """The core's Clock (OC, BC, E2E_TC or P2P_TC) for the opened ports, wrapped for the runtime."""
    from controlplane.core.clock import Clock, CoreUsageError

    try:
        # a local clock over CLOCK_REALTIME keeps UTC: announce the ARB timescale, as ptp4l does
        clock = Clock(spec.config.clock, spec.clock_identity, [p.ifname for p in spec.ports], rng=rng,
                      ptp_timescale=not spec.utc_timescale)
    except (CoreUsageError, ValueError) as exc:
        raise DaemonError(str(exc)) from None
    from controlplane.runtime.unicast_daemon import wrap_node  # 1588 ATR: unicast_listen / unicast_master_table

    try:
        return wrap_node(ClockNode(clock), clock, spec.config, [p.ifname for p in spec.ports], log=log)
    except ValueError as exc:
        raise DaemonError(str(exc)) from None


def _node_factory() -> Callable[[NodeSpec, random.Random], Node]:
    try:
        import controlplane.core.clock  # noqa: F401
    except ImportError as exc:
        raise DaemonError(f"the protocol core's clock (controlplane.core.clock) is not available: {exc}") from None
    return build_clock_node


class _DataplaneAdapter:
    """ProgramDataplane -> the loader's typed map writes; port numbers -> interfaces."""

    def __init__(self, dataplane: Any, ifnames: dict[int, str]) -> None:
        self.dataplane = dataplane
        self.ifnames = ifnames

    def program_port(self, port: int, *, mean_link_delay_ns: int, delay_asymmetry_ns: int, rate_ratio: float, enabled: bool) -> None:
        self.dataplane.set_port(self.ifnames[port], mean_link_delay_ns=mean_link_delay_ns,
                                delay_asymmetry_ns=delay_asymmetry_ns, rate_ratio=rate_ratio, enabled=enabled)


class _OneStepStamper:
    """``one_step_dataplane``: the runtime's one-step sends -> the dataplane's local-send records
    (``Dataplane.stamp_local_send``); port numbers -> interfaces. ``read`` gives CLOCK_REALTIME and the
    dataplane's CLOCK_TAI at one instant: TAI = REALTIME + the kernel's TAI offset (whole seconds,
    ``dataplane.maps.tai_minus_rt_ns``, re-read every second), so one clock read serves both."""

    def __init__(self, dataplane: Any, ifnames: dict[int, str]) -> None:
        from dataplane.maps import tai_minus_rt_ns  # type: ignore[import-not-found]

        self.dataplane = dataplane
        self.ifnames = ifnames
        self._tai_minus_rt = tai_minus_rt_ns
        self._tai_minus_rt_ns = 0
        self._checked_ns: int | None = None

    def read(self) -> tuple[int, int]:
        rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
        if self._checked_ns is None or rt - self._checked_ns > 1_000_000_000 or rt < self._checked_ns:
            self._tai_minus_rt_ns = self._tai_minus_rt()
            self._checked_ns = rt
        return rt, rt + self._tai_minus_rt_ns

    def stamp(self, port: int, ptp: bytes, tai_ns: int) -> None:
        h = decode_header(ptp)   # the key the BPF program parses: domain, messageType, sequenceId, source
        self.dataplane.stamp_local_send(self.ifnames[port], domain=h.domain_number, msg_type=int(h.message_type),
                                        sequence_id=h.sequence_id, source_port_identity=h.source_port_identity.pack(),
                                        tai_ns=tai_ns)


def _off_loop(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread of its own and wait for it: pyroute2 0.9's synchronous API drives an
    asyncio loop internally and refuses to run inside the daemon's running loop."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataplane") as pool:
        return pool.submit(fn).result()


def _attach_dataplane(cfg: DaemonConfig, ifnames: dict[int, str], mode: str | None = None) -> Any:
    try:
        from dataplane.loader import Dataplane  # type: ignore[import-not-found]
    except ImportError as exc:
        why = f"clock_type {cfg.clock.clock_type}" if mode is None else "one_step_dataplane"
        raise DaemonError(f"{why} needs the eBPF dataplane (dataplane.loader): {exc}") from None
    if mode is None:
        mode = "e2e" if cfg.clock.clock_type == ClockType.E2E_TC else "p2p"
    adopted = _adopt_dataplane(Dataplane, list(ifnames.values()), mode, cfg.clock.domain_number)
    if adopted is not None:
        return adopted
    try:
        # not pinned: the daemon's programs live and die with it
        dp = Dataplane(list(ifnames.values()), mode=mode, domain=cfg.clock.domain_number, pin=False)
        _off_loop(dp.attach)
    except Exception as exc:
        raise DaemonError(f"cannot attach the eBPF dataplane to {', '.join(ifnames.values())}: {exc}") from None
    return dp


def _adopt_dataplane(cls: Any, ifaces: list[str], mode: str, domain: int) -> Any:
    """A ptp-switch dataplane already attached to exactly these ports with this mode and domain (left by
    a daemon that was killed): take it over without re-attaching, so correction never stops. None when
    there is none or it does not match (then the caller attaches a fresh one, replacing it)."""
    try:
        dp = _off_loop(lambda: cls.adopt(ifaces, pin=False))
    except Exception:  # noqa: BLE001 - nothing attached (the usual case) or not ours: attach fresh
        return None
    if dp.mode != mode or dp.domain != domain:
        log.info("ptp-switch: dataplane found on %s is %s/domain %d, not %s/domain %d: attaching a new one",
                 ", ".join(ifaces), dp.mode, dp.domain, mode, domain)
        dp.close()
        return None
    log.info("ptp-switch: dataplane adopted on %s (not re-attached: correction did not stop)", ", ".join(ifaces))
    return dp


def _control_options(opts: DaemonOptions) -> Any:
    """The control services' options (checked now, before anything is opened), or None when off."""
    from controlplane.services.control import ControlError, ControlOptions

    co = opts.control if opts.control is not None else (
        ControlOptions(grpc_address=opts.grpc_address) if opts.grpc_address is not None else None)
    if co is None or not co.enabled:
        return None
    try:
        co.check()
    except ControlError as exc:
        raise DaemonError(str(exc)) from None
    return co


def _control_services(co: Any, node: Any, ports: tuple[PortSpec, ...], dataplane: Any) -> Any:
    from controlplane.services.control import ControlServices

    core_clock = getattr(node, "clock", None)
    if core_clock is None:
        raise DaemonError("--grpc/--metrics/--state-file need the core's Clock (this node has none)")
    return ControlServices(co, core_clock, {p.number: p.ifname for p in ports}, dataplane=dataplane,
                           network_transport={p.ifname: NetworkTransport(p.network_protocol) for p in ports})


async def _start_control(control: Any) -> None:
    from controlplane.services.control import ControlError

    try:
        await control.start()
    except ControlError as exc:
        raise DaemonError(str(exc)) from None


class Daemon:
    def __init__(self, opts: DaemonOptions, *, node_factory: Callable[[NodeSpec, random.Random], Node] | None = None) -> None:
        self.opts = opts
        self.config = load_config(opts)
        c = self.config.clock
        interfaces = opts.interfaces or c.port_names
        if not interfaces:
            raise DaemonError("no interface: give -i IF (or per-interface sections in the config file)")
        if len(set(interfaces)) != len(interfaces):
            raise DaemonError("an interface is given twice")
        self.interfaces = tuple(interfaces)
        self.transports: dict[int, Transport] = {}
        for number, ifname in enumerate(self.interfaces, start=1):
            pc = c.port(ifname)
            self.transports[number] = make_transport(ifname, pc.network_transport, c.time_stamping, pc.udp_ttl)
        uds = c.uds_address if c.uds_address != PTP4L_DEFAULT_UDS else f"/var/run/ptp-switch-{os.getpid()}"
        self.uds_path = uds
        self.transports[UDS_PORT] = UdsTransport(uds)
        if c.phc_device:
            try:
                self.clock: Any = PhcClock(c.phc_device)
            except ClockError as exc:
                raise DaemonError(str(exc)) from None
        else:
            self.clock = VirtualClock(offset_ns=opts.clock_offset_ns, oscillator_error_ppb=opts.clock_freq_ppb,
                                      max_frequency_ppb=c.max_frequency)
        self.node_factory = node_factory or _node_factory()
        self.control_opts = _control_options(opts)
        self.control: Any = None  # ControlServices once built
        self.dataplane: Any = None
        self.runtime: Runtime | None = None

    def _open_ports(self) -> tuple[PortSpec, ...]:
        specs = []
        for number, transport in self.transports.items():
            try:
                transport.open()
            except TransportError as exc:
                if number == UDS_PORT:
                    raise DaemonError(str(exc)) from None
                raise DaemonError(f"port {number} ({transport.ifname}): {exc}") from None
            if number != UDS_PORT:
                specs.append(PortSpec(number, transport.ifname, transport.network_protocol,
                                      transport.protocol_address(), interface_mac(transport.ifname)))
        return tuple(specs)

    def build(self) -> Runtime:
        ports = self._open_ports()
        try:
            c = self.config.clock
            ident = clock_identity_for(self.config, ports[0].mac)
            spec = NodeSpec(self.config, ident, ports, time.monotonic_ns(), self.clock.read_ns,
                            utc_timescale=isinstance(self.clock, VirtualClock))
            node = self.node_factory(spec, random.Random(self.opts.seed))
            writer = stamper = None
            ifnames = {p.number: p.ifname for p in ports}
            if c.clock_type in (ClockType.E2E_TC, ClockType.P2P_TC):
                self.dataplane = _attach_dataplane(self.config, ifnames)
                writer = _DataplaneAdapter(self.dataplane, ifnames)
            elif c.one_step_dataplane:
                # an OC/BC: the programs only stamp this clock's own one-step sends (E2E mode: nothing
                # here is forwarded, and P2P mode's drops apply to forwarded frames only)
                self.dataplane = _attach_dataplane(self.config, ifnames, mode="e2e")
            if c.one_step_dataplane:
                stamper = _OneStepStamper(self.dataplane, ifnames)
                log.info("ptp-switch: one-step sends on %s are stamped at tc egress by the eBPF dataplane",
                         ", ".join(ifnames.values()))
            if self.control_opts is not None:
                self.control = _control_services(self.control_opts, node, ports, self.dataplane)
            self.runtime = Runtime(node, self.transports, self.clock, dataplane=writer,
                                   summary_interval=c.summary_interval, free_running=c.free_running,
                                   on_action=self.control.on_action if self.control is not None else None,
                                   rate_limits=MessageRateLimits(RateLimitConfig.from_clock_config(c), now_ns=time.monotonic_ns()),
                                   tx_timestamp_timeout_ms=c.tx_timestamp_timeout, one_step_stamper=stamper)
            if self.control is not None:
                self.control.runtime = self.runtime
        except BaseException:
            self.close()
            raise
        log.info("ptp-switch: clock %s, %s, ports %s, management %s", ident.hex(), c.clock_type,
                 ", ".join(f"{p.number}={p.ifname}/{p.network_protocol}" for p in ports), self.uds_path)
        return self.runtime

    async def _refresh_dataplane_clock(self, stop: asyncio.Event, period_s: float = 5.0) -> None:
        """Keep the dataplane's TAI - REALTIME offset current (it converts skb->tstamp to the
        dataplane's clock; it changes only when someone sets the kernel's TAI offset)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=period_s)
            except asyncio.TimeoutError:
                pass
            dp = self.dataplane
            if dp is None or stop.is_set():
                return
            try:
                dp.refresh_clock_offset()
            except Exception as exc:  # a map error: reported, the daemon keeps running
                log.warning("dataplane: TAI offset refresh failed: %s", exc)

    async def _log_truth(self, stop: asyncio.Event) -> None:
        """In a lab every namespace shares CLOCK_REALTIME, so this is the clock's true time error."""
        error_ns = getattr(self.clock, "error_ns", None)
        if error_ns is None:
            return
        while not stop.is_set():
            await asyncio.sleep(1.0)
            log.info("lab: clock error %d ns freq %+.0f ppb", error_ns(), self.clock.frequency_ppb)

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
        for t in self.transports.values():
            t.close()
        if self.dataplane is not None:
            try:
                _off_loop(self.dataplane.detach)
            except Exception as exc:  # report, keep closing
                log.warning("dataplane detach failed: %s", exc)
            self.dataplane = None

    def _lab_step(self, delta_ns: int) -> None:
        if not isinstance(self.clock, VirtualClock):
            log.warning("ptp-switch: SIGUSR1 step ignored: only a virtual clock is stepped for the lab")
            return
        self.clock.step(delta_ns)
        log.warning("ptp-switch: lab step: virtual clock stepped by %d ns (SIGUSR1)", delta_ns)

    async def run(self) -> None:
        runtime = self.build()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if self.config.clock.lab_sigusr1_step_ns:  # lab instrumentation: a time step of this clock (never the system's)
            loop.add_signal_handler(signal.SIGUSR1, self._lab_step, self.config.clock.lab_sigusr1_step_ns)
        truth = asyncio.create_task(self._log_truth(stop)) if self.opts.lab_truth else None
        tai = asyncio.create_task(self._refresh_dataplane_clock(stop)) if self.dataplane is not None else None
        try:
            runtime.start()
            if self.control is not None:
                await _start_control(self.control)
            await stop.wait()
        finally:
            for task in (truth, tai):
                if task is not None:
                    task.cancel()
            if self.control is not None:
                await self.control.stop()
            self.close()
            c = runtime.counters
            one_step = (f" one-step {c.one_step_sends} (dataplane-stamped {c.one_step_dataplane_stamps}, "
                        f"not recorded {c.one_step_dataplane_errors})" if c.one_step_sends else "")
            log.info("ptp-switch: stopped; rx %d (malformed %d, no stamp %d, rate-limited %d) tx %d (errors %d)%s faults %d",
                     c.rx_messages, c.rx_malformed, c.rx_no_timestamp, c.rx_rate_limited, c.tx_messages, c.tx_errors,
                     one_step, c.faults)
