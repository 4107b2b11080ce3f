"""Simulated arm node over real rclpy / Fast DDS on loopback."""

import time

import numpy as np
import pytest
from conftest import matched, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from l1flow_ros.nodes.sim_robot_node import SimRobotNode
from l1flow_ros.sim.metaworld_env import JOINT_NAMES

pytestmark = pytest.mark.graph

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Graph:
    """Sim node + a probe node, spun as the package composes nodes (``spin_nodes``)."""

    def __init__(self, spin_nodes, ctx, **params):
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        self.sim = SimRobotNode(context=ctx, parameter_overrides=overrides)
        self.probe = __import__("rclpy").create_node("sim_probe", context=ctx)
        self.got = {k: [] for k in ("js", "rgb", "depth", "info", "success", "diag", "state")}
        p = self.probe
        r10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = []

        def sub(*args):
            self.subs.append(p.create_subscription(*args))

        sub(JointState, "/joint_states", self.got["js"].append, r10)
        sub(Float64MultiArray, "/sim/state", self.got["state"].append, r10)
        sub(Image, "/corner/color/image_raw", self.got["rgb"].append, qos_profile_sensor_data)
        sub(Image, "/corner/aligned_depth_to_color/image_raw", self.got["depth"].append, qos_profile_sensor_data)
        sub(CameraInfo, "/corner/color/camera_info", self.got["info"].append, qos_profile_sensor_data)
        sub(Bool, "/sim/success", self.got["success"].append, LATCHED)
        sub(DiagnosticArray, "/diagnostics", self.got["diag"].append, 10)
        self.cmd = p.create_publisher(Float64MultiArray, "/forward_position_controller/commands", r10)
        self.delta = p.create_publisher(Float64MultiArray, "/ee_delta_controller/commands", r10)
        self.traj = p.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", r10)
        self.reset = p.create_client(Trigger, "/sim/reset")
        self.spinning = spin_nodes(self.sim, p)
        # Every topic matched both ways before a test sends or counts anything.
        assert wait_for(lambda: matched(*self.subs, self.cmd, self.delta, self.traj)), "discovery did not complete"
        # The latched success comes once the reader has matched, not with the match itself.
        assert wait_for(lambda: self.got["success"]), "the latched /sim/success never came"

    def wait_steps(self, n):
        """Until the physics has run ``n`` more steps (80 Hz: simulated time, not wall time)."""
        n0 = self.sim.robot.n_steps
        assert wait_for(lambda: self.sim.robot.n_steps >= n0 + n), "the physics stopped"

    def ee(self):
        return np.array(self.got["js"][-1].position[:4])

    def call_reset(self):
        assert self.reset.wait_for_service(timeout_sec=10.0)
        fut = self.reset.call_async(Trigger.Request())
        assert wait_for(fut.done)
        return fut.result()


@pytest.fixture
def graph(ros_context, spin_nodes):
    return Graph(spin_nodes, ros_context, cameras=["corner"], image_height=32, image_width=40,
                 camera_rate_hz=10.0, diagnostics_rate_hz=5.0, seed=3)


def test_publishes_joint_states_and_stamped_rgbd(graph):
    g = graph.got
    assert wait_for(lambda: len(g["js"]) > 20 and len(g["rgb"]) >= 2 and len(g["depth"]) >= 2 and g["info"])
    js = g["js"][-1]
    assert list(js.name) == list(JOINT_NAMES) and len(js.position) == len(JOINT_NAMES)
    assert np.all(np.isfinite(js.position))
    rgb, depth = g["rgb"][-1], g["depth"][-1]
    assert (rgb.encoding, rgb.height, rgb.width, rgb.step) == ("rgb8", 32, 40, 120)
    assert (depth.encoding, depth.height, depth.width) == ("32FC1", 32, 40)
    d = np.frombuffer(bytes(depth.data), "<f4")
    assert np.all(np.isfinite(d)) and (d > 0.3).mean() > 0.3 and d.max() < 5.0
    # RGB, depth and camera info of one frame carry the same stamp (the physics state shown).
    stamps = lambda k: {(m.header.stamp.sec, m.header.stamp.nanosec) for m in g[k]}  # noqa: E731
    assert stamps("rgb") & stamps("depth") & stamps("info")
    info = g["info"][-1]
    assert info.width == 40 and info.height == 32 and info.k[0] > 0 and info.k[2] == pytest.approx(19.5)
    assert info.header.frame_id == rgb.header.frame_id == depth.header.frame_id != ""
    # Physics runs near real time: joint states come at ~80 Hz (generous bound).
    n0, t0 = len(g["js"]), time.monotonic()
    time.sleep(1.0)
    rate = (len(g["js"]) - n0) / (time.monotonic() - t0)
    assert rate > 20, f"joint states at {rate:.1f} Hz"
    assert len(g["state"][-1].data) == 39
    assert g["success"] and g["success"][-1].data is False


