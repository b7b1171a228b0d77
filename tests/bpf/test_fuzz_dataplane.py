"""Dataplane fuzzing through BPF_PROG_TEST_RUN (a sample; `make fuzz` runs >= 1,000,000 frames).

Real programs, freshly compiled and verified for each map configuration, in the real kernel. Frames
are generated (every encapsulation, VLAN/QinQ stacks, IPv4 options, UDPv6 with trailer, fragments,
bogus TLVs), mutated (truncations, bit flips, wrong length fields) and random. The oracle is the
independent reference model in bench/fuzz.py: non-PTP and malformed frames pass byte-identical at all
three hooks; valid event messages get exactly the seeded residence (within the measured window) and
nothing else changes but the UDP checksum / IPv6 trailer, which stay consistent; counters match.
Seed: FUZZ_SEED (default 10).
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from bench import fuzz as Z

SEED = int(os.environ.get("FUZZ_SEED", "10"))
FRAMES_PER_CONFIG = 6000


def _report(fz: Z.DataplaneFuzzer) -> str:
    return f"{len(fz.failures)} failures (seed {SEED}):\n" + "\n".join(x for x in fz.failures[:10] if x)


@pytest.mark.parametrize("cfg", Z.DP_CONFIGS, ids=[c.name for c in Z.DP_CONFIGS])
def test_fuzz_mixed_frames(cfg):
    fz = Z.DataplaneFuzzer(cfg)      # compiles and loads: the verifier must accept every program
    try:
        Z.fuzz_block(fz, random.Random(f"{SEED}-{cfg.name}"), FRAMES_PER_CONFIG, scapy_every=40)
        fz.check_counters()
        assert not fz.failures, _report(fz)
        v = fz.verdicts
        # the sample really reached every branch of the oracle
        assert v[Z.OK] > 1000 and v[Z.BAD] > 300 and v[Z.NOT] > 300 and v[Z.SHORT] > 50, v
        assert v["corrected"] > 200 and fz.scapy_checked > 20, (v, fz.scapy_checked)
        if cfg.mode == "p2p":
            assert v["dropped"] > 100
        assert fz.expect_ctr["two_step_matched"] > 10 and fz.expect_ctr["two_step_late"] > 5, fz.expect_ctr
    finally:
        fz.close()


def test_fuzz_truncated_at_every_offset():
    """Each (encapsulation, message type) cut at every offset from 14 bytes to its full length."""
    fz = Z.DataplaneFuzzer(Z.DP_CONFIGS[0])
    try:
        rng = random.Random(f"{SEED}-trunc")
        n = 0
        for label, frame in Z.truncation_sweep(rng):
            fz.check_flow([(label, frame)], "seed")
            n += 1
        fz.check_counters()
        assert not fz.failures, _report(fz)
        assert n > 8000 and fz.verdicts["corrected"] > 50, (n, fz.verdicts)
    finally:
        fz.close()


def test_oracle_detects_a_wrong_residence_and_a_stray_byte():
    """The oracle can fail: a model that expects another rate ratio, and a tampered output, are caught."""
    fz = Z.DataplaneFuzzer(Z.DP_CONFIGS[0])
    try:
        rng = random.Random(1)
        fz.ports[Z.PEER] = dataclasses.replace(fz.ports[Z.PEER], rate_ratio=1.25)   # model only, not the map
        fz.check_flow([Z.valid_frame(rng, Z.SYNC, "udp4", flags0=0, domain=0)], "seed")
        assert any("correction added" in f for f in fz.failures), fz.failures
        fz.failures.clear()
        label, frame = Z.valid_frame(rng, Z.SYNC, "udp4", flags0=0, domain=0)
        ref = Z.ref_parse(frame)
        out = bytearray(frame)
        out[ref.ptp_off + Z.CORR + 7] ^= 1            # +1 scaled ns, checksum not updated
        out[ref.ptp_off + 33] ^= 0x40                 # and a byte outside the correction
        fz._check_corrected(label, frame, bytes(out), ref, (0, 10))
        text = " ".join(fz.failures)
        assert "outside correction" in text and "checksum" in text, fz.failures
    finally:
        fz.close()
