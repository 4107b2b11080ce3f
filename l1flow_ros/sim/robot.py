"""The simulated arm as a real-time robot, no ROS: :mod:`l1flow_ros.nodes.sim_robot_node` and
:mod:`l1flow_ros.nodes.panda_sim_node` wrap it.

:class:`SimRobot` owns a simulator (:class:`Simulator`: Meta-World's
:class:`~l1flow_ros.sim.metaworld_env.MetaWorldSim` or the Panda's
:class:`~l1flow_ros.sim.arm.panda.PandaSim`) and what the node's threads share about it:

- commands (any thread): absolute targets, deltas, joint trajectories (followed like a joint
  trajectory controller, :mod:`l1flow_ros.sim.trajectory`; a target or delta cancels one),
  resets to the next seed;
- the physics loop (:meth:`SimRobot.run`, on the node's physics thread): one step per
  simulator dt (Meta-World 12.5 ms, the Panda 20 ms) on absolute deadlines; a simulator that
  takes a target per physics substep (the Panda: 500 Hz) samples a running trajectory there; more than ``RESYNC_S`` behind (a starved
  CPU) it counts an overrun and restarts its deadlines from now instead of bursting;
- camera frames: when a frame is due, a step takes a snapshot of the physics state and
  offers it to the render thread (:meth:`offer_frame` / :meth:`wait_frame` /
  :meth:`frame_done`); while the renderer is still busy with the previous one the frame is
  dropped and counted, so slow CPU rendering never stalls physics.

``lock`` guards the simulator (physics thread vs commands); everything stamped uses the
``clock_ns`` it is given (the node's ROS clock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from l1flow_ros.config import param
from l1flow_ros.sim.metaworld_env import ACTION_NAMES, MetaWorldSim, SimConfig, SimError, StepResult
from l1flow_ros.sim.trajectory import TrajectoryFollower

# More than this behind its deadlines (8 physics steps), the loop resynchronises.
RESYNC_S = 0.1


class Simulator(Protocol):
    """What :class:`SimRobot` needs of a simulator (MetaWorldSim and PandaSim both are one)."""

    cfg: Any  # .cameras: the cameras it renders
    target: np.ndarray  # the command held, in the follower's joint order
    steps: int
    success: bool
    max_episode_steps: int

    @property
    def dt(self) -> float: ...
    def reset(self, seed: int) -> None: ...
    def set_target(self, target: np.ndarray) -> None: ...
    def step(self) -> Any: ...  # a result with .success
    def joint_positions(self) -> np.ndarray: ...
    def joint_velocities(self) -> np.ndarray: ...
    def snapshot(self) -> Any: ...
    def render(self, cam: str, snapshot: Any) -> tuple[np.ndarray, np.ndarray]: ...
    def camera_model(self, cam: str) -> Any: ...  # .fx, .fy, .cx, .cy
    def close_renderer(self) -> None: ...  # from the thread that rendered
    def close(self) -> None: ...


@dataclass(frozen=True)
class SimRobotConfig:
    """sim_robot_node's parameters (:mod:`l1flow_ros.nodes.params` declares them)."""

    task: str = param("button-press-v3", "Meta-World v3 task name")
    seed: int = param(0, "seed of the first episode; each /sim/reset uses the next", live=True)
    cameras: tuple[str, ...] = param(("corner",), "Meta-World cameras to publish (empty = none)")
    image_height: int = param(96, "rendered image height, pixels")
    image_width: int = param(96, "rendered image width, pixels")
    camera_rate_hz: float = param(15.0, "camera frame rate (all cameras together)", live=True)
    max_episode_steps: int = param(0, "episode length in physics steps reported as truncated; 0 = task's")
    calibration_file: str = param("", "if set, write the cameras' extrinsics (camera -> base) here at start")
    diagnostics_rate_hz: float = param(1.0, "rate of /diagnostics", live=True)

    def validate(self) -> None:
        if not (0.0 < self.camera_rate_hz <= 100.0):
            raise SimError(f"camera_rate_hz must be in (0, 100], got {self.camera_rate_hz}")
        if not (0.0 < self.diagnostics_rate_hz <= 50.0):
            raise SimError(f"diagnostics_rate_hz must be in (0, 50], got {self.diagnostics_rate_hz}")
        if self.seed < 0:
            raise SimError(f"seed must be >= 0, got {self.seed}")
        self.sim_config().validate()

    def sim_config(self) -> SimConfig:
        return SimConfig(task=self.task, cameras=self.cameras, image_size=(self.image_height, self.image_width),
                         max_episode_steps=self.max_episode_steps)


