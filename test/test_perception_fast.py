"""The fusion path at camera resolution: pixel grids, strided depth, the voxel grid, library FPS.

What is checked against what: the pixel-grid path at stride 1 against back-projecting every
pixel (bit-identical); the strided path against that exact path on a rendered scene (the fused
cloud within one voxel); fpsample's sample against exact farthest-point sampling.
"""

import dataclasses

import numpy as np
import pytest
from scipy.spatial import cKDTree

from l1flow_ros.perception.geometry import (
    CameraIntrinsics,
    CloudConfig,
    PerceptionError,
    _fps_library,
    _fps_soa,
    _voxel_soa,
    _voxel_sort,
    backproject,
    camera_points,
    depth_points,
    depth_to_metres,
    exact_fps,
    farthest_point_sample,
    fuse_points,
    make_transform,
    pixel_grid,
    pixel_stride,
    voxel_downsample,
)
from l1flow_ros.perception.preprocess import CameraFrame, RawFrames, frame_step
from l1flow_ros.spec import ObservationSpec

pytestmark = pytest.mark.core

WS = (-0.6, 0.6, -0.6, 0.6, -0.02, 0.6)
VOXEL = 0.005


def look_at(pos, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera (optical frame) -> base, at ``pos`` looking at ``target``."""
    pos, target = np.asarray(pos, float), np.asarray(target, float)
    f = (target - pos) / np.linalg.norm(target - pos)
    x = np.cross(f, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(f, x), f], axis=1)
    T[:3, 3] = pos
    return T


def intrinsics(w: int, h: int) -> CameraIntrinsics:
    return CameraIntrinsics(fx=0.8 * w, fy=0.8 * w, cx=w / 2 - 0.5, cy=h / 2 - 0.5, width=w, height=h)


def render(T: np.ndarray, intr: CameraIntrinsics, rng: np.random.Generator) -> np.ndarray:
    """uint16 mm depth of the table plane z = 0 and one box, 2 mm noise, 0 where nothing is hit."""
    v, u = np.mgrid[0:intr.height, 0:intr.width].astype(np.float64)
    d = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1) @ T[:3, :3].T
    o = T[:3, 3]
    lo, hi = np.array([-0.1, -0.05, 0.0]), np.array([0.1, 0.15, 0.15])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[..., 2] < 0, -o[2] / d[..., 2], np.inf)
        t0, t1 = (lo - o) / d, (hi - o) / d
        tn, tf = np.max(np.minimum(t0, t1), -1), np.min(np.maximum(t0, t1), -1)
        t = np.where((tn <= tf) & (tn > 0) & (tn < t), tn, t)
    t[~np.isfinite(t)] = 0.0
    mm = np.clip(np.rint(t * 1000 + rng.normal(0, 2, t.shape)), 0, 65535).astype(np.uint16)
    mm[t == 0] = 0
    return mm


def exact_parts(depths, intr, calib, cfg):
    """Every pixel back-projected, moved to the base frame and cropped (the path without a grid)."""
    return [camera_points(*backproject(depth_to_metres(d), intr, cfg.depth_range), calib[c], cfg.workspace)
            for c, d in depths.items()]


def grid_parts(depths, intr, calib, cfg):
    return [depth_points(d, pixel_grid(intr, calib[c], cfg), cfg.workspace) for c, d in depths.items()]


def dense(parts, voxel=VOXEL) -> np.ndarray:
    xyz = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
    return np.stack(_voxel_soa(xyz, None, voxel)[0], axis=1)


def chamfer(a, b) -> float:
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def assert_exact_fps(p: np.ndarray, idx: np.ndarray) -> None:
    """Each pick is the farthest point from those before it (ties allowed), no index twice."""
    assert len(set(idx.tolist())) == len(idx)
    p64 = p.astype(np.float64)
    d = np.full(len(p), np.inf)
    for k, i in enumerate(idx):
        if k:
            assert d[i] >= d.max() * (1 - 1e-5), f"pick {k} is not the farthest point"
        d = np.minimum(d, ((p64 - p64[i]) ** 2).sum(1))


# ----------------------------------------------------------------------------- pixel grid


@pytest.mark.parametrize("seed", range(6))
def test_grid_points_bit_identical_to_every_pixel_backprojected(seed):
    """At stride 1 the pixel-grid path gives the same points, in the same order, with the same
    colours, whatever the depth holds (0, NaN, inf, out of range, float or uint16) and wherever
    the workspace is in the view."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(20, 90)), int(rng.integers(15, 70))
    intr = CameraIntrinsics(fx=float(rng.uniform(20, 80)), fy=float(rng.uniform(20, 80)),
                            cx=float(rng.uniform(0, w)), cy=float(rng.uniform(0, h)), width=w, height=h)
    T = look_at(rng.uniform(-1.5, 1.5, 3) + [0, 0, 1.0], rng.uniform(-0.3, 0.3, 3))
    ws = tuple(np.sort(rng.uniform(-0.8, 0.8, (3, 2)), axis=1).reshape(-1))  # a box somewhere in view or not
    cfg = CloudConfig(64, ws, VOXEL, (0.2, 2.5), pixel_stride=1)
    depth = rng.uniform(0.0, 3.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = np.nan
    depth[rng.random((h, w)) < 0.05] = np.inf
    depth[rng.random((h, w)) < 0.05] = 0.0
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for d in (depth, np.nan_to_num(depth * 1000, posinf=0).astype(np.uint16)):
        ref = camera_points(*backproject(depth_to_metres(d), intr, cfg.depth_range, rgb), T, ws)
        got = depth_points(d, pixel_grid(intr, T, cfg), ws, rgb)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)


def test_grid_keeps_only_pixels_whose_ray_meets_the_workspace():
    intr = intrinsics(160, 120)
    T = look_at([0.0, -1.0, 1.0])
    small = CloudConfig(64, (-0.05, 0.05, -0.05, 0.05, 0.0, 0.1), VOXEL, (0.05, 3.0), pixel_stride=1)
    g = pixel_grid(intr, T, small)
    assert 0 < g.pixels.size < 0.1 * 160 * 120  # a 10 cm box fills a few per cent of the view
    depth = render(T, intr, np.random.default_rng(0))
    got = depth_points(depth, g, small.workspace)
    ref = exact_parts({"c": depth}, intr, {"c": T}, small)[0]
    assert got[0].size > 0
    for a, b in zip(got[:3], ref[:3]):
        np.testing.assert_array_equal(a, b)
    behind = CloudConfig(64, (-0.1, 0.1, -2.5, -2.0, 0.0, 0.1), VOXEL, (0.05, 3.0))  # behind the camera
    assert pixel_grid(intr, T, behind).pixels.size == 0
    assert pixel_grid(intr, T, small) is g  # cached per camera and configuration
    moved = T.copy()
    moved[0, 3] += 0.01
    assert pixel_grid(intr, moved, small) is not g  # a new calibration, a new grid


def test_stride_follows_the_voxel_size():
    assert pixel_stride(intrinsics(640, 480), 1.0, 0.005) == 2  # 1.95 mm a pixel at 1 m
    assert pixel_stride(intrinsics(640, 480), 0.5, 0.005) == 5
    assert pixel_stride(intrinsics(96, 96), 1.0, 0.005) == 1  # coarser than a voxel already
    assert pixel_stride(intrinsics(640, 480), 1.0, 0.0) == 1  # no voxel grid: every pixel
    cfg = CloudConfig(1024, WS, VOXEL, (0.05, 3.0))
    T = look_at([0.9, 0.0, 0.7])
    g = pixel_grid(intrinsics(640, 480), T, cfg)
    assert g.stride == 2
    rows, cols = np.divmod(g.pixels, 640)
    assert set(np.unique(rows % 2)) == {0} and set(np.unique(cols % 2)) == {0}
    assert pixel_grid(intrinsics(96, 96), T, cfg).stride == 1
    assert pixel_grid(intrinsics(640, 480), T, dataclasses.replace(cfg, pixel_stride=3)).stride == 3


def test_strided_cloud_within_one_voxel_of_every_pixel():
    """Two 640 x 480 views: the fused cloud of the strided path against back-projecting every pixel,
    on the same frames: the dense clouds (after the voxel grid) within one voxel (mean Chamfer),
    every sampled point within one voxel of the exact surface, the same point count, and the
    sample covering the surface as well as the exact path's sample does."""
    rng = np.random.default_rng(1)
    intr = intrinsics(640, 480)
    calib = {"a": look_at([0.9, 0.0, 0.7]), "b": look_at([-0.9, 0.1, 0.7])}
    depths = {c: render(T, intr, rng) for c, T in calib.items()}
    cfg = CloudConfig(1024, WS, VOXEL, (0.05, 3.0))
    fast, exact = grid_parts(depths, intr, calib, cfg), exact_parts(depths, intr, calib, cfg)
    assert {pixel_grid(intr, T, cfg).stride for T in calib.values()} == {2}
    d_fast, d_exact = dense(fast), dense(exact)
    assert chamfer(d_fast, d_exact) < VOXEL
    s_fast, s_exact = fuse_points(fast, cfg), fuse_points(exact, cfg)
    assert s_fast.shape == s_exact.shape == (1024, 3)
    tree = cKDTree(d_exact)
    assert tree.query(s_fast)[0].max() < VOXEL
    cover_fast = cKDTree(s_fast).query(d_exact)[0].mean()
    cover_exact = cKDTree(s_exact).query(d_exact)[0].mean()
    assert abs(cover_fast - cover_exact) < VOXEL


def test_frame_step_at_camera_resolution():
    """frame_step (dataset building and the node) goes through the grid: its cloud is fuse_points
    of depth_points, views outside the workspace add nothing, a view with no valid depth is named."""
    rng = np.random.default_rng(2)
    intr = intrinsics(640, 480)
    calib = {"a": look_at([0.9, 0.0, 0.7]), "b": look_at([-0.9, 0.1, 0.7]),
             "away": make_transform([5.0, 5.0, 0.5], [0, 0, 0, 1])}  # looks up, far from the workspace
    spec = ObservationSpec(cameras=("a", "b", "away"), image_size=(96, 96), num_points=512, workspace=WS,
                           voxel_size=VOXEL)
    cams = {c: CameraFrame(color=rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                           depth=render(calib[c], intr, rng) if c != "away" else np.full((480, 640), 900, np.uint16),
                           intrinsics=intr) for c in spec.cameras}
    step = frame_step(spec, RawFrames(cameras=cams), calib)
    cfg = CloudConfig(512, WS, VOXEL, (0.05, 3.0))
    want = fuse_points(grid_parts({c: cams[c].depth for c in ("a", "b")}, intr, calib, cfg), cfg)
    np.testing.assert_array_equal(step["points"], want)
    assert step["rgb"].shape == (3, 3, 96, 96)
    cams["a"].depth = np.zeros((480, 640), np.uint16)
    with pytest.raises(PerceptionError, match="'a'.*no valid pixel"):
        frame_step(spec, RawFrames(cameras=cams), calib)
    only_away = dataclasses.replace(spec, cameras=("away",))
    with pytest.raises(PerceptionError, match="workspace"):
        frame_step(only_away, RawFrames(cameras=cams), calib)
    cams["b"].depth = np.zeros((240, 320), np.uint16)
    with pytest.raises(PerceptionError, match="320x240 but CameraInfo says 640x480"):
        frame_step(dataclasses.replace(spec, cameras=("b",)), RawFrames(cameras=cams), calib)


# ----------------------------------------------------------------------------- voxel grid and sampling


def _voxel_reference(pts: np.ndarray, voxel: float) -> dict:
    ref: dict = {}
    for p in pts:
        ref.setdefault(tuple(np.floor(p / np.float32(voxel)).astype(np.int64)), []).append(p)
    return {k: np.mean(v, axis=0) for k, v in ref.items()}


@pytest.mark.parametrize("spread,voxel,n", [(0.05, 0.02, 3000), (0.6, 0.005, 20000), (50.0, 0.01, 4000),
                                           (700.0, 0.001, 100)])
def test_voxel_means_in_key_order(spread, voxel, n):
    """The radix sort in one, two and three 16-bit passes (keys of 3, 24 and 40 bits) and the
    argsort fallback for wider keys (the last: 1.4e6 voxels an axis) give the same: one mean per
    voxel, ordered by voxel (x-, then y-, then z-major), points in input order within a voxel."""
    rng = np.random.default_rng(5)
    pts = rng.uniform(-spread, spread, (n, 3)).astype(np.float32)
    down, _ = voxel_downsample(pts, None, voxel)
    ref = _voxel_reference(pts, voxel)
    assert down.shape[0] == len(ref)
    keys = sorted(ref)
    np.testing.assert_allclose(down, np.array([ref[k] for k in keys]), rtol=1e-6, atol=1e-7)
    order, starts = _voxel_sort((pts[:, 0], pts[:, 1], pts[:, 2]), voxel)
    k = np.floor(pts * np.float32(1.0 / voxel)).astype(np.int64)
    want = np.lexsort((np.arange(n), k[:, 2], k[:, 1], k[:, 0]))  # by voxel, then input order
    np.testing.assert_array_equal(order, want)
    assert starts[-1] == n and starts.shape[0] == len(ref) + 1


def test_raw_depth_from_the_message_is_a_view_and_gives_the_same_step():
    """The node decodes 16UC1 depth as uint16 millimetres viewing the message (no copy); dataset
    building decodes float32 metres: frame_step gives the same step from either."""
    from l1flow_ros.msgs.sensor_conv import camera_frame_from_msgs, camera_info_to_msg, image_to_msg

    rng = np.random.default_rng(3)
    intr = intrinsics(640, 480)
    calib = {"a": look_at([0.9, 0.0, 0.7]), "b": look_at([-0.9, 0.1, 0.7])}
    spec = ObservationSpec(cameras=("a", "b"), image_size=(96, 96), num_points=512, workspace=WS,
                           voxel_size=VOXEL, point_color=True)
    msgs = {c: (image_to_msg(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), "rgb8"),
                image_to_msg(render(calib[c], intr, rng), "16UC1"), camera_info_to_msg(intr)) for c in calib}
    raw = {c: camera_frame_from_msgs(*m[:2], info=m[2], depth_mm=True) for c, m in msgs.items()}
    metres = {c: camera_frame_from_msgs(*m[:2], info=m[2]) for c, m in msgs.items()}
    for c, (color, depth, _) in msgs.items():
        assert raw[c].depth.dtype == np.uint16 and metres[c].depth.dtype == np.float32
        assert np.shares_memory(raw[c].depth, np.frombuffer(depth.data, np.uint8))
        assert np.shares_memory(raw[c].color, np.frombuffer(color.data, np.uint8))
        assert not raw[c].depth.flags.writeable
    a = frame_step(spec, RawFrames(cameras=raw), calib)
    b = frame_step(spec, RawFrames(cameras=metres), calib)
    for key in ("rgb", "points"):
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("point_color", [False, True])
def test_fuse_points_equals_voxel_grid_then_sampling(point_color):
    """fuse_points averages only the voxels sampling reads: the same cloud as averaging every
    voxel, thinning to the candidates and sampling."""
    rng = np.random.default_rng(7)
    parts = []
    for _ in range(2):
        x, y = rng.uniform(-0.5, 0.5, (2, 40000)).astype(np.float32)
        z = (0.1 * np.sin(4 * x) * np.cos(3 * y)).astype(np.float32)
        parts.append((x, y, z, rng.uniform(0, 1, (40000, 3)).astype(np.float32) if point_color else None))
    cfg = CloudConfig(256, WS, VOXEL, (0.05, 3.0), point_color=point_color)
    xyz = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
    cols = np.concatenate([p[3] for p in parts]) if point_color else None
    (vx, vy, vz), vc = _voxel_soa(xyz, cols, VOXEL)
    assert vx.shape[0] > cfg.num_points * cfg.fps_candidates_per_point  # the candidate shortcut is taken
    idx = _fps_soa((vx, vy, vz), 256, 256 * cfg.fps_candidates_per_point, cfg.fps)
    want = np.stack([vx[idx], vy[idx], vz[idx]], axis=1)
    if point_color:
        want = np.concatenate([want, vc[idx]], axis=1)
    np.testing.assert_array_equal(fuse_points(parts, cfg), want)


