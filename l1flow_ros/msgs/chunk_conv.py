"""Conversions for the policy's own messages: embeddings, action chunks and commands.

Contract (docs/ARCHITECTURE.md, "Messages of the policy"):
- embedding: sensor_msgs/Image, encoding 32FC1, height 1, width D;
  header.stamp = observation time; header.frame_id = checkpoint fingerprint.
- action chunk: trajectory_msgs/JointTrajectory; header.stamp = observation time;
  point k has time_from_start = (k + 1) * dt; joint_names = action dimension names.
- command (what teleoperation sends the arm controller, recorded in episodes):
  std_msgs/Float64MultiArray (values in action order) or JointTrajectory (its first point).

Every ``*_from_msg`` either returns valid finite arrays or raises
:class:`MessageError` with a reason; never another exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from l1flow_ros.msgs.stamps import split_ns, stamp_to_ns
from l1flow_ros.spec import Chunk, Tail


class MessageError(ValueError):
    """A message that cannot be turned into valid model data; the text says why."""


# Time / Duration messages; the arithmetic itself is in l1flow_ros.msgs.stamps (stamp_to_ns is
# imported from there and used by every caller of this module).


def ns_to_stamp(ns: int) -> Time:
    ns = int(ns)
    if ns < 0:
        raise MessageError(f"negative time {ns} ns")
    sec, nanosec = split_ns(ns)
    return Time(sec=sec, nanosec=nanosec)


def ns_to_duration(ns: int) -> Duration:
    sec, nanosec = split_ns(ns)
    return Duration(sec=sec, nanosec=nanosec)


def duration_to_ns(d: Duration) -> int:
    return stamp_to_ns(d)  # Duration has the same (sec, nanosec) fields as Time


def embedding_to_msg(embedding: np.ndarray, stamp_ns: int, fingerprint: str) -> Image:
    """(D,) or (1, D) float embedding -> 32FC1 Image 1 x D."""
    e = np.asarray(embedding, dtype=np.float32).reshape(-1)
    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = fingerprint
    msg.height = 1
    msg.width = int(e.shape[0])
    msg.encoding = "32FC1"
    msg.is_bigendian = 0
    msg.step = 4 * msg.width
    msg.data = e.astype("<f4").tobytes()
    return msg


def embedding_from_msg(msg: Image, expected_dim: int | None = None) -> tuple[np.ndarray, int, str]:
    """Image -> (embedding (D,) float32, stamp_ns, fingerprint)."""
    if msg.encoding != "32FC1":
        raise MessageError(f"embedding encoding is {msg.encoding!r}, expected '32FC1'")
    if msg.height != 1 or msg.width < 1:
        raise MessageError(f"embedding must be 1 x D, got {msg.height} x {msg.width}")
    if msg.step != 4 * msg.width or len(msg.data) != msg.step:
        raise MessageError(f"embedding data is {len(msg.data)} bytes, step {msg.step}, width {msg.width}")
    if expected_dim is not None and msg.width != expected_dim:
        raise MessageError(f"embedding dimension {msg.width} != expected {expected_dim}")
    if not msg.header.frame_id:
        raise MessageError("embedding carries no checkpoint fingerprint in header.frame_id")
    dtype = ">f4" if msg.is_bigendian else "<f4"
    e = np.frombuffer(bytes(msg.data), dtype=dtype).astype(np.float32)
    if not np.all(np.isfinite(e)):
        raise MessageError("embedding has NaN or inf")
    return e, stamp_to_ns(msg.header.stamp), msg.header.frame_id


def chunk_to_msg(chunk: Chunk) -> JointTrajectory:
    """Chunk (actions (H, A)) -> JointTrajectory with point k at (k + 1) * dt."""
    a = np.asarray(chunk.actions, dtype=np.float64)
    msg = JointTrajectory()
    msg.header.stamp = ns_to_stamp(chunk.t_obs_ns)
    msg.header.frame_id = chunk.fingerprint
    msg.joint_names = list(chunk.names)
    dt_ns = int(round(chunk.dt * 1e9))
    for k in range(a.shape[0]):
        p = JointTrajectoryPoint()
        p.positions = a[k].tolist()
        p.time_from_start = ns_to_duration((k + 1) * dt_ns)
        msg.points.append(p)
    return msg


def points_to_msg(names: Sequence[str], stamp_ns: int, times_ns: Sequence[int], positions: np.ndarray,
                  velocities: np.ndarray | None = None) -> JointTrajectory:
    """Points (T, A) due at absolute ``times_ns``, stamped ``stamp_ns`` (point k at
    ``time_from_start = times_ns[k] - stamp_ns``); velocities when given. The executor's
    joint-trajectory output and its tail (the running plan for warm starts)."""
    msg = JointTrajectory(joint_names=list(names))
    msg.header.stamp = ns_to_stamp(stamp_ns)
    for k, t in enumerate(times_ns):
        pt = JointTrajectoryPoint(positions=positions[k].tolist(), time_from_start=ns_to_duration(int(t) - stamp_ns))
        if velocities is not None:
            pt.velocities = velocities[k].tolist()
        msg.points.append(pt)
    return msg


def chunk_from_msg(msg: JointTrajectory, expected_names: tuple[str, ...] | None = None) -> Chunk:
    """JointTrajectory -> Chunk; checks names, shape, finiteness and even spacing.

    If ``expected_names`` is given, columns are reordered to it; a missing or
    extra name is an error.
    """
    names = tuple(msg.joint_names)
    n = len(msg.points)
    if n == 0:
        raise MessageError("action chunk has no points")
    if len(names) == 0:
        raise MessageError("action chunk has no joint_names")
    if len(set(names)) != len(names):
        raise MessageError(f"action chunk has repeated joint names {names}")
    rows = []
    for k, p in enumerate(msg.points):
        if len(p.positions) != len(names):
            raise MessageError(f"point {k} has {len(p.positions)} positions for {len(names)} joint names")
        rows.append(p.positions)
    a = np.asarray(rows, dtype=np.float64).reshape(n, len(names))
    if not np.all(np.isfinite(a)):
        raise MessageError("action chunk has NaN or inf")
    t = np.array([duration_to_ns(p.time_from_start) for p in msg.points], dtype=np.int64)
    dt_ns = int(t[0])
    if dt_ns <= 0:
        raise MessageError(f"first point time_from_start {dt_ns} ns must be > 0 (point k at (k+1)*dt)")
    expect = dt_ns * np.arange(1, n + 1, dtype=np.int64)
    if np.any(np.abs(t - expect) > max(1000, dt_ns // 1000)):
        raise MessageError("action chunk points are not evenly spaced at (k + 1) * dt")
    if expected_names is not None:
        expected_names = tuple(expected_names)
        if set(expected_names) != set(names):
            missing = sorted(set(expected_names) - set(names))
            extra = sorted(set(names) - set(expected_names))
            raise MessageError(f"action chunk names mismatch: missing {missing}, unexpected {extra}")
        order = [names.index(x) for x in expected_names]
        a = a[:, order]
        names = expected_names
    return Chunk(
        t_obs_ns=stamp_to_ns(msg.header.stamp),
        dt=dt_ns * 1e-9,
        actions=a,
        names=names,
        fingerprint=msg.header.frame_id,
    )


def command_from_msg(msg: Any, names: Sequence[str]) -> np.ndarray:
    """Controller command -> (A,) float64 in ``names`` order (dataset building's actions).

    Float64MultiArray: its values, which must be as many as ``names``; JointTrajectory
    (any object with ``points`` and ``joint_names``, e.g. decoded from MCAP): the first
    point's positions picked by name (extra joints ignored).
    """
    if hasattr(msg, "points") and hasattr(msg, "joint_names"):
        if not msg.points:
            raise MessageError("trajectory command has no points")
        idx = {n: i for i, n in enumerate(msg.joint_names)}
        if len(idx) != len(msg.joint_names):
            raise MessageError(f"trajectory command has repeated joint names {list(msg.joint_names)}")
        missing = [n for n in names if n not in idx]
        if missing:
            raise MessageError(f"trajectory command lacks joints {missing}")
        pos = list(msg.points[0].positions)
        if len(pos) != len(msg.joint_names):
            raise MessageError(f"trajectory command point has {len(pos)} positions for {len(msg.joint_names)} names")
        a = np.array([pos[idx[n]] for n in names], dtype=np.float64)
    else:
        a = np.asarray(list(msg.data), dtype=np.float64)
        if a.shape != (len(names),):
            raise MessageError(f"command has {a.size} values for {len(names)} action names")
    if not np.all(np.isfinite(a)):
        raise MessageError("command has NaN or inf")
    return a


def tail_from_msg(msg: JointTrajectory, names: tuple[str, ...]) -> Tail:
    """Executor tail (its unexecuted plan: point k due at header.stamp + time_from_start)
    -> :class:`~l1flow_ros.inference.runner.Tail` with columns in ``names`` order."""
    if not msg.points:
        raise MessageError("tail has no points")
    got = tuple(msg.joint_names)
    if set(got) != set(names) or len(got) != len(names):
        raise MessageError(f"tail joints {list(got)} are not the policy's {list(names)}")
    order = [got.index(n) for n in names]
    t0 = stamp_to_ns(msg.header.stamp)
    times, rows = [], []
    for k, p in enumerate(msg.points):
        if len(p.positions) != len(got):
            raise MessageError(f"tail point {k} has {len(p.positions)} positions for {len(got)} joints")
        times.append(t0 + duration_to_ns(p.time_from_start))
        rows.append([p.positions[i] for i in order])
    try:
        return Tail(np.asarray(times, np.int64), np.asarray(rows, np.float64))  # (K,), (K, A)
    except ValueError as e:  # not increasing, NaN / inf
        raise MessageError(f"tail: {e}") from e
