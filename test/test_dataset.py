"""Dataset building: MCAP episodes -> zarr store through perception's preprocessing path."""

import numpy as np
import pytest
import yaml

from l1flow_ros.data.dataset_build import (
    DatasetConfig,
    DatasetError,
    build_dataset,
    load_episode,
    sim_dataset_config,
)
from l1flow_ros.data.mcap_io import EpisodeWriter, read_messages
from l1flow_ros.msgs.stamps import stamp_to_ns
from l1flow_ros.perception.images import resize_rgb, to_chw
from l1flow_ros.sim.metaworld_env import MetaWorldSim, SimConfig
from l1flow_ros.sim.offline_record import record_expert_episode

CAMS = ("corner",)
SIZE = (24, 32)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    d = tmp_path_factory.mktemp("episodes")
    sim = MetaWorldSim(SimConfig(task="reach-v3", cameras=CAMS, image_size=SIZE))
    ok = [record_expert_episode(d / f"ep{s}.mcap", "reach-v3", s, CAMS, SIZE, sim=sim)[1] for s in (0, 1)]
    failed = record_expert_episode(d / "ep9.mcap", "reach-v3", 9, CAMS, SIZE, max_steps=5, sim=sim)[1]
    sim.close()
    assert ok == [True, True] and failed is False
    return d


def _cfg(num_points=64):
    return sim_dataset_config(cameras=CAMS, image_size=(16, 16), num_points=num_points, n_obs_steps=2, horizon=4)


@pytest.mark.graph
def test_episode_steps_are_synchronised_at_dt(episodes):
    cfg = _cfg()
    path = episodes / "ep0.mcap"
    ep = load_episode(path, cfg)
    T = ep.actions.shape[0]
    assert T >= 4
    assert ep.obs["rgb"].shape == (T, 1, 3, 16, 16) and ep.obs["rgb"].dtype == np.uint8
    assert ep.obs["points"].shape == (T, 64, 3) and ep.obs["proprio"].shape == (T, 4)
    np.testing.assert_array_equal(np.diff(ep.stamps_ns), int(round(cfg.action.dt * 1e9)))
    # Independent re-derivation from the raw messages.
    cmds = [(m.log_time_ns, np.array(m.msg.data)) for m in read_messages(path, ["/forward_position_controller/commands"])]
    js = [(stamp_to_ns(m.msg.header.stamp), np.array(m.msg.position[:4]))
          for m in read_messages(path, ["/joint_states"])]
    imgs = [(stamp_to_ns(m.msg.header.stamp), m.msg) for m in read_messages(path, ["/corner/color/image_raw"])]
    dt_ns = int(round(cfg.action.dt * 1e9))
    assert ep.stamps_ns[0] >= cmds[0][0] - dt_ns
    for k, t in enumerate(ep.stamps_ns):
        expect_a = [a for s, a in cmds if s <= t + dt_ns][-1]
        np.testing.assert_allclose(ep.actions[k], expect_a, atol=1e-6)
        expect_q = [q for s, q in js if s <= t][-1]
        np.testing.assert_allclose(ep.obs["proprio"][k], expect_q, atol=1e-6)
        msg = [m for s, m in imgs if s <= t][-1]
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        np.testing.assert_array_equal(ep.obs["rgb"][k, 0], to_chw(resize_rgb(rgb, (16, 16))))
    # The commanded path moves the hand: consecutive actions differ.
    assert np.linalg.norm(np.diff(ep.actions[:, :3], axis=0), axis=1).max() > 0.005
    # Fused points are in the robot base frame, inside the workspace, on the scene.
    ws = cfg.observation.workspace
    p = ep.obs["points"].reshape(-1, 3)
    assert np.all((p[:, 0] >= ws[0]) & (p[:, 0] <= ws[1]) & (p[:, 2] >= ws[4]) & (p[:, 2] <= ws[5]))


