"""l1flow_ros: fast generative robot policies (L1 Flow, one-step students) on a real arm with ROS 2."""

__version__ = "0.1.0"
