"""ROS messages <-> the core's data (no rclpy: message classes only).

The one conversion layer between ROS messages and numpy / spec objects, shared by the
nodes and by dataset building (which decodes the same messages from recorded MCAP files):

- ``chunk_conv``: action chunks (``JointTrajectory``), embeddings (32FC1 ``Image``), stamps
  and durations <-> nanoseconds;
- ``sensor_conv``: camera images, depth, ``CameraInfo``, point clouds and ``JointState``.

Every function raises ``MessageError`` with the reason on a malformed message.
"""
