"""The policy on the simulated arm: sim robot (Meta-World) -> perception -> inference -> executor.

    ros2 launch l1flow_ros sim.launch.py
    ros2 launch l1flow_ros sim.launch.py checkpoint:=/path/to/bundle

policy.launch.py plus the simulated robot, all from one parameter file (default:
share/l1flow_ros/config/sim.yaml), the same file `l1flow run sim` uses.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
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
                                  default_value=PathJoinSubstitution([share, "config", "sim.yaml"]),
                                  description="ROS 2 parameter file for all nodes"),
            DeclareLaunchArgument("checkpoint",
                                  default_value=PathJoinSubstitution([share, "models", "default"]),
                                  description="checkpoint bundle directory to deploy"),
            Node(package="l1flow_ros", executable="sim_robot_node", name="sim_robot_node",
                 parameters=[params_file], output="screen",
                 ros_arguments=["--enclave", "/l1flow/sim_robot_node"]),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "policy.launch.py"])),
                launch_arguments={"params_file": params_file,
                                  "checkpoint": LaunchConfiguration("checkpoint")}.items(),
            ),
        ]
    )
