"""perception_node with real rclpy over loopback: embeddings, the one preprocessing path, bad input, swaps."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import matched, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import String

from l1flow_ros.msgs.chunk_conv import embedding_from_msg
from l1flow_ros.msgs.sensor_conv import (
    camera_frame_from_msgs,
    camera_info_to_msg,
    image_to_msg,
    joint_state_from_msg,
    joint_state_to_msg,
    pointcloud_from_msg,
)
from l1flow_ros.nodes.perception_node import PerceptionNode
from l1flow_ros.nodes.qos import LATCHED, RELIABLE_1, RELIABLE_10
from l1flow_ros.perception.geometry import CameraIntrinsics, load_calibration
from l1flow_ros.perception.preprocess import ObservationHistory, RawFrames, frame_step, step_to_model

pytestmark = pytest.mark.node

CAMS = ("front", "side")
JOINTS = ("ee_x", "ee_y", "ee_z", "gripper")
INTR = CameraIntrinsics(fx=40.0, fy=40.0, cx=15.5, cy=11.5, width=32, height=24)
CALIB_YAML = """cameras:
  front:
    translation: [0.0, 0.0, 1.0]
    rotation: [1.0, 0.0, 0.0, 0.0]
  side:
    matrix: [[1, 0, 0, 0.2], [0, -1, 0, 0], [0, 0, -1, 1.0], [0, 0, 0, 1]]
