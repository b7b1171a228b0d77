"""1588 ATR on the `atr` topology (two servers on one segment, a router, the client behind it).

Real parts: network namespaces, the kernel's UDP stack and software timestamps, linuxptp 3.1.1
(ptp4l as unicast client with free_running 1, and as unicast servers), tshark captures, and the
project's unicast server/client (controlplane.runtime.unicast_node around the sans-IO core).
Every process and namespace is removed by the Lab context manager, also on failure.
"""

from __future__ import annotations

import json
import pathlib
import re
import statistics
import subprocess
import sys
import time

import pytest

from topologies import catalog
from topologies.netns import Lab, LabError

PY = sys.executable
ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFSET_RE = re.compile(r"master offset\s+(-?\d+) s\d")


def _atr_lab() -> Lab:
    """Build the `atr` lab; retry when the build hits a concurrent run (a namespace or link vanished
    mid-build, seen on the shared machine while other labs were swept), so the test measures ATR."""
    for attempt in range(6):
        lab = Lab(catalog.get("atr"))
        try:
            return lab.up()
        except (LabError, IndexError, OSError):
            if attempt == 5:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _read_json_lines(path: pathlib.Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _ptp4l_client_cfg(lab: Lab, servers: list[str], req_duration: int = 10) -> str:
    table = "\n".join(f"UDPv4 {s}" for s in servers)
    return f"""[global]
slaveOnly 1
free_running 1
logAnnounceInterval 0
announceReceiptTimeout 3
logSyncInterval 0
logMinDelayReqInterval 0
unicast_req_duration {req_duration}
freq_est_interval 0
summary_interval 0
tx_timestamp_timeout 50
uds_address {lab.uds_path('cl')}
[unicast_master_table]
table_id 1
logQueryInterval 0
{table}
[eth0]
unicast_master_table 1
"""


def _ptp4l_server_cfg(lab: Lab, node: str, priority1: int) -> str:
    return f"""[global]
priority1 {priority1}
free_running 1
unicast_listen 1
inhibit_multicast_service 1
logAnnounceInterval 0
logSyncInterval 0
tx_timestamp_timeout 50
uds_address {lab.uds_path(node)}
"""


def _server(lab: Lab, node: str, log: pathlib.Path, *extra: str) -> subprocess.Popen:
    argv = [PY, "-m", "controlplane.runtime.unicast_node", "server", "--iface", "eth0", *extra]
    return lab.popen(node, argv, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=str(ROOT))


def _ptp4l(lab: Lab, node: str, cfg: str, log: pathlib.Path) -> subprocess.Popen:
    cfg_path = lab.workdir / f"{node}.cfg"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(cfg)
    return lab.popen(node, ["ptp4l", "-i", "eth0", "-S", "-4", "-m", "-f", str(cfg_path)],
                     stdout=log.open("w"), stderr=subprocess.STDOUT)


def _offsets(log: pathlib.Path) -> list[int]:
    return [int(m.group(1)) for m in OFFSET_RE.finditer(log.read_text())]


def test_linuxptp_client_gets_capped_grants_syncs_and_renews(tmp_path):
    with _atr_lab() as lab:
        assert lab.ping("cl", "srv1")
        srv_log, cl_log = tmp_path / "srv.json", tmp_path / "cl.log"
        # the client asks for 10 s; the server caps at 4 s -> renewals every 3 s
        _server(lab, "srv1", srv_log, "--priority1", "10", "--min-duration", "1", "--max-duration", "4")
        time.sleep(0.5)
        _ptp4l(lab, "cl", _ptp4l_client_cfg(lab, [lab.addr("srv1", "cl")]), cl_log)
        time.sleep(22)
        events = _read_json_lines(srv_log)
        offsets = _offsets(cl_log)
    kinds = [(e["kind"], e.get("message_type")) for e in events]
    for mtype in ("ANNOUNCE", "SYNC", "DELAY_RESP"):
        assert ("granted", mtype) in kinds, kinds
        # >= 2 grant periods of 4 s covered by renewals
        assert kinds.count(("renewed", mtype)) >= 3, kinds
    assert all(e["detail"] == "4 s" for e in events if e["kind"] in ("granted", "renewed")), "capped to 4 s"
    assert len(offsets) >= 12, cl_log
    steady = offsets[4:]
    # a bridge and a router between them, software stamps: generous bounds (ANCHORS: bridge rms ~3 us)
    assert statistics.median(abs(o) for o in steady) < 50_000, steady
    assert max(abs(o) for o in steady) < 500_000, steady


def test_allow_list_denies_client_outside(tmp_path):
    with _atr_lab() as lab:
        srv_log, cl_log = tmp_path / "srv.json", tmp_path / "cl.log"
        _server(lab, "srv1", srv_log, "--min-duration", "1", "--allow", "10.251.1.0/24", "--allow", "fd00::/8")
        time.sleep(0.5)
        _ptp4l(lab, "cl", _ptp4l_client_cfg(lab, [lab.addr("srv1", "cl")]), cl_log)
        time.sleep(6)
        events = _read_json_lines(srv_log)
        offsets = _offsets(cl_log)
    denied = [e for e in events if e["kind"] == "denied"]
    assert denied and all(e["detail"] == "not_allowed" for e in denied)
    assert not [e for e in events if e["kind"] == "granted"]
    assert offsets == []


def test_no_message_reaches_client_after_grant_expiry(tmp_path):
    """Kill the linuxptp client (no CANCEL): the server must stop exactly at expiry; tshark proves it."""
    with _atr_lab() as lab:
        srv_log, cl_log, pcap = tmp_path / "srv.json", tmp_path / "cl.log", tmp_path / "cl.pcapng"
        srv_ip = lab.addr("srv1", "cl")
        _server(lab, "srv1", srv_log, "--min-duration", "1", "--max-duration", "4")
        time.sleep(0.5)
        client = _ptp4l(lab, "cl", _ptp4l_client_cfg(lab, [srv_ip]), cl_log)
        time.sleep(8)
        assert _offsets(cl_log), "client never synchronised"
        cap = lab.popen("cl", ["tshark", "-q", "-i", "eth0", "-w", str(pcap), "-a", "duration:9", "-f", f"udp and src host {srv_ip}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        client.kill()
        client.wait(timeout=5)
        cap.wait(timeout=20)
        events = _read_json_lines(srv_log)
        fields = lab.run("cl", ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_epoch", "-e", "ptp.v2.messagetype"], timeout=30)
    rows = [line.split("\t") for line in fields.stdout.splitlines() if line.strip()]
    times_ns = [int(float(r[0]) * 1e9) for r in rows]
    assert times_ns, "capture is empty: the server never sent anything while the client lived"
    expired = [e for e in events if e["kind"] == "expired"]
    assert {e["message_type"] for e in expired} >= {"SYNC", "ANNOUNCE"}, events[-6:]
    last_expiry_ns = max(e["real_ns"] for e in expired)
    # nothing from the server after its last grant expired (5 ms for the path and logging)
    late = [t for t in times_ns if t > last_expiry_ns + 5_000_000]
    assert late == [], f"{len(late)} packets after expiry"
    # and the capture kept running at least 2 s beyond that expiry
    assert last_expiry_ns + 2_000_000_000 < times_ns[0] + 9_000_000_000


def _first(events: list[dict], pred, after_ns: int = 0) -> dict | None:
    for e in events:
        if e["real_ns"] >= after_ns and pred(e):
            return e
    return None


def test_ptp_switch_client_fails_over_between_linuxptp_servers(tmp_path):
    with _atr_lab() as lab:
        s1, s2 = lab.addr("srv1", "cl"), lab.addr("srv2", "cl")
        p1 = _ptp4l(lab, "srv1", _ptp4l_server_cfg(lab, "srv1", 10), tmp_path / "srv1.log")
        _ptp4l(lab, "srv2", _ptp4l_server_cfg(lab, "srv2", 20), tmp_path / "srv2.log")
        time.sleep(1)
        cl_log = tmp_path / "cl.json"
        lab.popen("cl", [PY, "-m", "controlplane.runtime.unicast_node", "client", "--iface", "eth0",
                         "--server", s1, "--server", s2, "--req-duration", "20"],
                  stdout=cl_log.open("w"), stderr=subprocess.STDOUT, cwd=str(ROOT))
        deadline = time.time() + 25
        while time.time() < deadline:
            offs = [e for e in _read_json_lines(cl_log) if e["kind"] == "offset" and e["server"] == s1]
            if len(offs) >= 5:
                break
            time.sleep(0.5)
        assert len(offs) >= 5, cl_log.read_text()[-2000:]
        assert not [e for e in _read_json_lines(cl_log) if e["kind"] == "offset" and e["server"] == s2]
        kill_ns = time.time_ns()
        p1.kill()
        p1.wait(timeout=5)
        time.sleep(9)
        ev = _read_json_lines(cl_log)
        switched = _first(ev, lambda e: e["kind"] == "offset" and e["server"] == s2, kill_ns)
        assert switched is not None, cl_log.read_text()[-3000:]
        failover_s = (switched["real_ns"] - kill_ns) / 1e9
        # restart the better server: the client (revertive by default) returns to it
        restart_ns = time.time_ns()
        _ptp4l(lab, "srv1", _ptp4l_server_cfg(lab, "srv1", 10), tmp_path / "srv1b.log")
        time.sleep(10)
        ev = _read_json_lines(cl_log)
    back = _first(ev, lambda e: e["kind"] == "offset" and e["server"] == s1, restart_ns)
    print(f"failover kill -> first offset from the other server: {failover_s:.2f} s")
    # linuxptp 3.1.1's client in this lab: 4.6-5.7 s (ANCHORS.md), when it does not get stuck
    assert failover_s < 4.6
    assert back is not None, "did not return to the better server after its restart"
    offs = [abs(e["offset_ns"]) for e in ev if e["kind"] == "offset"]
    assert statistics.median(offs) < 50_000
