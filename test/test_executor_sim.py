"""executor_node driving the simulated arm (sim_robot_node, Meta-World) over real rclpy:
the hand follows a chunk through the position and joint-trajectory controller interfaces."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

EE = ("ee_x", "ee_y", "ee_z")


@pytest.mark.parametrize("output", ["forward_position", "joint_trajectory"])
def test_the_simulated_hand_follows_a_chunk(ros_context, output):
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from l1flow_ros.nodes.chunk_conv import chunk_to_msg
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
    io.create_subscription(JointState, "/joint_states", lambda m: joints.update(zip(m.name, m.position)), 10)
    pub = io.create_publisher(JointTrajectory, "/l1flow/action_chunk", 1)
    ex = MultiThreadedExecutor(num_threads=4, context=ros_context)
    for n in (sim, executor, io):
        ex.add_node(n)
    stop = threading.Event()

    def spin_loop() -> None:  # stopped before the executor shuts down (no race inside rclpy)
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    spin = threading.Thread(target=spin_loop, daemon=True)
    spin.start()
    try:
        end = time.monotonic() + 30
        while not (executor._enabled and "ee_x" in joints and pub.get_subscription_count()) \
                and time.monotonic() < end:
            time.sleep(0.05)
        assert executor._enabled, "start_enabled: enabled on the first /joint_states"
        time.sleep(0.5)  # holding: the hand must stay where it was
        x0 = np.array([joints[n] for n in EE])
        a = np.zeros((10, 4))
        a[:, :3] = x0
        a[:, 0] += 0.005 * np.arange(1, 11)  # 5 cm along x in 1 s
        a[:, 3] = -1.0
        pub.publish(chunk_to_msg(Chunk(io.get_clock().now().nanoseconds, 0.1, a, ("ee_x", *EE[1:], "gripper"))))
        time.sleep(2.5)
        moved = np.array([joints[n] for n in EE]) - x0
        np.testing.assert_allclose(moved, [0.05, 0.0, 0.0], atol=0.004)
        assert executor._scheduler.stats().accepted == 1
    finally:
        stop.set()
        spin.join(timeout=5.0)
        ex.shutdown()
        for n in (executor, sim, io):
            close = getattr(n, "close", None)
            if close:
                close()
            n.destroy_node()
