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
from l1flow_ros.data.mcap_io import read_messages
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
    js = [(m.msg.header.stamp.sec * 10**9 + m.msg.header.stamp.nanosec, np.array(m.msg.position[:4]))
          for m in read_messages(path, ["/joint_states"])]
    imgs = [(m.msg.header.stamp.sec * 10**9 + m.msg.header.stamp.nanosec, m.msg)
            for m in read_messages(path, ["/corner/color/image_raw"])]
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


def test_missing_topics_and_bad_config_are_clear_errors(episodes, tmp_path):
    cfg = DatasetConfig.from_dict({**_cfg(0).to_dict(), "action_topic": "/nope"})
    with pytest.raises(DatasetError, match="/nope"):
        load_episode(episodes / "ep0.mcap", cfg)
    with pytest.raises(DatasetError, match="unknown"):
        DatasetConfig.from_dict({"observation": {"camera": ["x"]}, "action": {"names": ["a"]}})
    with pytest.raises(DatasetError, match="cameras"):
        DatasetConfig.from_dict({"observation": {"use_rgb": True}, "action": {"names": ["a"]}})


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
