"""Property-based fuzzing of the conversions the nodes chain on every message, beyond the
single-message ones (test_sensor_conv.py, test_chunk_conv_fuzz.py): one camera's colour +
depth + CameraInfo into a CameraFrame (what perception_node decodes per camera), and the
executor's tail (JointTrajectory) into the inference node's warm start. Any input gives a
valid result or a MessageError with a reason, never another exception."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, Image
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from l1flow_ros.msgs.chunk_conv import MessageError, tail_from_msg
from l1flow_ros.msgs.sensor_conv import camera_frame_from_msgs

pytestmark = pytest.mark.core

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BPP = {"rgb8": 3, "bgr8": 3, "16UC1": 2, "32FC1": 4, "rgba8": 4, "mono8": 1}


@st.composite
def images(draw, encodings: tuple[str, ...]) -> Image:
    h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    enc = draw(st.sampled_from(encodings))
    regular = draw(st.booleans())  # half well-formed, to reach the checks past the layout
    step = w * BPP[enc] if regular else draw(st.integers(0, 30))
    n = step * h if regular else max(0, step * h + draw(st.integers(-3, 3)))
    seed = draw(st.integers(0, 2**16))
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    if enc == "32FC1" and regular and draw(st.booleans()):  # special floats in depth
        vals = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30]))
        data = np.full(h * w, vals, "<f4").view(np.uint8)
    return Image(height=h, width=w, encoding=enc, step=step, is_bigendian=draw(st.integers(0, 1)),
                 data=data.tobytes())


@st.composite
def infos(draw) -> CameraInfo:
    msg = CameraInfo(width=draw(st.integers(0, 6)), height=draw(st.integers(0, 6)))
    f = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.floats(0.1, 100))
    msg.k = [draw(f), 0.0, draw(f), 0.0, draw(f), draw(f), 0.0, 0.0, 1.0]
    return msg


@FUZZ
@given(color=st.one_of(st.none(), images(("rgb8", "bgr8", "rgba8", "16UC1"))),
       depth=st.one_of(st.none(), images(("16UC1", "32FC1", "rgb8", "mono8"))),
       info=st.one_of(st.none(), infos()))
def test_camera_frame_is_valid_or_message_error(color, depth, info):
    try:
        frame = camera_frame_from_msgs(color=color, depth=depth, info=info)
    except MessageError as e:
        assert str(e)
        return
    if color is not None:
        assert frame.color.dtype == np.uint8 and frame.color.shape == (color.height, color.width, 3)
    if depth is not None:
        assert frame.depth.dtype == np.float32 and frame.depth.shape == (depth.height, depth.width)
    if color is not None and depth is not None:
        assert frame.color.shape[:2] == frame.depth.shape
    if info is not None:
        size = (frame.intrinsics.height, frame.intrinsics.width)
        for img in (frame.color, frame.depth):
            if img is not None:
                assert img.shape[:2] == size


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def tails(draw) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = Time(sec=draw(st.integers(0, 2**31 - 1)), nanosec=draw(st.integers(0, 999_999_999)))
    msg.joint_names = draw(st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=4))
    for _ in range(draw(st.integers(0, 5))):
        p = JointTrajectoryPoint()
        width = len(msg.joint_names) if draw(st.booleans()) else draw(st.integers(0, 5))
        p.positions = draw(st.lists(st.one_of(floats, st.floats(-2, 2)), min_size=width, max_size=width))
        p.time_from_start = Duration(sec=draw(st.integers(-2, 3)), nanosec=draw(st.integers(0, 999_999_999)))
        msg.points.append(p)
    return msg


@FUZZ
@given(msg=tails(), names=st.sampled_from([("a", "b"), ("b", "a"), ("a", "b", "c"), ("c",)]))
def test_executor_tail_is_valid_or_message_error(msg, names):
    try:
        tail = tail_from_msg(msg, names)
    except MessageError as e:
        assert str(e)
        return
    assert tail.actions.shape == (len(msg.points), len(names)) and np.isfinite(tail.actions).all()
    assert tail.times_ns.shape == (len(msg.points),) and np.all(np.diff(tail.times_ns) > 0)
