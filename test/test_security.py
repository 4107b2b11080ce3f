"""Strangers stay out, as far as this middleware allows (docs/RELIABILITY.md, Security).

The Fast DDS of the ROS wheels is built without DDS security, so no enclave can be enforced
here; what ships is checked instead: ``l1flow run`` keeps discovery on this machine unless
told otherwise, every process of a graph gets its own SROS2 enclave when security is on
(launcher and launch files alike), and the shipped access-control policy says what the
documentation says it does.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from l1flow_ros.graph import nodes_in_config
from l1flow_ros.graph.launcher import ENCLAVE_PREFIX, network_env, node_command, security_problems

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "config" / "security" / "policy.xml"
CONTROLLER_TOPICS = {"/forward_position_controller/commands", "/arm_controller/joint_trajectory",
                     "/ee_delta_controller/commands"}


def _grants() -> dict[str, dict[str, set[str]]]:
    """enclave -> {"publish" | "subscribe" | "request" | "reply": names}."""
    out: dict[str, dict[str, set[str]]] = {}
    for enclave in ET.parse(POLICY).getroot().iter("enclave"):
        g = out.setdefault(enclave.get("path"), {k: set() for k in ("publish", "subscribe", "request", "reply")})
        for group in enclave.iter():
            for kind in g:
                if group.get(kind) == "ALLOW":
                    g[kind] |= {e.text for e in group}
    return out


@pytest.mark.core
def test_policy_gives_the_controller_topics_and_the_enable_service_only_to_their_owners():
    grants = _grants()
    deployed = nodes_in_config(ROOT / "config" / "policy.yaml")
    assert {ENCLAVE_PREFIX + n for n in deployed} <= set(grants)
    publishers = {e for e, g in grants.items() if g["publish"] & CONTROLLER_TOPICS}
    assert publishers == {ENCLAVE_PREFIX + "executor_node"}
    assert CONTROLLER_TOPICS <= grants[ENCLAVE_PREFIX + "executor_node"]["publish"]
    assert {e for e, g in grants.items() if "/l1flow/action_chunk" in g["publish"]} == {
        ENCLAVE_PREFIX + "inference_node"}
    assert {e for e, g in grants.items() if "/l1flow/checkpoint" in g["publish"]} == {
        ENCLAVE_PREFIX + "inference_node"}
    callers = {e for e, g in grants.items() if "/l1flow/executor/enable" in g["request"]}
    assert callers == {ENCLAVE_PREFIX + "operator"}
    setters = {e for e, g in grants.items() if "/inference_node/set_parameters" in g["request"]
               or "/inference_node/set_parameters_atomically" in g["request"]}
    assert setters == {ENCLAVE_PREFIX + "operator"}
    # Nobody has a wildcard that would let it publish or call everything.
    for e, g in grants.items():
        assert not {"*", "/*"} & (g["publish"] | g["request"]), e


@pytest.mark.core
def test_launcher_and_launch_files_run_each_node_in_its_enclave():
    cmd = node_command("executor_node", "/x/p.yaml", enclave=True)
    i = cmd.index("--enclave")
    assert cmd[i + 1] == "/l1flow/executor_node" and "--ros-args" in cmd[:i]
    assert "--enclave" not in node_command("executor_node", "/x/p.yaml")
    for launch in sorted((ROOT / "launch").glob("*.launch.py")):
        for call in ast.walk(ast.parse(launch.read_text())):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") in ("Node", "LifecycleNode"):
                kw = {k.arg: k.value for k in call.keywords}
                exe = ast.literal_eval(kw["executable"])
                assert ast.literal_eval(kw["ros_arguments"]) == ["--enclave", ENCLAVE_PREFIX + exe], launch


@pytest.mark.core
def test_a_keystore_without_the_enclaves_is_named_before_anything_starts(tmp_path):
    env = {"ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_KEYSTORE": str(tmp_path)}
    assert security_problems(["executor_node"], {}) == []  # security off: nothing to check
    lines = security_problems(["executor_node", "inference_node"], env)
    assert len(lines) == 3 and all(str(tmp_path) in ln for ln in lines)  # two nodes and the launcher
    for name in ("executor_node", "launcher"):
        d = tmp_path / "enclaves" / "l1flow" / name
        d.mkdir(parents=True)
        (d / "cert.pem").write_text("")
    (line,) = security_problems(["executor_node", "inference_node"], env)
    assert "/l1flow/inference_node" in line
    assert security_problems(["x"], {"ROS_SECURITY_ENABLE": "true"}) == [
        "ROS_SECURITY_ENABLE=true but ROS_SECURITY_KEYSTORE is not set"]


@pytest.mark.core
def test_l1flow_run_keeps_discovery_on_this_machine_unless_told(monkeypatch):
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.setenv("ROS_DOMAIN_ID", "17")
    assert network_env() == {"ROS_DOMAIN_ID": "17", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    assert network_env(domain_id=42, discovery_range="SUBNET") == {
        "ROS_DOMAIN_ID": "42", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    assert network_env()["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"  # the environment's stays
    with pytest.raises(ValueError, match="233"):
        network_env(domain_id=233)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "EVERYWHERE")
    with pytest.raises(ValueError, match="EVERYWHERE"):
        network_env()


STRANGER = """
import sys, time
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from trajectory_msgs.msg import JointTrajectory
from l1flow_ros.msgs.chunk_conv import chunk_to_msg
from l1flow_ros.spec import Chunk

