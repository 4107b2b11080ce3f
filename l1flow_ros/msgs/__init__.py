"""ROS messages <-> the core's data (no rclpy: message classes only).

The one conversion layer between ROS messages and numpy / spec objects, shared by the
nodes and by dataset building (which decodes the same messages from recorded MCAP files):

- ``stamps``: the stamp arithmetic, ``(sec, nanosec)`` <-> integer nanoseconds (no ROS
  import, so the ROS-free core uses it too); nothing else multiplies or splits stamps;
- ``chunk_conv``: action chunks (``JointTrajectory``), the executor's tail, embeddings
  (32FC1 ``Image``), controller commands, ``Time`` / ``Duration`` messages;
- ``sensor_conv``: camera images, depth, ``CameraInfo``, point clouds and ``JointState``.

Decoders are duck-typed (they read the ROS field names only): live rclpy messages and the
objects ``mcap_ros2`` decodes from episode files take the same code, so training data and
the deployed node see the same arrays. Every ``*_from_msg`` raises ``MessageError`` with the
reason on a malformed message.
"""
