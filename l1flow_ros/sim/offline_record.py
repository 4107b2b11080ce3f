"""Scripted demonstrations straight to MCAP episodes, without ROS, in simulated time.

Writes the same topics, types, frames and stamps the ROS graph (sim_robot_node +
teleop_node in expert mode + recorder_node) records, but steps physics as fast as the
CPU allows: stamps are simulated time from ``t0_ns``. Useful for building datasets
quickly and for tests; the node graph remains the reference path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.data.mcap_io import EpisodeWriter
from l1flow_ros.msgs.stamps import split_ns
from l1flow_ros.sim.metaworld_env import (
    JOINT_NAMES,
    MetaWorldSim,
    ScriptedExpert,
    SimConfig,
    calibration_dict,
)


def _header(stamp_ns: int, frame_id: str = "") -> dict[str, Any]:
    sec, nanosec = split_ns(stamp_ns)
    return {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": frame_id}


def _image(img: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> dict[str, Any]:
    a = np.ascontiguousarray(img, dtype="<f4" if encoding == "32FC1" else np.uint8)
    h, w = a.shape[:2]
    return {"header": _header(stamp_ns, frame_id), "height": h, "width": w, "encoding": encoding,
            "is_bigendian": 0, "step": a.nbytes // h, "data": a.tobytes()}


def _camera_info(m, stamp_ns: int, frame_id: str) -> dict[str, Any]:
    return {
        "header": _header(stamp_ns, frame_id), "height": m.height, "width": m.width,
        "distortion_model": "plumb_bob", "d": [0.0] * 5,
        "k": [m.fx, 0.0, m.cx, 0.0, m.fy, m.cy, 0.0, 0.0, 1.0],
        "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        "p": [m.fx, 0.0, m.cx, 0.0, 0.0, m.fy, m.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    }


def record_expert_episode(
    path: str | Path,
    task: str,
    seed: int,
    cameras: Sequence[str] = ("corner",),
    image_size: tuple[int, int] = (96, 96),
    camera_rate_hz: float = 15.0,
    max_steps: int | None = None,
    steps_after_success: int = 8,
    t0_ns: int = 1_000_000_000_000,
    sim: MetaWorldSim | None = None,
    expert_speed: float = 1.0,
) -> tuple[Path, bool]:
    """One scripted episode -> ``path`` (.mcap). Returns (path, success).

    The episode ends ``steps_after_success`` physics steps after the task is solved, or
    at ``max_steps`` (default: the task horizon). Pass ``sim`` to reuse a simulator
    (its config must match ``task``, ``cameras`` and ``image_size``).
    """
    if sim is None:
        sim = MetaWorldSim(SimConfig(task=task, cameras=tuple(cameras), image_size=tuple(image_size)))
    elif (sim.cfg.task, tuple(sim.cfg.cameras), tuple(sim.cfg.image_size)) != (task, tuple(cameras), tuple(image_size)):
        raise ValueError("sim config does not match task / cameras / image_size")
    expert = ScriptedExpert(task, sim.action_scale, sim.cfg.servo_gain, expert_speed)
    dt_ns = int(round(sim.dt * 1e9))
    frame_every = max(1, int(round(1.0 / (camera_rate_hz * sim.dt))))
    limit = sim.max_episode_steps if max_steps is None else int(max_steps)
    models = {c: sim.camera_model(c) for c in cameras}
    w = EpisodeWriter(path)
    w.metadata.update(
        task=task, seed=int(seed), source="offline_record", cameras=list(cameras), expert_speed=expert_speed,
        action_topic="/forward_position_controller/commands", joint_states_topic="/joint_states",
        calibration=calibration_dict([models[c] for c in cameras]) if cameras else {},
    )
    try:
        state = sim.reset(seed)
        t = int(t0_ns)
        after = -1
        for k in range(limit + 1):
            # Observation of the current physics state, stamped with its time.
            js = {"header": _header(t), "name": list(JOINT_NAMES), "position": sim.joint_positions().tolist(),
                  "velocity": sim.joint_velocities().tolist(), "effort": []}
            w.write("/joint_states", "sensor_msgs/msg/JointState", js, t)
            if cameras and k % frame_every == 0:
                for c in cameras:
                    rgb, depth = sim.render(c)
                    fid = f"{c}_color_optical_frame"
                    w.write(f"/{c}/color/image_raw", "sensor_msgs/msg/Image", _image(rgb, "rgb8", t, fid), t)
                    w.write(f"/{c}/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image",
                            _image(depth, "32FC1", t, fid), t)
                    w.write(f"/{c}/color/camera_info", "sensor_msgs/msg/CameraInfo", _camera_info(models[c], t, fid), t)
            if k == limit or (after >= 0 and k - after >= steps_after_success):
                break
            # The expert reacts to this state; its command is received right away.
            target = expert.target(state)
            w.write("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray",
                    {"data": [float(x) for x in target]}, t + 1)
            res = sim.step(target)
            state = res.state
            t += dt_ns
            if res.success and after < 0:
                after = k + 1
        path = w.close(success=bool(sim.success), steps=int(sim.steps), start_ns=int(t0_ns), end_ns=int(t))
    except BaseException:
        w.discard()
        raise
    return Path(path), bool(sim.success)


def record_expert_demos(
    out_dir: str | Path,
    task: str,
    num: int,
    seed: int = 0,
    cameras: Sequence[str] = ("corner",),
    image_size: tuple[int, int] = (96, 96),
    camera_rate_hz: float = 15.0,
    max_attempts: int | None = None,
    progress: bool = True,
    expert_speed: float = 1.0,
) -> list[Path]:
    """``num`` successful scripted episodes (seeds from ``seed`` upward, failures skipped)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    sim = MetaWorldSim(SimConfig(task=task, cameras=tuple(cameras), image_size=tuple(image_size)))
    kept: list[Path] = []
    attempts = max_attempts if max_attempts is not None else max(2 * num, num + 10)
    bar = tqdm(total=num, desc=f"demos {task}", unit="ep", disable=not progress)
    s = seed
    try:
        while len(kept) < num and s < seed + attempts:
            path, ok = record_expert_episode(
                out_dir / f"episode_{s:05d}.mcap", task, s, cameras, image_size, camera_rate_hz, sim=sim,
                t0_ns=1_000_000_000_000 + s * 1_000_000_000_000, expert_speed=expert_speed,
            )
            if ok:
                kept.append(path)
                bar.update(1)
            else:
                path.unlink(missing_ok=True)
            s += 1
    finally:
        bar.close()
        sim.close()
    if len(kept) < num:
        raise RuntimeError(f"{task}: only {len(kept)} of {num} scripted episodes succeeded in {attempts} seeds")
    return kept

