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

import pytest

from l1flow_ros.graph import nodes_in_config
from l1flow_ros.graph.launcher import ENCLAVE_PREFIX, network_env, node_command, security_problems

pytestmark = pytest.mark.core

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
