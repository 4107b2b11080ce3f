"""Interpolation from chunk rate to control rate: Hermite splines through timed waypoints.

A plan is a piecewise polynomial in time that starts at the executor's current state
(position, velocity and, for quintic, acceleration) and passes through the remaining
waypoints of the running chunk, ending at rest on the last one. Because every plan starts
from the state the previous plan left, position and velocity (cubic) or position, velocity
and acceleration (quintic) are continuous across splices.

Knot velocities are PCHIP's (monotone: no overshoot between waypoints, exact for motion at
constant velocity, uneven spacing allowed); quintic knot accelerations are the same
derivative taken over the knot velocities.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

INTERPOLATIONS = ("cubic", "quintic")


def hermite_coeffs(
    p0: np.ndarray, v0: np.ndarray, a0: np.ndarray,
    p1: np.ndarray, v1: np.ndarray, a1: np.ndarray,
    h: float | np.ndarray, quintic: bool,
) -> np.ndarray:
    """(6, ...) coefficients c of p(s) = sum_k c_k s^k on [0, h] matching the end states.

    End states are (A,) for one segment or (S, A) with h (S, 1) for S segments at once."""
    c = np.zeros((6, *np.shape(p0)), dtype=np.float64)
    d = p1 - p0
    c[0], c[1] = p0, v0
    if quintic:
        c[2] = 0.5 * a0
        c[3] = (20 * d - (8 * v1 + 12 * v0) * h - (3 * a0 - a1) * h * h) / (2 * h**3)
        c[4] = (-30 * d + (14 * v1 + 16 * v0) * h + (3 * a0 - 2 * a1) * h * h) / (2 * h**4)
        c[5] = (12 * d - 6 * (v1 + v0) * h + (a1 - a0) * h * h) / (2 * h**5)
    else:
        c[2] = (3 * d / h - 2 * v0 - v1) / h
        c[3] = (-2 * d / h + v0 + v1) / (h * h)
    return c


def _monotone_derivative(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(K, A) knot derivatives at interior knots 1..K-2 (ends left 0) of samples x (K, A) with
    spacings h (K-1,): PCHIP (Fritsch-Butland weighted harmonic mean of neighbouring slopes),
    zero at local extrema, so the spline never overshoots a waypoint; exact for linear motion."""
    slope = np.diff(x, axis=0) / h[:, None]  # (K-1, A)
    out = np.zeros_like(x)
    if slope.shape[0] < 2:
        return out
    s0, s1 = slope[:-1], slope[1:]
    hl, hr = h[:-1, None], h[1:, None]
    w1, w2 = 2 * hr + hl, hr + 2 * hl
    same = s0 * s1 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (w1 + w2) / (w1 / s0 + w2 / s1)
    out[1:-1] = np.where(same, d, 0.0)
    return out