@pytest.mark.graph
def test_build_store_skips_failed_and_broken_episodes(episodes, tmp_path):
    from l1flow_ros.data.store import ChunkDataset, open_store

    broken = tmp_path / "in"
    broken.mkdir()
    for f in episodes.glob("*.mcap"):
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "zz_broken.mcap").write_bytes(b"\x89MCAP0\r\nnot really")
    out = tmp_path / "store.zarr"
    report = build_dataset(broken, out, _cfg(), progress=False)
    assert report.episodes_written == 2
    reasons = dict((p.split("/")[-1], r) for p, r in report.skipped)
    assert set(reasons) == {"ep9.mcap", "zz_broken.mcap"} and reasons["ep9.mcap"] == "not successful"
    obs_spec, act_spec, arrays = open_store(out)
    assert obs_spec == _cfg().observation and act_spec == _cfg().action
    assert arrays["episode_ends"].shape == (2,) and arrays["episode_ends"][-1] == report.steps_written
    item = ChunkDataset(out, horizon=4, n_obs_steps=2)[0]
    assert tuple(item["action"].shape) == (4, 4) and tuple(item["obs"]["rgb"].shape) == (2, 1, 3, 16, 16)
    # Appending the same episodes doubles the store; no usable episode is an error.
    build_dataset(episodes, out, _cfg(), append=True, progress=False)
    assert open_store(out)[2]["episode_ends"].shape == (4,)
    with pytest.raises(DatasetError, match="no usable episode"):
        build_dataset([broken / "zz_broken.mcap"], tmp_path / "none.zarr", _cfg(), progress=False)


@pytest.mark.graph
def test_missing_topics_and_bad_config_are_clear_errors(episodes, tmp_path):
    cfg = DatasetConfig.from_dict({**_cfg(0).to_dict(), "action_topic": "/nope"})
    with pytest.raises(DatasetError, match="/nope"):
        load_episode(episodes / "ep0.mcap", cfg)
    with pytest.raises(DatasetError, match="unknown"):
        DatasetConfig.from_dict({"observation": {"camera": ["x"]}, "action": {"names": ["a"]}})
    with pytest.raises(DatasetError, match="cameras"):
        DatasetConfig.from_dict({"observation": {"use_rgb": True}, "action": {"names": ["a"]}})


