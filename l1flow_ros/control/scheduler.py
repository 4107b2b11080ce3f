"""Receding-horizon chunk scheduler: timestamped action chunks in, limited commands out at control rate.

ROS-free and thread-safe (one lock); the executor node calls :meth:`ChunkScheduler.add_chunk`
from its subscription and :meth:`ChunkScheduler.command` from its control thread.

Conventions (see ``l1flow_ros/spec.py``): times are integer nanoseconds on one clock (the
clock of the observation stamps); action k of a chunk for an observation stamped ``t_obs``
is due at ``t_obs + (k + 1) * dt``.

What happens to a chunk:

1. It is validated (names, shape, finite values, dt, not stamped too far in the future,
   not too old, not older than the running chunk); a bad chunk raises :class:`ChunkRejected`
   with a reason and changes nothing.
2. Latency compensation: actions due before ``now + latency_margin`` are dropped, never
   executed. Only the first ``execute_steps`` actions are executed (the execution horizon;
   0 = all); the rest are kept as the warm-start tail.
3. Splice onto the running plan, over the times both cover:
   ``replace`` takes the new actions; ``crossfade`` blends old -> new with a weight rising
   linearly from 0 at ``now`` to 1 at the end of the overlap (or after ``crossfade_s``);
   ``ensemble`` is ACT's temporal ensemble: each waypoint is the weighted mean of all
   predictions made for it, weight ``exp(-k * i)`` for the i-th oldest.
4. A new spline plan (cubic or quintic Hermite, :mod:`l1flow_ros.control.interp`) starts from
   the current command state, so position and velocity stay continuous across the splice.

Every tick, the plan is evaluated and passed through the limiter of
:mod:`l1flow_ros.control.safety` (position, velocity, acceleration limits; binary gripper).
When the plan runs out (or no chunk arrived for ``starvation_timeout_s``) the command
decelerates within the acceleration limits and holds: stale actions are never replayed. A
command that tracked the plan is at rest on its last waypoint when it ends; one that was
still catching up (the limits acted) stops where it is, short of that waypoint, rather than
going on toward it at up to full speed.
The next valid chunk resumes from the held state.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from l1flow_ros.control.interp import INTERPOLATIONS, Plan
from l1flow_ros.control.safety import Limits, limit_step
from l1flow_ros.spec import Chunk

SPLICE_RULES = ("replace", "crossfade", "ensemble")


class Mode(str, Enum):
    """What the scheduler is doing at a tick."""

    HOLD = "hold"  # at rest where reset() put it; no chunk yet
    TRACK = "track"  # following the plan of a chunk
    STARVED = "starved"  # plan ran out or timed out: decelerating / holding


class ChunkRejected(ValueError):
    """A chunk the scheduler will not execute. ``reason`` is a short key, the text says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class SchedulerConfig:
    """How chunks are timed, spliced and interpolated. Times in seconds."""

    names: tuple[str, ...]
    latency_margin_s: float = 0.0  # actions due before now + margin are dropped
    splice: str = "crossfade"  # replace | crossfade | ensemble
    crossfade_s: float = 0.0  # crossfade length; 0 = the whole overlap
    ensemble_k: float = 0.01  # ACT temporal ensemble: weight exp(-k * i), i = 0 oldest
    interpolation: str = "cubic"  # cubic | quintic
    execute_steps: int = 0  # execution horizon: actions of a chunk executed at most; 0 = all
    n_action_steps: int = 8  # replanning cadence: replan_due() after this many executed actions
    max_future_s: float = 0.1  # reject chunks stamped further than this ahead of now
    max_age_s: float = 1.0  # reject chunks whose observation is older than this
    starvation_timeout_s: float = 0.0  # stop when no chunk for this long; 0 = when the plan ends
    expected_dt: float = 0.0  # reject chunks with another dt; 0 = accept any dt > 0
    # Longest tick the limiter integrates (s); 0 = no cap. After a stalled tick (the control
    # thread was preempted) the command then moves as if one normal tick had passed and
    # catches up within the limits, instead of leaping by max_velocity * stall.
    max_tick_s: float = 0.0

    def __post_init__(self) -> None:
        if len(self.names) == 0 or len(set(self.names)) != len(self.names):
            raise ValueError(f"names must be non-empty and unique, got {self.names}")
        if self.splice not in SPLICE_RULES:
            raise ValueError(f"splice {self.splice!r} not in {SPLICE_RULES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} not in {INTERPOLATIONS}")
        for name in ("latency_margin_s", "crossfade_s", "ensemble_k", "max_future_s", "max_age_s",
                     "starvation_timeout_s", "expected_dt", "max_tick_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        if self.max_age_s <= 0:
            raise ValueError("max_age_s must be > 0")
        if self.execute_steps < 0 or self.n_action_steps < 0:
            raise ValueError("execute_steps and n_action_steps must be >= 0")

    @property
    def dim(self) -> int:
        return len(self.names)


@dataclass
class SchedulerStats:
    """Counters since construction (a snapshot; safe to keep)."""

    ticks: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    last_rejection: str = ""
    dropped_stale_actions: int = 0  # actions of accepted chunks dropped as already due
    starvation_events: int = 0
    limited_ticks: int = 0
    chunk_t_obs_ns: int | None = None  # observation time of the running chunk
    chunk_received_ns: int | None = None
    mode: Mode = Mode.HOLD


@dataclass(frozen=True, eq=False)
class _Snapshot:
    version: int
    cfg: SchedulerConfig
    ready: bool
    t_last: int
    p: list[float]
    v: list[float]
    a_ref: list[float]
    mode: Mode
    wp_t: np.ndarray
    wp_q: np.ndarray
    wp_n: np.ndarray
    chunk_t_obs: int | None


@dataclass(frozen=True, eq=False)
class _Built:
    plan: Plan
    wp_t: np.ndarray
    wp_q: np.ndarray
    wp_n: np.ndarray
    dt_ns: int
    t_obs: int
    executed: int
    dropped: int


def _splice(cfg: SchedulerConfig, snap: _Snapshot, new_t: np.ndarray, new_a: np.ndarray,
            now: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, A) spliced waypoints and (K,) prediction counts for the new due times (K,)."""
    ones = np.ones(new_t.shape[0])
    old_t = snap.wp_t
    # Blend only into a plan that is still running: a starved or held plan is stale.
    if cfg.splice == "replace" or snap.mode != Mode.TRACK or old_t.size < 2:
        return new_a, ones
    inside = (new_t >= old_t[0]) & (new_t <= old_t[-1])  # (K,)
    if not inside.any():
        return new_a, ones
    tf, of = new_t.astype(np.float64), old_t.astype(np.float64)
    old_q = np.stack([np.interp(tf, of, snap.wp_q[:, j]) for j in range(new_a.shape[1])], axis=1)
    if cfg.splice == "crossfade":
        length = cfg.crossfade_s * 1e9 if cfg.crossfade_s > 0 else float(old_t[-1] - now)
        w = np.clip((tf - now) / length, 0.0, 1.0) if length > 0 else ones
        w = np.where(inside, w, 1.0)[:, None]
        return (1.0 - w) * old_q + w * new_a, ones
    # ensemble: the old waypoint is the weighted mean of n earlier predictions with weights
    # exp(-k i), i = 0..n-1; the new one joins with weight exp(-k n).
    n_old = np.where(inside, np.round(np.interp(tf, of, snap.wp_n)), 0.0)
    k = cfg.ensemble_k
    w_old = n_old if k == 0 else (1.0 - np.exp(-k * n_old)) / (1.0 - math.exp(-k))
    w_new = np.exp(-k * n_old)
    q = (w_old[:, None] * old_q + w_new[:, None] * new_a) / (w_old + w_new)[:, None]
    return q, n_old + 1.0


class ChunkScheduler:
    """Receding-horizon executor core (see the module docstring)."""

    def __init__(self, config: SchedulerConfig, limits: Limits) -> None:
        self._lock = threading.RLock()
        self._check_pair(config, limits)
        self._cfg = config
        self._limits = limits
        self._stats = SchedulerStats()
        # State of the last command as Python lists (the tick path avoids numpy).
        self._p: list[float] | None = None  # (A,) last command position
        self._v: list[float] = []  # (A,) last command velocity
        self._a_ref: list[float] = []  # (A,) reference acceleration at the last tick
        self._t_last = 0
        self._chunk_dt_ns = 0
        self._version = 0  # bumped whenever the plan is replaced
        self._plan: Plan | None = None
        self._mode = Mode.HOLD
        # Waypoints of the running chunk after splicing (kept for blending and the tail).
        self._wp_t = np.zeros(0, dtype=np.int64)  # (K,) due times, ns
        self._wp_q = np.zeros((0, config.dim))  # (K, A)
        self._wp_n = np.zeros(0)  # (K,) predictions merged into each waypoint (ensemble)

    @staticmethod
    def _check_pair(config: SchedulerConfig, limits: Limits) -> None:
        if limits.dim != config.dim:
            raise ValueError(f"limits have {limits.dim} dimensions, names have {config.dim}")

    # -- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> SchedulerConfig:
        return self._cfg

    @property
    def limits(self) -> Limits:
        return self._limits

    def configure(self, config: SchedulerConfig, limits: Limits) -> None:
        """Swap config and limits live; the running plan is kept, new limits apply next tick."""
        self._check_pair(config, limits)
        with self._lock:
            if config.names != self._cfg.names:
                raise ValueError("names cannot change on a running scheduler")
            self._cfg, self._limits = config, limits

    # -- state -----------------------------------------------------------------------------------

    def reset(self, position: np.ndarray, t_ns: int, velocity: np.ndarray | None = None) -> None:
        """Forget every chunk and hold ``position`` (A,) from ``t_ns`` (e.g. the measured state)."""
        p = np.asarray(position, dtype=np.float64).reshape(-1)
        self._limits.check(p)
        v = np.zeros_like(p) if velocity is None else np.asarray(velocity, dtype=np.float64).reshape(-1)
        self._limits.check(v)
        with self._lock:
            self._p, self._v, self._a_ref = p.tolist(), v.tolist(), [0.0] * p.shape[0]
            self._t_last = int(t_ns)
            self._plan = Plan.hold(int(t_ns), p)
            self._version += 1
            self._mode = Mode.HOLD
            self._wp_t = np.zeros(0, dtype=np.int64)
            self._wp_q = np.zeros((0, p.shape[0]))
            self._wp_n = np.zeros(0)
            self._stats.chunk_t_obs_ns = None
            self._stats.chunk_received_ns = None
            self._stats.mode = Mode.HOLD

    @property
    def ready(self) -> bool:
        """True once reset() gave the scheduler a state to start from."""
        return self._p is not None

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def plan_version(self) -> int:
        """Changes whenever the plan is replaced (chunk accepted, stop, reset)."""
        return self._version

    @property
    def plan_end_ns(self) -> int:
        """When the current plan comes to rest (ns); 0 before reset()."""
        with self._lock:
            return self._plan.end_ns if self._plan is not None else 0

    def stats(self) -> SchedulerStats:
        with self._lock:
            s = self._stats
            return SchedulerStats(
                ticks=s.ticks, accepted=s.accepted, rejected=Counter(s.rejected),
                last_rejection=s.last_rejection, dropped_stale_actions=s.dropped_stale_actions,
                starvation_events=s.starvation_events, limited_ticks=s.limited_ticks,
                chunk_t_obs_ns=s.chunk_t_obs_ns, chunk_received_ns=s.chunk_received_ns, mode=self._mode,
            )

    # -- chunks ------------------------------------------------------------------------------

    def _reject(self, reason: str, detail: str) -> ChunkRejected:
        with self._lock:
            self._stats.rejected[reason] += 1
            self._stats.last_rejection = f"{reason}: {detail}"
        return ChunkRejected(reason, detail)

    def _snapshot(self) -> _Snapshot:
        """The state a new plan is built from (call with the lock held; cheap)."""
        return _Snapshot(
            version=self._version, cfg=self._cfg, ready=self._p is not None, t_last=self._t_last,
            p=list(self._p or ()), v=list(self._v), a_ref=list(self._a_ref), mode=self._mode,
            wp_t=self._wp_t, wp_q=self._wp_q, wp_n=self._wp_n, chunk_t_obs=self._stats.chunk_t_obs_ns,
        )

    def add_chunk(self, chunk: Chunk, now_ns: int) -> int:
        """Splice ``chunk`` into the plan at time ``now_ns``; returns the number of actions that
        will be executed. Raises :class:`ChunkRejected` (nothing changes) for a bad chunk.

        The plan is built outside the lock (about a millisecond) from a snapshot of the state,
        so the control thread is never blocked by it; the new plan starts from the snapshot's
        command state, a tick or two old when the thread ticked meanwhile, which the limiter
        absorbs. If another chunk, a stop or a reset replaced the plan meanwhile, rebuild.
        """
        now = int(now_ns)
        for attempt in range(3):
            with self._lock:
                snap = self._snapshot()
            if attempt == 2:  # contended: build under the lock (RLock: _reject may lock again)
                with self._lock:
                    snap = self._snapshot()
                    built = self._prepare(chunk, now, snap)
                    return self._commit(built, now)
            built = self._prepare(chunk, now, snap)
            with self._lock:
                if self._version == snap.version:
                    return self._commit(built, now)
        raise AssertionError("unreachable")

    def _prepare(self, chunk: Chunk, now: int, snap: _Snapshot) -> _Built:
        """Validate ``chunk`` and build its plan from ``snap``; raises ChunkRejected."""
        cfg = snap.cfg
        if not snap.ready:
            raise self._reject("not_ready", "the scheduler has no state yet (reset() first)")
        if chunk.names and tuple(chunk.names) != cfg.names:
            raise self._reject("names", f"chunk names {tuple(chunk.names)} != {cfg.names}")
        try:
            a = np.asarray(chunk.actions, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise self._reject("shape", f"actions are not numeric: {e}") from None
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != cfg.dim:
            raise self._reject("shape", f"actions have shape {a.shape}, expected (H >= 1, {cfg.dim})")
        if not np.all(np.isfinite(a)):
            raise self._reject("nonfinite", "actions have NaN or inf")
        dt = float(chunk.dt)
        if not (math.isfinite(dt) and dt > 0):
            raise self._reject("dt", f"dt {dt} must be finite and > 0")
        if cfg.expected_dt > 0 and abs(dt - cfg.expected_dt) > 1e-6:
            raise self._reject("dt", f"dt {dt} != expected {cfg.expected_dt}")
        t_obs = int(chunk.t_obs_ns)
        if t_obs > now + int(cfg.max_future_s * 1e9):
            raise self._reject("future", f"stamped {(t_obs - now) * 1e-9:.3f} s in the future "
                                         f"(max {cfg.max_future_s} s)")
        if t_obs < now - int(cfg.max_age_s * 1e9):
            raise self._reject("too_old", f"observation is {(now - t_obs) * 1e-9:.3f} s old "
                                          f"(max {cfg.max_age_s} s)")
        if snap.chunk_t_obs is not None and t_obs < snap.chunk_t_obs:
            raise self._reject("out_of_order", "observation older than the running chunk's")

        horizon = a.shape[0]
        dt_ns = int(round(dt * 1e9))
        due = t_obs + dt_ns * np.arange(1, horizon + 1, dtype=np.int64)  # (H,)
        n_exec = horizon if cfg.execute_steps == 0 else min(horizon, cfg.execute_steps)
        # Latency compensation: the first action we may still send is due after this.
        threshold = max(now + int(round(cfg.latency_margin_s * 1e9)), snap.t_last)
        keep = due > threshold
        if not keep[:n_exec].any():
            raise self._reject("stale", f"every executable action is due before now + margin "
                                        f"({cfg.latency_margin_s} s)")
        new_t, new_a = due[keep], a[keep]
        executable = (np.arange(horizon) < n_exec)[keep]
        q, n = _splice(cfg, snap, new_t, new_a, now)

        # The plan starts from the state of the last command, so position and velocity are
        # continuous whatever the new waypoints are. If the control thread has not ticked
        # since (now > last tick), start at now from that state moved on at its velocity.
        t0 = max(snap.t_last, now)
        v0 = np.array(snap.v)
        p0 = np.array(snap.p) + v0 * ((t0 - snap.t_last) * 1e-9)
        plan = Plan.through(t0, p0, v0, np.array(snap.a_ref), new_t[executable], q[executable],
                            cfg.interpolation)
        return _Built(plan=plan, wp_t=new_t, wp_q=q, wp_n=n, dt_ns=dt_ns, t_obs=t_obs,
                      executed=int(executable.sum()), dropped=int(n_exec - executable.sum()))

    def _commit(self, b: _Built, now: int) -> int:
        """Install a prepared plan (lock held)."""
        self._plan = b.plan
        self._wp_t, self._wp_q, self._wp_n = b.wp_t, b.wp_q, b.wp_n
        self._version += 1
        self._chunk_dt_ns = b.dt_ns
        self._mode = Mode.TRACK
        st = self._stats
        st.accepted += 1
        st.dropped_stale_actions += b.dropped
        st.chunk_t_obs_ns, st.chunk_received_ns = b.t_obs, now
        st.mode = Mode.TRACK
        return b.executed

    # -- control tick --------------------------------------------------------------------------

    def _stop(self) -> None:
        """Replace the plan by a constant deceleration to rest within the acceleration limits."""
        lim = self._limits
        p = np.array(self._p)
        v = np.where(lim.binary, 0.0, np.array(self._v))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_stop = np.where(np.isfinite(lim.max_acceleration), np.abs(v) / lim.max_acceleration, 0.0)
        duration = float(np.max(t_stop))
        if duration <= 0:
            self._plan = Plan.hold(self._t_last, p)
        else:
            # A cubic from (p, v) to (p + v T / 2, 0) decelerates at the constant rate v / T.
            end = self._t_last + max(1, int(duration * 1e9))
            self._plan = Plan.through(self._t_last, p, v, np.zeros_like(v), np.array([end]),
                                      (p + 0.5 * v * duration)[None], "cubic")
        self._wp_t = np.zeros(0, dtype=np.int64)
        self._wp_q = np.zeros((0, self._cfg.dim))
        self._wp_n = np.zeros(0)
        self._version += 1

    def _lagging(self, h: float) -> bool:
        """True when the command is further from the plan's end than one tick of ``h`` s at
        full speed on some continuous joint (lock held)."""
        lo, hi, vmax, _, binary = self._limits.as_lists()
        end = self._plan.p_end
        for j, p in enumerate(self._p):
            goal = min(max(end[j], lo[j]), hi[j])
            if not binary[j] and abs(goal - p) > vmax[j] * h:
                return True
        return False

    def command(self, t_ns: int) -> tuple[np.ndarray, np.ndarray, Mode]:
        """The command for the control tick at ``t_ns``: (A,) positions, (A,) velocities, mode."""
        t = int(t_ns)
        with self._lock:
            if self._p is None:
                raise RuntimeError("ChunkScheduler.command() before reset()")
            h = (t - self._t_last) * 1e-9
            if h <= 0:  # same or earlier tick: repeat, never extrapolate backwards
                return np.array(self._p), np.array(self._v), self._mode
            if 0 < self._cfg.max_tick_s < h:
                h = self._cfg.max_tick_s
            st = self._stats
            if self._mode == Mode.TRACK:
                timeout = self._cfg.starvation_timeout_s
                if timeout > 0 and t - st.chunk_received_ns > timeout * 1e9:
                    self._stop()
                    self._mode = Mode.STARVED
                    st.starvation_events += 1
                elif t >= self._plan.end_ns:
                    self._mode = Mode.STARVED
                    st.starvation_events += 1
                    # A command still catching up with the plan (limits acted) would go on
                    # toward the last, already-due waypoint at up to full speed: stop instead.
                    if self._lagging(h):
                        self._stop()
            p_ref, v_ref, a_ref = self._plan.eval(t)
            p, v, limited = limit_step(self._limits, self._p, self._v, p_ref, v_ref, h,
                                       self._plan.next_stop(t))
            self._p, self._v, self._a_ref, self._t_last = p, v, a_ref, t
            st.ticks += 1
            st.limited_ticks += int(limited)
            st.mode = self._mode
            return np.array(p), np.array(v), self._mode

    # -- outputs for the rest of the system ----------------------------------------------------

    def tail(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The unexecuted waypoints of the running chunk after ``t_ns`` (warm start):
        (K,) due times in ns and (K, A) actions; K = 0 when nothing is planned."""
        with self._lock:
            if self._mode != Mode.TRACK:
                return np.zeros(0, dtype=np.int64), np.zeros((0, self._cfg.dim))
            m = self._wp_t > int(t_ns)
            return self._wp_t[m].copy(), self._wp_q[m].copy()

    def replan_due(self, t_ns: int) -> bool:
        """True when ``n_action_steps`` actions of the running chunk are behind ``t_ns``, or
        when nothing is being tracked."""
        with self._lock:
            if self._mode != Mode.TRACK or self._cfg.n_action_steps == 0:
                return self._mode != Mode.TRACK
            return int(t_ns) - self._stats.chunk_t_obs_ns >= self._cfg.n_action_steps * self._chunk_dt_ns

    def reference(self, times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plan's reference velocity and acceleration at ``times_ns`` (K,), before the limits:
        (K, A) each (what a splice changes; the executor's boundary diagnostics)."""
        with self._lock:
            if self._plan is None:
                raise RuntimeError("ChunkScheduler.reference() before reset()")
            va = [self._plan.eval(int(t))[1:] for t in np.asarray(times_ns).reshape(-1)]
        return np.array([x[0] for x in va]), np.array([x[1] for x in va])

    def sample(self, times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plan at ``times_ns`` (K,), clipped to position and velocity limits: (K, A) positions
        and velocities (for controllers that interpolate themselves, e.g. a JTC)."""
        with self._lock:
            if self._plan is None:
                raise RuntimeError("ChunkScheduler.sample() before reset()")
            pv = [self._plan.eval(int(t))[:2] for t in np.asarray(times_ns).reshape(-1)]
            lim = self._limits
        p = lim.clip_position(np.array([x[0] for x in pv]).reshape(-1, self._cfg.dim))
        v = np.clip(np.array([x[1] for x in pv]).reshape(-1, self._cfg.dim), -lim.max_velocity, lim.max_velocity)
        v[:, lim.binary] = 0.0
        return p, v
