"""The bundled model through the node graph: one process per node vs one process, side by side.

    python bench/bench_graph.py                       # 10 episodes x 2 rounds per condition
    python bench/bench_graph.py --episodes 20 --rounds 1 --json bench_graph.json

Four conditions, run interleaved round by round so that a drifting machine moves them alike:
the graph as ``l1flow run`` / ``ros2 launch`` start it (one process per node) and composed
into one process, each on an idle machine and with one core kept busy by another process
(``python -c "while True: pass"``). Each is ``l1flow eval`` of ``models/default``
in a fresh process (``--one-process`` for the composed graph); per condition the rounds are pooled:
success, observation -> chunk p50 / p99, the executor's control-period error p50 / p99 / max
(its last diagnostics window) and missed control ticks per minute at 500 Hz, beside the
machine's floor: the ticks a bare loop to the same deadlines, at the same priority, in a
process of its own, missed over the same seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONDITIONS = (
    ("process per node", False, False),
    ("one process", True, False),
    ("process per node, one core busy", False, True),
    ("one process, one core busy", True, True),
)


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


# The machine's floor: bench_jitter's bare loop to the executor's deadlines (500 Hz,
# SCHED_FIFO 50 when permitted, 200 µs spin) in a process of its own, over the same seconds
# as a run. Ticks it misses are stalls of the whole machine, which no node can avoid.
def _floor() -> tuple[mp.Process, object, object]:
    from bench_jitter import _floor_process

    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_floor_process, args=(500.0, 200, 24 * 3600.0, 50, out, stop), daemon=True)
    proc.start()
    return proc, stop, out


def _floor_result(floor: tuple[mp.Process, object, object]) -> dict:
    proc, stop, out = floor
    stop.set()
    r = out.get(timeout=30)
    proc.join(timeout=10)
    return {"floor_missed": r["missed"], "floor_s": r["seconds"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(ROOT / "models" / "default"))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=100000)
    ap.add_argument("--only", default="", help="comma-separated condition numbers (1-4) to run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))  # its own, away from tests
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    only = {int(x) for x in args.only.split(",") if x} or set(range(1, len(CONDITIONS) + 1))
    conds = [c for i, c in enumerate(CONDITIONS, 1) if i in only]
    runs: dict[str, list[dict]] = {c[0]: [] for c in conds}
    logs = Path("bench_graph_logs")
    for r in range(args.rounds):
        for label, composed, busy in conds:
            out = Path(tempfile.mkdtemp()) / "res.json"
            cmd = [sys.executable, "-m", "l1flow_ros.cli", "eval", "--bundle", args.bundle, "--episodes",
                   str(args.episodes), "--seed", str(args.seed + 1000 * r), "--json", str(out), "--node-log",
                   str(logs / f"{label.replace(' ', '_').replace(',', '')}_{r}.log")]
            hog = _busy() if busy else None
            floor = _floor()
            try:
                t0 = time.monotonic()
                proc = subprocess.run(cmd + (["--one-process"] if composed else []), capture_output=True, text=True)
            finally:
                fl = _floor_result(floor)
                if hog is not None:
                    hog.kill()
                    hog.wait()
            if proc.returncode != 0:
                print(f"round {r + 1} {label}: l1flow eval failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
                return 1
            d = json.loads(out.read_text())
            res = argparse.Namespace(**d)
            d["wall_s"] = round(time.monotonic() - t0, 1)
            d.update(fl)
            runs[label].append(d)
            print(f"round {r + 1} {label}: {res.successes}/{res.episodes}, obs->chunk p99 "
                  f"{res.chunk_latency_ms_p99:.1f} ms, period error p99 {res.period_error_us_p99:.0f} us, "
                  f"missed {res.missed_ticks} in {res.measured_s:.0f} s (bare loop: {fl['floor_missed']} in "
                  f"{fl['floor_s']:.0f} s)", flush=True)
    print()
    print("| graph | success | obs → chunk p50 / p99 (ms) | control period error p50 / p99 / max (µs) "
          "| missed ticks / min | bare loop's missed ticks / min |")
    print("|---|---|---|---|---|---|")
    for label, rs in runs.items():
        ok = sum(x["successes"] for x in rs)
        n = sum(x["episodes"] for x in rs)
        mins = sum(x["measured_s"] for x in rs) / 60.0
        missed = sum(x["missed_ticks"] for x in rs)
        fmiss = sum(x["floor_missed"] for x in rs)
        fmins = sum(x["floor_s"] for x in rs) / 60.0

        def rng(key: str, fmt: str = "{:.1f}", rs=rs) -> str:
            vals = [x[key] for x in rs]
            return fmt.format(min(vals)) if len(vals) == 1 or min(vals) == max(vals) else (
                fmt.format(min(vals)) + "–" + fmt.format(max(vals)))

        print(f"| {label} | {ok}/{n} | {rng('chunk_latency_ms_p50')} / {rng('chunk_latency_ms_p99')} "
              f"| {rng('period_error_us_p50', '{:.0f}')} / {rng('period_error_us_p99', '{:.0f}')} / "
              f"{rng('period_error_us_max', '{:.0f}')} | {missed / max(mins, 1e-9):.1f} ({missed} in "
              f"{60 * mins:.0f} s) | {fmiss / max(fmins, 1e-9):.1f} ({fmiss} in {60 * fmins:.0f} s) |")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
