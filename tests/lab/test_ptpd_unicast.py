"""Debian's ptpd 2.3.1 as a second, independent unicast peer of ptp-switch, both ways (issue 7).

ptpd runs as a unicast-negotiating slave (``-s -U -g -u SERVER``) behind the router of the `atr`
topology and asks ``ptp-switch run`` (``unicast_listen 1``) for Announce, Sync and Delay_Resp. It
never touches the system clock: ``-n`` (clock:no_adjust), clock:no_reset, leap seconds ignored,
and — enforced by the kernel, not by its options — it runs without CAP_SYS_TIME (``setpriv``
drops it from the inheritable and bounding sets, so adjtimex/clock_settime writes would fail
with EPERM). All namespaces share one kernel clock, so ptpd's "offset from master" is pure error.

Proved: grants for the three message types capped to the server's maximum, renewed by ptpd before
they expire (no expiry while it runs); ptpd reaches PTP_SLAVE with the server as best master and
counts Syncs, Follow_Ups and Delay_Resps (its status file); gRPC ListUnicastGrants shows its three
grants; a capture shows unicast Sync/Follow_Up/
Delay_Resp/Announce from the server; ptpd's offset is bounded; when ptpd stops it cancels.

The other way: ptpd as unicast-negotiating master (``-M -U -g``, same clock safety) and a
ptp-switch client (``[unicast_master_table]``, free_running) that gets the three grants from it and
synchronises (its offset is pure error too).
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time

import pytest

from tests.lab.test_atr import PTP_SWITCH, _events, _lab, _server_options, _switch

if shutil.which("ptpd") is None or shutil.which("setpriv") is None or shutil.which("tshark") is None:  # pragma: no cover
    pytest.skip("ptpd/setpriv/tshark not installed; run make setup", allow_module_level=True)

CAP_SYS_TIME = 25
# ptpd statistics line (-V): timestamp, state, clock id, one-way delay, offset from master, ...
STATS_RE = re.compile(r"^\S+ \S+, slv, \S+, +(-?\d+\.\d+), +(-?\d+\.\d+),", re.M)


PTPD_SAFE = ["setpriv", "--inh-caps", "-sys_time", "--bounding-set", "-sys_time", "--"]  # no CAP_SYS_TIME
PTPD_COMMON = ["-C", "-V", "-L", "-i", "eth0", "-n", "--clock:no_reset=Y", "--clock:leap_second_handling=ignore",
               "--clock:drift_handling=preserve", "--ptpengine:log_announce_interval=0",
               "--ptpengine:log_sync_interval=0", "--ptpengine:log_delayreq_interval=0"]


def _status(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _grpc_grants(sock: str) -> list:
    from controlplane.services import grpc_server as G

    channel = G.open_channel(f"unix:{sock}")
    try:
        return list(G.stub(channel).ListUnicastGrants(G.pb2.ListUnicastGrantsRequest(), timeout=10).grants)
    finally:
        channel.close()


def test_ptpd_negotiates_and_synchronises_to_ptp_switch_server(tmp_path):
    with _lab() as lab:
        srv_ip, cl_ip = lab.addr("srv1", "cl"), lab.addr("cl", "r1")
        cfg, srv_log, sock = lab.workdir / "srv1.cfg", lab.workdir / "srv1.jsonl", lab.workdir / "grpc.sock"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(f"[global]\ntx_timestamp_timeout 50\nuds_address {lab.uds_path('srv1', 'sw')}\n"
                       + _server_options(10, max_duration=8) + "logMinDelayReqInterval 0\n")
        lab.popen("srv1", [PTP_SWITCH, "run", "-S", "-4", "-m", "--json-log", "-f", str(cfg), "-i", "eth0",
                           "--grpc", f"unix:{sock}"], stdout=srv_log.open("w"), stderr=subprocess.STDOUT)
        pcap, status, log = tmp_path / "cl.pcapng", tmp_path / "ptpd.status", tmp_path / "ptpd.log"
        cap = lab.popen("cl", ["tshark", "-q", "-i", "eth0", "-w", str(pcap), "-a", "duration:22", "-f",
                               f"udp and host {srv_ip}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        ptpd = lab.popen("cl", [
            *PTPD_SAFE, "ptpd", *PTPD_COMMON, "-s", "-U", "-g", "-u", srv_ip,
            "--ptpengine:unicast_grant_duration=30",  # ptpd's minimum; the server caps it to 8 s
            f"--global:status_file={status}", "--global:log_status=Y", "--global:status_update_interval=1",
        ], stdout=log.open("w"), stderr=subprocess.STDOUT)
        time.sleep(1)
        with open(f"/proc/{ptpd.pid}/status") as f:
            cap_eff = int(_status(f.read())["CapEff"], 16)
        cap.wait(timeout=40)
        st = _status(status.read_text()) if status.exists() else {}
        rows = _grpc_grants(str(sock))  # the grant table over the control API while ptpd holds its grants
        ptpd.terminate()
        ptpd.wait(timeout=10)
        time.sleep(1)
        events = _events(srv_log)
        fields = lab.run("cl", ["tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e",
                                "ptp.v2.messagetype", "-e", "ptp.v2.flags.unicast"], timeout=30)
    text = log.read_text(errors="replace")
    assert not cap_eff & (1 << CAP_SYS_TIME), "ptpd must run without CAP_SYS_TIME"
    kinds = [(e.get("kind"), e.get("address"), e.get("message_type"), e.get("detail")) for e in events]
    for mtype in ("ANNOUNCE", "SYNC", "DELAY_RESP"):
        assert ("granted", cl_ip, mtype, "8 s") in kinds, kinds
        assert ("renewed", cl_ip, mtype, "8 s") in kinds, kinds  # ptpd renews before the 8 s run out
    assert {(g.role, g.address, g.duration_s) for g in rows} == {("SERVER", cl_ip, 8)}, rows
    assert len(rows) == 3 and all(g.underlying_interface == "eth0" and 0 < g.remaining_ns <= 8 * 10**9 for g in rows)
    expired_while_running = [k for k in kinds if k[0] == "expired"]
    assert not expired_while_running, expired_while_running
    assert st.get("Port state") == "PTP_SLAVE", (st, text[-2000:])
    assert st.get("Best master IP") == srv_ip, st
    for counter in ("Sync received", "Follow-up received", "DelayResp received"):
        assert int(st.get(counter, "0")) >= 8, (counter, st)
    sent = {}
    for src, dst, mtype, unicast in (r.split("\t") for r in fields.stdout.splitlines() if r.count("\t") == 3):
        if src == srv_ip and dst == cl_ip:
            assert unicast in ("1", "True"), (mtype, unicast)
            sent[int(mtype, 16)] = sent.get(int(mtype, 16), 0) + 1
    assert all(sent.get(t, 0) >= 8 for t in (0x0, 0x8, 0x9, 0xB)), sent  # Sync, Follow_Up, Delay_Resp, Announce
    offsets = [float(m.group(2)) * 1e9 for m in STATS_RE.finditer(text)]
    assert len(offsets) >= 10, text[-2000:]
    steady = offsets[len(offsets) // 3:]
    print(f"ptpd via ptp-switch: {len(offsets)} offsets, steady median |offset| "
          f"{statistics.median(abs(o) for o in steady):.0f} ns, max {max(abs(o) for o in steady):.0f} ns; sent {sent}")
    assert statistics.median(abs(o) for o in steady) < 50_000, steady  # bridge + router, software stamps
    assert max(abs(o) for o in steady) < 500_000, steady
    canceled = [k for k in kinds if k[0] == "canceled_by_client"]
    assert canceled, "ptpd did not cancel its grants when stopped"


def test_ptp_switch_client_negotiates_with_ptpd_master(tmp_path):
    with _lab() as lab:
        srv_ip = lab.addr("srv1", "cl")
        log, status = tmp_path / "ptpd.log", tmp_path / "ptpd.status"
        ptpd = lab.popen("srv1", [*PTPD_SAFE, "ptpd", *PTPD_COMMON, "-M", "-U", "-g", "--ptpengine:priority1=10",
                                  f"--global:status_file={status}", "--global:log_status=Y"],
                         stdout=log.open("w"), stderr=subprocess.STDOUT)
        time.sleep(1)
        with open(f"/proc/{ptpd.pid}/status") as f:
            cap_eff = int(_status(f.read())["CapEff"], 16)
        _, cl_log = _switch(lab, "cl", f"""slaveOnly 1
