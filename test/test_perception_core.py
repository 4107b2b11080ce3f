"""Perception core without ROS: geometry, images, time sync, the one preprocessing path, the engine."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l1flow_ros.perception.geometry import (
    CameraIntrinsics,
    CloudConfig,
    PerceptionError,
    backproject,
    crop_mask,
    depth_to_metres,
    farthest_point_sample,
    fuse_views,
    load_calibration,
    make_transform,
    parse_calibration,
    transform_points,
    voxel_downsample,
)
from l1flow_ros.perception.images import resize_rgb, rgb_to_float
from l1flow_ros.perception.pipeline import (
    ERROR,
    OK,
    STAGES,
    WARN,
    PerceptionConfig,
    PerceptionEngine,
    StreamError,
    needed_streams,
)
from l1flow_ros.perception.preprocess import (
    CameraFrame,
    ObservationHistory,
    RawFrames,
    frame_step,
    preprocess_frames,
    step_to_model,
)
from l1flow_ros.perception.sync import ApproximateTimeSync
from l1flow_ros.spec import ObservationSpec

pytestmark = pytest.mark.core

INTR = CameraIntrinsics(fx=50.0, fy=50.0, cx=15.5, cy=11.5, width=32, height=24)


def plane_depth(z: float = 1.0, h: int = 24, w: int = 32) -> np.ndarray:
    return np.full((h, w), z, dtype=np.float32)


# ----------------------------------------------------------------------------- geometry


def test_backprojection_reprojects_to_its_pixel():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.0, (24, 32)).astype(np.float32)
    pts, _ = backproject(depth, INTR, (0.05, 3.0))
    assert pts.shape == (24 * 32, 3)
    u = pts[:, 0] * INTR.fx / pts[:, 2] + INTR.cx
    v = pts[:, 1] * INTR.fy / pts[:, 2] + INTR.cy
    vv, uu = np.mgrid[0:24, 0:32]
    np.testing.assert_allclose(u, uu.reshape(-1), atol=1e-3)
    np.testing.assert_allclose(v, vv.reshape(-1), atol=1e-3)
    np.testing.assert_allclose(pts[:, 2], depth.reshape(-1))


def test_invalid_depth_dropped():
    depth = plane_depth(1.0)
    depth[0, :4] = [0.0, np.nan, np.inf, 5.0]  # zero, NaN, inf, beyond range
    depth[1, 0] = 0.01  # nearer than the range
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[2, 0] = [255, 0, 0]
    pts, cols = backproject(depth, INTR, (0.05, 3.0), rgb)
    assert pts.shape[0] == 24 * 32 - 5
    assert np.isfinite(pts).all() and cols.shape == pts.shape
    assert np.isclose(cols.sum(axis=1), 1.0).sum() == 1  # the one red pixel kept its colour


def test_mm_depth_and_size_mismatch():
    np.testing.assert_allclose(depth_to_metres(np.array([[1500]], np.uint16)), [[1.5]])
    with pytest.raises(PerceptionError):
        backproject(plane_depth(h=10), INTR, (0.05, 3.0))
    with pytest.raises(PerceptionError):
        depth_to_metres(np.zeros((2, 2), np.int8))


def test_quaternion_transform():
    # 90 degrees about z: x -> y.
    T = make_transform([1, 2, 3], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    out = transform_points(np.array([[1.0, 0, 0]], np.float32), T)
    np.testing.assert_allclose(out, [[1, 3, 3]], atol=1e-6)


def test_calibration_yaml(tmp_path):
    f = tmp_path / "calib.yaml"
    f.write_text(
        "cameras:\n"
        "  front:\n    matrix: [[1,0,0,0.5],[0,1,0,0],[0,0,1,0.8],[0,0,0,1]]\n"
        "  wrist:\n    translation: [0.1, 0.0, 0.4]\n    rotation: [0, 0, 0, 2]\n"
    )
    cal = load_calibration(f)
    assert set(cal) == {"front", "wrist"}
    np.testing.assert_allclose(cal["front"][:3, 3], [0.5, 0, 0.8])
    np.testing.assert_allclose(cal["wrist"][:3, :3], np.eye(3))  # quaternion normalised
    for bad in (
        {"cameras": {"a": {"matrix": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}}},  # scale
        {"cameras": {"a": {"translation": [0, 0], "rotation": [0, 0, 0, 1]}}},
        {"cameras": {"a": {"translation": [0, 0, 0], "rotation": [0, 0, 0, 0]}}},
        {"cameras": {"a": {}}},
        {"nothing": 1},
    ):
        with pytest.raises(PerceptionError):
            parse_calibration(bad)
    f.write_text("cameras: [unclosed")
    with pytest.raises(PerceptionError):
        load_calibration(f)
    with pytest.raises(PerceptionError):
        load_calibration(tmp_path / "missing.yaml")


def test_crop_and_voxel():
    pts = np.array([[0, 0, 0], [2, 0, 0], [0.001, 0, 0], [0.5, 0.5, 0.5]], np.float32)
    assert crop_mask(pts, (-1, 1, -1, 1, -1, 1)).tolist() == [True, False, True, True]
    down, _ = voxel_downsample(pts[[0, 2, 3]], None, 0.01)
    assert down.shape[0] == 2  # the two points 1 mm apart merged


def test_fps_deterministic_and_spread():
    rng = np.random.default_rng(3)
    # Dense blob plus 4 far corners: FPS must pick the corners early.
    blob = rng.normal(0, 0.01, (500, 3)).astype(np.float32)
    corners = np.array([[1, 1, 1], [-1, -1, 1], [1, -1, -1], [-1, 1, -1]], np.float32)
    pts = np.concatenate([blob, corners])
    idx = farthest_point_sample(pts, 8)
    assert len(set(idx.tolist())) == 8
    assert set(range(500, 504)) <= set(idx[:6].tolist())
    np.testing.assert_array_equal(idx, farthest_point_sample(pts, 8))
    np.testing.assert_array_equal(farthest_point_sample(pts[:3], 7), [0, 1, 2, 0, 1, 2, 0])
    with pytest.raises(PerceptionError):
        farthest_point_sample(pts[:0], 4)


def test_fusion_two_views_in_base_frame():
    # Two cameras looking at the same plane from different poses; fused points lie on it.
    cfg = CloudConfig(num_points=64, workspace=(-2, 2, -2, 2, -2, 2), voxel_size=0.01, depth_range=(0.05, 3.0))
    T_a = make_transform([0, 0, 1.0], [1, 0, 0, 0])  # looks down -z (180 deg about x)
    T_b = make_transform([0.2, 0, 1.0], [1, 0, 0, 0])
    views = [backproject(plane_depth(1.0), INTR, (0.05, 3.0)), backproject(plane_depth(1.0), INTR, (0.05, 3.0))]
    cloud = fuse_views(views, [T_a, T_b], cfg)
    assert cloud.shape == (64, 3) and cloud.dtype == np.float32
    np.testing.assert_allclose(cloud[:, 2], 0.0, atol=1e-5)  # the table plane z = 0
    assert cloud[:, 0].max() > 0.3  # includes points only camera b sees
    # Crop box excludes everything -> error, not an empty cloud.
    with pytest.raises(PerceptionError):
        fuse_views(views, [T_a, T_b], CloudConfig(16, (5, 6, 5, 6, 5, 6), 0.01, (0.05, 3.0)))


def test_fusion_with_colour():
    cfg = CloudConfig(32, (-2, 2, -2, 2, -2, 2), 0.0, (0.05, 3.0), point_color=True)
    rgb = np.full((24, 32, 3), 255, np.uint8)
    cloud = fuse_views([backproject(plane_depth(), INTR, (0.05, 3.0), rgb)], [np.eye(4)], cfg)
    assert cloud.shape == (32, 6)
    np.testing.assert_allclose(cloud[:, 3:], 1.0)


# ----------------------------------------------------------------------------- images


def test_resize_crops_to_aspect():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centred square
    out = resize_rgb(img, (10, 10))
    assert out.shape == (10, 10, 3)
    assert out.min() == 255  # only the centre square survives the crop
    # Encodings (bgr8 -> RGB, mono8 rejected) are the message decoder's: test_sensor_conv.py.
    assert rgb_to_float(np.array([255], np.uint8))[0] == 1.0


# ----------------------------------------------------------------------------- sync


def ms(x: float) -> int:
    return int(x * 1e6)


def test_sync_matches_within_slop_keep_newest():
    s = ApproximateTimeSync(["cam", "js"], slop_s=0.010)
    assert s.add("js", ms(100), "j100") is None
    out = s.add("cam", ms(105), "c105")
    assert out is not None and out.stamp_ns == ms(105) and out.items == {"cam": "c105", "js": "j100"}
    assert s.add("cam", ms(120), "c120") is None  # nearest js is 20 ms away
    out = s.add("js", ms(118), "j118")
    assert out.items["js"] == "j118" and out.stamp_ns == ms(120)


def test_sync_out_of_order_and_missing():
    s = ApproximateTimeSync(["a", "b", "js"], slop_s=0.005)
    for t in range(0, 200, 2):
        s.add("js", ms(t), t)
    assert s.add("a", ms(33), "a33") is None
    assert s.add("b", ms(66), "b66") is None  # frame at 33 ms of b is lost
    assert s.add("a", ms(66), "a66").items["a"] == "a66"
    # b's frame of 99 arrives before a's; then a late, older b frame must not go back in time.
    assert s.add("b", ms(99), "b99") is None
    assert s.add("b", ms(32), "b32") is None
    out = s.add("a", ms(100), "a100")
    assert out.stamp_ns == ms(100) and out.items["b"] == "b99"
    assert out.spread_ns <= ms(1)


def test_sync_keep_newest_skips_older_sets():
    s = ApproximateTimeSync(["a", "b"], slop_s=0.005)
    s.add("a", ms(10), 10)
    s.add("a", ms(20), 20)
    out = s.add("b", ms(21), 21)  # completes both 10? no: only 20 within slop
    assert out.stamp_ns == ms(20)
    s.add("a", ms(30), 30)
    s.add("a", ms(40), 40)
    out = s.add("b", ms(31), 31)
    assert out.stamp_ns == ms(30)
    s.add("b", ms(41), 41)  # completes 40 (newest), never 30 again
    assert s.add("b", ms(29), 29) is None


def test_sync_invalidate_and_window():
    s = ApproximateTimeSync(["a", "b"], slop_s=0.005, window_s=0.1)
    s.add("b", ms(10), "b10")
    s.invalidate("b")
    assert s.last_stamp("b") is None
    assert s.add("a", ms(10), "a10") is None  # b's data was forgotten
    s.add("b", ms(500), "b500")
    assert s.queue_len("a") == 0  # older than the window behind the newest stamp


# ----------------------------------------------------------------------------- preprocess


def spec(**kw) -> ObservationSpec:
    d = dict(
        cameras=("front", "side"),
        image_size=(16, 20),
        num_points=32,
        workspace=(-2, 2, -2, 2, -2, 2),
        voxel_size=0.01,
        proprio_names=("ee_x", "ee_y"),
        n_obs_steps=2,
    )
    d.update(kw)
    return ObservationSpec(**d)


def raw_frames(seed: int = 0, stamp: int = 0) -> RawFrames:
    rng = np.random.default_rng(seed)
    cams = {
        c: CameraFrame(
            color=rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
            depth=(rng.uniform(0.5, 1.5, (24, 32)) * 1000).astype(np.uint16),
            intrinsics=INTR,
            stamp_ns=stamp,
        )
        for c in ("front", "side")
    }
    return RawFrames(cameras=cams, proprio=rng.normal(size=2), stamp_ns=stamp)


CALIB = {"front": np.eye(4), "side": make_transform([0.1, 0, 0], [0, 0, 0, 1])}


def test_preprocess_shapes_and_dtypes():
    sp = spec(point_color=True)
    step = frame_step(sp, raw_frames(), CALIB)
    assert step["rgb"].shape == (2, 3, 16, 20) and step["rgb"].dtype == np.uint8
    assert step["points"].shape == (32, 6) and step["points"].dtype == np.float32
    assert step["proprio"].shape == (2,) and step["proprio"].dtype == np.float32
    m = preprocess_frames(sp, raw_frames(), CALIB)
    np.testing.assert_array_equal(m["rgb"], step["rgb"].astype(np.float32) / 255)
    assert 0.0 <= m["rgb"].min() and m["rgb"].max() <= 1.0
    # A cloud in place of depth for one camera.
    fr = raw_frames()
    pts, _ = backproject(depth_to_metres(fr.cameras["side"].depth), INTR, (0.05, 3.0))
    fr.cameras["side"] = CameraFrame(color=fr.cameras["side"].color, cloud=pts)
    np.testing.assert_allclose(frame_step(spec(), fr, CALIB)["points"], frame_step(spec(), raw_frames(), CALIB)["points"])


@pytest.mark.parametrize(
    "breakage",
    ["no_camera", "all_nan_depth", "all_zero_depth", "no_intrinsics", "no_calib", "nan_proprio", "no_proprio"],
)
def test_preprocess_rejects_bad_frames(breakage):
    fr = raw_frames()
    calib = dict(CALIB)
    if breakage == "no_camera":
        del fr.cameras["side"]
    elif breakage == "all_nan_depth":
        fr.cameras["front"].depth = np.full((24, 32), np.nan, np.float32)
    elif breakage == "all_zero_depth":
        fr.cameras["front"].depth = np.zeros((24, 32), np.uint16)
    elif breakage == "no_intrinsics":
        fr.cameras["front"].intrinsics = None
    elif breakage == "no_calib":
        del calib["side"]
    elif breakage == "nan_proprio":
        fr.proprio = np.array([np.nan, 0.0])
    elif breakage == "no_proprio":
        fr.proprio = None
    with pytest.raises(PerceptionError):
        frame_step(spec(), fr, calib)


def test_history_spacing_and_padding():
    h = ObservationHistory(3, period_s=0.1)
    h.push(ms(0), {"proprio": np.array([0.0])})
    np.testing.assert_array_equal(h.get()["proprio"][:, 0], [0, 0, 0])  # padded by repetition
    for t in range(10, 301, 10):  # frames every 10 ms, history every 100 ms
        h.push(ms(t), {"proprio": np.array([float(t)])})
    np.testing.assert_array_equal(h.get()["proprio"][:, 0], [100, 200, 300])
    with pytest.raises(PerceptionError):
        h.push(ms(300), {"proprio": np.array([1.0])})
    h1 = ObservationHistory(1)
    h1.push(1, {"x": np.zeros(2)})
    h1.push(2, {"x": np.ones(2)})
    assert h1.get()["x"].shape == (1, 2) and h1.get()["x"][0, 0] == 1


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["a", "b", "js"]), st.integers(0, 400)),  # (stream, stamp in ms)
        max_size=60,
    ),
    slop_ms=st.integers(0, 20),
)
def test_sync_invariants_any_arrival_order(events, slop_ms):
    """Whatever arrives in whatever order: sets are complete, within slop, forward in time, never repeated."""
    s = ApproximateTimeSync(["a", "b", "js"], slop_s=slop_ms / 1000, window_s=10.0)
    last = None
    for stream, t in events:
        out = s.add(stream, ms(t), (stream, t))
        if out is None:
            continue
        assert set(out.items) == {"a", "b", "js"}
        for k, (name, tk) in out.items.items():
            assert name == k and ms(tk) == out.stamps[k]
            assert abs(out.stamps[k] - out.stamp_ns) <= ms(slop_ms)
        assert out.stamps["a"] == out.stamp_ns  # anchored on the reference stream
        assert last is None or out.stamp_ns > last
        last = out.stamp_ns


def test_voxel_means_match_reference_and_ignore_input_order():
    rng = np.random.default_rng(5)
    pts = rng.uniform(-0.05, 0.05, (3000, 3)).astype(np.float32)
    cols = rng.uniform(0, 1, (3000, 3)).astype(np.float32)
    down, dcol = voxel_downsample(pts, cols, 0.02)
    ref: dict = {}
    for p, c in zip(pts, cols):
        ref.setdefault(tuple(np.floor(p / np.float32(0.02)).astype(int)), []).append((p, c))
    assert down.shape[0] == len(ref)
    got = {tuple(np.floor(p / np.float32(0.02)).astype(int)): (p, c) for p, c in zip(down, dcol)}
    for k, items in ref.items():
        np.testing.assert_allclose(got[k][0], np.mean([p for p, _ in items], axis=0), atol=1e-6)
        np.testing.assert_allclose(got[k][1], np.mean([c for _, c in items], axis=0), atol=1e-6)
    perm = rng.permutation(3000)
    down2, _ = voxel_downsample(pts[perm], cols[perm], 0.02)
    np.testing.assert_allclose(down2, down, atol=1e-6)  # same voxels, same order


def test_calibration_with_extra_keys_as_the_sim_writes():
    data = {
        "base_frame": "world",
        "cameras": {"corner": {"parent_frame": "world", "translation": [1.0, 0.5, 0.6],
                               "rotation": [0.0, 0.0, 0.0, 1.0], "width": 96, "height": 96, "fx": 80.0}},
    }
    cal = parse_calibration(data)
    np.testing.assert_allclose(cal["corner"][:3, 3], [1.0, 0.5, 0.6])


@settings(max_examples=80, deadline=None)
@given(
    depth_kind=st.sampled_from(["ok", "nan", "inf", "zero", "negative", "huge", "mixed", "uint16"]),
    depth_hw=st.sampled_from([(24, 32), (12, 16), (24, 31)]),
    color_hw=st.sampled_from([(24, 32), (5, 7), (300, 20)]),
    proprio=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=0, max_size=3),
    seed=st.integers(0, 1000),
)
def test_fuzz_frame_step_valid_or_perception_error(depth_kind, depth_hw, color_hw, proprio, seed):
    """Whatever the sensors deliver: a step of exactly the spec's shapes with finite values, or PerceptionError."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.3, 2.0, depth_hw).astype(np.float32)
    d = {
        "ok": d, "nan": np.full(depth_hw, np.nan, np.float32), "inf": np.full(depth_hw, np.inf, np.float32),
        "zero": np.zeros(depth_hw, np.float32), "negative": -d, "huge": d * 1e6,
        "mixed": np.where(rng.random(depth_hw) < 0.5, np.nan, d).astype(np.float32),
        "uint16": (d * 1000).astype(np.uint16),
    }[depth_kind]
    sp = spec(proprio_names=("ee_x", "ee_y"))
    cams = {c: CameraFrame(color=rng.integers(0, 256, (*color_hw, 3), dtype=np.uint8), depth=d, intrinsics=INTR)
            for c in ("front", "side")}
    try:
        step = frame_step(sp, RawFrames(cameras=cams, proprio=np.array(proprio)), CALIB)
    except PerceptionError:
        return
    assert step["rgb"].shape == (2, 3, 16, 20) and step["rgb"].dtype == np.uint8
    assert step["points"].shape == (32, 3) and np.isfinite(step["points"]).all()
    assert step["proprio"].shape == (2,) and np.isfinite(step["proprio"]).all()


