"""``l1flow record``: scripted demonstrations on the simulated arm, recorded as MCAP episodes.

    l1flow record --task button-press-v3 --demos 20 --out episodes/
    l1flow record --task drawer-open-v3 --demos 20 --out episodes/ --offline   # no ROS, faster

By default the demonstrations go through the ROS node graph a user would run:
sim_robot_node (real-time physics, cameras) <- teleop_node (mode expert) on
/forward_position_controller/commands, recorder_node writing one file per episode,
episodes started / stopped / discarded through the recorder's services and the sim reset
through /sim/reset. Failed episodes are discarded. ``--offline`` writes the same topics
from the simulator directly in simulated time (see l1flow_ros/sim/offline_record.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NAME = "record"
HELP = "record scripted (Meta-World expert) demonstrations of a task as MCAP episodes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="Meta-World v3 task, e.g. button-press-v3")
    parser.add_argument("--demos", type=int, default=10, help="successful episodes to keep")
    parser.add_argument("--out", required=True, help="episode folder")
    parser.add_argument("--cameras", nargs="+", default=["corner"])
    parser.add_argument("--image-size", nargs=2, type=int, default=(96, 96), metavar=("H", "W"))
    parser.add_argument("--camera-rate", type=float, default=15.0, help="camera frame rate, Hz")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then +1 per episode)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="seconds per episode before it is discarded (0 = 1.5 x the task horizon)")
    parser.add_argument("--expert-speed", type=float, default=1.0,
                        help="scale of the expert's steps in (0, 1]; 0.5 = slower, twice longer demos")
    parser.add_argument("--offline", action="store_true", help="no ROS: step the simulator directly")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.demos < 1:
        print("l1flow record: --demos must be >= 1", file=sys.stderr)
        return 2
    from l1flow_ros.sim.metaworld_env import SimError

    try:
        if args.offline:
            from l1flow_ros.sim.offline_record import record_expert_demos

            files = record_expert_demos(args.out, args.task, args.demos, args.seed, tuple(args.cameras),
                                        tuple(args.image_size), args.camera_rate, progress=not args.quiet,
                                        expert_speed=args.expert_speed)
        else:
            files = record_demos_ros(args.task, args.demos, args.out, tuple(args.cameras), tuple(args.image_size),
                                     args.seed, args.camera_rate, args.timeout, progress=not args.quiet,
                                     expert_speed=args.expert_speed)
    except (SimError, RuntimeError) as e:
        print(f"l1flow record: {e}", file=sys.stderr)
        return 1
    print(f"{len(files)} episodes in {args.out}")
    return 0


def record_demos_ros(
    task: str,
    num: int,
    out_dir: str | Path,
    cameras: tuple[str, ...] = ("corner",),
    image_size: tuple[int, int] = (96, 96),
    seed: int = 0,
    camera_rate_hz: float = 15.0,
    timeout_s: float = 0.0,
    progress: bool = True,
    max_attempts: int | None = None,
    expert_speed: float = 1.0,
) -> list[Path]:
    """Run sim + expert teleop + recorder in this process and keep ``num`` successful episodes."""
    import threading

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger
    from tqdm import tqdm

    from l1flow_ros.nodes.composition import call_service
    from l1flow_ros.nodes.recorder_node import RecorderNode
    from l1flow_ros.nodes.sim_robot_node import SimRobotNode
    from l1flow_ros.nodes.teleop_node import TeleopNode

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = out_dir / "calibration.yaml"
    ctx = Context()
    rclpy.init(context=ctx)
    nodes = []
    ex = None
    try:
        sim = SimRobotNode(context=ctx, parameter_overrides=[
            Parameter("task", value=task), Parameter("cameras", value=list(cameras)),
            Parameter("image_height", value=int(image_size[0])), Parameter("image_width", value=int(image_size[1])),
            Parameter("camera_rate_hz", value=float(camera_rate_hz)), Parameter("seed", value=int(seed)),
            Parameter("calibration_file", value=str(calib)),
        ])
        nodes.append(sim)
        teleop = TeleopNode(context=ctx, parameter_overrides=[
            Parameter("mode", value="expert"), Parameter("task", value=task), Parameter("enabled", value=False),
            Parameter("expert_speed", value=float(expert_speed)),
        ])
        nodes.append(teleop)
        rec = RecorderNode(context=ctx, parameter_overrides=[
            Parameter("output_dir", value=str(out_dir)), Parameter("cameras", value=list(cameras)),
            Parameter("task", value=task), Parameter("calibration_file", value=str(calib)),
        ])
        nodes.append(rec)
        ctl = rclpy.create_node("l1flow_record", context=ctx)
        nodes.append(ctl)
        clients = {n: ctl.create_client(Trigger, s) for n, s in (
            ("reset", "/sim/reset"), ("start", "/recorder/start"), ("stop", "/recorder/stop"),
            ("discard", "/recorder/discard"))}
        ex = MultiThreadedExecutor(num_threads=4, context=ctx)
        for n in nodes:
            ex.add_node(n)
        threading.Thread(target=ex.spin, daemon=True).start()

        def call(name: str) -> Trigger.Response:
            return call_service(clients[name], Trigger.Request(), 10.0)

        limit = timeout_s if timeout_s > 0 else 1.5 * sim.sim.max_episode_steps * sim.sim.dt
        kept: list[Path] = []
        attempts = max_attempts if max_attempts is not None else max(2 * num, num + 10)
        bar = tqdm(total=num, desc=f"demos {task}", unit="ep", disable=not progress)
        for attempt in range(attempts):
            if len(kept) >= num:
                break
            teleop.set_parameters([Parameter("enabled", value=False)])
            if attempt > 0:
                call("reset")  # seeds: seed (the sim's first episode), seed + 1, ...
            time.sleep(3.0 / camera_rate_hz)  # frames of the new episode before recording
            if not call("start").success:
                raise RuntimeError("recorder refused to start an episode")
            teleop.set_parameters([Parameter("enabled", value=True)])
            t0 = time.monotonic()
            while not sim.sim.success and time.monotonic() - t0 < limit:
                time.sleep(0.02)
            if sim.sim.success:
                time.sleep(0.3)  # a few frames of the solved state
                r = call("stop")
                if not r.success:
                    raise RuntimeError(f"recorder could not save the episode: {r.message}")
                kept.append(Path(r.message))
                bar.update(1)
            else:
                call("discard")
        bar.close()
        teleop.set_parameters([Parameter("enabled", value=False)])
        if len(kept) < num:
            raise RuntimeError(f"{task}: only {len(kept)} of {num} scripted episodes succeeded in {attempts} tries")
        return kept
    finally:
        if ex is not None:
            ex.shutdown()
        for n in reversed(nodes):
            n.destroy_node()
        ctx.try_shutdown()
