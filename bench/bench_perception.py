"""Perception latency per stage (decode, fuse, encode) and total, p50 / p99; the fusion paths side by side.

Runs exactly what perception_node's worker runs for one synchronised set (sensor_conv
decoding of Image / CameraInfo / JointState messages, THE preprocessing path
``frame_step``, the observation history, the bundle's encoder through the runtime
backend), without ROS transport, on synthetic RGB-D frames of a table scene seen by
cameras around it. Every configuration of a run is measured interleaved in one process,
so their ratios are meaningful on a shared machine. Modes:

    python bench/bench_perception.py --views 2 4 --iters 200      # stages per view count
    python bench/bench_perception.py --views 2 4 --old            # ... and the path before, side by side
    python bench/bench_perception.py --table                      # stages vs views x resolution x points
    python bench/bench_perception.py --paths                      # today's fusion vs each step of the fast one
    python bench/bench_perception.py --fps-only                   # farthest-point sampling: ours vs libraries

``--paths`` also prints the quality of each fast variant against today's path on the same
frames: the dense fused cloud (after the voxel grid) and the sampled cloud, with Chamfer
distances (mean of the two one-sided mean nearest-neighbour distances).
For figures to compare, pin one core and one torch thread: ``taskset -c 1 ... --threads 1``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("decode", "fuse", "encode", "total")


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


def scene(n_views: int, width: int, height: int, seed: int = 0, n_frames: int = 4):
    """Cameras 0.9 m around and 0.7 m above a table with three boxes; per frame the boxes move.

    Returns (camera names, intrinsics, calibration {cam: 4x4}, frames: [{cam: (rgb, depth mm)}],
    the first frame's depths again with another draw of the 2 mm depth noise).
    """
    from l1flow_ros.perception.geometry import CameraIntrinsics

    cams = tuple(f"cam{i}" for i in range(n_views))
    w, h = width, height
    intr = CameraIntrinsics(fx=0.8 * w, fy=0.8 * w, cx=w / 2 - 0.5, cy=h / 2 - 0.5, width=w, height=h)
    calib = {}
    for i, c in enumerate(cams):
        a = 2 * np.pi * i / n_views
        calib[c] = look_at(np.array([0.9 * np.cos(a), 0.9 * np.sin(a), 0.7]), np.zeros(3))
    rng = np.random.default_rng(seed)

    def noisy(depth: np.ndarray, r: np.random.Generator) -> np.ndarray:
        mm = np.clip(np.rint(depth * 1000 + r.normal(0, 2, depth.shape)), 0, 65535).astype(np.uint16)
        mm[depth == 0] = 0
        return mm

    frames, renoised = [], {}
    for k in range(n_frames):
        boxes = [(np.array([x, y, 0.0]), np.array([x + 0.1, y + 0.1, 0.15])) for x, y in rng.uniform(-0.3, 0.2, (3, 2))]
        fr = {}
        for c in cams:
            depth = render_depth(calib[c], intr, boxes)
            fr[c] = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8), noisy(depth, rng))
            if k == 0:
                renoised[c] = noisy(depth, np.random.default_rng(seed + 1000))
        frames.append(fr)
    return cams, intr, calib, frames, renoised


def make_setup(n_views: int, width: int, height: int, num_points: int, args, tmp: Path, seed: int = 0,
               old: bool = False):
    """(cams, joints, calib, frames as messages, embedder, depth stride) for one configuration;
    ``old``: the embedder re-encodes every step (no step features kept)."""
    import torch

    from l1flow_ros.msgs.sensor_conv import camera_info_to_msg, image_to_msg, joint_state_to_msg
    from l1flow_ros.perception.embedder import Embedder
    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.normalizer import Normalizer
    from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

    cams, intr, calib, frames, _ = scene(n_views, width, height, seed)
    joints = ("ee_x", "ee_y", "ee_z", "gripper")
    bdir = tmp / f"bundle_{n_views}_{num_points}"
    if not bdir.exists():
        obs = ObservationSpec(
            cameras=cams, image_size=tuple(args.image_size), num_points=num_points,
            workspace=(-0.6, 0.6, -0.6, 0.6, -0.02, 0.6), voxel_size=args.voxel, proprio_names=joints,
            n_obs_steps=args.n_obs_steps,
        )
        act = ActionSpec(names=joints, horizon=16, n_action_steps=8, dt=0.1)
        torch.manual_seed(seed)
        model = PolicyModel(obs, act, SamplerSpec(), ModelConfig())
        save_bundle(bdir, model, make_manifest(model, Normalizer(-np.ones(4), np.ones(4), np.zeros(4), np.ones(4))))
        if args.backend != "torch":
            from l1flow_ros.inference.export import export_bundle

            export_bundle(bdir)  # encoder.onnx (and the sampler's graph)
    rng = np.random.default_rng(seed)
    msgs = []
    for k, fr in enumerate(frames):
        m = {c: (image_to_msg(rgb, "rgb8", k), image_to_msg(depth, "16UC1", k), camera_info_to_msg(intr))
             for c, (rgb, depth) in fr.items()}
        m["js"] = joint_state_to_msg([*joints, "right_j0"], rng.normal(size=5), k)
        msgs.append(m)
    opts = {"threads": args.threads} if args.backend == "onnxruntime" and args.threads > 0 else {}
    emb = Embedder(bdir, args.backend, cache_steps=not old, **opts)
    from l1flow_ros.perception.geometry import pixel_grid
    from l1flow_ros.perception.preprocess import cloud_config

    stride = pixel_grid(intr, calib[cams[0]], cloud_config(emb.obs_spec)).stride
    return cams, joints, calib, msgs, emb, stride


def _voxel_sort_packed(xyz, voxel_size: float):
    """The voxel sort before the radix sort (voxel key and point index packed in one int64,
    np.sort), kept here for the side-by-side (--old); same output as geometry._voxel_sort."""
    from l1flow_ros.perception.geometry import PerceptionError

    inv = np.float32(1.0 / voxel_size)
    ks, dims = [], []
    for c in xyz:
        f = c * inv
        np.floor(f, out=f)
        f -= f.min()
        k = f.astype(np.int64)
        ks.append(k)
        dims.append(int(k.max()) + 1)
    if float(dims[0]) * float(dims[1]) * float(dims[2]) >= 2.0**62:
        raise PerceptionError(f"voxel grid {dims} too large for voxel size {voxel_size}")
    key = ks[0]
    key *= dims[1]
    key += ks[1]
    key *= dims[2]
    key += ks[2]
    n = key.shape[0]
    idx_bits = max(1, (n - 1).bit_length())
    if (dims[0] * dims[1] * dims[2] - 1).bit_length() + idx_bits <= 63:
        key <<= idx_bits
        key |= np.arange(n, dtype=np.int64)
        packed = np.sort(key)
        order = packed & ((1 << idx_bits) - 1)
        packed >>= idx_bits
        key = packed
    else:
        order = np.argsort(key, kind="stable")
        key = key[order]
    first = np.empty(n + 1, dtype=bool)
    first[:1] = True
    first[n:] = True
    np.not_equal(key[1:], key[:-1], out=first[1:n])
    return order, np.flatnonzero(first)


def one_step(cams, joints, calib, msgs, emb, hist, stamp_ns: int, old: bool = False) -> dict[str, float]:
    """The node worker's stages for one synchronised set; wall seconds per stage, and CPU seconds
    (``cpu_<stage>``: this process's CPU time, which a busy shared machine inflates far less).

    ``old``: the path before per-step encoder features, the radix voxel sort and raw depth:
    depth decoded to float32 metres, the packed-key voxel sort, every step re-encoded (the
    embedder made with ``old``). The message buffer is viewed without a copy in both."""
    from l1flow_ros.msgs.sensor_conv import camera_frame_from_msgs, joint_state_from_msg
    from l1flow_ros.perception import geometry
    from l1flow_ros.perception.preprocess import RawFrames, frame_step, step_to_model

    c0, t0 = time.process_time(), time.perf_counter()
    frames = RawFrames(
        cameras={c: camera_frame_from_msgs(*msgs[c][:2], info=msgs[c][2], depth_mm=not old) for c in cams},
        proprio=joint_state_from_msg(msgs["js"], joints)[0],
        stamp_ns=stamp_ns,
    )
    c1, t1 = time.process_time(), time.perf_counter()
    radix = geometry._voxel_sort
    if old:
        geometry._voxel_sort = _voxel_sort_packed
    try:
        step = frame_step(emb.obs_spec, frames, calib)
    finally:
        geometry._voxel_sort = radix
    c2, t2 = time.process_time(), time.perf_counter()
    hist.push(stamp_ns, step_to_model(step))
    emb.embed_history(hist)
    c3, t3 = time.process_time(), time.perf_counter()
    return {
        "decode": t1 - t0, "fuse": t2 - t1, "encode": t3 - t2, "total": t3 - t0,
        "cpu_decode": c1 - c0, "cpu_fuse": c2 - c1, "cpu_encode": c3 - c2, "cpu_total": c3 - c0,
    }


def pct(xs, q: float) -> float:
    return float(np.percentile(xs, q))


def run_stages(configs: list[tuple], args) -> dict:
    """configs: (views, width, height, points[, "old"]) -> {config: {stage: [ms, ...]}}, all
    interleaved; a config ending in "old" runs the path before (see one_step)."""
    from l1flow_ros.perception.geometry import warmup
    from l1flow_ros.perception.preprocess import ObservationHistory

    warmup()
    res: dict = {c: {} for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        setups = {c: make_setup(c[0], c[1], c[2], c[3], args, Path(tmp), old=c[-1] == "old") for c in configs}
        hists = {c: ObservationHistory(s[4].obs_spec.n_obs_steps, s[4].period_s) for c, s in setups.items()}
        stamp = 0
        for i in range(args.warmup + args.iters):
            stamp += 100_000_000
            for c in configs:  # interleaved: every configuration sees the same machine load
                cams, joints, calib, msgs, emb, stride = setups[c]
                res[c]["stride"] = stride
                t = one_step(cams, joints, calib, msgs[i % len(msgs)], emb, hists[c], stamp, old=c[-1] == "old")
                if i >= args.warmup:
                    for k, x in t.items():
                        res[c].setdefault(k, []).append(x * 1e3)
    return res


def header(args, extra: str = "") -> str:
    import torch

    return (f"model image {args.image_size[0]}x{args.image_size[1]}, voxel {args.voxel} m, n_obs_steps "
            f"{args.n_obs_steps}, encoder default EncoderConfig on {args.backend} (torch threads "
            f"{torch.get_num_threads()}){extra}; load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main_views(args) -> None:
    configs: list[tuple] = [(v, args.width, args.height, args.num_points) for v in args.views]
    if args.old:
        configs = [c for v in configs for c in (v, (*v, "old"))]
    res = run_stages(configs, args)
    print(f"perception latency, ms (p50 / p99) over {args.iters} sets; cameras {args.width}x{args.height} "
          f"RGB + 16UC1 depth, {args.num_points} points; " + header(args))
    for title, prefix in (("wall clock", ""), ("CPU time of this process", "cpu_")):
        print(f"\n{title}\n{'views':>9} | " + " | ".join(f"{k:>17}" for k in STAGES))
        for c in configs:
            cells = [f"{pct(res[c][prefix + k], 50):7.2f} / {pct(res[c][prefix + k], 99):7.2f}" for k in STAGES]
            print(f"{c[0]:>5}{' old' if c[-1] == 'old' else '    '} | " + " | ".join(cells))
    if args.old:
        for c in configs[::2]:
            r = {k: np.median(res[(*c, "old")][k]) / np.median(res[c][k]) for k in STAGES}
            print(f"ratio p50 old / now, {c[0]} views: " + ", ".join(f"{k} {x:.2f}x" for k, x in r.items()))
        configs = configs[::2]
    if len(configs) > 1:
        a, b = configs[0], configs[-1]
        r = {k: np.median(res[b][k]) / np.median(res[a][k]) for k in STAGES}
        print(f"ratio p50 {b[0]} views / {a[0]} views: " + ", ".join(f"{k} {x:.2f}x" for k, x in r.items()))


def main_table(args) -> None:
    configs = [(v, w, h, n) for v in (1, 2, 4) for (w, h) in ((320, 240), (640, 480), (1280, 720))
               for n in (512, 1024, 2048)]
    res = run_stages(configs, args)
    print(f"perception per set, ms: wall p50 / p99 (CPU p50) over {args.iters} sets, every configuration "
          "interleaved; " + header(args))
    print("\n| views | camera | points | depth stride | decode | fuse | encode | total |")
    print("|---|---|---|---|---|---|---|---|")
    for c in configs:
        r = res[c]
        cells = " | ".join(f"{pct(r[k], 50):.2f} / {pct(r[k], 99):.2f} ({pct(r['cpu_' + k], 50):.2f})" for k in STAGES)
        print(f"| {c[0]} | {c[1]} x {c[2]} | {c[3]} | {r['stride']} | {cells} |")


# ----------------------------------------------------------------------------- fusion paths side by side


def _voxel_argsort_reduceat(xyz, voxel_size: float):
    """Today's voxel grid before the fast path (argsort of int64 keys, reduceat in key order), kept
    here for the side-by-side; same output as geometry._voxel_soa."""
    inv = np.float32(1.0 / voxel_size)
    ks, dims = [], []
    for c in xyz:
        k = np.floor(c * inv).astype(np.int64)
        k -= k.min()
        ks.append(k)
        dims.append(int(k.max()) + 1)
    key = (ks[0] * dims[1] + ks[1]) * dims[2] + ks[2]
    order = np.argsort(key)
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    counts = np.diff(np.append(starts, key.shape[0])).astype(np.float64)
    return tuple((np.add.reduceat(c[order].astype(np.float64), starts) / counts).astype(np.float32) for c in xyz)


def _sample(xyz, cfg, fps: str) -> np.ndarray:
    from l1flow_ros.perception.geometry import _fps_soa

    idx = _fps_soa(xyz, cfg.num_points, cfg.num_points * cfg.fps_candidates_per_point, fps)
    return np.stack([xyz[0][idx], xyz[1][idx], xyz[2][idx]], axis=1)


def _today(depths, cams, intr, calib, cfg, dense: bool = False):
    """The fusion path as it was: every pixel back-projected, moved, cropped; argsort voxel grid;
    numpy FPS from the first voxel."""
    from l1flow_ros.perception.geometry import backproject, camera_points, depth_to_metres

    parts = [camera_points(backproject(depth_to_metres(depths[c]), intr, cfg.depth_range)[0], None, calib[c],
                           cfg.workspace) for c in cams]
    xyz = _voxel_argsort_reduceat(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)), cfg.voxel_size)
    return np.stack(xyz, axis=1) if dense else _sample(xyz, cfg, "numpy")


def _grid_old_voxel(depths, cams, intr, calib, cfg):
    """Pixel grid (crop in pixel space, precomputed rays), then today's voxel grid and FPS."""
    from l1flow_ros.perception.geometry import depth_points, pixel_grid

    parts = [depth_points(depths[c], pixel_grid(intr, calib[c], cfg), cfg.workspace) for c in cams]
    xyz = _voxel_argsort_reduceat(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)), cfg.voxel_size)
    return _sample(xyz, cfg, "numpy")