# ----------------------------------------------------------------------------- engine (perception.pipeline)


def make_bundle(path, seed: int = 0, **obs) -> str:
    """A tiny bundle observing spec(**obs) (torch, CPU, a second or so)."""
    import torch

    from l1flow_ros.perception.encoders import EncoderConfig
    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.normalizer import Normalizer
    from l1flow_ros.policy.unet import UnetConfig
    from l1flow_ros.spec import ActionSpec, SamplerSpec

    torch.manual_seed(seed)
    act = ActionSpec(names=("ee_x", "ee_y"), horizon=8, n_action_steps=4, dt=0.1)
    enc = EncoderConfig(image_channels=(8, 16), image_keypoints=8, image_feature_dim=16, point_hidden=(16, 32),
                        point_feature_dim=16, proprio_hidden=16, proprio_feature_dim=8, out_dim=32, groups=4)
    model = PolicyModel(spec(**obs), act, SamplerSpec(),
                        ModelConfig(encoder=enc, unet=UnetConfig(down_dims=(16, 32), groups=4, time_embed_dim=16)))
    save_bundle(path, model, make_manifest(model, Normalizer(-np.ones(2), np.ones(2), [0.1, 0.2], [1.0, 2.0])))
    return str(path)


@pytest.fixture(scope="module")
def engine_assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    calib = d / "calib.yaml"
    calib.write_text("cameras:\n" + "".join(f"  {c}:\n    matrix: {np.asarray(T).tolist()}\n" for c, T in CALIB.items()))
    front_only = d / "front_calib.yaml"
    front_only.write_text(f"cameras:\n  front:\n    matrix: {np.eye(4).tolist()}\n")
    return {"a": make_bundle(d / "a", 0), "b": make_bundle(d / "b", 1),
            "front": make_bundle(d / "front", 2, cameras=("front",)),
            "calib": str(calib), "front_calib": str(front_only)}


