"""Stamp arithmetic, the one place: ROS time fields (sec, nanosec) <-> integer nanoseconds.

``builtin_interfaces/Time`` and ``Duration`` both hold ``sec`` (int32) and ``nanosec``
(uint32, in [0, 1e9) for a normalised value); the core works in integer nanoseconds
(``l1flow_ros/spec.py``). Every conversion between the two goes through here: the message
builders of :mod:`l1flow_ros.msgs.chunk_conv`, the nodes, dataset building and the
offline recorder, so a stamp recorded in an episode and the same stamp received live are
the same integer.

Duck-typed and free of ROS imports: the functions take anything with ``sec`` / ``nanosec``
attributes (rclpy messages, messages decoded from MCAP files), and the ROS-free core
(``l1flow_ros/sim``) can call them.
"""

from __future__ import annotations

from typing import Any

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """Time or Duration (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def split_ns(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) with 0 <= nanosec < 1e9 (floor division for ns < 0)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def header_stamp_ns(msg: Any, fallback: int) -> int:
    """``msg.header.stamp`` in ns, or ``fallback`` when the message has no header or a zero stamp.

    Recorded episodes use it: an unset stamp (0) means the publisher did not stamp the
    message, so its receive time (the episode's log time) stands in for it.
    """
    h = getattr(msg, "header", None)
    if h is None:
        return int(fallback)
    ns = stamp_to_ns(h.stamp)
    return ns if ns > 0 else int(fallback)
