"""``l1flow record``: scripted demonstrations on the simulated arm, recorded as MCAP episodes.

    l1flow record --task button-press-v3 --demos 20 --out episodes/
    l1flow record --task drawer-open-v3 --demos 20 --out episodes/ --offline   # no ROS, faster

By default the demonstrations go through the ROS node graph a user would run, one process
per node (as ``ros2 launch l1flow_ros teleop.launch.py`` starts them):
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


# Meta-World's task horizon: 500 physics steps of 12.5 ms.
TASK_HORIZON_S = 500 * 0.0125


def record_graph_params(path: Path, task: str, out_dir: Path, cameras: tuple[str, ...],
                        image_size: tuple[int, int], seed: int, camera_rate_hz: float,
                        expert_speed: float) -> Path:
    """The recording graph's parameter file: sim_robot_node, teleop_node (expert), recorder_node."""
    import yaml

    calib = str((out_dir / "calibration.yaml").resolve())
    params = {
        "sim_robot_node": {"task": task, "cameras": list(cameras), "image_height": int(image_size[0]),
                           "image_width": int(image_size[1]), "camera_rate_hz": float(camera_rate_hz),
                           "seed": int(seed), "calibration_file": calib},
        "teleop_node": {"mode": "expert", "task": task, "enabled": False, "expert_speed": float(expert_speed)},
        "recorder_node": {"output_dir": str(out_dir.resolve()), "cameras": list(cameras), "task": task,
                          "calibration_file": calib},
    }
    path.write_text(yaml.safe_dump({k: {"ros__parameters": v} for k, v in params.items()}, sort_keys=False))
    return path


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
    log_file: str | Path | None = None,
) -> list[Path]:
    """Run sim + expert teleop + recorder, one process each, and keep ``num`` successful episodes.

    This process drives the episodes through the nodes' services (``/sim/reset``,
    ``/recorder/{start,stop,discard}``, teleop's ``enabled`` parameter) and watches
    ``/sim/success``. The nodes' output goes to ``log_file`` (default: ``out_dir/nodes.log``).
    """
    import threading

    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger
    from tqdm import tqdm

    from l1flow_ros.data.mcap_io import read_metadata
    from l1flow_ros.graph.launcher import ProcessGraph
    from l1flow_ros.nodes.composition import call_service

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = record_graph_params(out_dir / "record_graph.yaml", task, out_dir, cameras, image_size, seed,
                                 camera_rate_hz, expert_speed)
    graph = ProcessGraph(params, log_file=log_file or out_dir / "nodes.log")
    ctx = Context()
    rclpy.init(args=[], context=ctx)
    ctl, ex, spinner = None, None, None
    try:
        graph.start()
        ctl = rclpy.create_node("l1flow_record", context=ctx)
        solved = threading.Event()
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        ctl.create_subscription(Bool, "/sim/success", lambda m: solved.set() if m.data else solved.clear(),
                                latched)
        clients = {n: ctl.create_client(Trigger, s) for n, s in (
            ("reset", "/sim/reset"), ("start", "/recorder/start"), ("stop", "/recorder/stop"),
            ("discard", "/recorder/discard"))}
        teleop_params = ctl.create_client(SetParameters, "/teleop_node/set_parameters")
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(ctl)
        spinner = threading.Thread(target=ex.spin, daemon=True)
        spinner.start()

        def call(name: str) -> Trigger.Response:
            graph.check()
            return call_service(clients[name], Trigger.Request(), 30.0)

        def teleop(enabled: bool) -> None:
            graph.check()
            req = SetParameters.Request(parameters=[Parameter("enabled", value=enabled).to_parameter_msg()])
            res = call_service(teleop_params, req, 30.0)
            if not res.results[0].successful:
                raise RuntimeError(f"teleop_node refused enabled={enabled}: {res.results[0].reason}")

        limit = timeout_s if timeout_s > 0 else 1.5 * TASK_HORIZON_S / max(expert_speed, 0.1)
        kept: list[Path] = []
        attempts = max_attempts if max_attempts is not None else max(2 * num, num + 10)
        bar = tqdm(total=num, desc=f"demos {task}", unit="ep", disable=not progress)
        for attempt in range(attempts):
            if len(kept) >= num:
                break
            teleop(False)
            if attempt > 0:
                call("reset")  # seeds: seed (the sim's first episode), seed + 1, ...
            t_end = time.monotonic() + 30.0
            while solved.is_set() and time.monotonic() < t_end:  # the reset's "not solved" arrives
                time.sleep(0.01)
            time.sleep(3.0 / camera_rate_hz)  # frames of the new episode before recording
            if not call("start").success:
                raise RuntimeError("recorder refused to start an episode")
            teleop(True)
            t0 = time.monotonic()
            while not solved.is_set() and time.monotonic() - t0 < limit:
                time.sleep(0.02)
            if solved.is_set():
                time.sleep(0.5)  # a few frames of the solved state
                r = call("stop")
                if not r.success:
                    raise RuntimeError(f"recorder could not save the episode: {r.message}")
                # The recorder (another process) must have heard the success too: under load
                # it can lag this process; such an episode is saved as unsolved, so not kept.
                if read_metadata(r.message).get("success") is True:
                    kept.append(Path(r.message))
                    bar.update(1)
                else:
                    Path(r.message).unlink(missing_ok=True)
            else:
                call("discard")
        bar.close()
        teleop(False)
        if len(kept) < num:
            raise RuntimeError(f"{task}: only {len(kept)} of {num} scripted episodes succeeded in {attempts} tries"
                               f" (node output: {graph.log_file})")
        return kept
    finally:
        graph.stop()
        if ex is not None:
            ex.shutdown()
        if ctl is not None:
            ctl.destroy_node()
        ctx.try_shutdown()
        if spinner is not None:
            spinner.join(timeout=5.0)
