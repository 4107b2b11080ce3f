"""Closed-loop policy episodes on the simulated arm in simulated time, no ROS.

The node graph (sim_robot_node -> perception_node -> inference_node -> executor_node)
is the reference evaluation; this loop runs the same policy contract as fast as the CPU
allows, for sweeps over many seeds and samplers:

- every ``dt`` (the action spec's) of simulated time, the cameras are rendered and the
  joint state read into :class:`~l1flow_ros.perception.preprocess.RawFrames` (stamped
  with the simulated time) and handed to ``policy.observe`` — the grid the dataset
  builder samples demonstrations on;
- every ``n_action_steps * dt``, ``policy.act()`` returns a chunk (H, A) of absolute
  targets, action k due at ``t_obs + (k + 1) dt`` (inference takes no simulated time);
- between due times the target is interpolated linearly at the physics rate (what the
  executor does at 500 Hz, at 80 Hz here), and the episode ends on success or after
  ``max_steps`` physics steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from l1flow_ros.perception.geometry import CameraIntrinsics
from l1flow_ros.perception.preprocess import (
    CameraFrame,
    ObservationHistory,
    RawFrames,
    frame_step,
    step_to_model,
)
from l1flow_ros.sim.metaworld_env import JOINT_NAMES, MetaWorldSim, SimError


class RolloutPolicy(Protocol):
    def reset(self) -> None: ...

    def observe(self, frames: RawFrames) -> None: ...

    def act(self) -> np.ndarray: ...  # (H, A) absolute actions


@dataclass(frozen=True)
class RolloutResult:
    seed: int
    success: bool
    steps: int  # physics steps taken
    chunks: int  # policy calls
    sim_time_s: float


def sim_frames(sim: MetaWorldSim, proprio_names: Sequence[str], stamp_ns: int, depth: bool = True) -> RawFrames:
    """The sensors of the simulated arm now, as the perception node would assemble them."""
    index = {n: i for i, n in enumerate(JOINT_NAMES)}
    missing = [n for n in proprio_names if n not in index]
    if missing:
        raise SimError(f"proprio names {missing} are not joints of the simulated arm {list(JOINT_NAMES)}")
    q = sim.joint_positions()
    frames = RawFrames(proprio=q[[index[n] for n in proprio_names]].astype(np.float32), stamp_ns=int(stamp_ns))
    for cam in sim.cfg.cameras:
        rgb, d = sim.render(cam)
        m = sim.camera_model(cam)
        frames.cameras[cam] = CameraFrame(
            color=rgb, depth=d if depth else None,
            intrinsics=CameraIntrinsics(m.fx, m.fy, m.cx, m.cy, m.width, m.height), stamp_ns=int(stamp_ns),
        )
    return frames


def rollout(
    sim: MetaWorldSim,
    policy: RolloutPolicy,
    seed: int,
    dt: float,
    n_action_steps: int,
    proprio_names: Sequence[str] = JOINT_NAMES[:4],
    max_steps: int | None = None,
    depth: bool = True,
    t0_ns: int = 1_000_000_000,
) -> RolloutResult:
    """One seeded episode driven by ``policy`` (see module docstring)."""
    per_action = int(round(dt / sim.dt))
    if per_action < 1 or abs(per_action * sim.dt - dt) > 1e-6:
        raise SimError(f"dt {dt} s must be a multiple of the physics step {sim.dt} s")
    if n_action_steps < 1:
        raise SimError(f"n_action_steps must be >= 1, got {n_action_steps}")
    limit = sim.max_episode_steps if max_steps is None else int(max_steps)
    sim.reset(seed)
    policy.reset()
    dt_ns = int(round(sim.dt * 1e9))
    t = int(t0_ns)
    target = sim.target.copy()  # (A,) hold where the hand is
    chunk: np.ndarray | None = None
    k_in_chunk = 0
    chunks = 0
    steps = 0
    while steps < limit and not sim.success:
        policy.observe(sim_frames(sim, proprio_names, t, depth))
        if chunk is None or k_in_chunk >= min(n_action_steps, chunk.shape[0]):
            chunk = np.asarray(policy.act(), dtype=np.float64)
            if chunk.ndim != 2 or chunk.shape[1] != target.shape[0] or not np.all(np.isfinite(chunk)):
                raise SimError(f"policy returned a chunk of shape {chunk.shape} (need (H, {target.shape[0]}), finite)")
            chunks += 1
            k_in_chunk = 0
        goal = chunk[k_in_chunk]
        k_in_chunk += 1
        for j in range(1, per_action + 1):  # linear between due times, at the physics rate
            sim.step(target + (goal - target) * (j / per_action))
            steps += 1
            t += dt_ns
            if sim.success or steps >= limit:
                break
        target = sim.check_target(goal)
    return RolloutResult(int(seed), bool(sim.success), steps, chunks, (t - t0_ns) * 1e-9)


def sim_calibration(sim: MetaWorldSim) -> dict[str, np.ndarray]:
    """{camera: 4x4 camera -> base} of the simulator's cameras (fixed cameras: constant)."""
    return {c: sim.camera_model(c).T_world_cam for c in sim.cfg.cameras}