def _decode_camera(stream, item, intr):
    """Items here are CameraFrame parts already; a string stands for a message the decoder refuses."""
    if isinstance(item, str):
        raise StreamError(stream, item)
    return item


def _decode_proprio(item, names):
    return np.asarray(item, dtype=np.float64)


class Clock:
    def __init__(self, ns: int = 0) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def make_engine(assets, bundle: str | None = "a", clock: Clock | None = None, **cfg) -> PerceptionEngine:
    cfg.setdefault("calibration_file", assets["calib"])
    eng = PerceptionEngine(PerceptionConfig(**cfg), clock or Clock(), _decode_camera, _decode_proprio)
    eng.intrinsics.update(front=INTR, side=INTR)
    if bundle is not None:
        eng.swap_in(eng.load(assets[bundle]))
    return eng


def feed(eng: PerceptionEngine, fr: RawFrames, stamp: int, bad: dict | None = None):
    """One observation's messages, one per stream (``bad``: stream -> a refused stand-in);
    returns the complete set the last of them made, and every restart reason."""
    items = {}
    for c, f in fr.cameras.items():
        items[f"{c}/color"] = CameraFrame(color=f.color)
        items[f"{c}/depth"] = CameraFrame(depth=f.depth)
    items["joint_states"] = fr.proprio
    items.update(bad or {})
    out, restarts = None, []
    for stream, item in items.items():
        got, restarted = eng.add(stream, stamp, item)
        out = got or out
        if restarted:
            restarts.append(restarted)
    return out, restarts