"""


def make_bundle(path, seed: int) -> str:
    import torch

    from l1flow_ros.perception.encoders import EncoderConfig
    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.normalizer import Normalizer
    from l1flow_ros.policy.unet import UnetConfig
    from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

    torch.manual_seed(seed)
    obs = ObservationSpec(
        cameras=CAMS, image_size=(24, 32), num_points=64, workspace=(-2, 2, -2, 2, -2, 2), voxel_size=0.01,
        proprio_names=JOINTS, n_obs_steps=2,
    )
    act = ActionSpec(names=JOINTS, horizon=8, n_action_steps=4, dt=0.1)
    enc = EncoderConfig(image_channels=(8, 16), image_keypoints=8, image_feature_dim=16, point_hidden=(16, 32),
                        point_feature_dim=16, proprio_hidden=16, proprio_feature_dim=8, out_dim=32, groups=4)
    cfg = ModelConfig(encoder=enc, unet=UnetConfig(down_dims=(16, 32), groups=4, time_embed_dim=16))
    model = PolicyModel(obs, act, SamplerSpec(), cfg)
    norm = Normalizer(-np.ones(4), np.ones(4), [0.1, 0.2, 0.3, 0.0], [1.0, 2.0, 3.0, 1.0])
    save_bundle(path, model, make_manifest(model, norm))
    return str(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("perception_assets")
    calib = d / "calib.yaml"
    calib.write_text(CALIB_YAML)
    return {"bundle": make_bundle(d / "a", 0), "bundle_b": make_bundle(d / "b", 1), "calib": str(calib)}


class Rig:
    """The node under test plus a helper node publishing sensors and listening to outputs, spun
    as the package composes nodes (``spin_nodes``)."""

    def __init__(self, spin_nodes, ctx, assets, wait_ready: bool = True, **params):
        import rclpy

        p = {"cameras": list(CAMS), "checkpoint": assets["bundle"], "calibration_file": assets["calib"],
             "diagnostics_period": 0.2, "max_observation_age": 0.5, "slop": 0.01}
        p.update(params)
        self.node = PerceptionNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in p.items()])
        self.io = rclpy.create_node("perception_test_io", context=ctx)
        self.pub = {}
        for c in CAMS:
            self.pub[f"{c}/color"] = self.io.create_publisher(Image, f"/{c}/color/image_raw", qos_profile_sensor_data)
            self.pub[f"{c}/depth"] = self.io.create_publisher(
                Image, f"/{c}/aligned_depth_to_color/image_raw", qos_profile_sensor_data)
            self.pub[f"{c}/info"] = self.io.create_publisher(CameraInfo, f"/{c}/color/camera_info",
                                                             qos_profile_sensor_data)
            self.pub[f"{c}/cloud"] = self.io.create_publisher(PointCloud2, f"/{c}/depth/color/points",
                                                              qos_profile_sensor_data)
        self.pub["js"] = self.io.create_publisher(JointState, "/joint_states", RELIABLE_10)
        self.pub["ckpt"] = self.io.create_publisher(String, "/l1flow/checkpoint", LATCHED)
        self.embs: list = []
        self.diags: list = []
        self.clouds: list = []
        self.emb_sub = self.io.create_subscription(Image, "/l1flow/embedding", self.embs.append, RELIABLE_1)
        self.io.create_subscription(PointCloud2, "/l1flow/perception/cloud", self.clouds.append, RELIABLE_1)
        self.io.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE_10)
        self.rng = np.random.default_rng(0)
        self.sent: dict[int, dict] = {}
        self.spinning = spin_nodes(self.node, self.io)
        if wait_ready:
            # Loading the encoder (and open3d) takes seconds on a busy machine: wait for the node
            # to report its fingerprint on /diagnostics before timing anything.
            assert wait_for(self.fingerprint_reported, timeout=120), "the encoder did not load"
            # Every sensor topic the node listens to, matched both ways, and the embedding topic:
            # a frame sent before discovery completes is lost in part (a set that never completes).
            listened = {sub.topic_name for sub in self.node.subscriptions}
            pubs = [p for p in self.pub.values() if p.topic_name in listened]
            assert wait_for(lambda: matched(*pubs, self.emb_sub)), "discovery did not complete"

    def fingerprint_reported(self) -> bool:
        return any(kv.key == "fingerprint" and kv.value for _, st in list(self.diags) for kv in st.values)

    def _on_diag(self, arr):
        for st in arr.status:
            if st.name == "perception_node":
                self.diags.append((time.monotonic(), st))

    def now_ns(self) -> int:
        return self.io.get_clock().now().nanoseconds

    def frame_msgs(self, stamp: int, bad: str = "") -> dict:
        """One observation's messages; ``bad`` breaks one thing on purpose."""
        msgs = {}
        for c in CAMS:
            rgb = self.rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            depth = (self.rng.uniform(0.6, 1.4, (24, 32)) * 1000).astype(np.uint16)
            col = image_to_msg(rgb, "bgr8" if c == "side" else "rgb8", stamp, c)
            dep = image_to_msg(depth, "16UC1", stamp, c)
            if c == "front":
                if bad == "wrong_encoding":
                    col.encoding = "rgba8"
                elif bad == "wrong_size":
                    col = image_to_msg(rgb[:12, :16], "rgb8", stamp, c)
                elif bad == "nan_depth":
                    dep = image_to_msg(np.full((24, 32), np.nan, np.float32), "32FC1", stamp, c)
                elif bad == "inf_depth":
                    dep = image_to_msg(np.full((24, 32), np.inf, np.float32), "32FC1", stamp, c)
                elif bad == "zero_depth":
                    dep = image_to_msg(np.zeros((24, 32), np.uint16), "16UC1", stamp, c)
            msgs[f"{c}/color"], msgs[f"{c}/depth"] = col, dep
            msgs[f"{c}/info"] = camera_info_to_msg(INTR, stamp, c)
            if c == "front" and bad == "bad_camera_info":
                msgs[f"{c}/info"].k = [float("nan")] * 9
        names = ["j_unknown_0", "j_unknown_1"] if bad == "unknown_joints" else [*JOINTS, "right_j0"]
        msgs["js"] = joint_state_to_msg(names, self.rng.normal(size=len(names)), stamp)
        return msgs

    def publish(self, msgs: dict, skip: tuple[str, ...] = ()) -> None:
        for k, m in msgs.items():
            if not any(k.startswith(s) for s in skip):
                self.pub[k].publish(m)

    def send(self, bad: str = "", skip: tuple[str, ...] = ()) -> int:
        stamp = self.now_ns()
        msgs = self.frame_msgs(stamp, bad)
        self.sent[stamp] = msgs
        self.publish(msgs, skip)
        return stamp

    def stream_until(self, pred, timeout: float = 30.0, period: float = 0.05, **kw) -> bool:
        """Send an observation every ``period`` s until ``pred`` holds (checked ``period`` s after
        a send: the next observation, whatever it is, comes ``period`` s after the last)."""

        def sent_then_check() -> bool:
            self.send(**kw)
            time.sleep(period)
            return pred()

        return wait_for(sent_then_check, timeout, step=0.0)

    def emb_stamps(self) -> list[int]:
        return [embedding_from_msg(m)[1] for m in list(self.embs)]

    def last_diag(self):
        return self.diags[-1][1] if self.diags else None

    def error_since(self, t0: float, text: str = "") -> bool:
        """An ERROR status received after ``t0`` (monotonic), its message containing ``text``."""
        return any(t > t0 and st.level == DiagnosticStatus.ERROR and text in st.message for t, st in list(self.diags))


