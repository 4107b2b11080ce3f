"""What a case is (:class:`Case`) and what its function uses (:class:`CaseContext`): time
marks, the world, the settle / reason / recovery waits, and the judging constants."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from l1flow_ros.graph.faults.assets import JOINTS

if TYPE_CHECKING:
    from l1flow_ros.graph.faults.harness import Harness
    from l1flow_ros.graph.faults.report import CaseResult

FAULT_S = 1.6  # how long a fault lasts where the policy keeps running
REST_S = 0.25  # "at rest": every command of the last REST_S within HOLD_TOL of each other
SETTLE_MAX_S = 5.0  # the arm must come to rest within this after the fault starts
GUARD_LAG_S = 5.0  # how far behind the stream the guard may be when the arm's rest is judged
HOLD_S = 0.8  # then it must stay there this long (bad messages are injected meanwhile)
HOLD_TOL = 1e-3  # "held": within this of the position at the start of the hold window
# Chunks stamped this long after the fault began are made from faulty data: a camera frame
# may pair with a joint state up to the synchroniser's slop (0.02 s) older, published up to
# one joint-state period (0.01 s) before the change; twice that, to be safe.
GRACE_S = 0.1
# A chunk made from the last good observation may still arrive this long after the fault
# began (perception and inference drop observations older than 0.5 s): no hold before it.
MIN_SETTLE_S = 0.8
REASON_TIMEOUT_S = 10.0  # the fault lasts until the expected reason was seen, at most this long
RECOVER_TIMEOUT_S = 25.0


class CaseContext:
    """What a case function uses: time marks, the world, and the recovery wait."""

    def __init__(self, h: Harness, res: CaseResult, t0: int, case: Case | None = None) -> None:
        self.case = case
        self.h = h
        self.w = h.world
        self.res = res
        self.t0 = t0
        self.onset: int = t0
        self.hold: tuple[int, int] | None = None
        self.hold_start: int | None = None
        self.no_valid_data = False  # only invalid or no data on offer between onset and clear
        self.expect_silence = False
        self.cleared_at: int = t0
        self.recovered_at: int | None = None
        self.answers: list[str] = []  # parameter-set answers etc., as "node: reason"
        self.behaviour = ""  # what the case saw, where no node reason is expected
        # (executor missed ticks, seconds, bare loop missed ticks) over the windows the case
        # judges, where not the whole case (hot swap: the swaps' windows)
        self.tick_windows: tuple[int, float, int] | None = None
        # (what, executor missed ticks, bare loop missed ticks, s) of the spans not judged
        self.unjudged: list[tuple[str, int, int, float]] = []

    @contextlib.contextmanager
    def ticks_not_judged(self, what: str):
        """The executor's missed ticks while the block runs are reported, not judged: a node
        process starting beside it (imports, sessions opened and warmed, discovery), which
        the case needs but which is not the fault. The harness takes them out of the case's
        count and names them in its notes."""
        mark = self.tick_mark()
        try:
            yield
        finally:
            span = self.ticks_since(mark, time.time_ns())
            if span is not None:
                self.unjudged.append((what, *span))

    def tick_mark(self) -> tuple[Any, tuple[int, int]]:
        """The executor's latest status and the bare loop's count, to count ticks from."""
        return self.h.executor_state(), self.h.floor.read()

    def ticks_since(self, mark: tuple[Any, tuple[int, int]], after_ns: int) -> tuple[int, int, float] | None:
        """(executor missed ticks, bare loop missed ticks, s) from ``mark`` to the executor's
        first status stamped at or after ``after_ns``; None without both statuses."""
        from l1flow_ros.graph.faults.harness import diag_value

        st0, f0 = mark
        st1 = self.h.executor_state(after_ns=after_ns, timeout=10.0)
        f1 = self.h.floor.read()
        if st0 is None or st1 is None:
            return None
        m = int(diag_value(st1.values, "missed_ticks") - diag_value(st0.values, "missed_ticks"))
        return m, f1[0] - f0[0], (st1.stamp_ns - st0.stamp_ns) * 1e-9

    def fault(self, **sensor_changes: Any) -> None:
        if sensor_changes:
            self.w.set_sensors(**sensor_changes)  # returns once the arm process applied it
        self.onset = time.time_ns()

    def settle(self) -> None:
        """Wait until the arm is at rest (the executor's starvation rule: the running chunk
        ends, the command reaches its last waypoint within the limits and stops); the hold
        window starts then. Not at rest within SETTLE_MAX_S: the window starts anyway.

        Judged on the commands as published (their source times), up to the last one the
        guard has: a starved guard gets them late, and must not make the arm look moving
        (or silent) when the executor was holding it."""
        self.no_valid_data = True
        t_min, t_max = self.onset + int(MIN_SETTLE_S * 1e9), self.onset + int(SETTLE_MAX_S * 1e9)
        end = time.monotonic() + SETTLE_MAX_S + GUARD_LAG_S
        while time.monotonic() < end:
            time.sleep(0.05)
            rep = self.w.controller.request(op="recent", window=REST_S)
            latest = int(rep["latest"])
            if latest < t_min:
                continue
            t, p = np.asarray(rep["t"], dtype=np.int64), np.asarray(rep["p"]).reshape(-1, len(JOINTS))
            if t[0] <= latest - int(0.8 * REST_S * 1e9) and np.ptp(p, axis=0).max() <= HOLD_TOL:
                self.hold_start = int(t[0])
                return
            if latest > t_max:
                break
        self.res.notes.append(f"the arm was not at rest {SETTLE_MAX_S} s after the fault began")
        self.hold_start = time.time_ns()

    def wait_reason(self, timeout: float = REASON_TIMEOUT_S) -> None:
        """Keep the fault on until the responsible node has given the expected reason (a
        loaded machine may take a few diagnostics periods), at most ``timeout``."""
        if self.case is None or self.case.expect is None:
            return
        node, pattern = self.case.expect
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.w.lock:
                msgs = [m for t, n, _, m in self.w.diags if t >= self.onset and n == node]
            if any(re.search(pattern, part) for m in msgs for part in m.split("; ")):
                return
            time.sleep(0.05)

    def end_hold(self) -> None:
        self.hold = (self.hold_start or self.onset, time.time_ns())

    def clear(self, **sensor_changes: Any) -> None:
        self.cleared_at = time.time_ns()
        if sensor_changes:
            self.w.set_sensors(**sensor_changes)
        else:
            self.w.clear_sensors()

    def wait_recovered(self, since: int | None = None, timeout: float = RECOVER_TIMEOUT_S) -> None:
        """Normal operation again: the executor reports running a chunk made from an
        observation stamped after the clear (recovered at the stamp of the first such report)
        and perception and inference report OK."""
        t = self.cleared_at if since is None else since
        end = time.monotonic() + timeout
        first = None
        while time.monotonic() < end:
            if first is None:
                first = self.h.first_accepted_since(t)
            if first is not None and self.h.healthy_since(t):
                self.recovered_at = first
                return
            time.sleep(0.02)


@dataclass(frozen=True)
class Case:
    name: str
    injected: str
    run: Callable[[CaseContext], None]
    expect: tuple[str, str] | None  # (node, regex of its /diagnostics message)
    needs_streaming: bool = True
    judge_ticks: bool = True  # False: the case starves the CPU on purpose (missed ticks reported, not judged)
    zero_ticks: bool = False  # True: not one missed tick allowed (instead of 1 per 10 s)
