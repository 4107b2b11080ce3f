"""Checkpoint hot-swap over real rclpy while embeddings flow and chunks are consumed.

A test node plays the perception node: it publishes embeddings at a fixed rate,
stamped with the fingerprint of the bundle last announced on /l1flow/checkpoint
(switching after a short encoder-load delay, as a real perception node does). The
swap goes through the SetParameters service, as `ros2 param set` does.

Shown: no gap between consecutive chunks longer than two planning periods
(n_action_steps * dt) across swaps; every chunk carries the fingerprint of the
embedding it was made from, and its actions are what that head computes; each bad
checkpoint is rejected with a reason while the old policy keeps running.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for

from l1flow_ros.inference.synthetic import TINY_ACTION, TINY_OBS, make_bundle

EMBED_PERIOD = 0.05  # s, the fake perception rate
ENCODER_SWITCH_DELAY = 0.15  # s, the fake perception's "encoder load" time
PLANNING_PERIOD = TINY_ACTION.n_action_steps * TINY_ACTION.dt


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.node]


@pytest.fixture
def older_objects_frozen():
    """What earlier tests left in this process (torch, MuJoCo, open3d, their nodes: some 300 000
    objects after the other node tests) is kept out of the collector while the stream is timed:
    a full collection scanning it stopped every thread for 0.35 s on a loaded 2-core machine,
    a gap no node of this test makes (each node runs in a process of its own when deployed).
    Objects made from here on are collected as usual."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("swap")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        make_bundle(root / name, seed=seed)
        out[name] = root / name
    # Bad checkpoints, one per rejection reason.
    out["missing"] = root / "does_not_exist"
    shutil.copytree(root / "a", root / "corrupt")
    (root / "corrupt" / "manifest.json").write_text('{"format_version": 1, "observation": ')
    out["corrupt"] = root / "corrupt"
    shutil.copytree(root / "a", root / "badweights")
    w = (root / "badweights" / "weights.safetensors").read_bytes()
    (root / "badweights" / "weights.safetensors").write_bytes(w[:100] + b"\0" * (len(w) - 100))
    out["badweights"] = root / "badweights"
    make_bundle(root / "nan", seed=3, poison_nan=True)
    out["nan"] = root / "nan"
    make_bundle(root / "dims", seed=4, action=dataclasses.replace(TINY_ACTION, names=("j0", "j1", "j2"),
                                                                      gripper_indices=()))
    out["dims"] = root / "dims"
    make_bundle(root / "obs", seed=5, obs=dataclasses.replace(TINY_OBS, cameras=("left", "right")))
    out["obs"] = root / "obs"
    return out


