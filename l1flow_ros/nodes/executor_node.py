"""executor_node: streams the policy's action chunks to the arm controller at control rate.

Subscribes ``/l1flow/action_chunk`` (JointTrajectory, reliable depth 1) and ``/joint_states``;
a dedicated control thread wakes on absolute deadlines (``rate_hz``, default 500 Hz), asks the
ROS-free :class:`~l1flow_ros.control.scheduler.ChunkScheduler` for the command of that tick
and publishes it on the configured controller interface:

- ``forward_position``: Float64MultiArray of absolute targets (action order) on
  ``/forward_position_controller/commands``, every tick;
- ``joint_trajectory``: JointTrajectory with positions and velocities sampled from the plan at
  the chunk's dt on ``/arm_controller/joint_trajectory``, once per accepted chunk (and when
  the plan changes to a stop); header.stamp = the plan's start time;
- ``ee_delta``: Float64MultiArray of the per-tick displacement on
  ``/ee_delta_controller/commands`` (gripper dimensions stay absolute).

Limits come from the parameters and, when ``limits_from_checkpoint``, also from the action
spec of the checkpoint the inference node announces on ``/l1flow/checkpoint`` (the tighter
of both per joint).

``/l1flow/executor/enable`` (std_srvs/SetBool) hands the arm between teleop and the policy:
disabled, the node publishes nothing; enabling starts from the measured joint positions (no
jump). ``/l1flow/executor/tail`` carries the unexecuted planned tail for warm starts
(header.stamp = time base, point k due at stamp + time_from_start). ``/diagnostics`` reports
period error p50 / p99 / max, missed ticks, starvation events, chunk age and rejected chunks.

Threads. The console script (``main()``, one process as ``ros2 launch`` starts it) runs:

- the **control thread**: its own loop on absolute monotonic deadlines (``rate_hz``), not a
  timer of the executor; SCHED_FIFO ``realtime_priority`` and ``cpu_affinity`` when set; it
  busy-waits the last ``spin_us`` before each deadline (that holds the GIL: only on an
  isolated core);
- the **executor thread** (the main thread): a SingleThreadedExecutor with every
  subscription, the enable service, the parameter services and the timers (diagnostics,
  tail, controller check), at ``executor_priority`` (default one SCHED_FIFO step below the
  control thread when ``realtime_priority`` is set). It holds the GIL while a callback
  runs; at normal priority on a busy machine it is preempted holding it, and the control
  thread, woken on time, waits out another process's time slice (1-4 ms: missed ticks);
- Fast DDS's own threads (``dds.*``: reception, events, shared memory), raised by main() to
  ``middleware_priority`` (default two steps below the control thread): a publish waits for
  writer locks they hold, and rclpy keeps the GIL meanwhile, so one of them preempted at
  normal priority stalls every Python thread of the process (publishes of 1-5 ms measured);
- a thread asleep on a pipe that SIGINT / SIGTERM write to (``signal.set_wakeup_fd``; rclpy's
  own handler is not installed, it would shut the context down under the running control
  thread). The first signal stops and joins the control thread, then the executor, then the
  context goes; a second one while stopping (a terminal's Ctrl-C plus launch's SIGINT) is
  ignored, and the exit code is 0.

Real-time scheduling needs CAP_SYS_NICE (root) or an rtprio limit (``ulimit -r``,
limits.conf); without it each thread logs a warning and keeps normal scheduling, and
``/diagnostics`` says what each got (``control_thread``, ``executor_thread``,
``middleware_threads``). Measured as its own process (``bench/bench_jitter.py --process
--seconds 32 --rates 500 --spins 200 --loads idle cpu inference --realtime-priority 50``,
loaded 2-core VM), missed ticks in 3 x 32 s, twice: 868 and 317 with only the control thread
real-time, 5 and 0 like this; those 5 came with 8 of a bare loop in a process of its own
over the same seconds: stalls of the whole VM.

What keeps the executor thread from delaying a deadline: the GIL is handed over every
``python_switch_interval`` (0.1 ms) of Python, so what counts is the longest call into C
that holds it. Action chunks are taken serialized and rejected unread above
``max_chunk_bytes`` (deserializing is one such call: 5 ms for 1000 points of 100 joints);
conversion and plan building run outside every lock, the scheduler's lock only covers
installing the plan; ``/joint_states`` redoes its name lookup only when the names change;
diagnostics statistics are one partition. After start-up main() freezes the garbage
collector's generations (``gc.freeze``): a full collection of this process otherwise holds
the GIL ~15 ms, seven missed ticks at 500 Hz, whichever thread triggers it.

Composed into another process (``l1flow run``, tests), the node runs under that process's
executor and signal handling; its control thread stops quietly if the context is shut down
under it; ``setup_executor_thread()`` (from the thread that spins it) and
``setup_middleware_threads()`` are there for a composition that wants the same priorities.
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from l1flow_ros.control.safety import Limits
from l1flow_ros.control.scheduler import ChunkRejected, ChunkScheduler, Mode, SchedulerConfig
from l1flow_ros.msgs.chunk_conv import MessageError, chunk_from_msg, ns_to_duration, ns_to_stamp
from l1flow_ros.nodes.diagnostics import Diagnostics
from l1flow_ros.spec import ActionSpec

NODE_NAME = "executor_node"
OUTPUTS = ("forward_position", "joint_trajectory", "ee_delta")
OUTPUT_TOPICS = {
    "forward_position": "/forward_position_controller/commands",
    "joint_trajectory": "/arm_controller/joint_trajectory",
    "ee_delta": "/ee_delta_controller/commands",
}
TIMING_WINDOW = 8192  # periods kept for the p50 / p99 / max statistics
CONTROLLER_CHECK_S = 0.05  # how often the output topic's subscriber count is checked
JOINT_STATES_TIMEOUT_S = 1.0  # /joint_states older than this is reported on /diagnostics

_D, _DA, _I, _IA, _S, _SA, _B = (
    Parameter.Type.DOUBLE, Parameter.Type.DOUBLE_ARRAY, Parameter.Type.INTEGER,
    Parameter.Type.INTEGER_ARRAY, Parameter.Type.STRING, Parameter.Type.STRING_ARRAY, Parameter.Type.BOOL,
)

# name -> (type, default, description, read_only)
PARAMETERS: dict[str, tuple[Parameter.Type, object, str, bool]] = {
    "joint_names": (_SA, ["ee_x", "ee_y", "ee_z", "gripper"], "action dimension names, in command order", True),
    "rate_hz": (_D, 500.0, "control rate of the command stream (Hz)", True),
    "output": (_S, "forward_position", f"controller interface: one of {OUTPUTS}", True),
    "latency_margin": (_D, 0.01, "actions due before now + this (s) are never sent", False),
    "splice": (_S, "crossfade", "how a new chunk joins the running one: replace | crossfade | ensemble", False),
    "crossfade_duration": (_D, 0.0, "crossfade length (s); 0 = the whole overlap", False),
    "ensemble_k": (_D, 0.01, "temporal ensemble weight exp(-k i), i = 0 for the oldest prediction", False),
    "interpolation": (_S, "cubic", "chunk rate -> control rate: cubic | quintic", False),
    "execute_steps": (_I, 0, "execution horizon: actions of a chunk executed at most (0 = all)", False),
    "n_action_steps": (_I, 8, "replanning cadence reported on /diagnostics (actions per chunk)", False),
    "max_future": (_D, 0.1, "reject chunks stamped further ahead of now than this (s)", False),
    "max_age": (_D, 1.0, "reject chunks whose observation is older than this (s)", False),
    "starvation_timeout": (_D, 0.0, "decelerate and hold when no chunk came for this long (s); 0 = at plan end",
                           False),
    "lower": (_DA, [], "per-joint lower position limits (empty = none)", False),
    "upper": (_DA, [], "per-joint upper position limits (empty = none)", False),
    "max_velocity": (_DA, [], "per-joint velocity limits, units/s (empty = none)", False),
    "max_acceleration": (_DA, [], "per-joint acceleration limits, units/s^2 (empty = none)", False),
    "gripper_joints": (_SA, [], "joints treated as grippers (subset of joint_names; the checkpoint's "
                               "gripper dimensions are added)", False),
    "gripper_binary": (_B, True, "command grippers as open / closed only", False),
    "gripper_open": (_D, -1.0, "gripper command when open", False),
    "gripper_closed": (_D, 1.0, "gripper command when closed", False),
    "start_enabled": (_B, False, "enable on the first complete /joint_states (else wait for the service)", True),
    "limits_from_checkpoint": (_B, True, "also apply the limits of the checkpoint announced on /l1flow/checkpoint "
                               "(the tighter of both per joint)", True),
    "tail_rate_hz": (_D, 20.0, "rate of /l1flow/executor/tail (Hz); 0 = off", True),
    "diagnostics_period": (_D, 1.0, "period of /diagnostics (s)", True),
    "spin_us": (_I, 0, "busy-wait this long before each deadline (us) instead of sleeping; helps only "
                       "on an isolated core (the spin holds the GIL)", False),
    "realtime_priority": (_I, 0, "SCHED_FIFO priority of the control thread (0 = normal scheduling)", True),
    "executor_priority": (_I, -1, "SCHED_FIFO priority of the thread main() runs the callbacks on; -1 = "
                                  "realtime_priority - 1 (it holds the GIL the control thread needs); 0 = normal "
                                  "scheduling", True),
    "middleware_priority": (_I, -1, "SCHED_FIFO priority main() gives the middleware's threads (Fast DDS: dds.*); "
                                    "-1 = realtime_priority - 2 (a publish waits for their locks); 0 = leave them",
                            True),
    "cpu_affinity": (_IA, [], "CPUs the control thread may run on (empty = any)", True),
    "max_chunk_bytes": (_I, 65536, "action chunks larger than this (serialized) are rejected unread", True),
    "python_switch_interval": (_D, 0.0001, "sys.setswitchinterval for this process (s): how long a busy Python "
                               "thread can keep the control thread waiting for the GIL; 0 = leave as is", True),
}


@dataclass(frozen=True)
class ExecutorConfig:
    """All parameters of the node, validated."""

    joint_names: tuple[str, ...]
    rate_hz: float
    output: str
    latency_margin: float
    splice: str
    crossfade_duration: float
    ensemble_k: float
    interpolation: str
    execute_steps: int
    n_action_steps: int
    max_future: float
    max_age: float
    starvation_timeout: float
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_velocity: tuple[float, ...]
    max_acceleration: tuple[float, ...]
    gripper_joints: tuple[str, ...]
    gripper_binary: bool
    gripper_open: float
    gripper_closed: float
    start_enabled: bool
    limits_from_checkpoint: bool
    tail_rate_hz: float
    diagnostics_period: float
    spin_us: int
    realtime_priority: int
    executor_priority: int
    middleware_priority: int
    max_chunk_bytes: int
    cpu_affinity: tuple[int, ...]
    python_switch_interval: float

    @classmethod
    def from_values(cls, values: dict[str, object]) -> ExecutorConfig:
        """Build and validate; raises ValueError with the reason."""
        kw = {}
        for name, (ptype, _, _, _) in PARAMETERS.items():
            v = values[name]
            if ptype in (_SA, _DA, _IA):
                v = tuple(v)
            kw[name] = v
        cfg = cls(**kw)
        cfg.scheduler_config()  # validates names, splice, interpolation, times
        cfg.limits()  # validates limits and gripper names
        if not (math.isfinite(cfg.rate_hz) and 1.0 <= cfg.rate_hz <= 10000.0):
            raise ValueError(f"rate_hz {cfg.rate_hz} must be in [1, 10000]")
        if cfg.output not in OUTPUTS:
            raise ValueError(f"output {cfg.output!r} not in {OUTPUTS}")
        if not (math.isfinite(cfg.tail_rate_hz) and 0 <= cfg.tail_rate_hz <= cfg.rate_hz):
            raise ValueError("tail_rate_hz must be in [0, rate_hz]")
        if not cfg.diagnostics_period > 0:
            raise ValueError("diagnostics_period must be > 0")
        if cfg.spin_us < 0 or cfg.spin_us * 1000 > 1e9 / cfg.rate_hz:
            raise ValueError("spin_us must be >= 0 and shorter than the period")
        if not 0 <= cfg.realtime_priority <= 99:
            raise ValueError("realtime_priority must be in [0, 99]")
        for name in ("executor_priority", "middleware_priority"):
            prio = getattr(cfg, name)
            if not -1 <= prio <= 99:
                raise ValueError(f"{name} must be in [-1, 99]")
            if prio > 0 and prio >= cfg.realtime_priority:
                raise ValueError(f"{name} must be below realtime_priority (the control thread comes first)")
        if cfg.max_chunk_bytes < 1024:
            raise ValueError("max_chunk_bytes must be >= 1024")
        if not cfg.python_switch_interval >= 0:
            raise ValueError("python_switch_interval must be >= 0")
        return cfg

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


def _coerce(ptype: Parameter.Type, value: object) -> object:
    """Parameter files often say 500 for 500.0 and [1, 2] for [1.0, 2.0]: accept integers for
    floating-point parameters; anything else is left for Parameter() to type-check."""
    def num(x: object) -> object:
        return float(x) if isinstance(x, int) and not isinstance(x, bool) else x

    if ptype == _D:
        return num(value)
    if ptype in (_DA, _IA, _SA) and value is not None and not isinstance(value, str):
        items = list(value)
        return [num(x) for x in items] if ptype == _DA else items
    return value


def _sleep_until(deadline_ns: int, spin_ns: int) -> None:
    """Sleep to an absolute monotonic deadline; the last ``spin_ns`` are busy-waited, because
    waking from sleep costs tens to hundreds of microseconds of scheduler latency."""
    remaining = deadline_ns - time.monotonic_ns()
    if remaining > spin_ns:
        time.sleep((remaining - spin_ns) * 1e-9)
    while time.monotonic_ns() < deadline_ns:
        pass


class ExecutorNode(Node):
    """Receding-horizon executor (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._setup()
        except Exception:
            super().destroy_node()  # a bad configuration leaves nothing running
            raise

    def _setup(self) -> None:
        overrides = getattr(self, "_parameter_overrides", {})  # rclpy: name -> Parameter
        for name, (ptype, default, text, read_only) in PARAMETERS.items():
            given = overrides[name].value if name in overrides else None  # [] in a YAML file gives None
            value = default if given is None else _coerce(ptype, given)
            if isinstance(value, list) and not value:
                # An empty list has no element type: declare by type, then set the typed empty
                # list (read-only ones are enforced in _validate_parameters).
                self.declare_parameter(name, ptype, ParameterDescriptor(description=text), ignore_override=True)
                self.set_parameters([Parameter(name, ptype, [])])
            else:
                try:
                    typed = Parameter(name, ptype, value).value
                except (TypeError, ValueError):
                    raise ValueError(f"parameter {name}: expected {ptype.name}, got {value!r}") from None
                self.declare_parameter(name, typed, ParameterDescriptor(description=text, read_only=read_only),
                                       ignore_override=True)
        self._cfg = ExecutorConfig.from_values(self._values())
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        cfg = self._cfg
        if cfg.python_switch_interval > 0 and sys.getswitchinterval() > cfg.python_switch_interval:
            # Default 5 ms: a woken control thread could wait that long for the GIL.
            sys.setswitchinterval(cfg.python_switch_interval)

        self._system_clock = not self.get_parameter("use_sim_time").value
        self._spec: ActionSpec | None = None  # action spec of the announced checkpoint
        self._scheduler = ChunkScheduler(cfg.scheduler_config(), cfg.limits())
        self._lock = threading.Lock()  # guards the fields below shared with the control thread
        self._enabled = False
        self._auto_enabled = False
        self._measured: np.ndarray | None = None  # (A,) latest /joint_states in joint_names order
        self._last_published: np.ndarray | None = None  # for ee_delta
        self._published_version = -1
        self._rejections = 0
        self._rejections_reported = 0
        self._last_rejection = ""
        self._ignored_disabled = 0
        self._chunk_dt_ns = 0
        # Controller presence: with no subscriber on the output topic nothing is streamed, and
        # streaming resumes from the measured position (no jump to where the plan went meanwhile).
        self._controller_lost = False
        self._js_ok_t: float | None = None  # monotonic time of the last usable /joint_states
        self._js_names: object = None  # the last /joint_states name list, and where joint_names are in it
        self._js_index: list[int] | None = None
        self._js_problem = ""  # why the last unusable /joint_states was ignored
        # Timing, written by the control thread only.
        self._periods = np.zeros(TIMING_WINDOW, dtype=np.int64)  # period error, ns
        self._n_periods = 0
        self._missed = 0
        self._missed_reported = 0
        self._ticks = 0  # commands computed
        self._wakes = 0  # control-loop wake-ups (one per deadline not skipped)
        self._thread_note = ""
        self._executor_note = "as the spinning executor runs it"  # set by setup_executor_thread()
        self._middleware_note = "as started"  # set by setup_middleware_threads()

        reliable1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        reliable10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        out_type = JointTrajectory if cfg.output == "joint_trajectory" else Float64MultiArray
        # Every delta matters (a lost one is a position error): a deeper queue for ee_delta.
        depth = 100 if cfg.output == "ee_delta" else 10
        out_qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self._out_pub = self.create_publisher(out_type, OUTPUT_TOPICS[cfg.output], out_qos)
        self._tail_pub = self.create_publisher(JointTrajectory, "/l1flow/executor/tail", reliable1)
        self._diag = Diagnostics(self, NODE_NAME, hardware_id="")
        # Raw: the size is checked before the message is deserialized (one C call that holds the
        # GIL for as long as the message is big: 5 ms for 1000 points of 100 joints).
        self.create_subscription(JointTrajectory, "/l1flow/action_chunk", self._on_chunk, reliable1, raw=True)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, reliable10)
        self.create_service(SetBool, "/l1flow/executor/enable", self._on_enable)
        if cfg.limits_from_checkpoint:
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.create_subscription(String, "/l1flow/checkpoint", self._on_checkpoint, latched)
        self._checkpoint_error = ""
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        # The tail is for inference, not for the arm: published from the node's executor, off
        # the control thread (building the message costs more than a whole control tick).
        self._tail_timer = self.create_timer(1.0 / cfg.tail_rate_hz if cfg.tail_rate_hz > 0 else 1.0,
                                             self._on_tail_timer)
        self.create_timer(CONTROLLER_CHECK_S, self._check_controller)

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._control_loop, name="l1flow_executor", daemon=True)
        # A context shut down from elsewhere destroys this node first (close() joins the
        # thread); the hook is the backstop for a context that goes without that.
        self.context.on_shutdown(self.close)
        self._thread.start()

    # -- parameters --------------------------------------------------------------------------------

    def _values(self, changes: list[Parameter] = ()) -> dict[str, object]:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        for p in changes:
            values[p.name] = p.value
        return values

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if PARAMETERS.get(p.name, (None, None, None, False))[3]:
                return SetParametersResult(successful=False, reason=f"{p.name} is read-only at runtime")
        try:
            ExecutorConfig.from_values(self._values(params))
        except (ValueError, TypeError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        if not hasattr(self, "_scheduler"):
            return  # declarations during __init__
        self._cfg = ExecutorConfig.from_values(self._values())
        try:
            limits = self._cfg.limits(self._spec)
        except ValueError as e:  # the new config does not fit the checkpoint: config alone
            self._checkpoint_error = str(e)
            limits = self._cfg.limits()
        self._scheduler.configure(self._cfg.scheduler_config(), limits)

    def _on_checkpoint(self, msg: String) -> None:
        """Read the announced bundle's action limits (manifest only: the inference node has
        validated the bundle) and apply the tighter of them and the configured ones."""
        path = Path(msg.data) / "manifest.json"
        try:
            spec = ActionSpec.from_dict(json.loads(path.read_text())["action"])
            limits = self._cfg.limits(spec)
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._checkpoint_error = f"checkpoint {msg.data}: limits not applied: {e}"
            self.get_logger().error(self._checkpoint_error)
            return
        self._spec, self._checkpoint_error = spec, ""
        self._scheduler.configure(self._cfg.scheduler_config(), limits)
        self.get_logger().info(f"limits of checkpoint {msg.data} applied (tighter of checkpoint and config)")

    @property
    def config(self) -> ExecutorConfig:
        return self._cfg

    # -- inputs ------------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        # ROS time is the system clock unless simulated time is in use; time.time_ns() reads the
        # same clock without a call into rcl that hands the GIL to another thread mid-tick.
        if self._system_clock:
            return time.time_ns()
        return self.get_clock().now().nanoseconds

    def _reject(self, reason: str) -> None:
        with self._lock:
            self._rejections += 1
            self._last_rejection = reason
        self.get_logger().warning(f"rejected action chunk: {reason}", throttle_duration_sec=1.0)

    def _on_chunk(self, data: bytes) -> None:
        """A serialized JointTrajectory. Everything but the splice's commit runs unlocked:
        the size check, deserialization, conversion and plan building (the scheduler builds
        the plan outside its lock and only installs it under the lock)."""
        now = self._now_ns()
        if not self._enabled:
            self._ignored_disabled += 1
            return
        if len(data) > self._cfg.max_chunk_bytes:
            self._reject(f"too large: {len(data)} bytes serialized (max_chunk_bytes {self._cfg.max_chunk_bytes})")
            return
        try:
            msg = deserialize_message(data, JointTrajectory)
            chunk = chunk_from_msg(msg, expected_names=self._cfg.joint_names)
        except MessageError as e:
            self._reject(f"malformed: {e}")
            return
        except Exception as e:  # a conversion bug must not kill the executor
            self._reject(f"malformed: unexpected {type(e).__name__}: {e}")
            return
        try:
            self._scheduler.add_chunk(chunk, now)
        except ChunkRejected as e:
            self._reject(str(e))
            return
        self._chunk_dt_ns = int(round(chunk.dt * 1e9))

    def _on_joint_state(self, msg: JointState) -> None:
        # At the arm's rate (up to 1 kHz): the name lookup is redone only when the names change.
        names = self._cfg.joint_names
        if len(msg.position) != len(msg.name):
            self._js_problem = f"/joint_states has {len(msg.position)} positions for {len(msg.name)} names"
            return
        if msg.name != self._js_names:
            index = {n: i for i, n in enumerate(msg.name)}
            missing = [n for n in names if n not in index]
            if missing:
                self._js_problem = f"/joint_states lacks {missing} (has {list(msg.name)[:8]})"
                return
            self._js_names, self._js_index = list(msg.name), [index[n] for n in names]
        pos = msg.position
        q = np.array([pos[i] for i in self._js_index], dtype=np.float64)
        if not np.all(np.isfinite(q)):
            self._js_problem = "/joint_states has NaN or inf positions"
            return
        with self._lock:
            self._measured = q
            self._js_ok_t = time.monotonic()
        if self._cfg.start_enabled and not self._auto_enabled:
            self._auto_enabled = True
            self._enable(True)

    def _enable(self, on: bool) -> tuple[bool, str]:
        with self._lock:
            if not on:
                was = self._enabled
                self._enabled = False
                return True, "disabled" if was else "already disabled"
            if self._enabled:
                return True, "already enabled"
            if self._measured is None:
                return False, f"no /joint_states with all of {list(self._cfg.joint_names)} yet"
            # Start from the measured position, at rest: no jump when the policy takes over.
            self._scheduler.reset(self._measured, self._now_ns())
            self._last_published = self._measured.copy()
            self._published_version = -1
            self._enabled = True
        self.get_logger().info("enabled: streaming from the measured position")
        return True, "enabled"

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success, response.message = self._enable(bool(request.data))
        return response

    # -- control thread --------------------------------------------------------------------------

    def _setup_thread(self) -> None:
        notes = []
        cfg = self._cfg
        if cfg.cpu_affinity:
            try:
                os.sched_setaffinity(0, set(cfg.cpu_affinity))  # 0 = this thread on Linux
                notes.append(f"affinity {sorted(cfg.cpu_affinity)}")
            except (OSError, AttributeError, ValueError) as e:
                notes.append(f"affinity not set ({e})")
        if cfg.realtime_priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(cfg.realtime_priority))
                notes.append(f"SCHED_FIFO {cfg.realtime_priority}")
            except (OSError, AttributeError) as e:
                notes.append(f"SCHED_FIFO not permitted ({e}); normal scheduling")
        self._thread_note = ", ".join(notes) or "normal scheduling"
        if notes:
            refused = "not set" in self._thread_note or "not permitted" in self._thread_note
            log = self.get_logger().warning if refused else self.get_logger().info
            log(f"control thread: {self._thread_note}")

    def setup_executor_thread(self) -> str:
        """Schedule the calling thread, the one that runs this node's callbacks, at
        ``executor_priority`` (main() calls it; a composition may). Returns what was set.

        That thread holds the GIL whenever a callback runs. At normal priority on a busy
        machine it is preempted while holding it, and the control thread, woken on time,
        waits for the rest of the other process's time slice (1-4 ms: missed ticks); one
        SCHED_FIFO step below the control thread it runs its callback to the end first.
        """
        prio = self._cfg.executor_thread_priority
        note = "normal scheduling"
        if prio > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
                note = f"SCHED_FIFO {prio}"
            except (OSError, AttributeError) as e:
                note = f"SCHED_FIFO not permitted ({e}); normal scheduling"
            (self.get_logger().info if prio and note.startswith("SCHED_FIFO ") and "not" not in note
             else self.get_logger().warning)(f"executor thread: {note}")
        self._executor_note = note
        return note

    def setup_middleware_threads(self) -> str:
        """Schedule the middleware's own threads (Fast DDS names them ``dds.*``: reception,
        events, shared-memory watchdog, ...) at ``middleware_priority``, by thread id (they
        exist once the node does). Process-wide: main() calls it. Returns what was set.

        A publish from the control thread takes the writer's locks, which these threads hold
        while they handle acknowledgements and discovery; rclpy keeps the GIL during the
        publish. At normal priority such a thread is preempted holding a lock, and every
        Python thread of the process waits (measured: publishes of 1-5 ms, ticks missed).
        Other middlewares' threads are not recognised and keep their scheduling.
        """
        prio = self._cfg.middleware_thread_priority
        if prio <= 0:
            self._middleware_note = "as started"
            return self._middleware_note
        done, refused = 0, ""
        try:
            tids = os.listdir("/proc/self/task")
        except OSError as e:
            tids, refused = [], str(e)
        for tid in tids:
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    if not f.read().startswith("dds."):
                        continue
                os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(prio))
                done += 1
            except (OSError, ValueError, AttributeError) as e:  # gone meanwhile, or not permitted
                refused = str(e)
        if done:
            note = f"SCHED_FIFO {prio} ({done} dds.* threads)"
        elif refused:
            note = f"SCHED_FIFO not permitted ({refused}); as started"
        else:
            note = "no dds.* threads (not Fast DDS): as started"
        (self.get_logger().info if done else self.get_logger().warning)(f"middleware threads: {note}")
        self._middleware_note = note
        return note

    def _control_loop(self) -> None:
        self._setup_thread()
        period = int(round(1e9 / self._cfg.rate_hz))
        next_t = time.monotonic_ns() + period
        last_wake = 0
        while not self._stop.is_set():
            _sleep_until(next_t, self._cfg.spin_us * 1000)
            wake = time.monotonic_ns()
            self._wakes += 1
            if last_wake:
                self._periods[self._n_periods % TIMING_WINDOW] = wake - last_wake - period
                self._n_periods += 1
            last_wake = wake
            late = wake - next_t
            if late >= period:  # skip the deadlines we slept through; never burst to catch up
                skipped = late // period
                self._missed += int(skipped)
                next_t += skipped * period
            try:
                self._tick()
            except Exception as e:  # keep streaming; the reason goes to the log
                if self._stop.is_set() or not self.context.ok():
                    break  # shut down under us (e.g. rclpy's own signal handler): stop quietly
                self.get_logger().error(f"control tick failed: {type(e).__name__}: {e}",
                                        throttle_duration_sec=1.0)
            next_t += period

    def _check_controller(self) -> None:
        """No subscriber on the output topic: stop streaming; one again: restart from the
        measured position, as enabling does (the plan may have moved on meanwhile)."""
        n = self._out_pub.get_subscription_count()
        with self._lock:
            if n == 0 and not self._controller_lost:
                self._controller_lost = True
                lost = True
            elif n > 0 and self._controller_lost:
                if self._enabled and self._measured is not None:
                    self._scheduler.reset(self._measured, self._now_ns())
                    self._last_published = self._measured.copy()
                    self._published_version = -1
                self._controller_lost = False  # after the reset: the control thread reads it unlocked
                lost = False
            else:
                return
        topic = OUTPUT_TOPICS[self._cfg.output]
        if lost:
            self.get_logger().warning(f"no subscriber on {topic}: not streaming until a controller subscribes")
        else:
            self.get_logger().info(f"{topic} has a subscriber: streaming from the measured position")

    def _tick(self) -> None:
        if not self._enabled or not self._scheduler.ready or self._controller_lost:
            return
        now = self._now_ns()
        p, v, mode = self._scheduler.command(now)
        self._ticks += 1
        if not self._enabled:  # disabled while computing: publish nothing
            return
        out = self._cfg.output
        if out == "forward_position":
            self._out_pub.publish(Float64MultiArray(data=p.tolist()))
        elif out == "ee_delta":
            last = self._last_published if self._last_published is not None else p
            delta = p - last
            grip = self._scheduler.limits.gripper_indices
            delta[list(grip)] = p[list(grip)]  # grippers stay absolute
            self._last_published = p
            self._out_pub.publish(Float64MultiArray(data=delta.tolist()))
        else:
            version = self._scheduler.plan_version
            if version != self._published_version:
                self._published_version = version
                self._out_pub.publish(self._trajectory_msg(now, mode))

    def _trajectory_msg(self, now: int, mode: Mode) -> JointTrajectory:
        """The plan from ``now`` to its end, sampled at the chunk dt, for a JTC."""
        end = self._scheduler.plan_end_ns
        step = self._chunk_dt_ns or int(1e8)
        times = list(range(now + step, end, step)) + [max(end, now + 1)]
        p, v = self._scheduler.sample(np.array(times, dtype=np.int64))
        msg = JointTrajectory()
        msg.header.stamp = ns_to_stamp(now)
        msg.joint_names = list(self._cfg.joint_names)
        for k, t in enumerate(times):
            pt = JointTrajectoryPoint()
            pt.positions = p[k].tolist()
            pt.velocities = v[k].tolist()
            pt.time_from_start = ns_to_duration(t - now)
            msg.points.append(pt)
        return msg

    def _on_tail_timer(self) -> None:
        if self._enabled and self._cfg.tail_rate_hz > 0 and self._scheduler.ready:
            self._publish_tail(self._now_ns())

    def _publish_tail(self, now: int) -> None:
        times, actions = self._scheduler.tail(now)
        if times.size == 0:
            return
        msg = JointTrajectory()
        msg.header.stamp = ns_to_stamp(now)
        msg.header.frame_id = ""
        msg.joint_names = list(self._cfg.joint_names)
        for t, a in zip(times.tolist(), actions):
            pt = JointTrajectoryPoint()
            pt.positions = a.tolist()
            pt.time_from_start = ns_to_duration(t - now)
            msg.points.append(pt)
        self._tail_pub.publish(msg)

    # -- diagnostics -----------------------------------------------------------------------------

    def period_errors_ns(self) -> np.ndarray:
        """(N,) signed period errors (actual - nominal, ns) of the last N <= TIMING_WINDOW periods."""
        n = min(self._n_periods, TIMING_WINDOW)
        if self._n_periods <= TIMING_WINDOW:
            return self._periods[:n].copy()
        i = self._n_periods % TIMING_WINDOW
        return np.concatenate([self._periods[i:], self._periods[:i]])

    def reset_timing(self) -> None:
        """Start the timing statistics afresh (benchmarks)."""
        self._n_periods = 0
        self._missed = self._missed_reported = 0

    def timing_stats(self) -> dict[str, float]:
        """Period error (|actual - nominal|) p50 / p99 / max in microseconds over the last
        TIMING_WINDOW periods, and the missed-tick count."""
        n = min(self._n_periods, TIMING_WINDOW)
        # One partition (nearest rank), not two interpolated percentiles: this runs on the
        # executor thread and holds the GIL the control thread may be waiting for.
        err = np.abs(self._periods[:n]) if n else np.zeros(1, dtype=np.int64)
        k50, k99 = (err.size - 1) // 2, (99 * (err.size - 1)) // 100
        err.partition((k50, k99))
        return {
            "periods": float(n),
            "period_error_p50_us": float(err[k50]) * 1e-3,
            "period_error_p99_us": float(err[k99]) * 1e-3,
            "period_error_max_us": float(err[k99:].max()) * 1e-3,
            "missed_ticks": float(self._missed),
            "deadlines": float(self._wakes + self._missed),  # wake-ups + skipped deadlines
        }

    def _publish_diagnostics(self) -> None:
        st = self._scheduler.stats()
        timing = self.timing_stats()
        now = self._now_ns()
        with self._lock:
            new_rejections = self._rejections - self._rejections_reported
            self._rejections_reported = self._rejections
            rejections, last_rejection, enabled = self._rejections, self._last_rejection, self._enabled
            measured = self._measured is not None
            controller_lost, js_ok_t = self._controller_lost, self._js_ok_t
        new_missed = self._missed - self._missed_reported
        self._missed_reported = self._missed
        # Every problem of this period, the worst first, then the state.
        problems: list[tuple[int, str]] = []
        if new_rejections:
            problems.append((2, f"rejected {new_rejections} chunk(s): {last_rejection}"))
        if self._checkpoint_error:
            problems.append((2, self._checkpoint_error))
        if controller_lost:
            problems.append((2 if enabled else 1, f"no subscriber on {OUTPUT_TOPICS[self._cfg.output]}: "
                             "not streaming; restarts from /joint_states when a controller subscribes"))
        if not measured:
            problems.append((1, "no /joint_states for the configured joint_names"))
        elif js_ok_t is not None and time.monotonic() - js_ok_t > JOINT_STATES_TIMEOUT_S:
            why = f" ({self._js_problem})" if self._js_problem else ""
            problems.append((1, f"no usable /joint_states for {time.monotonic() - js_ok_t:.1f} s{why}"))
        if new_missed:
            problems.append((1, f"{new_missed} control ticks missed"))
        if not enabled:
            problems.append((0, "disabled"))
        elif st.mode == Mode.STARVED:
            problems.append((1, "starved: holding position, no fresh chunk"))
        elif not problems:
            problems.append((0, "streaming"))
        problems.sort(key=lambda x: -x[0])  # stable: the order above within a level
        level = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)[problems[0][0]]
        message = "; ".join(text for _, text in problems)
        age = (now - st.chunk_t_obs_ns) * 1e-6 if st.chunk_t_obs_ns is not None else float("nan")
        values = {
            "enabled": enabled,
            "mode": st.mode.value,
            "output": self._cfg.output,
            "rate_hz": self._cfg.rate_hz,
            "period_error_p50_us": round(timing["period_error_p50_us"], 1),
            "period_error_p99_us": round(timing["period_error_p99_us"], 1),
            "period_error_max_us": round(timing["period_error_max_us"], 1),
            "missed_ticks": self._missed,
            "deadlines": int(timing["deadlines"]),
            "starvation_events": st.starvation_events,
            "chunk_age_ms": round(age, 1),
            "chunks_accepted": st.accepted,
            "chunks_rejected": rejections,
            "last_rejection": last_rejection,
            "dropped_stale_actions": st.dropped_stale_actions,
            "limited_ticks": st.limited_ticks,
            "replan_due": self._scheduler.replan_due(now) if self._scheduler.ready else True,
            "control_thread": self._thread_note,
            "executor_thread": self._executor_note,
            "middleware_threads": self._middleware_note,
        }
        self._diag.publish(level, message, values, stamp_ns=now)

    # -- shutdown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the control thread (idempotent; safe after a failed __init__)."""
        stop, thread = getattr(self, "_stop", None), getattr(self, "_thread", None)
        if stop is not None:
            stop.set()
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout=2.0)

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _take_stop_signals() -> int:
    """SIGINT / SIGTERM no longer raise or kill: each writes its number to the returned pipe
    (whichever thread the kernel delivers it to), for a thread to read."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: None)  # the work is done by the thread reading the pipe
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    return read_fd


def main(args: list[str] | None = None) -> None:
    """Console script: this thread runs the callbacks, a second one the control loop, a third
    one (blocked on a pipe) takes SIGINT / SIGTERM. See the module docstring."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    # Not rclpy's signal handler: it shuts the context down at once, under the running control
    # thread. The first stop signal stops the control thread (joined), then the executor, then
    # the context; a second one while stopping (a terminal's Ctrl-C plus launch's SIGINT) is
    # ignored: the exit code is 0 either way.
    own_signals = threading.current_thread() is threading.main_thread()
    signal_fd = _take_stop_signals() if own_signals else -1
    gc.collect()  # a full collection of this process costs ~15 ms: now, before the control thread
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO if own_signals else None):
            node = ExecutorNode()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            stop = threading.Event()

            def on_stop_signal() -> None:
                while os.read(signal_fd, 1)[0] not in STOP_SIGNALS:
                    pass
                node.close()  # the control thread first: it never publishes on a dead context
                stop.set()
                try:
                    executor.wake()
                except Exception:  # the executor is already gone
                    pass

            if own_signals:
                threading.Thread(target=on_stop_signal, name="l1flow_executor_signals", daemon=True).start()
            # Everything alive now (modules, the node) stays: later full collections only look
            # at what came after, and cost microseconds instead of the ~15 ms above.
            gc.freeze()
            node.setup_middleware_threads()
            node.setup_executor_thread()  # after the other threads exist: they keep their scheduling
            try:
                while not stop.is_set() and executor.context.ok():
                    executor.spin_once()
            finally:
                node.close()
                executor.shutdown(timeout_sec=1.0)
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if own_signals:  # the interpreter's exit resets Python handlers to the default (die), not SIG_IGN
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
