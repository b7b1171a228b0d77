"""`ptp-switch decode`: text and --json output over the golden captures, undecodable frames
reported with the reason (never skipped), user errors as CliError (exit 2, no traceback)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from controlplane.codec import Sync, Header, Timestamp, encode
from controlplane.codec.frames import build_l2_frame, build_udp4_frame
from controlplane.codec.pcap import read_capture, write_pcap
from controlplane.services.cli import main

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["decode", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_lines_for_every_message(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN / "udpv4_e2e.pcap"
    rc, out, err = run(capsys, str(path), "--json")
    assert rc == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(read_capture(path.read_bytes()))
    assert "0 undecodable" in err and f"{len(lines)} PTP messages decoded" in err
    assert [o["frame"] for o in lines] == list(range(1, len(lines) + 1))
    types = {o["message_type"] for o in lines}
    assert {"SYNC", "FOLLOW_UP", "DELAY_REQ", "DELAY_RESP", "ANNOUNCE", "MANAGEMENT"} <= types
    ann = next(o for o in lines if o["message_type"] == "ANNOUNCE")
    assert ann["grandmaster_identity"] == "02005e.fffe.770001" and ann["transport"] == "UDPv4"
    assert ann["src"] == "10.77.0.1:320" and ann["dst"] == "224.0.1.129:320"
    assert ann["header"]["domain_number"] == 24 and ann["header"]["source_port_identity"]["port_number"] == 1
    fu = next(o for o in lines if o["message_type"] == "FOLLOW_UP")
    assert set(fu["precise_origin_timestamp"]) == {"seconds", "nanoseconds"}
    assert float(fu["timestamp"]) > 1.7e9
    resp = [o for o in lines if o["message_type"] == "MANAGEMENT" and o["action_field"] == "RESPONSE"]
    ids = {o["tlvs"][0].get("management_id") for o in resp}
    assert {"DEFAULT_DATA_SET", "CURRENT_DATA_SET", "PORT_DATA_SET", "CLOCK_DESCRIPTION"} <= ids
    cds = next(o for o in resp if o["tlvs"][0].get("management_id") == "CURRENT_DATA_SET")
    assert set(cds["tlvs"][0]["data"]) >= {"steps_removed", "offset_from_master_scaled_ns", "mean_path_delay_scaled_ns"}
    port = next(o for o in resp if o["tlvs"][0].get("management_id") == "PORT_DATA_SET")
    assert port["tlvs"][0]["data"]["port_state"] == "MASTER"


def test_text_output_lists_messages_and_tlvs(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _err = run(capsys, str(GOLDEN / "unicast.pcap"))
    assert rc == 0
    assert "SIGNALING" in out and "REQUEST_UNICAST_TRANSMISSION message_type=ANNOUNCE" in out
    assert "GRANT_UNICAST_TRANSMISSION" in out and "duration_field=30" in out
    assert out.strip().splitlines()[-1].endswith("0 undecodable, 0 not PTP")


def test_l2_and_udpv6_and_vlan(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    rc, out, _ = run(capsys, str(GOLDEN / "l2_p2p.pcap"), "--json")
    first = json.loads(out.splitlines()[0])
    assert rc == 0 and first["transport"] == "L2" and first["src"].startswith("02:00:5e:77:00:0")
    rc, out, _ = run(capsys, str(GOLDEN / "udpv6_e2e.pcap"), "--json")
    objs = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and all(o["transport"] == "UDPv6" and o["trailer"] == "0000" for o in objs)
    p = tmp_path / "vlan.pcap"
    p.write_bytes(write_pcap([build_l2_frame(encode(Sync(Header(sequence_id=4))), b"\x02" * 6, vlan_ids=(100, 42))]))
    rc, out, _ = run(capsys, str(p), "--json")
    assert rc == 0 and json.loads(out)["vlan_ids"] == [100, 42]


def test_undecodable_frames_are_reported_not_skipped(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    good = encode(Sync(Header(sequence_id=1), Timestamp(1, 2)))
    bad_version = good[:1] + b"\x01" + good[2:]
    odd_tlv = good[:2] + (50).to_bytes(2, "big") + good[4:] + b"\x70\x00\x00\x03\x00\x00"
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    frames = [build_udp4_frame(good, "10.0.0.1"), build_udp4_frame(bad_version, "10.0.0.1"),
              build_l2_frame(odd_tlv, b"\x02" * 6), arp]
    p = tmp_path / "bad.pcap"
    p.write_bytes(write_pcap(frames))
    rc, out, err = run(capsys, str(p), "--json")
    objs = [json.loads(x) for x in out.splitlines()]
    assert rc == 1
    assert [o["frame"] for o in objs] == [1, 2, 3]
    assert "versionPTP 1" in objs[1]["reason"] and objs[1]["offset"] == 1
    assert "odd lengthField" in objs[2]["reason"]
    assert "1 PTP messages decoded, 2 undecodable, 1 not PTP" in err
    rc, out, _ = run(capsys, str(p))
    assert rc == 1 and out.count("UNDECODABLE") == 2


def test_user_errors(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    rc, _out, err = run(capsys, str(tmp_path / "missing.pcap"))
    assert rc == 2 and "cannot read" in err and "Traceback" not in err
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file")
    rc, _out, err = run(capsys, str(junk))
    assert rc == 2 and "not a readable capture" in err


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "controlplane.services.cli", "decode", str(GOLDEN / "l2_e2e.pcap")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "SYNC seq=" in out.stdout and "0 undecodable" in out.stdout