def _fast(depths, cams, intr, calib, cfg, dense: bool = False):
    """The package's path (geometry.depth_points + fuse_points), as frame_step runs it."""
    from l1flow_ros.perception.geometry import _voxel_soa, depth_points, fuse_points, pixel_grid

    parts = [depth_points(depths[c], pixel_grid(intr, calib[c], cfg), cfg.workspace) for c in cams]
    if dense:
        return np.stack(_voxel_soa(tuple(np.concatenate([p[i] for p in parts]) for i in range(3)), None,
                                   cfg.voxel_size)[0], axis=1)
    return fuse_points(parts, cfg)


def _fast_packed(depths, cams, intr, calib, cfg, dense: bool = False):
    """The package's path with the voxel sort before the radix sort (``_voxel_sort_packed``)."""
    from l1flow_ros.perception import geometry

    radix = geometry._voxel_sort
    geometry._voxel_sort = _voxel_sort_packed
    try:
        return _fast(depths, cams, intr, calib, cfg, dense)
    finally:
        geometry._voxel_sort = radix


def chamfer(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean of the two one-sided mean nearest-neighbour distances, largest of them), metres."""
    from scipy.spatial import cKDTree

    da, db = cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]
    return 0.5 * (float(da.mean()) + float(db.mean())), max(float(da.max()), float(db.max()))


def main_paths(args) -> None:
    import dataclasses

    from scipy.spatial import cKDTree

    from l1flow_ros.perception.geometry import CloudConfig, pixel_grid, warmup

    warmup()
    cams, intr, calib, frames, renoised = scene(args.views[0], args.width, args.height)
    base = CloudConfig(args.num_points, (-0.6, 0.6, -0.6, 0.6, -0.02, 0.6), args.voxel, (0.05, 3.0))
    s1 = dataclasses.replace(base, pixel_stride=1, fps="numpy")
    variants = [
        ("today: every pixel back-projected, argsort voxel grid, numpy FPS", _today, s1),
        ("+ pixel grid: crop in pixel space, precomputed rays (stride 1)", _grid_old_voxel, s1),
        ("+ packed-key sort voxel grid, means of sampled voxels only", _fast_packed, s1),
        ("+ fpsample FPS (stride 1: the exact path)", _fast_packed, dataclasses.replace(s1, fps="fpsample")),
        ("+ depth stride from the voxel size", _fast_packed, base),
        ("+ radix sort of the voxel keys (the package's path)", _fast, base),
    ]
    depths = [{c: fr[c][1] for c in cams} for fr in frames]
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for i in range(args.warmup + args.iters):
        for name, fn, cfg in variants:
            c0 = time.process_time() if args.cpu else time.perf_counter()
            fn(depths[i % len(depths)], cams, intr, calib, cfg)
            dt = (time.process_time() if args.cpu else time.perf_counter()) - c0
            if i >= args.warmup:
                times[name].append(dt * 1e3)
    strides = {pixel_grid(intr, calib[c], base).stride for c in cams}
    print(f"fusion only (depth images -> {args.num_points} points), {len(cams)} views {args.width}x{args.height}, "
          f"ms p50 / p99 over {args.iters} sets ({'CPU' if args.cpu else 'wall'}); auto stride {sorted(strides)}; "
          f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    t0 = np.median(times[variants[0][0]])
    print("| path | fuse p50 / p99 | vs today |")
    print("|---|---|---|")
    for name, _, _ in variants:
        t = times[name]
        print(f"| {name} | {pct(t, 50):.2f} / {pct(t, 99):.2f} ms | {t0 / np.median(t):.1f}x |")

    # Quality against today's path, on the same frames (frame 0).
    d0 = depths[0]
    ref, ref_dense = _today(d0, cams, intr, calib, s1), _today(d0, cams, intr, calib, s1, dense=True)
    tree = cKDTree(ref_dense)
    print(f"\nquality against today's path on the same frames (voxel {args.voxel * 1e3:.0f} mm; today's dense cloud "
          f"{ref_dense.shape[0]} voxels, its sample {ref.shape[0]} points):\n")
    print("| cloud | points | dense cloud: Chamfer mean / max to today's | sample: Chamfer to today's sample | "
          "sample: farthest from today's dense cloud | coverage of today's dense cloud |")
    print("|---|---|---|---|---|---|")
    rows = [(f"fast, stride {sorted(strides)}", _fast(d0, cams, intr, calib, base),
             _fast(d0, cams, intr, calib, base, dense=True)),
            ("fast, stride 1", _fast(d0, cams, intr, calib, dataclasses.replace(base, pixel_stride=1)),
             _fast(d0, cams, intr, calib, dataclasses.replace(base, pixel_stride=1), dense=True)),
            ("today, same scene, another draw of the depth noise", _today(renoised, cams, intr, calib, s1),
             _today(renoised, cams, intr, calib, s1, dense=True)),
            ("today (itself)", ref, ref_dense)]
    for name, smp, dense in rows:
        cd, hd = chamfer(dense, ref_dense)
        cs, _ = chamfer(smp, ref)
        far = float(tree.query(smp)[0].max())
        cov = float(cKDTree(smp).query(ref_dense)[0].mean())
        same = " (identical)" if smp.shape == ref.shape and np.array_equal(smp, ref) else ""
        print(f"| {name} | {smp.shape[0]} | {cd * 1e3:.2f} / {hd * 1e3:.1f} mm ({dense.shape[0]} voxels) | "
              f"{cs * 1e3:.2f} mm{same} | {far * 1e3:.2f} mm | {cov * 1e3:.2f} mm |")


def main_fps(args) -> None:
    import open3d as o3d

    from l1flow_ros.perception.geometry import _fps_library, _fps_numpy

    rng = np.random.default_rng(0)
    sizes = ((2048, 512), (4096, 1024), (8192, 1024), (8192, 2048))
    clouds = {}
    for m, n in sizes:  # a table top with boxes on it: points on surfaces, like a voxelised scene
        p = np.c_[rng.uniform(-0.6, 0.6, (m, 2)), np.zeros(m)].astype(np.float32)
        p[: m // 4, 2] = rng.uniform(0, 0.15, m // 4)
        clouds[(m, n)] = p

    def o3d_fps(p, n):
        return np.asarray(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
                          .farthest_point_down_sample(n).points)

    methods = {
        "numpy (ours)": lambda p, n: _fps_numpy((p[:, 0], p[:, 1], p[:, 2]), n),
        "open3d farthest_point_down_sample": o3d_fps,
        "fpsample bucket FPS (kd-line)": lambda p, n: _fps_library((p[:, 0], p[:, 1], p[:, 2]), n),
    }
    times = {(k, s): [] for k in methods for s in sizes}
    for i in range(args.warmup + args.iters):
        for s in sizes:
            for k, f in methods.items():
                t0 = time.perf_counter()
                f(clouds[s], s[1])
                if i >= args.warmup:
                    times[(k, s)].append((time.perf_counter() - t0) * 1e3)
    print(f"farthest-point sampling, ms p50 over {args.iters} runs (wall); load average (1 min) "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| method | " + " | ".join(f"{m} -> {n}" for m, n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for k in methods:
        print(f"| {k} | " + " | ".join(f"{pct(times[(k, s)], 50):.2f}" for s in sizes) + " |")
    print("\nexactness (the library's sample against exact FPS from the library's first point):")
    for s, p in clouds.items():
        lib = _fps_library((p[:, 0], p[:, 1], p[:, 2]), s[1])
        ex = _fps_numpy((p[:, 0], p[:, 1], p[:, 2]), s[1], int(lib[0]))
        print(f"  {s[0]} -> {s[1]}: identical {np.array_equal(lib, ex)}; same set {set(lib) == set(ex)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--table", action="store_true", help="stages vs views (1 2 4) x camera size x points")
    mode.add_argument("--paths", action="store_true", help="today's fusion vs the fast one, step by step")
    mode.add_argument("--fps-only", action="store_true", help="farthest-point sampling methods side by side")
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
    ap.add_argument("--cpu", action="store_true", help="--paths: this process's CPU time instead of wall time")
    ap.add_argument("--old", action="store_true", help="views mode: also the path before per-step encoder "
                    "features, the radix voxel sort and raw depth, interleaved")
    args = ap.parse_args()

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.table:
        main_table(args)
    elif args.paths:
        main_paths(args)
    elif args.fps_only:
        main_fps(args)
    else:
        main_views(args)


if __name__ == "__main__":
    main()
