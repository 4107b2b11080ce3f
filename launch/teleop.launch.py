"""Teleoperate the arm and record demonstrations: teleop -> arm controller, recorder -> MCAP.

    ros2 launch l1flow_ros teleop.launch.py
    ros2 service call /recorder/start std_srvs/srv/Trigger   # start an episode
    ros2 service call /recorder/stop std_srvs/srv/Trigger    # keep it (or /recorder/discard)

All parameters come from one file (default: share/l1flow_ros/config/teleop.yaml), the same
file `l1flow run teleop` uses. Bring up your joy driver (or leader arm) beside it.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration("params_file")
    share = FindPackageShare("l1flow_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument("discovery_range",
                                  default_value=EnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                                                    default_value="LOCALHOST"),
                                  description="ROS_AUTOMATIC_DISCOVERY_RANGE of the nodes (LOCALHOST: no "
                                              "other machine sees them; SUBNET: a controller elsewhere)"),
            SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", LaunchConfiguration("discovery_range")),
            DeclareLaunchArgument("params_file",
                                  default_value=PathJoinSubstitution([share, "config", "teleop.yaml"]),
                                  description="ROS 2 parameter file for all nodes"),
            Node(package="l1flow_ros", executable="teleop_node", name="teleop_node", parameters=[params_file],
                 output="screen", ros_arguments=["--enclave", "/l1flow/teleop_node"]),
            Node(package="l1flow_ros", executable="recorder_node", name="recorder_node",
                 parameters=[params_file], output="screen",
                 ros_arguments=["--enclave", "/l1flow/recorder_node"]),
        ]
    )
