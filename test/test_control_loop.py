"""ControlLoop (l1flow_ros.control.loop), without ROS. Driven by a simulated clock: every
deadline, wake-up and stall is exact, so nothing here depends on the test machine's load.
One test runs the loop on a real thread, asserting only that it ticks and stops."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from l1flow_ros.control.loop import TIMING_WINDOW, ControlLoop, sleep_until

pytestmark = pytest.mark.core

PERIOD = 2_000_000  # 500 Hz


class SimClock:
    """Monotonic ns that moves only when slept on, spun on (``read_ns`` per read, > 0 so that
    a spin ends) or told to. Sleep k wakes ``wake_latency(k)`` ns late, as a scheduler does."""

    def __init__(self, wake_latency=lambda k: 0, read_ns: int = 100) -> None:
        self.t = 1_000_000_000
        self.wake_latency = wake_latency if callable(wake_latency) else (lambda k: wake_latency)
        self.read_ns = read_ns
        self.sleeps: list[int] = []  # requested sleeps, ns

    def __call__(self) -> int:
        self.t += self.read_ns
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(int(round(s * 1e9)))
        self.t += int(round(s * 1e9)) + self.wake_latency(len(self.sleeps) - 1)


def run_loop(n_ticks: int, clock: SimClock, work=lambda k: 0, **kw) -> tuple[ControlLoop, list[int]]:
    """Run a loop on this thread until ``n_ticks`` ticks ran; ``work(k)`` ns spent in tick k."""
    times: list[int] = []
    loop: ControlLoop

    def tick() -> None:
        times.append(clock.t)
        clock.t += work(len(times) - 1)
        if len(times) == n_ticks:
            loop.stop()

    loop = ControlLoop(PERIOD, tick, clock=clock, sleep=clock.sleep, **kw)
    loop.run()
    return loop, times


def test_deadlines_are_absolute_no_drift_whatever_a_tick_costs():
    clock = SimClock(wake_latency=30_000)
    start = clock.t
    loop, times = run_loop(500, clock, work=lambda k: 1_500_000)  # 75 % of the period
    assert loop.missed == 0 and loop.wakes == 500 and loop.deadlines == 500
    lateness = np.array(times) - (start + PERIOD * np.arange(1, 501))
    # Each wake-up lands its latency after its deadline: no drift over 500 periods.
    assert lateness.min() >= 0 and lateness.max() < 40_000
    errs = loop.period_errors_ns()
    assert len(errs) == 499 and np.abs(errs).max() < 10_000


def test_a_stall_skips_the_deadlines_it_slept_through_and_never_bursts():
    clock = SimClock()
    start = clock.t
    # The tick of deadline 11 (1-based from start) stalls 7.5 ms, to 14.75 periods: deadlines
    # 12 and 13 are gone, 14 is run late, then the grid goes on from 15.
    loop, times = run_loop(40, clock, work=lambda k: 7_500_000 if k == 10 else 100_000)
    assert loop.missed == 2
    slot = (np.array(times) - start) // PERIOD  # the deadline each tick ran for
    assert list(slot[:11]) == list(range(1, 12))
    assert slot[11] == 14  # one late tick, not a catch-up burst of 12, 13, 14
    assert np.all(np.diff(slot[11:]) == 1) and np.all((np.array(times[12:]) - start) % PERIOD < 10_000)
    assert loop.deadlines == loop.wakes + 2 == slot[-1]  # every deadline counted once
    stats = loop.timing_stats()
    assert stats["missed_ticks"] == 2 and stats["period_error_us_max"] == pytest.approx(5500.0, abs=10)


def test_timing_stats_percentiles_and_reset():
    # Every hundredth wake-up comes 100 us late, one 700 us late, the rest on time: a late wake
    # makes its period longer and the next one shorter by as much.
    clock = SimClock(wake_latency=lambda k: 700_000 if k == 500 else 100_000 if k % 100 == 50 else 0)
    loop, _ = run_loop(1001, clock)
    stats = loop.timing_stats()
    assert stats["periods"] == 1000
    assert stats["period_error_us_p50"] < 1
    assert stats["period_error_us_p99"] == pytest.approx(100.0, abs=1)
    assert stats["period_error_us_max"] == pytest.approx(700.0, abs=1)
    errs = loop.period_errors_ns()
    assert np.sum(np.abs(errs) > 50_000) == 22 and abs(errs.sum()) < 1000  # 11 late wakes: +x, then -x
    loop.reset_timing()
    assert loop.timing_stats()["periods"] == 0 and loop.missed == 0 and len(loop.period_errors_ns()) == 0


def test_the_window_keeps_the_newest_periods_oldest_first():
    # Wake k comes 10 k ns late: period k (from wake k to k + 1) is 10 ns too long, plus the
    # clock reads between the two wakes, the same for every period.
    clock = SimClock(wake_latency=lambda k: 10 * k)
    n = TIMING_WINDOW + 300
    loop, _ = run_loop(n + 1, clock)
    errs = loop.period_errors_ns()
    assert len(errs) == TIMING_WINDOW and loop.timing_stats()["periods"] == TIMING_WINDOW
    assert np.all(errs == errs[0]) and 10 <= errs[0] < 1000
    # Oldest first: mark the newest periods and find them at the end.
    loop2, _ = run_loop(n + 1, SimClock(wake_latency=lambda k: 5000 if k == n else 0))
    errs2 = loop2.period_errors_ns()
    assert errs2[-1] > 4000 and np.all(np.abs(errs2[:-1]) < 1000)


def test_spin_busy_waits_only_the_last_microseconds():
    clock = SimClock(read_ns=1000)
    sleep_until(clock.t + 1_000_000, 200_000, clock, clock.sleep)
    assert len(clock.sleeps) == 1 and 790_000 <= clock.sleeps[0] <= 800_000
    deadline = clock.t + 150_000  # closer than the spin: no sleep at all
    sleep_until(deadline, 200_000, clock, clock.sleep)
    assert len(clock.sleeps) == 1 and clock.t >= deadline
    # The loop reads spin_us at every deadline: a live change takes effect at the next one.
    loop, _ = run_loop(3, SimClock(), spin_us=300)
    assert loop.spin_us == 300


def test_a_failing_tick_goes_to_on_error_which_decides():
    clock = SimClock()
    seen: list[str] = []
    n = [0]

    def tick() -> None:
        n[0] += 1
        if n[0] in (3, 5):
            raise RuntimeError(f"tick {n[0]}")

    def on_error(e: Exception) -> bool:
        seen.append(str(e))
        return len(seen) < 2  # keep going after the first, stop at the second

    loop = ControlLoop(PERIOD, tick, on_error=on_error, clock=clock, sleep=clock.sleep)
    loop.run()
    assert seen == ["tick 3", "tick 5"] and n[0] == 5


def test_on_a_real_thread_it_ticks_sets_up_first_and_stops_when_asked():
    names: list[str] = []
    ticks = [0]
    loop = ControlLoop(PERIOD, lambda: ticks.__setitem__(0, ticks[0] + 1), name="l1flow_test_loop",
                       setup=lambda: names.append(threading.current_thread().name))
    loop.start()
    end = time.monotonic() + 10.0
    while ticks[0] < 20 and time.monotonic() < end:
        time.sleep(0.01)
    loop.stop(timeout=5.0)
    assert ticks[0] >= 20 and names == ["l1flow_test_loop"]
    assert not loop.is_alive() and loop.stopping
    n = ticks[0]
    time.sleep(0.05)
    assert ticks[0] == n  # stopped means stopped
    assert loop.deadlines >= loop.wakes >= n


def test_period_must_be_positive():
    with pytest.raises(ValueError):
        ControlLoop(0, lambda: None)