@pytest.mark.graph
def test_cli_dataset_build_info_and_config(episodes, tmp_path, capsys):
    from l1flow_ros.cli import main

    cfg_path = tmp_path / "dataset.yaml"
    assert main(["dataset", "config", "--out", str(cfg_path), "--cameras", "corner", "--image-size", "16", "16"]) == 0
    data = yaml.safe_load(cfg_path.read_text())
    assert data["observation"]["cameras"] == ["corner"] and data["action"]["dt"] == pytest.approx(0.1)
    out = tmp_path / "cli.zarr"
    assert main(["dataset", "build", str(episodes), "--out", str(out), "--config", str(cfg_path), "--quiet"]) == 0
    assert "2 episodes" in capsys.readouterr().out
    assert (out / "zarr.json").exists()
    assert main(["dataset", "info", str(episodes)]) == 0
    assert main(["dataset", "build", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 1


# ----------------------------------------------------------------------------- no training/serving skew


def _padded_image(a: np.ndarray, encoding: str, big_endian: bool, pad: int, stamp_ns: int, rng):
    """(H, W[, 3]) array -> Image with ``pad`` junk bytes after each row, in the given byte order."""
    from sensor_msgs.msg import Image

    from l1flow_ros.msgs.chunk_conv import ns_to_stamp

    px = np.ascontiguousarray(a[:, :, ::-1] if encoding == "bgr8" else a)
    if px.dtype.itemsize > 1:
        px = px.astype(px.dtype.newbyteorder(">" if big_endian else "<"))
    rows = np.concatenate([px.view(np.uint8).reshape(a.shape[0], -1),
                           rng.integers(0, 256, (a.shape[0], pad), dtype=np.uint8)], axis=1)
    msg = Image(height=a.shape[0], width=a.shape[1], encoding=encoding, is_bigendian=int(big_endian),
                step=rows.shape[1], data=rows.tobytes())
    msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


@pytest.mark.core
def test_recorded_episode_equals_live_decoding(tmp_path):
    """No training/serving skew: the same message bytes, (1) recorded in an MCAP episode -> dataset
    building -> zarr store, and (2) received live -> the l1flow_ros.msgs decoders -> perception's
    frame_step (the node's path), give identical arrays. The messages use the layouts a decoder gets
    wrong: bgr8 with row padding, big-endian 16UC1 depth with padding, 32FC1 with NaN holes, a 4:3
    image cropped to the model's 1:1, a stamp with both sec and nanosec, extra and reordered joints."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float64MultiArray

    from l1flow_ros.data.store import StoreWriter, open_store
    from l1flow_ros.msgs.sensor_conv import (
        camera_frame_from_msgs,
        camera_info_to_msg,
        joint_state_from_msg,
        joint_state_to_msg,
    )
    from l1flow_ros.perception.geometry import CameraIntrinsics, parse_calibration
    from l1flow_ros.perception.preprocess import RawFrames, frame_step
    from l1flow_ros.spec import ActionSpec, ObservationSpec

    rng = np.random.default_rng(3)
    H, W = 30, 40
    intr = CameraIntrinsics(35.0, 35.0, 19.5, 14.5, W, H)
    down = [1.0, 0.0, 0.0, 0.0]  # x y z w: optical axis pointing down at the table
    calib = {"cameras": {"a": {"translation": [0.0, 0.0, 1.0], "rotation": down},
                         "b": {"translation": [0.2, 0.0, 1.0], "rotation": down}}}
    spec = ObservationSpec(cameras=("a", "b"), image_size=(16, 16), num_points=64, proprio_names=("j2", "j0"),
                           workspace=(-3, 3, -3, 3, -3, 3), depth_range=(0.1, 3.0), n_obs_steps=2)
    act = ActionSpec(names=("j0", "j2"), horizon=4, n_action_steps=2, dt=0.1)
    dt_ns, s0 = 100_000_000, 1_700_000_000_123_456_789

    def frame(stamp: int) -> tuple[dict, dict]:
        """The messages of one instant, and the arrays they encode."""
        truth = {"a/color": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                 "b/color": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                 "a/depth": rng.integers(500, 2500, (H, W)).astype(np.uint16),  # mm
                 "b/depth": rng.uniform(0.5, 2.5, (H, W)).astype(np.float32)}  # m
        truth["a/depth"][::7, ::5] = 0
        truth["b/depth"][::6, ::4] = np.nan
        msgs = {
            "/a/color/image_raw": _padded_image(truth["a/color"], "bgr8", False, 5, stamp, rng),
            "/a/aligned_depth_to_color/image_raw": _padded_image(truth["a/depth"], "16UC1", True, 6, stamp, rng),
            "/b/color/image_raw": _padded_image(truth["b/color"], "rgb8", False, 0, stamp, rng),
            "/b/aligned_depth_to_color/image_raw": _padded_image(truth["b/depth"], "32FC1", False, 4, stamp, rng),
            "/a/color/camera_info": camera_info_to_msg(intr, stamp, "a"),
            "/b/color/camera_info": camera_info_to_msg(intr, stamp, "b"),
            "/joint_states": joint_state_to_msg(["j0", "extra", "j2", "j1"], rng.normal(size=4), stamp),
        }
        return msgs, truth

    sent = [(s0 + k * dt_ns, *frame(s0 + k * dt_ns)) for k in range(3)]

    # (1) Recorded: the CDR bytes a raw subscription hands the recorder node.
    path = tmp_path / "ep.mcap"
    w = EpisodeWriter(path)
    for stamp, msgs, _ in sent:
        for topic, msg in msgs.items():
            kind = {"image_raw": "Image", "camera_info": "CameraInfo", "joint_states": "JointState"}
            w.write_raw(topic, f"sensor_msgs/msg/{kind[topic.rsplit('/', 1)[1]]}", serialize_message(msg), stamp)
        w.write_raw("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray",
                    serialize_message(Float64MultiArray(data=[0.1, 0.2])), stamp)
    w.close(success=True, calibration=calib)
    ep = load_episode(path, DatasetConfig(observation=spec, action=act))
    with StoreWriter(tmp_path / "s.zarr", spec, act) as sw:
        sw.add_episode(ep.obs, ep.actions)
    stored = open_store(tmp_path / "s.zarr")[2]
    np.testing.assert_array_equal(ep.stamps_ns, [s for s, _, _ in sent])

    # (2) Live: the message objects through the decoders and the preprocessing the node runs.
    for k, (stamp, msgs, truth) in enumerate(sent):
        cams = {c: camera_frame_from_msgs(color=msgs[f"/{c}/color/image_raw"],
                                          depth=msgs[f"/{c}/aligned_depth_to_color/image_raw"],
                                          info=msgs[f"/{c}/color/camera_info"]) for c in spec.cameras}
        # The decoder undoes padding, BGR and byte order: agreement below is not two routes
        # making the same mistake.
        for c in spec.cameras:
            np.testing.assert_array_equal(cams[c].color, truth[f"{c}/color"])
        np.testing.assert_array_equal(cams["a"].depth, truth["a/depth"].astype(np.float32) * np.float32(1e-3))
        np.testing.assert_array_equal(cams["b"].depth, truth["b/depth"])
        proprio, t = joint_state_from_msg(msgs["/joint_states"], spec.proprio_names)
        assert t == stamp
        live = frame_step(spec, RawFrames(cameras=cams, proprio=proprio, stamp_ns=stamp), parse_calibration(calib))
        assert set(live) == set(ep.obs) == {"rgb", "points", "proprio"}
        for key, arr in live.items():
            np.testing.assert_array_equal(ep.obs[key][k], arr, err_msg=f"step {k} {key}: episode vs live")
            np.testing.assert_array_equal(stored[key][k], arr, err_msg=f"step {k} {key}: store vs live")


@pytest.mark.core
def test_recorded_message_the_node_would_reject_fails_its_episode(tmp_path):
    """A recorded frame the node's decoder rejects (here mono8 colour, and data shorter than
    step x height) makes its episode a DatasetError with the decoder's reason, not training data."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float64MultiArray

    from l1flow_ros.msgs.chunk_conv import ns_to_stamp
    from l1flow_ros.spec import ActionSpec, ObservationSpec

    spec = ObservationSpec(cameras=("a",), image_size=(8, 8), use_rgb=True)
    act = ActionSpec(names=("j0",), horizon=2, n_action_steps=1, dt=0.1)
    rng = np.random.default_rng(0)
    good = _padded_image(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "rgb8", False, 0, 10**9, rng)
    mono = _padded_image(rng.integers(0, 256, (6, 8), dtype=np.uint8), "mono8", False, 0, 10**9, rng)
    short = _padded_image(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "rgb8", False, 0, 10**9, rng)
    short.data = bytes(short.data)[:-1]
    for name, msg, why in (("good", good, None), ("mono", mono, "encoding"), ("short", short, "bytes")):
        path = tmp_path / f"{name}.mcap"
        w = EpisodeWriter(path)
        for k in range(3):
            stamp = 10**9 + k * 100_000_000
            msg.header.stamp = ns_to_stamp(stamp)
            w.write_raw("/a/color/image_raw", "sensor_msgs/msg/Image", serialize_message(msg), stamp)
            w.write_raw("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray",
                        serialize_message(Float64MultiArray(data=[0.5])), stamp)
        w.close(success=True)
        cfg = DatasetConfig(observation=spec, action=act)
        if why is None:
            assert load_episode(path, cfg).obs["rgb"].shape == (3, 1, 3, 8, 8)
        else:
            with pytest.raises(DatasetError, match=why):
                load_episode(path, cfg)
