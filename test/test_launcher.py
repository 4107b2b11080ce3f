"""``l1flow run``: one OS process per node, lifecycle activation, clean stop, crashes reported.

Each test runs the real ``l1flow run`` command (real node processes over Fast DDS on this
test's own ROS domain) and watches it from outside: its output, its exit code and its
children's pids.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import wait_for

from l1flow_ros.graph import LIFECYCLE_NODES, NODE_CLASSES, node_class
from l1flow_ros.graph.launcher import node_command, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "default"
RUNNING = re.compile(r"l1flow run: running (.*); Ctrl-C stops")


def _params(tmp_path: Path, nodes: dict[str, dict]) -> Path:
    p = tmp_path / "graph.yaml"
    p.write_text(yaml.safe_dump({k: {"ros__parameters": v} for k, v in nodes.items()}))
    return p


class Run:
    """``l1flow run`` in a subprocess, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "l1flow_ros.cli", "run", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match:
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; output:\n{self.text}")

    def pids(self) -> dict[str, int]:
        m = self.wait_for(RUNNING.pattern)
        return {n: int(p) for n, p in re.findall(r"(\w+) \(pid (\d+)\)", m.group(1))}

    def finish(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5.0)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()  # whatever the test left running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pids, timeout: float = 20.0) -> bool:
    return wait_for(lambda: not any(_alive(p) for p in pids), timeout)


def _light_graph(tmp_path: Path) -> Path:
    """Two quick-starting nodes: the executor (500 Hz thread) and joy teleop."""
    return _params(tmp_path, {
        "executor_node": {"joint_names": ["a", "b"], "lower": [-1.0, -1.0], "upper": [1.0, 1.0],
                          "max_velocity": [1.0, 1.0], "max_acceleration": [10.0, 10.0]},
        "teleop_node": {"mode": "joy"},
    })


@pytest.mark.core
def test_node_commands_and_overrides():
    cmd = node_command("executor_node", "/x/p.yaml", ["rate_hz:=250.0"])
    assert cmd[-5:] == ["--ros-args", "--params-file", "/x/p.yaml", "-p", "rate_hz:=250.0"]
    assert cmd[0].endswith("executor_node") or cmd[-6:-5] == ["l1flow_ros.nodes.executor_node"]
    assert parse_overrides(["a_node:x:=1", "a_node:y:=[1, 2]", "b_node:z:=s"]) == {
        "a_node": ["x:=1", "y:=[1, 2]"], "b_node": ["z:=s"]}
    with pytest.raises(ValueError, match="NODE:NAME:=VALUE"):
        parse_overrides(["no_separator"])


@pytest.mark.core
def test_lifecycle_set_matches_the_classes():
    from rclpy.lifecycle import LifecycleNode

    assert {n for n in NODE_CLASSES if issubclass(node_class(n), LifecycleNode)} == set(LIFECYCLE_NODES)


@pytest.mark.graph
def test_run_starts_each_node_in_its_own_process_and_stops_on_sigint(tmp_path):
    path = _params(tmp_path, {
        "executor_node": {"joint_names": ["ee_x", "ee_y", "ee_z", "gripper"], "lower": [-0.5, 0.4, 0.05, -1.0],
                          "upper": [0.5, 1.0, 0.5, 1.0], "max_velocity": [0.5, 0.5, 0.5, 10.0],
                          "max_acceleration": [5.0, 5.0, 5.0, 100.0]},
        "inference_node": {"checkpoint": str(BUNDLE), "backend": "onnxruntime", "threads": 1},
    })
    with Run(str(path)) as run:
        pids = run.pids()
        assert set(pids) == {"executor_node", "inference_node"}
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        assert all(_alive(p) for p in pids.values())
        # The lifecycle node was brought to active by the launcher, through its services.
        run.wait_for(r"^\[launcher\] inference_node: configured and active")
        run.wait_for(r"^\[inference_node\] .*loaded .*default")  # node output comes prefixed
        run.wait_for(r"^\[executor_node\] ")
        time.sleep(1.0)
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 0, run.text
        assert _wait_gone(pids.values()), "a node outlived l1flow run"
        assert "exit codes" not in run.text, run.text  # every node exited 0
        assert "Traceback" not in run.text, run.text
        assert "context is invalid" not in run.text, run.text  # no publish after the context is gone


