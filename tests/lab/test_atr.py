"""1588 ATR with the real daemon (`ptp-switch run`), on the `atr` topology (servers on one segment,
a router, the clients behind it). Issue 7's lab proofs.

Real parts: network namespaces, the kernel's UDP stack and software timestamps, linuxptp 3.1.1
(ptp4l as unicast client with free_running 1 — its offset is pure error since every namespace
shares one kernel clock — and as unicast servers), tshark captures, and ptp-switch itself with
``unicast_listen 1`` / a ``[unicast_master_table]``. Every process and namespace is removed by
the Lab context manager, also on failure.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import time

import pytest

from topologies import catalog
from topologies.netns import Lab, LabError

if shutil.which("ptp4l") is None or shutil.which("tshark") is None:  # pragma: no cover - setup installs them
    pytest.skip("linuxptp/tshark not installed; run make setup", allow_module_level=True)

PTP_SWITCH = str(pathlib.Path(sys.executable).with_name("ptp-switch"))
OFFSET_RE = re.compile(r"ptp4l\[(\d+\.\d+)\]: master offset\s+(-?\d+) s\d")
SW_OFFSET_RE = re.compile(r"master offset\s+(-?\d+) s\d")
UNICAST_RE = re.compile(r"port \d+ \(\S+\): unicast (\S+) (\S+)(?: ([A-Z_]+))?(?: \((.*)\))?$")
# two clients behind the router: ptp-switch on cl, linuxptp on cl2 (same paths, same servers)
ATR2 = "srv1@10 sw1 | srv2@20 sw1 | sw1 r1 cl | r1 cl2"


def _lab(spec: str = "atr") -> Lab:
    """Build the lab; retry when the build hits a concurrent run (a namespace vanished mid-build)."""
    for attempt in range(6):
        lab = Lab(catalog.get(spec))
        try:
            return lab.up()
        except (LabError, IndexError, OSError):
            if attempt == 5:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _switch(lab: Lab, node: str, options: str, tag: str = "sw") -> tuple[subprocess.Popen, pathlib.Path]:
    cfg = lab.workdir / f"{tag}-{node}.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"[global]\ntx_timestamp_timeout 50\nuds_address {lab.uds_path(node, tag)}\n{options}")
    log = lab.workdir / f"{tag}-{node}.jsonl"
    proc = lab.popen(node, [PTP_SWITCH, "run", "-S", "-4", "-m", "--json-log", "-f", str(cfg), "-i", "eth0"],
                     stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, log


def _server_options(priority1: int = 10, *, max_duration: int = 4, allow: str = "") -> str:
    return f"""priority1 {priority1}
logAnnounceInterval 0
announceReceiptTimeout 3
logSyncInterval 0
unicast_listen 1
inhibit_multicast_service 1
unicast_min_duration 1
unicast_max_duration {max_duration}
{f"unicast_allow {allow}" if allow else ""}
"""


def _events(log: pathlib.Path) -> list[dict]:
    """The daemon's JSON log lines; unicast events parsed into kind/address/message_type/detail."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        m = UNICAST_RE.search(rec.get("msg", ""))
        if m:
            rec.update(kind=m.group(1), address=m.group(2), message_type=m.group(3), detail=m.group(4) or "")
        o = SW_OFFSET_RE.search(rec.get("msg", ""))
        if o:
            rec.update(kind="offset", offset_ns=int(o.group(1)))
        out.append(rec)
    return out


def _ptp4l_client_cfg(lab: Lab, node: str, servers: list[str], req_duration: int = 10) -> str:
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
uds_address {lab.uds_path(node)}
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


def _ptp4l(lab: Lab, node: str, cfg: str, log: pathlib.Path) -> subprocess.Popen:
    cfg_path = lab.workdir / f"{node}-{log.stem}.cfg"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(cfg)
    return lab.popen(node, ["ptp4l", "-i", "eth0", "-S", "-4", "-m", "-f", str(cfg_path)],
                     stdout=log.open("w"), stderr=subprocess.STDOUT)


def _offsets(log: pathlib.Path) -> list[tuple[float, int]]:
    """(monotonic s, offset ns) of a ptp4l log."""
    return [(float(m.group(1)), int(m.group(2))) for m in OFFSET_RE.finditer(log.read_text(errors="replace"))]