def test_position_and_delta_commands_move_the_arm(graph):
    g = graph
    assert wait_for(lambda: len(g.got["js"]) > 5)
    start = g.ee()
    target = [start[0] + 0.05, start[1] + 0.05, start[2] - 0.03, 1.0]
    assert wait_for(lambda: (g.cmd.publish(Float64MultiArray(data=target)), np.linalg.norm(g.ee()[:3] - target[:3]) < 0.01)[1])
    assert wait_for(lambda: g.ee()[3] > 0.0), "gripper did not close"
    # Absolute targets still queued for the sim would override the delta: a last one, 0.1 mm
    # off, marks the end of the queue (one publisher: in order); once the sim holds it, none is left.
    target[0] += 1e-4
    g.cmd.publish(Float64MultiArray(data=target))
    assert wait_for(lambda: np.allclose(g.sim.sim.target, target, atol=1e-12)), "the last target was not taken"
    g.delta.publish(Float64MultiArray(data=[0.0, 0.0, 0.04, -1.0]))
    assert wait_for(lambda: abs(g.ee()[2] - (target[2] + 0.04)) < 0.01)
    # A joint trajectory (names in another order) is followed to its last point.
    here = g.ee()
    goal = {"ee_x": here[0] - 0.06, "ee_y": here[1] + 0.04, "ee_z": here[2], "gripper": 1.0}
    msg = JointTrajectory(joint_names=["gripper", "ee_z", "ee_y", "ee_x"])
    for k, frac in enumerate((0.5, 1.0)):
        pt = JointTrajectoryPoint()
        pt.positions = [goal["gripper"], goal["ee_z"], here[1] + frac * 0.04, here[0] - frac * 0.06]
        pt.time_from_start.nanosec = (k + 1) * 200_000_000
        msg.points.append(pt)
    g.traj.publish(msg)
    want = np.array([goal["ee_x"], goal["ee_y"], goal["ee_z"]])
    assert wait_for(lambda: np.linalg.norm(g.ee()[:3] - want) < 0.01)


def test_bad_commands_are_rejected_with_error_diagnostic_and_arm_holds(graph):
    g = graph
    assert wait_for(lambda: len(g.got["js"]) > 5)
    hold = g.ee()
    g.got["diag"].clear()
    for bad in ([0.0, 0.6], [float("nan"), 0.6, 0.2, 0.0]):
        g.cmd.publish(Float64MultiArray(data=bad))
    g.delta.publish(Float64MultiArray(data=[0.0, float("inf"), 0.0, 0.0]))
    g.traj.publish(JointTrajectory(joint_names=["ee_x"], points=[JointTrajectoryPoint(positions=[0.3])]))

    def error_seen():
        return any(s.level == DiagnosticStatus.ERROR and s.name == "sim_robot_node"
                   for a in g.got["diag"] for s in a.status)

    def bad_count():
        return int({kv.key: kv.value for kv in g.got["diag"][-1].status[0].values}["bad_commands"])

    assert wait_for(error_seen)
    assert wait_for(lambda: bad_count() == 4)  # every bad command handled (and reported) ...
    g.wait_steps(24)  # ... and 0.3 s of physics since: the arm held
    np.testing.assert_allclose(g.ee()[:3], hold[:3], atol=0.005)
    assert g.sim.context.ok()  # still running


def test_reset_starts_next_seeded_episode(graph):
    g = graph
    assert wait_for(lambda: len(g.got["state"]) > 2)
    goal0 = np.array(g.got["state"][-1].data[-3:])
    res = g.call_reset()
    assert res.success and "seed 4" in res.message
    assert wait_for(lambda: not np.allclose(g.got["state"][-1].data[-3:], goal0))
    # Static parameters are refused live; the seed is accepted.
    r = g.sim.set_parameters([Parameter("task", value="reach-v3")])[0]
    assert not r.successful and r.reason
    r = g.sim.set_parameters([Parameter("camera_rate_hz", value=-1.0)])[0]
    assert not r.successful
    assert g.sim.set_parameters([Parameter("seed", value=3)])[0].successful
    g.call_reset()
    assert wait_for(lambda: np.allclose(g.got["state"][-1].data[-3:], goal0))


def test_live_rates_take_effect_and_hardware_parameters_are_read_only(graph):
    sim = graph.sim
    assert sim.describe_parameter("task").read_only and sim.describe_parameter("cameras").read_only
    assert not sim.describe_parameter("camera_rate_hz").read_only
    assert sim.set_parameters([Parameter("diagnostics_rate_hz", value=20)])[0].successful  # 20 for 20.0
    assert sim.cfg.diagnostics_rate_hz == 20.0 and sim._diag_timer.timer_period_ns == 50_000_000
    assert sim.set_parameters([Parameter("camera_rate_hz", value=4.0)])[0].successful
    assert sim.robot.camera_rate_hz == 4.0
    r = sim.set_parameters([Parameter("diagnostics_rate_hz", value=80.0)])[0]
    assert not r.successful and "diagnostics_rate_hz" in r.reason
    assert sim.cfg.diagnostics_rate_hz == 20.0 and sim._diag_timer.timer_period_ns == 50_000_000


def test_bad_task_parameter_raises(ros_context):
    with pytest.raises(ValueError, match="task"):
        SimRobotNode(context=ros_context, parameter_overrides=[Parameter("task", value="no-task-v3")])


@pytest.mark.parametrize("cams,expect", [("[corner, topview]", ("corner", "topview")), ('[""]', ())])
def test_parameters_from_a_ros_params_file(ros_context, tmp_path, cams, expect):
    params = tmp_path / "sim.yaml"
    params.write_text(
        "sim_robot_node:\n  ros__parameters:\n"
        f"    task: reach-v3\n    cameras: {cams}\n    image_height: 24\n    image_width: 32\n"
        f"    calibration_file: {tmp_path / 'calib.yaml'}\n"
    )
    node = SimRobotNode(context=ros_context, cli_args=["--ros-args", "--params-file", str(params)])
    try:
        assert node.cfg.task == "reach-v3" and node.cfg.cameras == expect
        assert (node.cfg.image_height, node.cfg.image_width) == (24, 32)
        from l1flow_ros.perception.geometry import load_calibration

        assert tuple(load_calibration(tmp_path / "calib.yaml")) == expect
    finally:
        node.destroy_node()
