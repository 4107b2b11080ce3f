"""``l1flow record``: scripted demonstrations on the simulated arm, recorded as MCAP episodes.

    l1flow record --task button-press-v3 --demos 20 --out episodes/
    l1flow record --task drawer-open-v3 --demos 20 --out episodes/ --offline   # no ROS, faster

By default the demonstrations go through the ROS node graph a user would run, one process
per node (as ``ros2 launch l1flow_ros teleop.launch.py`` starts them):
sim_robot_node (real-time physics, cameras) <- teleop_node (mode expert) on
/forward_position_controller/commands, recorder_node writing one file per episode,
episodes started / stopped / discarded through the recorder's services and the sim reset
through /sim/reset. Failed episodes are discarded. ``--offline`` writes the same topics
from the simulator directly in simulated time (see l1flow_ros/sim/offline_record.py). The
graph mode's orchestration is l1flow_ros/graph/recording.py.
"""

from __future__ import annotations

import argparse
import sys

NAME = "record"
HELP = "record scripted (Meta-World expert) demonstrations of a task as MCAP episodes"


def expert_speed_arg(text: str) -> float | str:
    """``--expert-speed``: a number in (0, 1] or ``auto``."""
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or auto, got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] or auto, got {text!r}")
    return v


def resolve_expert_speed(task: str, speed: float | str, quiet: bool = False) -> float:
    """``auto`` -> the speed :func:`~l1flow_ros.sim.metaworld_env.choose_expert_speed` finds for
    ``task`` (SimError naming the task when none works); a number is returned as it is."""
    if speed != "auto":
        return float(speed)
    from l1flow_ros.sim.metaworld_env import choose_expert_speed

    c = choose_expert_speed(task)
    if not quiet:
        print(f"expert speed for {task}: {c.speed:g} (solved at {c.summary()})")
    return c.speed


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
    parser.add_argument("--expert-speed", type=expert_speed_arg, default=1.0,
                        help="scale of the expert's steps in (0, 1]; 0.5 = slower, twice longer demos; "
                             "auto = the slowest of 0.5, 0.75, 1 at which the expert solves 4 of 5 seeds")
    parser.add_argument("--offline", action="store_true", help="no ROS: step the simulator directly")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.demos < 1:
        print("l1flow record: --demos must be >= 1", file=sys.stderr)
        return 2
    from l1flow_ros.sim.metaworld_env import SimError

    try:
        args.expert_speed = resolve_expert_speed(args.task, args.expert_speed, quiet=args.quiet)
        if args.offline:
            from l1flow_ros.sim.offline_record import record_expert_demos

            files = record_expert_demos(args.out, args.task, args.demos, args.seed, tuple(args.cameras),
                                        tuple(args.image_size), args.camera_rate, progress=not args.quiet,
                                        expert_speed=args.expert_speed)
        else:
            from l1flow_ros.graph.recording import record_demos_ros

            files = record_demos_ros(args.task, args.demos, args.out, tuple(args.cameras), tuple(args.image_size),
                                     args.seed, args.camera_rate, args.timeout, progress=not args.quiet,
                                     expert_speed=args.expert_speed)
    except (SimError, RuntimeError) as e:
        print(f"l1flow record: {e}", file=sys.stderr)
        return 1
    print(f"{len(files)} episodes in {args.out}")
    return 0
