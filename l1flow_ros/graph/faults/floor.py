"""The machine's floor beside the executor: a bare control loop to the same deadlines.

:class:`Floor` runs :class:`~l1flow_ros.control.loop.ControlLoop` with an empty tick (no
node, no ROS, no other thread, no GIL to wait for) in a process of its own, at the
executor's rate, SCHED_FIFO priority and busy-wait. Its missed ticks are deadlines the
machine itself did not give a woken real-time thread: a stall of the whole VM shows in
both, what the node adds shows in the executor only. The harness reads its counts at the
same moments as the executor's (:meth:`Floor.read`), so every case reports both side by
side (as ``bench/bench_jitter.py``'s floor does beside each measurement).
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


def _run(rate_hz: float, priority: int, spin_us: int, counts: Any, stop: Any, note: Any) -> None:
    from l1flow_ros.control.loop import ControlLoop
    from l1flow_ros.control.realtime import schedule_this_thread

    loop: ControlLoop | None = None

    def tick() -> None:
        counts[0], counts[1] = loop.missed, loop.deadlines
        if stop.value:
            loop.stop()

    def setup() -> None:
        text, _ = schedule_this_thread(priority)
        note.value = text.encode()[:200]

    loop = ControlLoop(int(round(1e9 / rate_hz)), tick, spin_us=spin_us, setup=setup, name="l1flow_floor")
    loop.run()  # on this process's main thread: nothing else runs here


class Floor:
    """The bare loop's process; :meth:`read` gives its (missed, deadlines) so far."""

    def __init__(self, rate_hz: float, priority: int, spin_us: int) -> None:
        ctx = mp.get_context("spawn")
        self._counts = ctx.RawArray("q", 2)
        self._stop = ctx.RawValue("b", 0)
        self._note = ctx.RawArray("c", 256)
        self.proc = ctx.Process(target=_run, args=(rate_hz, priority, spin_us, self._counts, self._stop,
                                                   self._note), name="l1flow_floor", daemon=True)
        self.proc.start()

    @property
    def scheduling(self) -> str:
        """What the loop's thread got (``SCHED_FIFO 50`` or why not); empty until it started."""
        return self._note.value.decode(errors="replace")

    def read(self) -> tuple[int, int]:
        """(missed ticks, deadlines) of the bare loop so far (cumulative)."""
        return int(self._counts[0]), int(self._counts[1])

    def alive(self) -> bool:
        return self.proc.is_alive()

    def close(self) -> None:
        self._stop.value = 1
        self.proc.join(timeout=5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5.0)
