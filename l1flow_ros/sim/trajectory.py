"""Joint-trajectory-controller semantics for a simulated arm, no ROS.

What ros2_control's joint_trajectory_controller (JTC) does with a new trajectory while
one runs, restated for :class:`TrajectoryFollower`:

- point k is due at ``start + time_from_start[k]``; ``start`` is the header stamp, or the
  receive time when the stamp is zero;
- the new trajectory takes over at the hand-over time ``h = max(start, now)``: until then
  the running trajectory (or the hold at the current target) goes on unchanged, so a
  trajectory stamped in the future replaces the running one only from its stamp;
- points due at or before ``h`` are dropped; a trajectory with no point after ``h`` (one
  that ends in the past) is rejected with a reason and the running one is kept;
- between points: linear interpolation when the points carry positions only, cubic
  (Hermite) when they carry velocities, quintic when they carry accelerations too;
- the hand-over segment starts from the running trajectory's position, velocity and
  acceleration at ``h``, so position and velocity are continuous at the hand-over. For a
  positions-only trajectory this first segment is a cubic ending with the velocity of the
  linear segment after it (zero at the last point): JTC would interpolate it linearly and
  jump in velocity; we keep velocity continuous instead;
- after the last point the arm holds its position (velocity zero).

Times are integer nanoseconds on one clock (the caller's); positions in the joints' units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NS = 1e-9


class TrajectoryError(ValueError):
    """A trajectory the arm cannot follow; the text says why."""


def _coefficients(order: int, T: float, p0, v0, a0, p1, v1, a1) -> np.ndarray:
    """(6, A) polynomial coefficients in s (seconds since the segment start)."""
    c = np.zeros((6, p0.shape[0]))
    h = p1 - p0
    c[0] = p0
    if order == 0:
        return c
    if order == 1:
        c[1] = h / T
    elif order == 3:
        c[1] = v0
        c[2] = (3.0 * h - (2.0 * v0 + v1) * T) / T**2
        c[3] = (-2.0 * h + (v0 + v1) * T) / T**3
    elif order == 5:
        c[1] = v0
        c[2] = 0.5 * a0
        c[3] = (20.0 * h - (8.0 * v1 + 12.0 * v0) * T - (3.0 * a0 - a1) * T**2) / (2.0 * T**3)
        c[4] = (-30.0 * h + (14.0 * v1 + 16.0 * v0) * T + (3.0 * a0 - 2.0 * a1) * T**2) / (2.0 * T**4)
        c[5] = (12.0 * h - 6.0 * (v1 + v0) * T + (a1 - a0) * T**2) / (2.0 * T**5)
    else:
        raise ValueError(f"no spline of order {order}")
    return c


def _eval(c: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position, velocity, acceleration of coefficients ``c`` (6, A) at ``s`` seconds."""
    pw = s ** np.arange(6)
    p = pw @ c
    v = (np.arange(1, 6) * pw[:5]) @ c[1:]
    a = (np.array([2.0, 6.0, 12.0, 20.0]) * pw[:4]) @ c[2:]
    return p, v, a


