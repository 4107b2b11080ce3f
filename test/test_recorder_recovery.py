"""The recorder node as its own process (as `l1flow run` and `ros2 launch` start it): killed with
SIGKILL mid-episode, and writing onto a small filesystem that fills up.

kill -9: the cut-off ``.part`` is never taken for a finished episode, holds every message the
recorder had reported on disk before the kill (a prefix of what was sent: nothing reordered,
nothing invented), and the next start rewrites it into ``recovered/`` and reports it.

Full disk: the episode folder is a 1 MiB tmpfs mounted for the test (mounting needs root, which
the project's machines and CI have; elsewhere the test is skipped with that reason, and
test_dataset_recovery.py / test_mcap_recovery.py cover a refused write through RLIMIT_FSIZE).
A real filesystem gives the recorder the real ENOSPC, from a short write in the middle of a
chunk. The recorder stops the episode, says so on /diagnostics and in the next service
response, and keeps running; teleop (another process) keeps publishing; once the disk has
room again, the next start recovers what reached the disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml
from conftest import matched, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from l1flow_ros.data.mcap_io import RECOVERED_DIR, list_episodes, read_messages, read_metadata, salvage
from l1flow_ros.graph.launcher import ProcessGraph
from l1flow_ros.nodes import qos

pytestmark = pytest.mark.graph


class Probe:
    """This process's side: publishers, the recorder's services, its /diagnostics and teleop's commands."""

    def __init__(self, ctx, spin_nodes):
        import rclpy

        self.node = rclpy.create_node("rec_kill_probe", context=ctx)
        self.js = self.node.create_publisher(JointState, "/joint_states", qos.RELIABLE_10)
        self.leader = self.node.create_publisher(JointState, "/leader/joint_states", qos.RELIABLE_10)
        self.clients = {k: self.node.create_client(Trigger, f"/recorder/{k}") for k in ("start", "stop")}
        self.status: DiagnosticStatus | None = None
        self.commands = 0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos.RELIABLE_10)
        self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                      self._on_cmd, qos.RELIABLE_10)
        self.spinning = spin_nodes(self.node)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "recorder_node":
                self.status = st

    def _on_cmd(self, msg: Float64MultiArray) -> None:
        self.commands += 1

    def value(self, key: str, default: str = "") -> str:
        st = self.status
        return next((kv.value for kv in st.values if kv.key == key), default) if st is not None else default

    def call(self, name: str) -> Trigger.Response:
        c = self.clients[name]
        assert c.wait_for_service(timeout_sec=60.0), f"/recorder/{name} not available"
        fut = c.call_async(Trigger.Request())
        assert wait_for(fut.done, timeout=60.0)
        return fut.result()


def graph_params(path, nodes: dict) -> object:
    path.write_text(yaml.safe_dump({k: {"ros__parameters": v} for k, v in nodes.items()}))
    return path


def recorder_params(out) -> dict:
    return {"output_dir": str(out), "cameras": [""], "success_topic": "", "flush_period_s": 1.0}


def positions(path) -> list[int]:
    """positions[0] of the /joint_states messages a summary-less read gets back from ``path``."""
    from mcap_ros2.decoder import DecoderFactory

    out, decoders = [], {}
    for schema, _, msg in salvage(path):
        dec = decoders.setdefault(schema.id, DecoderFactory().decoder_for("cdr", schema))
        out.append(int(dec(msg.data).position[0]))
    return out


