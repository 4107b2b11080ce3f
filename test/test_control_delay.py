"""The inference delay estimate (control/delay.py): d = ceil((arrival - t_obs) / dt) as a
windowed percentile, warm-up excluded, never a running maximum."""

import math

import pytest

from l1flow_ros.control.delay import DelayEstimator

pytestmark = pytest.mark.core

DT = 0.1
MS = 1_000_000


def _feed(est: DelayEstimator, latencies_ms, t0_ns: int = 10**12) -> list[int]:
    out = []
    for i, lat in enumerate(latencies_ms):
        t_obs = t0_ns + i * 100 * MS
        out.append(est.add(t_obs, t_obs + int(lat * MS), DT))
    return out


def test_steps_are_the_ceiling_of_latency_over_dt():
    est = DelayEstimator(warmup=0)
    assert _feed(est, [0, 1, 99, 100, 101, 250]) == [0, 1, 1, 1, 2, 3]
    assert est.add(5 * MS, 4 * MS, DT) == 0  # a chunk "before" its observation: no delay


def test_warm_up_is_excluded_and_one_slow_start_does_not_pin_the_estimate():
    est = DelayEstimator(window=32, warmup=3, percentile=95)
    assert est.steps() is None
    _feed(est, [900, 700, 400] + [30] * 40)  # first inferences slow (warm-up), then 30 ms
    assert est.samples == 32 and est.steps() == 1  # a running maximum would say 9
    assert math.isclose(est.latency_ms(), 30.0)


def test_the_percentile_covers_rare_slow_chunks_and_forgets_them_once_out_of_the_window():
    est = DelayEstimator(window=20, warmup=0, percentile=95)
    _feed(est, [30] * 18 + [250, 250])  # 10 % of the window at 3 steps
    assert est.steps() == 3
    _feed(est, [30] * 20)
    assert est.steps() == 1


def test_reset_starts_warm_up_again():
    est = DelayEstimator(window=8, warmup=2)
    _feed(est, [30] * 8)
    est.reset()
    assert est.samples == 0 and est.steps() is None
    _feed(est, [500, 500, 30])
    assert est.samples == 1 and est.steps() == 1


@pytest.mark.parametrize("kw", [{"window": 0}, {"warmup": -1}, {"percentile": 0.0}, {"percentile": 101.0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        DelayEstimator(**kw)
