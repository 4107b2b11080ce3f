"""pyrealsense2 source without a camera: rs.software_device colour + depth sensors feeding a syncer."""

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from l1flow_ros.perception.geometry import make_transform  # noqa: E402
from l1flow_ros.perception.preprocess import RawFrames, frame_step  # noqa: E402
from l1flow_ros.perception.realsense import (  # noqa: E402
    CameraLoop,
    ClockMapper,
    FramesetConverter,
    RealSenseError,
    RealSenseSource,
)
from l1flow_ros.spec import ObservationSpec  # noqa: E402

pytestmark = pytest.mark.core

W, H = 32, 24


def _intr():
    i = rs.intrinsics()
    i.width, i.height, i.ppx, i.ppy, i.fx, i.fy = W, H, 15.5, 11.5, 40.0, 40.0
    i.model = rs.distortion.brown_conrady
    i.coeffs = [0.0] * 5
    return i


class SoftCamera:
    """A software RealSense: depth (z16) + colour sensors, frames pushed by the test, read through a syncer."""

    def __init__(self, color_format=rs.format.rgb8, matcher=None):
        self.dev = rs.software_device()
        if matcher is not None:
            self.dev.create_matcher(matcher)
        self.ds, self.cs = self.dev.add_sensor("Depth"), self.dev.add_sensor("Color")
        d = rs.video_stream()
        d.type, d.index, d.uid, d.width, d.height, d.fps, d.bpp, d.fmt = rs.stream.depth, 0, 0, W, H, 30, 2, rs.format.z16
        d.intrinsics = _intr()
        c = rs.video_stream()
        c.type, c.index, c.uid, c.width, c.height, c.fps, c.bpp, c.fmt = rs.stream.color, 0, 1, W, H, 30, 3, color_format
        c.intrinsics = _intr()
        self.dp, self.cp = self.ds.add_video_stream(d), self.cs.add_video_stream(c)
        self.ds.add_read_only_option(rs.option.depth_units, 0.001)
        ex = rs.extrinsics()
        ex.rotation, ex.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0.0, 0.0, 0.0]
        self.dp.register_extrinsics_to(self.cp, ex)
        self.sync = rs.syncer()
        self.ds.open(self.dp)
        self.cs.open(self.cp)
        self.ds.start(self.sync)
        self.cs.start(self.sync)
        self.n = 0

    def push(self, depth_mm: np.ndarray, rgb: np.ndarray, t_ms: float) -> None:
        for sensor, prof, img, bpp in ((self.ds, self.dp, depth_mm, 2), (self.cs, self.cp, rgb, 3)):
            f = rs.software_video_frame()
            f.pixels = np.ascontiguousarray(img).tobytes()
            f.stride, f.bpp, f.timestamp = W * bpp, bpp, t_ms
            f.domain = rs.timestamp_domain.hardware_clock
            f.frame_number = self.n
            f.profile = prof.as_video_stream_profile()
            sensor.on_video_frame(f)
        self.n += 1

    def close(self):
        for s in (self.ds, self.cs):
            s.stop()
            s.close()


def test_converter_aligned_depth_colour_and_intrinsics():
    cam = SoftCamera()
    conv = FramesetConverter()
    rng = np.random.default_rng(0)
    # A smooth surface: rs.align resamples per pixel footprint, so depth jumps would open occlusion holes.
    depth = (900 + 4 * np.arange(W)[None, :] + 2 * np.arange(H)[:, None]).astype(np.uint16)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    got = None
    for k in range(8):
        cam.push(depth, rgb, 1000.0 + 33.3 * k)
        ok, fs = cam.sync.try_wait_for_frames(200)
        while ok and got is None:
            got = conv(fs, arrival_ns=int(5e9))
            ok, fs = cam.sync.try_wait_for_frames(50)
        if got is not None:
            break
    cam.close()
    assert got is not None, "no complete colour + depth set came through the syncer"
    np.testing.assert_array_equal(got.color, rgb)
    # Identity extrinsics, same intrinsics: aligned depth is the depth in metres, except the few
    # pixels rs.align leaves empty (0) where its per-pixel footprints round away.
    valid = got.depth > 0
    assert valid.mean() > 0.8
    np.testing.assert_allclose(got.depth[valid], depth[valid].astype(np.float32) / 1000, atol=1e-6)
    assert (got.intrinsics.fx, got.intrinsics.cx, got.intrinsics.width) == (40.0, 15.5, W)
    assert got.stamp_ns == int(5e9)  # first hardware frame: mapped onto its arrival time
    # The frame feeds THE preprocessing path like a topic frame does.
    spec = ObservationSpec(cameras=("c",), image_size=(12, 16), num_points=16, workspace=(-3, 3, -3, 3, -3, 3))
    step = frame_step(spec, RawFrames(cameras={"c": got}), {"c": make_transform([0, 0, 0], [0, 0, 0, 1])})
    assert step["rgb"].shape == (1, 3, 12, 16) and step["points"].shape == (16, 3)


