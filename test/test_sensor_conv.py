"""Sensor message conversions: round trips, and fuzzing (any message -> valid array or MessageError)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField

from l1flow_ros.msgs.chunk_conv import MessageError
from l1flow_ros.msgs.sensor_conv import (
    camera_info_from_msg,
    camera_info_to_msg,
    color_from_msg,
    depth_from_msg,
    image_from_msg,
    image_to_msg,
    joint_state_from_msg,
    joint_state_to_msg,
    pointcloud_from_msg,
    pointcloud_to_msg,
)
from l1flow_ros.perception.geometry import CameraIntrinsics

pytestmark = pytest.mark.core

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U32 = st.integers(0, 2**32 - 1)


# ----------------------------------------------------------------------------- Image


def test_rgb_and_bgr_decode_to_rgb():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for enc in ("rgb8", "bgr8"):
        got = color_from_msg(image_to_msg(img, enc))
        np.testing.assert_array_equal(got, img)


def test_bgr_bytes_are_swapped():
    msg = image_to_msg(np.array([[[10, 20, 30]]], np.uint8), "rgb8")
    msg.encoding = "bgr8"  # same bytes read as BGR -> RGB reversed
    np.testing.assert_array_equal(color_from_msg(msg)[0, 0], [30, 20, 10])


def test_row_padding_is_stripped():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = Image(height=2, width=3, encoding="rgb8", step=12)
    rows = [np.concatenate([img[r].reshape(-1), np.array([99, 99, 99], np.uint8)]) for r in range(2)]
    msg.data = np.concatenate(rows).tobytes()
    np.testing.assert_array_equal(color_from_msg(msg), img)


def test_depth_16uc1_mm_and_32fc1_m():
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(depth_from_msg(image_to_msg(mm, "16UC1")), mm.astype(np.float32) / 1000)
    m = np.array([[np.nan, 1.5], [np.inf, 0.25]], dtype=np.float32)
    np.testing.assert_array_equal(depth_from_msg(image_to_msg(m, "32FC1")), m)


def test_big_endian_depth():
    mm = np.array([[1234, 4321]], dtype=">u2")
    msg = Image(height=1, width=2, encoding="16UC1", is_bigendian=1, step=4, data=mm.tobytes())
    np.testing.assert_allclose(depth_from_msg(msg), [[1.234, 4.321]], rtol=1e-6)


@pytest.mark.parametrize("enc", ["mono8", "rgba8", "yuv422", "", "16SC1", "8UC3"])
def test_other_encodings_rejected(enc):
    msg = Image(height=1, width=1, encoding=enc, step=3, data=b"\x00\x00\x00")
    with pytest.raises(MessageError):
        image_from_msg(msg)


def test_wrong_size_and_truncated_data():
    msg = image_to_msg(np.zeros((4, 4, 3), np.uint8), "rgb8")
    with pytest.raises(MessageError):
        color_from_msg(msg, expected_size=(8, 4))
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(MessageError):
        color_from_msg(msg)
    with pytest.raises(MessageError):
        depth_from_msg(image_to_msg(np.zeros((4, 4, 3), np.uint8), "rgb8"))  # colour given as depth


@FUZZ
@given(
    h=st.integers(0, 6),
    w=st.integers(0, 6),
    step=st.integers(0, 40),
    enc=st.sampled_from(["rgb8", "bgr8", "16UC1", "32FC1", "mono8", "bogus"]),
    big=st.integers(0, 1),
    extra=st.integers(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_fuzz_image(h, w, step, enc, big, extra, seed):
    n = max(0, step * h + extra)
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    msg = Image(height=h, width=w, step=step, encoding=enc, is_bigendian=big, data=data)
    try:
        arr, got_enc = image_from_msg(msg)
    except MessageError:
        return
    assert got_enc == enc
    if enc in ("rgb8", "bgr8"):
        assert arr.shape == (h, w, 3) and arr.dtype == np.uint8
    else:
        assert arr.shape == (h, w) and arr.dtype == np.float32


# ----------------------------------------------------------------------------- CameraInfo


def test_camera_info_round_trip():
    intr = CameraIntrinsics(600.0, 610.0, 320.5, 240.5, 640, 480, "plumb_bob", (0.1, 0, 0, 0, 0))
    got = camera_info_from_msg(camera_info_to_msg(intr))
    assert got == intr


@pytest.mark.parametrize(
    "k,w,h",
    [
        ([0, 0, 1, 0, 1, 1, 0, 0, 1], 4, 4),  # fx = 0
        ([1, 0, 1, 0, -2, 1, 0, 0, 1], 4, 4),  # fy < 0
        ([float("nan"), 0, 1, 0, 1, 1, 0, 0, 1], 4, 4),
        ([1, 0, 1, 0, 1, 1, 0, 0, 1], 0, 4),  # no size
    ],
)
def test_camera_info_invalid(k, w, h):
    msg = CameraInfo(width=w, height=h)
    msg.k = [float(x) for x in k]
    with pytest.raises(MessageError):
        camera_info_from_msg(msg)


@FUZZ
@given(
    k=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=9, max_size=9),
    w=U32,
    h=U32,
    d=st.lists(st.floats(width=64), max_size=8),
    model=st.text(max_size=10),
)
def test_fuzz_camera_info(k, w, h, d, model):
    msg = CameraInfo(width=w, height=h, distortion_model=model)
    msg.k = k
    msg.d = d
    try:
        intr = camera_info_from_msg(msg)
    except MessageError:
        return
    assert intr.fx > 0 and intr.fy > 0 and np.isfinite([intr.cx, intr.cy]).all()
    assert intr.width == w and intr.height == h


# ----------------------------------------------------------------------------- PointCloud2


def test_pointcloud_round_trip_with_colour():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (50, 3)).astype(np.float32) / 255
    got_p, got_c = pointcloud_from_msg(pointcloud_to_msg(pts, cols, 5, "base"))
    np.testing.assert_array_equal(got_p, pts)
    np.testing.assert_allclose(got_c, cols, atol=1e-6)
    got_p, got_c = pointcloud_from_msg(pointcloud_to_msg(pts))
    assert got_c is None and got_p.shape == (50, 3)


def test_pointcloud_float64_padding_and_holes():
    # Organised 2 x 2 cloud, float64 xyz with padding, one NaN hole (RealSense-like).
    rec = np.zeros((2, 2), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("pad", "<f8")])
    rec["x"] = [[0, 1], [2, 3]]
    rec["y"] = 1.0
    rec["z"] = [[1, np.nan], [2, 3]]
    msg = PointCloud2(height=2, width=2, point_step=32, row_step=64, is_dense=False)
    msg.fields = [PointField(name=n, offset=8 * i, datatype=PointField.FLOAT64, count=1) for i, n in enumerate("xyz")]
    msg.data = rec.tobytes()
    pts, cols = pointcloud_from_msg(msg)
    assert cols is None
    np.testing.assert_array_equal(pts, [[0, 1, 1], [2, 1, 2], [3, 1, 3]])


def test_pointcloud_missing_field_rejected():
    msg = pointcloud_to_msg(np.zeros((3, 3), np.float32))
    msg.fields = msg.fields[:2]
    with pytest.raises(MessageError):
        pointcloud_from_msg(msg)


field_st = st.builds(
    PointField,
    name=st.sampled_from(["x", "y", "z", "rgb", "rgba", "intensity"]),
    offset=st.integers(0, 40),
    datatype=st.integers(0, 9),
    count=st.integers(0, 3),
)


@FUZZ
@given(
    h=st.integers(0, 4),
    w=st.integers(0, 5),
    ps=st.integers(0, 40),
    rs_extra=st.integers(-4, 8),
    fields=st.lists(field_st, max_size=6),
    big=st.booleans(),
    data_extra=st.integers(-2, 2),
    seed=st.integers(0, 2**16),
)
def test_fuzz_pointcloud(h, w, ps, rs_extra, fields, big, data_extra, seed):
    rs = max(0, w * ps + rs_extra)
    n = max(0, rs * h + data_extra)
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    msg = PointCloud2(height=h, width=w, point_step=ps, row_step=rs, fields=fields, is_bigendian=big, data=data)
    try:
        pts, cols = pointcloud_from_msg(msg)
    except MessageError:
        return
    assert pts.ndim == 2 and pts.shape[1] == 3 and pts.dtype == np.float32
    assert np.isfinite(pts).all()
    if cols is not None:
        assert cols.shape == pts.shape and cols.min() >= 0 and cols.max() <= 1


# ----------------------------------------------------------------------------- JointState


def test_joint_state_reordered_and_extra_allowed():
    msg = joint_state_to_msg(["b", "x", "a"], [2.0, 9.0, 1.0], 7)
    pos, stamp = joint_state_from_msg(msg, ("a", "b"))
    np.testing.assert_array_equal(pos, [1.0, 2.0])
    assert stamp == 7
    with pytest.raises(MessageError):
        joint_state_from_msg(msg, ("a", "b"), allow_extra=False)


def test_joint_state_missing_or_bad():
    with pytest.raises(MessageError):
        joint_state_from_msg(joint_state_to_msg(["a"], [1.0]), ("a", "b"))
    with pytest.raises(MessageError):
        joint_state_from_msg(joint_state_to_msg(["a", "b"], [1.0, float("nan")]), ("a", "b"))
    bad = JointState(name=["a", "b"], position=[1.0])
    with pytest.raises(MessageError):
        joint_state_from_msg(bad, ("a",))


@FUZZ
@given(
    names=st.lists(st.sampled_from(["j0", "j1", "j2", "j3", "other", ""]), max_size=6),
    pos=st.lists(st.floats(width=64), max_size=6),
    expected=st.lists(st.sampled_from(["j0", "j1", "j2"]), max_size=3, unique=True),
    allow_extra=st.booleans(),
)
def test_fuzz_joint_state(names, pos, expected, allow_extra):
    msg = JointState(name=names, position=pos)
    try:
        out, _ = joint_state_from_msg(msg, tuple(expected), allow_extra)
    except MessageError:
        return
    assert out.shape == (len(expected),) and np.isfinite(out).all()
    for i, n in enumerate(expected):
        assert out[i] == pos[names.index(n)]
