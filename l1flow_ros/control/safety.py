"""Per-joint command limits and the per-tick limiter the executor applies to every command.

The limiter is a discrete second-order rate limiter: given the last command (position,
velocity), a reference (position, velocity) and the tick length ``h``, it returns the command
closest to the reference that keeps

- position inside ``[lower, upper]`` (braking early enough to stop at the bound),
- ``|velocity| <= max_velocity``,
- ``|velocity change| / h <= max_acceleration``,

and approaches a reference it cannot follow (a jump) with a braking profile, so it does not
overshoot. A reference that already respects the limits passes through unchanged.

Binary gripper dimensions are not rate limited: they command ``gripper_closed`` when the
reference is above the threshold and ``gripper_open`` otherwise.

Arrays are (A,) float64, one entry per action dimension; ``inf`` means unlimited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from l1flow_ros.spec import ActionSpec


def _vec(values: Sequence[float], dim: int, fill: float, what: str) -> np.ndarray:
    """A per-dimension vector; empty = ``fill`` everywhere."""
    if len(values) == 0:
        return np.full(dim, fill, dtype=np.float64)
    if len(values) != dim:
        raise ValueError(f"{what} has {len(values)} entries for {dim} action dimensions")
    out = np.asarray(values, dtype=np.float64).reshape(dim)
    if np.any(np.isnan(out)):
        raise ValueError(f"{what} has NaN")
    return out


@dataclass(frozen=True, eq=False)
class Limits:
    """Per-dimension limits in action units (metres / radians, per s, per s^2)."""

    lower: np.ndarray  # (A,)
    upper: np.ndarray  # (A,)
    max_velocity: np.ndarray  # (A,) > 0
    max_acceleration: np.ndarray  # (A,) > 0
    gripper_indices: tuple[int, ...] = ()
    gripper_binary: bool = True
    gripper_open: float = -1.0
    gripper_closed: float = 1.0
    gripper_threshold: float = 0.0
    _binary: np.ndarray = field(init=False, repr=False)  # (A,) bool
    _lists: tuple = field(init=False, repr=False)  # the arrays as Python lists, for the tick path

    def __post_init__(self) -> None:
        dim = self.lower.shape[0]
        for name in ("lower", "upper", "max_velocity", "max_acceleration"):
            v = getattr(self, name)
            if v.shape != (dim,):
                raise ValueError(f"{name} has shape {v.shape}, expected ({dim},)")
            if np.any(np.isnan(v)):
                raise ValueError(f"{name} has NaN")
        if np.any(self.lower > self.upper):
            raise ValueError(f"lower {self.lower.tolist()} above upper {self.upper.tolist()}")
        if np.any(self.max_velocity <= 0) or np.any(self.max_acceleration <= 0):
            raise ValueError("max_velocity and max_acceleration must be > 0 (inf = unlimited)")
        for i in self.gripper_indices:
            if not 0 <= i < dim:
                raise ValueError(f"gripper index {i} out of range for {dim} dimensions")
        if not np.isfinite([self.gripper_open, self.gripper_closed, self.gripper_threshold]).all():
            raise ValueError("gripper open / closed / threshold must be finite")
        binary = np.zeros(dim, dtype=bool)
        if self.gripper_binary:
            binary[list(self.gripper_indices)] = True
        object.__setattr__(self, "_binary", binary)
        lists = (self.lower.tolist(), self.upper.tolist(), self.max_velocity.tolist(),
                 self.max_acceleration.tolist(), binary.tolist())
        object.__setattr__(self, "_lists", lists)

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])

    @property
    def binary(self) -> np.ndarray:
        """(A,) bool: dimensions commanded as binary open / closed."""
        return self._binary

    @classmethod
    def build(
        cls,
        dim: int,
        lower: Sequence[float] = (),
        upper: Sequence[float] = (),
        max_velocity: Sequence[float] = (),
        max_acceleration: Sequence[float] = (),
        gripper_indices: Sequence[int] = (),
        gripper_binary: bool = True,
        gripper_open: float = -1.0,
        gripper_closed: float = 1.0,
        gripper_threshold: float | None = None,
    ) -> Limits:
        """Limits from plain lists; an empty list means unlimited for that kind."""
        if dim < 1:
            raise ValueError("limits need at least one action dimension")
        thr = 0.5 * (gripper_open + gripper_closed) if gripper_threshold is None else gripper_threshold
        return cls(
            lower=_vec(lower, dim, -np.inf, "lower"),
            upper=_vec(upper, dim, np.inf, "upper"),
            max_velocity=_vec(max_velocity, dim, np.inf, "max_velocity"),
            max_acceleration=_vec(max_acceleration, dim, np.inf, "max_acceleration"),
            gripper_indices=tuple(int(i) for i in gripper_indices),
            gripper_binary=gripper_binary,
            gripper_open=float(gripper_open),
            gripper_closed=float(gripper_closed),
            gripper_threshold=float(thr),
        )

    @classmethod
    def from_spec(cls, spec: ActionSpec, gripper_binary: bool = True) -> Limits:
        """Limits stored in a bundle's ActionSpec (empty tuples = unlimited)."""
        return cls.build(
            spec.dim,
            spec.lower,
            spec.upper,
            spec.max_velocity,
            spec.max_acceleration,
            spec.gripper_indices,
            gripper_binary=gripper_binary,
        )

    def as_lists(self) -> tuple[list[float], list[float], list[float], list[float], list[bool]]:
        """(lower, upper, max_velocity, max_acceleration, binary) as Python lists."""
        return self._lists

    def clip_position(self, p: np.ndarray) -> np.ndarray:
        """(..., A) positions clipped into the bounds; binary dims snapped open / closed."""
        out = np.clip(p, self.lower, self.upper)
        if self._binary.any():
            snapped = np.where(out > self.gripper_threshold, self.gripper_closed, self.gripper_open)
            out = np.where(self._binary, snapped, out)
        return out

    def check(self, p: np.ndarray) -> None:
        """Raise ValueError when a (A,) position is not finite."""
        if p.shape != (self.dim,) or not np.all(np.isfinite(p)):
            raise ValueError(f"position must be ({self.dim},) finite, got {np.asarray(p).tolist()}")