def test_needed_streams_per_observation_and_source():
    both = ("front/color", "front/depth", "side/color", "side/depth", "joint_states")
    assert needed_streams(spec()) == both  # the first camera's colour is the reference
    assert needed_streams(spec(), cloud_cameras=("side",)) == ("front/color", "front/depth", "side/color",
                                                              "side/cloud", "joint_states")
    assert needed_streams(spec(), source="realsense") == ("front/rgbd", "side/rgbd", "joint_states")
    # Points without colour and no image: depth only; points coloured from a cloud: no colour image.
    assert needed_streams(spec(use_rgb=False, proprio_names=())) == ("front/depth", "side/depth")
    assert needed_streams(spec(use_rgb=False, point_color=True), cloud_cameras=("front",)) == (
        "front/cloud", "side/color", "side/depth", "joint_states")
    assert needed_streams(spec(num_points=0)) == ("front/color", "side/color", "joint_states")


def test_config_parameters_names_defaults_and_live_split():
    """The node's parameter interface: these names, defaults and live / fixed-at-start split."""
    got = {f.name: (f.default, f.metadata["live"]) for f in dataclasses.fields(PerceptionConfig)}
    assert got == {
        "cameras": ((), False), "cloud_cameras": ((), False), "checkpoint": ("", True),
        "calibration_file": ("", False), "slop": (0.02, True), "max_observation_age": (0.5, True),
        "publish_cloud": (False, True), "cloud_frame_id": ("base", True), "encoder_backend": ("torch", True),
        "encoder_device": ("cpu", True), "strict_joint_names": (False, True), "diagnostics_period": (1.0, False),
        "source": ("topics", False), "realsense_serials": ((), False), "realsense_width": (640, False),
        "realsense_height": (480, False), "realsense_fps": (30, False),
    }
    PerceptionConfig().validate()
    for bad, words in [({"slop": -0.1}, "slop"), ({"max_observation_age": 0.0}, "max_observation_age"),
                       ({"encoder_backend": "magic"}, "encoder_backend"), ({"source": "usb"}, "source"),
                       ({"cameras": ("a", "a")}, "cameras"), ({"cameras": ("a/b",)}, "cameras"),
                       ({"cameras": ("a",), "cloud_cameras": ("b",)}, "cloud_cameras"),
                       ({"cameras": ("a",), "source": "realsense"}, "serial")]:
        with pytest.raises(ValueError, match=words):
            PerceptionConfig(**bad).validate()


