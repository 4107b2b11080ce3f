"""Teleop: joystick / leader mapping core, and the node over real rclpy (joy, leader, expert)."""

import numpy as np
import pytest
from conftest import Calls, matched, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, Float64MultiArray

from l1flow_ros.nodes.params import ParameterError
from l1flow_ros.nodes.teleop_node import TeleopNode
from l1flow_ros.sim.teleop import (
    SIM_ACTION_NAMES,
    JoyConfig,
    JoyTeleop,
    LeaderConfig,
    LeaderMirror,
    TeleopConfig,
    TeleopError,
)

R10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# The probe keeps every command the node sends (the node publishes reliable, depth 10): what it
# received can be compared with the node's count of commands sent.
KEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


# ---------------------------------------------------------------- core


@pytest.mark.core
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


@pytest.mark.core
def test_leader_mirror_picks_scales_and_offsets():
    m = LeaderMirror(LeaderConfig(joint_names=("b", "a"), scale=(2.0, 1.0), offset=(0.0, -1.0)))
    np.testing.assert_allclose(m.command(["a", "b", "c"], [1.0, 2.0, 3.0]), [4.0, 0.0])
    with pytest.raises(TeleopError, match="lacks"):
        m.command(["a"], [1.0])
    with pytest.raises(TeleopError):
        m.command(["a", "b"], [1.0, float("inf")])


# ---------------------------------------------------------------- node


class Probe:
    """The nodes under test spun as the package composes them, plus a probe node: publishes the
    inputs, keeps the commands, /diagnostics and /sim/success; counts the teleop node's ticks."""

    def __init__(self, spin_nodes, ctx, nodes, teleop=None):
        import rclpy

        self.node = rclpy.create_node("teleop_probe", context=ctx)
        self.cmds, self.diag, self.success = [], [], []
        self.teleop = teleop
        self._ticks = Calls(teleop._timer) if teleop is not None else None
        self.subs = [
            self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                          self.cmds.append, KEEP),
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diag.append, 10),
            self.node.create_subscription(Bool, "/sim/success", self.success.append, LATCHED),
        ]
        self.joy = self.node.create_publisher(Joy, "/joy", 10)
        self.js = self.node.create_publisher(JointState, "/joint_states", R10)
        self.leader = self.node.create_publisher(JointState, "/leader/joint_states", R10)
        self.spinning = spin_nodes(*nodes, self.node)

    def wait_matched(self, *pubs):
        """``pubs`` (inputs the test sends) and the command and diagnostics topics matched both
        ways: from here on the probe gets every command the node sends."""
        ends = [*pubs, *self.subs[:2]]
        if self.teleop is not None:
            ends += [self.teleop._pub, self.teleop._diag._pub]
        assert wait_for(lambda: matched(*ends)), "discovery did not complete"

    def statuses(self, name="teleop_node"):
        return [s for a in list(self.diag) for s in a.status if s.name == name]

    def after_bad(self, n_bad, name="teleop_node"):
        """Statuses published once the node had counted more than ``n_bad`` bad inputs."""
        return [s for s in self.statuses(name)
                if int({kv.key: kv.value for kv in s.values}["bad_inputs"]) > n_bad]

    def wait_ticks(self, n, pump, until=lambda: True):
        """Keep sending (``pump``) until the node has run ``n`` more ticks and ``until`` holds."""
        t0 = self._ticks.n
        return wait_for(lambda: pump() or (self._ticks.n >= t0 + n and until()), step=0.01)


def wait_error_reported(p, n_bad, pump, source):
    """Keep sending bad input until the node has counted one more than ``n_bad`` and reported
    it: an ERROR naming ``source`` among the first three statuses published after the count
    (the node reports an error on /diagnostics once a second for two seconds after it).
    Counted in statuses, not seconds: a slow machine delays them, it does not lose them."""
    assert wait_for(lambda: pump() or p.teleop._n_bad > n_bad), "the bad input was not counted"
    assert wait_for(lambda: pump() or any(s.level == DiagnosticStatus.ERROR for s in p.after_bad(n_bad))
                    or len(p.after_bad(n_bad)) >= 3, timeout=60.0), "no diagnostics after the bad input"
    first = p.after_bad(n_bad)[:3]
    errors = [s for s in first if s.level == DiagnosticStatus.ERROR]
    assert errors, f"no ERROR in the statuses after the bad input: {[(s.level, s.message) for s in first]}"
    assert errors[0].message.startswith(source), errors[0].message


