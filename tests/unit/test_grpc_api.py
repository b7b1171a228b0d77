"""Control API over a real gRPC server on a UNIX socket in a temp dir (real grpc, no grpc mocks).

The backend is an in-memory stand-in for the daemon (it records every apply), so these tests
check the API's own promises: validation with field + range, NOT_FOUND, all-or-nothing, persistence
and restore, events, reflection, address policy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

from controlplane.codec.enums import PortState
from controlplane.core.config import OPTIONS_BY_NAME, DelayMechanismOption, NetworkTransport, PortConfig
from controlplane.services import api as A
from controlplane.services import grpc_server as G

pb2 = G.pb2


class MemoryBackend:
    """A daemon stand-in: ports as data; apply replaces the settings (and can be told to fail)."""

    def __init__(self, names: tuple[str, ...] = ("p1", "p2")) -> None:
        self.settings = {n: A.PortSettings.from_port_config(PortConfig(log_announce_interval=0)) for n in names}
        self.numbers = {n: i + 1 for i, n in enumerate(names)}
        self.states = {n: PortState.LISTENING for n in names}
        self.applied: list[tuple[str, A.PortSettings]] = []
        self.fail_next = False
        self.counters = {n: {"rx_event": 10 * i, "corrected": 5 * i} for i, n in enumerate(names)}

    def clock(self) -> A.ClockSnapshot:
        return A.ClockSnapshot(
            default_ds=A.DefaultDs(clock_identity="001122.fffe.334455", number_ports=len(self.settings),
                                   clock_type="E2E_TC"),
            current_ds=A.CurrentDs(steps_removed=1, offset_from_master_ns=-42, mean_path_delay_ns=1500),
            parent_ds=A.ParentDs(parent_clock_identity="aabbcc.fffe.ddeeff", parent_port_number=1,
                                 grandmaster_identity="aabbcc.fffe.ddeeff", grandmaster_priority1=10),
            time_properties_ds=A.TimePropertiesDs(),
            frequency_adjustment_ppb=12.5,
            servo_state="LOCKED",
        )

    def ports(self) -> list[A.PortSnapshot]:
        return [
            A.PortSnapshot(name=n, port_number=self.numbers[n],
                           port_state=self.states[n] if s.port_enable else PortState.DISABLED,
                           settings=s, clock_identity="001122.fffe.334455",
                           network_transport=NetworkTransport.UDPV4, dataplane_counters=self.counters[n])
            for n, s in self.settings.items()
        ]

    def grants(self) -> list[A.GrantSnapshot]:
        return [A.GrantSnapshot(port="p1", role="SERVER", address="10.0.0.9", message_type=0x0,
                                log_inter_message_period=-3, duration_s=60, remaining_ns=30_000_000_000,
                                renewal_invited=True, peer_port_identity=("0a0b0c.fffe.0d0e0f", 1))]

    def apply_port_settings(self, port: str, settings: A.PortSettings) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("BPF map update failed (simulated)")
        self.settings[port] = settings
        self.applied.append((port, settings))


class Server:
    """A grpc.aio server on its own loop in a thread, like in the daemon."""

    def __init__(self, control: A.ControlApi, address: str, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handle: G.ServerHandle = self.run(G.start(control, address, **kw))

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the server's loop (as the daemon would publish events)."""
        return self.run(_acall(fn, *args))

    def close(self) -> None:
        self.run(self.handle.stop(0.2))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def _acall(fn: Any, *args: Any) -> Any:
    return fn(*args)


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def control(backend: MemoryBackend, tmp_path: Path) -> A.ControlApi:
    return A.ControlApi(backend, state_path=tmp_path / "state" / "sw.json")


@pytest.fixture
def server(control: A.ControlApi, tmp_path: Path) -> Iterator[Server]:
    s = Server(control, f"unix:{tmp_path}/run/sw.sock")
    yield s
    s.close()


@pytest.fixture
def client(server: Server) -> Iterator[Any]:
    channel = G.open_channel(server.handle.target)
    yield G.stub(channel)
    channel.close()