def test_linuxptp_client_gets_capped_grants_syncs_and_renews(tmp_path):
    with _lab() as lab:
        assert lab.ping("cl", "srv1")
        _, srv_log = _switch(lab, "srv1", _server_options(10, max_duration=4))
        cl_log = tmp_path / "cl.log"
        # the client asks for 10 s; the server caps at 4 s -> renewals every 3 s
        _ptp4l(lab, "cl", _ptp4l_client_cfg(lab, "cl", [lab.addr("srv1", "cl")]), cl_log)
        time.sleep(24)
        events = _events(srv_log)
        offsets = [o for _, o in _offsets(cl_log)]
    kinds = [(e.get("kind"), e.get("message_type")) for e in events]
    for mtype in ("ANNOUNCE", "SYNC", "DELAY_RESP"):
        assert ("granted", mtype) in kinds, kinds
        assert kinds.count(("renewed", mtype)) >= 3, kinds  # >= 2 grant periods of 4 s
    assert all(e["detail"] == "4 s" for e in events if e.get("kind") in ("granted", "renewed")), "capped to 4 s"
    assert len(offsets) >= 12, cl_log.read_text()[-2000:]
    steady = offsets[4:]
    # a bridge and a router between them, software stamps: generous bounds (ANCHORS: bridge rms ~3 us)
    assert statistics.median(abs(o) for o in steady) < 50_000, steady
    assert max(abs(o) for o in steady) < 500_000, steady


def test_allow_list_denies_client_outside(tmp_path):
    with _lab() as lab:
        _, srv_log = _switch(lab, "srv1", _server_options(10, allow="10.251.1.0/24,fd00::/8"))
        cl_log = tmp_path / "cl.log"
        _ptp4l(lab, "cl", _ptp4l_client_cfg(lab, "cl", [lab.addr("srv1", "cl")]), cl_log)
        time.sleep(7)
        events = _events(srv_log)
        offsets = _offsets(cl_log)
    denied = [e for e in events if e.get("kind") == "denied"]
    assert denied and all(e["detail"] == "not_allowed" for e in denied), events[-10:]
    assert not [e for e in events if e.get("kind") == "granted"]
    assert offsets == []


