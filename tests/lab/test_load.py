"""Load against a RUNNING daemon: management and negotiation floods, a flapping port (issue 10).

Lab ``gm sw1 sl | sw1 ps | sw1 atk``: a plain bridge sw1; on gm the ptp-switch daemon as grandmaster
(OC, UDPv4, unicast_listen 1 so it negotiates); on sl a free-running ptp4l slave (its offset is its
error: every namespace shares one kernel clock); on atk the attacker, this file run as a script
(``python tests/lab/test_load.py flood ...``): AF_PACKET frames, management GETs from its own address
and Signaling (REQUEST_UNICAST_TRANSMISSION, valid and bogus TLVs) from thousands of forged source
addresses (on-link and off-link) at a paced rate.

Asserted: the legitimate slave keeps its offset bounded and its Syncs flowing during both floods, the
daemon's RSS stays bounded, its drops are counted and logged ("rate limit dropped ..."), the
management responses the attacker gets are capped near the configured rate, the daemon's port never
goes FAULTY, and after the floods the slave's pmc (network) still gets answers.
Port flapping: a ptp-switch OC slave (``ps``) whose link goes down/up every second for 60 s: the daemon survives (no traceback, fd count and RSS bounded) and re-locks.
Figures are printed (``pytest -s``) and written to /tmp/ptp-switch-load.json.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __name__ != "__main__":
    import pytest

    from topologies import ptp4l as p4

    if shutil.which("ptp4l") is None:  # pragma: no cover - setup installs linuxptp
        pytest.skip("linuxptp not installed; run make setup", allow_module_level=True)

PTP_SWITCH = str(Path(sys.executable).with_name("ptp-switch"))
OUT = Path("/tmp/ptp-switch-load.json")
TOPO = "gm sw1 sl | sw1 ps | sw1 atk"
SW_LINE = re.compile(r"ptp-switch\[(\d+\.\d+)\]: (.*)$")
SW_OFFSET = re.compile(r"master offset\s+(-?\d+) s(\d)")
TRUTH = re.compile(r"lab: clock error (-?\d+) ns")
RELOCK_NS = 20_000  # lab truth after a flap: the floor through a bridge with software stamps is ~3 us rms, max ~10 us
STEADY_MAX_NS = 100_000  # generous: the lab's floor is ~1 us rms; shared 2-vCPU machine


# ----------------------------------------------------------------------------------------------
# the attacker (runs in the atk namespace as a script)
# ----------------------------------------------------------------------------------------------
def _mgmt_frames(src_ip: str, src_mac: bytes, dst_ip: str, dst_mac: bytes) -> list[bytes]:
    from controlplane.codec import encode
    from controlplane.codec import management as cm
    from controlplane.codec.enums import ManagementAction, ManagementId
    from controlplane.codec.frames import build_udp4_frame
    from controlplane.codec.header import Header
    from controlplane.codec.messages import Management
    from controlplane.codec.types import ALL_CLOCKS, ALL_PORTS, PortIdentity

    out = []
    ids = (ManagementId.DEFAULT_DATA_SET, ManagementId.CURRENT_DATA_SET, ManagementId.PARENT_DATA_SET,
           ManagementId.PORT_DATA_SET, ManagementId.TIME_PROPERTIES_DATA_SET)
    for i, mid in enumerate(ids * 8):
        msg = Management(Header(sequence_id=i, source_port_identity=PortIdentity(b"\x06\x66" + src_mac, 1),
                                log_message_interval=0x7F),
                         PortIdentity(ALL_CLOCKS, ALL_PORTS), 1, 1, ManagementAction.GET, tlvs=(cm.ManagementTlv(mid, None),))
        out.append(build_udp4_frame(encode(msg), src_ip, dst_ip, src_mac, dst_mac, 320, 320, ident=i))
    return out


def _signaling_frames(rng: random.Random, n: int, dst_ip: str, dst_mac: bytes, onlink: float) -> list[bytes]:
    from controlplane.codec import encode
    from controlplane.codec.frames import build_udp4_frame
    from controlplane.codec.header import Header
    from controlplane.codec.messages import Signaling
    from controlplane.codec.tlv import (
        CancelUnicastTransmissionTlv,
        RequestUnicastTransmissionTlv,
        UnknownTlv,
    )
    from controlplane.codec.types import PortIdentity

    out = []
    for i in range(n):
        r = rng.random()
        if r < onlink:  # on-link forged addresses (the kernel will ARP for them and give up)
            src_ip = f"10.251.1.{rng.randrange(20, 250)}"
        elif r < onlink + (1 - onlink) * 0.6:  # off-link: the daemon's reply has no route
            src_ip = f"10.{rng.randrange(0, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        else:
            src_ip = f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        mac = bytes([0x02, 0x42]) + rng.randbytes(4)
        tlvs: list[Any] = []
        for _ in range(rng.randrange(1, 4)):
            k = rng.random()
            if k < 0.6:
                tlvs.append(RequestUnicastTransmissionTlv(rng.choice((0x0, 0xB, 0x9, 0x3, rng.randrange(16))),
                                                          rng.randrange(-10, 10), rng.choice((0, 10, 300, 2**32 - 1))))
            elif k < 0.8:
                tlvs.append(CancelUnicastTransmissionTlv(rng.choice((0x0, 0xB, 0x9))))
            else:
                tlvs.append(UnknownTlv(rng.choice((0x7FFF, 0x2004, 0x0003, 0x8001)), rng.randbytes(rng.randrange(0, 40) * 2)))
        hdr = Header(message_type=0xC, sequence_id=i & 0xFFFF, source_port_identity=PortIdentity(rng.randbytes(8), 1),
                     log_message_interval=0x7F, unicast=True)
        data = encode(Signaling(hdr, PortIdentity(b"\xff" * 8, 0xFFFF), tuple(tlvs)))
        if rng.random() < 0.1:  # bogus lengths too
            data = data[: rng.randrange(34, len(data))]
        out.append(build_udp4_frame(data, src_ip, dst_ip, mac, dst_mac, 320, 320, ident=i & 0xFFFF))
    return out


def flood_main(argv: list[str]) -> int:
    """flood KIND IFNAME SRC_IP DST_IP DST_MAC RATE DURATION_S OUT_JSON"""
    kind, ifname, src_ip, dst_ip, dst_mac_s, rate_s, dur_s, out = argv
    from controlplane.codec.frames import parse_frame, parse_mac

    rate, duration = float(rate_s), float(dur_s)
    dst_mac = parse_mac(dst_mac_s)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((ifname, 0))
    src_mac = s.getsockname()[4]
    rng = random.Random(7)
    if kind == "mgmt":
        frames = _mgmt_frames(src_ip, src_mac, dst_ip, dst_mac)
    else:  # signaling (half the forged sources on-link), signaling_offlink, signaling_onlink
        onlink = 1.0 if kind.endswith("_onlink") else 0.0 if kind.endswith("_offlink") else 0.5
        frames = _signaling_frames(rng, 4096, dst_ip, dst_mac, onlink)
    got = {"management": 0, "signaling": 0}
    stop = threading.Event()

    def receive() -> None:
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                data, addr = s.recvfrom(2048)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            f = parse_frame(data)
            if f is not None and f.src_ip == dst_ip and f.ptp:
                t = f.ptp[0] & 0x0F
                if t == 0xD:
                    got["management"] += 1
                elif t == 0xC:
                    got["signaling"] += 1

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    sent = 0
    t0 = time.monotonic()
    batch = max(1, int(rate / 200))
    while True:
        now = time.monotonic() - t0
        if now >= duration:
            break
        due = int(now * rate)
        while sent < due:
            for _ in range(batch):
                try:
                    s.send(frames[sent % len(frames)])
                except OSError:
                    pass
                sent += 1
        time.sleep(0.002)
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    stop.set()
    rx.join(timeout=2)
    Path(out).write_text(json.dumps({"kind": kind, "sent": sent, "elapsed_s": round(elapsed, 3),
                                     "rate_per_s": round(sent / elapsed), "responses": got}))
    return 0


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _mac(lab, node: str, ifname: str) -> str:
    return json.loads(lab.run(node, ["ip", "-j", "link", "show", ifname], check=True).stdout)[0]["address"]


def _start_daemon(lab, node: str, options: dict[str, str], args: list[str], tag: str = "sw"):
    uds = lab.uds_path(node, tag)
    cfg = lab.workdir / f"{tag}-{node}.cfg"
    common = {k: v for k, v in p4.COMMON.items() if k not in ("free_running", "freq_est_interval")}
    cfg.write_text("[global]\n" + "".join(f"{k}\t\t{v}\n" for k, v in {**common, **options}.items())
                   + f"uds_address\t\t{uds}\n")
    log = lab.workdir / f"{tag}-{node}.log"
    argv = [PTP_SWITCH, "run", "-m", "-4", "-f", str(cfg), "-i", "eth0", *args]
    proc = lab.popen(node, argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, log


def _sw_lines(log: Path) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = SW_LINE.match(line.strip())
        if m:
            out.append((float(m.group(1)), m.group(2)))
    return out


def _window(samples, t0: float, t1: float):
    return [s for s in samples if t0 <= s.t_s < t1]


def _max_gap(samples, t0: float, t1: float) -> float:
    ts = [t0] + [s.t_s for s in _window(samples, t0, t1)] + [t1]
    return max(b - a for a, b in zip(ts, ts[1:]))


def _summary(samples, t0: float, t1: float) -> dict:
    w = _window(samples, t0, t1)
    return {"samples": len(w), "max_abs_offset_ns": max((abs(s.offset_ns) for s in w), default=None),
            "rms_ns": round(math.sqrt(sum(s.offset_ns ** 2 for s in w) / len(w))) if w else None,
            "max_gap_s": round(_max_gap(samples, t0, t1), 2)}


def _record(name: str, result: dict) -> None:
    try:
        all_results = json.loads(OUT.read_text())
    except (OSError, ValueError):
        all_results = {}
    all_results[name] = result
    OUT.write_text(json.dumps(all_results, indent=2))


def _flood(lab, kind: str, dst_ip: str, dst_mac: str, rate: int, duration_s: float) -> tuple[subprocess.Popen, Path]:
    out = lab.workdir / f"flood-{kind}.json"
    proc = lab.popen("atk", [sys.executable, str(Path(__file__).resolve()), "flood", kind, "eth0", lab.addr("atk", "sw1"),
                             dst_ip, dst_mac, str(rate), str(duration_s), str(out)],
                     stdout=(lab.workdir / f"flood-{kind}.log").open("w"), stderr=subprocess.STDOUT,
                     env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return proc, out


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------
MGMT_RATE = 4000       # attacker's management GETs per second (one source)
SIG_RATE = 4000        # attacker's signaling messages per second (forged sources)
FLOOD_S = 8.0


def test_attacker_script_starts_outside_pytest():
    """The attacker is this file run as a script: a module-level ``@pytest.mark`` (pytest is not
    imported then) once made it die before writing its result."""
    r = subprocess.run([sys.executable, str(Path(__file__).resolve())], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert "usage:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_floods_keep_the_legitimate_slave_served(make_lab):
    """The recommended configuration for a unicast server on a segment with untrusted hosts: an
    allow-list (here the one legitimate client's address) and the default rate limits."""
    _flood_test(make_lab, {"unicast_allow": "10.251.1.2/32"}, "floods")


if __name__ != "__main__":
    @pytest.mark.slow
    def test_floods_without_allow_list_keep_the_slave_served(make_lab):
        """unicast_listen without unicast_allow: forged REQUESTs get grants, and each grant streams
        Sync/Announce/Delay_Resp to an address that never answers ARP. Those datagrams used to wait in
        the kernel's neighbour queues charged to the port's sockets until their send buffers were full
        (EAGAIN) and the multicast slave lost its Syncs for the flood's duration (a strict xfail until
        the UDP transports' neighbour gate, controlplane/runtime/neighbours.py)."""
        _flood_test(make_lab, {}, "floods_no_allow_list")


def _flood_test(make_lab, options: dict[str, str], name: str) -> None:
    lab = make_lab(TOPO)
    gm_ip = lab.addr("gm", "sw1")
    daemon, dlog = _start_daemon(lab, "gm", {"priority1": "10", "unicast_listen": "1", **options}, [])
    sl = p4.start_ptp4l(lab, "sl", "slave", transport="-4")
    floods: list[subprocess.Popen] = []
    result: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(p4.parse_offsets(sl.text())) < 6:
            time.sleep(0.5)
        assert len(p4.parse_offsets(sl.text())) >= 6, sl.text()[-2000:] + dlog.read_text(errors="replace")[-2000:]
        pid = daemon.pid
        gm_mac = _mac(lab, "gm", "eth0")
        rss0 = _rss_kib(pid)
        t_base = time.monotonic()
        cpu0 = _cpu_s(pid)
        time.sleep(4)
        marks = {"baseline": (t_base, time.monotonic())}
        cpu = {"baseline": (_cpu_s(pid) - cpu0) / (time.monotonic() - t_base)}
        rss = {"start": rss0}
        flood_out = {}
        for kind, rate in (("mgmt", MGMT_RATE), ("signaling", SIG_RATE)):  # signaling: bogus TLVs, forged sources
            t, c = time.monotonic(), _cpu_s(pid)
            proc, out = _flood(lab, kind, gm_ip, gm_mac, rate, FLOOD_S)
            floods.append(proc)
            proc.wait(timeout=FLOOD_S + 30)
            marks[kind] = (t + 0.5, time.monotonic())
            cpu[kind] = (_cpu_s(pid) - c) / (time.monotonic() - t)
            rss[kind] = _rss_kib(pid)
            log = out.with_suffix(".log")
            assert out.exists(), (f"attacker {kind} exited {proc.returncode} without a result", log.read_text(errors="replace")[-3000:])
            flood_out[kind] = json.loads(out.read_text())
            assert daemon.poll() is None, dlog.read_text(errors="replace")[-3000:]
        # after the floods: the network management path still answers the legitimate peer
        pmc = lab.run("sl", ["pmc", "-4", "-i", "eth0", "-b", "0", "-d", "0", "-s", lab.uds_path("sl", "pmcnet"), "-t", "1",
                             "GET DEFAULT_DATA_SET"], timeout=20).stdout
        time.sleep(2)
        marks["after"] = (marks["signaling"][1], time.monotonic())
    finally:
        for p in floods:
            if p.poll() is None:
                p.kill()
        text = sl.stop()
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.copy(dlog, "/tmp/ptp-switch-load-gm.log")
    samples = p4.parse_offsets(text)
    dtext = dlog.read_text(errors="replace")
    drops = [msg for _, msg in _sw_lines(dlog) if "rate limit dropped" in msg]
    stopped = re.search(r"rate-limited (\d+)", dtext)
    result = {k: _summary(samples, *v) for k, v in marks.items()}
    result.update(daemon_cpu=dict((k, round(v, 3)) for k, v in cpu.items()), daemon_rss_kib=rss, floods=flood_out,
                  rate_limited_total=int(stopped.group(1)) if stopped else None, drop_log_lines=len(drops))
    _record(name, result)
    print(json.dumps(result, indent=1))

    assert result["baseline"]["samples"] >= 3 and result["baseline"]["max_abs_offset_ns"] < STEADY_MAX_NS, result
    for kind in ("mgmt", "signaling"):
        r = result[kind]
        # ptp4l logs one offset a second here: the slave keeps being served (no gap, bounded error)
        assert r["samples"] >= (FLOOD_S - 1) * 0.7 and r["max_gap_s"] < 2.5, (kind, r)
        assert r["max_abs_offset_ns"] < STEADY_MAX_NS, (kind, r)
        assert flood_out[kind]["sent"] >= 0.5 * FLOOD_S * (MGMT_RATE if kind == "mgmt" else SIG_RATE), flood_out[kind]
    # the attacker got at most ~the per-source budget (default: burst 20 + 10/s) of management responses
    assert flood_out["mgmt"]["responses"]["management"] <= 20 + 10 * (FLOOD_S + 1) + 10, flood_out["mgmt"]
    assert drops and "management" in " ".join(drops) and "signaling" in " ".join(drops), drops
    assert result["rate_limited_total"] is not None and result["rate_limited_total"] >= 0.9 * flood_out["mgmt"]["sent"], result
    assert rss["signaling"] - rss["start"] < 40 * 1024, rss  # bounded memory (KiB)
    assert "FAULT" not in dtext, [line for line in dtext.splitlines() if "FAULT" in line][:5]
    assert "Exception in callback" not in dtext, dtext[-3000:]  # nothing escapes the event loop
    assert "RESPONSE MANAGEMENT DEFAULT_DATA_SET" in pmc and "priority1" in pmc, pmc


def _flap_test(make_lab, duration_s: int) -> None:
    lab = make_lab(TOPO)
    daemon, dlog = _start_daemon(lab, "gm", {"priority1": "10"}, [], tag="gm")
    opts = {"slaveOnly": "1", "priority1": "200", "pi_proportional_scale": "0.7", "pi_integral_scale": "0.3"}
    ps, plog = _start_daemon(lab, "ps", opts, ["-s", "--lab-truth"], tag="ps")
    try:
        # flapping starts from a locked slave: SLAVE for 15 s, the true error under RELOCK_NS for the last
        # 10 s (counting truth lines alone started it before the first lock under CI load: the first-lock
        # swing then showed as 150 us "during the flapping"). The flaps and the 1 s Announces beat: for
        # ~20 s at a time every Announce lands in a down half-second and the slave is in holdover on
        # the frequency it learned here (a 9 s lock held -6 ppm: 117 us after 20 s)
        deadline = time.monotonic() + 90
        locked = False
        while time.monotonic() < deadline and not locked:
            time.sleep(0.5)
            lines = _sw_lines(plog)
            t_slave = next((t for t, m in lines if "to SLAVE" in m), None)
            truth = [abs(int(TRUTH.search(m).group(1))) for t, m in lines
                     if t_slave is not None and t > t_slave and TRUTH.search(m)]
            locked = len(truth) >= 15 and all(e < RELOCK_NS for e in truth[-10:])
        assert locked, plog.read_text(errors="replace")[-3000:]
        pid = ps.pid
        fds0, rss0 = _fds(pid), _rss_kib(pid)
        t0 = time.monotonic()
        flaps = 0
        while time.monotonic() - t0 < duration_s:
            lab.run("ps", ["ip", "link", "set", "dev", "eth0", "down"], check=True)
            time.sleep(0.5)
            lab.run("ps", ["ip", "link", "set", "dev", "eth0", "up"], check=True)
            flaps += 1
            time.sleep(0.5)
        t_end = time.monotonic()
        fds1, rss1 = _fds(pid), _rss_kib(pid)
        alive = ps.poll() is None
        # re-lock: the true error (lab truth, once a second) back under RELOCK_NS for 3 seconds in a row
        relock = None
        deadline = t_end + 30
        while time.monotonic() < deadline and relock is None:
            time.sleep(1)
            truth = [(t, int(TRUTH.search(m).group(1))) for t, m in _sw_lines(plog) if t > t_end and TRUTH.search(m)]
            for i in range(len(truth) - 2):
                if all(abs(e) < RELOCK_NS for _, e in truth[i:i + 3]):
                    relock = truth[i][0] - t_end
                    break
    finally:
        for p in (ps, daemon):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.copy(plog, "/tmp/ptp-switch-load-flap.log")
    text = plog.read_text(errors="replace")
    faults = sum("to FAULTY" in m for _, m in _sw_lines(plog) if t0 <= _ < t_end)
    truth = [(t, int(TRUTH.search(m).group(1))) for t, m in _sw_lines(plog) if TRUTH.search(m)]
    during = [abs(e) for t, e in truth if t0 <= t < t_end]
    after = [abs(e) for t, e in truth if t >= t_end]
    result = {"duration_s": duration_s, "flaps": flaps, "faulty_transitions": faults, "fds": [fds0, fds1],
              "rss_kib": [rss0, rss1], "relock_s": None if relock is None else round(relock, 2),
              "max_true_error_during_ns": max(during, default=None),
              "max_true_error_after_ns": max(after, default=None)}
    _record(f"flap_{duration_s}s", result)
    print(json.dumps(result))
    assert alive and "Traceback" not in text, text[-3000:]
    assert flaps >= duration_s * 0.8, result
    assert fds1 <= fds0 + 4 and rss1 - rss0 < 20 * 1024, result
    assert max(during, default=0) < STEADY_MAX_NS, result
    assert relock is not None and relock < 20, result


def test_port_flapping_every_second_for_a_minute(make_lab):
    """Issue 10 names "a port flapping every second for a minute": 60 flaps, in make test (~80 s)."""
    _flap_test(make_lab, 60)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    if len(sys.argv) >= 2 and sys.argv[1] == "flood":
        raise SystemExit(flood_main(sys.argv[2:]))
    raise SystemExit(f"usage: {sys.argv[0]} flood KIND IFNAME SRC_IP DST_IP DST_MAC RATE DURATION_S OUT_JSON")
