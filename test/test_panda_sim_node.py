"""The simulated Panda node over real rclpy / Fast DDS on loopback: joint states, the two
controller interfaces (forward position; joint trajectory with JTC semantics), both cameras,
success, bad input."""

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import matched, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from l1flow_ros.msgs.stamps import split_ns, stamp_to_ns
from l1flow_ros.sim.arm.expert import PandaExpert
from l1flow_ros.sim.arm.panda import (
    CAMERAS,
    HOME,
    JOINT_NAMES,
    MAX_ACCELERATION,
    MAX_VELOCITY,
    PandaConfig,
    PandaSim,
)

ROOT = Path(__file__).resolve().parents[1]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SEED = 7


class Graph:
    """Panda node + a probe node, spun as the package composes nodes."""

    def __init__(self, spin_nodes, ctx, **params):
        from l1flow_ros.nodes.panda_sim_node import PandaSimNode

        self.sim = PandaSimNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.probe = __import__("rclpy").create_node("panda_probe", context=ctx)
        self.got = {k: [] for k in ("js", "success", "diag")}
        p = self.probe
        r10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = [
            p.create_subscription(JointState, "/joint_states", self.got["js"].append, r10),
            p.create_subscription(Bool, "/sim/success", self.got["success"].append, LATCHED),
            p.create_subscription(DiagnosticArray, "/diagnostics", self.got["diag"].append, 10),
        ]
        for cam in params.get("cameras", ()):
            for kind, typ, topic in (("rgb", Image, "color/image_raw"),
                                     ("depth", Image, "aligned_depth_to_color/image_raw"),
                                     ("info", CameraInfo, "color/camera_info")):
                self.got[(cam, kind)] = []
                self.subs.append(p.create_subscription(typ, f"/{cam}/{topic}", self.got[(cam, kind)].append,
                                                       qos_profile_sensor_data))
        self.cmd = p.create_publisher(Float64MultiArray, "/forward_position_controller/commands", r10)
        self.traj = p.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", r10)
        self.reset = p.create_client(Trigger, "/sim/reset")
        self.spinning = spin_nodes(self.sim, p)
        assert wait_for(lambda: matched(*self.subs, self.cmd, self.traj)), "discovery did not complete"
        assert wait_for(lambda: len(self.got["js"]) > 3)
        # The latched success comes once the reader has matched, not with the match itself.
        assert wait_for(lambda: self.got["success"]), "the latched /sim/success never came"

    def q(self):
        return np.array(self.got["js"][-1].position)

    def now_ns(self):
        return self.probe.get_clock().now().nanoseconds

    def trajectory(self, points, start_ns=0, names=JOINT_NAMES, velocities=None, accelerations=None):
        """points: [(time_from_start s, positions)]."""
        msg = JointTrajectory(joint_names=list(names))
        msg.header.stamp.sec, msg.header.stamp.nanosec = split_ns(start_ns)
        for k, (t, pos) in enumerate(points):
            pt = JointTrajectoryPoint(positions=[float(x) for x in pos])
            if velocities is not None:
                pt.velocities = [float(x) for x in velocities[k]]
            if accelerations is not None:
                pt.accelerations = [float(x) for x in accelerations[k]]
            pt.time_from_start.sec, pt.time_from_start.nanosec = split_ns(round(t * 1e9))
            msg.points.append(pt)
        return msg

    def samples(self, j):
        """(stamps ns, joint j positions) of every joint state received so far."""
        js = list(self.got["js"])
        return np.array([stamp_to_ns(m.header.stamp) for m in js]), np.array([m.position[j] for m in js])


@pytest.fixture
def graph(ros_context, spin_nodes):
    return Graph(spin_nodes, ros_context, task="lift", seed=SEED, cameras=[], diagnostics_rate_hz=5.0)


