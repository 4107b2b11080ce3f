"""Every /diagnostics key of every node follows one scheme, ``<quantity>_<unit>_<stat>``
(``l1flow_ros.nodes.diagnostics.KEY``), and is in that module's table of keys.

The keys are collected where they are made, so a new key that breaks the scheme (or is
missing from the table) fails here: the engines' value functions without ROS for the
executor, inference and perception nodes (they build every key those nodes publish, with
the data that makes the per-stage and per-stream keys appear); what the teleop, recorder
and sim nodes publish, read off /diagnostics over real rclpy (their values are built in the
nodes; the sim's test is in the graph tier, as the simulator is)."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from conftest import wait_for
from test_perception_core import Clock, engine_assets, feed, make_engine, ms, raw_frames  # noqa: F401

from l1flow_ros.nodes import diagnostics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NODES = ("executor_node", "inference_node", "perception_node", "sim_robot_node", "teleop_node", "recorder_node")


def table() -> dict[str, list[str]]:
    """node -> the keys of its table in the diagnostics docstring (``<stage>`` etc. kept)."""
    out: dict[str, list[str]] = {}
    node = None
    for line in inspect.getdoc(diagnostics).splitlines():
        head = re.match(r"^(\w+_node) \(", line)
        if head:
            node = out.setdefault(head.group(1), [])
        row = re.match(r"^\| ``([^`]+)`` \|", line)
        if row and node is not None:
            node.append(row.group(1))
    return out


def check(node: str, keys) -> None:
    """``keys`` (what ``node`` publishes) all follow the scheme, and are exactly the node's table:
    each key matches one row, each row matches some key."""
    keys = list(keys)
    bad = [k for k in keys if not diagnostics.KEY.match(k)]
    assert not bad, f"{node}: keys outside <quantity>_<unit>_<stat>: {bad}"
    rows = table()[node]
    # A placeholder (<stage>, <stream>) stands for a name, a stream's with its slash.
    pattern = {r: re.compile("^" + re.sub(r"<\w+>", "[A-Za-z0-9_/]+", re.escape(r)) + "$") for r in rows}
    unlisted = [k for k in keys if not any(p.match(k) for p in pattern.values())]
    assert not unlisted, f"{node}: keys missing from the table in nodes/diagnostics.py: {unlisted}"
    unused = [r for r, p in pattern.items() if not any(p.match(k) for k in keys)]
    assert not unused, f"{node}: table rows it does not publish: {unused}"


# ---------------------------------------------------------------- core


@pytest.mark.core
def test_the_scheme_accepts_one_order_and_refuses_the_others():
    ok = ["period_error_us_p50", "inference_ms_p50", "inference_ms_last", "chunk_age_ms", "rate_hz",
          "missed_ticks", "chunks_accepted", "last_error", "front/color/age_s", "joint_states/age_s"]
    bad = ["period_error_p50_us", "inference_p50_ms", "age_s/front/color", "age_s_front", "ms_inference",
           "Chunk_age_ms", "chunk__age", "p99", "age_ms_p50_max"]
    assert [k for k in ok if not diagnostics.KEY.match(k)] == []
    assert [k for k in bad if diagnostics.KEY.match(k)] == []
    assert set(table()) == set(NODES)
    for node, rows in table().items():  # the table itself follows the scheme
        assert len(rows) == len(set(rows)), node
        for r in rows:
            assert diagnostics.KEY.match(re.sub(r"<\w+>", "front/color", r)), (node, r)


@pytest.mark.core
def test_executor_keys():
    from l1flow_ros.control.loop import ControlLoop
    from l1flow_ros.control.safety import Limits
    from l1flow_ros.control.scheduler import ChunkScheduler, SchedulerConfig
    from l1flow_ros.control.status import summary
    from l1flow_ros.control.stream import CommandStream

    sched = ChunkScheduler(SchedulerConfig(names=("x", "grip")), Limits.build(2, gripper_indices=(1,)))
    stream = CommandStream(sched, "forward_position")
    timing = ControlLoop(2_000_000, lambda: None).timing_stats()  # the loop's own keys feed summary
    _, _, values = summary(stream.report(), sched.stats(), timing, now_ns=0, output="forward_position",
                           output_topic="/out", rate_hz=500.0, new_missed=0, replan_due=True)
    check("executor_node", values)


@pytest.mark.core
def test_inference_keys(tmp_path):
    from l1flow_ros.inference.config import InferenceConfig
    from l1flow_ros.inference.service import InferenceService
    from l1flow_ros.inference.synthetic import make_bundle

    make_bundle(tmp_path / "a", seed=1)
    cfg = InferenceConfig(threads=1, warmup_iterations=1)
    svc = InferenceService()
    try:
        check("inference_node", svc.values(cfg, 0))  # nothing loaded: the same keys
        runner = svc.load(str(tmp_path / "a"), cfg)
        t_obs = 1_700_000_000_000_000_000
        svc.infer(np.zeros(runner.embed_dim, np.float32), t_obs, runner.fingerprint, cfg, now_ns=t_obs)
        svc.published(t_obs, t_obs + 1_000_000)
        values = svc.values(cfg, 2)
        assert values["embeddings_overwritten"] == "2" and values["chunks"] == "1"
        check("inference_node", values)
    finally:
        svc.close()


@pytest.mark.core
def test_perception_keys(engine_assets):  # noqa: F811
    clock = Clock()
    eng = make_engine(engine_assets, clock=clock)
    stamp = ms(1000)
    s, _ = feed(eng, raw_frames(stamp=stamp), stamp)
    clock.ns = stamp + ms(30)
    eng.record(eng.step(s))
    values = eng.values(clock.ns)
    # Every stage timed, every stream aged: the keys the node publishes once embeddings flow.
    assert {k for k in values if k.endswith("/age_s")} == {f"{st}/age_s" for st in eng.streams}
    assert sum(k.endswith("_ms_p50") for k in values) == 5
    check("perception_node", values)


# ---------------------------------------------------------------- node


def published_keys(ctx, spin_nodes, nodes) -> dict[str, list[str]]:
    """node name -> the keys of its first /diagnostics status, ``nodes`` spun with a probe."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    probe = rclpy.create_node("diag_keys_probe", context=ctx)
    got: dict[str, list[str]] = {}

    def on_diag(msg):
        for st in msg.status:
            got.setdefault(st.name, [kv.key for kv in st.values])

    probe.create_subscription(DiagnosticArray, diagnostics.TOPIC, on_diag, 10)
    spin_nodes(*nodes, probe)
    want = {n.get_name() for n in nodes}
    assert wait_for(lambda: want <= set(got)), f"no /diagnostics from {want - set(got)}"
    return got


def params(**kw):
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in kw.items()]


@pytest.mark.node
def test_teleop_and_recorder_keys(ros_context, spin_nodes, tmp_path):
    from l1flow_ros.nodes.recorder_node import RecorderNode
    from l1flow_ros.nodes.teleop_node import TeleopNode

    got = published_keys(ros_context, spin_nodes, [
        TeleopNode(context=ros_context),
        RecorderNode(context=ros_context, parameter_overrides=params(output_dir=str(tmp_path / "ep")))])
    check("teleop_node", got["teleop_node"])
    check("recorder_node", got["recorder_node"])


@pytest.mark.graph  # the MuJoCo simulator
def test_sim_keys(ros_context, spin_nodes):
    from l1flow_ros.nodes.sim_robot_node import SimRobotNode

    node = SimRobotNode(context=ros_context, parameter_overrides=params(cameras=[], diagnostics_rate_hz=5.0))
    check("sim_robot_node", published_keys(ros_context, spin_nodes, [node])["sim_robot_node"])
