"""The executor's configuration (no ROS): one frozen dataclass, its validation, and the
scheduler configuration and limits it makes.

Every field is a ROS parameter of ``executor_node`` (declared by
:func:`l1flow_ros.nodes.params.declare`); ``live=True`` fields may change while the node
runs, the others are fixed at start. Limits come from the configuration and, with a
checkpoint's :class:`~l1flow_ros.spec.ActionSpec`, the tighter of both per joint
(:meth:`ExecutorConfig.limits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from l1flow_ros.config import param
from l1flow_ros.control.safety import Limits
from l1flow_ros.control.scheduler import SchedulerConfig
from l1flow_ros.spec import ActionSpec

OUTPUTS = ("forward_position", "joint_trajectory", "ee_delta")


@dataclass(frozen=True)
class ExecutorConfig:
    """All parameters of the executor, validated by :meth:`validate`."""

    joint_names: tuple[str, ...] = param(("ee_x", "ee_y", "ee_z", "gripper"),
                                         "action dimension names, in command order")
    rate_hz: float = param(500.0, "control rate of the command stream (Hz)")
    output: str = param("forward_position", f"controller interface: one of {OUTPUTS}")
    latency_margin: float = param(0.01, "actions due before now + this (s) are never sent", live=True)
    splice: str = param("crossfade", "how a new chunk joins the running one: replace | crossfade | ensemble",
                        live=True)
    crossfade_duration: float = param(0.0, "crossfade length (s); 0 = the whole overlap", live=True)
    ensemble_k: float = param(0.01, "temporal ensemble weight exp(-k i), i = 0 for the oldest prediction",
                              live=True)
    interpolation: str = param("cubic", "chunk rate -> control rate: cubic | quintic", live=True)
    execute_steps: int = param(0, "execution horizon: actions of a chunk executed at most (0 = all)", live=True)
    n_action_steps: int = param(8, "replanning cadence reported on /diagnostics (actions per chunk)", live=True)
    max_future: float = param(0.1, "reject chunks stamped further ahead of now than this (s)", live=True)
    max_age: float = param(1.0, "reject chunks whose observation is older than this (s)", live=True)
    starvation_timeout: float = param(0.0, "decelerate and hold when no chunk came for this long (s); "
                                      "0 = at plan end", live=True)
    lower: tuple[float, ...] = param((), "per-joint lower position limits (empty = none)", live=True)
    upper: tuple[float, ...] = param((), "per-joint upper position limits (empty = none)", live=True)
    max_velocity: tuple[float, ...] = param((), "per-joint velocity limits, units/s (empty = none)", live=True)
    max_acceleration: tuple[float, ...] = param((), "per-joint acceleration limits, units/s^2 (empty = none)",
                                                live=True)
    gripper_joints: tuple[str, ...] = param((), "joints treated as grippers (subset of joint_names; the "
                                            "checkpoint's gripper dimensions are added)", live=True)
    gripper_binary: bool = param(True, "command grippers as open / closed only", live=True)
    gripper_open: float = param(-1.0, "gripper command when open", live=True)
    gripper_closed: float = param(1.0, "gripper command when closed", live=True)
    start_enabled: bool = param(False, "enable on the first complete /joint_states (else wait for the service)")
    limits_from_checkpoint: bool = param(True, "also apply the limits of the checkpoint announced on "
                                         "/l1flow/checkpoint (the tighter of both per joint)")
    accept_fingerprints: tuple[str, ...] = param(
        (), "take chunks only from these checkpoint fingerprints (a chunk's header.frame_id); empty = any. "
        "Add the new bundle's before a hot swap", live=True)
    controller_ignore_nodes: tuple[str, ...] = param(
        ("recorder_node", "rosbag2_recorder"), "nodes whose subscription on the output topic is not taken for a "
        "controller (recorders): the executor streams only while some other node subscribes")
    tail_rate_hz: float = param(20.0, "rate of /l1flow/executor/tail (Hz); 0 = off")
    diagnostics_period: float = param(1.0, "period of /diagnostics (s)")
    log_boundaries: bool = param(False, "log every accepted chunk: its delay, whether it was observed on a "
                                 "running plan, what the splice changed (benchmarks)", live=True)
    spin_us: int = param(0, "busy-wait this long before each deadline (us) instead of sleeping; helps only "
                         "on an isolated core (the spin holds the GIL)", live=True)
    realtime_priority: int = param(0, "SCHED_FIFO priority of the control thread (0 = normal scheduling)")
    executor_priority: int = param(-1, "SCHED_FIFO priority of the thread main() runs the callbacks on; -1 = "
                                   "realtime_priority - 1 (it holds the GIL the control thread needs); 0 = "
                                   "normal scheduling")
    middleware_priority: int = param(-1, "SCHED_FIFO priority main() gives the middleware's threads (Fast DDS: "
                                     "dds.*); -1 = realtime_priority - 2 (a publish waits for their locks); "
                                     "0 = leave them")
    cpu_affinity: tuple[int, ...] = param((), "CPUs the control thread may run on (empty = any)")
    max_chunk_bytes: int = param(65536, "action chunks larger than this (serialized) are rejected unread")
    python_switch_interval: float = param(0.0001, "sys.setswitchinterval for this process (s): how long a busy "
                                          "Python thread can keep the control thread waiting for the GIL; "
                                          "0 = leave as is")

    def validate(self) -> None:
        """Raises ValueError with the reason."""
        self.scheduler_config()  # validates names, splice, interpolation, times
        self.limits()  # validates limits and gripper names
        if not (math.isfinite(self.rate_hz) and 1.0 <= self.rate_hz <= 10000.0):
            raise ValueError(f"rate_hz {self.rate_hz} must be in [1, 10000]")
        if self.output not in OUTPUTS:
            raise ValueError(f"output {self.output!r} not in {OUTPUTS}")
        if not (math.isfinite(self.tail_rate_hz) and 0 <= self.tail_rate_hz <= self.rate_hz):
            raise ValueError("tail_rate_hz must be in [0, rate_hz]")
        if not self.diagnostics_period > 0:
            raise ValueError("diagnostics_period must be > 0")
        if self.spin_us < 0 or self.spin_us * 1000 > 1e9 / self.rate_hz:
            raise ValueError("spin_us must be >= 0 and shorter than the period")
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError("realtime_priority must be in [0, 99]")
        for name in ("executor_priority", "middleware_priority"):
            prio = getattr(self, name)
            if not -1 <= prio <= 99:
                raise ValueError(f"{name} must be in [-1, 99]")
            if prio > 0 and prio >= self.realtime_priority:
                raise ValueError(f"{name} must be below realtime_priority (the control thread comes first)")
        if self.max_chunk_bytes < 1024:
            raise ValueError("max_chunk_bytes must be >= 1024")
        if not self.python_switch_interval >= 0:
            raise ValueError("python_switch_interval must be >= 0")

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.rate_hz))

    @property
    def executor_thread_priority(self) -> int:
        """The SCHED_FIFO priority for the executor thread (0 = normal scheduling)."""
        if self.executor_priority >= 0:
            return self.executor_priority
        return max(self.realtime_priority - 1, 0)

    @property
    def middleware_thread_priority(self) -> int:
        """The SCHED_FIFO priority for the middleware's threads (0 = leave them as they are)."""
        if self.middleware_priority >= 0:
            return self.middleware_priority
        return max(self.realtime_priority - 2, 0)

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(
            names=self.joint_names,
            latency_margin_s=self.latency_margin,
            splice=self.splice,
            crossfade_s=self.crossfade_duration,
            ensemble_k=self.ensemble_k,
            interpolation=self.interpolation,
            execute_steps=self.execute_steps,
            n_action_steps=self.n_action_steps,
            max_future_s=self.max_future,
            max_age_s=self.max_age,
            starvation_timeout_s=self.starvation_timeout,
            max_tick_s=2.0 / self.rate_hz,  # a stalled tick never leaps (see SchedulerConfig)
        )

    def limits(self, spec: ActionSpec | None = None) -> Limits:
        """The configured limits; with a checkpoint's ActionSpec, the tighter of both per joint
        (its grippers added). Raises ValueError when the spec does not fit joint_names."""
        unknown = set(self.gripper_joints) - set(self.joint_names)
        if unknown:
            raise ValueError(f"gripper_joints {sorted(unknown)} are not in joint_names")
        dim = len(self.joint_names)
        own = Limits.build(dim, self.lower, self.upper, self.max_velocity, self.max_acceleration)
        lo, hi, vmax, amax = own.lower, own.upper, own.max_velocity, own.max_acceleration
        grippers = {self.joint_names.index(g) for g in self.gripper_joints}
        if spec is not None:
            if sorted(spec.names) != sorted(self.joint_names):
                raise ValueError(f"checkpoint actions {list(spec.names)} are not joint_names "
                                 f"{list(self.joint_names)}")
            theirs = Limits.from_spec(spec)
            order = [spec.names.index(n) for n in self.joint_names]  # spec columns in our order
            lo = np.maximum(lo, theirs.lower[order])
            hi = np.minimum(hi, theirs.upper[order])
            vmax = np.minimum(vmax, theirs.max_velocity[order])
            amax = np.minimum(amax, theirs.max_acceleration[order])
            grippers |= {self.joint_names.index(spec.names[i]) for i in spec.gripper_indices}
        return Limits(lo, hi, vmax, amax, tuple(sorted(grippers)), gripper_binary=self.gripper_binary,
                      gripper_open=self.gripper_open, gripper_closed=self.gripper_closed,
                      gripper_threshold=0.5 * (self.gripper_open + self.gripper_closed))