@pytest.fixture
def rig_factory(ros_context, assets, spin_nodes):
    """Rigs spun by ``spin_nodes``, stopped and destroyed after the test."""

    def make(wait_ready: bool = True, **params):
        return Rig(spin_nodes, ros_context, assets, wait_ready, **params)

    return make


def fingerprint(path: str) -> str:
    from l1flow_ros.policy.bundle import read_manifest

    return read_manifest(path).fingerprint


def test_embedding_stamped_and_equal_to_training_path(rig_factory, assets):
    """The node's model input is bit-identical to the dataset path on the same raw messages."""
    rig = rig_factory()
    assert rig.stream_until(lambda: len(rig.embs) >= 3, period=0.12)
    fp = fingerprint(assets["bundle"])
    emb, stamp, frame_id = embedding_from_msg(rig.embs[-1], expected_dim=32)
    assert frame_id == fp
    assert stamp in rig.sent  # header.stamp = the observation's stamp
    # Offline: the dataset-building path over the embedded observations, in order.
    from l1flow_ros.perception.embedder import Embedder

    e = Embedder(assets["bundle"])
    calib = load_calibration(assets["calib"])
    hist = ObservationHistory(e.obs_spec.n_obs_steps, e.period_s)
    stamps = rig.emb_stamps()
    node_input = rig.node.last_model_input
    for s in stamps:
        m = rig.sent[s]
        frames = RawFrames(
            cameras={c: camera_frame_from_msgs(m[f"{c}/color"], m[f"{c}/depth"], m[f"{c}/info"]) for c in CAMS},
            proprio=joint_state_from_msg(m["js"], JOINTS)[0],
            stamp_ns=s,
        )
        hist.push(s, step_to_model(frame_step(e.obs_spec, frames, calib)))
    offline = hist.get()
    assert set(offline) == {"rgb", "points", "proprio"}
    assert offline["rgb"].shape == (2, 2, 3, 24, 32)
    for k in offline:
        np.testing.assert_array_equal(node_input[k], offline[k])
    np.testing.assert_allclose(embedding_from_msg(rig.embs[len(stamps) - 1])[0], e.embed(offline),
                               rtol=1e-5, atol=1e-6)
    assert emb.shape == (32,)


BAD = ["wrong_encoding", "wrong_size", "nan_depth", "inf_depth", "zero_depth", "unknown_joints", "bad_camera_info"]


@pytest.mark.parametrize("bad", BAD)
def test_bad_input_error_no_embedding_then_recovers(rig_factory, bad):
    rig = rig_factory()
    assert rig.stream_until(lambda: len(rig.embs) >= 1)
    n_good = len(rig.embs)
    t_bad = time.monotonic()
    bad_stamps = []
    for _ in range(12):
        bad_stamps.append(rig.send(bad=bad))
        time.sleep(0.05)
    assert wait_for(lambda: rig.error_since(t_bad))
    assert not set(bad_stamps) & set(rig.emb_stamps())  # nothing built from invalid data
    assert rig.node.executor is not None  # still spinning
    # Good input again: embeddings resume and the status returns to OK.
    assert rig.stream_until(lambda: len(rig.embs) > n_good and rig.last_diag().level == DiagnosticStatus.OK)
    assert not set(bad_stamps) & set(rig.emb_stamps())  # nor later


def test_missing_camera_info(rig_factory):
    rig = rig_factory()
    t0 = time.monotonic()
    ok = rig.stream_until(lambda: rig.error_since(t0, "CameraInfo"), skip=("side/info",))
    assert ok and not rig.embs
    assert rig.stream_until(lambda: len(rig.embs) >= 1 and rig.last_diag().level == DiagnosticStatus.OK)


def test_camera_stops_publishing(rig_factory):
    rig = rig_factory()
    assert rig.stream_until(lambda: len(rig.embs) >= 1)
    t0 = time.monotonic()
    # 'side' goes silent: no set can be completed, the status turns ERROR naming the stream.
    assert rig.stream_until(lambda: rig.error_since(t0, "side"), skip=("side/color", "side/depth"))
    n = len(rig.embs)
    # Also: late frames from the stopped camera do not let stale sets through.
    last_front = max(rig.sent)
    assert all(s <= last_front for s in rig.emb_stamps())
    assert rig.stream_until(lambda: len(rig.embs) > n and rig.last_diag().level == DiagnosticStatus.OK)