# ------------------------------------------------------------------ reads


def test_get_clock_has_all_data_sets(client: Any) -> None:
    c = client.GetClock(pb2.GetClockRequest(), timeout=10)
    assert c.default_ds.clock_identity == "001122.fffe.334455"
    assert c.default_ds.number_ports == 2 and c.default_ds.clock_type == "E2E_TC"
    assert c.current_ds.offset_from_master_ns == -42 and c.current_ds.mean_path_delay_ns == 1500
    assert c.parent_ds.grandmaster_identity == "aabbcc.fffe.ddeeff" and c.parent_ds.grandmaster_priority1 == 10
    assert c.time_properties_ds.ptp_timescale and c.time_properties_ds.current_utc_offset == 37
    assert c.frequency_adjustment_ppb == 12.5 and c.servo_state == "LOCKED"


def test_list_and_get_port(client: Any) -> None:
    ports = client.ListPorts(pb2.ListPortsRequest(), timeout=10).ports
    assert [p.underlying_interface for p in ports] == ["p1", "p2"]
    p2 = client.GetPort(pb2.GetPortRequest(underlying_interface="p2"), timeout=10)
    assert p2.port_ds.port_state == pb2.PORT_STATE_LISTENING
    assert p2.port_ds.delay_mechanism == pb2.DELAY_MECHANISM_E2E
    assert p2.port_ds.port_identity.port_number == 2
    assert dict(p2.dataplane_counters) == {"rx_event": 10, "corrected": 5}
    by_number = client.GetPort(pb2.GetPortRequest(underlying_interface="1"), timeout=10)
    assert by_number.underlying_interface == "p1"


