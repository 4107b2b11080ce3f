"""Messages written before a kill -9 vs what a reader gets back from the cut-off episode file.

    python bench/bench_recording_kill.py                          # flush periods 0 (never) and 1 s
    python bench/bench_recording_kill.py --flush 0 0.2 1 --rounds 3 --seconds 4

A child process writes an episode through :class:`l1flow_ros.data.mcap_io.EpisodeWriter` as the
recorder does (CDR bytes; /joint_states and the commands at ``--rate`` Hz each, a 96 x 96 RGB
image at 15 Hz) and prints the index of each message once ``write_raw`` has returned; the parent
SIGKILLs it after ``--seconds`` (varied by round) and reads the ``.part`` back with
:func:`~l1flow_ros.data.mcap_io.salvage`. Reported per flush period: messages written before the
kill (the child's own count, from its output pipe), recovered, lost, and how long before the
kill the oldest lost message was written (the bound a flush period gives). No ROS graph: the
recorder node's kill test is test/test_recorder_recovery.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _child(out: str, flush: float, rate: float) -> None:
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from l1flow_ros.data.mcap_io import EpisodeWriter

    w = EpisodeWriter(out, flush_period_s=flush, metadata={"task": "bench"})
    img = Image(height=96, width=96, encoding="rgb8", step=96 * 3, data=os.urandom(96 * 96 * 3))
    img_cdr = serialize_message(img)
    period, next_img, k = 1.0 / rate, 0.0, 0
    t0 = time.monotonic()
    while True:
        now_ns = time.time_ns()
        w.write_raw("/joint_states", "sensor_msgs/msg/JointState",
                    serialize_message(JointState(name=["j0"], position=[float(k)])), now_ns)
        print(k, now_ns, flush=True)
        k += 1
        w.write_raw("/cmd", "std_msgs/msg/Float64MultiArray", serialize_message(Float64MultiArray(data=[float(k)])),
                    now_ns)
        print(k, now_ns, flush=True)
        k += 1
        if time.monotonic() - t0 >= next_img:
            w.write_raw("/cam/color/image_raw", "sensor_msgs/msg/Image", img_cdr, now_ns)
            print(k, now_ns, flush=True)
            k += 1
            next_img += 1.0 / 15.0
        time.sleep(period)


def one_round(tmp: Path, flush: float, rate: float, seconds: float) -> dict:
    from l1flow_ros.data.mcap_io import salvage

    out = tmp / f"kill_{flush}_{seconds:.2f}.mcap"
    child = subprocess.Popen([sys.executable, __file__, "--child", str(out), str(flush), str(rate)],
                             stdout=subprocess.PIPE, text=True)
    written: dict[int, int] = {}
    t_end = None
    for line in child.stdout:
        k, ns = map(int, line.split())
        written[k] = ns
        if t_end is None:
            t_end = time.monotonic() + seconds
        if time.monotonic() >= t_end:
            break
    kill_ns = time.time_ns()
    child.send_signal(signal.SIGKILL)
    for line in child.stdout:  # what it wrote before dying, still in the pipe
        k, ns = map(int, line.split())
        written[k] = ns
    child.wait()
    gen, got = salvage(out.with_name(out.name + ".part")), []
    while True:
        try:
            _, ch, msg = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        got.append(msg.log_time)
    lost = sorted(set(written.values()) - set(got))  # stamps: the 2-3 messages of one step share one
    n_lost = len(written) - len(got)
    return {"flush_s": flush, "written": len(written), "recovered": len(got), "lost": n_lost,
            "oldest_lost_s_before_kill": (kill_ns - lost[0]) * 1e-9 if lost else 0.0,
            "file_bytes": out.with_name(out.name + ".part").stat().st_size, "cut": result.cut}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flush", type=float, nargs="+", default=[0.0, 1.0], help="flush periods, s (0 = never)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="write this long before the kill (+0.37 s per round)")
    ap.add_argument("--rate", type=float, default=100.0, help="joint states and commands, Hz each")
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(f"{'flush_s':>8} {'written':>8} {'recovered':>9} {'lost':>5} {'oldest lost, s before kill':>27}"
              f" {'bytes':>9}  cut")
        for r in range(args.rounds):
            for flush in args.flush:
                x = one_round(Path(d), flush, args.rate, args.seconds + 0.37 * r)
                print(f"{x['flush_s']:8.2f} {x['written']:8d} {x['recovered']:9d} {x['lost']:5d} "
                      f"{x['oldest_lost_s_before_kill']:27.3f} {x['file_bytes']:9d}  {x['cut']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
