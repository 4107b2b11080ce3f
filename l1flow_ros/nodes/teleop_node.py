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

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64MultiArray

from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import ERROR, ERROR_HOLD_S, OK, Diagnostics
from l1flow_ros.nodes.params import LiveParameters, ParameterError, declare
from l1flow_ros.nodes.qos import RELIABLE_10
from l1flow_ros.sim.metaworld_env import ScriptedExpert, SimError
from l1flow_ros.sim.teleop import JoyTeleop, LeaderMirror, TeleopConfig, TeleopError

NODE_NAME = "teleop_node"


class TeleopNode(Node):
    """Joystick, leader arm or scripted expert -> absolute arm targets."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.cfg: TeleopConfig = declare(self, TeleopConfig)  # raises ParameterError
        self._build()
        self._live = LiveParameters(self)  # only ``enabled`` is live: _send reads it

        self._pub = self.create_publisher(Float64MultiArray, "/forward_position_controller/commands", RELIABLE_10)
        self._diag = Diagnostics(self, NODE_NAME)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, RELIABLE_10)
        self.create_subscription(Joy, "/joy", self._on_joy, RELIABLE_10)
        self.create_subscription(JointState, "/leader/joint_states", self._on_leader, RELIABLE_10)
        self.create_subscription(Float64MultiArray, "/sim/state", self._on_sim_state, RELIABLE_10)
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
    def _build(self) -> None:
        c = self.cfg
        self.joy = JoyTeleop(c.joy()) if c.mode == "joy" else None
        self.leader = LeaderMirror(c.leader()) if c.mode == "leader" else None
        try:
            self.expert = (
                ScriptedExpert(c.task, c.action_scale, c.servo_gain, c.expert_speed) if c.mode == "expert" else None
            )
        except SimError as e:  # an unknown task or a bad speed: the parameters are at fault
            raise ParameterError(f"{NODE_NAME}: {e}") from None

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
        if time.monotonic() - self._last_error_time < ERROR_HOLD_S:
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