def test_stale_observation_not_encoded(rig_factory):
    """Complete, valid sets whose stamps are older than max_observation_age are not encoded."""
    rig = rig_factory(max_observation_age=1.0)
    old = []
    t0 = time.monotonic()
    for _ in range(10):
        stamp = rig.now_ns() - int(3e9)  # three seconds old, e.g. a lagging driver clock
        old.append(stamp)
        rig.publish(rig.frame_msgs(stamp))
        time.sleep(0.05)
    assert wait_for(lambda: rig.error_since(t0))
    assert not rig.embs
    assert rig.stream_until(lambda: len(rig.embs) >= 1)
    assert not set(old) & set(rig.emb_stamps())


def test_checkpoint_swap_via_topic_and_bad_bundle(rig_factory, assets, tmp_path):
    rig = rig_factory(publish_cloud=True)
    fp_a, fp_b = fingerprint(assets["bundle"]), fingerprint(assets["bundle_b"])
    assert rig.stream_until(lambda: len(rig.embs) >= 1)
    assert embedding_from_msg(rig.embs[-1])[2] == fp_a
    # Fused cloud: 64 points in the base frame on the table plane region (z between 0 and 1 m).
    assert rig.stream_until(lambda: len(rig.clouds) >= 1)
    pts, _ = pointcloud_from_msg(rig.clouds[-1])
    assert pts.shape == (64, 3) and rig.clouds[-1].header.frame_id == "base"
    assert np.all((pts[:, 2] > -0.5) & (pts[:, 2] < 0.5))
    # A broken bundle is rejected; the old encoder keeps running.
    rig.pub["ckpt"].publish(String(data=str(tmp_path / "nope")))
    n = len(rig.embs)
    assert rig.stream_until(lambda: len(rig.embs) > n + 3 and rig.last_diag().level == DiagnosticStatus.WARN)
    assert embedding_from_msg(rig.embs[-1])[2] == fp_a
    # The real swap: embeddings switch to the new fingerprint, never a mix after it.
    rig.pub["ckpt"].publish(String(data=assets["bundle_b"]))
    assert rig.stream_until(lambda: embedding_from_msg(rig.embs[-1])[2] == fp_b)
    n = len(rig.embs)
    rig.stream_until(lambda: len(rig.embs) > n + 2)
    assert all(embedding_from_msg(m)[2] == fp_b for m in rig.embs[n:])


def test_parameter_validation(rig_factory):
    rig = rig_factory()
    res = rig.node.set_parameters([Parameter("slop", value=-1.0)])
    assert not res[0].successful and res[0].reason
    res = rig.node.set_parameters([Parameter("encoder_backend", value="magic")])
    assert not res[0].successful
    res = rig.node.set_parameters([Parameter("checkpoint", value="/nonexistent/bundle")])
    assert not res[0].successful
    assert rig.node.set_parameters([Parameter("slop", value=0.02)])[0].successful
    assert rig.node.cfg.slop == 0.02
    assert rig.stream_until(lambda: len(rig.embs) >= 1)


def test_point_cloud_input_in_place_of_depth(rig_factory):
    from l1flow_ros.msgs.sensor_conv import pointcloud_to_msg
    from l1flow_ros.perception.geometry import backproject

    rig = rig_factory(cloud_cameras=["side"])

    def send_with_cloud():
        stamp = rig.now_ns()
        m = rig.frame_msgs(stamp)
        fr = camera_frame_from_msgs(depth=m["side/depth"], info=INTR)
        pts, _ = backproject(fr.depth, INTR, (0.05, 3.0))
        m["side/cloud"] = pointcloud_to_msg(pts, None, stamp, "side")
        del m["side/depth"]
        rig.publish(m)

    def healthy():
        d = rig.last_diag()
        return bool(rig.embs) and d is not None and d.level != DiagnosticStatus.ERROR

    # Diagnostics published before the first good set still say ERROR: keep sending
    # until a report made after the embeddings started says all is well.
    assert wait_for(lambda: send_with_cloud() or healthy(), step=0.05)


def test_cameras_from_checkpoint_and_swap_by_parameter(rig_factory, assets):
    rig = rig_factory(cameras=[""])  # no camera list: subscribe to what the checkpoint observes
    assert rig.stream_until(lambda: len(rig.embs) >= 1)
    assert embedding_from_msg(rig.embs[-1])[2] == fingerprint(assets["bundle"])
    assert rig.node.set_parameters([Parameter("checkpoint", value=assets["bundle_b"])])[0].successful
    fp_b = fingerprint(assets["bundle_b"])
    assert rig.stream_until(lambda: embedding_from_msg(rig.embs[-1])[2] == fp_b)