def assert_nothing_sent(p, pump, bad_inputs=0):
    """From now on no command goes out: while ``pump`` sends, the node runs 25 more ticks
    (0.5 s at 50 Hz) and counts ``bad_inputs`` more bad inputs; it sends nothing, and the
    probe has received exactly what it had sent before (each one, none after)."""
    node = p.teleop
    sent, n_bad = node._n_sent, node._n_bad
    assert p.wait_ticks(25, pump, lambda: node._n_bad >= n_bad + bad_inputs)
    assert node._n_sent == sent, f"{node._n_sent - sent} commands sent"
    assert wait_for(lambda: len(p.cmds) >= sent), f"{len(p.cmds)} of {sent} commands received"
    assert len(p.cmds) == sent


@pytest.mark.node
def test_joy_mode_drives_target_from_measured_position(ros_context, spin_nodes):
    node = TeleopNode(context=ros_context, parameter_overrides=[Parameter("mode", value="joy"),
                                                                Parameter("rate_hz", value=50.0)])
    p = Probe(spin_nodes, ros_context, [node], teleop=node)
    p.wait_matched(p.js, p.joy)
    js = JointState(name=["ee_x", "ee_y", "ee_z", "gripper", "right_j0"], position=[0.0, 0.6, 0.2, -1.0, 0.3])
    joy = Joy(axes=[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], buttons=[0, 0, 0, 0, 0, 0])  # deadman (4) released

    def pump():
        p.js.publish(js)
        joy.header.stamp = p.node.get_clock().now().to_msg()
        p.joy.publish(joy)
        return False

    def has_joy():  # the node holds the joystick sample last sent (and the arm's position)
        m = node._joy_msg
        return (m is not None and node._measured is not None
                and list(m.axes) == list(joy.axes) and list(m.buttons) == list(joy.buttons))

    assert p.wait_ticks(25, pump, has_joy)
    assert node._n_sent == 0 and not p.cmds, "commands sent without the deadman"
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
    assert p.wait_ticks(1, pump)  # a tick that was running when the pause came has ended
    assert_nothing_sent(p, pump)
    # A joy message too short for the mapping: ERROR diagnostic, no command.
    assert node.set_parameters([Parameter("enabled", value=True)])[0].successful
    joy = Joy(axes=[0.0], buttons=[0] * 6)
    joy.buttons[4] = 1
    n_bad = node._n_bad
    # Once the node has counted it, no good sample is left to send from (one publisher, in order).
    wait_error_reported(p, n_bad, pump, "/joy")
    assert_nothing_sent(p, pump, bad_inputs=10)


@pytest.mark.node
def test_leader_mode_mirrors_named_joints(ros_context, spin_nodes):
    node = TeleopNode(context=ros_context, parameter_overrides=[
        Parameter("mode", value="leader"),
        Parameter("leader.joint_names", value=["j2", "j1", "j3", "grip"]),
        Parameter("leader.offset", value=[0.1, 0.0, 0.0, 0.0]),
    ])
    p = Probe(spin_nodes, ros_context, [node], teleop=node)
    p.wait_matched(p.leader)
    msg = JointState(name=["j1", "j2", "j3", "grip"], position=[0.5, 0.0, 0.2, 1.0])
    assert wait_for(lambda: (p.leader.publish(msg), bool(p.cmds))[1])
    np.testing.assert_allclose(p.cmds[-1].data, [0.1, 0.5, 0.2, 1.0])
    bad = JointState(name=["j1"], position=[0.5])
    send_bad = lambda: p.leader.publish(bad)  # noqa: E731
    wait_error_reported(p, 0, send_bad, "/leader/joint_states")
    # Every good message came before the first bad one (one publisher, in order): all handled.
    assert_nothing_sent(p, send_bad, bad_inputs=10)


