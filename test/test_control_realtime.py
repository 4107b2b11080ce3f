"""l1flow_ros.control.realtime, without ROS: each call does what the system permits and says
what it got. Scheduling is changed only on throwaway threads (or in a child process), never on
the test's own."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from l1flow_ros.control import realtime

pytestmark = pytest.mark.core


def on_thread(fn):
    out = {}

    def run() -> None:
        out["result"] = fn()
        out["policy"] = os.sched_getscheduler(0)
        out["cpus"] = os.sched_getaffinity(0)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out


def test_nothing_asked_nothing_changed():
    out = on_thread(lambda: realtime.schedule_thread(0, ()))
    assert out["result"] == ("normal scheduling", False) and out["policy"] == os.SCHED_OTHER
    assert realtime.schedule_this_thread(0) == ("normal scheduling", False)
    assert realtime.schedule_middleware_threads(0) == ("as started", False)


def test_fifo_is_set_or_refused_with_the_reason():
    out = on_thread(lambda: realtime.schedule_thread(5, ()))
    note, refused = out["result"]
    if refused:  # no privilege here: said so, normal scheduling kept
        assert "not permitted" in note and out["policy"] == os.SCHED_OTHER
    else:
        assert note == "SCHED_FIFO 5" and out["policy"] == os.SCHED_FIFO
    out = on_thread(lambda: realtime.schedule_this_thread(3))
    assert out["result"][1] == (out["policy"] != os.SCHED_FIFO)


def test_affinity_pins_the_calling_thread_only():
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    out = on_thread(lambda: realtime.schedule_thread(0, [cpu]))
    assert out["result"] == (f"affinity [{cpu}]", False) and out["cpus"] == {cpu}
    assert os.sched_getaffinity(0) == before  # this thread untouched
    out = on_thread(lambda: realtime.schedule_thread(0, [100_000]))  # no such CPU
    assert out["result"][1] and "affinity not set" in out["result"][0] and out["cpus"] == before


def test_middleware_threads_found_by_name():
    name = b"l1test.mw"
    ready, done = threading.Event(), threading.Event()
    tid = {}

    def worker() -> None:  # a thread named as Fast DDS names its own
        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # PR_SET_NAME
        tid["tid"] = threading.get_native_id()
        ready.set()
        done.wait(10.0)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(10.0)
        assert realtime.schedule_middleware_threads(2, prefix="l1nosuch.")[1]  # none: refused, said so
        note, refused = realtime.schedule_middleware_threads(2, prefix="l1test.")
        if refused:
            assert "not permitted" in note and os.sched_getscheduler(tid["tid"]) == os.SCHED_OTHER
        else:
            assert note == "SCHED_FIFO 2 (1 l1test.* threads)" and os.sched_getscheduler(tid["tid"]) == os.SCHED_FIFO
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the named thread
    finally:
        done.set()
        t.join()


def test_switch_interval_only_shortened():
    old = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        assert realtime.set_switch_interval(0.0001) and abs(sys.getswitchinterval() - 0.0001) < 1e-9
        assert not realtime.set_switch_interval(0.001) and abs(sys.getswitchinterval() - 0.0001) < 1e-9
        assert not realtime.set_switch_interval(0.0)
    finally:
        sys.setswitchinterval(old)


def test_freeze_leaves_what_is_alive_out_of_collections():
    try:
        realtime.collect_garbage()
        realtime.freeze_garbage()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_stop_signals_reach_the_reading_thread_and_a_second_one_is_ignored():
    # In a child process: the test's own signal handling stays as it is.
    script = textwrap.dedent("""
        import os, signal, threading
        from l1flow_ros.control import realtime
        fd = realtime.stop_signals_to_pipe()
        got = threading.Event()
        t = threading.Thread(target=lambda: (realtime.wait_stop_signal(fd), got.set()))
        t.start()
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the thread takes it
        assert got.wait(10.0)
        realtime.ignore_stop_signals()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        print("stopped cleanly")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "stopped cleanly" in r.stdout, r.stderr