@pytest.mark.node
def test_joint_states_cameras_and_success(ros_context, spin_nodes):
    g = Graph(spin_nodes, ros_context, cameras=list(CAMERAS), image_height=32, image_width=40, camera_rate_hz=5.0)
    js = g.got["js"][-1]
    assert list(js.name) == list(JOINT_NAMES) and len(js.position) == len(js.velocity) == 8
    np.testing.assert_allclose(js.position, HOME, atol=0.02)  # the episode starts at home, at rest
    assert wait_for(lambda: all(len(g.got[(c, k)]) >= 2 for c in CAMERAS for k in ("rgb", "depth", "info")))
    for cam in CAMERAS:
        rgb, depth, info = (g.got[(cam, k)][-1] for k in ("rgb", "depth", "info"))
        assert (rgb.encoding, rgb.height, rgb.width, rgb.step) == ("rgb8", 32, 40, 120)
        assert (depth.encoding, depth.height, depth.width) == ("32FC1", 32, 40)
        d = np.frombuffer(bytes(depth.data), "<f4")
        assert np.all(np.isfinite(d)) and (d > 0.0).mean() > 0.5 and d.max() < 5.0, cam
        assert np.frombuffer(bytes(rgb.data), np.uint8).std() > 5.0, cam  # an image, not a blank
        assert info.width == 40 and info.height == 32 and info.k[0] > 0 and info.k[2] == pytest.approx(19.5)
        assert info.header.frame_id == rgb.header.frame_id == f"{cam}_color_optical_frame"
        stamps = lambda k: {stamp_to_ns(m.header.stamp) for m in g.got[(cam, k)]}  # noqa: E731, B023
        assert stamps("rgb") & stamps("depth") & stamps("info")  # one frame, one physics state
    # The two cameras of one frame show the same physics state.
    assert {stamp_to_ns(m.header.stamp) for m in g.got[(CAMERAS[0], "rgb")]} & \
        {stamp_to_ns(m.header.stamp) for m in g.got[(CAMERAS[1], "rgb")]}
    assert g.got["success"] and g.got["success"][-1].data is False
    # Joint states at each physics step (20 ms of stamps), or at the configured rate.
    t, _ = g.samples(0)
    assert np.median(np.diff(t[-20:])) < 30e6
    assert g.sim.set_parameters([Parameter("joint_state_rate_hz", value=10.0)])[0].successful
    n0 = len(g.got["js"])
    assert wait_for(lambda: len(g.got["js"]) > n0 + 12)
    t, _ = g.samples(0)
    assert np.diff(t[n0 + 3:]).min() >= 50e6 and np.median(np.diff(t[n0 + 3:])) > 80e6  # past those in flight


@pytest.mark.node
def test_forward_position_command_moves_the_arm_within_limits(graph):
    g = graph
    lower, upper = g.sim.sim.lower, g.sim.sim.upper
    near = HOME.copy()
    near[0] += 0.3
    near[3] = -0.3  # panda_joint4 0.23 rad short of its upper limit (-0.07 rad)
    near[7] = 0.02
    g.cmd.publish(Float64MultiArray(data=near.tolist()))
    assert wait_for(lambda: np.abs(g.q() - near)[[0, 3, 7]].max() < 0.01), (g.q(), near)
    beyond = near.copy()
    beyond[3] = 0.5  # beyond the limit: clipped to it
    n0 = len(g.got["js"])
    g.cmd.publish(Float64MultiArray(data=beyond.tolist()))
    want = np.clip(beyond, lower, upper)
    assert wait_for(lambda: abs(g.q()[3] - upper[3]) < 0.005), (g.q(), want)
    np.testing.assert_array_equal(g.sim.sim.target, want)  # the target held is the clipped one
    q = np.array([m.position for m in g.got["js"][n0:]])
    over = np.maximum(q - upper, lower - q)[:, :7].max()
    assert over < 0.01, over  # the position loop does not carry the arm past the limit


@pytest.mark.node
def test_joint_trajectory_replacement_at_a_future_stamp_takes_over_then(graph):
    g = graph
    home = g.q()
    a = [(1.5, home + [0.3, 0, 0, 0, 0, 0, 0, 0]), (3.0, home + [0.6, 0, 0, 0, 0, 0, 0, 0])]
    g.traj.publish(g.trajectory(a))
    assert wait_for(lambda: g.q()[0] > home[0] + 0.05), "trajectory A not followed"
    sent = g.now_ns()
    q_sent = g.q()[0]
    start_b = sent + 600_000_000
    goal = home + [-0.3, 0.1, 0, 0, 0, 0, 0, 0]
    zero = np.zeros(8)
    g.traj.publish(g.trajectory([(1.5, goal)], start_ns=start_b, velocities=[zero], accelerations=[zero]))
    assert wait_for(lambda: g.sim.robot.trajectory.order == 5)  # velocities + accelerations reached it
    assert wait_for(lambda: np.abs(g.q() - goal).max() < 0.01), (g.q(), goal)
    t, q0 = g.samples(0)
    # Until B's stamp the arm went on along A (still rising), then B turned it round.
    before = (t > sent) & (t < start_b - 50_000_000)
    assert before.sum() >= 5 and q0[before][-1] > q_sent + 0.03
    peak = t[np.argmax(np.where(t > sent, q0, -np.inf))]
    assert peak >= start_b - 30_000_000, (peak - start_b) * 1e-6
    # Velocity continuous through the hand-over: no step in the measured joint velocity.
    v = np.array([m.velocity[0] for m in g.got["js"]])
    around = (t > start_b - 100_000_000) & (t < start_b + 100_000_000)
    assert np.abs(np.diff(v[around])).max() < 0.3


