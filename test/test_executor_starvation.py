"""Nodes composed in one process keep up with an 80 Hz stream (real rclpy, Fast DDS on loopback).

Two subscribers of the simulator's /joint_states pattern (a plain thread publishing at 80 Hz
with absolute deadlines, reliable depth 10) each get at least 95 % of the messages published,
counted by sequence number or stamp from their first message on, when the nodes are spun the
way the package spins composed nodes (:func:`l1flow_ros.nodes.composition.make_executor`),
and when they share one of the multi-threaded executors that nodes with several callback
groups get. rclpy's stock MultiThreadedExecutor over the same nodes busy-loops and loses
messages (why: the composition module's docstring).
"""

import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import wait_for
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import JointState

from l1flow_ros.nodes.composition import (
    Composition,
    GuardedMultiThreadedExecutor,
    NodeExecutors,
    destroy_nodes,
    make_executor,
)

RATE_HZ = 80.0  # the simulator's physics rate (Meta-World dt 12.5 ms)
WINDOW_S = 4.0  # counted window: 320 messages, so 95 % allows 16 lost
MIN_SHARE = 0.95
R10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # the simulator's /joint_states QoS
TOPIC = "/starvation/joint_states"
MODEL = Path(__file__).resolve().parents[1] / "models" / "default"


class Stream(Node):
    """The simulator's /joint_states publisher: its own thread, absolute deadlines, sequence
    number in header.frame_id; ``sent`` lists (monotonic time, sequence) as published."""

    def __init__(self, context, topic: str = TOPIC) -> None:
        super().__init__("starvation_stream", context=context)
        self._pub = self.create_publisher(JointState, topic, R10)
        self.sent: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="starvation_stream", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        msg = JointState()
        msg.name = [f"j{i}" for i in range(11)]
        seq, next_t = 0, time.monotonic()
        while not self._stop.is_set():
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = str(seq)
            msg.position = [float(seq)] * 11
            self._pub.publish(msg)
            self.sent.append((time.monotonic(), seq))
            seq += 1
            next_t += 1.0 / RATE_HZ
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -0.1:  # starved by the machine: resynchronise as the simulator does
                next_t = time.monotonic()

    def last_seq(self) -> int:
        return self.sent[-1][1] if self.sent else -1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class Counter(Node):
    """A subscriber that keeps every message's sequence number (or stamp) and then works
    ``work_s`` in Python, holding the interpreter lock as a converting or recording callback does."""

    def __init__(self, name: str, context, topic: str = TOPIC, work_s: float = 0.0) -> None:
        super().__init__(name, context=context)
        self.work_s = work_s
        self.seqs: list[int] = []
        self.stamps: list[int] = []
        self.create_subscription(JointState, topic, self._on_msg, R10)

    def _on_msg(self, msg: JointState) -> None:
        self.stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        if msg.header.frame_id.isdigit():
            self.seqs.append(int(msg.header.frame_id))
        end = time.perf_counter() + self.work_s
        while time.perf_counter() < end:
            pass


@contextmanager
def spinning(executor):
    """Spin ``executor`` on a thread; stop the spin loop before shutting the executor down."""
    if isinstance(executor, NodeExecutors):
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        try:
            yield executor
        finally:
            assert executor.shutdown(timeout_sec=5.0)
            thread.join(timeout=5.0)
        return
    stop = Future()
    thread = threading.Thread(target=executor.spin_until_future_complete, args=(stop,), daemon=True)
    thread.start()
    try:
        yield executor
    finally:
        stop.set_result(True)
        thread.join(timeout=5.0)
        executor.shutdown(timeout_sec=5.0)


def shares(counters, first: int, last: int) -> list[float]:
    window = set(range(first, last + 1))
    return [len(window.intersection(c.seqs)) / len(window) for c in counters]


def one_multi_threaded(nodes, context):
    ex = GuardedMultiThreadedExecutor(4, context=context)
    for n in nodes:
        ex.add_node(n)
    return ex


