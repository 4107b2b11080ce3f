"""How every l1flow node reports on /diagnostics: one DiagnosticStatus per message.

Each node builds its level, message and key/values; this publishes them the same way
everywhere (reliable, depth 10; values as strings; stamped with the node's clock) and
never raises during shutdown, when the publisher may already be gone.
"""

from __future__ import annotations

from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from l1flow_ros.msgs.chunk_conv import ns_to_stamp
from l1flow_ros.nodes.qos import RELIABLE_10 as QOS

TOPIC = "/diagnostics"
# How long a node keeps reporting an error after the last bad input (a message it rejected,
# a failed render or inference): long enough that a 1 Hz diagnostics reader sees it, short
# enough that recovery shows within two readings. Every node uses this one window.
ERROR_HOLD_S = 2.0
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