def test_bgr_camera_is_converted_to_rgb():
    cam = SoftCamera(color_format=rs.format.bgr8)
    conv = FramesetConverter()
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # stored as BGR: channel 0 is blue
    got = None
    for k in range(8):
        cam.push(np.full((H, W), 1000, np.uint16), rgb, 10.0 + 33.3 * k)
        ok, fs = cam.sync.try_wait_for_frames(200)
        if ok:
            got = conv(fs) or got
        if got is not None:
            break
    cam.close()
    assert got is not None
    assert got.color[0, 0].tolist() == [0, 0, 200]


def soft_frameset(depth_mm: np.ndarray, rgb: np.ndarray, t_ms: float, keep: list):
    """One complete colour + depth frameset out of a fresh software device's syncer.

    librealsense's syncer pairs the software sensors' frames only once per device here
    (later depth frames never show up), so each set comes from its own device.
    """
    cam = SoftCamera()
    keep.append(cam)
    for dt in (-33.3, 0.0, 33.3):
        cam.push(depth_mm, rgb, t_ms + dt)
        ok, fs = cam.sync.try_wait_for_frames(100)
        while ok:
            if fs.size() == 2:
                return fs
            ok, fs = cam.sync.try_wait_for_frames(20)
    return None


def test_capture_thread_streams_hardware_stamped_frames():
    frames, keep = [], []
    k = {"n": 0}
    t0 = time.monotonic()
    dev_ms = {}  # frame n -> its device timestamp: a device clock ticking with real time, offset 2 s

    def next_frameset(timeout_ms):
        n = k["n"]
        if n >= 5:
            time.sleep(timeout_ms / 1000)
            return False, None
        k["n"] += 1
        dev_ms[n] = 2000.0 + (time.monotonic() - t0) * 1e3
        fs = soft_frameset(np.full((H, W), 800 + n, np.uint16), np.full((H, W, 3), n, np.uint8), dev_ms[n], keep)
        time.sleep(0.02)
        return fs is not None, fs

    loop = CameraLoop("wrist", next_frameset, lambda c, f: frames.append((c, f)))
    loop.start()
    deadline = time.monotonic() + 10
    while len(frames) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.stop()
    for cam in keep:
        cam.close()
    assert len(frames) >= 3 and all(c == "wrist" for c, _ in frames)
    stamps = [f.stamp_ns for _, f in frames]
    assert stamps == sorted(stamps)
    n = [int(f.color[0, 0, 0]) for _, f in frames]
    # Host stamps keep the device clock's spacing (one offset, only tightened by less-delayed frames).
    dev = np.array([dev_ms[i] for i in n])
    spacing = np.diff(stamps) * 1e-6 - np.diff(dev)
    assert np.all(np.abs(spacing) <= 15.0)
    assert abs(stamps[-1] - time.time_ns()) < 10e9  # host clock domain, not device time since boot
    assert all(np.allclose(f.depth[f.depth > 0], (800 + i) / 1000) for (_, f), i in zip(frames, n))


def test_clock_mapper_uses_least_delayed_frame():
    m = ClockMapper()
    assert m(1000.0, 5_000_000_000) == 5_000_000_000
    # A frame that arrives with less transport delay tightens the offset for all later frames.
    assert m(1010.0, 5_005_000_000) == 5_005_000_000
    assert m(1020.0, 5_030_000_000) == 5_015_000_000


def test_missing_serial_is_a_clear_error():
    src = RealSenseSource({"front": "000000000000"}, 64, 48, 30)
    with pytest.raises(RealSenseError):
        src.start()
    src.stop()