def test_engine_step_is_the_preprocessing_path(engine_assets):
    """Sets through the engine give the dataset path's model input (frame_step -> history), its
    embedding, stage times and the latency statistics."""
    from l1flow_ros.perception.embedder import Embedder

    clock = Clock()
    eng = make_engine(engine_assets, clock=clock)
    e = Embedder(engine_assets["a"], warmup=False)
    assert eng.embedder.fingerprint == e.fingerprint
    hist = ObservationHistory(e.obs_spec.n_obs_steps, e.period_s)
    for k in range(3):
        stamp = ms(1000 + 60 * k)
        fr = raw_frames(seed=k, stamp=stamp)
        s, restarts = feed(eng, fr, stamp)
        assert s is not None and s.stamp_ns == stamp and not restarts
        clock.ns = stamp + ms(30)
        out = eng.step(s)
        hist.push(stamp, step_to_model(frame_step(e.obs_spec, fr, CALIB)))
        offline = hist.get()
        assert set(out.model_input) == set(offline) == {"rgb", "points", "proprio"}
        for key in offline:
            np.testing.assert_array_equal(out.model_input[key], offline[key])
        np.testing.assert_allclose(out.embedding, e.embed(offline), rtol=1e-5, atol=1e-6)
        assert out.stamp_ns == stamp and out.fingerprint == e.fingerprint
        assert out.step["points"].shape == (32, 3)
        decode, fuse, encode, total = out.times_s
        assert min(out.times_s) >= 0 and total >= decode + fuse + encode - 1e-9
        clock.ns = stamp + ms(40)
        eng.record(out)
    assert out.model_input["rgb"].shape == (2, 2, 3, 16, 20)
    assert eng.n_published == 3 and eng.last_ok_ns == clock.ns
    t = eng.timings_ms()
    assert set(t) == set(STAGES)
    assert t["latency"][0] == pytest.approx(40.0)  # stamp -> recorded, on the engine's clock


