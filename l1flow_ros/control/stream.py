"""The executor's command stream (no ROS): who has the arm, where it is, what each tick sends.

:class:`CommandStream` sits between the :class:`~l1flow_ros.control.scheduler.ChunkScheduler`
and the controller interface. Its state is shared between the threads of the executor node
(callbacks: chunks, joint states, enable requests, the controller check; the control
thread: :meth:`CommandStream.tick`) and guarded by one lock that is held only briefly; the
control thread reads the flags unlocked (each is one attribute read).

- Disabled, nothing is sent. Enabling needs a measured position and starts there, at rest:
  no jump when the policy takes over from teleop.
- With no controller listening nothing is sent; when one comes back the stream restarts
  from the measured position, as enabling does (the plan may have moved on meanwhile).
- Each tick gives, per output: ``forward_position`` the absolute command (A,);
  ``ee_delta`` the displacement since the last command (A,), grippers absolute;
  ``joint_trajectory`` the plan sampled for a trajectory controller, only when the plan
  changed (a new chunk, or a stop).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from l1flow_ros.control.delay import DelayEstimator
from l1flow_ros.control.scheduler import ChunkRejected, ChunkScheduler
from l1flow_ros.spec import Chunk


@dataclass(frozen=True)
class StreamReport:
    """What the stream did since the last report (and its state now)."""

    enabled: bool
    measured: bool  # a measured position has arrived
    controller_lost: bool
    joint_states_t: float | None  # when the last usable measurement arrived (caller's clock)
    rejections: int  # chunks rejected in all
    new_rejections: int  # since the last report
    last_rejection: str
    delay_steps: int | None = None  # inference delay in chunk steps at the estimator's percentile
    delay_ms_p50: float = float("nan")  # observation -> chunk arrival
    delay_ms_p95: float = float("nan")
    # Chunk boundaries (every accepted chunk but the first after a start from rest): how much the
    # splice changed the commanded motion over the next chunk step, the new plan's reference
    # velocity and acceleration against the old plan's at the same times, largest over the
    # continuous joints (grippers left out) and over every boundary so far.
    boundary_velocity_step: float = 0.0
    boundary_acceleration: float = 0.0
    # The same over the boundaries on a running plan only (:attr:`BoundaryEvent.on_plan`: the
    # chunk's observation was taken while a plan ran, so inference could see it), and the 95th
    # percentiles over the last BOUNDARY_WINDOW boundaries of each kind.
    boundaries: int = 0
    boundaries_on_plan: int = 0
    boundary_velocity_step_p95: float = 0.0
    on_plan_velocity_step: float = 0.0
    on_plan_velocity_step_p95: float = 0.0
    on_plan_acceleration: float = 0.0


BOUNDARY_WINDOW = 512  # boundaries kept for the percentiles (and for :meth:`CommandStream.events`)


@dataclass(frozen=True)
class BoundaryEvent:
    """One accepted chunk as the executor saw it (the first after a start from rest too:
    ``boundary`` False, no steps).

    ``index``: chunks accepted since the start from rest (0: the first); ``since_start_s``:
    arrival time after that start; ``delay_steps``: this chunk's own d = ceil((arrival - t_obs) /
    dt); ``on_plan``: its observation was taken while a plan ran (at or after the first chunk's
    arrival), the only chunks a prefix can have been imposed on: those observed before were
    computed from rest, with nothing to agree with.
    """

    t_obs_ns: int
    arrival_ns: int
    index: int
    since_start_s: float
    delay_steps: int
    boundary: bool
    on_plan: bool
    velocity_step: float = 0.0
    acceleration: float = 0.0


EVENT_TAG = "chunk event:"


def boundary_line(e: BoundaryEvent) -> str:
    """One event as a log line (the executor's ``log_boundaries``); :func:`parse_boundary_line` reads it."""
    return (f"{EVENT_TAG} t_obs_ns={e.t_obs_ns} arrival_ns={e.arrival_ns} index={e.index} "
            f"since_start_s={e.since_start_s:.4f} delay_steps={e.delay_steps} boundary={int(e.boundary)} "
            f"on_plan={int(e.on_plan)} velocity_step={e.velocity_step:.6g} acceleration={e.acceleration:.6g}")


def parse_boundary_line(line: str) -> BoundaryEvent | None:
    """The event a :func:`boundary_line` in ``line`` (e.g. a node's log) describes, else None."""
    at = line.find(EVENT_TAG)
    if at < 0:
        return None
    kv = dict(f.split("=", 1) for f in line[at + len(EVENT_TAG):].split() if "=" in f)
    try:
        return BoundaryEvent(int(kv["t_obs_ns"]), int(kv["arrival_ns"]), int(kv["index"]),
                             float(kv["since_start_s"]), int(kv["delay_steps"]), kv["boundary"] == "1",
                             kv["on_plan"] == "1", float(kv["velocity_step"]), float(kv["acceleration"]))
    except (KeyError, ValueError):
        return None


def _p95(values) -> float:
    return float(np.percentile(np.asarray(values), 95.0)) if len(values) else 0.0


class CommandStream:
    """See the module docstring. ``output`` is one of ``config.OUTPUTS``."""

    def __init__(self, scheduler: ChunkScheduler, output: str) -> None:
        self.scheduler = scheduler
        self.output = output
        self.lock = threading.Lock()  # guards the fields below shared with the control thread
        self.enabled = False
        self.measured: np.ndarray | None = None  # (A,) latest measured position, command order
        self.measured_t: float | None = None
        self.controller_lost = False
        self.last_published: np.ndarray | None = None  # (A,) for ee_delta
        self.published_version = -1  # plan version last sent as a trajectory
        self.chunk_dt_ns = 0  # dt of the last accepted chunk
        self.ticks = 0  # commands computed (control thread)
        self.rejections = 0
        self.last_rejection = ""
        self._rejections_reported = 0
        self.delay = DelayEstimator()  # observation -> arrival of accepted chunks (control/delay.py)
        self.fingerprints: frozenset[str] = frozenset()  # accept only these (empty: any)
        # Chunk boundaries (StreamReport.boundary_*), measured in add_chunk.
        self._from_rest = True  # the next chunk starts the arm from rest, not a boundary
        self._start_ns = 0  # the last start from rest
        self._plan_since_ns: int | None = None  # arrival of the first chunk after it
        self._accepted_since_start = 0
        self.boundary_dv = 0.0
        self.boundary_acc = 0.0
        self.on_plan_dv = 0.0
        self.on_plan_acc = 0.0
        self.n_boundaries = 0
        self.n_on_plan = 0
        self._dv_window: deque[float] = deque(maxlen=BOUNDARY_WINDOW)
        self._on_plan_window: deque[float] = deque(maxlen=BOUNDARY_WINDOW)
        self._events: deque[BoundaryEvent] = deque(maxlen=BOUNDARY_WINDOW)

    # -- inputs (callback threads) -------------------------------------------------------------

    def set_measured(self, q: np.ndarray, t: float) -> None:
        with self.lock:
            self.measured, self.measured_t = q, t

    def _restart_from_measured(self, now_ns: int) -> None:
        """Start from the measured position, at rest (the lock held)."""
        self._from_rest = True
        self._start_ns, self._plan_since_ns, self._accepted_since_start = int(now_ns), None, 0
        self.scheduler.reset(self.measured, now_ns)
        self.last_published = self.measured.copy()
        self.published_version = -1

    def enable(self, on: bool, now_ns: int) -> tuple[bool, str]:
        """(done, what happened)."""
        with self.lock:
            if not on:
                was, self.enabled = self.enabled, False
                return True, "disabled" if was else "already disabled"
            if self.enabled:
                return True, "already enabled"
            if self.measured is None:
                return False, f"no /joint_states with all of {list(self.scheduler.config.names)} yet"
            self._restart_from_measured(now_ns)
            # The delay window is kept: inference ran on meanwhile (its warm-up, the first chunks
            # since this node started, stays excluded); an episode shorter than the warm-up
            # would otherwise never give an estimate.
            self.enabled = True
        return True, "enabled"

    def controller_present(self, present: bool, now_ns: int) -> bool | None:
        """The controller's presence now; returns it when it changed (False = lost, True =
        back, restarted from the measured position), else None."""
        with self.lock:
            if not present and not self.controller_lost:
                self.controller_lost = True
                return False
            if present and self.controller_lost:
                if self.enabled and self.measured is not None:
                    self._restart_from_measured(now_ns)
                self.controller_lost = False  # after the reset: the control thread reads it unlocked
                return True
        return None

    def add_chunk(self, chunk: Chunk, now_ns: int) -> None:
        """Splice a chunk in; raises ChunkRejected (the caller counts it with :meth:`reject`)."""
        if self.fingerprints and chunk.fingerprint not in self.fingerprints:
            raise ChunkRejected("fingerprint", f"chunk of checkpoint {chunk.fingerprint!r}, not one of "
                                               f"accept_fingerprints {sorted(self.fingerprints)}")
        dt_ns = int(round(chunk.dt * 1e9))
        boundary = not self._from_rest and self.scheduler.ready
        if boundary:  # the plan's motion over the next chunk step, before and after the splice
            times = now_ns + np.arange(1, 5) * (dt_ns // 4)
            v0, a0 = self.scheduler.reference(times)
        self.scheduler.add_chunk(chunk, now_ns)
        self.chunk_dt_ns = dt_ns
        self._from_rest = False
        dv = acc = 0.0
        if boundary:
            v1, a1 = self.scheduler.reference(times)
            keep = [j for j in range(v1.shape[1]) if j not in self.scheduler.limits.gripper_indices]
            dv = float(np.max(np.abs(v1 - v0)[:, keep], initial=0.0))
            acc = float(np.max(np.abs(a1 - a0)[:, keep], initial=0.0))
        with self.lock:
            steps = self.delay.add(chunk.t_obs_ns, now_ns, chunk.dt)
            if self._plan_since_ns is None:
                self._plan_since_ns = int(now_ns)
            on_plan = boundary and int(chunk.t_obs_ns) >= self._plan_since_ns
            self._events.append(BoundaryEvent(
                int(chunk.t_obs_ns), int(now_ns), self._accepted_since_start, (now_ns - self._start_ns) * 1e-9,
                steps, boundary, on_plan, dv, acc))
            self._accepted_since_start += 1
            if boundary:
                self.n_boundaries += 1
                self.boundary_dv, self.boundary_acc = max(self.boundary_dv, dv), max(self.boundary_acc, acc)
                self._dv_window.append(dv)
            if on_plan:
                self.n_on_plan += 1
                self.on_plan_dv, self.on_plan_acc = max(self.on_plan_dv, dv), max(self.on_plan_acc, acc)
                self._on_plan_window.append(dv)

    def events(self) -> list[BoundaryEvent]:
        """The last BOUNDARY_WINDOW accepted chunks, oldest first (a copy)."""
        with self.lock:
            return list(self._events)

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejections += 1
            self.last_rejection = reason

    def report(self) -> StreamReport:
        """The state, and the rejections since the previous report."""
        with self.lock:
            new, self._rejections_reported = self.rejections - self._rejections_reported, self.rejections
            d = self.delay
            return StreamReport(self.enabled, self.measured is not None, self.controller_lost, self.measured_t,
                                self.rejections, new, self.last_rejection, d.steps(), d.latency_ms(50.0),
                                d.latency_ms(95.0), self.boundary_dv, self.boundary_acc, self.n_boundaries,
                                self.n_on_plan, _p95(self._dv_window), self.on_plan_dv,
                                _p95(self._on_plan_window), self.on_plan_acc)

    # -- the control thread --------------------------------------------------------------------

    def tick(self, now_ns: int) -> np.ndarray | tuple[list[int], np.ndarray, np.ndarray] | None:
        """What to send at ``now_ns``: (A,) for forward_position and ee_delta; (times, p, v)
        of :meth:`plan_samples` for joint_trajectory; None for nothing."""
        if not self.enabled or not self.scheduler.ready or self.controller_lost:
            return None
        p, v, mode = self.scheduler.command(now_ns)
        self.ticks += 1
        if not self.enabled:  # disabled while computing: send nothing
            return None
        if self.output == "forward_position":
            return p
        if self.output == "ee_delta":
            delta = p - (self.last_published if self.last_published is not None else p)
            grip = list(self.scheduler.limits.gripper_indices)
            delta[grip] = p[grip]  # grippers stay absolute
            self.last_published = p
            return delta
        version = self.scheduler.plan_version
        if version == self.published_version:
            return None
        self.published_version = version
        return self.plan_samples(now_ns)

    def plan_samples(self, now_ns: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The plan from ``now_ns`` to its end, sampled at the chunk dt (0.1 s before any
        chunk) and at its end: times (T,) ns, positions and velocities (T, A)."""
        end = self.scheduler.plan_end_ns
        step = self.chunk_dt_ns or int(1e8)
        times = list(range(now_ns + step, end, step)) + [max(end, now_ns + 1)]
        p, v = self.scheduler.sample(np.array(times, dtype=np.int64))
        return times, p, v
