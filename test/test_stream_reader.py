"""StreamReader: a 500 Hz command stream read off the executor (real rclpy, Fast DDS on loopback).

The simulator reads the executor node's 500 Hz commands this way. Every message reaches the
handler, in order, on the reader's own thread while the node's executor spins beside it (it
never runs the handler), a handler that raises does not stop the stream, and stop() ends
the thread so that nothing arrives afterwards.
"""

import threading
import time

import pytest
from conftest import wait_for
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray

from l1flow_ros.nodes.stream_reader import StreamReader

pytestmark = pytest.mark.node

R10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TOPIC = "/stream_reader_test/commands"
RATE_HZ = 500.0
N = 1000  # 2 s


def test_reader_gets_a_500hz_stream_on_its_own_thread(ros_context, spin_nodes):
    sender = Node("stream_reader_sender", context=ros_context)
    receiver = Node("stream_reader_receiver", context=ros_context)
    pub = sender.create_publisher(Float64MultiArray, TOPIC, R10)
    got: list[int] = []
    threads: set[str] = set()

    def handler(msg: Float64MultiArray) -> None:
        threads.add(threading.current_thread().name)
        seq = int(msg.data[0])
        got.append(seq)
        if seq == 10:
            raise ValueError("a bad command")  # logged; the stream goes on

    reader = StreamReader(receiver, "test_reader")
    sub = reader.subscribe(Float64MultiArray, TOPIC, handler, R10)
    spin_nodes(sender, receiver)  # the node's executor spins beside the reader
    reader.start()
    assert wait_for(lambda: sub.get_publisher_count() == 1 and pub.get_subscription_count() == 1, 10.0)
    period = 1.0 / RATE_HZ
    t = time.monotonic()
    for seq in range(N):
        pub.publish(Float64MultiArray(data=[float(seq), 0.0, 0.0, 0.0]))
        t += period
        time.sleep(max(0.0, t - time.monotonic()))
    assert wait_for(lambda: len(got) >= N, 10.0), f"{len(got)} of {N} messages"
    assert got == list(range(N))  # reliable depth 10, every message once, in order
    assert threads == {"test_reader"}  # never the executor's thread
    reader.stop()
    n = len(got)
    for seq in range(N, N + 20):
        pub.publish(Float64MultiArray(data=[float(seq)]))
        time.sleep(period)
    time.sleep(0.3)
    assert len(got) == n  # stopped: nothing more is read
