"""gRPC control of a running ptp-switch daemon in a netns lab, with a real gRPC client.

test_live_config_over_grpc (``direct``: gm -- sl)
    gm: ptp4l GM (free_running, delay_mechanism Auto: answers Delay_Req and Pdelay_Req)
    sl: ptp-switch run -s (OC slave, free_running: its offset is its error) with --grpc on a UNIX
        socket, --metrics on 127.0.0.1 in its namespace and --state-file
  Checked in order: the port reaches SLAVE; ``ctl get current`` works; out-of-range and unknown-port
  requests are INVALID_ARGUMENT / NOT_FOUND and GetPort is unchanged; tshark on the GM side sees
  Delay_Req and no Pdelay_Req; ``ctl port eth0 set delay-mechanism p2p --persist``; tshark then sees
  Pdelay_Req and no Delay_Req, WatchEvents delivers P2P path-delay samples and small offsets (still
  synchronised); the metrics endpoint parses with prometheus_client; after a daemon restart the
  persisted P2P setting is back; WatchEvents delivers SLAVE -> ... when the GM (ptp4l) is killed.

test_tc_disable_port_and_dataplane_counters (``line-1``: gm -- [p1 br0 p2] -- sl)
    ptp4l GM -> ptp-switch E2E_TC (eBPF dataplane) -> ptp4l slave. Metrics carry the dataplane's
    per-port counters; SetPortConfig(port_enable=false) on p2 makes it DISABLED and the dataplane
    stops correcting there (p2's corrected counters freeze); enabling it again resumes correcting.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from controlplane.services import grpc_server as G
from topologies import ptp4l as p4
from topologies.netns import Lab
from tests.lab.conftest import PTP_SWITCH

pytest.importorskip("controlplane.core.clock", reason="the core's clock has not landed")
for _tool in ("ptp4l", "tshark"):
    if shutil.which(_tool) is None:  # pragma: no cover - make setup installs them
        pytest.skip(f"{_tool} not installed (make setup)", allow_module_level=True)

pb2 = G.pb2
PYTHON = sys.executable
FAST = {"logSyncInterval": "-3", "logMinDelayReqInterval": "-3", "logMinPdelayReqInterval": "-3",
        "logAnnounceInterval": "-2", "announceReceiptTimeout": "3", "tx_timestamp_timeout": "50"}


def _wait(pred: Callable[[], Any], timeout_s: float, what: str, why: Callable[[], str] = lambda: "") -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{why()}")


class Daemon:
    """One ``ptp-switch run`` in a lab node, with its gRPC client."""

    def __init__(self, lab: Lab, node: str, argv: list[str], sock: str, log_name: str) -> None:
        self.lab, self.node, self.sock = lab, node, sock
        self.log_path = lab.workdir / log_name
        self.proc = lab.popen(node, [PTP_SWITCH, "run", "-m", *argv, "--grpc", f"unix:{sock}"],
                              stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        _wait(lambda: Path(sock).exists() or self.proc.poll() is not None, 30, "the gRPC socket", self.log)
        assert self.proc.poll() is None, f"daemon exited: {self.log()}"
        self.channel = G.open_channel(f"unix:{sock}")
        self.client = G.stub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def port(self, name: str) -> Any:
        return self.client.GetPort(pb2.GetPortRequest(underlying_interface=name), timeout=10)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            import os

            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group (lab.popen: new session)
            self.proc.wait(timeout=20)
        assert not Path(self.sock).exists(), "the daemon left its gRPC socket behind"


class Watcher:
    """WatchEvents in a thread: (monotonic time, event) pairs."""

    def __init__(self, client: Any, kinds: list[int]) -> None:
        self.events: list[tuple[float, Any]] = []
        self.stream = client.WatchEvents(pb2.WatchEventsRequest(kinds=kinds), timeout=120)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        import grpc

        try:
            for ev in self.stream:
                self.events.append((time.monotonic(), ev))
        except grpc.RpcError:
            pass

    def since(self, t: float, kind: str) -> list[Any]:
        return [e for ts, e in list(self.events) if ts >= t and e.WhichOneof("event") == kind]

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(timeout=10)


def _capture(lab: Lab, node: str, iface: str, seconds: int, name: str) -> list[int]:
    """PTP messageTypes tshark sees on ``iface`` of ``node`` during ``seconds``."""
    pcap = lab.workdir / f"{name}.pcap"
    lab.run(node, ["tshark", "-q", "-i", iface, "-a", f"duration:{seconds}", "-w", str(pcap)], timeout=seconds + 30)
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "ptp", "-T", "fields", "-e", "ptp.v2.messagetype"],
                         capture_output=True, text=True, timeout=60)
    return [int(t, 0) for t in out.stdout.split()]


def _metrics(lab: Lab, node: str, port: int) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    res = lab.run(node, [PYTHON, "-c", "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
                         f"'http://127.0.0.1:{port}/metrics',timeout=10).read().decode())"], timeout=30)
    assert res.returncode == 0, res.stderr
    return {f.name: f for f in text_string_to_metric_families(res.stdout)}


def _sample(families: dict[str, Any], name: str, **labels: str) -> float:
    fam = families[name]
    for s in fam.samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"{name}{labels} not in {[s.labels for s in fam.samples]}")


def _settings_only(port: Any) -> Any:
    """A GetPort answer without the fields that move on their own (measurements, counters)."""
    p = type(port)()
    p.CopyFrom(port)
    p.mean_path_delay_ns = 0
    p.port_ds.peer_mean_path_delay_ns = 0
    p.dataplane_counters.clear()
    return p


def _ctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PTP_SWITCH, "ctl", "--socket", sock, *args], capture_output=True, text=True, timeout=60)


def test_live_config_over_grpc(make_lab: Callable[..., Lab]) -> None:
    import grpc

    lab = make_lab("direct")
    (gm_if,), (sl_if,) = lab.topology.ports("gm"), lab.topology.ports("sl")
    gm = p4.start_ptp4l(lab, "gm", "gm", overrides={**FAST, "delay_mechanism": "Auto"})
    cfg = lab.workdir / "sl.cfg"
    cfg.write_text("[global]\nfree_running 1\nslaveOnly 1\n" + "".join(f"{k} {v}\n" for k, v in FAST.items())
                   + f"uds_address {lab.uds_path('sl', 'sw')}\n")
    sock, state = str(lab.workdir / "grpc.sock"), lab.workdir / "state.json"
    metrics_port = 9469
    argv = ["-i", sl_if, "-4", "-S", "-f", str(cfg), "--metrics", f"127.0.0.1:{metrics_port}", "--state-file", str(state)]
    d = Daemon(lab, "sl", argv, sock, "sl-1.log")
    try:
        _wait(lambda: d.port(sl_if).port_ds.port_state == pb2.PORT_STATE_SLAVE, 30, "port SLAVE", d.log)
        assert d.port(sl_if).port_ds.delay_mechanism == pb2.DELAY_MECHANISM_E2E
        r = _ctl(sock, "--json", "get", "current")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["steps_removed"] == 1, r.stdout

        # invalid requests: typed errors naming the field, and nothing changes
        before = _settings_only(d.port(sl_if))
        with pytest.raises(grpc.RpcError) as err:
            d.client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface=sl_if, delay_mechanism=pb2.DELAY_MECHANISM_P2P,
                                                            log_min_pdelay_req_interval=500), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "log_min_pdelay_req_interval" in err.value.details() and "[-128, 127]" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            d.client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface="nope0",
                                                            delay_mechanism=pb2.DELAY_MECHANISM_P2P), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert _settings_only(d.port(sl_if)) == before

        # E2E on the wire, then a live change to P2P with ctl (persisted)
        types = _capture(lab, "gm", gm_if, 3, "e2e")
        assert types.count(0x1) > 0 and types.count(0x2) == 0, types  # Delay_Req, no Pdelay_Req
        watch = Watcher(d.client, [pb2.EVENT_KIND_OFFSET, pb2.EVENT_KIND_PATH_DELAY])
        r = _ctl(sock, "port", sl_if, "set", "delay-mechanism", "p2p", "--persist")
        assert r.returncode == 0, r.stdout + r.stderr
        changed_at = time.monotonic()
        assert d.port(sl_if).port_ds.delay_mechanism == pb2.DELAY_MECHANISM_P2P
        time.sleep(1.0)
        types = _capture(lab, "gm", gm_if, 3, "p2p")
        assert types.count(0x2) > 0 and types.count(0x1) == 0, types  # Pdelay_Req, no Delay_Req
        # still synchronised: back in SLAVE, P2P path delays and small offsets (free running: pure error)
        _wait(lambda: d.port(sl_if).port_ds.port_state == pb2.PORT_STATE_SLAVE, 15, "SLAVE after the change", d.log)
        _wait(lambda: len(watch.since(changed_at + 2, "offset")) >= 5, 15, "offsets after the change", d.log)
        watch.close()
        offsets = [e.offset.offset_from_master_ns for e in watch.since(changed_at + 2, "offset")]
        delays = [e.path_delay for e in watch.since(changed_at + 2, "path_delay")]
        assert delays and all(p.delay_mechanism == pb2.DELAY_MECHANISM_P2P and 0 < p.mean_path_delay_ns < 200_000
                              for p in delays), delays
        rms = math.sqrt(sum(o * o for o in offsets) / len(offsets))
        print(f"after E2E->P2P: {len(offsets)} offsets, rms {rms:.0f} ns, max {max(map(abs, offsets))} ns, "
              f"path delay median {sorted(p.mean_path_delay_ns for p in delays)[len(delays) // 2]} ns")
        assert max(map(abs, offsets)) < 200_000, offsets

        fam = _metrics(lab, "sl", metrics_port)
        assert {"ptp_switch_offset_from_master_ns", "ptp_switch_mean_path_delay_ns", "ptp_switch_port_state",
                "ptp_switch_port_peer_mean_path_delay_ns", "ptp_switch_frequency_adjustment_ppb"} <= set(fam)
        assert _sample(fam, "ptp_switch_port_state", port=sl_if, state="SLAVE") == 1
        assert _sample(fam, "ptp_switch_port_delay_mechanism_info", port=sl_if, delay_mechanism="P2P") == 1
        assert 0 < _sample(fam, "ptp_switch_port_peer_mean_path_delay_ns", port=sl_if) < 200_000
        assert abs(_sample(fam, "ptp_switch_offset_from_master_ns")) < 200_000
    finally:
        d.stop()

    # persistence: the state file holds the change; a restarted daemon comes back in P2P
    assert json.loads(state.read_text())["ports"][sl_if]["delay_mechanism"] == "P2P"
    d = Daemon(lab, "sl", argv, sock, "sl-2.log")
    try:
        assert d.port(sl_if).port_ds.delay_mechanism == pb2.DELAY_MECHANISM_P2P
        assert "restored persisted settings" in d.log()
        _wait(lambda: d.port(sl_if).port_ds.port_state == pb2.PORT_STATE_SLAVE, 30, "SLAVE after restart", d.log)

        # WatchEvents sees the port leave SLAVE when the GM dies
        watch = Watcher(d.client, [pb2.EVENT_KIND_PORT_STATE])
        time.sleep(0.5)
        gm.proc.send_signal(signal.SIGTERM)
        try:
            left = _wait(lambda: [e for e in watch.since(0, "port_state") if e.port_state.old_state == pb2.PORT_STATE_SLAVE],
                         20, "SLAVE -> ... after the GM died", d.log)
        finally:
            watch.close()
        assert left[0].port_state.underlying_interface == sl_if and left[0].port_state.reason
    finally:
        d.stop()


def _corrected(port: Any) -> int:
    return sum(v for k, v in port.dataplane_counters.items() if k.endswith("_corrected"))  # SYNC_corrected, ...


def test_tc_disable_port_and_dataplane_counters(make_lab: Callable[..., Lab]) -> None:
    pytest.importorskip("bcc", reason="the eBPF dataplane needs BCC")
    lab = make_lab("line-1")
    p1, p2 = lab.topology.ports("sw1")
    p4.start_ptp4l(lab, "gm", "gm", overrides=FAST)
    cfg = lab.workdir / "sw1.cfg"
    cfg.write_text("[global]\npriority1 254\n" + "".join(f"{k} {v}\n" for k, v in FAST.items())
                   + f"uds_address {lab.uds_path('sw1', 'sw')}\n")
    sock, metrics_port = str(lab.workdir / "tc.sock"), 9469
    d = Daemon(lab, "sw1", ["-4", "-f", str(cfg), "--clock-type", "E2E_TC", "-i", p1, "-i", p2,
                            "--metrics", f"127.0.0.1:{metrics_port}"], sock, "sw1.log")
    sl = p4.start_ptp4l(lab, "sl", "slave", overrides=FAST)
    try:
        _wait(lambda: len(p4.parse_offsets(sl.text())) >= 3, 30, "slave offsets through the TC", sl.text)
        _wait(lambda: _corrected(d.port(p2)) > 0, 10, f"corrections on {p2}", d.log)
        fam = _metrics(lab, "sw1", metrics_port)
        corrected = {s.labels["message_type"]: s.value for s in fam["ptp_switch_dataplane"].samples
                     if s.labels["port"] == p2 and s.labels["counter"] == "corrected" and s.value}
        print(f"{p2} corrected by message type: {corrected}")
        assert corrected.get("FOLLOW_UP", 0) > 0, corrected  # two-step Sync: its Follow_Up carries the residence
        assert _sample(fam, "ptp_switch_port_enabled", port=p2) == 1

        r = d.client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface=p2, port_enable=False), timeout=10)
        assert r.port.port_ds.port_state == pb2.PORT_STATE_DISABLED and not r.port.port_ds.port_enable
        time.sleep(0.5)
        frozen = _corrected(d.port(p2))
        time.sleep(2.0)
        assert _corrected(d.port(p2)) == frozen, "a disabled port must not be corrected"
        fam = _metrics(lab, "sw1", metrics_port)
        assert _sample(fam, "ptp_switch_port_state", port=p2, state="DISABLED") == 1
        assert _sample(fam, "ptp_switch_port_enabled", port=p2) == 0

        d.client.SetPortConfig(pb2.SetPortConfigRequest(underlying_interface=p2, port_enable=True), timeout=10)
        _wait(lambda: _corrected(d.port(p2)) > frozen, 10, f"corrections on {p2} after enabling it", d.log)
        assert d.port(p2).port_ds.port_state == pb2.PORT_STATE_LISTENING
    finally:
        d.stop()
