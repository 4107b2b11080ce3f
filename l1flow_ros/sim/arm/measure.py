"""What the simulated Panda and its lift expert do, measured (docs/BENCHMARKS.md).

    python -m l1flow_ros.sim.arm.measure --seeds 50

Prints, per task, the expert's success over seeded episodes (each run to the end of the
episode, so a cube dropped after the lift shows), its commands against the arm's limits,
and the cost of physics and IK per step; then the cost of an RGB-D frame per camera.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from l1flow_ros.sim.arm.expert import PandaExpert
from l1flow_ros.sim.arm.panda import (
    CAMERAS,
    GRIPPER_MAX,
    HOME,
    JOINT_NAMES,
    MAX_VELOCITY,
    TASKS,
    PandaConfig,
    PandaSim,
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--size", type=int, default=96, help="camera image height and width, px")
    ap.add_argument("--frames", type=int, default=50, help="frames rendered per camera for the timing")
    a = ap.parse_args(argv)
    for task in a.tasks:
        measure_task(task, a.seeds)
    measure_render(a.size, a.frames)


def measure_task(task: str, seeds: int) -> None:
    sim = PandaSim(PandaConfig(task=task, cameras=()))
    expert = PandaExpert(sim)
    solved, held, first, out_of_limits = 0, 0, [], 0
    speed_ratio = np.zeros(len(JOINT_NAMES))  # fastest command / velocity limit, per joint
    t_phys = t_ik = 0.0
    n = 0
    for seed in range(seeds):
        sim.reset(seed)
        expert.reset()
        prev = np.concatenate([HOME[:7], [GRIPPER_MAX]])
        hit = None
        for k in range(sim.max_episode_steps):
            t0 = time.perf_counter()
            q = expert.act()
            t1 = time.perf_counter()
            res = sim.step(q)
            t_phys += time.perf_counter() - t1
            t_ik += t1 - t0
            n += 1
            out_of_limits += bool(np.any(q < sim.lower) or np.any(q > sim.upper))
            speed_ratio = np.maximum(speed_ratio, np.abs(q - prev) / sim.dt / MAX_VELOCITY)
            prev = q
            if res.success and hit is None:
                hit = k + 1
        solved += hit is not None
        held += sim.solved()
        if hit is not None:
            first.append(hit)
    ep = sim.max_episode_steps
    print(f"{task}, seeds 0-{seeds - 1}: {solved}/{seeds} solved, {held}/{seeds} still solved at the end "
          f"of the episode ({ep} steps = {ep * sim.dt:.1f} s)")
    if first:
        print(f"  solved after {min(first)}-{max(first)} steps ({min(first) * sim.dt:.2f}-{max(first) * sim.dt:.2f} s)")
    j = int(np.argmax(speed_ratio[:7]))
    print(f"  commands outside the joint limits: {out_of_limits} of {n}; fastest command / velocity limit: "
          f"arm {speed_ratio[j]:.3f} ({JOINT_NAMES[j]}), gripper {speed_ratio[7]:.3f}")
    print(f"  per {sim.dt * 1e3:.0f} ms step: physics ({sim.cfg.n_substeps} x {sim.model.opt.timestep * 1e3:g} ms) "
          f"{t_phys / n * 1e3:.2f} ms, IK {t_ik / n * 1e3:.2f} ms -> real-time factor {sim.dt / ((t_phys + t_ik) / n):.0f}")
    sim.close()


def measure_render(size: int, frames: int) -> None:
    """Both mesh sets side by side, interleaved frame by frame."""
    sims = {k: PandaSim(PandaConfig(image_size=(size, size), meshes=k)) for k in ("collision", "visual")}
    render = {(cam, k): 0.0 for cam in CAMERAS for k in sims}
    for s in sims.values():
        s.reset(0)
        for cam in CAMERAS:
            s.render(cam)  # the GL context and scene are made on the first frame
    for _ in range(frames):
        for cam in CAMERAS:
            for k, s in sims.items():
                t0 = time.perf_counter()
                s.render(cam)
                render[cam, k] += (time.perf_counter() - t0) / frames
    for cam in CAMERAS:
        print(f"  {cam} {size} x {size} RGB + depth, one pass: {render[cam, 'collision'] * 1e3:.1f} ms a frame "
              f"(meshes='collision', the default), {render[cam, 'visual'] * 1e3:.1f} ms (meshes='visual')")
    for s in sims.values():
        s.close()


if __name__ == "__main__":
    main()
