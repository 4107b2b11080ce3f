"""A control loop on absolute deadlines (no ROS), with its timing statistics.

:class:`ControlLoop` runs ``tick()`` once per period on its own thread. Deadlines are
absolute (``start + k * period`` on the monotonic clock), not "sleep one period": the
loop does not drift, whatever a tick costs. A deadline the thread slept through (it was
preempted, or a tick ran long) is skipped and counted as missed, never made up in a burst
of ticks. Each wake-up is timed against the previous one: the period error
(actual - nominal, ns) of the last :data:`TIMING_WINDOW` periods gives the p50 / p99 / max
of :meth:`ControlLoop.timing_stats`.

Waking from sleep costs tens to hundreds of microseconds of scheduler latency; with
``spin_us`` the loop sleeps to ``spin_us`` before the deadline and busy-waits the rest.
The spin holds the GIL, so it helps only on an isolated core (``cpu_affinity``), where no
other Python thread of the process waits for it. How the thread is scheduled (SCHED_FIFO,
affinity) is :mod:`l1flow_ros.control.realtime`'s part; ``setup`` runs first on the thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

TIMING_WINDOW = 8192  # periods kept for the p50 / p99 / max statistics


def sleep_until(deadline_ns: int, spin_ns: int, clock: Callable[[], int] = time.monotonic_ns,
                sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep to an absolute ``clock`` deadline (ns); the last ``spin_ns`` are busy-waited."""
    remaining = deadline_ns - clock()
    if remaining > spin_ns:
        sleep((remaining - spin_ns) * 1e-9)
    while clock() < deadline_ns:
        pass


class ControlLoop:
    """``tick()`` every ``period_ns`` on absolute deadlines, on a thread of its own.

    ``on_error(exc)`` is called when a tick raises and returns whether to keep going (the
    loop keeps streaming after a failed tick unless told to stop). ``spin_us`` may be
    changed while the loop runs. ``clock`` and ``sleep`` are the monotonic clock (ns) and
    the sleep (s) the loop uses: tests drive the loop with a simulated clock.

    Statistics are written by the loop's thread only and read from others without a lock:
    a reader may see one period more or less, never a torn value.
    """

    def __init__(self, period_ns: int, tick: Callable[[], None], *, spin_us: int = 0,
                 setup: Callable[[], None] | None = None,
                 on_error: Callable[[Exception], bool] = lambda e: True,
                 name: str = "l1flow_control",
                 clock: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, got {period_ns}")
        self.period_ns = int(period_ns)
        self.spin_us = spin_us
        self._tick, self._setup, self._on_error = tick, setup, on_error
        self._clock, self._sleep = clock, sleep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._periods = np.zeros(TIMING_WINDOW, dtype=np.int64)  # period error, ns
        self._n_periods = 0
        self.missed = 0  # deadlines skipped because the thread woke after them
        self.wakes = 0  # wake-ups (one per deadline not skipped)

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and join (idempotent; from the loop's own thread, only stop)."""
        self._stop.set()
        t = self._thread
        if t.is_alive() and threading.current_thread() is not t:
            t.join(timeout=timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def run(self) -> None:
        """The loop (the thread's target; tests may call it on their own thread)."""
        if self._setup is not None:
            self._setup()
        clock, stop, period = self._clock, self._stop, self.period_ns
        next_t = clock() + period
        last_wake = 0
        while not stop.is_set():
            sleep_until(next_t, self.spin_us * 1000, clock, self._sleep)
            wake = clock()
            self.wakes += 1
            if last_wake:
                self._periods[self._n_periods % TIMING_WINDOW] = wake - last_wake - period
                self._n_periods += 1
            last_wake = wake
            late = wake - next_t
            if late >= period:  # skip the deadlines we slept through; never burst to catch up
                skipped = late // period
                self.missed += int(skipped)
                next_t += skipped * period
            try:
                self._tick()
            except Exception as e:
                if stop.is_set() or not self._on_error(e):
                    break
            next_t += period

    # -- statistics --------------------------------------------------------------------------

    @property
    def deadlines(self) -> int:
        """Deadlines so far: wake-ups plus skipped deadlines."""
        return self.wakes + self.missed

    def period_errors_ns(self) -> np.ndarray:
        """(N,) signed period errors (actual - nominal, ns) of the last N <= TIMING_WINDOW periods,
        oldest first."""
        n = min(self._n_periods, TIMING_WINDOW)
        if self._n_periods <= TIMING_WINDOW:
            return self._periods[:n].copy()
        i = self._n_periods % TIMING_WINDOW
        return np.concatenate([self._periods[i:], self._periods[:i]])

    def reset_timing(self) -> None:
        """Start the period statistics and the missed count afresh (benchmarks)."""
        self._n_periods = 0
        self.missed = 0

    def timing_stats(self) -> dict[str, float]:
        """Period error (|actual - nominal|) p50 / p99 / max in microseconds over the last
        TIMING_WINDOW periods, the missed-tick count and the deadlines so far."""
        n = min(self._n_periods, TIMING_WINDOW)
        # One partition (nearest rank), not two interpolated percentiles: this runs on another
        # thread (the node's executor) and holds the GIL the loop's thread may be waiting for.
        err = np.abs(self._periods[:n]) if n else np.zeros(1, dtype=np.int64)
        k50, k99 = (err.size - 1) // 2, (99 * (err.size - 1)) // 100
        err.partition((k50, k99))
        return {
            "periods": float(n),
            "period_error_us_p50": float(err[k50]) * 1e-3,
            "period_error_us_p99": float(err[k99]) * 1e-3,
            "period_error_us_max": float(err[k99:].max()) * 1e-3,
            "missed_ticks": float(self.missed),
            "deadlines": float(self.deadlines),
        }