class TrajectoryFollower:
    """The trajectory a JTC would follow, as polynomial segments on absolute times.

    Not thread-safe: the caller holds its own lock.
    """

    def __init__(self, joint_names: Sequence[str]) -> None:
        self.joint_names = tuple(joint_names)
        self._t0 = np.zeros(0, dtype=np.int64)  # (S,) segment starts, ns
        self._t1 = np.zeros(0, dtype=np.int64)  # (S,) segment ends, ns
        self._c: list[np.ndarray] = []  # S x (6, A) coefficients in seconds since t0
        self._end: np.ndarray | None = None  # (A,) held after the last segment
        self.order = 0  # interpolation order of the trajectory last accepted (1, 3 or 5)

    @property
    def active(self) -> bool:
        return self._end is not None

    def cancel(self) -> None:
        self._t0 = self._t1 = np.zeros(0, dtype=np.int64)
        self._c = []
        self._end = None

    # ------------------------------------------------------------------ input
    def _matrix(self, names: tuple[str, ...], rows: Sequence[Sequence[float]], what: str) -> np.ndarray:
        rows = [list(r) for r in rows]
        if any(len(r) != len(names) for r in rows):
            raise TrajectoryError(f"a trajectory point has a wrong number of {what} "
                                  f"(each needs {len(names)} or none at all)")
        m = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
        m = m[:, [names.index(n) for n in self.joint_names]]  # (K, A) in our joint order
        if not np.all(np.isfinite(m)):
            raise TrajectoryError(f"trajectory {what} have NaN or inf")
        return m

    def set(
        self,
        names: Sequence[str],
        start_ns: int,
        times_from_start_ns: Sequence[int],
        positions: Sequence[Sequence[float]],
        current: np.ndarray,
        now_ns: int,
        velocities: Sequence[Sequence[float]] | None = None,
        accelerations: Sequence[Sequence[float]] | None = None,
    ) -> None:
        """Take a new trajectory (module docstring); ``current`` (A,) is the target held
        when no trajectory runs. TrajectoryError, with the old trajectory kept, when it
        cannot be followed. ``velocities`` / ``accelerations``: one row per point, or
        empty / None for none (a point with an empty row among full ones is an error)."""
        names = tuple(names)
        if set(names) != set(self.joint_names) or len(names) != len(self.joint_names):
            raise TrajectoryError(f"trajectory joints {list(names)} must be exactly {list(self.joint_names)}")
        K = len(times_from_start_ns)
        if K == 0:
            raise TrajectoryError("trajectory has no points")
        if len(positions) != K:
            raise TrajectoryError(f"trajectory has {K} times but {len(positions)} position rows")
        p = self._matrix(names, positions, "positions")
        vel = [] if velocities is None else [list(r) for r in velocities]
        acc = [] if accelerations is None else [list(r) for r in accelerations]
        if all(len(r) == 0 for r in vel):
            vel = []
        if all(len(r) == 0 for r in acc):
            acc = []
        if vel and len(vel) != K or acc and len(acc) != K:
            raise TrajectoryError("velocities and accelerations need one row per point, or none")
        if acc and not vel:
            raise TrajectoryError("trajectory has accelerations without velocities")
        v = self._matrix(names, vel, "velocities") if vel else None
        a = self._matrix(names, acc, "accelerations") if acc else None
        tfs = np.asarray(times_from_start_ns, dtype=np.int64)
        if tfs[0] < 0 or np.any(np.diff(tfs) <= 0):
            raise TrajectoryError("trajectory times must be >= 0 and strictly increasing")
        now = int(now_ns)
        start = int(start_ns) if start_ns > 0 else now
        t = start + tfs
        h = max(start, now)
        if t[-1] <= h:
            when = "in the past" if t[-1] < now else "at its start"
            raise TrajectoryError(f"trajectory ends {when}: last point due at {t[-1]} ns, "
                                  f"{(now - t[-1]) * 1e-6:.1f} ms before now ({now} ns)")
        keep = t > h
        t, p = t[keep], p[keep]
        v = v[keep] if v is not None else None
        a = a[keep] if a is not None else None
        order = 1 if v is None else 3 if a is None else 5

        # Hand-over state: the running trajectory (or the held target) at h.
        if self.active:
            p_h, v_h, a_h = self.state(h)
        else:
            p_h = np.asarray(current, dtype=np.float64).reshape(len(self.joint_names)).copy()
            v_h = a_h = np.zeros_like(p_h)
        # What runs until h: the running segments cut at h, or a hold at the target.
        if self.active:
            alive = self._t1 > now
            t0, t1 = list(self._t0[alive]), list(self._t1[alive])
            cs = [c for c, ok in zip(self._c, alive) if ok]
            cut = [i for i, s in enumerate(t0) if s < h]
            t0, t1, cs = [t0[i] for i in cut], [min(t1[i], h) for i in cut], [cs[i] for i in cut]
            held_from = t1[-1] if t1 else now
            held = self._end
        else:
            t0, t1, cs, held_from, held = [], [], [], now, p_h
        if held_from < h:  # the running trajectory ended before h: its last point is held
            t0.append(held_from)
            t1.append(h)
            cs.append(_coefficients(0, 1.0, held, None, None, held, None, None))

        # The new trajectory's knots, with the velocities a linear one has at its points.
        knots_t = np.concatenate([[h], t])
        knots_p = np.concatenate([p_h[None], p])
        if v is None:
            slopes = np.diff(knots_p, axis=0) / (np.diff(knots_t)[:, None] * NS)  # (K', A)
            v_first = slopes[1] if len(slopes) > 1 else np.zeros_like(p_h)
        for k in range(len(t)):
            T = float(knots_t[k + 1] - knots_t[k]) * NS
            if k == 0:  # the hand-over segment
                if order == 1:
                    c = _coefficients(3, T, p_h, v_h, None, p[0], v_first, None)
                else:
                    c = _coefficients(order, T, p_h, v_h, a_h, p[0], v[0], None if a is None else a[0])
            elif order == 1:
                c = _coefficients(1, T, p[k - 1], None, None, p[k], None, None)
            else:
                c = _coefficients(order, T, p[k - 1], v[k - 1], None if a is None else a[k - 1],
                                  p[k], v[k], None if a is None else a[k])
            t0.append(int(knots_t[k]))
            t1.append(int(knots_t[k + 1]))
            cs.append(c)
        self._t0 = np.asarray(t0, dtype=np.int64)
        self._t1 = np.asarray(t1, dtype=np.int64)
        self._c = cs
        self._end = p[-1].copy()
        self.order = order

    # ------------------------------------------------------------------ output
    def state(self, now_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, velocity, acceleration), each (A,), at ``now_ns`` (needs a trajectory)."""
        if self._end is None:
            raise TrajectoryError("no trajectory to sample")
        if len(self._t1) == 0 or now_ns >= self._t1[-1]:
            z = np.zeros_like(self._end)
            return self._end.copy(), z, z.copy()
        i = int(np.searchsorted(self._t1, now_ns, side="right"))
        s = max(float(now_ns - self._t0[i]), 0.0) * NS
        return _eval(self._c[i], s)

    def sample(self, now_ns: int) -> np.ndarray | None:
        """(A,) position at ``now_ns`` (None without a trajectory)."""
        if self._end is None:
            return None
        return self.state(now_ns)[0]