rclpy.init()
node = rclpy.create_node("stranger")
pub = node.create_publisher(JointTrajectory, "/l1flow/action_chunk", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
end = time.monotonic() + 20.0
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    time.sleep(0.05)
n = int(sys.argv[1])
for i in range(n):  # each a chunk that would move the arm to the far corner
    t = node.get_clock().now().nanoseconds
    pub.publish(chunk_to_msg(Chunk(t, 0.1, np.tile([0.4, 0.4, 0.4, 1.0], (8, 1)), ("ee_x", "ee_y", "ee_z", "gripper"),
                                   fingerprint="5trange5trange55")))
    time.sleep(0.1)
print("sent", n, flush=True)
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.node
def test_the_executor_takes_no_chunk_of_a_stranger_process_when_fingerprints_are_listed(ros_context):
    """What works without DDS security: ``accept_fingerprints`` (the deployed bundles). A
    stranger process on the domain publishes chunks of another checkpoint: none is taken
    (measured: 0 of N accepted, the arm does not move); the deployed one's still is."""
    import subprocess
    import sys

    from test_executor_node import NAMES, Harness, diag_values, started

    ours = "0123456789abcdef"
    h = Harness(ros_context, accept_fingerprints=[ours])
    try:
        q0 = (0.0, 0.0, 0.3, -1.0)
        started(h, q0)
        n = 20
        out = subprocess.run([sys.executable, "-c", STRANGER, str(n)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and f"sent {n}" in out.stdout, out.stderr[-2000:]
        assert h.wait(lambda: h.node._stream.rejections >= n - 1, 10.0), h.node._stream.rejections  # depth 1: the
        # first may be overwritten before the executor reads it
        assert h.wait(lambda: int(diag_values(h.last_diag())["chunks_rejected"]) >= n - 1, 5.0)
        assert int(diag_values(h.last_diag())["chunks_accepted"]) == 0
        _, q = h.commands()
        np.testing.assert_allclose(q, np.tile(q0, (len(q), 1)), atol=1e-12)  # the arm never moved
        with h.lock:  # the reason was on /diagnostics in the periods of the rejections
            assert any("accept_fingerprints" in d.status[0].message for d in h.diags)
        # The deployed checkpoint's chunks still are taken.
        from l1flow_ros.msgs.chunk_conv import chunk_to_msg
        from l1flow_ros.spec import Chunk

        h.chunk_pub.publish(chunk_to_msg(Chunk(h.now(), 0.1, np.tile([0.1, 0.0, 0.3, -1.0], (8, 1)), tuple(NAMES),
                                               fingerprint=ours)))
        assert h.wait(lambda: h.last_cmd()[0] > 0.05, 5.0)
        assert h.wait(lambda: int(diag_values(h.last_diag())["chunks_accepted"]) == 1, 3.0)
    finally:
        h.close()