def test_unknown_port_is_not_found(client: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.GetPort(pb2.GetPortRequest(underlying_interface="eth9"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "eth9" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="eth9", log_sync_interval=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grants(client: Any) -> None:
    grants = client.ListUnicastGrants(pb2.ListUnicastGrantsRequest(), timeout=10).grants
    assert len(grants) == 1
    g = grants[0]
    assert g.message_type == pb2.UNICAST_MESSAGE_TYPE_SYNC and g.address == "10.0.0.9" and g.role == "SERVER"
    assert g.peer_port_identity.clock_identity == "0a0b0c.fffe.0d0e0f"
    assert client.ListUnicastGrants(pb2.ListUnicastGrantsRequest(underlying_interface="p2"), timeout=10).grants == []


# ------------------------------------------------------------------ writes


def test_set_delay_mechanism_and_intervals_live(client: Any, backend: MemoryBackend) -> None:
    r = client.SetPortConfig(pb2.SetPortConfigRequest(
        underlying_interface="p1", delay_mechanism=pb2.DELAY_MECHANISM_P2P, log_min_pdelay_req_interval=-2,
        announce_receipt_timeout=4, delay_asymmetry_ns=-250), timeout=10)
    assert r.port.port_ds.delay_mechanism == pb2.DELAY_MECHANISM_P2P
    assert r.port.port_ds.log_min_pdelay_req_interval == -2
    assert r.port.port_ds.announce_receipt_timeout == 4
    assert r.port.port_ds.delay_asymmetry_ns == -250
    assert not r.persisted
    assert len(backend.applied) == 1
    name, s = backend.applied[0]
    assert name == "p1" and s.delay_mechanism is DelayMechanismOption.P2P and s.log_sync_interval == 0
    assert backend.settings["p2"].delay_mechanism is DelayMechanismOption.E2E  # other port untouched


def test_disable_port_goes_disabled(client: Any) -> None:
    r = client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p2", port_enable=False), timeout=10)
    assert r.port.port_ds.port_state == pb2.PORT_STATE_DISABLED and not r.port.port_ds.port_enable
    r = client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p2", port_enable=True), timeout=10)
    assert r.port.port_ds.port_state == pb2.PORT_STATE_LISTENING


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("log_sync_interval", 128, "logSyncInterval"),
        ("log_announce_interval", -129, "logAnnounceInterval"),
        ("log_min_delay_req_interval", 1000, "logMinDelayReqInterval"),
        ("log_min_pdelay_req_interval", -200, "logMinPdelayReqInterval"),
        ("announce_receipt_timeout", 1, "announceReceiptTimeout"),
        ("announce_receipt_timeout", 256, "announceReceiptTimeout"),
        ("delay_asymmetry_ns", 2**31, "delayAsymmetry"),
    ],
)
def test_out_of_range_is_invalid_argument_naming_field_and_range(
    client: Any, backend: MemoryBackend, field: str, value: int, option: str
) -> None:
    before = list(backend.ports())
    with pytest.raises(grpc.RpcError) as err:
        client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", **{field: value}), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    opt = OPTIONS_BY_NAME[option]  # the range comes from the core's table
    assert details.startswith(f"{field}:"), details
    assert f"[{int(opt.min)}, {int(opt.max)}]" in details, details
    assert dict(err.value.trailing_metadata()).get(G.FIELD_METADATA_KEY) == field
    assert backend.applied == [] and list(backend.ports()) == before


def test_rejected_request_changes_nothing(client: Any, backend: MemoryBackend, control: A.ControlApi) -> None:
    # first fields valid, the last one not: nothing may be applied or persisted
    with pytest.raises(grpc.RpcError) as err:
        client.SetPortConfig(pb2.SetPortConfigRequest(
            underlying_interface="p1", delay_mechanism=pb2.DELAY_MECHANISM_P2P, log_sync_interval=-3,
            port_enable=False, announce_receipt_timeout=0, persist=True), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "announce_receipt_timeout" in err.value.details()
    assert backend.applied == []
    assert backend.settings["p1"].delay_mechanism is DelayMechanismOption.E2E
    assert control.state_path is not None and not control.state_path.exists()


def test_master_only_with_slave_only_rejected(client: Any, backend: MemoryBackend) -> None:
    client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", master_only=True), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", slave_only=True), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "slave_only" in err.value.details()
    assert backend.settings["p1"].master_only and not backend.settings["p1"].slave_only


def test_no_mechanism_and_bad_unicast_table_rejected(client: Any, backend: MemoryBackend) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1",
                                                      delay_mechanism=pb2.DELAY_MECHANISM_NO_MECHANISM), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "delay_mechanism" in err.value.details()
    for row, needle in ((("UDPv4", "10.0.0.300"), "not an IP address"), (("UDPv6", "10.0.0.1"), "IPv6"),
                        (("UDPv4", "224.0.1.129"), "unicast"), (("TCP", "10.0.0.1"), "network protocol"),
                        (("L2", "00:11:22:33:44:55"), "runs UDPv4")):
        req = pb2.SetPortConfigRequest(underlying_interface="p1")
        req.unicast_master_table.addresses.add(network_protocol=row[0], address=row[1])
        with pytest.raises(grpc.RpcError) as err:
            client.SetPortConfig(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, row
        assert "unicast_master_table" in err.value.details() and needle in err.value.details(), err.value.details()
    assert backend.applied == []


def test_unicast_master_table_set_and_cleared(client: Any, backend: MemoryBackend) -> None:
    req = pb2.SetPortConfigRequest(underlying_interface="p1")
    req.unicast_master_table.addresses.add(network_protocol="udpv4", address="10.250.210.1")
    req.unicast_master_table.addresses.add(network_protocol="UDPv4", address="10.250.210.2")
    req.unicast_master_table.log_query_interval = 0
    r = client.SetPortConfig(req, timeout=10)
    assert [a.address for a in r.port.unicast_master_table.addresses] == ["10.250.210.1", "10.250.210.2"]
    assert backend.settings["p1"].unicast_master_table[0] == A.UnicastMaster(NetworkTransport.UDPV4, "10.250.210.1")
    # a request without the table leaves it alone; an empty table clears it
    client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", log_sync_interval=-1), timeout=10)
    assert len(backend.settings["p1"].unicast_master_table) == 2
    req = pb2.SetPortConfigRequest(underlying_interface="p1")
    req.unicast_master_table.SetInParent()
    client.SetPortConfig(req, timeout=10)
    assert backend.settings["p1"].unicast_master_table == ()


def test_validate_only_changes_nothing(client: Any, backend: MemoryBackend) -> None:
    r = client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", log_sync_interval=-4,
                                                      validate_only=True), timeout=10)
    assert r.port.port_ds.log_sync_interval == -4
    assert backend.applied == [] and backend.settings["p1"].log_sync_interval == 0