@pytest.mark.graph
def test_expert_mode_solves_the_sim_task_through_ros(ros_context, spin_nodes):
    from l1flow_ros.nodes.sim_robot_node import SimRobotNode

    sim = SimRobotNode(context=ros_context, parameter_overrides=[
        Parameter("task", value="button-press-v3"),
        Parameter("cameras", Parameter.Type.STRING_ARRAY, []),
        Parameter("seed", value=1),
    ])
    teleop = TeleopNode(context=ros_context, parameter_overrides=[
        Parameter("mode", value="expert"), Parameter("task", value="button-press-v3"),
    ])
    p = Probe(spin_nodes, ros_context, [sim, teleop])
    assert wait_for(lambda: p.success and p.success[-1].data, timeout=120.0), "expert did not solve the task"
    assert len(p.cmds) > 20
    assert all(len(c.data) == 4 for c in p.cmds)


@pytest.mark.node
def test_bad_mode_is_rejected(ros_context):
    with pytest.raises(ParameterError, match="mode 'telepathy'"):
        TeleopNode(context=ros_context, parameter_overrides=[Parameter("mode", value="telepathy")])
    with pytest.raises(ParameterError, match="no-task-v3"):
        TeleopNode(context=ros_context, parameter_overrides=[Parameter("mode", value="expert"),
                                                             Parameter("task", value="no-task-v3")])


@pytest.mark.core
def test_config_groups_joy_and_leader_settings():
    from l1flow_ros.sim.metaworld_env import ACTION_NAMES

    assert SIM_ACTION_NAMES == ACTION_NAMES
    cfg = TeleopConfig()
    assert cfg.joy() == JoyConfig() and cfg.leader() == LeaderConfig()  # [0.0]: scale 1, offset 0 for all
    cfg = TeleopConfig(mode="leader", leader_scale=(2.0, 1.0, 1.0, 1.0), leader_offset=())
    assert cfg.leader().scale == (2.0, 1.0, 1.0, 1.0) and cfg.leader().offset == ()
    for bad, words in [(dict(mode="joy", joy_axes=(0, 1)), "same non-zero length"),
                       (dict(mode="joy", action_names=("a", "b")), r"3 axes \+ gripper"),
                       (dict(mode="leader", leader_offset=(0.1, 0.2)), "offset has 2 values"),
                       (dict(mode="expert", action_names=("a", "b", "c", "d")), "expert mode commands"),
                       (dict(rate_hz=0.0), "rate_hz")]:
        with pytest.raises(TeleopError, match=words):
            TeleopConfig(**bad).validate()


@pytest.mark.node
def test_grouped_parameters_from_a_ros_params_file(ros_context, tmp_path):
    params = tmp_path / "teleop.yaml"
    params.write_text("teleop_node:\n  ros__parameters:\n    mode: joy\n    joy:\n"
                      "      axes: [1, 0, 3]\n      deadzone: 0\n      lower: [-1, 0, 0]\n")
    node = TeleopNode(context=ros_context, cli_args=["--ros-args", "--params-file", str(params)])
    try:
        assert node.joy.cfg == JoyConfig(axes=(1, 0, 3), deadzone=0.0, lower=(-1.0, 0.0, 0.0))
        assert node.describe_parameter("joy.axes").read_only and not node.describe_parameter("enabled").read_only
        r = node.set_parameters([Parameter("enabled", value="yes")])[0]
        assert not r.successful and "enabled" in r.reason and node.cfg.enabled is True
    finally:
        node.destroy_node()
    params.write_text("teleop_node:\n  ros__parameters:\n    joy:\n      deadzone: wide\n")
    with pytest.raises(ParameterError, match="joy.deadzone: expected double"):
        TeleopNode(context=ros_context, cli_args=["--ros-args", "--params-file", str(params)])
