"""Fuzzing the policy's message conversions: any JointTrajectory / embedding Image / controller
command gives valid arrays or a MessageError with a reason, never another exception; stamp
arithmetic (msgs/stamps.py) against an independent oracle."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from l1flow_ros.msgs.chunk_conv import (
    MessageError,
    chunk_from_msg,
    chunk_to_msg,
    command_from_msg,
    duration_to_ns,
    embedding_from_msg,
    embedding_to_msg,
    ns_to_duration,
    ns_to_stamp,
)
from l1flow_ros.msgs.stamps import header_stamp_ns, split_ns, stamp_to_ns
from l1flow_ros.spec import Chunk

pytestmark = pytest.mark.core

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


# ----------------------------------------------------------------------------- stamps


@FUZZ
@given(ns=st.integers(-(2**62), 2**62))
def test_stamp_arithmetic_round_trips(ns):
    sec, nanosec = split_ns(ns)
    assert 0 <= nanosec < 10**9 and sec * 10**9 + nanosec == ns
    assert stamp_to_ns(SimpleNamespace(sec=sec, nanosec=nanosec)) == ns  # duck-typed: MCAP-decoded
    if -(2**31) <= sec < 2**31:  # what fits the messages' int32 sec
        d = ns_to_duration(ns)
        assert (d.sec, d.nanosec) == (sec, nanosec) and duration_to_ns(d) == ns
        if ns >= 0:
            t = ns_to_stamp(ns)
            assert (t.sec, t.nanosec) == (sec, nanosec) and stamp_to_ns(t) == ns


def test_unnormalised_nanosec_and_header_fallback():
    # nanosec >= 1e9 is not normalised by senders in the wild; it still counts as nanoseconds.
    assert stamp_to_ns(Time(sec=1, nanosec=1_500_000_000)) == 2_500_000_000
    stamped = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=3, nanosec=7)))
    assert header_stamp_ns(stamped, fallback=99) == 3_000_000_007
    unstamped = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0)))
    assert header_stamp_ns(unstamped, fallback=99) == 99  # never stamped: the receive time stands in
    assert header_stamp_ns(Float64MultiArray(), fallback=42) == 42  # no header at all
    with pytest.raises(MessageError):
        ns_to_stamp(-1)


# ----------------------------------------------------------------------------- controller commands


def test_command_from_array_and_trajectory():
    np.testing.assert_array_equal(command_from_msg(Float64MultiArray(data=[1.0, 2.0]), ("a", "b")), [1.0, 2.0])
    traj = JointTrajectory(joint_names=["b", "x", "a"])
    traj.points = [JointTrajectoryPoint(positions=[2.0, 9.0, 1.0]), JointTrajectoryPoint(positions=[5.0, 5.0, 5.0])]
    np.testing.assert_array_equal(command_from_msg(traj, ("a", "b")), [1.0, 2.0])  # first point, by name
    for bad in (Float64MultiArray(data=[1.0]), Float64MultiArray(data=[1.0, math.nan]),
                JointTrajectory(joint_names=["a", "b"]), JointTrajectory(joint_names=["a"], points=[traj.points[0]]),
                JointTrajectory(joint_names=["a", "a", "b"], points=[traj.points[0]])):
        with pytest.raises(MessageError):
            command_from_msg(bad, ("a", "b"))


@FUZZ
@given(
    use_traj=st.booleans(),
    joint_names=names,
    rows=st.lists(st.lists(st.one_of(floats, st.floats(-2, 2)), max_size=6), max_size=3),
    expected=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True),
)
def test_any_command_gives_a_valid_action_or_message_error(use_traj, joint_names, rows, expected):
    if use_traj:
        msg = JointTrajectory(joint_names=joint_names, points=[JointTrajectoryPoint(positions=r) for r in rows])
    else:
        msg = Float64MultiArray(data=rows[0] if rows else [])
    try:
        a = command_from_msg(msg, tuple(expected))
    except MessageError as e:
        assert str(e)
        return
    assert a.dtype == np.float64 and a.shape == (len(expected),) and np.all(np.isfinite(a))
    if use_traj:
        assert a.tolist() == [rows[0][joint_names.index(n)] for n in expected]