def test_backend_failure_is_unavailable_and_nothing_persisted(client: Any, backend: MemoryBackend,
                                                              control: A.ControlApi) -> None:
    backend.fail_next = True
    with pytest.raises(grpc.RpcError) as err:
        client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", log_sync_interval=-3, persist=True),
                             timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "nothing changed" in err.value.details()
    assert control.state_path is not None and not control.state_path.exists()
    assert not any(p.name.startswith(".") for p in control.state_path.parent.iterdir())  # no temp file left


# ------------------------------------------------------------------ persistence


def test_persist_survives_restart(client: Any, backend: MemoryBackend, control: A.ControlApi) -> None:
    client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", delay_mechanism=pb2.DELAY_MECHANISM_P2P,
                                                  persist=True), timeout=10)
    client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p1", log_sync_interval=-3, persist=True),
                         timeout=10)
    client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p2", port_enable=False), timeout=10)  # not persisted
    path = control.state_path
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["ports"] == {"p1": {"delay_mechanism": "P2P", "log_sync_interval": -3}}
    # "restart": a fresh daemon (backend) with defaults reads the state file
    fresh = MemoryBackend()
    restored = A.ControlApi(fresh, state_path=path)
    assert restored.restore_persisted() == ["p1"]
    assert fresh.settings["p1"].delay_mechanism is DelayMechanismOption.P2P
    assert fresh.settings["p1"].log_sync_interval == -3
    assert fresh.settings["p2"].port_enable  # the unpersisted change is gone


def test_restore_skips_unknown_ports_and_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"version": 1, "ports": {
        "gone0": {"log_sync_interval": -3},
        "p1": {"log_sync_interval": 999},
        "p2": {"delay_mechanism": "P2P"},
    }}))
    b = MemoryBackend()
    assert A.ControlApi(b, state_path=path).restore_persisted() == ["p2"]
    assert b.settings["p1"].log_sync_interval == 0
    path.write_text("{not json")
    assert A.ControlApi(MemoryBackend(), state_path=path).restore_persisted() == []


def test_persist_without_state_file_is_refused(backend: MemoryBackend) -> None:
    control = A.ControlApi(backend)
    with pytest.raises(A.ApplyFailed):
        control.set_port_config("p1", A.PortChange(log_sync_interval=-1), persist=True)
    assert backend.applied == []


# ------------------------------------------------------------------ events


def test_watch_events_delivers_published_events(server: Server, client: Any, control: A.ControlApi) -> None:
    stream = client.WatchEvents(pb2.WatchEventsRequest(kinds=[pb2.EVENT_KIND_PORT_STATE, pb2.EVENT_KIND_PORT_CONFIG]),
                                timeout=20)
    # wait until the server has registered the watcher, then publish from the daemon's loop
    for _ in range(200):
        if control.events.subscriber_count:
            break
        threading.Event().wait(0.02)
    assert control.events.subscriber_count == 1
    server.call(control.publish, A.OffsetSample(5, 1500, 1.0))  # filtered out
    server.call(control.publish, A.PortStateChanged("p1", 1, PortState.LISTENING, PortState.SLAVE, "RS_SLAVE"))
    client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="p2", port_enable=False), timeout=10)
    first = next(stream)
    assert first.WhichOneof("event") == "port_state"
    assert first.port_state.new_state == pb2.PORT_STATE_SLAVE and first.port_state.reason == "RS_SLAVE"
    second = next(stream)
    assert second.WhichOneof("event") == "port_config"
    assert second.port_config.port.port_ds.port_state == pb2.PORT_STATE_DISABLED
    assert second.sequence > first.sequence
    stream.cancel()
    for _ in range(200):
        if not control.events.subscriber_count:
            break
        threading.Event().wait(0.02)
    assert control.events.subscriber_count == 0  # the watcher is gone after cancel


