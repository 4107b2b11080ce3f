"""The simulated arm (Meta-World v3 / MuJoCo) as a ROS 2 robot.

Publishes, per camera ``<cam>``:
  /<cam>/color/image_raw (rgb8), /<cam>/aligned_depth_to_color/image_raw (32FC1 metres,
  0 = no depth), /<cam>/color/camera_info — sensor-data QoS, stamped with the time of the
  physics state they show;
and /joint_states (ee_x, ee_y, ee_z, gripper, right_j0..right_j6) at physics rate,
/sim/state (std_msgs/Float64MultiArray, Meta-World's 39-d goal-observable state: what
the scripted expert reads), /sim/success (std_msgs/Bool, latched: task solved in this
episode), /diagnostics.

Accepts the controller interfaces the executor drives:
/forward_position_controller/commands (Float64MultiArray [ee_x, ee_y, ee_z, gripper],
absolute), /ee_delta_controller/commands (Float64MultiArray [dx, dy, dz, gripper]: moves
the current target, gripper absolute) and /arm_controller/joint_trajectory
(JointTrajectory over ee_x, ee_y, ee_z, gripper, followed like a joint trajectory
controller; a position or delta command cancels it). Service /sim/reset
(std_srvs/Trigger) starts a new episode with the next seed.

Physics runs on its own thread with absolute deadlines at Meta-World's dt (12.5 ms);
cameras are rendered from snapshots of the physics state on a second thread, so slow
CPU rendering never stalls physics (frames are dropped instead, and counted).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from l1flow_ros.msgs.sensor_conv import camera_info_to_msg, image_to_msg
from l1flow_ros.msgs.stamps import split_ns, stamp_to_ns
from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import ERROR, OK, WARN, Diagnostics
from l1flow_ros.nodes.stream_reader import StreamReader
from l1flow_ros.perception.geometry import CameraIntrinsics
from l1flow_ros.sim.metaworld_env import (
    ACTION_NAMES,
    JOINT_NAMES,
    MetaWorldSim,
    SimConfig,
    SimError,
    write_calibration_yaml,
)
from l1flow_ros.sim.trajectory import TrajectoryError, TrajectoryFollower

NODE_NAME = "sim_robot_node"
# Parameters fixed at start (they define the simulated hardware).
STATIC_PARAMS = ("task", "cameras", "image_height", "image_width", "max_episode_steps", "calibration_file")


@dataclass(frozen=True)
class SimNodeConfig:
    task: str
    seed: int
    cameras: tuple[str, ...]
    image_height: int
    image_width: int
    camera_rate_hz: float
    max_episode_steps: int
    calibration_file: str
    diagnostics_rate_hz: float

    def validate(self) -> None:
        if not (0.0 < self.camera_rate_hz <= 100.0):
            raise SimError(f"camera_rate_hz must be in (0, 100], got {self.camera_rate_hz}")
        if not (0.0 < self.diagnostics_rate_hz <= 50.0):
            raise SimError(f"diagnostics_rate_hz must be in (0, 50], got {self.diagnostics_rate_hz}")
        if self.seed < 0:
            raise SimError(f"seed must be >= 0, got {self.seed}")
        self.sim_config().validate()

    def sim_config(self) -> SimConfig:
        return SimConfig(
            task=self.task,
            cameras=self.cameras,
            image_size=(self.image_height, self.image_width),
            max_episode_steps=self.max_episode_steps,
        )


def _desc(text: str, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(description=text, read_only=read_only)


class SimRobotNode(Node):
    """Meta-World arm with RGB-D cameras, absolute / delta EE commands, success reporting."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.declare_parameter("task", "button-press-v3", _desc("Meta-World v3 task name"))
        self.declare_parameter("seed", 0, _desc("seed of the first episode; each /sim/reset uses the next"))
        # dynamic_typing: an empty list (no cameras) has no element type in ROS parameters.
        self.declare_parameter(
            "cameras", ["corner"], ParameterDescriptor(description="Meta-World cameras to publish", dynamic_typing=True)
        )
        self.declare_parameter("image_height", 96, _desc("rendered image height, pixels"))
        self.declare_parameter("image_width", 96, _desc("rendered image width, pixels"))
        self.declare_parameter("camera_rate_hz", 15.0, _desc("camera frame rate (all cameras together)"))
        self.declare_parameter(
            "max_episode_steps", 0, _desc("episode length in physics steps reported as truncated; 0 = task's")
        )
        self.declare_parameter(
            "calibration_file", "", _desc("if set, write the cameras' extrinsics (camera -> base) here at start")
        )
        self.declare_parameter("diagnostics_rate_hz", 1.0, _desc("rate of /diagnostics"))
        self.cfg = self._read_config()
        self.cfg.validate()  # bad start parameters: raise, the node cannot exist without a valid task

        self.sim = MetaWorldSim(self.cfg.sim_config())
        self._lock = threading.Lock()  # guards self.sim (physics thread vs callbacks)
        self._seed = self.cfg.seed
        self._episode = 0
        self.sim.reset(self._seed)
        if self.cfg.calibration_file:
            write_calibration_yaml(self.cfg.calibration_file, [self.sim.camera_model(c) for c in self.cfg.cameras])
        self.add_on_set_parameters_callback(self._on_set_parameters)

        reliable10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pub_js = self.create_publisher(JointState, "/joint_states", reliable10)
        self._pub_state = self.create_publisher(Float64MultiArray, "/sim/state", reliable10)
        self._pub_success = self.create_publisher(Bool, "/sim/success", latched)
        self._diag = Diagnostics(self, NODE_NAME)
        self._cam_pubs = {}
        self._cam_info = {}
        h, w = self.cfg.image_height, self.cfg.image_width
        for cam in self.cfg.cameras:
            self._cam_pubs[cam] = (
                self.create_publisher(Image, f"/{cam}/color/image_raw", qos_profile_sensor_data),
                self.create_publisher(Image, f"/{cam}/aligned_depth_to_color/image_raw", qos_profile_sensor_data),
                self.create_publisher(CameraInfo, f"/{cam}/color/camera_info", qos_profile_sensor_data),
            )
            m = self.sim.camera_model(cam)
            self._cam_info[cam] = CameraIntrinsics(m.fx, m.fy, m.cx, m.cy, w, h)
        # The executor node streams commands at 500 Hz: read off the executor (stream_reader.py)
        self._commands = StreamReader(self, "sim_commands")
        self._commands.subscribe(Float64MultiArray, "/forward_position_controller/commands",
                                 self._on_position_command, reliable10)
        self._commands.subscribe(Float64MultiArray, "/ee_delta_controller/commands", self._on_delta_command, reliable10)
        self._trajectory = TrajectoryFollower(ACTION_NAMES)
        self.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._on_trajectory, reliable10)
        self.create_service(Trigger, "/sim/reset", self._on_reset)

        # Statistics for /diagnostics (written by the threads, read by the timer).
        self._last_error = ""
        self._last_error_time = -1e9
        self._n_bad_commands = 0
        self._n_steps = 0
        self._n_overruns = 0
        self._n_frames = 0
        self._n_frames_dropped = 0
        self._render_error = ""
        self._success_sent: bool | None = None

        self._stop = threading.Event()
        self._frame_cv = threading.Condition()
        self._frame: tuple[int, object] | None = None  # (stamp_ns, MjData snapshot) waiting to render
        self._render_busy = False
        self._publish_success(False)
        self._physics = threading.Thread(target=self._physics_loop, name="sim_physics", daemon=True)
        self._render = threading.Thread(target=self._render_loop, name="sim_render", daemon=True)
        self._physics.start()
        self._commands.start()
        if self.cfg.cameras:
            self._render.start()
        self.create_timer(1.0 / self.cfg.diagnostics_rate_hz, self._publish_diagnostics)
        self.get_logger().info(
            f"{self.cfg.task}: seed {self._seed}, cameras {list(self.cfg.cameras)} at {self.cfg.camera_rate_hz} Hz, "
            f"physics dt {self.sim.dt * 1e3:.1f} ms"
        )

    # ------------------------------------------------------------------ parameters
    def _read_config(self) -> SimNodeConfig:
        g = self.get_parameter
        return SimNodeConfig(
            task=str(g("task").value),
            seed=int(g("seed").value),
            cameras=tuple(str(c) for c in (g("cameras").value or ()) if str(c)),
            image_height=int(g("image_height").value),
            image_width=int(g("image_width").value),
            camera_rate_hz=float(g("camera_rate_hz").value),
            max_episode_steps=int(g("max_episode_steps").value),
            calibration_file=str(g("calibration_file").value),
            diagnostics_rate_hz=float(g("diagnostics_rate_hz").value),
        )

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        static = sorted(set(changes) & set(STATIC_PARAMS))
        if static:
            return SetParametersResult(successful=False, reason=f"{static} are fixed at start; restart the node")
        fields = dict(self.cfg.__dict__)
        try:
            for k, v in changes.items():
                if k in ("seed",):
                    fields[k] = int(v)
                elif k in ("camera_rate_hz", "diagnostics_rate_hz"):
                    fields[k] = float(v)
            new = SimNodeConfig(**fields)
            new.validate()
        except (SimError, TypeError, ValueError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        self.cfg = new
        if "seed" in changes:
            self._seed = new.seed - 1  # the next /sim/reset starts at the new seed
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ commands
    def _reject(self, why: str) -> None:
        self._n_bad_commands += 1
        self._last_error = why
        self._last_error_time = time.monotonic()
        self.get_logger().warning(f"command rejected, arm holds: {why}", throttle_duration_sec=1.0)

    def _on_position_command(self, msg: Float64MultiArray) -> None:
        try:
            with self._lock:
                self.sim.set_target(np.asarray(msg.data, dtype=np.float64))
                self._trajectory.cancel()
        except SimError as e:
            self._reject(f"/forward_position_controller/commands: {e}")

    def _on_delta_command(self, msg: Float64MultiArray) -> None:
        try:
            with self._lock:
                self.sim.apply_delta(np.asarray(msg.data, dtype=np.float64))
                self._trajectory.cancel()
        except SimError as e:
            self._reject(f"/ee_delta_controller/commands: {e}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        start = stamp_to_ns(msg.header.stamp)
        tfs = [stamp_to_ns(p.time_from_start) for p in msg.points]
        try:
            with self._lock:
                self._trajectory.set(msg.joint_names, start, tfs, [p.positions for p in msg.points],
                                     self.sim.target, self._now_ns())
        except TrajectoryError as e:
            self._reject(f"/arm_controller/joint_trajectory: {e}")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._seed += 1
            self._episode += 1
            self.sim.reset(self._seed)
            self._trajectory.cancel()
        self._publish_success(False)
        response.success = True
        response.message = f"episode {self._episode} seed {self._seed}"
        self.get_logger().info(f"reset: {response.message}")
        return response

    # ------------------------------------------------------------------ threads
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _physics_loop(self) -> None:
        dt = self.sim.dt
        next_t = time.monotonic()
        next_frame = next_t
        js = JointState()
        js.name = list(JOINT_NAMES)
        state_msg = Float64MultiArray()
        while not self._stop.is_set():
            with self._lock:
                follow = self._trajectory.sample(self._now_ns())
                if follow is not None:
                    self.sim.set_target(follow)
                res = self.sim.step()
                episode = self._episode  # a reset between here and the publish makes res stale
                q = self.sim.joint_positions()
                qd = self.sim.joint_velocities()
                stamp = self._now_ns()
                snapshot = None
                if self.cfg.cameras and time.monotonic() >= next_frame:
                    next_frame += 1.0 / self.cfg.camera_rate_hz
                    if next_frame < time.monotonic():  # fell behind: do not burst
                        next_frame = time.monotonic() + 1.0 / self.cfg.camera_rate_hz
                    snapshot = self._take_snapshot()
            self._n_steps += 1
            try:
                js.header.stamp.sec, js.header.stamp.nanosec = split_ns(stamp)
                js.position = q.tolist()
                js.velocity = qd.tolist()
                self._pub_js.publish(js)
                state_msg.data = res.state.tolist()
                self._pub_state.publish(state_msg)
                with self._lock:
                    if episode == self._episode and res.success != self._success_sent:
                        self._publish_success(res.success)
                if snapshot is not None:
                    self._offer_frame(stamp, snapshot)
            except Exception as e:  # context shut down under us: stop quietly
                if self._stop.is_set() or not self.context.ok():
                    return
                raise e
            next_t += dt
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -0.1:  # more than 8 steps late (CPU starved): resynchronise
                self._n_overruns += 1
                next_t = time.monotonic()

    def _take_snapshot(self):
        """Copy of the physics state, or None when the renderer is still busy (frame dropped)."""
        if self._render_busy:
            self._n_frames_dropped += 1
            return None
        return self.sim.snapshot()

    def _offer_frame(self, stamp_ns: int, snapshot) -> None:
        with self._frame_cv:
            self._frame = (stamp_ns, snapshot)
            self._render_busy = True
            self._frame_cv.notify()

    def _render_loop(self) -> None:
        try:
            self._render_frames()
        finally:
            self.sim.close_renderer()  # the GL context belongs to this thread

    def _render_frames(self) -> None:
        while not self._stop.is_set():
            with self._frame_cv:
                while self._frame is None and not self._stop.is_set():
                    self._frame_cv.wait(0.1)
                if self._stop.is_set():
                    return
                stamp, snap = self._frame
                self._frame = None
            try:
                for cam in self.cfg.cameras:
                    rgb, depth = self.sim.render(cam, snap)
                    frame_id = f"{cam}_color_optical_frame"
                    pub_rgb, pub_depth, pub_info = self._cam_pubs[cam]
                    pub_rgb.publish(image_to_msg(rgb, "rgb8", stamp, frame_id))
                    pub_depth.publish(image_to_msg(depth, "32FC1", stamp, frame_id))
                    pub_info.publish(camera_info_to_msg(self._cam_info[cam], stamp, frame_id))
                self._n_frames += 1
            except Exception as e:  # a render failure is reported, physics goes on
                if self._stop.is_set() or not self.context.ok():
                    return
                self._render_error = f"render failed: {e}"
                self.get_logger().error(self._render_error, throttle_duration_sec=5.0)
            finally:
                self._render_busy = False

    # ------------------------------------------------------------------ reporting
    def _publish_success(self, success: bool) -> None:
        self._success_sent = bool(success)
        self._pub_success.publish(Bool(data=bool(success)))

    def _publish_diagnostics(self) -> None:
        if time.monotonic() - self._last_error_time < 2.0:
            level, message = ERROR, self._last_error
        elif self._render_error:
            level, message = ERROR, self._render_error
        elif self._n_overruns:
            level, message = WARN, f"physics fell behind real time {self._n_overruns} times"
        else:
            level, message = OK, "running"
        with self._lock:
            values = {
                "task": self.cfg.task,
                "episode": self._episode,
                "seed": self._seed,
                "step": self.sim.steps,
                "success": self.sim.success,
                "truncated": self.sim.steps >= self.sim.max_episode_steps,
                "target": np.round(self.sim.target, 4).tolist(),
            }
        values.update(
            physics_steps=self._n_steps,
            physics_overruns=self._n_overruns,
            frames=self._n_frames,
            frames_dropped=self._n_frames_dropped,
            bad_commands=self._n_bad_commands,
            last_error=self._last_error,
        )
        self._diag.publish(level, message, values, hardware_id=f"metaworld/{self.cfg.task}")

    def close(self) -> None:
        """Stop the physics and render threads (idempotent)."""
        if not hasattr(self, "_physics"):  # construction failed before the threads existed
            return
        self._stop.set()
        self._commands.stop()
        with self._frame_cv:
            self._frame_cv.notify_all()
        for t in (self._physics, self._render):
            if t.is_alive():
                t.join(timeout=5.0)
        self.sim.close()

    def destroy_node(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None and not stop.is_set():
            self.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    spin_node(SimRobotNode, args)
    # The node has stopped its threads and closed the simulator and its GL context; the
    # interpreter's own teardown of MuJoCo under osmesa afterwards crashed now and then
    # (SIGSEGV with no Python frame, about 1 stop in 15), so the process leaves without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
