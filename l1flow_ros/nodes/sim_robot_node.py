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

from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from l1flow_ros.nodes.qos import RELIABLE_10
from l1flow_ros.nodes.sim_arm import SimArmNode, run
from l1flow_ros.sim.metaworld_env import JOINT_NAMES, MetaWorldSim, SimError, write_calibration_yaml
from l1flow_ros.sim.robot import SimRobot, SimRobotConfig, Tick

NODE_NAME = "sim_robot_node"


class SimRobotNode(SimArmNode):
    """Meta-World arm with RGB-D cameras, absolute / delta EE commands, success reporting.

    The ROS-free part (commands, the physics loop's stepping and timing, frame hand-off) is
    :class:`l1flow_ros.sim.robot.SimRobot`; :class:`l1flow_ros.nodes.sim_arm.SimArmNode`
    gives it its threads and topics.
    """

    NODE_NAME = NODE_NAME
    CONFIG = SimRobotConfig
    HARDWARE = "metaworld"
    JOINT_NAMES = tuple(JOINT_NAMES)

    def _make_robot(self) -> SimRobot:
        robot = SimRobot(MetaWorldSim(self.cfg.sim_config()), self.cfg.seed, self.cfg.camera_rate_hz, self._now_ns)
        if self.cfg.calibration_file:
            write_calibration_yaml(self.cfg.calibration_file, [robot.sim.camera_model(c) for c in self.cfg.cameras])
        return robot

    def _add_interfaces(self) -> None:
        self._pub_state = self.create_publisher(Float64MultiArray, "/sim/state", RELIABLE_10)
        self._state_msg = Float64MultiArray()
        self._commands.subscribe(Float64MultiArray, "/ee_delta_controller/commands", self._on_delta_command,
                                 RELIABLE_10)

    def _publish_tick(self, tick: Tick, js: JointState) -> None:
        super()._publish_tick(tick, js)
        self._state_msg.data = tick.result.state.tolist()
        self._pub_state.publish(self._state_msg)

    def _on_delta_command(self, msg: Float64MultiArray) -> None:
        try:
            self.robot.apply_delta(msg.data)
        except SimError as e:
            self._reject(f"/ee_delta_controller/commands: {e}")


def main(args: list[str] | None = None) -> None:
    run(SimRobotNode, args)


if __name__ == "__main__":
    main()