def test_event_hub_drops_oldest_for_slow_reader() -> None:
    hub = A.EventHub(queue_size=3)

    async def run() -> tuple[list[int], int]:
        sub = hub.subscribe()
        for i in range(10):
            hub.publish(A.OffsetSample(i, 0, 0.0))
        await asyncio.sleep(0)
        got = [(await sub.get()).event.offset_from_master_ns for _ in range(3)]
        return got, sub.dropped

    got, dropped = asyncio.run(run())
    assert got == [7, 8, 9] and dropped == 7
    with pytest.raises(A.InvalidArgument):
        asyncio.run(_subscribe_bad(hub))


async def _subscribe_bad(hub: A.EventHub) -> None:
    hub.subscribe(["nonsense"])


# ------------------------------------------------------------------ transport policy


def test_socket_is_private(server: Server) -> None:
    path = server.handle.address.path
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_reflection_lists_the_service(client: Any, server: Server) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with G.open_channel(server.handle.target) as ch:
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=10)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert G.SERVICE in names


@pytest.mark.parametrize("addr", ["0.0.0.0:50051", "[::]:50051", ":50051", "*:50051"])
def test_all_addresses_refused_without_flag(addr: str) -> None:
    with pytest.raises(G.AddressError, match="all addresses"):
        G.parse_address(addr)
    assert G.parse_address(addr, allow_all_addresses=True).kind == "tcp"


def test_address_parsing() -> None:
    assert G.parse_address(None, name="sw1").path == "/var/run/ptp-switch/sw1.sock"
    assert G.parse_address("unix:/tmp/x.sock").target() == "unix:/tmp/x.sock"
    assert G.parse_address("/tmp/x.sock").target() == "unix:/tmp/x.sock"
    assert G.parse_address("127.0.0.1:50051").target() == "127.0.0.1:50051"
    assert G.parse_address("[::1]:50051").target() == "[::1]:50051"
    for bad in ("unix:rel.sock", "host", "127.0.0.1:x", "127.0.0.1:99999"):
        with pytest.raises(G.AddressError):
            G.parse_address(bad)
    with pytest.raises(G.AddressError):
        G.default_socket_path("../etc")


def test_tcp_requires_tls_and_token(control: A.ControlApi, tmp_path: Path) -> None:
    with pytest.raises(G.AddressError, match="TLS"):
        asyncio.run(G.start(control, "127.0.0.1:0"))
    with pytest.raises(G.AddressError, match="token"):
        asyncio.run(G.start(control, "127.0.0.1:0", tls_cert=str(tmp_path / "c"), tls_key=str(tmp_path / "k")))