def test_node_input_equals_dataset_item_for_same_messages(rig_factory, assets, tmp_path):
    """Same raw messages, two routes: ROS -> perception_node, and MCAP -> dataset_build -> zarr store ->
    ChunkDataset (what training reads). The model inputs are identical, bit for bit."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float64MultiArray

    from l1flow_ros.data.dataset_build import DatasetConfig, load_episode
    from l1flow_ros.data.mcap_io import EpisodeWriter
    from l1flow_ros.data.store import ChunkDataset, StoreWriter
    from l1flow_ros.perception.embedder import Embedder

    e = Embedder(assets["bundle"], warmup=False)
    spec, dt_ns = e.obs_spec, int(round(e.period_s * 1e9))
    rig = rig_factory(max_observation_age=5.0)
    # The encoder loads in the background: on a loaded machine that can outlast the frames' age limit.
    assert wait_for(lambda: rig.node.engine.embedder is not None, timeout=120), "the encoder did not load"
    # Observations on the dataset's time grid: frame k stamped exactly s0 + k * dt, sent once that
    # time has come; the next one only after the node has encoded this one (none dropped).
    s0 = rig.now_ns() + 200_000_000
    sent = []
    for k in range(3):
        stamp = s0 + k * dt_ns
        while rig.now_ns() < stamp:
            time.sleep(0.005)
        msgs = rig.frame_msgs(stamp)
        sent.append((stamp, msgs))
        n = len(rig.embs)
        rig.publish(msgs)
        t_pub = [time.monotonic()]

        def encoded(k=k, msgs=msgs, n=n, t_pub=t_pub) -> bool:
            if len(rig.embs) > n:
                return True
            if k == 0 and time.monotonic() - t_pub[0] > 0.5:  # best effort: the first frame may race discovery
                rig.publish(msgs)
                t_pub[0] = time.monotonic()
            return False

        assert wait_for(encoded, step=0.01)
    assert rig.emb_stamps()[-3:] == [s for s, _ in sent]
    node_input = rig.node.last_model_input

    ep = tmp_path / "ep.mcap"
    w = EpisodeWriter(ep)
    for stamp, msgs in sent:
        for c in CAMS:
            w.write_raw(f"/{c}/color/image_raw", "sensor_msgs/msg/Image", serialize_message(msgs[f"{c}/color"]), stamp)
            w.write_raw(f"/{c}/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image",
                        serialize_message(msgs[f"{c}/depth"]), stamp)
            w.write_raw(f"/{c}/color/camera_info", "sensor_msgs/msg/CameraInfo",
                        serialize_message(msgs[f"{c}/info"]), stamp)
        w.write_raw("/joint_states", "sensor_msgs/msg/JointState", serialize_message(msgs["js"]), stamp)
        w.write_raw("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray",
                    serialize_message(Float64MultiArray(data=[0.0, 0.0, 0.0, 0.0])), stamp)
    w.close(success=True)
    cfg = DatasetConfig(observation=spec, action=e.manifest.action, calibration=assets["calib"])
    episode = load_episode(ep, cfg)
    store = tmp_path / "store.zarr"
    with StoreWriter(store, spec, e.manifest.action) as sw:
        sw.add_episode(episode.obs, episode.actions)
    item = ChunkDataset(store)[2]["obs"]  # the last step with its n_obs_steps history
    assert set(item) == set(node_input) == {"rgb", "points", "proprio"}
    for k in item:
        np.testing.assert_array_equal(item[k].numpy(), node_input[k])


def test_realsense_source_without_camera_reports_error(rig_factory):
    """source 'realsense' with a serial that is not connected: ERROR with the reason, node keeps running."""
    rig = rig_factory(source="realsense", realsense_serials=["000000000000", "000000000001"])
    assert wait_for(lambda: rig.error_since(0.0))
    assert rig.fingerprint_reported()  # the encoder is loaded all the same, ready for frames
    assert not rig.embs


def test_calibration_written_after_start(rig_factory, tmp_path):
    """The simulator writes the calibration file when it starts, possibly after this node: the bundle
    is retried until the extrinsics exist, then embeddings flow."""
    late = tmp_path / "late_calib.yaml"
    rig = rig_factory(wait_ready=False, calibration_file=str(late))
    assert wait_for(lambda: rig.error_since(0.0)), "no ERROR while the calibration is missing"
    assert not rig.embs
    late.write_text(CALIB_YAML)
    assert rig.stream_until(lambda: len(rig.embs) >= 1, timeout=30)