def test_no_message_reaches_client_after_grant_expiry(tmp_path):
    """Kill the linuxptp client (no CANCEL): the server must stop exactly at expiry; tshark proves it."""
    with _lab() as lab:
        pcap = tmp_path / "cl.pcapng"
        srv_ip = lab.addr("srv1", "cl")
        _, srv_log = _switch(lab, "srv1", _server_options(10, max_duration=4))
        cl_log = tmp_path / "cl.log"
        client = _ptp4l(lab, "cl", _ptp4l_client_cfg(lab, "cl", [srv_ip]), cl_log)
        deadline = time.monotonic() + 20
        while not _offsets(cl_log) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _offsets(cl_log), "client never synchronised"
        cap = lab.popen("cl", ["tshark", "-q", "-i", "eth0", "-w", str(pcap), "-a", "duration:9", "-f",
                               f"udp and src host {srv_ip}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        client.kill()
        client.wait(timeout=5)
        cap.wait(timeout=20)
        events = _events(srv_log)
        fields = lab.run("cl", ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_epoch", "-e",
                                "ptp.v2.messagetype"], timeout=30)
    rows = [line.split("\t") for line in fields.stdout.splitlines() if line.strip()]
    times_ns = [int(float(r[0]) * 1e9) for r in rows]
    assert times_ns, "capture is empty: the server never sent anything while the client lived"
    expired = [e for e in events if e.get("kind") == "expired"]
    assert {e["message_type"] for e in expired} >= {"SYNC", "ANNOUNCE", "DELAY_RESP"}, events[-8:]
    last_expiry_ns = int(max(e["ts"] for e in expired) * 1e9)
    # nothing from the server after its last grant expired (5 ms for the path and the log line)
    late = [t for t in times_ns if t > last_expiry_ns + 5_000_000]
    assert late == [], f"{len(late)} packets after expiry"
    assert last_expiry_ns + 2_000_000_000 < times_ns[0] + 9_000_000_000  # the capture outlived the expiry by 2 s


def _ptp4l_identity(log: pathlib.Path) -> str | None:
    m = re.search(r"selected local clock (\S+) as best master", log.read_text(errors="replace"))
    return m.group(1) if m else None


def _linuxptp_failover_s(log: pathlib.Path, kill_mono: float, new_identity: str | None) -> float | None:
    """From the kill to the linuxptp client's first offset after it selected the other server."""
    text = log.read_text(errors="replace")
    sel = [float(m.group(1)) for m in re.finditer(r"ptp4l\[(\d+\.\d+)\]: selected best master clock (\S+)", text)
           if float(m.group(1)) > kill_mono and (new_identity is None or m.group(2) == new_identity)]
    if not sel:
        return None
    after = [t for t, _ in _offsets(log) if t > sel[0]]
    return after[0] - kill_mono if after else None


def test_ptp_switch_client_fails_over_between_linuxptp_servers(tmp_path):
    """ptp-switch client on cl and a linuxptp client on cl2, both with servers srv1 (better) and srv2."""
    with _lab(ATR2) as lab:
        s1, s2 = lab.addr("srv1", "r1"), lab.addr("srv2", "r1")
        p1 = _ptp4l(lab, "srv1", _ptp4l_server_cfg(lab, "srv1", 10), tmp_path / "srv1.log")
        _ptp4l(lab, "srv2", _ptp4l_server_cfg(lab, "srv2", 20), tmp_path / "srv2.log")
        time.sleep(1)
        _, cl_log = _switch(lab, "cl", f"""slaveOnly 1
free_running 1
logAnnounceInterval 0
announceReceiptTimeout 3
logSyncInterval 0
logMinDelayReqInterval 0
unicast_req_duration 20
[unicast_master_table]
table_id 1
logQueryInterval 0
UDPv4 {s1}
UDPv4 {s2}
[eth0]
unicast_master_table 1
""")
        cl2_log = tmp_path / "cl2.log"
        _ptp4l(lab, "cl2", _ptp4l_client_cfg(lab, "cl2", [s1, s2], req_duration=20), cl2_log)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            ev = _events(cl_log)
            if len([e for e in ev if e.get("kind") == "offset"]) >= 5:
                break
            time.sleep(0.5)
        offs = [e for e in ev if e.get("kind") == "offset"]
        assert len(offs) >= 5, cl_log.read_text()[-3000:]
        active = [e["address"] for e in ev if e.get("kind") == "active_server"]
        assert active and active[-1] == s1, active
        kill_wall, kill_mono = time.time(), time.monotonic()
        p1.kill()
        p1.wait(timeout=5)
        time.sleep(9)
        ev = _events(cl_log)
        to_s2 = [e for e in ev if e.get("kind") == "active_server" and e["address"] == s2 and e["ts"] > kill_wall]
        assert to_s2, cl_log.read_text()[-3000:]
        first = [e for e in ev if e.get("kind") == "offset" and e["ts"] > to_s2[0]["ts"]]
        assert first, cl_log.read_text()[-3000:]
        failover_s = first[0]["ts"] - kill_wall
        linuxptp_s = _linuxptp_failover_s(cl2_log, kill_mono, _ptp4l_identity(tmp_path / "srv2.log"))
        # restart the better server: the client (revertive) returns to it
        restart_wall = time.time()
        _ptp4l(lab, "srv1", _ptp4l_server_cfg(lab, "srv1", 10), tmp_path / "srv1b.log")
        time.sleep(10)
        ev = _events(cl_log)
    back = [e for e in ev if e.get("kind") == "active_server" and e["address"] == s1 and e["ts"] > restart_wall]
    print(f"failover kill -> first offset from the other server: ptp-switch {failover_s:.2f} s, "
          f"linuxptp {'stuck/none' if linuxptp_s is None else f'{linuxptp_s:.2f} s'}")
    assert failover_s < 4.6  # linuxptp 3.1.1 in this lab: 4.6-5.7 s (ANCHORS.md) when it does not get stuck
    if linuxptp_s is not None:
        assert failover_s <= linuxptp_s + 0.25, (failover_s, linuxptp_s)
    assert back, "did not return to the better server after its restart"
    assert [e for e in ev if e.get("kind") == "offset" and e["ts"] > back[0]["ts"]], "no offsets after the return"
    steady = [abs(e["offset_ns"]) for e in ev if e.get("kind") == "offset"]
    assert statistics.median(steady) < 50_000