def test_engine_refuses_old_and_future_sets_and_keeps_going(engine_assets):
    clock = Clock()
    eng = make_engine(engine_assets, clock=clock, max_observation_age=0.2)
    s, _ = feed(eng, raw_frames(stamp=ms(1000)), ms(1000))
    clock.ns = ms(1300)
    with pytest.raises(PerceptionError, match="old"):
        eng.step(s)
    s, _ = feed(eng, raw_frames(stamp=ms(1600)), ms(1600))
    clock.ns = ms(1350)
    with pytest.raises(PerceptionError, match="future"):
        eng.step(s)
    s, _ = feed(eng, raw_frames(stamp=ms(1700)), ms(1700))
    clock.ns = ms(1710)
    assert eng.step(s).stamp_ns == ms(1700)


def test_engine_stream_error_drops_that_stream_and_a_bad_camera_info_is_reported(engine_assets):
    clock = Clock(ms(1010))
    eng = make_engine(engine_assets, clock=clock)
    s, _ = feed(eng, raw_frames(stamp=ms(1000)), ms(1000), bad={"front/color": "encoding rgba8"})
    with pytest.raises(StreamError, match="front/color: encoding rgba8"):
        eng.step(s)
    ages = eng.stream_ages_s(clock.ns)
    assert ages["front/color"] is None and ages["side/color"] == pytest.approx(0.01)  # only its queue dropped
    # A CameraInfo that could not be decoded: reported under its own name, which is no
    # synchronised stream (nothing to drop); the engine carries on once a good one comes.
    eng.intrinsics["side"] = ValueError("CameraInfo K has NaN or inf")
    s, _ = feed(eng, raw_frames(stamp=ms(1100)), ms(1100))
    clock.ns = ms(1110)
    with pytest.raises(StreamError, match="side/camera_info: CameraInfo K"):
        eng.step(s)
    eng.intrinsics["side"] = INTR
    s, _ = feed(eng, raw_frames(stamp=ms(1200)), ms(1200))
    clock.ns = ms(1210)
    assert eng.step(s) is not None
    del eng.intrinsics["side"]
    s, _ = feed(eng, raw_frames(stamp=ms(1300)), ms(1300))
    with pytest.raises(PerceptionError, match="no CameraInfo"):
        eng.step(s)


