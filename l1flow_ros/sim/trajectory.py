"""Joint-trajectory-controller behaviour for the simulated arm, no ROS.

Like ros2_control's JTC: a new trajectory replaces the running one; point k is due at
``start + time_from_start[k]`` (start = the header stamp, or the receive time when the
stamp is zero); the arm moves from where its target is at reception to the first point
still in the future, linearly between points, and holds the last point afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TrajectoryError(ValueError):
    """A trajectory the arm cannot follow; the text says why."""


class TrajectoryFollower:
    def __init__(self, joint_names: Sequence[str]) -> None:
        self.joint_names = tuple(joint_names)
        self._t: np.ndarray | None = None  # (K,) absolute ns
        self._p: np.ndarray | None = None  # (K, A)

    @property
    def active(self) -> bool:
        return self._t is not None

    def cancel(self) -> None:
        self._t = self._p = None

    def set(
        self,
        names: Sequence[str],
        start_ns: int,
        times_from_start_ns: Sequence[int],
        positions: Sequence[Sequence[float]],
        current: np.ndarray,
        now_ns: int,
    ) -> None:
        """Replace the trajectory. ``current`` (A,) is the target at ``now_ns``."""
        names = tuple(names)
        if set(names) != set(self.joint_names) or len(names) != len(self.joint_names):
            raise TrajectoryError(f"trajectory joints {list(names)} must be exactly {list(self.joint_names)}")
        if len(times_from_start_ns) == 0:
            raise TrajectoryError("trajectory has no points")
        rows = [list(p) for p in positions]
        if any(len(r) != len(names) for r in rows):
            raise TrajectoryError("a trajectory point has a wrong number of positions")
        p = np.asarray(rows, dtype=np.float64)[:, [names.index(n) for n in self.joint_names]]  # (K, A)
        if not np.all(np.isfinite(p)):
            raise TrajectoryError("trajectory positions have NaN or inf")
        tfs = np.asarray(times_from_start_ns, dtype=np.int64)
        if np.any(np.diff(tfs) <= 0) or tfs[0] < 0:
            raise TrajectoryError("trajectory times must be >= 0 and strictly increasing")
        start = int(start_ns) if start_ns > 0 else int(now_ns)
        t = start + tfs
        future = t > now_ns
        if not np.any(future):  # all in the past: go to (and hold) the last point
            t, p = np.array([now_ns]), p[-1:]
        else:
            t, p = t[future], p[future]
            t = np.concatenate([[now_ns], t])
            p = np.concatenate([np.asarray(current, dtype=np.float64)[None], p])
        self._t, self._p = t, p

    def sample(self, now_ns: int) -> np.ndarray | None:
        """(A,) target at ``now_ns`` (None without a trajectory)."""
        if self._t is None:
            return None
        t, p = self._t, self._p
        if now_ns >= t[-1]:
            return p[-1].copy()
        k = int(np.searchsorted(t, now_ns, side="right")) - 1
        k = max(k, 0)
        a = (now_ns - t[k]) / max(t[k + 1] - t[k], 1)
        return (1.0 - a) * p[k] + a * p[k + 1]
