"""executor_node driving the simulated arm (sim_robot_node, Meta-World) over real rclpy:
the hand follows a chunk through the position and joint-trajectory controller interfaces."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import matched, wait_for

pytestmark = pytest.mark.graph

EE = ("ee_x", "ee_y", "ee_z")


@pytest.mark.parametrize("output", ["forward_position", "joint_trajectory"])
def test_the_simulated_hand_follows_a_chunk(ros_context, spin_nodes, output):
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from l1flow_ros.msgs.chunk_conv import chunk_to_msg
    from l1flow_ros.nodes.executor_node import ExecutorNode
    from l1flow_ros.nodes.sim_robot_node import SimRobotNode
    from l1flow_ros.spec import Chunk

    sim = SimRobotNode(context=ros_context, parameter_overrides=[
        Parameter("cameras", value=["corner"]), Parameter("camera_rate_hz", value=1.0)])
    params = {"start_enabled": True, "output": output, "rate_hz": 100.0, "gripper_joints": ["gripper"],
              "max_velocity": [0.3, 0.3, 0.3, 10.0], "max_acceleration": [3.0, 3.0, 3.0, 100.0]}
    executor = ExecutorNode(context=ros_context,
                            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    io = rclpy.create_node("executor_sim_io", context=ros_context)
    joints: dict[str, float] = {}
    heard = [0]  # stamp (ns) of the last /joint_states taken

    def on_joints(m) -> None:
        joints.update(zip(m.name, m.position))
        heard[0] = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec

    io.create_subscription(JointState, "/joint_states", on_joints, 10)
    pub = io.create_publisher(JointTrajectory, "/l1flow/action_chunk", 1)
    spin_nodes(sim, executor, io)

    def physics_steps(n: int) -> None:
        """The physics runs ``n`` more steps (simulated time, 80 Hz, not wall time) and the
        probe has the joint states of the last of them."""
        n0 = sim.robot.n_steps
        assert wait_for(lambda: sim.robot.n_steps >= n0 + n), "the physics stopped"
        now = io.get_clock().now().nanoseconds
        assert wait_for(lambda: heard[0] >= now - 20_000_000), "no fresh /joint_states"

    chunk_sub = [s for s in executor.subscriptions if s.topic_name == "/l1flow/action_chunk"]
    assert wait_for(lambda: executor._stream.enabled and "ee_x" in joints and matched(pub, *chunk_sub)), \
        "no /joint_states, or the chunk topic not matched"
    assert executor._stream.enabled, "start_enabled: enabled on the first /joint_states"
    physics_steps(40)  # holding for 0.5 s: the hand must stay where it was
    x0 = np.array([joints[n] for n in EE])
    a = np.zeros((10, 4))
    a[:, :3] = x0
    a[:, 0] += 0.005 * np.arange(1, 11)  # 5 cm along x in 1 s
    a[:, 3] = -1.0
    pub.publish(chunk_to_msg(Chunk(io.get_clock().now().nanoseconds, 0.1, a, ("ee_x", *EE[1:], "gripper"))))
    # The chunk is taken, its plan comes to rest, and the physics runs 1.5 s more (2.5 s in all).
    assert wait_for(lambda: executor._scheduler.stats().accepted == 1), "the chunk was not taken"
    assert wait_for(lambda: io.get_clock().now().nanoseconds >= executor._scheduler.plan_end_ns)
    physics_steps(120)
    moved = np.array([joints[n] for n in EE]) - x0
    np.testing.assert_allclose(moved, [0.05, 0.0, 0.0], atol=0.004)
    assert executor._scheduler.stats().accepted == 1
