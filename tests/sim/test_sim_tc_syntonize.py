"""E2E transparent clock syntonized to the grandmaster: a TC whose oscillator is 80 ppm fast measures
every residence 80 ppm too long; with large, variable residence that is a time error the slave
cannot filter. The TC estimates the grandmaster/local rate ratio from the Syncs passing through
(controlplane.core.delay.GmRateRatioEstimator) and the dataplane scales residence by it."""

from __future__ import annotations

import random

import pytest

from controlplane.core.delay import GmRateRatioEstimator
from controlplane.core.sim.engine import Simulator
from controlplane.core.sim.network import PtpNode, SwitchNode, rms
from controlplane.core.sim.topology import SimOptions, build
from topologies import catalog

S = 1_000_000_000
FAST = {"logSyncInterval": "-3", "logAnnounceInterval": "0", "logMinDelayReqInterval": "-3"}


def _run(syntonize: bool, seed: int) -> tuple[float, int, float | None]:
    opts = SimOptions(switch_as="e2e_tc", options=FAST, max_freq_ppm=0, wander_ppb_per_sqrt_s=0.0,
                      residence_min_ns=1_000_000, residence_mean_ns=5_000_000)
    sim = Simulator(seed)
    net = build(catalog.get("gm sw1 sl"), sim, opts)
    tc = net.nodes["sw1"]
    assert isinstance(tc, SwitchNode) and tc.ptp is not None
    tc.ptp.osc.freq_ppb = 80_000.0  # +80 ppm
    tc.ptp.clock.syntonize_tc = syntonize
    net.start()
    sim.run_until(40 * S)
    errs = []
    t = 40 * S
    while t <= 100 * S:
        sim.run_until(t)
        errs.append(net.true_offset_ns("sl", "gm"))
        t += S // 10
    ratio = tc.dataplane[1].rate_ratio if 1 in tc.dataplane else None
    return rms(errs), max(abs(e) for e in errs), ratio


@pytest.mark.parametrize("seed", [1, 2])
def test_syntonized_tc_beats_unsyntonized_with_80ppm_and_large_residence(seed: int) -> None:
    rms_off, max_off, r_off = _run(False, seed)
    rms_on, max_on, r_on = _run(True, seed)
    print(f"seed {seed}: unsyntonized rms {rms_off:.0f} ns max {max_off} ns (ratio {r_off}); "
          f"syntonized rms {rms_on:.0f} ns max {max_on} ns (ratio {r_on:.9f})")
    assert r_off == 1.0
    assert r_on is not None and abs(r_on - 1 / 1.00008) < 0.2e-6  # grandmaster/local within 0.2 ppm
    assert rms_on < 0.5 * rms_off, (rms_on, rms_off)
    assert max_on < max_off


def test_estimator_is_robust_to_one_late_sync_and_restarts_on_a_step() -> None:
    rng = random.Random(3)
    est = GmRateRatioEstimator()
    ratio = 1 - 37e-6
    out = None
    for k in range(40):
        local = k * S // 8
        jitter = rng.randint(-200, 200)
        late = 50_000 if k == 30 else 0  # one Sync 50 us late at the TC
        out = est.add(local + late + jitter, round(local * ratio))
    assert out is not None and abs(out - ratio) < 0.05e-6
    # the grandmaster steps by 1 s: one point is outvoted, a lasting step restarts the estimate
    seen_invalid = False
    for k in range(40, 120):
        local = k * S // 8
        out = est.add(local, round(local * ratio) + S)
        seen_invalid |= not est.valid
    assert seen_invalid and est.valid and abs(out - ratio) < 0.05e-6
    assert GmRateRatioEstimator().add(0, 0) is None  # one point: no ratio