def test_recorder_killed_mid_episode_leaves_a_file_recovered_on_next_start(ros_context, spin_nodes, tmp_path):
    out = tmp_path / "episodes"
    params = graph_params(tmp_path / "rec.yaml", {"recorder_node": recorder_params(out)})
    log = tmp_path / "nodes.log"
    g = ProcessGraph(params, log_file=log).start()
    try:
        probe = Probe(ros_context, spin_nodes)
        g.wait_discovered(timeout=120.0)
        assert wait_for(lambda: matched(probe.js) and probe.status is not None, timeout=60.0)
        r = probe.call("start")
        assert r.success, r.message
        sent = 0

        def send(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                probe.js.publish(JointState(name=["j0"], position=[float(sent)]))
                sent += 1
                time.sleep(0.01)

        deadline = time.monotonic() + 120.0
        while int(probe.value("messages_on_disk", "0")) < 100 and time.monotonic() < deadline:
            send(10)
        on_disk = int(probe.value("messages_on_disk", "0"))
        received = int(probe.value("messages", "0"))
        assert on_disk >= 100, f"the recorder reported {on_disk} messages on disk"
        send(30)  # more, the newest not flushed yet when the kill comes
        assert g.stop_node("recorder_node", signal.SIGKILL) == -signal.SIGKILL
        parts = sorted(out.glob("*.mcap.part"))
        assert len(parts) == 1 and list_episodes(out) == []  # never taken for a finished episode
        got = positions(parts[0])
        assert got == list(range(len(got))), "not the prefix of what was sent"
        assert on_disk <= len(got) <= sent, (on_disk, len(got), sent)
        print(f"kill -9: sent {sent}, recorder reported {received} received / {on_disk} on disk (newest report "
              f"before the kill), recovered {len(got)}")

        g.restart_node("recorder_node")
        assert wait_for(lambda: probe.value("leftovers_recovered") == "1", timeout=120.0), probe.status
        assert probe.status.level == DiagnosticStatus.WARN and parts[0].name in probe.status.message
        rec = out / RECOVERED_DIR / parts[0].name[: -len(".part")]
        meta = read_metadata(rec)
        assert meta["recovered"] is True and meta["messages"] == len(got) and meta["success"] is None
        assert [int(m.msg.position[0]) for m in read_messages(rec)] == got
        assert not parts[0].exists() and list_episodes(out) == []
        # The new recorder records as before; its episode is the folder's only finished one.
        assert probe.call("start").success
        send(20)
        r = probe.call("stop")
        assert r.success and list_episodes(out) == [type(out)(r.message)]
    finally:
        g.stop()
    text = log.read_text()
    assert "cut-off recording found" in text and "Traceback" not in text, text[-3000:]


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs at tmp_path/small (needs root: mount), unmounted after the test."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_stops_the_episode_with_the_reason_and_teleop_keeps_going(ros_context, spin_nodes, tmp_path,
                                                                           small_fs):
    import numpy as np

    out = small_fs / "episodes"
    params = graph_params(tmp_path / "g.yaml", {
        "recorder_node": recorder_params(out),
        "teleop_node": {"mode": "leader"},  # a leader arm mirrored onto the commands the recorder records too
    })
    log = tmp_path / "nodes.log"
    g = ProcessGraph(params, log_file=log).start()
    rng = np.random.default_rng(0)
    try:
        probe = Probe(ros_context, spin_nodes)
        g.wait_discovered(timeout=120.0)
        assert wait_for(lambda: matched(probe.js, probe.leader) and probe.status is not None, timeout=60.0)
        leader = JointState(name=["ee_x", "ee_y", "ee_z", "gripper"], position=[0.0, 0.6, 0.2, 0.0])

        def step(n: int) -> None:
            for _ in range(n):  # incompressible joint states (8 kB each) fill 1 MiB in a few seconds
                probe.js.publish(JointState(name=["j"] * 1000, position=rng.normal(size=1000).tolist()))
                probe.leader.publish(leader)
                time.sleep(0.02)

        r = probe.call("start")
        assert r.success, r.message
        deadline = time.monotonic() + 120.0
        while "stopped by a write error" not in (probe.status.message if probe.status else ""):
            assert time.monotonic() < deadline, f"no write error reported: {probe.status}"
            step(5)
        st = probe.status
        assert st.level == DiagnosticStatus.ERROR and "No space left on device" in st.message, st.message
        assert probe.value("recording") == "False"
        # Teleop (its own process) keeps commanding; the recorder process is alive and answers.
        n = probe.commands
        step(50)
        assert wait_for(lambda: probe.commands >= n + 40, timeout=60.0), (n, probe.commands)
        print(f"full disk: teleop commands heard before the error {n}, then {probe.commands - n} "
              f"during 50 more leader states")
        g.check()
        r = probe.call("stop")
        part = next(out.glob("*.mcap.part"))
        assert not r.success and "No space left on device" in r.message and part.name in r.message, r.message
        assert "reached the disk" in r.message
        print(f"full disk, stop answered: {r.message}")
        assert probe.call("stop").message == "not recording"  # answered once
        # The disk full still: a start says why it cannot record.
        r = probe.call("start")
        assert not r.success and "No space left on device" in r.message, r.message
        # Room again (the operator freed space): the next start recovers what reached the disk.
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
        r = probe.call("start")
        assert r.success, r.message
        assert wait_for(lambda: probe.value("leftovers_recovered") == "1", timeout=30.0), probe.status
        rec = out / RECOVERED_DIR / part.name[: -len(".part")]
        meta = read_metadata(rec)
        assert meta["recovered"] is True and meta["messages"] > 50 and "cut at byte" in meta["recovered_cut"]
        topics = {m.topic for m in read_messages(rec)}
        assert topics == {"/joint_states", "/forward_position_controller/commands"}
        print(f"full disk: {meta['messages']} messages recovered from {os.path.getsize(rec)} bytes; "
              f"{meta['recovered_cut']}")
        step(10)
        r = probe.call("stop")
        assert r.success, r.message
    finally:
        g.stop()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
