"""Foundation: ROS 2 round trip on an isolated domain, colcon build, lint, CLI."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.mark.core
def test_isolated_domain():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    from l1flow_ros.graph.launcher import PRIVATE_DOMAINS, private_domain_id

    assert int(os.environ["ROS_DOMAIN_ID"]) in PRIVATE_DOMAINS
    assert {private_domain_id(pid) for pid in range(1000)} == set(PRIVATE_DOMAINS)


@pytest.mark.node
def test_joint_state_round_trip(ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    pub_node = rclpy.create_node("rt_pub", context=ros_context)
    sub_node = rclpy.create_node("rt_sub", context=ros_context)
    got = []
    sub_node.create_subscription(JointState, "/joint_states", got.append, 10)
    pub = pub_node.create_publisher(JointState, "/joint_states", 10)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(pub_node)
    ex.add_node(sub_node)
    sent = JointState()
    sent.name = ["joint_1", "joint_2", "joint_3"]
    sent.position = [0.1, -0.2, 0.3]
    sent.velocity = [1.0, 2.0, 3.0]
    sent.header.stamp.sec = 42
    deadline = time.monotonic() + 20.0
    while not got and time.monotonic() < deadline:
        pub.publish(sent)
        ex.spin_once(timeout_sec=0.05)
    ex.shutdown()
    pub_node.destroy_node()
    sub_node.destroy_node()
    assert got, "no JointState arrived over loopback"
    m = got[0]
    assert list(m.name) == sent.name
    assert list(m.position) == pytest.approx(sent.position)
    assert list(m.velocity) == pytest.approx(sent.velocity)
    assert m.header.stamp.sec == 42


@pytest.mark.graph
def test_colcon_build_installs_share_files(tmp_path):
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    # A copy of the package as a user would have it in their workspace.
    shutil.copytree(
        ROOT,
        ws / "src" / "l1flow_ros",
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "install", "log", "__pycache__", "*.egg-info", ".pytest_cache",
            ".ruff_cache", ".hypothesis", "runs", "out",
        ),
    )
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    r = subprocess.run(
        [str(VENV_BIN / "colcon"), "build", "--base-paths", "src", "--event-handlers", "console_direct-"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # Built as a ROS package (ament_python), not as plain Python.
    assert "l1flow_ros" in (r.stdout + r.stderr)
    share = ws / "install" / "l1flow_ros" / "share" / "l1flow_ros"
    assert (share / "package.xml").is_file()
    assert (ws / "install" / "l1flow_ros" / "share" / "ament_index" / "resource_index" / "packages" / "l1flow_ros").is_file()
    for sub, pattern in (("launch", "*.launch.py"), ("config", "*.yaml"), ("models", "*/manifest.json")):
        src = sorted(str(p.relative_to(ROOT / sub)) for p in (ROOT / sub).glob(pattern))
        assert src, f"{sub}/ has no {pattern}"
        inst = sorted(str(p.relative_to(share / sub)) for p in (share / sub).glob(pattern)) if (share / sub).is_dir() else []
        assert inst == src
    libdir = ws / "install" / "l1flow_ros" / "lib" / "l1flow_ros"
    for exe in ("perception_node", "inference_node", "executor_node", "l1flow"):
        assert (libdir / exe).is_file(), exe
    text = (ws / "install" / "l1flow_ros" / "share" / "colcon-core" / "packages" / "l1flow_ros").read_text()
    assert "rclpy" in text


@pytest.mark.core
def test_ruff_clean():
    r = subprocess.run(
        [str(VENV_BIN / "ruff"), "check", "l1flow_ros", "test", "bench", "launch", "setup.py"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.graph
def test_cli_help_lists_only_real_subcommands():
    from l1flow_ros import cli

    parser = cli.build_parser()
    text = parser.format_help()
    for mod in cli._subcommands():
        assert mod.NAME in text
    r = subprocess.run([str(VENV_BIN / "l1flow"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "usage: l1flow" in r.stdout


@pytest.mark.core
def test_package_xml_is_valid_for_colcon():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))
    assert pkg.name == "l1flow_ros"
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_python"
    deps = {d.name for d in pkg.exec_depends}
    for d in ("rclpy", "sensor_msgs", "std_msgs", "trajectory_msgs", "std_srvs", "diagnostic_msgs"):
        assert d in deps
