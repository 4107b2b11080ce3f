"""Deploy a policy on a real arm: perception -> inference -> executor.

    ros2 launch l1flow_ros policy.launch.py
    ros2 launch l1flow_ros policy.launch.py params_file:=/path/to/my_arm.yaml checkpoint:=/path/to/bundle

All parameters come from one file (default: share/l1flow_ros/config/policy.yaml), the same
file `l1flow run policy` uses. The inference node is a lifecycle node: it is configured
(bundle loaded and warmed up) and then activated by this launch file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.events import matches_action
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration("params_file")
    share = FindPackageShare("l1flow_ros")
    checkpoint = LaunchConfiguration("checkpoint")
    overrides = [params_file]

    perception = Node(package="l1flow_ros", executable="perception_node", name="perception_node",
                      parameters=overrides, output="screen",
                      ros_arguments=["--enclave", "/l1flow/perception_node"])
    inference = LifecycleNode(package="l1flow_ros", executable="inference_node", name="inference_node",
                              namespace="", parameters=[params_file, {"checkpoint": checkpoint}],
                              output="screen", ros_arguments=["--enclave", "/l1flow/inference_node"])
    executor = Node(package="l1flow_ros", executable="executor_node", name="executor_node",
                    parameters=overrides, output="screen",
                    ros_arguments=["--enclave", "/l1flow/executor_node"])
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(inference),
            transition_id=Transition.TRANSITION_CONFIGURE,
        )
    )
    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=inference,
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(inference),
                        transition_id=Transition.TRANSITION_ACTIVATE,
                    )
                )
            ],
        )
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("discovery_range",
                                  default_value=EnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                                                    default_value="LOCALHOST"),
                                  description="ROS_AUTOMATIC_DISCOVERY_RANGE of the nodes (LOCALHOST: no "
                                              "other machine sees them; SUBNET: a controller elsewhere)"),
            SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", LaunchConfiguration("discovery_range")),
            DeclareLaunchArgument("params_file",
                                  default_value=PathJoinSubstitution([share, "config", "policy.yaml"]),
                                  description="ROS 2 parameter file for all nodes"),
            DeclareLaunchArgument("checkpoint",
                                  default_value=PathJoinSubstitution([share, "models", "default"]),
                                  description="checkpoint bundle directory to deploy"),
            perception,
            inference,
            executor,
            activate,
            configure,
        ]
    )
