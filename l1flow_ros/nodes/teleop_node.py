"""Teleoperation to absolute arm commands on /forward_position_controller/commands.

Modes (parameter ``mode``):
- ``joy``: sensor_msgs/Joy on /joy (gamepad, or a spacemouse through its joy driver):
  axes are end-effector velocities integrated into the target from the arm's measured
  position (/joint_states), a button toggles the gripper, a deadman button gates motion;
- ``leader``: mirror a leader arm's sensor_msgs/JointState on /leader/joint_states;
- ``expert``: Meta-World's scripted expert reads the simulator's state on /sim/state
  (std_msgs/Float64MultiArray) and commands through the same topic.

All modes publish std_msgs/Float64MultiArray absolute targets in ``action_names`` order;
``enabled`` (live) pauses and resumes output. Bad input is logged, counted and reported
as ERROR on /diagnostics; nothing is published from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64MultiArray

from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import ERROR, OK, Diagnostics
from l1flow_ros.sim.metaworld_env import ACTION_NAMES, ScriptedExpert, SimError
from l1flow_ros.sim.teleop import JoyConfig, JoyTeleop, LeaderConfig, LeaderMirror, TeleopError

NODE_NAME = "teleop_node"
MODES = ("joy", "leader", "expert")


@dataclass(frozen=True)
class TeleopNodeConfig:
    mode: str
    enabled: bool
    action_names: tuple[str, ...]
    rate_hz: float
    joy: JoyConfig
    leader: LeaderConfig
    task: str
    action_scale: float
    servo_gain: float
    expert_speed: float = 1.0

    def validate(self) -> None:
        if self.mode not in MODES:
            raise TeleopError(f"mode {self.mode!r} not in {MODES}")
        if not (0.0 < self.rate_hz <= 1000.0):
            raise TeleopError(f"rate_hz must be in (0, 1000], got {self.rate_hz}")
        if self.mode == "joy":
            self.joy.validate()
            if len(self.action_names) != len(self.joy.axes) + 1:
                raise TeleopError(
                    f"joy mode: action_names {self.action_names} must be the {len(self.joy.axes)} axes + gripper"
                )
        if self.mode == "leader":
            self.leader.validate()
        if self.mode == "expert":
            if self.action_scale <= 0 or not (0.0 < self.servo_gain <= 1.0):
                raise TeleopError(f"expert: action_scale {self.action_scale} > 0, servo_gain in (0, 1]")
            if tuple(self.action_names) != ACTION_NAMES:
                raise TeleopError(f"expert mode commands {ACTION_NAMES}, got action_names {self.action_names}")


def _d(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


class TeleopNode(Node):
    """Joystick, leader arm or scripted expert -> absolute arm targets."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        dj = JoyConfig()
        self.declare_parameter("mode", "joy", _d("joy | leader | expert"))
        self.declare_parameter("enabled", True, _d("publish commands (live: pause / resume teleop)"))
        self.declare_parameter("action_names", list(ACTION_NAMES), _d("command vector order (/joint_states names)"))
        self.declare_parameter("rate_hz", 50.0, _d("joy mode: command rate"))
        self.declare_parameter("joy.axes", list(dj.axes), _d("Joy axis index per Cartesian direction"))
        self.declare_parameter("joy.axis_scale", list(dj.axis_scale), _d("m/s at full deflection per direction"))
        self.declare_parameter("joy.deadzone", dj.deadzone, _d("axis magnitude treated as zero"))
        self.declare_parameter("joy.deadman_button", dj.deadman_button, _d("hold to move; -1 = none"))
        self.declare_parameter("joy.gripper_button", dj.gripper_button, _d("press toggles the gripper; -1 = none"))
        self.declare_parameter("joy.lower", list(dj.lower), _d("target box lower corner, metres"))
        self.declare_parameter("joy.upper", list(dj.upper), _d("target box upper corner, metres"))
        self.declare_parameter("leader.joint_names", list(LeaderConfig().joint_names), _d("leader joints, command order"))
        self.declare_parameter("leader.scale", [0.0], _d("per-joint scale ([0.0] = 1 for all)"))
        self.declare_parameter("leader.offset", [0.0], _d("per-joint offset ([0.0] = 0 for all)"))
        self.declare_parameter("task", "button-press-v3", _d("expert mode: Meta-World v3 task"))
        self.declare_parameter("action_scale", 0.01, _d("expert mode: Meta-World action_scale (metres)"))
        self.declare_parameter("servo_gain", 0.25, _d("expert mode: the sim's servo_gain"))
        self.declare_parameter("expert_speed", 1.0, _d("expert mode: step scale in (0, 1]; < 1 = slower demos"))
        self.cfg = self._read_config()
        self.cfg.validate()
        self._build()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        reliable10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pub = self.create_publisher(Float64MultiArray, "/forward_position_controller/commands", reliable10)
        self._diag = Diagnostics(self, NODE_NAME)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, reliable10)
        self.create_subscription(Joy, "/joy", self._on_joy, 10)
        self.create_subscription(JointState, "/leader/joint_states", self._on_leader, reliable10)
        self.create_subscription(Float64MultiArray, "/sim/state", self._on_sim_state, reliable10)
        self._joy_msg: Joy | None = None
        self._joy_time = 0.0
        self._last_tick = time.monotonic()
        self._measured: np.ndarray | None = None
        self._was_enabled = False
        self._n_sent = 0
        self._n_bad = 0
        self._last_error = ""
        self._last_error_time = -1e9
        self._timer = self.create_timer(1.0 / self.cfg.rate_hz, self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"teleop mode {self.cfg.mode}")

    # ------------------------------------------------------------------ config
    def _read_config(self) -> TeleopNodeConfig:
        g = lambda n: self.get_parameter(n).value  # noqa: E731
        scale = tuple(float(x) for x in g("leader.scale"))
        offset = tuple(float(x) for x in g("leader.offset"))
        return TeleopNodeConfig(
            mode=str(g("mode")),
            enabled=bool(g("enabled")),
            action_names=tuple(g("action_names")),
            rate_hz=float(g("rate_hz")),
            joy=JoyConfig(
                axes=tuple(int(x) for x in g("joy.axes")),
                axis_scale=tuple(float(x) for x in g("joy.axis_scale")),
                deadzone=float(g("joy.deadzone")),
                deadman_button=int(g("joy.deadman_button")),
                gripper_button=int(g("joy.gripper_button")),
                lower=tuple(float(x) for x in g("joy.lower")),
                upper=tuple(float(x) for x in g("joy.upper")),
            ),
            leader=LeaderConfig(
                joint_names=tuple(g("leader.joint_names")),
                scale=() if scale == (0.0,) else scale,
                offset=() if offset == (0.0,) else offset,
            ),
            task=str(g("task")),
            action_scale=float(g("action_scale")),
            servo_gain=float(g("servo_gain")),
            expert_speed=float(g("expert_speed")),
        )

    def _build(self) -> None:
        c = self.cfg
        self.joy = JoyTeleop(c.joy) if c.mode == "joy" else None
        self.leader = LeaderMirror(c.leader) if c.mode == "leader" else None
        try:
            self.expert = (
                ScriptedExpert(c.task, c.action_scale, c.servo_gain, c.expert_speed) if c.mode == "expert" else None
            )
        except SimError as e:
            raise TeleopError(str(e)) from None

    def _on_set_parameters(self, params) -> SetParametersResult:
        if any(p.name != "enabled" for p in params):
            return SetParametersResult(successful=False, reason="only 'enabled' changes live; restart for the rest")
        for p in params:
            if not isinstance(p.value, bool):
                return SetParametersResult(successful=False, reason="'enabled' must be a bool")
            self.cfg = TeleopNodeConfig(**{**self.cfg.__dict__, "enabled": p.value})
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ inputs
    def _bad(self, why: str) -> None:
        self._n_bad += 1
        self._last_error = why
        self._last_error_time = time.monotonic()
        self.get_logger().warning(why, throttle_duration_sec=1.0)

    def _send(self, target: np.ndarray) -> None:
        if not self.cfg.enabled:
            return
        self._pub.publish(Float64MultiArray(data=[float(x) for x in target]))
        self._n_sent += 1

    def _on_joint_state(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        if all(n in index for n in self.cfg.action_names) and len(msg.position) == len(msg.name):
            q = np.array([msg.position[index[n]] for n in self.cfg.action_names])
            if np.all(np.isfinite(q)):
                self._measured = q

    def _on_joy(self, msg: Joy) -> None:
        self._joy_msg = msg
        self._joy_time = time.monotonic()

    def _on_tick(self) -> None:
        now = time.monotonic()
        dt, self._last_tick = min(now - self._last_tick, 0.1), now
        if self.joy is None:
            return
        msg = self._joy_msg
        if msg is None or now - self._joy_time > 0.5:  # no joystick: as if released
            self._was_enabled = False
            return
        try:
            if not self._was_enabled and self._measured is not None:
                self.joy.sync(self._measured)  # (re)start from where the arm is
            target = self.joy.update(msg.axes, msg.buttons, dt)
        except TeleopError as e:
            self._bad(f"/joy: {e}")
            return
        self._was_enabled = self.joy.enabled and self.joy.target is not None
        if target is not None:
            self._send(target)

    def _on_leader(self, msg: JointState) -> None:
        if self.leader is None:
            return
        try:
            self._send(self.leader.command(msg.name, msg.position))
        except TeleopError as e:
            self._bad(f"/leader/joint_states: {e}")

    def _on_sim_state(self, msg: Float64MultiArray) -> None:
        if self.expert is None:
            return
        try:
            self._send(self.expert.target(np.asarray(msg.data, dtype=np.float64)))
        except SimError as e:
            self._bad(f"/sim/state: {e}")

    # ------------------------------------------------------------------ reporting
    def _publish_diagnostics(self) -> None:
        if time.monotonic() - self._last_error_time < 2.0:
            level, message = ERROR, self._last_error
        else:
            level, message = OK, "enabled" if self.cfg.enabled else "paused"
        vals = {"mode": self.cfg.mode, "enabled": self.cfg.enabled, "commands_sent": self._n_sent,
                "bad_inputs": self._n_bad, "last_error": self._last_error}
        self._diag.publish(level, message, vals, hardware_id=f"teleop/{self.cfg.mode}")


def main(args: list[str] | None = None) -> None:
    spin_node(TeleopNode, args)


if __name__ == "__main__":
    main()