@dataclass(frozen=True)
class Tick:
    """What one physics step has to publish."""

    result: StepResult | Any  # the simulator's step result (.success)
    episode: int  # the episode it belongs to (a reset before it is published makes it stale)
    q: np.ndarray  # (len(JOINT_NAMES),) joint positions
    qd: np.ndarray  # (len(JOINT_NAMES),) joint velocities
    stamp_ns: int  # clock_ns() of the state
    snapshot: Any  # MjData copy to render, None when no frame is due or the renderer is busy


class SimRobot:
    """Commands, the physics loop and frame hand-off of one simulated arm (see the module docstring)."""

    def __init__(self, sim: MetaWorldSim | Simulator, seed: int, camera_rate_hz: float, clock_ns: Callable[[], int],
                 monotonic: Callable[[], float] = time.monotonic, command_names: Sequence[str] = ACTION_NAMES,
                 substep_follow: bool = False) -> None:
        """``command_names``: the joints of a target and of a trajectory; ``substep_follow``:
        the simulator's ``step(follow=f)`` takes a target per physics substep (``f(s)``,
        ``s`` seconds into the step), where a running trajectory is sampled."""
        self.sim = sim
        self._substep_follow = bool(substep_follow)
        self.lock = threading.Lock()  # guards sim, trajectory, seed, episode
        self.camera_rate_hz = float(camera_rate_hz)  # read at each frame: may change while running
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self.trajectory = TrajectoryFollower(command_names)
        self.seed = int(seed)
        self.episode = 0
        self.sim.reset(self.seed)
        # Counters (written by the physics and render threads, read for diagnostics).
        self.n_steps = 0
        self.n_overruns = 0
        self.n_frames = 0
        self.n_frames_dropped = 0
        self._next_frame = monotonic()
        self._frame_cv = threading.Condition()
        self._frame: tuple[int, Any] | None = None  # (stamp_ns, MjData snapshot) waiting to render
        self._render_busy = False

    # ------------------------------------------------------------------ commands
    def set_target(self, target: Sequence[float]) -> None:
        """Absolute target in ``command_names`` order; SimError when it is not one."""
        with self.lock:
            self.sim.set_target(np.asarray(target, dtype=np.float64))
            self.trajectory.cancel()

    def apply_delta(self, delta: Sequence[float]) -> None:
        """[dx, dy, dz, gripper] moving the current target; SimError when it is not one."""
        with self.lock:
            self.sim.apply_delta(np.asarray(delta, dtype=np.float64))
            self.trajectory.cancel()

    def follow(self, names: Sequence[str], start_ns: int, times_from_start_ns: Sequence[int],
               positions: Sequence[Sequence[float]], velocities: Sequence[Sequence[float]] | None = None,
               accelerations: Sequence[Sequence[float]] | None = None) -> None:
        """Follow a joint trajectory from the current target; TrajectoryError when it cannot be."""
        with self.lock:
            self.trajectory.set(names, start_ns, times_from_start_ns, positions, self.sim.target, self._clock_ns(),
                                velocities, accelerations)

    def reset(self) -> tuple[int, int]:
        """Start the next episode with the next seed; -> (episode, seed)."""
        with self.lock:
            self.seed += 1
            self.episode += 1
            self.sim.reset(self.seed)
            self.trajectory.cancel()
            return self.episode, self.seed

    def next_reset_seed(self, seed: int) -> None:
        """The next :meth:`reset` starts at ``seed``."""
        with self.lock:
            self.seed = int(seed) - 1

    # ------------------------------------------------------------------ physics
    def step(self) -> Tick:
        """One physics step (following a trajectory if one runs), and a frame if one is due."""
        with self.lock:
            now = self._clock_ns()
            if self._substep_follow and self.trajectory.active:
                traj = self.trajectory
                res = self.sim.step(follow=lambda s: traj.sample(now + round(s * 1e9)))
            else:
                follow = self.trajectory.sample(now)
                if follow is not None:
                    self.sim.set_target(follow)
                res = self.sim.step()
            tick = Tick(res, self.episode, self.sim.joint_positions(), self.sim.joint_velocities(),
                        self._clock_ns(), self._frame_due())
        self.n_steps += 1
        return tick

    def _frame_due(self) -> Any:
        """A snapshot when a frame is due and the renderer is free (lock held), else None."""
        if not self.sim.cfg.cameras or self._monotonic() < self._next_frame:
            return None
        period = 1.0 / self.camera_rate_hz
        self._next_frame += period
        if self._next_frame < self._monotonic():  # fell behind: do not burst
            self._next_frame = self._monotonic() + period
        if self._render_busy:
            self.n_frames_dropped += 1
            return None
        return self.sim.snapshot()

    def run(self, on_tick: Callable[[Tick], bool], stop: threading.Event) -> None:
        """Step at the physics dt on absolute deadlines until ``stop`` is set or ``on_tick``
        (which publishes the step, outside the lock) returns False."""
        dt = self.sim.dt
        next_t = self._monotonic()
        while not stop.is_set():
            if not on_tick(self.step()):
                return
            next_t += dt
            delay = next_t - self._monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -RESYNC_S:
                self.n_overruns += 1
                next_t = self._monotonic()

    # ------------------------------------------------------------------ frames
    def offer_frame(self, stamp_ns: int, snapshot: Any) -> None:
        """Hand a snapshot (from :meth:`step`) to the render thread."""
        with self._frame_cv:
            self._frame = (stamp_ns, snapshot)
            self._render_busy = True
            self._frame_cv.notify()

    def wait_frame(self, stop: threading.Event) -> tuple[int, Any] | None:
        """The next frame to render (stamp_ns, snapshot); None once ``stop`` is set."""
        with self._frame_cv:
            while self._frame is None and not stop.is_set():
                self._frame_cv.wait(0.1)
            if stop.is_set():
                return None
            frame, self._frame = self._frame, None
            return frame

    def frame_done(self, rendered: bool) -> None:
        """The render thread is free again; ``rendered``: the frame went out."""
        if rendered:
            self.n_frames += 1
        self._render_busy = False

    def wake(self) -> None:
        """Wake a render thread waiting in :meth:`wait_frame` (to see its stop)."""
        with self._frame_cv:
            self._frame_cv.notify_all()

    def render(self, snapshot: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """camera -> (rgb (H, W, 3) uint8, depth (H, W) float32 metres) of a snapshot."""
        return {cam: self.sim.render(cam, snapshot) for cam in self.sim.cfg.cameras}

    # ------------------------------------------------------------------ reporting
    def status(self) -> dict[str, Any]:
        """Episode state and counters, for diagnostics."""
        with self.lock:
            values = {
                "episode": self.episode,
                "seed": self.seed,
                "step": self.sim.steps,
                "success": self.sim.success,
                "truncated": self.sim.steps >= self.sim.max_episode_steps,
                "target": np.round(self.sim.target, 4).tolist(),
            }
        values.update(physics_steps=self.n_steps, physics_overruns=self.n_overruns, frames=self.n_frames,
                      frames_dropped=self.n_frames_dropped)
        return values
