"""Recorder node: scripted teleop on the sim recorded into MCAP episodes readable as ROS 2 bags."""

import time

import numpy as np
import pytest
from conftest import matched, wait_for
from rclpy.parameter import Parameter
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from l1flow_ros.data.mcap_io import (
    EpisodeError,
    EpisodeWriter,
    list_episodes,
    message_definition,
    read_messages,
    read_metadata,
    topics,
)
from l1flow_ros.nodes.params import ParameterError
from l1flow_ros.nodes.qos import RECORD, RECORD_SENSOR
from l1flow_ros.nodes.recorder_node import RecorderConfig, RecorderNode


@pytest.mark.core
def test_message_definition_has_nested_types_once():
    text = message_definition("sensor_msgs/CameraInfo")
    assert text.startswith("# This message defines meta information for a camera")
    for nested in ("MSG: std_msgs/Header", "MSG: builtin_interfaces/Time", "MSG: sensor_msgs/RegionOfInterest"):
        assert text.count(nested) == 1, nested
    with pytest.raises(EpisodeError, match="not found"):
        message_definition("no_such_pkg/msg/Thing")
    with pytest.raises(EpisodeError):
        message_definition("Image")


@pytest.mark.core
def test_episode_writer_round_trip_and_part_file(tmp_path):
    w = EpisodeWriter(tmp_path / "ep.mcap")
    assert w.part_path.exists() and not (tmp_path / "ep.mcap").exists()
    js = JointState(name=["a", "b"], position=[1.0, 2.0])
    js.header.stamp.sec = 7
    w.write_raw("/joint_states", "sensor_msgs/msg/JointState", serialize_message(js), 100)
    w.write("/cmd", "std_msgs/Float64MultiArray", {"layout": {"dim": [], "data_offset": 0}, "data": [0.5]}, 200)
    with pytest.raises(EpisodeError):
        w.write_raw("/joint_states", "sensor_msgs/msg/Image", b"", 300)
    path = w.close(task="t", success=False)
    assert path.exists() and not w.part_path.exists()
    assert read_metadata(path) == {"task": "t", "success": False}
    msgs = list(read_messages(path))
    assert [m.topic for m in msgs] == ["/joint_states", "/cmd"]
    assert list(msgs[0].msg.position) == [1.0, 2.0] and msgs[0].msg.header.stamp.sec == 7
    assert list(msgs[1].msg.data) == [0.5]
    w2 = EpisodeWriter(tmp_path / "gone.mcap")
    w2.discard()
    assert list_episodes(tmp_path) == [path]
    (tmp_path / "broken.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(EpisodeError):
        list(read_messages(tmp_path / "broken.mcap"))


@pytest.mark.core
def test_config_topics_types_and_qos():
    cfg = RecorderConfig(cameras=("cam",), action_type="std_msgs/Float64MultiArray",
                         extra_topics=("/note:std_msgs/String", ""))
    cfg.validate()
    assert cfg.topics() == [
        ("/cam/color/image_raw", "sensor_msgs/msg/Image", RECORD_SENSOR),
        ("/cam/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image", RECORD_SENSOR),
        ("/cam/color/camera_info", "sensor_msgs/msg/CameraInfo", RECORD_SENSOR),
        ("/joint_states", "sensor_msgs/msg/JointState", RECORD),
        ("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray", RECORD),
        ("/note", "std_msgs/msg/String", RECORD),
    ]
    for bad, words in [(dict(extra_topics=("note:std_msgs/String",)), "extra topic 'note:std_msgs/String'"),
                       (dict(extra_topics=("/note",)), "extra topic '/note'"),
                       (dict(action_type="Float64MultiArray"), "message type 'Float64MultiArray'"),
                       (dict(max_episode_s=-1.0), "max_episode_s")]:
        with pytest.raises(EpisodeError, match=words):
            RecorderConfig(**bad).validate()


@pytest.mark.node
def test_parameters_from_a_ros_params_file_fixed_at_start(ros_context, tmp_path):
    params = tmp_path / "rec.yaml"
    params.write_text(f"recorder_node:\n  ros__parameters:\n    output_dir: {tmp_path / 'eps'}\n    cameras: []\n"
                      "    extra_topics: ['']\n    max_episode_s: 30\n")
    node = RecorderNode(context=ros_context, cli_args=["--ros-args", "--params-file", str(params)])
    try:
        assert node.cfg.cameras == () and node.cfg.extra_topics == () and node.cfg.max_episode_s == 30.0
        assert (tmp_path / "eps").is_dir()
        r = node.set_parameters([Parameter("task", value="reach-v3")])[0]
        assert not r.successful and node.cfg.task == ""
    finally:
        node.destroy_node()
    params.write_text("recorder_node:\n  ros__parameters:\n    extra_topics: ['/a:std_msgs/String', 'b']\n")
    with pytest.raises(ParameterError, match="extra topic 'b'"):
        RecorderNode(context=ros_context, cli_args=["--ros-args", "--params-file", str(params)])


class Graph:
    """The nodes under test and a probe node calling the recorder's services, spun as the package
    composes nodes; :meth:`close` stops and destroys them (the recorder finishes its files)."""

    def __init__(self, spin_nodes, ctx, nodes, publishers=()):
        import rclpy

        self.probe = rclpy.create_node("rec_probe", context=ctx)
        self.clients = {k: self.probe.create_client(Trigger, f"/recorder/{k}") for k in ("start", "stop", "discard")}
        self.pubs = [self.probe.create_publisher(*p) for p in publishers]
        self.spinning = spin_nodes(*nodes, self.probe)
        assert wait_for(lambda: matched(*self.pubs)), "discovery did not complete"

    def call(self, name):
        c = self.clients[name]
        assert c.wait_for_service(timeout_sec=10.0)
        fut = c.call_async(Trigger.Request())
        assert wait_for(fut.done)
        return fut.result()

    def close(self):
        self.spinning.close()


@pytest.mark.graph
def test_records_scripted_teleop_episode_as_ros2_bag(ros_context, spin_nodes, tmp_path):
    from l1flow_ros.nodes.sim_robot_node import SimRobotNode
    from l1flow_ros.nodes.teleop_node import TeleopNode

    out = tmp_path / "episodes"
    sim = SimRobotNode(context=ros_context, parameter_overrides=[
        Parameter("task", value="reach-v3"), Parameter("cameras", value=["corner"]),
        Parameter("image_height", value=24), Parameter("image_width", value=32),
        Parameter("camera_rate_hz", value=10.0), Parameter("seed", value=2),
    ])
    teleop = TeleopNode(context=ros_context, parameter_overrides=[
        Parameter("mode", value="expert"), Parameter("task", value="reach-v3"), Parameter("enabled", value=False),
    ])
    calib = tmp_path / "calib.yaml"
    from l1flow_ros.sim.metaworld_env import write_calibration_yaml

    write_calibration_yaml(calib, [sim.sim.camera_model("corner")])
    rec = RecorderNode(context=ros_context, parameter_overrides=[
        Parameter("output_dir", value=str(out)), Parameter("cameras", value=["corner"]),
        Parameter("task", value="reach-v3"), Parameter("calibration_file", value=str(calib)),
    ])
    g = Graph(spin_nodes, ros_context, [sim, teleop, rec])
    assert not g.call("stop").success  # nothing to stop
    # A discarded episode (with messages in it) leaves nothing behind.
    assert g.call("start").success
    assert wait_for(lambda: rec._writer is not None and rec._writer.count > 0)
    assert g.call("discard").success
    assert list(out.iterdir()) == []
    # A kept one: the expert drives until the task is solved.
    r = g.call("start")
    assert r.success
    assert not g.call("start").success  # one episode at a time
    teleop.set_parameters([Parameter("enabled", value=True)])
    assert wait_for(lambda: sim.sim.success, timeout=120.0), "the expert did not solve the task"
    # The recorder has heard the success on its topic, and recorded past it.
    n = rec._writer.count
    assert wait_for(lambda: rec._success is True and rec._writer.count > n + 10)
    r = g.call("stop")
    assert r.success
    g.close()
    files = list_episodes(out)
    assert [str(f) for f in files] == [r.message]
    meta = read_metadata(files[0])
    assert meta["task"] == "reach-v3" and meta["success"] is True and meta["messages"] > 50
    t = topics(files[0])
    assert t["/corner/color/image_raw"][0] == "sensor_msgs/msg/Image" and t["/corner/color/image_raw"][1] >= 3
    assert t["/corner/aligned_depth_to_color/image_raw"][1] >= 3
    assert t["/corner/color/camera_info"][0] == "sensor_msgs/msg/CameraInfo"
    assert t["/joint_states"][1] > 30 and t["/forward_position_controller/commands"][1] > 30

    # The file is a ROS 2 bag for the rosbags library, with the stored schemas.
    from rosbags.highlevel import AnyReader

    seen = {}
    with AnyReader([files[0]]) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic not in seen:
                seen[conn.topic] = reader.deserialize(raw, conn.msgtype)
    img = seen["/corner/color/image_raw"]
    assert (img.height, img.width, img.encoding) == (24, 32, "rgb8") and len(img.data) == 24 * 32 * 3
    depth = seen["/corner/aligned_depth_to_color/image_raw"]
    assert depth.encoding == "32FC1" and np.frombuffer(depth.data.tobytes(), "<f4").max() > 0
    assert list(seen["/joint_states"].name[:4]) == ["ee_x", "ee_y", "ee_z", "gripper"]
    assert len(seen["/forward_position_controller/commands"].data) == 4

    # The recorded episode builds into a training store (points from the recorded calibration).
    from l1flow_ros.data.dataset_build import load_episode, sim_dataset_config

    assert "corner" in meta["calibration"]["cameras"]
    ep = load_episode(files[0], sim_dataset_config(cameras=("corner",), image_size=(16, 16), num_points=32))
    assert ep.actions.shape[0] >= 3 and ep.obs["points"].shape[1:] == (32, 3)
    assert np.linalg.norm(ep.actions[-1, :3] - ep.actions[0, :3]) > 0.02  # the expert moved the target


@pytest.mark.graph
def test_cli_record_through_the_node_graph_and_offline(tmp_path):
    from l1flow_ros.cli import main
    from l1flow_ros.data.dataset_build import build_dataset, sim_dataset_config

    out = tmp_path / "ros"
    assert main(["record", "--task", "reach-v3", "--demos", "1", "--out", str(out), "--image-size", "16", "16",
                 "--camera-rate", "10", "--quiet"]) == 0
    files = list_episodes(out)
    assert len(files) == 1
    metas = [read_metadata(f) for f in files]
    assert all(m["success"] is True and m["task"] == "reach-v3" for m in metas)
    off = tmp_path / "offline"
    assert main(["record", "--task", "reach-v3", "--demos", "1", "--out", str(off), "--offline", "--image-size",
                 "16", "16", "--seed", "3", "--quiet"]) == 0
    assert len(list_episodes(off)) == 1
    # Both kinds of episodes give the same step layout.
    cfg = sim_dataset_config(cameras=("corner",), image_size=(16, 16))
    a = build_dataset(out, tmp_path / "a.zarr", cfg, progress=False)
    b = build_dataset(off, tmp_path / "b.zarr", cfg, progress=False)
    assert a.episodes_written == 1 and b.episodes_written == 1
    assert main(["record", "--task", "no-such-v3", "--demos", "1", "--out", str(off), "--offline", "--quiet"]) == 1


@pytest.mark.node
def test_real_arm_episode_without_success_topic_records_unknown_success(ros_context, spin_nodes, tmp_path):
    from std_msgs.msg import Float64MultiArray

    rec = RecorderNode(context=ros_context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path)), Parameter("cameras", value=[""]),
        Parameter("joint_states_topic", value="/arm/joint_states"),
        Parameter("extra_topics", value=["/l1flow/note:std_msgs/msg/String"]),
    ])
    g = Graph(spin_nodes, ros_context, [rec], publishers=[
        (JointState, "/arm/joint_states", 10), (Float64MultiArray, "/forward_position_controller/commands", 10)])
    js, cmd = g.pubs
    assert g.call("start").success
    for k in range(20):
        js.publish(JointState(name=["j1", "j2"], position=[0.1 * k, 0.0]))
        cmd.publish(Float64MultiArray(data=[0.1 * k, 0.0]))
        time.sleep(0.02)
    assert wait_for(lambda: rec._writer.count >= 40), f"{rec._writer.count} of 40 messages recorded"
    r = g.call("stop")
    assert r.success
    g.close()
    meta = read_metadata(r.message)
    assert meta["success"] is None and meta["cameras"] == []
    counts = topics(r.message)
    assert counts["/arm/joint_states"][1] >= 15 and counts["/forward_position_controller/commands"][1] >= 15