class BundlePolicy:
    """A checkpoint bundle as a :class:`RolloutPolicy`: the perception node's preprocessing
    (frame_step + ObservationHistory at the action dt) and the runtime's PolicyRunner.

    ``latencies_s`` collects the wall time of each chunk (encode + sample).
    """

    def __init__(self, bundle_dir: str | Path, backend: str = "torch", seed: int = 0,
                 calibration: dict[str, np.ndarray] | None = None, **opts: Any) -> None:
        from l1flow_ros.inference.runner import PolicyRunner

        self.runner = PolicyRunner.open(bundle_dir, backend, seed=seed, with_encoder=True, warm_start=False, **opts)
        self.runner.warmup(2)  # first-call costs stay out of the latencies
        self.obs_spec = self.runner.manifest.observation
        self.action_spec = self.runner.manifest.action
        self.calibration = calibration
        self.history = ObservationHistory(self.obs_spec.n_obs_steps, period_s=self.action_spec.dt)
        self.latencies_s: list[float] = []
        self._t_ns = 0

    def reset(self) -> None:
        self.history.clear()

    def observe(self, frames: RawFrames) -> None:
        step = step_to_model(frame_step(self.obs_spec, frames, self.calibration))
        self.history.push(frames.stamp_ns, step)
        self._t_ns = frames.stamp_ns

    def act(self) -> np.ndarray:
        t = time.perf_counter()
        emb = self.runner.encode(self.history.get())
        actions = self.runner.act(emb, self._t_ns).actions  # (H, A)
        self.latencies_s.append(time.perf_counter() - t)
        return actions

    def close(self) -> None:
        self.runner.close()


def evaluate_bundle(
    bundle_dir: str | Path,
    task: str,
    seeds: Sequence[int],
    backend: str = "torch",
    render_size: tuple[int, int] | None = None,
    max_steps: int | None = None,
    **opts: Any,
) -> tuple[list[RolloutResult], list[float]]:
    """Seeded episodes of a bundle on ``task`` -> (results, chunk latencies in seconds).

    Cameras and proprio come from the bundle's observation spec; images are rendered at
    ``render_size`` (default: the spec's image size) and go through the same
    preprocessing as in training.
    """
    from l1flow_ros.policy.manifest import read_manifest
    from l1flow_ros.sim.metaworld_env import SimConfig

    m = read_manifest(bundle_dir)
    o, a = m.observation, m.action
    cams = tuple(o.cameras) if (o.use_rgb or o.num_points > 0) else ()
    sim = MetaWorldSim(SimConfig(task=task, cameras=cams, image_size=tuple(render_size or o.image_size)))
    pol = BundlePolicy(bundle_dir, backend, calibration=sim_calibration(sim), **opts)
    try:
        results = [
            rollout(sim, pol, s, a.dt, a.n_action_steps, o.proprio_names, max_steps, depth=o.num_points > 0)
            for s in seeds
        ]
    finally:
        pol.close()
        sim.close()
    return results, list(pol.latencies_s)
