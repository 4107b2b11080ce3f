"""inference_node over real rclpy (Fast DDS, loopback): lifecycle, chunks, bad input, warm start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import Calls, matched, wait_for

from l1flow_ros.inference.synthetic import TINY_ACTION, make_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inf") / "a"
    make_bundle(d, seed=1)
    return d


class Rig:
    """The inference node plus a test node (publishers / recorders), spun as the package
    composes nodes (``spin_nodes``: the inference node gets its multi-threaded executor)."""

    def __init__(self, spin_nodes, ctx, overrides: dict) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from l1flow_ros.nodes.inference_node import InferenceNode

        params = [Parameter(k, value=v) for k, v in {"threads": 1, "warmup_iterations": 1,
                                                       "diagnostics_period": 0.2, **overrides}.items()]
        self.node = InferenceNode(context=ctx, parameter_overrides=params)
        self.io = rclpy.create_node("inference_test_io", context=ctx)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.chunks: list = []
        self.ckpts: list[str] = []
        self.diags: list = []
        self.chunk_sub = self.io.create_subscription(JointTrajectory, "/l1flow/action_chunk", self.chunks.append,
                                                     reliable)
        self.io.create_subscription(String, "/l1flow/checkpoint", lambda m: self.ckpts.append(m.data), latched)
        self.io.create_subscription(  # deep: a slow test thread loses no status
            DiagnosticArray, "/diagnostics",
            lambda m: self.diags.extend(s for s in m.status if s.name == "inference_node"),
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_emb = self.io.create_publisher(Image, "/l1flow/embedding", reliable)
        self.pub_tail = self.io.create_publisher(JointTrajectory, "/l1flow/executor/tail", reliable)
        self.spinning = spin_nodes(self.node, self.io)

    @staticmethod
    def wait(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
        return wait_for(cond, timeout)

    def wait_connected(self) -> None:
        """The embedding and chunk topics matched both ways (once configured)."""
        assert self.wait(lambda: self.node._pub_chunk is not None and self.node._sub_emb is not None
                         and matched(self.pub_emb, self.node._sub_emb, self.node._pub_chunk, self.chunk_sub)), \
            "no discovery"


def _emb_msg(e: np.ndarray, stamp_ns: int, fp: str):
    from l1flow_ros.msgs.chunk_conv import embedding_to_msg

    return embedding_to_msg(e, stamp_ns, fp)


@pytest.mark.node
def test_lifecycle_chunk_contract_and_same_result_as_runner(ros_context, spin_nodes, bundle):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from l1flow_ros.inference.runner import PolicyRunner
    from l1flow_ros.msgs.chunk_conv import chunk_from_msg

    rig = Rig(spin_nodes, ros_context, {"checkpoint": str(bundle), "seed": 5})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rig.wait(lambda: rig.ckpts), "checkpoint path not published on configure"
    assert rig.ckpts[-1] == str(bundle.resolve())
    fp = rig.node.service.active.fingerprint
    e = np.linspace(-1, 1, 32).astype(np.float32)
    stamp = 1_700_000_000_123_456_789
    # Inactive: embeddings are ignored (one taken by the node's subscription, no chunk from it).
    assert rig.wait(lambda: matched(rig.pub_emb, rig.node._sub_emb)), "no discovery"
    taken = Calls(rig.node._sub_emb)
    rig.pub_emb.publish(_emb_msg(e, stamp, fp))
    assert rig.wait(lambda: taken.n == 1), "the embedding did not reach the node"
    assert not rig.chunks and rig.node._mailbox.take() is None
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.wait_connected()
    rig.pub_emb.publish(_emb_msg(e, stamp, fp))
    assert rig.wait(lambda: rig.chunks), "no action chunk"
    msg = rig.chunks[0]
    chunk = chunk_from_msg(msg, TINY_ACTION.names)
    assert chunk.t_obs_ns == stamp and msg.header.frame_id == fp
    assert chunk.dt == pytest.approx(TINY_ACTION.dt) and chunk.actions.shape == (8, 4)
    expected = PolicyRunner.open(bundle, "torch", seed=5, threads=1).act(e, stamp)
    np.testing.assert_allclose(chunk.actions, expected.actions, atol=1e-5)
    assert rig.wait(lambda: any(kv.key == "inference_ms_p50" and kv.value != "nan"
                                for d in rig.diags[-1:] for kv in d.values))
    # Read-only parameters (the descriptor says so) cannot change; live ones can, and the config follows.
    assert rig.node.describe_parameter("backend").read_only
    assert not any(rig.node.describe_parameter(n).read_only
                   for n in ("checkpoint", "warm_start", "max_observation_age"))
    res = rig.node.set_parameters([Parameter("backend", value="onnxruntime")])
    assert not res[0].successful and "read-only" in res[0].reason
    assert rig.node.cfg.backend == "torch"
    res = rig.node.set_parameters([Parameter("max_observation_age", value=5.0)])
    assert res[0].successful and rig.node.cfg.max_observation_age == 5.0
    res = rig.node.set_parameters([Parameter("max_observation_age", value=-1.0)])  # validate() refuses it
    assert not res[0].successful and "max_observation_age" in res[0].reason
    assert rig.node.cfg.max_observation_age == 5.0
    # Cleanup frees the policy: no more chunks.
    assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert rig.node.service.active is None


@pytest.mark.node
def test_bad_input_reported_and_node_keeps_running(ros_context, spin_nodes, bundle):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn

    rig = Rig(spin_nodes, ros_context, {"checkpoint": str(bundle)})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.wait_connected()
    fp = rig.node.service.active.fingerprint
    good = np.zeros(32, np.float32)
    bad_nan = _emb_msg(good, 1000, fp)
    bad_nan.data = np.full(32, np.nan, "<f4").tobytes()
    bad_dim = _emb_msg(np.zeros(7, np.float32), 2000, fp)
    foreign = _emb_msg(good, 3000, "0123456789abcdef")
    c = rig.node.service.counts
    # One at a time, each once the node has dropped the one before (the node keeps only the
    # newest embedding: sent together, one could replace another before it is looked at).
    for m, reason in ((bad_nan, "invalid_embedding"), (bad_dim, "invalid_embedding"),
                      (foreign, "unknown_fingerprint")):
        n = sum(c[k] for k in ("invalid_embedding", "unknown_fingerprint"))
        rig.pub_emb.publish(m)
        assert rig.wait(lambda n=n: sum(c[k] for k in ("invalid_embedding", "unknown_fingerprint")) > n), \
            f"{reason}: the embedding was not dropped"
    assert c["invalid_embedding"] == 2 and c["unknown_fingerprint"] == 1
    # Each new problem is reported at once: an ERROR (invalid) and a WARN (unknown checkpoint).
    assert rig.wait(lambda: {DiagnosticStatus.ERROR, DiagnosticStatus.WARN} <= {d.level for d in rig.diags})
    assert not rig.chunks, "a chunk was built from invalid data"
    rig.pub_emb.publish(_emb_msg(good, 4000, fp))
    assert rig.wait(lambda: rig.chunks), "node stopped after bad input"
    assert rig.chunks[0].header.stamp.nanosec == 4000


@pytest.mark.node
def test_configure_fails_cleanly_on_bad_checkpoint(ros_context, spin_nodes, tmp_path):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn

    make_bundle(tmp_path / "nan", poison_nan=True)
    rig = Rig(spin_nodes, ros_context, {"checkpoint": str(tmp_path / "nan")})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert rig.node.service.active is None
    assert rig.wait(lambda: any(d.level == DiagnosticStatus.ERROR and "non-finite" in d.message
                                for d in rig.diags))


@pytest.mark.node
def test_swap_that_fails_to_load_is_reported_and_the_parameter_put_back(ros_context, spin_nodes, bundle,
                                                                         tmp_path):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    make_bundle(tmp_path / "b", seed=2)
    rig = Rig(spin_nodes, ros_context, {"checkpoint": str(bundle)})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.wait_connected()
    svc = rig.node.service
    fp = svc.active.fingerprint
    # b passes every check; opening it fails on the swap worker, as a backend out of memory does.
    opened, real_open = [], svc._open

    def failing_open(path, cfg):
        opened.append(path)
        if path == str(tmp_path / "b"):
            raise RuntimeError("out of device memory")
        return real_open(path, cfg)

    svc._open = failing_open
    res = rig.node.set_parameters([Parameter("checkpoint", value=str(tmp_path / "b"))])
    assert res[0].successful, res[0].reason
    assert rig.wait(lambda: any(d.level == DiagnosticStatus.ERROR and "failed to load" in d.message
                                for d in rig.diags))
    assert rig.wait(lambda: rig.node.get_parameter("checkpoint").value == str(bundle)), "checkpoint not put back"
    assert rig.node.cfg.checkpoint == str(bundle)
    svc._swap_thread.join(10.0)
    assert opened == [str(tmp_path / "b")], "putting the parameter back started another swap"
    assert svc.active.fingerprint == fp and svc.pending is None and svc.counts["swaps"] == 0
    rig.pub_emb.publish(_emb_msg(np.zeros(32, np.float32), 5000, fp))
    assert rig.wait(lambda: rig.chunks), "the old policy stopped"
    assert rig.chunks[0].header.frame_id == fp


@pytest.mark.node
def test_warm_start_from_executor_tail(ros_context, spin_nodes, bundle):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from l1flow_ros.inference.runner import PolicyRunner, Tail
    from l1flow_ros.msgs.chunk_conv import chunk_from_msg, ns_to_duration, ns_to_stamp

    rig = Rig(spin_nodes, ros_context, {"checkpoint": str(bundle), "seed": 9, "prefix_conditioning": False,
                                        "n_action_steps": 0})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.wait_connected()
    assert rig.wait(lambda: rig.pub_tail.get_subscription_count() > 0)
    fp = rig.node.service.active.fingerprint
    t_obs = rig.node.get_clock().now().nanoseconds  # a fresh tail: the executor runs a plan
    # Tail in a shuffled joint order, due from t_obs on, 20 ms apart.
    names = list(TINY_ACTION.names)[::-1]
    tail = JointTrajectory()
    tail.header.stamp = ns_to_stamp(t_obs)
    tail.joint_names = names
    rows = []
    for k in range(30):
        p = JointTrajectoryPoint()
        row = [0.1 * np.sin(0.2 * k + j) for j in range(4)]
        rows.append(row[::-1])  # in policy order
        p.positions = row
        p.time_from_start = ns_to_duration(k * 20_000_000)
        tail.points.append(p)
    rig.pub_tail.publish(tail)
    assert rig.wait(lambda: rig.node.service.tail is not None)
    e = np.full(32, 0.3, np.float32)
    rig.pub_emb.publish(_emb_msg(e, t_obs, fp))
    assert rig.wait(lambda: rig.chunks)
    got = chunk_from_msg(rig.chunks[0], TINY_ACTION.names).actions
    ref = PolicyRunner.open(bundle, "torch", seed=9, threads=1)
    times = t_obs + np.arange(30, dtype=np.int64) * 20_000_000
    warm = ref.act(e, t_obs, Tail(times, np.asarray(rows))).actions
    cold = PolicyRunner.open(bundle, "torch", seed=9, threads=1).act(e, t_obs).actions
    np.testing.assert_allclose(got, warm, atol=1e-5)
    assert np.max(np.abs(got - cold)) > 1e-4

    # Prefix conditioning on (live): the chunk keeps the running plan for the inference delay d
    # (measured from the observation's age, here >= 100 ms: d >= 2 at dt 50 ms) and says so.
    assert rig.node.set_parameters([Parameter("prefix_conditioning", value=True)])[0].successful
    t_obs2 = rig.node.get_clock().now().nanoseconds - 100_000_000
    tail.header.stamp = ns_to_stamp(t_obs2)
    rig.pub_tail.publish(tail)
    assert rig.wait(lambda: rig.node.service.tail.times_ns[0] == t_obs2)
    rig.pub_emb.publish(_emb_msg(e, t_obs2, fp))
    assert rig.wait(lambda: len(rig.chunks) >= 2)
    d = rig.node.service.delay_steps
    assert d is not None and d >= 2
    got = chunk_from_msg(rig.chunks[1], TINY_ACTION.names).actions
    want = ref.act(e, t_obs2, Tail(t_obs2 + times - t_obs, np.asarray(rows)), d).actions[:d]
    np.testing.assert_allclose(got[:d], want, atol=1e-6)
    # The kept prefix is the running plan at the chunk's own times (action k at t_obs + (k + 1) dt).
    due = t_obs2 + (np.arange(d) + 1) * int(TINY_ACTION.dt * 1e9)
    plan = np.stack([np.interp(due, t_obs2 + times - t_obs, np.asarray(rows)[:, j]) for j in range(4)], 1)
    np.testing.assert_allclose(got[:d], plan, atol=1e-6)


@pytest.mark.core
def test_tail_from_msg_reorders_and_rejects():
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from l1flow_ros.msgs.chunk_conv import MessageError, ns_to_duration, ns_to_stamp, tail_from_msg

    msg = JointTrajectory()
    msg.header.stamp = ns_to_stamp(1_000)
    msg.joint_names = ["b", "a"]
    for k in range(3):
        p = JointTrajectoryPoint()
        p.positions = [10.0 + k, float(k)]
        p.time_from_start = ns_to_duration(100 * (k + 1))
        msg.points.append(p)
    tail = tail_from_msg(msg, ("a", "b"))
    np.testing.assert_array_equal(tail.times_ns, [1_100, 1_200, 1_300])
    np.testing.assert_array_equal(tail.actions[:, 0], [0.0, 1.0, 2.0])
    with pytest.raises(MessageError, match="not the policy"):
        tail_from_msg(msg, ("a", "c"))
    msg.points[2].time_from_start = ns_to_duration(150)
    with pytest.raises(MessageError, match="increasing"):
        tail_from_msg(msg, ("a", "b"))
    msg.points[1].positions = [float("nan"), 0.0]
    with pytest.raises(MessageError):
        tail_from_msg(msg, ("a", "b"))


@pytest.mark.node
def test_onnxruntime_backend_needs_export_then_runs(ros_context, spin_nodes, tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from l1flow_ros.inference.export import export_bundle
    from l1flow_ros.inference.runner import PolicyRunner
    from l1flow_ros.msgs.chunk_conv import chunk_from_msg

    raw, exported = tmp_path / "raw", tmp_path / "exported"
    make_bundle(raw, seed=6)
    make_bundle(exported, seed=6)
    export_bundle(exported)
    rig = Rig(spin_nodes, ros_context, {"checkpoint": str(raw), "backend": "onnxruntime", "seed": 2})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert rig.wait(lambda: any("l1flow export" in d.message for d in rig.diags))
    # While unconfigured, a set is validated too: the unexported bundle is refused again.
    assert not rig.node.set_parameters([Parameter("checkpoint", value=str(raw))])[0].successful
    assert rig.node.set_parameters([Parameter("checkpoint", value=str(exported))])[0].successful
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.wait_connected()
    fp = rig.node.service.active.fingerprint
    e = np.linspace(0, 1, 32).astype(np.float32)
    rig.pub_emb.publish(_emb_msg(e, 77, fp))
    assert rig.wait(lambda: rig.chunks)
    got = chunk_from_msg(rig.chunks[0], TINY_ACTION.names).actions
    want = PolicyRunner.open(exported, "torch", seed=2, threads=1).act(e, 77).actions
    np.testing.assert_allclose(got, want, atol=1e-4)  # onnxruntime node == torch reference