def test_tcp_tls_with_bearer_token(control: A.ControlApi, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    srv = Server(control, "127.0.0.1:0", tls_cert=str(cert), tls_key=str(key), token="s3cret")
    try:
        target = srv.handle.target
        assert srv.handle.address.port > 0
        with G.open_channel(target, tls_ca=str(cert), token="s3cret") as ch:
            assert len(G.stub(ch).ListPorts(pb2.ListPortsRequest(), timeout=10).ports) == 2
        with G.open_channel(target, tls_ca=str(cert), token="wrong") as ch:
            with pytest.raises(grpc.RpcError) as err:
                G.stub(ch).ListPorts(pb2.ListPortsRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with G.open_channel(target, tls_ca=str(cert)) as ch:
            with pytest.raises(grpc.RpcError) as err:
                next(G.stub(ch).WatchEvents(pb2.WatchEventsRequest(), timeout=10))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.close()


def test_second_server_on_same_socket_refused(server: Server, control: A.ControlApi) -> None:
    with pytest.raises(G.AddressError, match="another server"):
        server.run(G.start(control, server.handle.target))


# ------------------------------------------------------------------ pure validation


def test_validate_change_types_are_strict() -> None:
    s = A.PortSettings()
    with pytest.raises(A.InvalidArgument, match="not an integer"):
        A.validate_change(s, A.PortChange(log_sync_interval=True))  # type: ignore[arg-type]
    with pytest.raises(A.InvalidArgument, match="not a boolean"):
        A.validate_change(s, A.PortChange(port_enable=1))  # type: ignore[arg-type]
    out = A.validate_change(s, A.PortChange(delay_mechanism="p2p"))
    assert out.delay_mechanism is DelayMechanismOption.P2P
    with pytest.raises(A.InvalidArgument, match="E2E, P2P"):
        A.validate_change(s, A.PortChange(delay_mechanism="Auto"))


def test_port_settings_round_trip_through_port_config() -> None:
    cfg = PortConfig(delay_mechanism=DelayMechanismOption.P2P, log_sync_interval=-3, delay_asymmetry=100, master_only=True)
    s = A.PortSettings.from_port_config(cfg)
    assert s.apply_to(PortConfig()) == dataclasses.replace(PortConfig(), delay_mechanism=DelayMechanismOption.P2P,
                                                           log_sync_interval=-3, delay_asymmetry=100, master_only=True)
    change = A.PortChange(delay_mechanism=DelayMechanismOption.P2P, unicast_master_table=(
        A.UnicastMaster(NetworkTransport.UDPV4, "10.0.0.1"),))
    assert A.PortChange.from_json(json.loads(json.dumps(change.to_json()))) == change


# ------------------------------------------------------------------ ptp-switch ctl (in-process, same server)


def _ctl(server: Server, capsys: Any, *argv: str) -> tuple[int, str, str]:
    from controlplane.services import cli

    rc = cli.main(["ctl", "--socket", server.handle.address.path, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_ctl_get_and_ports(server: Server, capsys: Any) -> None:
    rc, out, _ = _ctl(server, capsys, "get", "current")
    assert rc == 0 and "offset-from-master" in out and "-42 ns" in out
    rc, out, _ = _ctl(server, capsys, "--json", "get", "parent")
    assert rc == 0 and json.loads(out)["grandmaster_priority1"] == 10
    rc, out, _ = _ctl(server, capsys, "ports")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split()[:3] == ["PORT", "INTERFACE", "STATE"] and len(lines) == 3
    rc, out, _ = _ctl(server, capsys, "--json", "ports")
    ports = json.loads(out)
    assert [p["underlying_interface"] for p in ports] == ["p1", "p2"]
    assert ports[0]["port_ds"]["delay_asymmetry_ns"] == 0  # int64 as a JSON number, defaults included
    rc, out, _ = _ctl(server, capsys, "grants")
    assert rc == 0 and "10.0.0.9" in out and "Sync" in out


def test_ctl_set_and_errors(server: Server, backend: MemoryBackend, capsys: Any) -> None:
    rc, out, _ = _ctl(server, capsys, "port", "p1", "set", "delay-mechanism", "p2p", "logSyncInterval", "-3",
                      "unicast-master-table", "UDPv4:10.250.210.1,UDPv4:10.250.210.2")
    assert rc == 0, out
    s = backend.settings["p1"]
    assert s.delay_mechanism is DelayMechanismOption.P2P and s.log_sync_interval == -3
    assert len(s.unicast_master_table) == 2
    rc, out, _ = _ctl(server, capsys, "--json", "port", "p1", "set", "log-query-interval", "2")
    assert rc == 0 and json.loads(out)["port"]["unicast_master_table"]["log_query_interval"] == 2
    assert len(backend.settings["p1"].unicast_master_table) == 2  # table kept when only the interval is set
    rc, out, _ = _ctl(server, capsys, "port", "p2", "disable")
    assert rc == 0 and "DISABLED" in out and not backend.settings["p2"].port_enable
    n = len(backend.applied)
    rc, _, err = _ctl(server, capsys, "port", "p1", "set", "log-sync-interval", "300")
    assert rc == 2 and "log_sync_interval" in err and "[-128, 127]" in err and "INVALID_ARGUMENT" in err
    rc, _, err = _ctl(server, capsys, "port", "nope", "enable")
    assert rc == 2 and "NOT_FOUND" in err
    rc, _, err = _ctl(server, capsys, "port", "p1", "set", "bogus", "1")
    assert rc == 2 and "unknown setting" in err
    rc, _, err = _ctl(server, capsys, "port", "p1", "set", "log-sync-interval")
    assert rc == 2 and "KEY VALUE" in err
    rc, out, _ = _ctl(server, capsys, "port", "p1", "set", "log-sync-interval", "-5", "--dry-run")
    assert rc == 0 and "dry run" in out
    assert len(backend.applied) == n  # none of the above applied anything


def test_ctl_unreachable_socket_is_a_clear_error(tmp_path: Path, capsys: Any) -> None:
    from controlplane.services import cli

    rc = cli.main(["ctl", "--socket", str(tmp_path / "none.sock"), "ports"])
    assert rc == 2 and "no control socket" in capsys.readouterr().err


def test_ctl_watch_count(server: Server, control: A.ControlApi, capsys: Any) -> None:
    def publish_when_watched() -> None:
        for _ in range(500):
            if control.events.subscriber_count:
                break
            threading.Event().wait(0.01)
        server.call(control.publish, A.PortStateChanged("p1", 1, PortState.SLAVE, PortState.LISTENING,
                                                        "ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES"))
        server.call(control.publish, A.GrandmasterChanged("aabbcc.fffe.ddeeff", "001122.fffe.334455", 0))

    t = threading.Thread(target=publish_when_watched)
    t.start()
    rc, out, _ = _ctl(server, capsys, "watch", "--count", "2", "--duration", "20")
    t.join()
    assert rc == 0
    lines = out.splitlines()
    assert "SLAVE to LISTENING on ANNOUNCE_RECEIPT_TIMEOUT_EXPIRES" in lines[0]
    assert "grandmaster aabbcc.fffe.ddeeff -> 001122.fffe.334455" in lines[1]


# ------------------------------------------------------------------ ClockBackend over the real core Clock


def test_clock_backend_over_core_clock() -> None:
    import random

    core_clock = pytest.importorskip("controlplane.core.clock", reason="the protocol core's Clock is not in this tree yet")
    from controlplane.core.config import parse

    clock = core_clock.Clock(parse({"global": {"clock_type": "BC"}}), bytes.fromhex("001122fffe334455"), ["p1", "p2"],
                             rng=random.Random(1))
    executed: list[Any] = []
    control = A.ControlApi(A.ClockBackend(clock, executed.extend))
    clock.start(0)
    snap = control.get_clock()
    assert snap.default_ds.clock_identity == "001122.fffe.334455" and snap.default_ds.clock_type == "BC"
    assert [p.port_state for p in control.list_ports()] == [PortState.LISTENING, PortState.LISTENING]
    r = control.set_port_config("p2", A.PortChange(port_enable=False))
    assert r.port.port_state is PortState.DISABLED and not r.port.settings.port_enable
    events = A.ActionEvents({1: "p1", 2: "p2"})
    assert [e for a in executed for e in events(a)] == [
        A.PortStateChanged("p2", 2, PortState.LISTENING, PortState.DISABLED, "DESIGNATED_DISABLED")]
    if not hasattr(clock, "reconfigure_port"):
        with pytest.raises(A.ApplyFailed, match="reconfigure_port"):
            control.set_port_config("p1", A.PortChange(log_sync_interval=-3, port_enable=False))
        assert control.get_port("p1").port_state is PortState.LISTENING  # refused whole: not disabled either
    r = control.set_port_config("p2", A.PortChange(port_enable=True))
    assert r.port.port_state is PortState.LISTENING
