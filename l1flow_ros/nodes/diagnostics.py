"""How every l1flow node reports on /diagnostics: one DiagnosticStatus per message.

Each node builds its level, message and key/values; this publishes them the same way
everywhere (reliable, depth 10; values as strings; stamped with the node's clock) and
never raises during shutdown, when the publisher may already be gone.
"""

from __future__ import annotations

from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from l1flow_ros.msgs.chunk_conv import ns_to_stamp

TOPIC = "/diagnostics"
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Diagnostics:
    """The /diagnostics publisher of one node, reporting under ``name``."""

    def __init__(self, node: Node, name: str, hardware_id: str = "l1flow") -> None:
        self._node = node
        self.name = name
        self.hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, TOPIC, QOS)

    def publish(self, level: bytes, message: str, values: Mapping[str, object],
                stamp_ns: int | None = None, hardware_id: str | None = None) -> None:
        """One status: ``level`` (OK / WARN / ERROR), ``message``, ``values`` (str() of each)."""
        st = DiagnosticStatus(level=level, name=self.name, message=message,
                              hardware_id=self.hardware_id if hardware_id is None else hardware_id)
        st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = (ns_to_stamp(stamp_ns) if stamp_ns is not None
                            else self._node.get_clock().now().to_msg())
        try:
            self._pub.publish(arr)
        except Exception:  # the publisher is gone: the node is shutting down
            pass
