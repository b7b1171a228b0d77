"""Unicast configuration -> the daemon's UnicastService (pure: no sockets)."""

from __future__ import annotations

import random

import pytest

from controlplane.core.clock import Clock
from controlplane.core.unicast import UnicastConfigError
from controlplane.core.unicast_service import UnicastService
from controlplane.runtime.configfile import parse_config_text
from controlplane.runtime.unicast_daemon import wrap_node

IDENT = bytes([2, 0, 0, 0xFF, 0xFE, 0, 0, 1])


def _wrap(text: str, ports=("eth0",)):
    cfg = parse_config_text(text, interfaces=tuple(ports))
    clock = Clock(cfg.clock, IDENT, list(ports), rng=random.Random(1))
    return wrap_node(clock, clock, cfg, list(ports)), clock


def test_no_unicast_options_leave_the_node_alone():
    node, clock = _wrap("[global]\npriority1 10\n")
    assert node is clock and clock.signaling_handler is None


def test_server_policy_from_the_option_table():
    node, clock = _wrap("[global]\nunicast_listen 1\nunicast_min_duration 5\nunicast_max_duration 40\n"
                        "unicast_max_clients 7\nunicast_allow 10.0.0.0/8, fd00::/8\nunicast_min_logSyncInterval -3\n")
    assert isinstance(node, UnicastService) and clock.unicast is node
    policy = node.servers[1].policy
    assert (policy.min_duration_s, policy.max_duration_s, policy.max_clients) == (5, 40, 7)
    assert policy.allow == ("10.0.0.0/8", "fd00::/8") and policy.min_log_for(0) == -3
    assert node.grant_rows(0) == []


def test_client_from_the_master_table():
    node, _ = _wrap("[global]\nslaveOnly 1\nunicast_req_duration 20\nlogSyncInterval -2\n[unicast_master_table]\n"
                    "table_id 1\nlogQueryInterval 1\nUDPv4 10.0.0.1\nUDPv4 10.0.0.2\n[eth0]\nunicast_master_table 1\n")
    client = node.clients[1]
    assert client.config.unicast_req_duration_s == 20 and client.config.log_query_interval == 1
    assert client.config.log_sync_interval == -2
    assert [m.address for m in client.master_table(0)] == ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("text,reason", [
    ("[global]\nnetwork_transport L2\nunicast_listen 1\n", "UDPv4 or UDPv6"),
    ("[unicast_master_table]\ntable_id 1\nUDPv6 fd00::1\n[eth0]\nunicast_master_table 1\n", "cannot reach"),
    ("[global]\nunicast_listen 1\nunicast_allow 10.0.0.0/33\n", "allow-list"),
    ("[global]\nunicast_listen 1\nunicast_min_duration 100\nunicast_max_duration 10\n", "min_duration"),
])
def test_bad_unicast_configuration_is_a_typed_error(text, reason):
    with pytest.raises(UnicastConfigError, match=reason):
        _wrap(text)


def test_warns_when_the_signaling_limit_cannot_carry_the_renewals(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="ptp-switch"):
        _wrap("[global]\nunicast_listen 1\nunicast_max_clients 10000\nunicast_max_duration 300\n")
    assert any("signaling_global_rate_limit" in r.getMessage() for r in caplog.records)  # ~133/s > 50/s
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptp-switch"):
        _wrap("[global]\nunicast_listen 1\nunicast_max_clients 10000\nunicast_max_duration 300\n"
              "signaling_global_rate_limit 500\n")
        _wrap("[global]\nunicast_listen 1\nunicast_max_clients 500\nunicast_max_duration 300\n")
    assert not caplog.records