class Plan:
    """Piecewise polynomial reference (positions in action units) over absolute ns time.

    Before the first knot it is evaluated on the first segment; after the last knot it
    holds the last position at rest.
    """

    def __init__(self, base_ns: int, knots_s: np.ndarray, coeffs: np.ndarray,
                 stops: np.ndarray | None = None) -> None:
        self.base_ns = int(base_ns)
        self.knots = knots_s  # (S + 1,) seconds from base_ns, increasing
        self.coeffs = coeffs  # (S, 6, A)
        self._knot_list = knots_s.tolist()  # bisect on a list is faster than numpy for one query
        self._coeff_list = coeffs.transpose(0, 2, 1).tolist()  # [S][A][6]
        self.p_end = self._poly(len(knots_s) - 2, float(knots_s[-1] - knots_s[-2]))[0]
        self.end_ns = self.base_ns + int(round(float(knots_s[-1]) * 1e9))
        # (S, A) per segment: where each joint next comes to rest (a knot with zero velocity).
        # The limiter brakes for these, so a reference it lags behind is not overshot.
        if stops is None:
            stops = np.broadcast_to(np.asarray(self.p_end), coeffs[:, 0].shape)
        self._stop_list = np.asarray(stops, dtype=np.float64).tolist()

    @classmethod
    def hold(cls, t_ns: int, position: np.ndarray) -> Plan:
        """A plan that stays at ``position`` (A,) at rest."""
        a = position.shape[0]
        c = np.zeros((1, 6, a), dtype=np.float64)
        c[0, 0] = position
        return cls(t_ns, np.array([0.0, 1e-9]), c)

    @classmethod
    def through(
        cls,
        t0_ns: int,
        p0: np.ndarray,
        v0: np.ndarray,
        a0: np.ndarray,
        times_ns: np.ndarray,
        points: np.ndarray,
        interpolation: str = "cubic",
    ) -> Plan:
        """Start at (t0_ns, p0, v0, a0) and pass through ``points`` (K, A) at ``times_ns`` (K,),
        ending at rest on the last point. times_ns must be increasing and after t0_ns."""
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {interpolation!r} not in {INTERPOLATIONS}")
        quintic = interpolation == "quintic"
        t = np.concatenate([[0.0], (np.asarray(times_ns, dtype=np.int64) - int(t0_ns)) * 1e-9])  # (K+1,)
        h = np.diff(t)
        if h.size == 0 or np.any(h <= 0):
            raise ValueError("waypoint times must increase and come after the start time")
        x = np.concatenate([p0[None], points], axis=0)  # (K+1, A)
        v = _monotone_derivative(x, h)
        v[0], v[-1] = v0, 0.0
        if quintic:
            acc = _monotone_derivative(v, h)
            acc[0], acc[-1] = a0, 0.0
        else:
            acc = np.zeros_like(x)
        stops = np.empty((h.size, x.shape[1]))  # (S, A)
        nxt = x[-1].copy()
        for m in range(h.size, 0, -1):
            rest = v[m] == 0.0
            nxt[rest] = x[m][rest]
            stops[m - 1] = nxt
        # All segments at once (one numpy call per term, not per segment): cheap to splice.
        coeffs = hermite_coeffs(x[:-1], v[:-1], acc[:-1], x[1:], v[1:], acc[1:], h[:, None], quintic)
        coeffs = coeffs.transpose(1, 0, 2)  # (6, S, A) -> (S, 6, A)
        return cls(t0_ns, t, coeffs, stops)

    def _poly(self, i: int, s: float) -> tuple[list[float], list[float], list[float]]:
        # Plain Python floats: far cheaper than numpy for a handful of joints at control rate.
        p, v, a = [], [], []
        for c0, c1, c2, c3, c4, c5 in self._coeff_list[i]:
            p.append(c0 + s * (c1 + s * (c2 + s * (c3 + s * (c4 + s * c5)))))
            v.append(c1 + s * (2 * c2 + s * (3 * c3 + s * (4 * c4 + s * 5 * c5))))
            a.append(2 * c2 + s * (6 * c3 + s * (12 * c4 + s * 20 * c5)))
        return p, v, a

    def eval(self, t_ns: int) -> tuple[list[float], list[float], list[float]]:
        """Position, velocity, acceleration (A,) of the reference at ``t_ns``, as lists."""
        s = (int(t_ns) - self.base_ns) * 1e-9
        knots = self._knot_list
        if s >= knots[-1]:
            z = [0.0] * len(self.p_end)
            return list(self.p_end), z, list(z)
        i = min(max(bisect_right(knots, s) - 1, 0), len(knots) - 2)
        return self._poly(i, s - knots[i])

    def next_stop(self, t_ns: int) -> list[float]:
        """(A,) for each joint, the position where the plan next comes to rest after ``t_ns``."""
        s = (int(t_ns) - self.base_ns) * 1e-9
        knots = self._knot_list
        if s >= knots[-1]:
            return list(self.p_end)
        i = min(max(bisect_right(knots, s) - 1, 0), len(knots) - 2)
        return self._stop_list[i]