@pytest.mark.graph
def test_a_node_that_dies_is_reported_and_the_rest_stopped(tmp_path):
    with Run(str(_light_graph(tmp_path))) as run:
        pids = run.pids()
        time.sleep(1.0)
        os.kill(pids["teleop_node"], signal.SIGKILL)
        assert run.finish() == 1, run.text
        assert "teleop_node exited with code -9" in run.text
        assert _wait_gone(pids.values())


@pytest.mark.graph
def test_sigterm_stops_the_graph_and_no_node_outlives_a_killed_launcher(tmp_path):
    with Run(str(_light_graph(tmp_path))) as run:
        pids = run.pids()
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0, run.text
        assert _wait_gone(pids.values())
    with Run(str(_light_graph(tmp_path))) as run:
        pids = run.pids()
        run.proc.kill()  # no chance to clean up: the nodes are tied to it
        run.finish()
        assert _wait_gone(pids.values()), "nodes outlived a SIGKILLed launcher"


@pytest.mark.graph
def test_a_lifecycle_node_that_cannot_configure_fails_the_run(tmp_path):
    path = _params(tmp_path, {"inference_node": {"checkpoint": str(tmp_path / "no_such_bundle")}})
    with Run(str(path)) as run:
        assert run.finish(timeout=180.0) == 1, run.text
        assert "inference_node: configure failed" in run.text, run.text


@pytest.mark.graph
def test_one_node_restarts_while_the_rest_run(tmp_path):
    from l1flow_ros.graph.launcher import ProcessGraph

    with ProcessGraph(_light_graph(tmp_path), log_file=tmp_path / "nodes.log") as g:
        first = {n: p.popen.pid for n, p in g.procs.items()}
        g.wait_discovered()
        g.restart_node("teleop_node")
        assert g.exit_codes["teleop_node"] == 0  # stopped cleanly by SIGINT
        assert g.procs["teleop_node"].popen.pid != first["teleop_node"]
        assert g.procs["executor_node"].popen.pid == first["executor_node"]
        time.sleep(1.0)
        assert not g.exited()
        g.check()
    assert set(g.exit_codes) == {"executor_node", "teleop_node"}
    assert "[teleop_node]" in (tmp_path / "nodes.log").read_text()


@pytest.mark.graph
def test_a_lifecycle_node_whose_services_never_appear_is_reported_with_what_discovery_saw(tmp_path, monkeypatch):
    """Half the timeout without a change_state service: the launcher logs what discovery sees
    of the node and makes its clients anew; at the timeout the error says it too. Here the
    node is started with its services on another domain, so discovery never shows them. The
    launcher gets a domain of its own too: on the tests' domain an inference node an earlier
    test killed stays in discovery until its lease ends, services included."""
    from l1flow_ros.graph.launcher import GraphError, ProcessGraph, private_domain_id

    path = _params(tmp_path, {"inference_node": {"checkpoint": str(BUNDLE), "backend": "onnxruntime"}})
    g = ProcessGraph(path, log_file=tmp_path / "nodes.log", lifecycle_timeout=6.0)
    g.env["ROS_DOMAIN_ID"] = str(private_domain_id(os.getpid() + 1))  # the node's
    monkeypatch.setenv("ROS_DOMAIN_ID", str(private_domain_id(os.getpid() + 2)))  # the launcher's probe
    with pytest.raises(GraphError) as e:
        g.start()
    msg = str(e.value)
    assert "inference_node: no change_state service within 6 s (to configure; not on the ROS graph" in msg, msg
    log = (tmp_path / "nodes.log").read_text()
    assert re.search(r"\[launcher\] inference_node: no change_state service after 3 s .*clients made anew", log), log
    assert g.exited(), "the node outlived the failed start"
