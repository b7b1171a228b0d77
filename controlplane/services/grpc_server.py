"""The gRPC server of the control API (ptpswitch.v1.PtpSwitch), on the daemon's asyncio loop.

One call for the daemon::

    handle = await grpc_server.start(api, address)      # api: controlplane.services.api.ControlApi
    ...
    await handle.stop()

``address``: ``unix:/path.sock`` (the default is ``unix:/var/run/ptp-switch/<name>.sock``; the
socket is mode 0600 in a directory created 0700) or ``HOST:PORT`` for TCP, which needs TLS
(``tls_cert``/``tls_key``) and a bearer ``token`` (clients send ``authorization: Bearer <token>``).
TCP on all addresses (0.0.0.0, ::, empty host) is refused unless ``allow_all_addresses=True``.
Server reflection is on, so ``grpcurl -unix -plaintext /var/run/ptp-switch/NAME.sock list`` works.

This module translates; it decides nothing: validation, atomicity and persistence are the API's.
``open_channel`` / ``client`` build the matching client side (used by ``ptp-switch ctl`` and tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hmac
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import grpc
from grpc_reflection.v1alpha import reflection

from controlplane.codec.enums import PortState
from controlplane.core.config import DelayMechanismOption
from controlplane.services import api as A
from controlplane.services.proto import pb

__all__ = [
    "AddressError",
    "ServerHandle",
    "default_socket_path",
    "open_channel",
    "parse_address",
    "start",
]

log = logging.getLogger(__name__)

RUN_DIR = Path("/var/run/ptp-switch")
DEFAULT_NAME = "ptp-switch"
SERVICE = "ptpswitch.v1.PtpSwitch"
FIELD_METADATA_KEY = "ptp-switch-field"

pb2, pb2_grpc = pb()


class AddressError(ValueError):
    """A listen/connect address that is malformed or not allowed (e.g. all addresses)."""


def default_socket_path(name: str = DEFAULT_NAME) -> str:
    if not name or "/" in name or name.startswith("."):
        raise AddressError(f"{name!r} is not a valid instance name (no '/', not empty, no leading '.')")
    return str(RUN_DIR / f"{name}.sock")


@dataclass(frozen=True)
class Address:
    kind: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def target(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.kind == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str | None, *, name: str = DEFAULT_NAME, allow_all_addresses: bool = False) -> Address:
    """``unix:PATH`` | ``PATH`` (absolute) | ``HOST:PORT`` | ``[V6]:PORT``; None -> the default socket."""
    if text is None or text == "":
        return Address("unix", path=default_socket_path(name))
    text = text.strip()
    if text.startswith("unix://"):
        text = "unix:" + text[len("unix://"):]
    if text.startswith("unix:") or text.startswith("/"):
        path = text[5:] if text.startswith("unix:") else text
        if not path.startswith("/"):
            raise AddressError(f"{text!r}: the UNIX socket path must be absolute")
        return Address("unix", path=path)
    if text.startswith("tcp:"):
        text = text[4:]
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise AddressError(f"{text!r} is neither unix:/PATH nor HOST:PORT with a port in 0..65535 (0: any free port)")
    wildcard = host in ("", "*", "0.0.0.0", "::", "0:0:0:0:0:0:0:0")
    if wildcard and not allow_all_addresses:
        raise AddressError(f"{text!r} listens on all addresses; give a specific address "
                           "(e.g. 127.0.0.1:PORT) or pass --grpc-allow-all-addresses explicitly")
    return Address("tcp", host=host or "0.0.0.0", port=int(port_text))


# ============================================================================ translations


def _state(s: PortState | int) -> int:
    return int(s) if int(s) in pb2.PortState.values() else 0


def _mech(m: DelayMechanismOption | None) -> int:
    return {DelayMechanismOption.E2E: pb2.DELAY_MECHANISM_E2E, DelayMechanismOption.P2P: pb2.DELAY_MECHANISM_P2P}.get(
        m, pb2.DELAY_MECHANISM_UNSPECIFIED) if m is not None else pb2.DELAY_MECHANISM_UNSPECIFIED


def _umt(message_type: int) -> int:
    v = int(message_type) + 1
    return v if v in pb2.UnicastMessageType.values() else 0


def _quality(q: A.ClockQuality) -> Any:
    return pb2.ClockQuality(clock_class=q.clock_class, clock_accuracy=q.clock_accuracy,
                            offset_scaled_log_variance=q.offset_scaled_log_variance)


def clock_to_pb(c: A.ClockSnapshot) -> Any:
    d, cur, par, tp = c.default_ds, c.current_ds, c.parent_ds, c.time_properties_ds
    return pb2.Clock(
        default_ds=pb2.DefaultDs(
            two_step_flag=d.two_step_flag, clock_identity=d.clock_identity, number_ports=d.number_ports,
            clock_quality=_quality(d.clock_quality), priority1=d.priority1, priority2=d.priority2,
            domain_number=d.domain_number, slave_only=d.slave_only, clock_type=d.clock_type),
        current_ds=pb2.CurrentDs(steps_removed=cur.steps_removed, offset_from_master_ns=cur.offset_from_master_ns,
                                 mean_path_delay_ns=cur.mean_path_delay_ns),
        parent_ds=pb2.ParentDs(
            parent_port_identity=pb2.PortIdentity(clock_identity=par.parent_clock_identity,
                                                  port_number=par.parent_port_number),
            parent_stats=par.parent_stats,
            observed_parent_offset_scaled_log_variance=par.observed_parent_offset_scaled_log_variance,
            observed_parent_clock_phase_change_rate=par.observed_parent_clock_phase_change_rate,
            grandmaster_identity=par.grandmaster_identity,
            grandmaster_clock_quality=_quality(par.grandmaster_clock_quality),
            grandmaster_priority1=par.grandmaster_priority1, grandmaster_priority2=par.grandmaster_priority2),
        time_properties_ds=pb2.TimePropertiesDs(
            current_utc_offset=tp.current_utc_offset, current_utc_offset_valid=tp.current_utc_offset_valid,
            leap59=tp.leap59, leap61=tp.leap61, time_traceable=tp.time_traceable,
            frequency_traceable=tp.frequency_traceable, ptp_timescale=tp.ptp_timescale, time_source=tp.time_source),
        frequency_adjustment_ppb=c.frequency_adjustment_ppb,
        servo_state=c.servo_state,
    )


def port_to_pb(p: A.PortSnapshot) -> Any:
    s = p.settings
    return pb2.Port(
        port_index=p.port_number,
        underlying_interface=p.name,
        port_ds=pb2.PortDs(
            port_identity=pb2.PortIdentity(clock_identity=p.clock_identity, port_number=p.port_number),
            port_state=_state(p.port_state),
            log_min_delay_req_interval=s.log_min_delay_req_interval,
            peer_mean_path_delay_ns=p.peer_mean_path_delay_ns,
            log_announce_interval=s.log_announce_interval,
            announce_receipt_timeout=s.announce_receipt_timeout,
            log_sync_interval=s.log_sync_interval,
            delay_mechanism=_mech(s.delay_mechanism),
            log_min_pdelay_req_interval=s.log_min_pdelay_req_interval,
            version_number=p.version_number,
            delay_asymmetry_ns=s.delay_asymmetry_ns,
            master_only=s.master_only,
            port_enable=s.port_enable,
        ),
        slave_only=s.slave_only,
        unicast_master_table=pb2.UnicastMasterTable(
            addresses=[pb2.UnicastMasterAddress(network_protocol=m.network_protocol.value, address=m.address)
                       for m in s.unicast_master_table],
            log_query_interval=s.log_query_interval),
        dataplane_counters={str(k): max(0, int(v)) for k, v in p.dataplane_counters.items()},
        mean_path_delay_ns=p.mean_path_delay_ns,
    )


def grant_to_pb(g: A.GrantSnapshot) -> Any:
    msg = pb2.UnicastGrant(
        underlying_interface=g.port, role=g.role, address=g.address, message_type=_umt(g.message_type),
        log_inter_message_period=g.log_inter_message_period, duration_s=g.duration_s,
        remaining_ns=g.remaining_ns, renewal_invited=g.renewal_invited)
    if g.peer_port_identity is not None:
        msg.peer_port_identity.CopyFrom(pb2.PortIdentity(clock_identity=g.peer_port_identity[0],
                                                         port_number=g.peer_port_identity[1]))
    return msg


def event_to_pb(item: A.Published) -> Any:
    e = item.event
    out = pb2.Event(sequence=item.sequence, time_unix_ns=item.time_unix_ns)
    if isinstance(e, A.PortStateChanged):
        out.port_state.CopyFrom(pb2.PortStateChange(underlying_interface=e.port, port_number=e.port_number,
                                                    old_state=_state(e.old_state), new_state=_state(e.new_state),
                                                    reason=e.reason))
    elif isinstance(e, A.GrandmasterChanged):
        out.grandmaster.CopyFrom(pb2.GrandmasterChange(old_grandmaster_identity=e.old_grandmaster_identity,
                                                       new_grandmaster_identity=e.new_grandmaster_identity,
                                                       steps_removed=e.steps_removed))
    elif isinstance(e, A.OffsetSample):
        out.offset.CopyFrom(pb2.OffsetSample(offset_from_master_ns=e.offset_from_master_ns,
                                             mean_path_delay_ns=e.mean_path_delay_ns,
                                             frequency_adjustment_ppb=e.frequency_adjustment_ppb,
                                             servo_state=e.servo_state))
    elif isinstance(e, A.PathDelaySample):
        out.path_delay.CopyFrom(pb2.PathDelaySample(underlying_interface=e.port, delay_mechanism=_mech(e.delay_mechanism),
                                                    mean_path_delay_ns=e.mean_path_delay_ns))
    elif isinstance(e, A.UnicastGrantChanged):
        out.unicast_grant.CopyFrom(pb2.UnicastGrantChange(underlying_interface=e.port, address=e.address,
                                                          message_type=_umt(e.message_type), change=e.change,
                                                          log_inter_message_period=e.log_inter_message_period,
                                                          duration_s=e.duration_s))
    elif isinstance(e, A.PortConfigChanged):
        out.port_config.CopyFrom(pb2.PortConfigChange(port=port_to_pb(e.port), persisted=e.persisted))
    return out


_KIND_NAMES = {
    pb2.EVENT_KIND_PORT_STATE: "port_state",
    pb2.EVENT_KIND_GRANDMASTER: "grandmaster",
    pb2.EVENT_KIND_OFFSET: "offset",
    pb2.EVENT_KIND_PATH_DELAY: "path_delay",
    pb2.EVENT_KIND_UNICAST_GRANT: "unicast_grant",
    pb2.EVENT_KIND_PORT_CONFIG: "port_config",
}


def change_from_pb(req: Any) -> A.PortChange:
    """SetPortConfigRequest -> PortChange (presence decides what changes; values checked by the API)."""
    kw: dict[str, Any] = {}
    for name in ("port_enable", "log_announce_interval", "log_sync_interval", "log_min_delay_req_interval",
                 "log_min_pdelay_req_interval", "announce_receipt_timeout", "delay_asymmetry_ns",
                 "master_only", "slave_only"):
        if req.HasField(name):
            kw[name] = getattr(req, name)
    if req.delay_mechanism != pb2.DELAY_MECHANISM_UNSPECIFIED:
        mech = {pb2.DELAY_MECHANISM_E2E: DelayMechanismOption.E2E, pb2.DELAY_MECHANISM_P2P: DelayMechanismOption.P2P}.get(
            req.delay_mechanism)
        if mech is None:
            name = pb2.DelayMechanism.Name(req.delay_mechanism) if req.delay_mechanism in pb2.DelayMechanism.values() \
                else str(req.delay_mechanism)
            raise A.InvalidArgument(f"{name} cannot be set; expected DELAY_MECHANISM_E2E or DELAY_MECHANISM_P2P",
                                    field="delay_mechanism")
        kw["delay_mechanism"] = mech
    if req.HasField("unicast_master_table"):
        t = req.unicast_master_table
        kw["unicast_master_table"] = tuple(
            A.UnicastMaster(A._transport(a.network_protocol), a.address) for a in t.addresses)
        kw["log_query_interval"] = t.log_query_interval
    return A.PortChange(**kw)


# ============================================================================ servicer


class _Servicer(pb2_grpc.PtpSwitchServicer):
    def __init__(self, control: A.ControlApi) -> None:
        self.api = control

    async def _fail(self, context: grpc.aio.ServicerContext, exc: A.ApiError) -> None:
        text = f"{exc.field}: {exc.message}" if exc.field else exc.message
        if exc.field:
            context.set_trailing_metadata(((FIELD_METADATA_KEY, exc.field),))
        await context.abort(getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL), text)

    async def GetClock(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return clock_to_pb(self.api.get_clock())
        except A.ApiError as exc:
            await self._fail(context, exc)

    async def ListPorts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return pb2.ListPortsResponse(ports=[port_to_pb(p) for p in self.api.list_ports()])
        except A.ApiError as exc:
            await self._fail(context, exc)

    async def GetPort(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return port_to_pb(self.api.get_port(request.underlying_interface))
        except A.ApiError as exc:
            await self._fail(context, exc)

    async def SetPortConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            change = change_from_pb(request)
            result = self.api.set_port_config(request.underlying_interface, change, persist=request.persist,
                                              validate_only=request.validate_only)
            return pb2.SetPortConfigResponse(port=port_to_pb(result.port), persisted=result.persisted)
        except A.ApiError as exc:
            await self._fail(context, exc)

    async def ListUnicastGrants(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return pb2.ListUnicastGrantsResponse(
                grants=[grant_to_pb(g) for g in self.api.list_grants(request.underlying_interface)])
        except A.ApiError as exc:
            await self._fail(context, exc)

    async def WatchEvents(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        kinds = []
        for k in request.kinds:
            if k not in _KIND_NAMES:
                await self._fail(context, A.InvalidArgument(f"unknown event kind {k}", field="kinds"))
                return
            kinds.append(_KIND_NAMES[k])
        sub = self.api.events.subscribe(kinds)
        try:
            while True:
                item = await sub.get()
                yield event_to_pb(item)
        finally:
            sub.close()


# ============================================================================ auth


class _TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` (constant-time comparison)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        if isinstance(got, str):
            got = got.encode()
        if hmac.compare_digest(got, self._expected):
            return await continuation(details)
        if details.method.endswith("/WatchEvents") or "ServerReflectionInfo" in details.method:
            return self._deny_stream
        return self._deny


# ============================================================================ start / stop


@dataclass
class ServerHandle:
    server: grpc.aio.Server
    address: Address
    _created_dir: Path | None = None

    @property
    def target(self) -> str:
        """What a client connects to (``unix:/path`` or ``host:port`` with the bound port)."""
        return self.address.target()

    async def stop(self, grace_s: float = 1.0) -> None:
        await self.server.stop(grace_s)
        if self.address.kind == "unix":
            try:
                os.unlink(self.address.path)
            except FileNotFoundError:
                pass


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a UNIX socket nobody listens on; refuse if someone does."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    import stat

    if not stat.S_ISSOCK(p.lstat().st_mode):
        raise AddressError(f"{path} exists and is not a socket; refusing to replace it")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            p.unlink(missing_ok=True)
            return
        raise
    finally:
        s.close()
    raise AddressError(f"{path}: another server is listening there (another ptp-switch instance with this name?)")


async def start(control: A.ControlApi, address: str | None = None, *, name: str = DEFAULT_NAME,
                tls_cert: str | None = None, tls_key: str | None = None, token: str | None = None,
                allow_all_addresses: bool = False) -> ServerHandle:
    """Start the gRPC server on the running loop; returns a handle (``await handle.stop()``).

    Raises AddressError for a refused or unusable address (the daemon should exit with it).
    """
    addr = parse_address(address, name=name, allow_all_addresses=allow_all_addresses)
    interceptors = []
    if addr.kind == "tcp":
        if not (tls_cert and tls_key):
            raise AddressError(f"TCP address {addr.target()} needs TLS: give a certificate and key "
                               "(--grpc-tls-cert, --grpc-tls-key)")
        if not token:
            raise AddressError(f"TCP address {addr.target()} needs a bearer token (--grpc-token-file)")
    if token and addr.kind == "tcp":
        interceptors.append(_TokenInterceptor(token))  # on the UNIX socket, file mode 0600 is the access control
    server = grpc.aio.server(interceptors=interceptors)
    pb2_grpc.add_PtpSwitchServicer_to_server(_Servicer(control), server)
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
    created: Path | None = None
    if addr.kind == "unix":
        parent = Path(addr.path).parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
            created = parent
        _remove_stale_socket(addr.path)
        bound = server.add_insecure_port(addr.target())
        if not bound:
            raise AddressError(f"could not listen on {addr.target()}")
        await server.start()
        os.chmod(addr.path, 0o600)
    else:
        try:
            with open(tls_cert, "rb") as fh:  # type: ignore[arg-type]
                cert = fh.read()
            with open(tls_key, "rb") as fh:  # type: ignore[arg-type]
                key = fh.read()
        except OSError as exc:
            raise AddressError(f"cannot read the TLS certificate or key: {exc}") from exc
        creds = grpc.ssl_server_credentials(((key, cert),))
        try:
            bound = server.add_secure_port(addr.target(), creds)
        except RuntimeError as exc:
            raise AddressError(f"could not listen on {addr.target()}: {exc}") from exc
        if not bound:
            raise AddressError(f"could not listen on {addr.target()}")
        addr = dataclasses.replace(addr, port=bound)
        await server.start()
    log.info("gRPC API listening on %s%s", addr.target(), " (TLS, token)" if addr.kind == "tcp" else "")
    return ServerHandle(server=server, address=addr, _created_dir=created)


# ============================================================================ client side


def open_channel(target: str | None = None, *, name: str = DEFAULT_NAME, tls_ca: str | None = None,
                 token: str | None = None, server_name: str | None = None) -> grpc.Channel:
    """A blocking channel to a server started by ``start`` (same address syntax)."""
    addr = parse_address(target, name=name, allow_all_addresses=True)
    if addr.kind == "unix":
        if not Path(addr.path).exists():
            raise AddressError(f"no control socket at {addr.path} (is the daemon running with --grpc? try --socket)")
        return grpc.insecure_channel(addr.target())  # access control: the socket's mode (0600)
    root = None
    if tls_ca:
        with open(tls_ca, "rb") as fh:
            root = fh.read()
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(addr.target(), creds, options=options)


def stub(channel: grpc.Channel) -> Any:
    return pb2_grpc.PtpSwitchStub(channel)
