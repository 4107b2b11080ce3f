"""The 2-D two-mode task: generative policies keep both modes, regression collapses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from l1flow_ros.policy import toy

pytestmark = pytest.mark.learning


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: extra threads only contend
    yield
    torch.set_num_threads(n)


def test_demonstrations_are_bimodal():
    proprio, chunks, side = toy.demonstrations(2000, seed=3)
    assert 0.45 < side.mean() < 0.55
    st = toy.mode_stats(proprio[:, 1], chunks)
    assert st.near_mode == 1.0 and abs(st.left - (1 - side.mean())) < 1e-9
    # The average of the two modes is far from both: what collapse looks like.
    mean_path = toy.mode_paths(proprio[:, 1]).mean(axis=1)
    assert toy.mode_stats(proprio[:, 1], mean_path).near_mode == 0.0


def test_mode_coverage(tmp_path):
    y0 = np.random.default_rng(11).uniform(-toy.Y0_RANGE, toy.Y0_RANGE, 400)
    stats, one_obs = {}, {}
    for method in ("regression", "l1flow", "fm", "imle", "imle-pool"):
        objective = method.split("-")[0]
        teacher = tmp_path / "fm" if objective == "imle" else None
        pool = 16 if method == "imle-pool" else 0  # teacher samples drawn once: K = 16 per item
        manifest, model = toy.train_toy(objective, tmp_path / method, teacher_dir=teacher, teacher_pool=pool)
        chunks = toy.sample_policy(model, manifest.normalizer_obj(), y0, seed=1)
        stats[method] = toy.mode_stats(y0, chunks)
        # One single observation, many noises: a generative policy returns both modes.
        same = np.full(200, 0.1)
        one_obs[method] = toy.mode_stats(
            same, toy.sample_policy(model, manifest.normalizer_obj(), same, seed=2)
        )
    pool_log = json.loads((tmp_path / "imle-pool" / "train_log.jsonl").read_text().splitlines()[0])
    assert pool_log["teacher_pool"] == 16 and pool_log["items"] == 4096  # the pool path was taken
    for method in ("l1flow", "fm", "imle", "imle-pool"):
        st = stats[method]
        assert st.near_mode >= 0.9, (method, st)
        assert 0.3 <= st.left <= 0.7, (method, st)
        assert 0.2 <= one_obs[method].left <= 0.8, (method, one_obs[method])
    # L1 regression is one deterministic chunk per observation: it lands between the modes
    # (an L1 minimiser anywhere on the segment) or on one of them, never on both.
    assert not stats["regression"].bimodal_ok, stats["regression"]
    assert one_obs["regression"].left in (0.0, 1.0), one_obs["regression"]
