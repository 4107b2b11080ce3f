"""Perception latency per stage (decode, fuse, encode) and total, p50 / p99, for several view counts.

Runs exactly what perception_node's worker runs for one synchronised set
(sensor_conv decoding of Image / CameraInfo / JointState messages, THE
preprocessing path ``frame_step``, the observation history, the bundle's
encoder through the runtime backend), without ROS transport, on synthetic
RGB-D frames of a table scene seen by cameras around it. All configurations
run side by side in one process, interleaved, so their ratio is meaningful
on a shared machine.

    python bench/bench_perception.py --views 2 4 --iters 200
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def look_at(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 camera (optical: x right, y down, z forward) -> base, camera at ``pos`` looking at ``target``."""
    f = (target - pos) / np.linalg.norm(target - pos)
    x = np.cross(f, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(f, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, f], axis=1)
    T[:3, 3] = pos
    return T


def render_depth(T: np.ndarray, intr, boxes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Depth (H, W) metres of the table plane z = 0 plus axis-aligned boxes, by ray casting."""
    v, u = np.mgrid[0 : intr.height, 0 : intr.width].astype(np.float64)
    d_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)  # (H, W, 3)
    d = d_cam @ T[:3, :3].T  # ray directions in base, z_cam = 1
    o = T[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[..., 2] < 0, -o[2] / d[..., 2], np.inf)  # table plane
        for lo, hi in boxes:  # slab test
            t0 = (lo - o) / d
            t1 = (hi - o) / d
            tn = np.max(np.minimum(t0, t1), axis=-1)
            tf = np.min(np.maximum(t0, t1), axis=-1)
            hit = (tn <= tf) & (tn > 0)
            t = np.where(hit & (tn < t), tn, t)
    t[~np.isfinite(t)] = 0.0  # no return: invalid depth, as a RealSense reports it
    return t.astype(np.float32)  # t is the z-depth since z_cam = 1


def make_setup(n_views: int, args, tmp: Path, seed: int = 0):
    import torch

    from l1flow_ros.msgs.sensor_conv import camera_info_to_msg, image_to_msg, joint_state_to_msg
    from l1flow_ros.perception.embedder import Embedder
    from l1flow_ros.perception.geometry import CameraIntrinsics
    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.normalizer import Normalizer
    from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

    cams = tuple(f"cam{i}" for i in range(n_views))
    joints = ("ee_x", "ee_y", "ee_z", "gripper")
    obs = ObservationSpec(
        cameras=cams, image_size=tuple(args.image_size), num_points=args.num_points,
        workspace=(-0.6, 0.6, -0.6, 0.6, -0.02, 0.6), voxel_size=args.voxel, proprio_names=joints,
        n_obs_steps=args.n_obs_steps,
    )
    act = ActionSpec(names=joints, horizon=16, n_action_steps=8, dt=0.1)
    torch.manual_seed(seed)
    model = PolicyModel(obs, act, SamplerSpec(), ModelConfig())
    bdir = tmp / f"bundle_{n_views}"
    save_bundle(bdir, model, make_manifest(model, Normalizer(-np.ones(4), np.ones(4), np.zeros(4), np.ones(4))))
    w, h = args.width, args.height
    intr = CameraIntrinsics(fx=0.8 * w, fy=0.8 * w, cx=w / 2 - 0.5, cy=h / 2 - 0.5, width=w, height=h)
    calib = {}
    for i, c in enumerate(cams):
        a = 2 * np.pi * i / n_views
        calib[c] = look_at(np.array([0.9 * np.cos(a), 0.9 * np.sin(a), 0.7]), np.zeros(3))
    rng = np.random.default_rng(seed)
    frames = []  # a few distinct observations, cycled
    for k in range(4):
        boxes = [(np.array([x, y, 0.0]), np.array([x + 0.1, y + 0.1, 0.15])) for x, y in rng.uniform(-0.3, 0.2, (3, 2))]
        msgs = {}
        for c in cams:
            depth = render_depth(calib[c], intr, boxes)
            depth_mm = np.clip(np.rint(depth * 1000 + rng.normal(0, 2, depth.shape)), 0, 65535).astype(np.uint16)
            depth_mm[depth == 0] = 0
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            msgs[c] = (image_to_msg(rgb, "rgb8", k), image_to_msg(depth_mm, "16UC1", k), camera_info_to_msg(intr))
        msgs["js"] = joint_state_to_msg([*joints, "right_j0"], rng.normal(size=5), k)
        frames.append(msgs)
    emb = Embedder(bdir, args.backend)
    return cams, joints, calib, frames, emb


def one_step(cams, joints, calib, msgs, emb, hist, stamp_ns: int) -> dict[str, float]:
    """The node worker's stages for one synchronised set; wall seconds per stage, and CPU seconds
    (``cpu_<stage>``: this process's CPU time, which a busy shared machine inflates far less)."""
    from l1flow_ros.msgs.sensor_conv import camera_frame_from_msgs, joint_state_from_msg
    from l1flow_ros.perception.preprocess import RawFrames, frame_step, step_to_model

    c0, t0 = time.process_time(), time.perf_counter()
    frames = RawFrames(
        cameras={c: camera_frame_from_msgs(*msgs[c][:2], info=msgs[c][2]) for c in cams},
        proprio=joint_state_from_msg(msgs["js"], joints)[0],
        stamp_ns=stamp_ns,
    )
    c1, t1 = time.process_time(), time.perf_counter()
    step = frame_step(emb.obs_spec, frames, calib)
    c2, t2 = time.process_time(), time.perf_counter()
    hist.push(stamp_ns, step_to_model(step))
    emb.embed(hist.get())
    c3, t3 = time.process_time(), time.perf_counter()
    return {
        "decode": t1 - t0, "fuse": t2 - t1, "encode": t3 - t2, "total": t3 - t0,
        "cpu_decode": c1 - c0, "cpu_fuse": c2 - c1, "cpu_encode": c3 - c2, "cpu_total": c3 - c0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--image-size", type=int, nargs=2, default=[96, 96])
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--voxel", type=float, default=0.005)
    ap.add_argument("--n-obs-steps", type=int, default=2)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()

    import torch

    from l1flow_ros.perception.geometry import warmup
    from l1flow_ros.perception.preprocess import ObservationHistory

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warmup()
    with tempfile.TemporaryDirectory() as tmp:
        setups = {v: make_setup(v, args, Path(tmp)) for v in args.views}
        hists = {v: ObservationHistory(s[4].obs_spec.n_obs_steps, s[4].period_s) for v, s in setups.items()}
        res: dict[int, dict[str, list[float]]] = {v: {} for v in args.views}
        stamp = 0
        for i in range(args.warmup + args.iters):
            stamp += 100_000_000
            for v in args.views:  # interleaved: every config sees the same machine load
                cams, joints, calib, frames, emb = setups[v]
                t = one_step(cams, joints, calib, frames[i % len(frames)], emb, hists[v], stamp)
                if i >= args.warmup:
                    for k, x in t.items():
                        res[v].setdefault(k, []).append(x * 1e3)
        spec = setups[args.views[0]][4].obs_spec
    print(f"perception latency, ms (p50 / p99) over {args.iters} sets; cameras {args.width}x{args.height} "
          f"RGB + 16UC1 depth; model image {spec.image_size[0]}x{spec.image_size[1]}, {args.num_points} points, "
          f"voxel {args.voxel} m, n_obs_steps {args.n_obs_steps}, encoder default EncoderConfig on "
          f"{args.backend} (torch threads {torch.get_num_threads()})")
    stages = ("decode", "fuse", "encode", "total")
    for title, prefix in (("wall clock", ""), ("CPU time of this process", "cpu_")):
        print(f"\n{title}\n{'views':>5} | " + " | ".join(f"{k:>17}" for k in stages))
        for v in args.views:
            cells = [f"{np.percentile(res[v][prefix + k], 50):7.2f} / {np.percentile(res[v][prefix + k], 99):7.2f}"
                     for k in stages]
            print(f"{v:>5} | " + " | ".join(cells))
    print(f"\nload average during the run (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if len(args.views) > 1:
        a, b = args.views[0], args.views[-1]
        r = {k: np.median(res[b][k]) / np.median(res[a][k]) for k in stages}
        print(f"ratio p50 {b} views / {a} views: " + ", ".join(f"{k} {x:.2f}x" for k, x in r.items()))


if __name__ == "__main__":
    main()
