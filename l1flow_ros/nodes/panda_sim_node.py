"""The simulated Franka Panda (MuJoCo, robosuite's models) as a ROS 2 robot.

Publishes, per camera ``<cam>`` (cam_front on the table, cam_wrist on the hand):
  /<cam>/color/image_raw (rgb8), /<cam>/aligned_depth_to_color/image_raw (32FC1 metres,
  0 = no depth), /<cam>/color/camera_info — sensor-data QoS, stamped with the time of the
  physics state they show;
and /joint_states (panda_joint1..7 in rad, gripper: the fingers' opening in m) at each
physics step (20 ms) or ``joint_state_rate_hz``, /sim/success (std_msgs/Bool, latched: task
solved in this episode), /diagnostics.

Accepts the ros2_control interfaces a real Panda offers:
/forward_position_controller/commands (Float64MultiArray, absolute positions in the
/joint_states order, clipped to the joints' limits) and /arm_controller/joint_trajectory
(JointTrajectory over the same joints in any order, followed with joint_trajectory_controller
semantics, :mod:`l1flow_ros.sim.trajectory`, sampled at every 2 ms physics substep;
velocities and accelerations are used when the points carry them; a position command cancels
it). Service /sim/reset (std_srvs/Trigger) starts a new episode with the next seed.

Physics runs on its own thread with absolute deadlines; cameras are rendered from snapshots
of the physics state on a second thread, so slow CPU rendering never stalls physics (frames
are dropped instead, and counted). The ROS-free part is :class:`l1flow_ros.sim.robot.SimRobot`
(built by :func:`l1flow_ros.sim.arm.robot.make_robot`).
"""

from __future__ import annotations

from sensor_msgs.msg import JointState

from l1flow_ros.nodes.sim_arm import SimArmNode, run
from l1flow_ros.sim.arm.panda import JOINT_NAMES
from l1flow_ros.sim.arm.robot import PandaRobotConfig, make_robot
from l1flow_ros.sim.robot import SimRobot, Tick

NODE_NAME = "panda_sim_node"


class PandaSimNode(SimArmNode):
    """Simulated Panda with two RGB-D cameras, joint position / trajectory commands, success."""

    NODE_NAME = NODE_NAME
    CONFIG = PandaRobotConfig
    HARDWARE = "panda"
    JOINT_NAMES = tuple(JOINT_NAMES)
    FOLLOW_DERIVATIVES = True

    def _make_robot(self) -> SimRobot:
        self._next_js_ns = 0  # here, not in __init__: SimArmNode starts the physics thread before returning
        return make_robot(self.cfg, self._now_ns)

    def _publish_tick(self, tick: Tick, js: JointState) -> None:
        if self._joint_state_due(tick.stamp_ns):
            super()._publish_tick(tick, js)

    def _joint_state_due(self, stamp_ns: int) -> bool:
        rate = self.cfg.joint_state_rate_hz
        if rate <= 0.0:
            return True
        if stamp_ns < self._next_js_ns:
            return False
        period = round(1e9 / rate)
        self._next_js_ns = max(self._next_js_ns + period, stamp_ns - period // 2)
        return True


def main(args: list[str] | None = None) -> None:
    run(PandaSimNode, args)


if __name__ == "__main__":
    main()
