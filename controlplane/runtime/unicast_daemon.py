"""The daemon's unicast negotiation (1588 ATR) from its configuration.

    node = wrap_node(ClockNode(clock), clock, daemon_config, port_names, log=logger)

Ports with ``unicast_listen 1`` serve (policy from the ``unicast_*`` server options), ports with
``unicast_master_table N`` are clients of that table's UDPv4/UDPv6 servers (``unicast_req_duration``,
the table's ``logQueryInterval``, the port's logAnnounceInterval / logSyncInterval /
logMinDelayReqInterval / announceReceiptTimeout, as ptp4l). Without either, the node is returned
unchanged. Negotiation events are logged (INFO: grants, denials, expiries, server changes; DEBUG:
renewals and requests).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from controlplane.core.config import NetworkTransport, PortConfig
from controlplane.core.unicast import NegotiationEvent, ServerPolicy, UnicastConfigError, UnicastMessageType
from controlplane.core.unicast_client import ClientConfig
from controlplane.core.unicast_service import UnicastService
from controlplane.runtime.configfile import DaemonConfig

_QUIET = {"request", "ack_cancel_rx"}  # renewals stay visible (INFO): one line per grant period


def server_policy(pc: PortConfig) -> ServerPolicy:
    return ServerPolicy.from_options({
        "unicast_min_duration": pc.unicast_min_duration,
        "unicast_max_duration": pc.unicast_max_duration,
        "unicast_max_clients": pc.unicast_max_clients,
        "unicast_allow": pc.unicast_allow,
        "unicast_min_logSyncInterval": pc.unicast_min_log_sync_interval,
        "unicast_min_logAnnounceInterval": pc.unicast_min_log_announce_interval,
        "unicast_min_logMinDelayReqInterval": pc.unicast_min_log_min_delay_req_interval,
    })


def client_setup(cfg: DaemonConfig, ifname: str, pc: PortConfig) -> tuple[list[str], ClientConfig]:
    table = cfg.unicast_table(pc.unicast_master_table)
    if table is None:
        raise UnicastConfigError(f"{ifname}: no [unicast_master_table] with table_id {pc.unicast_master_table}")
    want = {NetworkTransport.UDPV4: "UDPv4", NetworkTransport.UDPV6: "UDPv6"}.get(pc.network_transport)
    if want is None:
        raise UnicastConfigError(f"{ifname}: unicast negotiation needs UDPv4 or UDPv6 (network_transport is "
                                 f"{pc.network_transport})")
    masters = [m.address for m in table.masters if m.transport == want]
    skipped = [f"{m.transport} {m.address}" for m in table.masters if m.transport != want]
    if skipped:
        raise UnicastConfigError(f"{ifname}: unicast_master_table {table.table_id} has entries this {want} port cannot "
                                 f"reach: {', '.join(skipped)}")
    if not masters:
        raise UnicastConfigError(f"{ifname}: unicast_master_table {table.table_id} is empty")
    return masters, ClientConfig(
        unicast_req_duration_s=pc.unicast_req_duration,
        log_query_interval=table.log_query_interval,
        log_announce_interval=pc.log_announce_interval,
        log_sync_interval=pc.log_sync_interval,
        log_min_delay_req_interval=pc.log_min_delay_req_interval,
        announce_receipt_timeout=pc.announce_receipt_timeout,
    )


def message_type_name(message_type: int) -> str:
    """SYNC/ANNOUNCE/DELAY_RESP/PDELAY_RESP, or the raw value of a type a peer asked for that has none
    (a denied request for messageType 1 must still make a log line, not an exception)."""
    try:
        return UnicastMessageType(message_type).name
    except ValueError:
        return f"messageType 0x{message_type:x}"


def renewal_rate(policy: ServerPolicy, messages_per_renewal: int = 3) -> float:
    """Signaling messages/s a full server receives at best: every client renews Announce, Sync and
    Delay_Resp (one message each, as ptp4l) at 3/4 of the longest grant."""
    return policy.max_clients * messages_per_renewal / (0.75 * policy.max_duration_s)


def wrap_node(node: Any, clock: Any, cfg: DaemonConfig, port_names: Sequence[str], *,
              log: logging.Logger | None = None) -> Any:
    """``node`` itself when no port negotiates unicast, else a ``UnicastService`` around it.

    Raises ``UnicastConfigError`` (a ValueError) for a configuration that cannot work."""
    servers: dict[int, ServerPolicy] = {}
    clients: dict[int, tuple[list[str], ClientConfig]] = {}
    for number, ifname in enumerate(port_names, start=1):
        pc = cfg.clock.port(ifname)
        if pc.unicast_listen:
            if pc.network_transport not in (NetworkTransport.UDPV4, NetworkTransport.UDPV6):
                raise UnicastConfigError(f"{ifname}: unicast_listen needs UDPv4 or UDPv6 (network_transport is "
                                         f"{pc.network_transport})")
            servers[number] = server_policy(pc)
        if pc.unicast_master_table:
            clients[number] = client_setup(cfg, ifname, pc)
    if not servers and not clients:
        return node
    logger = log or logging.getLogger("ptp-switch")
    names = dict(enumerate(port_names, start=1))

    def observe(port: int, ev: NegotiationEvent) -> None:
        level = logging.DEBUG if ev.kind in _QUIET else logging.INFO
        if not logger.isEnabledFor(level):
            return
        mtype = "" if ev.message_type is None else f" {message_type_name(ev.message_type)}"
        detail = f" ({ev.detail})" if ev.detail else ""
        logger.log(level, "port %d (%s): unicast %s %s%s%s", port, names.get(port, "?"), ev.kind, ev.address, mtype, detail)

    service = UnicastService(node, clock, servers=servers, clients=clients, observer=observe)
    for number, policy in servers.items():
        logger.info("port %d (%s): unicast server: %d..%d s grants, max %d clients%s", number, names[number],
                    policy.min_duration_s, policy.max_duration_s, policy.max_clients,
                    f", allow {' '.join(policy.allow)}" if policy.allow else "")
        need = renewal_rate(policy)
        limit = getattr(cfg.clock, "signaling_global_rate_limit", 0.0)
        if limit and need > limit:
            logger.warning("port %d (%s): %d clients renewing %d-s grants send ~%.0f signaling messages/s, more "
                           "than signaling_global_rate_limit %g: renewals will be dropped; raise the limit",
                           number, names[number], policy.max_clients, policy.max_duration_s, need, limit)
    for number, (masters, _c) in clients.items():
        logger.info("port %d (%s): unicast client of %s", number, names[number], ", ".join(masters))
    return service