@pytest.mark.parametrize(("build", "work_ms"), [
    (make_executor, 0.0),  # bare subscribers
    (make_executor, 2.0),  # subscribers that work 2 ms per message (32 % of the interpreter's time)
    (one_multi_threaded, 0.0),  # the three nodes on one multi-threaded executor
], ids=["make_executor-bare", "make_executor-2ms", "multi_threaded-bare"])
@pytest.mark.node
def test_two_subscribers_get_every_message_of_an_80hz_stream(ros_context, build, work_ms):
    stream = Stream(ros_context)
    a = Counter("starvation_a", ros_context, work_s=work_ms * 1e-3)
    b = Counter("starvation_b", ros_context, work_s=work_ms * 1e-3)
    nodes = [stream, a, b]
    try:
        with spinning(build(nodes, ros_context)):
            # Discovery first: count from the first message published after both have one.
            assert wait_for(lambda: a.seqs and b.seqs), "no message within 30 s"
            first = stream.last_seq() + 1
            time.sleep(WINDOW_S)
            last = stream.last_seq()
            time.sleep(0.5)  # the window's last messages arrive
            got = shares([a, b], first, last)
        n = last - first + 1
        assert n >= 0.5 * WINDOW_S * RATE_HZ, f"the stream itself ran at {n / WINDOW_S:.0f} Hz"
        assert min(got) >= MIN_SHARE, (
            f"of {n} messages in {WINDOW_S} s, the subscribers got "
            f"{[f'{100 * s:.1f} %' for s in got]} ({work_ms} ms of work per message)")
    finally:
        destroy_nodes(nodes)


@pytest.mark.node
def test_multi_threaded_executor_waits_while_a_message_waits_for_a_worker(ros_context):
    """The busy loop itself, made to last: the only worker is busy (a callback of another group
    blocks), so a message's handler waits in the queue with its subscription out of the wait
    set. rclpy's stock executor spins meanwhile (a core's worth of CPU on an idle machine); the
    guarded one waits, and delivers the message once the worker is free."""
    node = Node("starvation_blocked", context=ros_context)
    talker = Node("starvation_talker", context=ros_context)
    started, release = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        release.wait(10.0)

    got: list[JointState] = []
    node.create_subscription(JointState, TOPIC, got.append, R10, callback_group=MutuallyExclusiveCallbackGroup())
    blocker = node.create_guard_condition(block, callback_group=MutuallyExclusiveCallbackGroup())
    pub = talker.create_publisher(JointState, TOPIC, R10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "used with a single thread": on purpose
        ex = GuardedMultiThreadedExecutor(1, context=ros_context)
    ex.add_node(node)
    ex.add_node(talker)
    try:
        with spinning(ex):
            assert wait_for(lambda: pub.get_subscription_count() > 0), "no match within 30 s"
            blocker.trigger()
            assert started.wait(10.0)
            pub.publish(JointState())
            time.sleep(0.3)
            cpu0, t0 = time.process_time(), time.monotonic()
            time.sleep(1.0)
            cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
            release.set()
            assert wait_for(lambda: got, 10.0), "the queued message was not delivered"
        assert cpu < 0.1, f"the executor used {cpu:.2f} s of CPU per second while a message waited for a worker"
    finally:
        release.set()
        destroy_nodes([node, talker])


@pytest.mark.graph
def test_composed_graph_nodes_and_two_probes_get_every_joint_state(ros_context):
    """The real simulator's physics thread publishing /joint_states, the real teleop node (joy mode,
    subscribed, idle) and the inference node (configured and active: a multi-threaded executor),
    brought up and spun by ``composition.Composition`` as ``l1flow eval --one-process`` does, and two
    bare probes counting by stamp."""
    with Composition(context=ros_context) as graph:
        sim = graph.start_nodes(["sim_robot_node", "teleop_node", "inference_node"], [
            "sim_robot_node:cameras:=[]",
            f"inference_node:checkpoint:={MODEL}",
            "inference_node:backend:=onnxruntime",
            "inference_node:threads:=1",
        ])[0]
        probes = [Counter(f"starvation_probe_{i}", ros_context, topic="/joint_states") for i in range(2)]
        graph.add(*probes)
        assert wait_for(lambda: all(p.stamps for p in probes)), "no /joint_states within 30 s"
        n0, ns0 = sim.robot.n_steps, sim.get_clock().now().nanoseconds
        time.sleep(WINDOW_S)
        n1, ns1 = sim.robot.n_steps, sim.get_clock().now().nanoseconds
        time.sleep(0.5)
        got = [len({s for s in p.stamps if ns0 <= s <= ns1}) for p in probes]
    published = n1 - n0
    assert published >= 0.5 * WINDOW_S * RATE_HZ, f"physics ran at {published / WINDOW_S:.0f} Hz"
    # +-1 message at each end of the window (a step's stamp is taken before its count).
    assert min(got) >= MIN_SHARE * (published - 2), (
        f"of {published} joint states published in {WINDOW_S} s, the probes got {got}")
