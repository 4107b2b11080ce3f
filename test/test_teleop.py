"""Teleop: joystick / leader mapping core, and the node over real rclpy (joy, leader, expert)."""

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, Float64MultiArray

from l1flow_ros.nodes.teleop_node import TeleopNode
from l1flow_ros.sim.teleop import JoyConfig, JoyTeleop, LeaderConfig, LeaderMirror, TeleopError

R10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def wait_for(pred, timeout=20.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


# ---------------------------------------------------------------- core


def test_joy_integrates_velocity_with_deadman_deadzone_and_box():
    cfg = JoyConfig(axes=(1, 0, 4), axis_scale=(0.1, -0.2, 0.1), deadzone=0.1, deadman_button=4, gripper_button=0,
                    lower=(-0.5, 0.4, 0.05), upper=(0.5, 1.0, 0.5))
    j = JoyTeleop(cfg)
    axes = [0.0] * 6
    buttons = [0] * 6
    assert j.update(axes, buttons, 0.1) is None  # not synced yet
    j.sync([0.0, 0.6, 0.2, -1.0])
    axes[1], axes[0], axes[4] = 1.0, 0.5, 0.05  # z inside the deadzone
    assert j.update(axes, buttons, 0.1) is None  # deadman released
    buttons[4] = 1
    t = j.update(axes, buttons, 0.1)
    np.testing.assert_allclose(t, [0.01, 0.59, 0.2, -1.0])
    buttons[0] = 1  # gripper press toggles once, holding does not toggle again
    assert j.update(axes, buttons, 0.0)[3] == 1.0
    assert j.update(axes, buttons, 0.0)[3] == 1.0
    buttons[0] = 0
    j.update(axes, buttons, 0.0)
    buttons[0] = 1
    assert j.update(axes, buttons, 0.0)[3] == -1.0
    for _ in range(100):  # pushing into the box edge stops there
        t = j.update(axes, buttons, 0.1)
    np.testing.assert_allclose(t[:3], [0.5, 0.4, 0.2])
    with pytest.raises(TeleopError):
        j.update([0.0, 1.0], buttons, 0.1)  # too few axes
    with pytest.raises(TeleopError):
        j.update([float("nan")] * 6, buttons, 0.1)
    with pytest.raises(TeleopError):
        JoyTeleop(JoyConfig(axes=(0, 1), axis_scale=(0.1,)))


def test_leader_mirror_picks_scales_and_offsets():
    m = LeaderMirror(LeaderConfig(joint_names=("b", "a"), scale=(2.0, 1.0), offset=(0.0, -1.0)))
    np.testing.assert_allclose(m.command(["a", "b", "c"], [1.0, 2.0, 3.0]), [4.0, 0.0])
    with pytest.raises(TeleopError, match="lacks"):
        m.command(["a"], [1.0])
    with pytest.raises(TeleopError):
        m.command(["a", "b"], [1.0, float("inf")])


# ---------------------------------------------------------------- node


class Probe:
    def __init__(self, ctx, nodes):
        import rclpy

        self.node = rclpy.create_node("teleop_probe", context=ctx)
        self.cmds, self.diag, self.success = [], [], []
        self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands", self.cmds.append, R10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diag.append, 10)
        self.node.create_subscription(Bool, "/sim/success", self.success.append, LATCHED)
        self.joy = self.node.create_publisher(Joy, "/joy", 10)
        self.js = self.node.create_publisher(JointState, "/joint_states", R10)
        self.leader = self.node.create_publisher(JointState, "/leader/joint_states", R10)
        self.nodes = [*nodes, self.node]
        self.ex = MultiThreadedExecutor(num_threads=2, context=ctx)
        for n in self.nodes:
            self.ex.add_node(n)
        self.thread = threading.Thread(target=self.ex.spin, daemon=True)
        self.thread.start()

    def errors(self, name="teleop_node"):
        return [s for a in self.diag for s in a.status if s.name == name and s.level == DiagnosticStatus.ERROR]

    def close(self):
        self.ex.shutdown()
        self.thread.join(timeout=5)
        for n in self.nodes:
            n.destroy_node()


def test_joy_mode_drives_target_from_measured_position(ros_context):
    node = TeleopNode(context=ros_context, parameter_overrides=[Parameter("mode", value="joy"),
                                                                Parameter("rate_hz", value=50.0)])
    p = Probe(ros_context, [node])
    try:
        js = JointState(name=["ee_x", "ee_y", "ee_z", "gripper", "right_j0"], position=[0.0, 0.6, 0.2, -1.0, 0.3])
        joy = Joy(axes=[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], buttons=[0, 0, 0, 0, 0, 0])  # deadman (4) released

        def pump():
            p.js.publish(js)
            joy.header.stamp = p.node.get_clock().now().to_msg()
            p.joy.publish(joy)
            return False

        wait_for(pump, timeout=1.0, step=0.05)
        assert not p.cmds, "commands sent without the deadman"
        joy.buttons[4] = 1
        assert wait_for(lambda: pump() or len(p.cmds) > 20)
        first = np.array(p.cmds[0].data)
        last = np.array(p.cmds[-1].data)
        np.testing.assert_allclose(first[[0, 2, 3]], [0.0, 0.2, -1.0], atol=1e-9)
        assert 0.6 <= first[1] < 0.62  # synced to the measured position, then moving
        assert last[1] > first[1] + 0.01  # stick forward: +y at 0.15 m/s
        # Live pause: nothing more goes out.
        assert node.set_parameters([Parameter("enabled", value=False)])[0].successful
        assert not node.set_parameters([Parameter("mode", value="leader")])[0].successful
        time.sleep(0.2)
        n = len(p.cmds)
        wait_for(pump, timeout=0.5, step=0.05)
        assert len(p.cmds) == n
        # A joy message too short for the mapping: ERROR diagnostic, no command.
        assert node.set_parameters([Parameter("enabled", value=True)])[0].successful
        joy = Joy(axes=[0.0], buttons=[0] * 6)
        joy.buttons[4] = 1
        assert wait_for(lambda: pump() or p.errors(), timeout=5.0)
        time.sleep(0.3)  # commands from the last good sample still in flight
        p.cmds.clear()
        wait_for(pump, timeout=0.5, step=0.05)
        time.sleep(0.2)
        assert not p.cmds
    finally:
        p.close()


def test_leader_mode_mirrors_named_joints(ros_context):
    node = TeleopNode(context=ros_context, parameter_overrides=[
        Parameter("mode", value="leader"),
        Parameter("leader.joint_names", value=["j2", "j1", "j3", "grip"]),
        Parameter("leader.offset", value=[0.1, 0.0, 0.0, 0.0]),
    ])
    p = Probe(ros_context, [node])
    try:
        msg = JointState(name=["j1", "j2", "j3", "grip"], position=[0.5, 0.0, 0.2, 1.0])
        assert wait_for(lambda: (p.leader.publish(msg), bool(p.cmds))[1])
        np.testing.assert_allclose(p.cmds[-1].data, [0.1, 0.5, 0.2, 1.0])
        bad = JointState(name=["j1"], position=[0.5])
        assert wait_for(lambda: (p.leader.publish(bad), bool(p.errors()))[1])
        time.sleep(0.3)  # good messages still in flight
        p.cmds.clear()
        wait_for(lambda: (p.leader.publish(bad), False)[1], timeout=0.5, step=0.05)
        time.sleep(0.2)
        assert not p.cmds
    finally:
        p.close()


def test_expert_mode_solves_the_sim_task_through_ros(ros_context):
    from l1flow_ros.nodes.sim_robot_node import SimRobotNode

    sim = SimRobotNode(context=ros_context, parameter_overrides=[
        Parameter("task", value="button-press-v3"),
        Parameter("cameras", Parameter.Type.STRING_ARRAY, []),
        Parameter("seed", value=1),
    ])
    teleop = TeleopNode(context=ros_context, parameter_overrides=[
        Parameter("mode", value="expert"), Parameter("task", value="button-press-v3"),
    ])
    p = Probe(ros_context, [sim, teleop])
    try:
        assert wait_for(lambda: p.success and p.success[-1].data, timeout=60.0), "expert did not solve the task"
        assert len(p.cmds) > 20
        assert all(len(c.data) == 4 for c in p.cmds)
    finally:
        p.close()


def test_bad_mode_is_rejected(ros_context):
    with pytest.raises(TeleopError):
        TeleopNode(context=ros_context, parameter_overrides=[Parameter("mode", value="telepathy")])
