"""The daemon's control services: the control API over the running clock, its gRPC server, the
Prometheus endpoint and the state file, wired in a few calls so ``daemon.py`` stays small::

    opts = ControlOptions(grpc_address="", metrics_address=None, state_file=None)
    opts.check()                                      # before opening anything: bad flags fail fast
    services = ControlServices(opts, core_clock, {1: "eth0"}, dataplane=dp)
    runtime = Runtime(..., on_action=services.on_action)
    services.runtime = runtime                        # SetPortConfig's actions go to runtime.execute
    runtime.start()
    await services.start()                            # restore the state file, then listen
    ...
    await services.stop()

Addresses: gRPC on ``unix:/var/run/ptp-switch/NAME.sock`` by default (``grpc_address=""``), TCP only
with TLS and a token and never on all addresses unless allowed; metrics on 127.0.0.1:9469 by default
(``metrics_address=""``), loopback only unless allowed. ``None`` turns a service off.

Every core action the runtime executes goes through ``on_action`` and becomes API events
(port states, grandmaster, offset and path-delay samples) for WatchEvents watchers.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from controlplane.core.config import NetworkTransport
from controlplane.services import api as A

log = logging.getLogger("ptp-switch")

DEFAULT_NAME = "ptp-switch"
STATE_DIR = Path("/var/lib/ptp-switch")


class ControlError(Exception):
    """A control-service option or startup failure the operator must fix (one line)."""


@dataclasses.dataclass(frozen=True)
class ControlOptions:
    grpc_address: str | None = None  # None: off; "": the default UNIX socket for ``name``
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = None
    grpc_token_file: str | None = None
    grpc_allow_all_addresses: bool = False
    metrics_address: str | None = None  # None: off; "": 127.0.0.1:9469
    metrics_allow_remote: bool = False
    state_file: str | None = None  # None: no persistence; "": /var/lib/ptp-switch/NAME.state.json
    name: str = DEFAULT_NAME

    @property
    def enabled(self) -> bool:
        """Any control option given (a lone TLS/token/allow flag too: ``check`` then refuses it)."""
        return any(v is not None for v in (self.grpc_address, self.metrics_address, self.state_file,
                                           self.grpc_tls_cert, self.grpc_tls_key, self.grpc_token_file)) \
            or self.grpc_allow_all_addresses or self.metrics_allow_remote

    @property
    def state_path(self) -> Path | None:
        if self.state_file is None:
            return None
        return Path(self.state_file) if self.state_file else STATE_DIR / f"{self.name}.state.json"

    def token(self) -> str | None:
        if not self.grpc_token_file:
            return None
        try:
            text = Path(self.grpc_token_file).read_text().strip()
        except OSError as exc:
            raise ControlError(f"cannot read the gRPC token file: {exc}") from None
        if not text:
            raise ControlError(f"the gRPC token file {self.grpc_token_file} is empty")
        return text

    def check(self) -> None:
        """Refuse bad addresses and options before the daemon opens anything."""
        from controlplane.services import grpc_server, metrics

        if self.grpc_address is not None:
            try:
                addr = grpc_server.parse_address(self.grpc_address, name=self.name,
                                                 allow_all_addresses=self.grpc_allow_all_addresses)
            except grpc_server.AddressError as exc:
                raise ControlError(f"--grpc: {exc}") from None
            if addr.kind == "tcp":
                if not (self.grpc_tls_cert and self.grpc_tls_key):
                    raise ControlError(f"--grpc {addr.target()}: TCP needs TLS (--grpc-tls-cert and --grpc-tls-key)")
                if not self.grpc_token_file:
                    raise ControlError(f"--grpc {addr.target()}: TCP needs a bearer token (--grpc-token-file)")
                self.token()
        elif self.grpc_tls_cert or self.grpc_tls_key or self.grpc_token_file or self.grpc_allow_all_addresses:
            raise ControlError("--grpc-tls-cert/--grpc-tls-key/--grpc-token-file/--grpc-allow-all-addresses need --grpc")
        if self.metrics_address is not None:
            try:
                metrics.parse_address(self.metrics_address or None, allow_remote=self.metrics_allow_remote)
            except metrics.MetricsAddressError as exc:
                raise ControlError(f"--metrics: {exc}") from None
        elif self.metrics_allow_remote:
            raise ControlError("--metrics-allow-remote needs --metrics")


class ControlServices:
    """The control API over a running core clock, plus its servers (see the module docstring)."""

    def __init__(self, opts: ControlOptions, core_clock: Any, port_names: Mapping[int, str], *,
                 dataplane: Any = None, network_transport: Mapping[str, NetworkTransport] | None = None) -> None:
        self.opts = opts
        self.runtime: Any = None  # set by the daemon once built; its execute() runs reconfigurations
        self.backend = A.ClockBackend(core_clock, self._execute, dataplane=dataplane,
                                      network_transport=network_transport)
        self.api = A.ControlApi(self.backend, state_path=opts.state_path)
        self.events = A.ActionEvents(port_names, mechanism_of=self.backend.mechanism_of)
        self.grpc: Any = None
        self.metrics: Any = None

    def _execute(self, actions: list[Any]) -> None:
        if self.runtime is None:
            raise A.ApplyFailed("the daemon is not running yet; nothing changed")
        self.runtime.execute(actions)

    # ---- hooks for the unicast glue (grants, live unicast master table)
    def set_unicast_hooks(self, grants_source: Callable[[], Sequence[A.GrantSnapshot]] | None = None,
                          table_setter: Callable[[str, tuple[A.UnicastMaster, ...], int], list[Any]] | None = None) -> None:
        """``grants_source()`` -> the current grants (ListUnicastGrants, metrics);
        ``table_setter(port, masters, log_query_interval) -> actions`` applies a new table live.
        Publish grant changes with ``publish(api.UnicastGrantChanged(...))``."""
        if grants_source is not None:
            self.backend.grants_source = grants_source
        if table_setter is not None:
            self.backend.unicast_table_setter = table_setter

    def publish(self, event: A.Event) -> None:
        self.api.publish(event)

    def on_action(self, action: Any) -> None:
        """The Runtime's ``on_action``: every executed core action, as API events."""
        try:
            for event in self.events(action):
                self.api.publish(event)
        except Exception:  # an event we cannot translate must never stop the loop
            log.exception("control: cannot publish an event for %r", type(action).__name__)

    async def start(self) -> None:
        """Restore persisted settings, then listen (gRPC, metrics). Raises ControlError."""
        from controlplane.services import grpc_server, metrics

        restored = self.api.restore_persisted()
        if restored:
            log.info("control: restored persisted settings of %s from %s", ", ".join(restored), self.api.state_path)
        o = self.opts
        if o.grpc_address is not None:
            try:
                self.grpc = await grpc_server.start(self.api, o.grpc_address or None, name=o.name,
                                                    tls_cert=o.grpc_tls_cert, tls_key=o.grpc_tls_key, token=o.token(),
                                                    allow_all_addresses=o.grpc_allow_all_addresses)
            except grpc_server.AddressError as exc:
                raise ControlError(f"--grpc: {exc}") from None
        if o.metrics_address is not None:
            try:
                self.metrics = await metrics.start(self.api, o.metrics_address or None, allow_remote=o.metrics_allow_remote)
            except (metrics.MetricsAddressError, OSError) as exc:
                raise ControlError(f"--metrics: cannot listen: {exc}") from None

    async def stop(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
            self.metrics = None
        if self.grpc is not None:
            await self.grpc.stop()
            self.grpc = None