free_running 1
logAnnounceInterval 0
announceReceiptTimeout 3
logSyncInterval 0
logMinDelayReqInterval 0
unicast_req_duration 60
[unicast_master_table]
table_id 1
logQueryInterval 0
UDPv4 {srv_ip}
[eth0]
unicast_master_table 1
""")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = _events(cl_log)
            if len([e for e in events if e.get("kind") == "offset"]) >= 10:
                break
            time.sleep(0.5)
        st = _status(status.read_text()) if status.exists() else {}
    assert not cap_eff & (1 << CAP_SYS_TIME), "ptpd must run without CAP_SYS_TIME"
    kinds = {(e.get("kind"), e.get("address"), e.get("message_type")) for e in events}
    for mtype in ("ANNOUNCE", "SYNC", "DELAY_RESP"):
        assert ("granted", srv_ip, mtype) in kinds, sorted(k for k in kinds if k[0])
    assert ("active_server", srv_ip, None) in kinds
    assert st.get("Port state") == "PTP_MASTER", (st, log.read_text(errors="replace")[-2000:])
    offsets = [e["offset_ns"] for e in events if e.get("kind") == "offset"]
    assert len(offsets) >= 10, cl_log.read_text()[-3000:]
    steady = offsets[3:]
    print(f"ptp-switch client of ptpd: {len(offsets)} offsets, steady median |offset| "
          f"{statistics.median(abs(o) for o in steady):.0f} ns, max {max(abs(o) for o in steady):.0f} ns")
    assert statistics.median(abs(o) for o in steady) < 50_000, steady
    assert max(abs(o) for o in steady) < 500_000, steady
