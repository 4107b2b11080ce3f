"""Scheduling a control process for its deadlines (no ROS): SCHED_FIFO and CPU affinity for
a thread, the middleware's threads, the garbage collector, the GIL switch interval, and stop
signals taken by a thread of the process's own.

Each function does what it can and returns a note saying what it got (``/diagnostics``
reports them); none raises when the system refuses. Real-time scheduling needs
CAP_SYS_NICE (root) or an rtprio limit (``ulimit -r``, limits.conf); without it a thread
keeps normal scheduling, and the note says so.

Why each piece, for a process whose control thread must wake every 2 ms (500 Hz) and
shares one GIL with the thread that runs the ROS callbacks:

- **The control thread** at SCHED_FIFO ``realtime_priority`` (:func:`schedule_thread`),
  optionally pinned to CPUs: woken on time, it runs before every normal thread.
- **The executor thread** (the ROS callbacks) one SCHED_FIFO step below
  (:func:`schedule_this_thread`). It holds the GIL whenever a callback runs. At normal
  priority on a busy machine it is preempted while holding it, and the control thread,
  woken on time, waits out another process's time slice (1-4 ms: missed ticks); one step
  below the control thread it runs its callback to the end first.
- **The middleware's threads** (Fast DDS names them ``dds.*``: reception, events,
  shared-memory watchdog, ...) two steps below (:func:`schedule_middleware_threads`). A
  publish from the control thread takes the writer's locks, which these threads hold while
  they handle acknowledgements and discovery; rclpy keeps the GIL during the publish. At
  normal priority such a thread is preempted holding a lock, and every Python thread of the
  process waits (measured: publishes of 1-5 ms, ticks missed). Other middlewares' threads
  are not recognised and keep their scheduling.
- **The GIL switch interval** (:func:`set_switch_interval`, 0.1 ms): the default 5 ms lets a
  busy Python thread keep a woken control thread waiting that long. After it, what counts is
  the longest call into C that holds the GIL (the executor node keeps those short: chunks
  taken serialized and size-checked before deserializing, plan building outside locks).
- **The garbage collector**: a full collection of such a process (rclpy, numpy, the node)
  holds the GIL ~15 ms, seven missed ticks at 500 Hz, whichever thread triggers it.
  :func:`collect_garbage` once before the control thread starts, then :func:`freeze_garbage`
  after start-up: everything alive then stays, and later collections only look at what came
  after (microseconds).

Measured as its own process (``bench/bench_jitter.py --process --seconds 32 --rates 500
--spins 200 --loads idle cpu inference --realtime-priority 50``, loaded 2-core VM), missed
ticks in 3 x 32 s, twice: 868 and 317 with only the control thread real-time, 5 and 0 with
all of the above; those 5 came with 8 of a bare loop in a process of its own over the same
seconds: stalls of the whole VM.

Stop signals (:func:`stop_signals_to_pipe`): not rclpy's signal handler, which shuts the
context down at once, under the running control thread. SIGINT / SIGTERM are written to a
pipe that a thread of the process reads; it stops and joins the control thread, then the
executor, then the context goes. A second signal while stopping (a terminal's Ctrl-C plus
launch's SIGINT) is ignored, and the exit code is 0 either way.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Iterable


def _fifo(tid: int, prio: int) -> None:
    os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(prio))


def schedule_thread(priority: int, cpus: Iterable[int] = ()) -> tuple[str, bool]:
    """The calling thread pinned to ``cpus`` (empty = any) and at SCHED_FIFO ``priority``
    (0 = normal scheduling). Returns (note, refused): what was set, and whether the system
    refused part of it. Nothing asked: ("normal scheduling", False)."""
    notes, refused = [], False
    cpus = sorted(set(cpus))
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)  # 0 = this thread on Linux
            notes.append(f"affinity {cpus}")
        except (OSError, AttributeError, ValueError) as e:
            notes.append(f"affinity not set ({e})")
            refused = True
    if priority > 0:
        try:
            _fifo(0, priority)
            notes.append(f"SCHED_FIFO {priority}")
        except (OSError, AttributeError) as e:
            notes.append(f"SCHED_FIFO not permitted ({e}); normal scheduling")
            refused = True
    return ", ".join(notes) or "normal scheduling", refused


def schedule_this_thread(priority: int) -> tuple[str, bool]:
    """The calling thread at SCHED_FIFO ``priority``; 0 = leave it at normal scheduling.
    Returns (note, refused): ``"SCHED_FIFO <p>"`` or why not, and whether the system refused."""
    if priority <= 0:
        return "normal scheduling", False
    try:
        _fifo(0, priority)
        return f"SCHED_FIFO {priority}", False
    except (OSError, AttributeError) as e:
        return f"SCHED_FIFO not permitted ({e}); normal scheduling", True


def schedule_middleware_threads(priority: int, prefix: str = "dds.") -> tuple[str, bool]:
    """Every thread of this process whose name starts with ``prefix`` at SCHED_FIFO
    ``priority``, by thread id (they exist once a node does); 0 = leave them. Process-wide.
    Returns (note, refused): what was set, and whether no thread got it."""
    if priority <= 0:
        return "as started", False
    done, refused = 0, ""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError as e:
        tids, refused = [], str(e)
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if not f.read().startswith(prefix):
                    continue
            _fifo(int(tid), priority)
            done += 1
        except (OSError, ValueError, AttributeError) as e:  # gone meanwhile, or not permitted
            refused = str(e)
    if done:
        return f"SCHED_FIFO {priority} ({done} {prefix}* threads)", False
    if refused:
        return f"SCHED_FIFO not permitted ({refused}); as started", True
    return f"no {prefix}* threads (not Fast DDS): as started", True


BACKGROUND_NICE = 10  # a background thread's nice value above its process's (weight ~1/10)


def lower_this_thread(step: int = BACKGROUND_NICE) -> bool:
    """The calling thread's nice value raised by ``step`` (a lower share of the CPU; needs no
    privilege, and cannot be undone without one): for work that must not take CPU from the
    hot path, such as opening and warming up a checkpoint being swapped in. Threads it starts
    inherit it. Returns whether it took."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
        return True
    except (OSError, AttributeError):
        return False


