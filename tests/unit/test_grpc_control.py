"""The daemon's control services (controlplane/services/control.py): option checks before anything
opens, the services over a real core Clock with a real gRPC server and metrics endpoint, events from
executed actions, restore from the state file, and ``ptp-switch run`` refusing bad flags."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controlplane.codec.enums import PortState
from controlplane.core.clock import Clock
from controlplane.core.config import parse
from controlplane.services import api as A
from controlplane.services import grpc_server as G
from controlplane.services.control import ControlError, ControlOptions, ControlServices

PTP_SWITCH = str(Path(sys.executable).with_name("ptp-switch"))


@pytest.mark.parametrize("opts,match", [
    (ControlOptions(grpc_address="0.0.0.0:7000"), "all addresses"),
    (ControlOptions(grpc_address="127.0.0.1:7000"), "needs TLS"),
    (ControlOptions(grpc_address="127.0.0.1:7000", grpc_tls_cert="c", grpc_tls_key="k"), "bearer token"),
    (ControlOptions(grpc_address="127.0.0.1:7000", grpc_tls_cert="c", grpc_tls_key="k",
                    grpc_token_file="/nonexistent/token"), "cannot read the gRPC token file"),
    (ControlOptions(grpc_address="relative.sock"), "neither"),
    (ControlOptions(grpc_token_file="t"), "need --grpc"),
    (ControlOptions(grpc_allow_all_addresses=True), "need --grpc"),
    (ControlOptions(metrics_address="10.1.2.3:9000"), "not a loopback"),
    (ControlOptions(metrics_address="nonsense"), "HOST:PORT"),
    (ControlOptions(metrics_allow_remote=True), "needs --metrics"),
])
def test_bad_options_refused(opts: ControlOptions, match: str) -> None:
    with pytest.raises(ControlError, match=match):
        opts.check()


def test_defaults() -> None:
    assert not ControlOptions().enabled
    o = ControlOptions(grpc_address="", metrics_address="", state_file="", name="sw1")
    o.check()
    assert o.enabled and str(o.state_path) == "/var/lib/ptp-switch/sw1.state.json"
    assert ControlOptions(grpc_address="10.0.0.1:1", grpc_allow_all_addresses=False,
                          metrics_address="10.0.0.1:9", metrics_allow_remote=True).state_path is None


class FakeRuntime:
    def __init__(self, services: ControlServices) -> None:
        self.services = services
        self.executed: list[Any] = []

    def execute(self, actions: list[Any]) -> None:  # as Runtime.execute: every action via on_action
        for a in actions:
            self.services.on_action(a)
            self.executed.append(a)


def test_services_over_core_clock(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"version": 1, "ports": {"eth0": {"log_sync_interval": -4}, "gone0": {"port_enable": False}}}))
    sock = tmp_path / "api.sock"

    async def main() -> None:
        clock = Clock(parse({"global": {"clock_type": "OC"}}), bytes.fromhex("001122fffe334455"), ["eth0"],
                      rng=random.Random(1))
        opts = ControlOptions(grpc_address=f"unix:{sock}", metrics_address="127.0.0.1:0", state_file=str(state))
        opts.check()
        svc = ControlServices(opts, clock, {1: "eth0"})
        with pytest.raises(A.ApplyFailed, match="not running"):
            svc.api.set_port_config("eth0", A.PortChange(log_sync_interval=-2))
        svc.runtime = FakeRuntime(svc)
        for a in clock.start(0):
            svc.on_action(a)
        await svc.start()
        try:
            assert svc.api.get_port("eth0").settings.log_sync_interval == -4  # restored; unknown port skipped
            sub = svc.api.events.subscribe(["port_state"])
            loop = asyncio.get_running_loop()

            def client_calls() -> tuple[Any, Any]:
                with G.open_channel(f"unix:{sock}") as ch:
                    stub = G.stub(ch)
                    r = stub.SetPortConfig(G.pb2.SetPortConfigRequest(underlying_interface="eth0", port_enable=False),
                                           timeout=10)
                    body = urllib.request.urlopen(svc.metrics.url, timeout=10).read().decode()
                    return r, body

            r, body = await loop.run_in_executor(None, client_calls)
            assert r.port.port_ds.port_state == G.pb2.PORT_STATE_DISABLED
            ev = await asyncio.wait_for(sub.get(), 5)
            assert ev.event == A.PortStateChanged("eth0", 1, PortState.LISTENING, PortState.DISABLED, "DESIGNATED_DISABLED")
            assert 'ptp_switch_port_state{port="eth0",state="DISABLED"} 1' in body
            sub.close()
        finally:
            await svc.stop()
        assert not sock.exists()

    asyncio.run(main())


@pytest.mark.parametrize("flags,match", [
    (["--grpc", "0.0.0.0:7001"], "all addresses"),
    (["--metrics", "192.0.2.1:9469"], "not a loopback"),
    (["--grpc-token-file", "/etc/hostname"], "need --grpc"),
])
def test_run_refuses_bad_flags_before_opening_anything(flags: list[str], match: str) -> None:
    # an interface that does not exist: should the check ever let the flags through, the daemon
    # fails to open it instead of running (no PTP traffic outside a lab namespace)
    r = subprocess.run([PTP_SWITCH, "run", "-i", "ptsnoif0", *flags], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and match in r.stderr, r.stderr
