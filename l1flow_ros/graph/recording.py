"""Graph recording: scripted demonstrations through the ROS node graph, one process per node.

sim_robot_node (real-time physics, cameras) <- teleop_node (mode expert) on
/forward_position_controller/commands, recorder_node writing one file per episode, as
``ros2 launch l1flow_ros teleop.launch.py`` starts them (:class:`~l1flow_ros.graph.launcher.ProcessGraph`).
This process drives the episodes through the nodes' services (episodes started / stopped /
discarded through the recorder's, the sim reset through /sim/reset, teleop's ``enabled``
parameter) and keeps only the episodes the recorder saved as solved; ``l1flow record`` and
``l1flow demo`` call :func:`record_demos_ros`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from tqdm import tqdm

from l1flow_ros.data.mcap_io import read_metadata
from l1flow_ros.graph.launcher import ProcessGraph
from l1flow_ros.nodes import qos
from l1flow_ros.nodes.composition import Composition, call_service

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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = record_graph_params(out_dir / "record_graph.yaml", task, out_dir, cameras, image_size, seed,
                                 camera_rate_hz, expert_speed)
    # Left in reverse: the graph stops first, then this process's node.
    with Composition() as rig, ProcessGraph(params, log_file=log_file or out_dir / "nodes.log") as graph:
        ctl = rclpy.create_node("l1flow_record", context=rig.context)
        solved = threading.Event()
        latched = qos.LATCHED
        ctl.create_subscription(Bool, "/sim/success", lambda m: solved.set() if m.data else solved.clear(),
                                latched)
        clients = {n: ctl.create_client(Trigger, s) for n, s in (
            ("reset", "/sim/reset"), ("start", "/recorder/start"), ("stop", "/recorder/stop"),
            ("discard", "/recorder/discard"))}
        teleop_params = ctl.create_client(SetParameters, "/teleop_node/set_parameters")
        rig.add(ctl)

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
            r = call("start")
            if not r.success:  # e.g. the disk is full: the recorder says so
                raise RuntimeError(f"recorder refused to start an episode: {r.message}")
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
