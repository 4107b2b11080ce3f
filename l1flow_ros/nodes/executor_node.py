"""executor_node: streams the policy's action chunks to the arm controller at control rate.

Subscribes ``/l1flow/action_chunk`` (JointTrajectory, taken serialized and rejected unread
above ``max_chunk_bytes``: deserializing 1000 points of 100 joints holds the GIL 5 ms) and
``/joint_states``. Each tick of the control thread (absolute deadlines at ``rate_hz``) is
published on the ``output`` interface (topics in ``OUTPUT_TOPICS``): ``forward_position``
(Float64MultiArray of absolute targets, action order, every tick), ``joint_trajectory``
(JointTrajectory of the plan at the chunk's dt, once per plan; header.stamp = its start) or
``ee_delta`` (Float64MultiArray of per-tick displacements, grippers absolute).
``/l1flow/executor/enable`` (std_srvs/SetBool) hands the arm between teleop and the policy;
``/l1flow/executor/tail`` carries the running plan from 0.3 s back (the prefix a new chunk
keeps, or its warm start; point k due at header.stamp + time_from_start); ``/l1flow/checkpoint``
tightens the limits (``limits_from_checkpoint``); ``/diagnostics`` reports timing, starvation,
chunk age, rejections and how each thread is scheduled.

The engine is ROS-free, in :mod:`l1flow_ros.control` (``config``, ``stream``, ``scheduler``,
``loop``, ``status``); how ``main()``'s three threads (callbacks, control loop, stop signals)
are scheduled and stopped, and why, is :mod:`l1flow_ros.control.realtime`'s docstring.
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from l1flow_ros.control import realtime
from l1flow_ros.control.config import ExecutorConfig
from l1flow_ros.control.loop import ControlLoop
from l1flow_ros.control.scheduler import ChunkRejected, ChunkScheduler
from l1flow_ros.control.status import JointPicker, summary
from l1flow_ros.control.stream import CommandStream, boundary_line
from l1flow_ros.msgs.chunk_conv import MessageError, chunk_from_msg, points_to_msg
from l1flow_ros.nodes import qos
from l1flow_ros.nodes.diagnostics import Diagnostics
from l1flow_ros.nodes.params import LiveParameters, declare, refuse_bad_parameters
from l1flow_ros.policy.manifest import BundleError, read_manifest
from l1flow_ros.spec import ActionSpec

NODE_NAME = "executor_node"
TAIL_HISTORY_NS = 300_000_000  # the tail starts this long before now (the running plan's recent past)
OUTPUT_TOPICS = {
    "forward_position": "/forward_position_controller/commands",
    "joint_trajectory": "/arm_controller/joint_trajectory",
    "ee_delta": "/ee_delta_controller/commands",
}
CONTROLLER_CHECK_S = 0.05  # how often the output topic's subscriber count is checked
JOINT_STATES_TIMEOUT_S = 1.0  # /joint_states older than this is reported on /diagnostics
LEVELS = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)


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
        self.cfg: ExecutorConfig = declare(self, ExecutorConfig)
        self._live = LiveParameters(self, self._on_config)
        cfg = self.cfg
        realtime.set_switch_interval(cfg.python_switch_interval)
        self._system_clock = not self.get_parameter("use_sim_time").value
        self._spec: ActionSpec | None = None  # action spec of the announced checkpoint
        self._checkpoint_error = ""
        self._scheduler = ChunkScheduler(cfg.scheduler_config(), cfg.limits())
        self._stream = CommandStream(self._scheduler, cfg.output)  # enable, measured, controller, ticks
        self._stream.fingerprints = frozenset(f for f in cfg.accept_fingerprints if f)
        self._joints = JointPicker(cfg.joint_names)  # /joint_states -> (A,) in joint_names order
        self._auto_enabled = False
        self._ignored_disabled = 0
        self._tail_sent = False  # the last tail published had points
        self._missed_reported = 0
        self._thread_note = ""
        self._executor_note = "as the spinning executor runs it"  # set by setup_executor_thread()
        self._middleware_note = "as started"  # set by setup_middleware_threads()

        out_type = JointTrajectory if cfg.output == "joint_trajectory" else Float64MultiArray
        out_qos = qos.RELIABLE_10
        if cfg.output == "ee_delta":  # every delta matters (a lost one is a position error)
            out_qos = QoSProfile(depth=100, reliability=out_qos.reliability, history=out_qos.history)
        self._out_pub = self.create_publisher(out_type, OUTPUT_TOPICS[cfg.output], out_qos)
        self._tail_pub = self.create_publisher(JointTrajectory, "/l1flow/executor/tail", qos.RELIABLE_1)
        self._diag = Diagnostics(self, NODE_NAME, hardware_id="")
        # Raw: the size is checked before the message is deserialized.
        self.create_subscription(JointTrajectory, "/l1flow/action_chunk", self._on_chunk, qos.RELIABLE_1, raw=True)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, qos.RELIABLE_10)
        self.create_service(SetBool, "/l1flow/executor/enable", self._on_enable)
        if cfg.limits_from_checkpoint:
            self.create_subscription(String, "/l1flow/checkpoint", self._on_checkpoint, qos.LATCHED)
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        # The tail is for inference, not for the arm: published from the node's executor, off
        # the control thread (building the message costs more than a whole control tick).
        self.create_timer(1.0 / cfg.tail_rate_hz if cfg.tail_rate_hz > 0 else 1.0, self._on_tail_timer)
        self.create_timer(CONTROLLER_CHECK_S, self._check_controller)

        self._loop = ControlLoop(cfg.period_ns, self._tick, spin_us=cfg.spin_us, setup=self._setup_thread,
                                 on_error=self._on_tick_error, name="l1flow_executor")
        # A context shut down from elsewhere destroys this node first (close() joins the
        # thread); the hook is the backstop for a context that goes without that.
        self.context.on_shutdown(self.close)
        self._loop.start()

    # -- configuration -----------------------------------------------------------------------------

    def _on_config(self, old: ExecutorConfig, new: ExecutorConfig) -> None:
        self._loop.spin_us = new.spin_us
        self._stream.fingerprints = frozenset(f for f in new.accept_fingerprints if f)
        try:
            limits = new.limits(self._spec)
        except ValueError as e:  # the new config does not fit the checkpoint: config alone
            self._checkpoint_error, limits = str(e), new.limits()
        self._scheduler.configure(new.scheduler_config(), limits)

    def _on_checkpoint(self, msg: String) -> None:
        """Apply the tighter of the announced bundle's action limits and the configured ones
        (manifest only, no weights: the inference node has validated the bundle)."""
        try:
            spec = read_manifest(msg.data, check_weights=False).action
            limits = self.cfg.limits(spec)
        except (BundleError, OSError, ValueError, KeyError, TypeError) as e:
            self._checkpoint_error = f"checkpoint {msg.data}: limits not applied: {e}"
            self.get_logger().error(self._checkpoint_error)
            return
        self._spec, self._checkpoint_error = spec, ""
        self._scheduler.configure(self.cfg.scheduler_config(), limits)
        self.get_logger().info(f"limits of checkpoint {msg.data} applied (tighter of checkpoint and config)")

    # -- inputs ------------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        # ROS time is the system clock unless simulated time is in use; time.time_ns() reads the
        # same clock without a call into rcl that hands the GIL to another thread mid-tick.
        return time.time_ns() if self._system_clock else self.get_clock().now().nanoseconds

    def _reject(self, reason: str) -> None:
        self._stream.reject(reason)
        self.get_logger().warning(f"rejected action chunk: {reason}", throttle_duration_sec=1.0)

    def _on_chunk(self, data: bytes) -> None:
        """A serialized JointTrajectory. Everything but the splice's commit runs unlocked (the
        scheduler builds the plan outside its lock and only installs it under the lock)."""
        now = self._now_ns()
        if not self._stream.enabled:
            self._ignored_disabled += 1
            return
        if len(data) > self.cfg.max_chunk_bytes:
            self._reject(f"too large: {len(data)} bytes serialized (max_chunk_bytes {self.cfg.max_chunk_bytes})")
            return
        try:
            chunk = chunk_from_msg(deserialize_message(data, JointTrajectory), expected_names=self.cfg.joint_names)
        except MessageError as e:
            self._reject(f"malformed: {e}")
            return
        except Exception as e:  # a conversion bug must not kill the executor
            self._reject(f"malformed: unexpected {type(e).__name__}: {e}")
            return
        try:
            self._stream.add_chunk(chunk, now)
        except ChunkRejected as e:
            self._reject(str(e))
            return
        if self.cfg.log_boundaries:
            self.get_logger().info(boundary_line(self._stream.events()[-1]))

    def _on_joint_state(self, msg: JointState) -> None:
        q = self._joints.pick(msg.name, msg.position)
        if q is None:
            return
        self._stream.set_measured(q, time.monotonic())
        if self.cfg.start_enabled and not self._auto_enabled:
            self._auto_enabled = True
            self._enable(True)

    def _enable(self, on: bool) -> tuple[bool, str]:
        done, what = self._stream.enable(on, self._now_ns())
        if what == "enabled":
            self.get_logger().info("enabled: streaming from the measured position")
        return done, what

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success, response.message = self._enable(bool(request.data))
        return response

    def _check_controller(self) -> None:
        """No subscriber on the output topic: stop streaming; one again: restart from the
        measured position, as enabling does (the plan may have moved on meanwhile)."""
        n = self._out_pub.get_subscription_count()
        if n and self.cfg.controller_ignore_nodes:  # a recorder is not a controller
            n = sum(i.node_name not in self.cfg.controller_ignore_nodes
                    for i in self.get_subscriptions_info_by_topic(OUTPUT_TOPICS[self.cfg.output]))
        back = self._stream.controller_present(n > 0, self._now_ns())
        if back is None:
            return
        topic = OUTPUT_TOPICS[self.cfg.output]
        if not back:
            self.get_logger().warning(f"no subscriber on {topic}: not streaming until a controller subscribes")
        else:
            self.get_logger().info(f"{topic} has a subscriber: streaming from the measured position")

    # -- control thread ----------------------------------------------------------------------------

    def _scheduled(self, what: str, asked: bool, note: str, refused: bool) -> str:
        if asked:  # nothing asked, nothing to say
            (self.get_logger().warning if refused else self.get_logger().info)(f"{what}: {note}")
        return note

    def _setup_thread(self) -> None:
        self._thread_note = self._scheduled("control thread", self.cfg.realtime_priority > 0 or bool(
            self.cfg.cpu_affinity), *realtime.schedule_thread(self.cfg.realtime_priority, self.cfg.cpu_affinity))

    def _on_tick_error(self, e: Exception) -> bool:
        if not self.context.ok():
            return False  # shut down under us (e.g. rclpy's own signal handler): stop quietly
        self.get_logger().error(f"control tick failed: {type(e).__name__}: {e}", throttle_duration_sec=1.0)
        return True  # keep streaming; the reason goes to the log

    def _tick(self) -> None:
        now = self._now_ns()
        out = self._stream.tick(now)
        if out is None:
            return
        if isinstance(out, tuple):  # joint_trajectory: (times, p, v), the plan from now on
            self._out_pub.publish(points_to_msg(self.cfg.joint_names, now, *out))
        else:
            self._out_pub.publish(Float64MultiArray(data=out.tolist()))

    def _on_tail_timer(self) -> None:
        if self.cfg.tail_rate_hz <= 0 or not self._scheduler.ready:
            return
        now = self._now_ns()
        # From TAIL_HISTORY_NS back (a chunk keeps as prefix what executes while it is computed);
        # once the plan stopped (disabled, ran out), one empty tail says so: no prefix from it.
        times, actions = self._scheduler.tail(now - TAIL_HISTORY_NS if self._stream.enabled else 2**62)
        if times.size or self._tail_sent:
            self._tail_sent = bool(times.size)
            stamp = min(now, int(times[0])) if times.size else now  # time_from_start >= 0
            self._tail_pub.publish(points_to_msg(self.cfg.joint_names, stamp, times.tolist(), actions))

    # -- diagnostics -------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        st, timing, now = self._scheduler.stats(), self._loop.timing_stats(), self._now_ns()
        r, missed = self._stream.report(), int(timing["missed_ticks"])
        # Fewer than reported: the loop's statistics were reset (benchmarks); count afresh.
        new_missed = missed - self._missed_reported if missed >= self._missed_reported else missed
        self._missed_reported = missed
        level, message, values = summary(
            r, st, timing, now_ns=now, output=self.cfg.output, output_topic=OUTPUT_TOPICS[self.cfg.output],
            rate_hz=self.cfg.rate_hz, new_missed=new_missed, checkpoint_error=self._checkpoint_error,
            replan_due=self._scheduler.replan_due(now) if self._scheduler.ready else True,
            joint_states_problem=self._joints.problem, joint_states_timeout_s=JOINT_STATES_TIMEOUT_S,
            joint_states_age_s=None if r.joint_states_t is None else time.monotonic() - r.joint_states_t,
            control_thread=self._thread_note, executor_thread=self._executor_note,
            middleware_threads=self._middleware_note)
        self._diag.publish(LEVELS[level], message, values, stamp_ns=now)

    # -- threads and shutdown ----------------------------------------------------------------------

    def setup_executor_thread(self) -> str:
        """Schedule the calling thread, the one that runs this node's callbacks, at
        ``executor_priority`` (main() calls it; a composition may). Returns what was set."""
        prio = self.cfg.executor_thread_priority
        self._executor_note = self._scheduled("executor thread", prio > 0, *realtime.schedule_this_thread(prio))
        return self._executor_note

    def setup_middleware_threads(self) -> str:
        """Schedule the middleware's own threads (Fast DDS: ``dds.*``) at ``middleware_priority``.
        Process-wide: main() calls it. Returns what was set."""
        prio = self.cfg.middleware_thread_priority
        self._middleware_note = self._scheduled("middleware threads", prio > 0,
                                                *realtime.schedule_middleware_threads(prio))
        return self._middleware_note

    def close(self) -> None:
        """Stop the control thread (idempotent; safe after a failed __init__)."""
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.stop(timeout=2.0)

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script: this thread runs the callbacks, a second one the control loop, a third
    one (blocked on a pipe) takes SIGINT / SIGTERM. See the module docstring."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    # Not rclpy's signal handler: it would shut the context down under the running control
    # thread (see l1flow_ros.control.realtime). A second stop signal while stopping is ignored.
    own_signals = threading.current_thread() is threading.main_thread()
    signal_fd = realtime.stop_signals_to_pipe() if own_signals else -1
    realtime.collect_garbage()  # now, before the control thread
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO if own_signals else None):
            with refuse_bad_parameters():  # bad parameters: one line and exit code 2
                node = ExecutorNode()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            stop, done, wake_lock = threading.Event(), threading.Event(), threading.Lock()

            def on_stop_signal() -> None:
                node.close()  # the control thread first: it never publishes on a dead context
                stop.set()
                with wake_lock:  # never wake an executor being shut down: its guard condition goes
                    if not done.is_set() and executor.context.ok():
                        executor.wake()

            if own_signals:
                realtime.on_stop_signal(signal_fd, on_stop_signal, "l1flow_executor_signals")
            realtime.freeze_garbage()  # everything alive now (modules, the node) stays
            node.setup_middleware_threads()
            node.setup_executor_thread()  # after the other threads exist: they keep their scheduling
            try:
                while not stop.is_set() and executor.context.ok():
                    executor.spin_once()
            finally:
                with wake_lock:
                    done.set()
                node.close()
                executor.shutdown(timeout_sec=1.0)
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if own_signals:
            realtime.ignore_stop_signals()


if __name__ == "__main__":
    main()