class FakePerception:
    """Publishes embeddings stamped with the announced checkpoint's fingerprint; records what it sent."""

    def __init__(self, ctx) -> None:
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.node = rclpy.create_node("fake_perception", context=ctx)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub = self.node.create_publisher(Image, "/l1flow/embedding", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(String, "/l1flow/checkpoint", self._on_checkpoint, latched)
        self.fp = ""
        self.old_fp = ""  # the previous encoder's, still in flight for a while after a switch
        self.sent: dict[int, tuple[str, np.ndarray]] = {}  # stamp -> (fingerprint, embedding)
        self._rng = np.random.default_rng(0)
        self._n = 0
        self.node.create_timer(EMBED_PERIOD, self._tick)

    def _on_checkpoint(self, msg) -> None:
        from l1flow_ros.policy.bundle import read_manifest

        fp = read_manifest(msg.data, check_weights=False).fingerprint
        # A real perception node needs a moment to load the new encoder.
        threading.Timer(ENCODER_SWITCH_DELAY, self._switch, args=(fp,)).start()

    def _switch(self, fp: str) -> None:
        self.old_fp, self.fp = self.fp, fp

    def _tick(self) -> None:
        from l1flow_ros.msgs.chunk_conv import embedding_to_msg

        if not self.fp:
            return
        self._n += 1
        fp = self.fp
        # Adversarial traffic the inference node must drop: every 5th embedding comes from
        # an unknown checkpoint, every 3rd from the previous encoder (late frames).
        if self._n % 5 == 0:
            fp = "f" * 16
        elif self._n % 3 == 0 and self.old_fp:
            fp = self.old_fp
        stamp = self.node.get_clock().now().nanoseconds
        e = self._rng.standard_normal(32).astype(np.float32)
        self.sent[stamp] = (fp, e)
        self.pub.publish(embedding_to_msg(e, stamp, fp))


def test_hot_swap_under_flow(older_objects_frozen, ros_context, spin_nodes, bundles):
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from trajectory_msgs.msg import JointTrajectory

    from l1flow_ros.inference.runner import PolicyRunner
    from l1flow_ros.msgs.chunk_conv import stamp_to_ns
    from l1flow_ros.nodes.inference_node import InferenceNode
    from l1flow_ros.policy.bundle import read_manifest

    fps = {k: read_manifest(bundles[k]).fingerprint for k in ("a", "b")}
    assert fps["a"] != fps["b"]
    node = InferenceNode(context=ros_context, parameter_overrides=[
        Parameter("checkpoint", value=str(bundles["a"])), Parameter("threads", value=1),
        Parameter("warmup_iterations", value=2)])
    perception = FakePerception(ros_context)
    consumer = rclpy.create_node("chunk_consumer", context=ros_context)
    received: list[tuple[float, object]] = []
    consumer.create_subscription(JointTrajectory, "/l1flow/action_chunk",
                                 lambda m: received.append((time.monotonic(), m)),
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    client = AsyncParameterClient(consumer, "inference_node")
    spinning = spin_nodes(node, perception.node, consumer)

    def set_checkpoint(path) -> tuple[bool, str]:
        fut = client.set_parameters([Parameter("checkpoint", value=str(path))])
        assert wait_for(fut.done), "SetParameters did not answer"
        r = fut.result().results[0]
        return r.successful, r.reason

    def chunks_with(fp: str) -> int:
        return sum(m.header.frame_id == fp for _, m in received)

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert client.wait_for_services(timeout_sec=15.0)
    assert wait_for(lambda: chunks_with(fps["a"]) >= 10), "no chunks from checkpoint a"
    t_start = received[0][0]

    ok, reason = set_checkpoint(bundles["b"])
    assert ok, reason
    assert wait_for(lambda: chunks_with(fps["b"]) >= 10), "never switched to checkpoint b"
    assert node.service.active.fingerprint == fps["b"] and node.service.pending is None

    for bad in ("missing", "corrupt", "badweights", "nan", "dims", "obs"):
        n_before = chunks_with(fps["b"])
        ok, reason = set_checkpoint(bundles[bad])
        assert not ok and reason, f"bad checkpoint {bad!r} was accepted"
        assert node.get_parameter("checkpoint").value == str(bundles["b"])
        assert wait_for(lambda n=n_before: chunks_with(fps["b"]) >= n + 3), f"old policy stopped after {bad!r}"

    ok, reason = set_checkpoint(bundles["a"])  # and back
    assert ok, reason
    n_a = chunks_with(fps["a"])
    assert wait_for(lambda: chunks_with(fps["a"]) >= n_a + 10), "never switched back to a"
    t_end = received[-1][0]
    assert node.service.counts["unknown_fingerprint"] > 0  # foreign / late embeddings were dropped
    spinning.close()  # stopped before the records are checked

    # 1. The executor never starves: no gap longer than two planning periods.
    times = np.array([t for t, _ in received if t_start <= t <= t_end])
    gaps = np.diff(times)
    assert gaps.max() <= 2 * PLANNING_PERIOD, f"gap of {gaps.max():.3f} s in the chunk stream"

    # 2. No chunk from a mismatched encoder / head pair: each chunk carries the fingerprint
    # of the embedding it answers ...
    segments: list[tuple[str, list]] = []  # consecutive chunks of one loaded head: a, b, a
    for _, m in received:
        stamp = stamp_to_ns(m.header.stamp)
        assert stamp in perception.sent, "chunk for an observation never sent"
        fp_sent, _ = perception.sent[stamp]
        assert m.header.frame_id == fp_sent, "chunk decoded by another checkpoint's head"
        if not segments or segments[-1][0] != fp_sent:
            segments.append((fp_sent, []))
        segments[-1][1].append(m)
    assert [fp for fp, _ in segments] == [fps["a"], fps["b"], fps["a"]]
    # ... and its actions are exactly what that checkpoint's head computes: each loaded head
    # draws its noise from a fresh generator (seed 0), one draw per chunk, so a replay of
    # its embeddings in order must give the same chunks.
    paths = {fps["a"]: bundles["a"], fps["b"]: bundles["b"]}
    for fp, msgs in segments:
        replay = PolicyRunner.open(paths[fp], "torch", seed=0, threads=1)
        for m in msgs:
            stamp = stamp_to_ns(m.header.stamp)
            want = replay.act(perception.sent[stamp][1], stamp).actions
            got = np.array([p.positions for p in m.points])
            np.testing.assert_allclose(got, want, atol=1e-5)