@pytest.mark.node
def test_expert_plan_through_the_trajectory_interface_lifts_the_cube(graph):
    g = graph
    # The scripted expert's joint targets for this seed, planned offline, sent as one trajectory.
    plan_sim = PandaSim(PandaConfig(task="lift", cameras=()))
    plan_sim.reset(SEED)
    expert = PandaExpert(plan_sim)
    expert.reset()
    points = [(k * plan_sim.dt, expert.act()) for k in range(1, 221)]
    plan_sim.close()
    q = np.array([p for _, p in points])
    # Within the arm's limits in position, velocity and acceleration (what a JTC would check).
    assert np.all(q >= g.sim.sim.lower - 1e-9) and np.all(q <= g.sim.sim.upper + 1e-9)
    assert np.all(np.abs(np.diff(q, axis=0)) / plan_sim.dt <= MAX_VELOCITY + 1e-6)
    assert g.got["success"][-1].data is False
    g.traj.publish(g.trajectory(points))
    assert wait_for(lambda: g.got["success"][-1].data is True, timeout=60.0), "the cube was not lifted"
    assert g.sim.sim.lifted() or g.sim.sim.success
    # A reset starts the next seed's episode: success goes back to False.
    assert g.reset.wait_for_service(timeout_sec=10.0)
    fut = g.reset.call_async(Trigger.Request())
    assert wait_for(fut.done) and f"seed {SEED + 1}" in fut.result().message
    assert wait_for(lambda: g.got["success"][-1].data is False)


@pytest.mark.node
def test_expert_streamed_through_the_forward_position_interface_lifts_the_cube(graph):
    g = graph
    plan_sim = PandaSim(PandaConfig(task="lift", cameras=()))
    plan_sim.reset(SEED)
    expert = PandaExpert(plan_sim)
    expert.reset()
    for _ in range(220):  # one command per 20 ms, as a 50 Hz teleop or policy would send them
        g.cmd.publish(Float64MultiArray(data=expert.act().tolist()))
        time.sleep(plan_sim.dt)
        if g.got["success"][-1].data:
            break
    plan_sim.close()
    assert wait_for(lambda: g.got["success"][-1].data is True), "the cube was not lifted"


@pytest.mark.node
def test_bad_input_is_rejected_with_a_reason_and_the_arm_holds(graph):
    g = graph
    hold = g.q()
    g.got["diag"].clear()
    g.cmd.publish(Float64MultiArray(data=[0.0] * 7))  # wrong joint count
    g.cmd.publish(Float64MultiArray(data=[float("nan")] + hold[1:].tolist()))
    g.traj.publish(g.trajectory([(1.0, hold[:7])], names=JOINT_NAMES[:7]))  # a joint missing
    g.traj.publish(g.trajectory([(1.0, [float("nan")] + hold[1:].tolist())]))
    g.traj.publish(g.trajectory([(1.0, hold + 0.2)], start_ns=g.now_ns() - 10_000_000_000))  # all in the past

    def status():
        return [s for a in g.got["diag"] for s in a.status if s.name == "panda_sim_node"]

    def bad_count():
        return int({kv.key: kv.value for kv in status()[-1].values}["bad_commands"]) if status() else 0

    assert wait_for(lambda: bad_count() == 5)
    errors = [s.message for s in status() if s.level == DiagnosticStatus.ERROR]
    assert errors and any("past" in m or "NaN" in m or "values" in m for m in errors)
    n0 = len(g.got["js"])
    assert wait_for(lambda: len(g.got["js"]) > n0 + 15)  # 0.3 s of physics since: the arm held
    np.testing.assert_allclose(g.q(), hold, atol=0.005)
    assert not g.sim.robot.trajectory.active and g.sim.context.ok()


@pytest.mark.core
def test_panda_parameter_file_is_the_arms_own():
    nodes = yaml.safe_load((ROOT / "config" / "panda.yaml").read_text())
    ex = nodes["executor_node"]["ros__parameters"]
    sim = PandaSim(PandaConfig(cameras=()))
    assert tuple(ex["joint_names"]) == JOINT_NAMES
    np.testing.assert_allclose(ex["lower"], sim.lower, atol=1e-4)
    np.testing.assert_allclose(ex["upper"], sim.upper, atol=1e-4)
    np.testing.assert_allclose(ex["max_velocity"], MAX_VELOCITY)
    np.testing.assert_allclose(ex["max_acceleration"], MAX_ACCELERATION)
    cams = nodes["panda_sim_node"]["ros__parameters"]["cameras"]
    assert cams == list(CAMERAS) == nodes["perception_node"]["ros__parameters"]["cameras"]
