"""What the simulated arms' nodes share (``sim_robot_node``: Meta-World; ``panda_sim_node``:
the Panda): a :class:`l1flow_ros.sim.robot.SimRobot` given its threads and topics.

Per camera ``<cam>``: /<cam>/color/image_raw (rgb8), /<cam>/aligned_depth_to_color/image_raw
(32FC1 metres, 0 = no depth), /<cam>/color/camera_info, sensor-data QoS, stamped with the
time of the physics state they show; /joint_states; /sim/success (std_msgs/Bool, latched:
task solved in this episode); /diagnostics. Commands on /forward_position_controller/commands
(read off the executor: the executor node streams them at 500 Hz) and
/arm_controller/joint_trajectory; service /sim/reset (std_srvs/Trigger) starts a new episode
with the next seed.

Physics runs on its own thread with absolute deadlines; cameras are rendered from snapshots
of the physics state on a second thread, so slow CPU rendering never stalls physics (frames
are dropped instead, and counted).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from l1flow_ros.msgs.sensor_conv import camera_info_to_msg, image_to_msg
from l1flow_ros.msgs.stamps import split_ns, stamp_to_ns
from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import ERROR, ERROR_HOLD_S, OK, WARN, Diagnostics
from l1flow_ros.nodes.params import LiveParameters, declare
from l1flow_ros.nodes.qos import LATCHED, RELIABLE_10, SENSOR
from l1flow_ros.nodes.stream_reader import StreamReader
from l1flow_ros.perception.geometry import CameraIntrinsics
from l1flow_ros.sim.metaworld_env import SimError
from l1flow_ros.sim.robot import SimRobot, Tick
from l1flow_ros.sim.trajectory import TrajectoryError


class SimArmNode(Node):
    """A simulated arm with RGB-D cameras, position / trajectory commands and success
    reporting. A subclass names the node, its config class and its hardware, builds the
    robot (:meth:`_make_robot`) and adds its own interfaces (:meth:`_add_interfaces`) and
    per-tick messages (:meth:`_publish_tick`)."""

    NODE_NAME = ""
    CONFIG: type = object  # the node's config dataclass (declared as its parameters)
    HARDWARE = ""  # /diagnostics hardware_id prefix
    JOINT_NAMES: tuple[str, ...] = ()
    FOLLOW_DERIVATIVES = False  # trajectories: use the points' velocities and accelerations

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.NODE_NAME, **kwargs)
        # Bad start parameters raise (ParameterError): the node cannot exist without a valid task.
        self.cfg = declare(self, self.CONFIG)
        self.robot: SimRobot = self._make_robot()
        self.sim = self.robot.sim
        self._live = LiveParameters(self, self._on_config)
        # Setting the seed, even to the value it has, restarts the sequence of episode seeds:
        # that needs the request's names, which a change of config (old, new) does not show.
        self.add_post_set_parameters_callback(self._on_parameters_set)

        self._pub_js = self.create_publisher(JointState, "/joint_states", RELIABLE_10)
        self._pub_success = self.create_publisher(Bool, "/sim/success", LATCHED)
        self._diag = Diagnostics(self, self.NODE_NAME)
        self._cam_pubs = {}
        self._cam_info = {}
        h, w = self.cfg.image_height, self.cfg.image_width
        for cam in self.cfg.cameras:
            self._cam_pubs[cam] = (
                self.create_publisher(Image, f"/{cam}/color/image_raw", SENSOR),
                self.create_publisher(Image, f"/{cam}/aligned_depth_to_color/image_raw", SENSOR),
                self.create_publisher(CameraInfo, f"/{cam}/color/camera_info", SENSOR),
            )
            m = self.sim.camera_model(cam)
            self._cam_info[cam] = CameraIntrinsics(m.fx, m.fy, m.cx, m.cy, w, h)
        self._commands = StreamReader(self, "sim_commands")
        self._commands.subscribe(Float64MultiArray, "/forward_position_controller/commands",
                                 self._on_position_command, RELIABLE_10)
        self.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._on_trajectory, RELIABLE_10)
        self.create_service(Trigger, "/sim/reset", self._on_reset)
        self._add_interfaces()

        # Statistics for /diagnostics (written by the threads, read by the timer); the
        # physics and frame counters are the robot's.
        self._last_error = ""
        self._last_error_time = -1e9
        self._n_bad_commands = 0
        self._render_error = ""
        self._success_sent: bool | None = None

        self._stop = threading.Event()
        self._publish_success(False)
        self._physics = threading.Thread(target=self._physics_loop, name="sim_physics", daemon=True)
        self._render = threading.Thread(target=self._render_loop, name="sim_render", daemon=True)
        self._physics.start()
        self._commands.start()
        if self.cfg.cameras:
            self._render.start()
        self._diag_timer = self.create_timer(1.0 / self.cfg.diagnostics_rate_hz, self._publish_diagnostics)
        self.get_logger().info(
            f"{self.HARDWARE} {self.cfg.task}: seed {self.robot.seed}, cameras {list(self.cfg.cameras)} at "
            f"{self.cfg.camera_rate_hz} Hz, physics dt {self.sim.dt * 1e3:.1f} ms")

    # ------------------------------------------------------------------ what a subclass gives
    def _make_robot(self) -> SimRobot:
        raise NotImplementedError

    def _add_interfaces(self) -> None:
        """Publishers and subscriptions of this arm beyond the shared ones."""

    def _publish_tick(self, tick: Tick, js: JointState) -> None:
        """The per-physics-step messages: /joint_states (``js`` has the names)."""
        js.header.stamp.sec, js.header.stamp.nanosec = split_ns(tick.stamp_ns)
        js.position = tick.q.tolist()
        js.velocity = tick.qd.tolist()
        self._pub_js.publish(js)

    # ------------------------------------------------------------------ parameters
    def _on_config(self, old: Any, new: Any) -> None:
        self.robot.camera_rate_hz = new.camera_rate_hz  # the next frame is due at the new rate
        if new.diagnostics_rate_hz != old.diagnostics_rate_hz:
            self._diag_timer.timer_period_ns = round(1e9 / new.diagnostics_rate_hz)

    def _on_parameters_set(self, params) -> None:
        if any(p.name == "seed" for p in params):
            self.robot.next_reset_seed(self.cfg.seed)  # the next /sim/reset starts at the new seed

    # ------------------------------------------------------------------ commands
    def _reject(self, why: str) -> None:
        self._n_bad_commands += 1
        self._last_error = why
        self._last_error_time = time.monotonic()
        self.get_logger().warning(f"command rejected, arm holds: {why}", throttle_duration_sec=1.0)

    def _on_position_command(self, msg: Float64MultiArray) -> None:
        try:
            self.robot.set_target(msg.data)
        except SimError as e:
            self._reject(f"/forward_position_controller/commands: {e}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        start = stamp_to_ns(msg.header.stamp)
        tfs = [stamp_to_ns(p.time_from_start) for p in msg.points]
        derivatives = (([p.velocities for p in msg.points], [p.accelerations for p in msg.points])
                       if self.FOLLOW_DERIVATIVES else ())
        try:
            self.robot.follow(msg.joint_names, start, tfs, [p.positions for p in msg.points], *derivatives)
        except (TrajectoryError, ValueError) as e:
            self._reject(f"/arm_controller/joint_trajectory: {e}")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        episode, seed = self.robot.reset()
        self._publish_success(False)
        response.success = True
        response.message = f"episode {episode} seed {seed}"
        self.get_logger().info(f"reset: {response.message}")
        return response

    # ------------------------------------------------------------------ threads
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _physics_loop(self) -> None:
        js = JointState()
        js.name = list(self.JOINT_NAMES)

        def publish(tick: Tick) -> bool:
            try:
                self._publish_tick(tick, js)
                with self.robot.lock:
                    if tick.episode == self.robot.episode and tick.result.success != self._success_sent:
                        self._publish_success(tick.result.success)
                if tick.snapshot is not None:
                    self.robot.offer_frame(tick.stamp_ns, tick.snapshot)
            except Exception:  # context shut down under us: stop quietly
                if self._stop.is_set() or not self.context.ok():
                    return False
                raise
            return True

        self.robot.run(publish, self._stop)

    def _render_loop(self) -> None:
        try:
            self._render_frames()
        finally:
            self.sim.close_renderer()  # the GL context belongs to this thread

    def _render_frames(self) -> None:
        while (frame := self.robot.wait_frame(self._stop)) is not None:
            stamp, snap = frame
            rendered = False
            try:
                for cam, (rgb, depth) in self.robot.render(snap).items():
                    frame_id = f"{cam}_color_optical_frame"
                    pub_rgb, pub_depth, pub_info = self._cam_pubs[cam]
                    pub_rgb.publish(image_to_msg(rgb, "rgb8", stamp, frame_id))
                    pub_depth.publish(image_to_msg(depth, "32FC1", stamp, frame_id))
                    pub_info.publish(camera_info_to_msg(self._cam_info[cam], stamp, frame_id))
                rendered = True
            except Exception as e:  # a render failure is reported, physics goes on
                if self._stop.is_set() or not self.context.ok():
                    return
                self._render_error = f"render failed: {e}"
                self.get_logger().error(self._render_error, throttle_duration_sec=5.0)
            finally:
                self.robot.frame_done(rendered)

    # ------------------------------------------------------------------ reporting
    def _publish_success(self, success: bool) -> None:
        self._success_sent = bool(success)
        self._pub_success.publish(Bool(data=bool(success)))

    def _publish_diagnostics(self) -> None:
        if time.monotonic() - self._last_error_time < ERROR_HOLD_S:
            level, message = ERROR, self._last_error
        elif self._render_error:
            level, message = ERROR, self._render_error
        elif self.robot.n_overruns:
            level, message = WARN, f"physics fell behind real time {self.robot.n_overruns} times"
        else:
            level, message = OK, "running"
        values = {"task": self.cfg.task, **self.robot.status(), "bad_commands": self._n_bad_commands,
                  "last_error": self._last_error}
        self._diag.publish(level, message, values, hardware_id=f"{self.HARDWARE}/{self.cfg.task}")

    def close(self) -> None:
        """Stop the physics and render threads and close the simulator (idempotent)."""
        if not hasattr(self, "_physics"):  # construction failed before the threads existed
            return
        self._stop.set()
        self._commands.stop()
        self.robot.wake()
        for t in (self._physics, self._render):
            if t.is_alive():
                t.join(timeout=5.0)
        if not self._render.is_alive():  # a GL context still rendering is not closed under it
            self.sim.close()

    def destroy_node(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None and not stop.is_set():
            self.close()
        super().destroy_node()


def run(node_class: type[SimArmNode], args: list[str] | None = None) -> None:
    """A simulated arm node's ``main``."""
    spin_node(node_class, args)
    # The node has stopped its threads and closed the simulator and its GL context; the
    # interpreter's own teardown of MuJoCo under osmesa afterwards crashed now and then
    # (SIGSEGV with no Python frame, about 1 stop in 15), so the process leaves without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