def test_engine_clock_jump_restarts_synchroniser_and_history(engine_assets):
    clock = Clock()
    eng = make_engine(engine_assets, clock=clock)
    for t in (10_000, 10_100):
        s, _ = feed(eng, raw_frames(seed=t, stamp=ms(t)), ms(t))
        clock.ns = ms(t + 10)
        eng.step(s)
    # Time goes 9 s back (a simulator reset): the synchroniser would wait for the old time.
    s, restarts = feed(eng, raw_frames(seed=1, stamp=ms(1000)), ms(1000))
    assert restarts and "jumped" in restarts[0] and "front/color" in restarts[0]
    assert s is not None and s.stamp_ns == ms(1000)
    clock.ns = ms(1010)
    out = eng.step(s)
    p = out.model_input["proprio"]  # (To, P): the history holds the new observation only
    np.testing.assert_array_equal(p[0], p[1])
    np.testing.assert_allclose(p[1], raw_frames(seed=1).proprio.astype(np.float32))


def test_engine_live_slop(engine_assets):
    """A new slop applies from the change on: side 30 ms off front is no set at 10 ms, one at 50 ms."""
    eng = make_engine(engine_assets, slop=0.01)

    def send(t_front: int, t_side: int):
        fr, out = raw_frames(), None
        for c, t in (("front", t_front), ("side", t_side)):
            out = eng.add(f"{c}/color", ms(t), CameraFrame(color=fr.cameras[c].color))[0] or out
            out = eng.add(f"{c}/depth", ms(t), CameraFrame(depth=fr.cameras[c].depth))[0] or out
        return eng.add("joint_states", ms(t_front), fr.proprio)[0] or out

    assert send(1000, 1030) is None
    eng.configure(dataclasses.replace(eng.cfg, slop=0.05))
    s = send(2000, 2030)
    assert s is not None and s.stamp_ns == ms(2000) and s.stamps["side/depth"] == ms(2030)
    assert eng.streams == needed_streams(spec())


