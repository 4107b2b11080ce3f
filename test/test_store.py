"""The zarr training store and the chunk dataset (history / horizon padding at episode edges)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l1flow_ros.data.store import ChunkDataset, StoreError, StoreWriter, compute_normalizer, open_store
from l1flow_ros.spec import ActionSpec, ObservationSpec

pytestmark = pytest.mark.core

OBS = ObservationSpec(
    cameras=("front",), image_size=(8, 10), num_points=16, proprio_names=("a", "b", "c"), n_obs_steps=2
)
ACT = ActionSpec(names=("x", "y"), horizon=4, n_action_steps=2, dt=0.1)


def _episode(t: int, offset: float, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    obs = {
        "rgb": rng.integers(0, 256, size=(t, 1, 3, 8, 10), dtype=np.uint8),
        "points": rng.normal(size=(t, 16, 3)).astype(np.float32),
        # proprio encodes (episode offset + step) so items can be traced back.
        "proprio": (offset + np.arange(t, dtype=np.float32))[:, None].repeat(3, axis=1),
    }
    actions = np.stack([offset + np.arange(t), -(offset + np.arange(t))], axis=1).astype(np.float32)
    return obs, actions


def _write(path, lengths=(5, 3)):
    rng = np.random.default_rng(0)
    episodes = [_episode(t, 100.0 * (i + 1), rng) for i, t in enumerate(lengths)]
    with StoreWriter(path, OBS, ACT) as w:
        for obs, act in episodes:
            w.add_episode(obs, act)
    return episodes


def test_round_trip_layout(tmp_path):
    eps = _write(tmp_path / "s.zarr")
    obs_spec, act_spec, arrays = open_store(tmp_path / "s.zarr")
    assert obs_spec == OBS and act_spec == ACT
    assert arrays["episode_ends"].tolist() == [5, 8]
    assert arrays["rgb"].dtype == np.uint8 and arrays["rgb"].shape == (8, 1, 3, 8, 10)
    assert np.array_equal(arrays["rgb"][5:], eps[1][0]["rgb"])
    assert np.array_equal(arrays["action"][:5], eps[0][1])


def test_chunks_pad_at_episode_edges(tmp_path):
    eps = _write(tmp_path / "s.zarr")
    ds = ChunkDataset(tmp_path / "s.zarr")
    assert len(ds) == 8 and ds.num_episodes == 2
    # First step of episode 2 (index 5): history repeats its first step, never episode 1's last.
    item = ds[5]
    assert item["obs"]["proprio"][:, 0].tolist() == [200.0, 200.0]
    assert item["obs"]["rgb"].shape == (2, 1, 3, 8, 10) and item["obs"]["rgb"].dtype == torch.float32
    assert torch.allclose(item["obs"]["rgb"][1], torch.from_numpy(eps[1][0]["rgb"][0]).float() / 255)
    # Actions run 200, 201, 202 and then hold the last one.
    assert item["action"][:, 0].tolist() == [200.0, 201.0, 202.0, 202.0]
    # Last step of episode 1 (index 4): all-held actions, history 103, 104.
    item = ds[4]
    assert item["action"][:, 0].tolist() == [104.0] * 4
    assert item["obs"]["proprio"][:, 0].tolist() == [103.0, 104.0]
    # Horizon / history overrides.
    ds = ChunkDataset(tmp_path / "s.zarr", horizon=2, n_obs_steps=3)
    assert ds[1]["action"].shape == (2, 2) and ds[1]["obs"]["points"].shape == (3, 16, 3)
    assert ds.obs_spec.n_obs_steps == 3 and ds.action_spec.horizon == 2
    with pytest.raises(IndexError):
        ds[8]


def test_normalised_items(tmp_path):
    _write(tmp_path / "s.zarr")
    norm = compute_normalizer(tmp_path / "s.zarr")
    assert norm.action_min.tolist() == [100.0, -202.0] and norm.action_max.tolist() == [202.0, -100.0]
    ds = ChunkDataset(tmp_path / "s.zarr", normalizer=norm)
    acts = torch.stack([ds[i]["action"] for i in range(len(ds))])
    assert acts.min() >= -1 - 1e-6 and acts.max() <= 1 + 1e-6
    assert float(acts[..., 0].min()) == pytest.approx(-1) and float(acts[..., 0].max()) == pytest.approx(1)
    p = torch.stack([ds[i]["obs"]["proprio"][-1] for i in range(len(ds))])
    assert abs(float(p.mean())) < 1e-5


def test_append_and_float_rgb(tmp_path):
    _write(tmp_path / "s.zarr")
    rng = np.random.default_rng(1)
    obs, act = _episode(2, 300.0, rng)
    obs["rgb"] = obs["rgb"].astype(np.float32) / 255.0
    w = StoreWriter(tmp_path / "s.zarr", OBS, ACT, mode="a")
    w.add_episode(obs, act)
    assert w.num_episodes == 3 and w.num_steps == 10
    _, _, arrays = open_store(tmp_path / "s.zarr")
    assert np.array_equal(arrays["rgb"][8:], np.round(obs["rgb"] * 255).astype(np.uint8))


def test_bad_episodes_are_rejected_and_nothing_written(tmp_path):
    _write(tmp_path / "s.zarr")
    w = StoreWriter(tmp_path / "s.zarr", OBS, ACT, mode="a")
    rng = np.random.default_rng(2)
    obs, act = _episode(3, 0.0, rng)
    bad = dict(obs, proprio=obs["proprio"][:, :2])
    with pytest.raises(StoreError, match="proprio"):
        w.add_episode(bad, act)
    with pytest.raises(StoreError, match="modalities"):
        w.add_episode({k: v for k, v in obs.items() if k != "points"}, act)
    nan = obs["points"].copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        w.add_episode(dict(obs, points=nan), act)
    with pytest.raises(StoreError, match="actions"):
        w.add_episode(obs, act[:, :1])
    assert w.num_steps == 8 and w.num_episodes == 2
    with pytest.raises(StoreError, match="other specs"):
        StoreWriter(tmp_path / "s.zarr", OBS, ActionSpec(names=("q",)), mode="a")


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        ChunkDataset(tmp_path / "missing.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an l1flow store"):
        open_store(tmp_path / "other.zarr")


def test_batched_items_match_single_items(tmp_path):
    _write(tmp_path / "s.zarr")
    ds = ChunkDataset(tmp_path / "s.zarr", normalizer=compute_normalizer(tmp_path / "s.zarr"))
    idx = [0, 4, 5, 7, 2]
    batch = ds.__getitems__(idx)
    for j, i in enumerate(idx):
        one = ds[i]
        assert torch.equal(batch["action"][j], one["action"])
        for k in ("rgb", "points", "proprio"):
            assert torch.equal(batch["obs"][k][j], one["obs"][k])