def test_fpsample_is_exact_farthest_point_sampling():
    """The library's sample is exact FPS: on a continuous cloud it is exact_fps from the library's
    first point, index for index; on a lattice full of equal distances every pick is still a
    farthest one; never an index twice; the same cloud gives the same sample."""
    rng = np.random.default_rng(11)
    for m, n in ((4096, 1024), (2048, 512), (700, 128), (8192, 2048)):
        p = np.c_[rng.uniform(-0.6, 0.6, (m, 2)), rng.uniform(0, 0.15, m)].astype(np.float32)
        lib = _fps_library((p[:, 0], p[:, 1], p[:, 2]), n)
        np.testing.assert_array_equal(lib, exact_fps(p, n, start=int(lib[0])))
    lattice = (rng.integers(0, 120, (3000, 3)) * 0.005).astype(np.float32)
    lattice = np.unique(lattice, axis=0)
    lib = _fps_library((lattice[:, 0], lattice[:, 1], lattice[:, 2]), 512)
    assert_exact_fps(lattice, lib)
    np.testing.assert_array_equal(lib, _fps_library((lattice[:, 0], lattice[:, 1], lattice[:, 2]), 512))
    np.testing.assert_array_equal(farthest_point_sample(p, 64), farthest_point_sample(p, 64))
    with pytest.raises(PerceptionError, match="method"):
        farthest_point_sample(p, 64, method="nope")
