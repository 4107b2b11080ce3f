"""Simulated arm costs, measured side by side in one run.

    python bench/bench_sim.py [--task button-press-v3] [--size 96] [--reps 30]

1. One RGB + depth frame per camera: the fast settings this package uses (shadows,
   reflections, skybox off, no multisampling) against Meta-World's defaults, interleaved
   so both see the same machine load; prints the speed-up.
2. One physics step (12.5 ms of simulated time) with the absolute-target servo, as a
   real-time factor.
3. The scripted expert through the absolute interface: success and steps per episode.
4. Offline demonstration recording (MCAP) and dataset building (zarr): seconds per
   episode, for planning `l1flow record --offline` + `l1flow dataset build`.

``--all-tasks N`` instead builds every Meta-World v3 task (with a camera rendered) and
runs its scripted expert on seeds 0..N-1 through the absolute-target interface.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import mujoco

from l1flow_ros.sim.metaworld_env import MetaWorldSim, SimConfig, run_expert_episode


def _default_renderer(sim: MetaWorldSim, h: int, w: int) -> mujoco.Renderer:
    """A renderer with Meta-World's model defaults (its own copy of the model)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    model = ALL_V3_ENVIRONMENTS[sim.cfg.task]().model  # untouched vis settings
    return mujoco.Renderer(model, height=h, width=w), model


def _rgbd(r: mujoco.Renderer, data, cam: str) -> None:
    r.update_scene(data, camera=cam)
    r.disable_depth_rendering()
    r.render()
    r.enable_depth_rendering()
    r.render()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="button-press-v3")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--cameras", nargs="+", default=["corner", "topview"])
    ap.add_argument("--all-tasks", type=int, default=0, metavar="N", help="expert sweep over all tasks, N seeds")
    ap.add_argument("--expert-speeds", action="store_true",
                    help="the recording speed `--expert-speed auto` picks for every task")
    a = ap.parse_args()
    if a.expert_speeds:
        expert_speeds()
        return
    if a.all_tasks:
        all_tasks(a.all_tasks)
        return

    sim = MetaWorldSim(SimConfig(task=a.task, cameras=tuple(a.cameras), image_size=(a.size, a.size)))
    sim.reset(0)
    slow, slow_model = _default_renderer(sim, a.size, a.size)
    slow_data = mujoco.MjData(slow_model)
    slow_data.qpos[:] = sim.data.qpos
    mujoco.mj_forward(slow_model, slow_data)
    print(f"task {a.task}, {a.size}x{a.size} px, {a.reps} frames per camera, MUJOCO_GL={os.environ['MUJOCO_GL']}")
    print(f"{'camera':14s} {'fast ms':>9s} {'default ms':>11s} {'speed-up':>9s}")
    for cam in a.cameras:
        sim.render(cam)
        _rgbd(slow, slow_data, cam)  # warm up both
        fast_t, slow_t = [], []
        for _ in range(a.reps):  # interleaved: same load for both
            t = time.perf_counter()
            sim.render(cam)
            fast_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            _rgbd(slow, slow_data, cam)
            slow_t.append(time.perf_counter() - t)
        f, s = statistics.median(fast_t) * 1e3, statistics.median(slow_t) * 1e3
        print(f"{cam:14s} {f:9.1f} {s:11.1f} {s / f:8.1f}x")
    slow.close()

    n = 400
    t = time.perf_counter()
    for _ in range(n):
        sim.step()
    step = (time.perf_counter() - t) / n
    print(f"physics step: {step * 1e3:.2f} ms for {sim.dt * 1e3:.1f} ms simulated -> real-time factor {sim.dt / step:.1f}")

    steps = []
    ok = 0
    for seed in range(5):
        s, k = run_expert_episode(sim, seed)
        ok += s
        steps.append(k)
    print(f"scripted expert: {ok}/5 solved, steps {steps} (horizon {sim.max_episode_steps})")

    import tempfile
    from pathlib import Path

    import l1flow_ros.data.store  # noqa: F401  (imports torch: a one-off cost kept out of the timing)
    from l1flow_ros.data.dataset_build import build_dataset, sim_dataset_config
    from l1flow_ros.sim.offline_record import record_expert_episode

    with tempfile.TemporaryDirectory() as tmp:
        eps = Path(tmp) / "eps"
        t = time.perf_counter()
        for seed in range(3):
            record_expert_episode(eps / f"ep{seed}.mcap", a.task, seed, tuple(a.cameras), (a.size, a.size), sim=sim)
        rec = (time.perf_counter() - t) / 3
        t = time.perf_counter()
        rep = build_dataset(eps, Path(tmp) / "store.zarr", sim_dataset_config(tuple(a.cameras), (a.size, a.size)),
                            progress=False)
        build = (time.perf_counter() - t) / 3
    print(f"offline record: {rec:.2f} s per episode ({len(a.cameras)} cameras at 15 Hz); "
          f"dataset build: {build:.2f} s per episode ({rep.steps_written / 3:.0f} steps at dt 0.1 s)")
    sim.close()


def all_tasks(n: int) -> None:
    from l1flow_ros.sim.metaworld_env import task_names

    total = solved = 0
    print("| task | solved | steps |\n|---|---:|---|")
    for task in task_names():
        sim = MetaWorldSim(SimConfig(task=task, cameras=("corner",), image_size=(16, 16)))
        sim.render("corner")
        res = [run_expert_episode(sim, s) for s in range(n)]
        sim.close()
        k = sum(ok for ok, _ in res)
        total, solved = total + n, solved + k
        print(f"| {task} | {k}/{n} | {[steps for _, steps in res]} |", flush=True)
    print(f"all tasks: {solved}/{total} episodes solved")


def expert_speeds() -> None:
    """Per task: the speed ``choose_expert_speed`` picks (seeds 0-4, 4 solved) and what each tried speed solved."""
    from collections import Counter

    from l1flow_ros.sim.metaworld_env import task_names, try_expert_speeds

    picked: Counter[str] = Counter()
    print("| task | speed | solved at each speed tried (seeds 0-4) |\n|---|---:|---|")
    for task in task_names():
        c = try_expert_speeds(task)
        speed = "none" if c.speed is None else f"{c.speed:g}"
        picked[speed] += 1
        print(f"| {task} | {speed} | {c.summary()} |", flush=True)
    print("speeds picked: " + ", ".join(f"{k}: {v}" for k, v in sorted(picked.items())))


if __name__ == "__main__":
    main()