def set_switch_interval(seconds: float) -> bool:
    """``sys.setswitchinterval(seconds)`` when that shortens it (0 = leave it); returns whether it did."""
    if seconds > 0 and sys.getswitchinterval() > seconds:
        sys.setswitchinterval(seconds)
        return True
    return False


def collect_garbage() -> None:
    """A full collection now (~15 ms for a ROS node process), before any deadline runs."""
    gc.collect()


def freeze_garbage() -> None:
    """Everything alive now (modules, the node) is left out of later collections
    (``gc.freeze``): they cost microseconds instead of the full collection's ~15 ms."""
    gc.freeze()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_signals_to_pipe() -> int:
    """SIGINT / SIGTERM no longer raise or kill: each writes its number to the returned pipe
    (whichever thread the kernel delivers it to), for a thread of the caller's to read and
    stop the process in order (the control thread first). Call from the main thread."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: None)  # the work is done by the thread reading the pipe
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    return read_fd


def wait_stop_signal(read_fd: int) -> None:
    """Block until a stop signal arrives on the pipe of :func:`stop_signals_to_pipe`."""
    while os.read(read_fd, 1)[0] not in STOP_SIGNALS:
        pass


def on_stop_signal(read_fd: int, action, name: str) -> threading.Thread:
    """Start a daemon thread that waits for the first stop signal on the pipe of
    :func:`stop_signals_to_pipe`, then calls ``action()``; later signals only fill the pipe."""

    def run() -> None:
        wait_stop_signal(read_fd)
        action()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def ignore_stop_signals() -> None:
    """SIGINT / SIGTERM ignored from now on: the interpreter's exit resets Python handlers to
    the default (die), and a second Ctrl-C while stopping must not kill the process."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
