"""Fuzzing the policy's message conversions: any JointTrajectory / embedding Image gives valid
arrays or a MessageError with a reason, never another exception."""

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from l1flow_ros.msgs.chunk_conv import (
    MessageError,
    chunk_from_msg,
    chunk_to_msg,
    embedding_from_msg,
    embedding_to_msg,
)
from l1flow_ros.spec import Chunk

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

int32 = st.integers(-(2**31), 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
small_sec = st.integers(-2, 5)
nanosec = st.one_of(st.integers(0, 999_999_999), uint32)
names = st.lists(st.sampled_from(["a", "b", "c", "gripper", "ee_x", ""]), max_size=5)
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def trajectories(draw) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = Time(sec=draw(int32), nanosec=draw(st.integers(0, 999_999_999)))
    msg.header.frame_id = draw(st.text(max_size=8))
    msg.joint_names = draw(names)
    n = len(msg.joint_names)
    regular = draw(st.booleans())  # half the cases well-formed timing, to reach the deeper checks
    dt_ns = draw(st.integers(1, 10**9))
    for k in range(draw(st.integers(0, 6))):
        p = JointTrajectoryPoint()
        width = n if draw(st.booleans()) else draw(st.integers(0, 6))
        p.positions = draw(st.lists(floats if draw(st.booleans()) else st.floats(-10, 10), min_size=width,
                                    max_size=width))
        if regular:
            t = (k + 1) * dt_ns
            p.time_from_start = Duration(sec=t // 10**9, nanosec=t % 10**9)
        else:
            p.time_from_start = Duration(sec=draw(st.one_of(small_sec, int32)), nanosec=draw(nanosec))
        msg.points.append(p)
    return msg


@FUZZ
@given(msg=trajectories(), expected=st.one_of(st.none(), names))
def test_any_joint_trajectory_gives_a_valid_chunk_or_message_error(msg, expected):
    try:
        chunk = chunk_from_msg(msg, expected_names=None if expected is None else tuple(expected))
    except MessageError as e:
        assert str(e)
        return
    a = np.asarray(chunk.actions)
    assert a.dtype == np.float64
    assert a.shape == (len(msg.points), len(msg.joint_names)) and a.shape[0] >= 1 and a.shape[1] >= 1
    assert np.all(np.isfinite(a))
    assert chunk.dt > 0 and math.isfinite(chunk.dt)
    assert len(chunk.names) == a.shape[1] and len(set(chunk.names)) == a.shape[1]
    if expected is not None:
        assert chunk.names == tuple(expected)
    assert isinstance(chunk.t_obs_ns, int)
    # Point k is due at t_obs + (k + 1) dt, as sent (within the converter's 1 us tolerance).
    for k, p in enumerate(msg.points):
        sent = p.time_from_start.sec * 10**9 + p.time_from_start.nanosec
        assert abs(chunk.due_ns(k) - chunk.t_obs_ns - sent) <= max(1000, int(chunk.dt * 1e6)) + 1


@FUZZ
@given(
    h=st.integers(1, 20),
    a=st.integers(1, 6),
    dt_ns=st.integers(1_000, 10**9),
    t_obs=st.integers(0, 2**62),
    seed=st.integers(0, 2**32 - 1),
)
def test_chunk_round_trip(h, a, dt_ns, t_obs, seed):
    actions = np.random.default_rng(seed).normal(size=(h, a)) * 10
    names = tuple(f"j{i}" for i in range(a))
    chunk = Chunk(t_obs_ns=t_obs, dt=dt_ns * 1e-9, actions=actions, names=names, fingerprint="fp")
    back = chunk_from_msg(chunk_to_msg(chunk), expected_names=names[::-1])
    np.testing.assert_array_equal(back.actions, actions[:, ::-1])
    assert back.t_obs_ns == t_obs and back.fingerprint == "fp"
    assert [back.due_ns(k) for k in range(h)] == [chunk.due_ns(k) for k in range(h)]


@st.composite
def images(draw) -> Image:
    msg = Image()
    msg.header.stamp = Time(sec=draw(int32), nanosec=draw(st.integers(0, 999_999_999)))
    msg.header.frame_id = draw(st.sampled_from(["", "fp", "abc123"]))
    msg.encoding = draw(st.sampled_from(["32FC1", "32FC1", "mono8", "", "32FC3", "64FC1"]))
    msg.height = draw(st.one_of(st.integers(0, 3), uint32))
    width = draw(st.integers(0, 40))
    msg.width = width if draw(st.booleans()) else draw(uint32)
    consistent = draw(st.booleans())
    msg.step = 4 * msg.width if consistent and 4 * msg.width < 2**32 else draw(uint32)
    msg.is_bigendian = draw(st.integers(0, 1))
    if consistent and msg.width <= 100 and msg.step == 4 * msg.width:
        raw = draw(st.lists(st.floats(width=32), min_size=msg.width, max_size=msg.width))
        msg.data = np.asarray(raw, dtype=">f4" if msg.is_bigendian else "<f4").tobytes()
    else:
        msg.data = draw(st.binary(max_size=200))
    return msg


@FUZZ
@given(msg=images(), expected=st.one_of(st.none(), st.integers(0, 50)))
def test_any_embedding_image_gives_a_valid_array_or_message_error(msg, expected):
    try:
        e, stamp, fp = embedding_from_msg(msg, expected_dim=expected)
    except MessageError as err:
        assert str(err)
        return
    assert e.dtype == np.float32 and e.shape == (msg.width,) and e.shape[0] >= 1
    assert np.all(np.isfinite(e))
    assert fp == msg.header.frame_id and fp
    assert stamp == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    if expected is not None:
        assert e.shape[0] == expected


@FUZZ
@given(d=st.integers(1, 64), seed=st.integers(0, 2**32 - 1), t=st.integers(0, 2**62))
def test_embedding_round_trip(d, seed, t):
    e = np.random.default_rng(seed).normal(size=d).astype(np.float32)
    back, stamp, fp = embedding_from_msg(embedding_to_msg(e, t, "fp"), expected_dim=d)
    np.testing.assert_array_equal(back, e)
    assert stamp == t and fp == "fp"


def test_negative_observation_time_cannot_be_sent():
    with pytest.raises(MessageError):
        chunk_to_msg(Chunk(t_obs_ns=-1, dt=0.1, actions=np.zeros((2, 1)), names=("a",)))
