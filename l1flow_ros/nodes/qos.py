"""The QoS profiles of the graph, named once; every node and tool takes them from here.

| name | used for | why |
|---|---|---|
| ``SENSOR`` | camera images, camera info, point clouds | best effort, newest few: a late frame is worth nothing (ROS sensor-data profile) |
| ``RELIABLE_1`` | embeddings, action chunks | reliable, depth 1: only the newest matters, but it must arrive |
| ``CHUNKS_OUT`` | the action-chunk publishers | reliable, depth 10 on the writer: each reader keeps what its own depth says (the executor the newest), and a recorder held up by a flush still gets every chunk re-sent |
| ``RELIABLE_10`` | /joint_states, commands, /sim/state, /diagnostics | reliable, a short queue for streams a reader takes in order |
| ``LATCHED`` | /l1flow/checkpoint, /sim/success, recorder status | reliable, transient local, depth 1: a late joiner gets the current value |
| ``RECORD`` | recorder_node's reliable streams | reliable, depth 100: a burst while the writer flushes is queued, not lost |
| ``RECORD_SENSOR`` | recorder_node's camera streams | sensor-data reliability, depth 30 |
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR = qos_profile_sensor_data
RELIABLE_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
CHUNKS_OUT = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
RELIABLE_10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
RECORD = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
RECORD_SENSOR = QoSProfile(depth=30, reliability=qos_profile_sensor_data.reliability, history=HistoryPolicy.KEEP_LAST)