def stopping_speed(distance: float, accel: float, h: float) -> float:
    """Largest speed (>= 0) from which a discrete-time stop within ``distance`` is possible.

    Moving at v this tick and then slowing by ``accel*h`` per tick covers
    ``D(v) = h * ((n + 1) v - accel h n (n + 1) / 2)`` with ``n = floor(v / (accel h))``; D is
    increasing and piecewise linear, and this returns its exact inverse. Following it tick by
    tick lands exactly on the stopping point with no more than ``accel`` of deceleration.
    inf where accel is inf.
    """
    if accel == math.inf or distance == math.inf:
        return math.inf
    if distance <= 0.0:
        return 0.0
    ah = accel * h
    # Continuous-time estimate v^2 / (2 a) + v h / 2 = d picks the piece; then correct n.
    vc = -0.5 * ah + math.sqrt(0.25 * ah * ah + 2.0 * accel * distance)
    n = max(int(vc / ah), 0)
    for _ in range(4):
        v = distance / (h * (n + 1)) + 0.5 * ah * n
        if v < n * ah and n > 0:
            n -= 1
        elif v >= (n + 1) * ah:
            n += 1
        else:
            break
    return v


def limit_step(
    limits: Limits,
    p_prev: Sequence[float],
    v_prev: Sequence[float],
    p_ref: Sequence[float],
    v_ref: Sequence[float],
    h: float,
    p_stop: Sequence[float] | None = None,
) -> tuple[list[float], list[float], bool]:
    """One control tick of length ``h`` s: command (positions, velocities) as (A,) lists and
    whether the limits acted (the command differs from the reference).

    ``p_stop`` (A,), optional: where the reference next comes to rest; the command brakes in
    time to stop there too, so catching up with a reference does not overshoot its stops.

    Plain Python floats on purpose: for a handful of joints this is ~10x faster than numpy
    on tiny arrays, and it runs at control rate.
    """
    lo_l, hi_l, vmax_l, amax_l, bin_l = limits.as_lists()
    p_out: list[float] = []
    v_out: list[float] = []
    limited = False
    closed, opened, thr = limits.gripper_closed, limits.gripper_open, limits.gripper_threshold
    for j in range(len(lo_l)):
        ref = float(p_ref[j])
        if bin_l[j]:
            p_out.append(closed if ref > thr else opened)
            v_out.append(0.0)
            continue
        lo, hi, vmax, amax = lo_l[j], hi_l[j], vmax_l[j], amax_l[j]
        pp, vp = float(p_prev[j]), float(v_prev[j])
        goal = min(max(ref, lo), hi)
        e = goal - pp
        v = e / h  # reaches the reference exactly this tick when allowed
        # Approach a reference we cannot follow with a braking profile (no overshoot): relative
        # to the reference moving at vt, the gap left after this tick's reference motion must
        # still be closable at max_acceleration.
        vt = min(max(float(v_ref[j]), -vmax), vmax)
        gap = e - vt * h
        if gap >= 0:
            v = min(v, vt + stopping_speed(gap, amax, h))
        else:
            v = max(v, vt - stopping_speed(-gap, amax, h))
        # Velocity limit and braking before the position bounds.
        v_hi = min(vmax, stopping_speed(hi - pp, amax, h))
        v_lo = max(-vmax, -stopping_speed(pp - lo, amax, h))
        if p_stop is not None:
            d = float(p_stop[j]) - pp
            if d >= 0:
                v_hi = min(v_hi, stopping_speed(d, amax, h))
            if d <= 0:
                v_lo = max(v_lo, -stopping_speed(-d, amax, h))
        v = min(max(v, v_lo), max(v_lo, v_hi))
        # Acceleration limit last: it always holds, given a feasible previous command.
        dv = amax * h
        v = min(max(v, vp - dv), vp + dv)
        p = pp + v * h
        if p > hi or p < lo:  # backstop; only bites for an infeasible start state
            p = min(max(p, lo), hi)
            v = (p - pp) / h
        if abs(p - ref) > 1e-9:
            limited = True
        p_out.append(p)
        v_out.append(v)
    return p_out, v_out, limited