def test_engine_swap_in_and_bundle_checks(engine_assets):
    clock = Clock(ms(1010))
    eng = make_engine(engine_assets, clock=clock)
    fp_a = eng.embedder.fingerprint
    assert eng.load(engine_assets["a"]) is None  # in use already
    assert eng.load(engine_assets["a"], reload=True).fingerprint == fp_a  # e.g. another backend
    s, _ = feed(eng, raw_frames(stamp=ms(1000)), ms(1000))
    emb_front = eng.load(engine_assets["front"])
    eng.swap_in(emb_front)
    assert eng.streams == ("front/color", "front/depth", "joint_states")
    assert eng.step(s) is None  # a set made for the previous checkpoint's streams is not encoded
    s, _ = feed(eng, RawFrames(cameras={"front": raw_frames().cameras["front"]}, proprio=np.zeros(2)), ms(1005))
    assert eng.step(s).fingerprint == emb_front.fingerprint
    eng.swap_in(eng.load(engine_assets["b"]))
    assert eng.embedder.fingerprint not in (fp_a, emb_front.fingerprint)
    # Bundles this node cannot feed.
    for cfg, words in [({"cameras": ("front",)}, "needs cameras"),
                       ({"calibration_file": ""}, "no calibration file"),
                       ({"calibration_file": engine_assets["front_calib"]}, r"no extrinsics for \['side'\]"),
                       ({"calibration_file": engine_assets["calib"] + ".missing"}, "calibration is unusable")]:
        with pytest.raises(PerceptionError, match=words):
            make_engine(engine_assets, bundle="a", **cfg)


def test_engine_calibration_written_after_start(engine_assets, tmp_path):
    late = tmp_path / "late.yaml"
    eng = make_engine(engine_assets, bundle=None, calibration_file=str(late))
    with pytest.raises(PerceptionError):
        eng.load(engine_assets["a"])
    late.write_text(open(engine_assets["calib"]).read())
    eng.swap_in(eng.load(engine_assets["a"]))  # the file is read again when a bundle is loaded
    assert set(eng.calib) == {"front", "side"}


def test_engine_health(engine_assets):
    clock = Clock(ms(1000))
    eng = make_engine(engine_assets, bundle=None, clock=clock, max_observation_age=0.5)
    eng.checkpoint_error = "checkpoint x not loaded"
    assert eng.status() == (ERROR, "checkpoint x not loaded")  # no encoder runs
    assert eng.refresh(clock.ns) is None  # no checkpoint, nothing to be stale about
    eng.swap_in(eng.load(engine_assets["a"]))
    assert eng.status() == (OK, "publishing embeddings")  # a swap-in clears it
    eng.checkpoint_error = "checkpoint y not loaded"
    assert eng.status() == (WARN, "checkpoint y not loaded")  # the previous encoder keeps running
    eng.checkpoint_error = None
    # Nothing received: stale, naming the stream.
    assert eng.refresh(clock.ns) == "front/color: no valid message received"
    assert eng.status() == (ERROR, "front/color: no valid message received")
    # A fresh data-path error is kept; once max_observation_age old, the current reason replaces it.
    eng.fail("front/color: encoding rgba8")
    clock.ns += ms(400)
    assert eng.refresh(clock.ns) is None and eng.status()[1] == "front/color: encoding rgba8"
    s, _ = feed(eng, raw_frames(stamp=clock.ns), clock.ns)
    clock.ns += ms(200)
    assert "no embedding for 0.5 s" in eng.refresh(clock.ns)  # messages are recent, none was encoded
    out = eng.step(s)
    eng.record(out)
    assert eng.status() == (OK, "publishing embeddings") and eng.refresh(clock.ns) is None
    clock.ns += ms(2000)
    assert eng.refresh(clock.ns) == "front/color: last message 2.20 s ago (stopped publishing?)"
