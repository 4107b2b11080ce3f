"""Closed-loop policy episodes on the simulated arm in simulated time."""

import numpy as np
import pytest

from l1flow_ros.perception.preprocess import frame_step
from l1flow_ros.sim.metaworld_env import MetaWorldSim, ScriptedExpert, SimConfig, SimError
from l1flow_ros.sim.rollout import rollout
from l1flow_ros.spec import ObservationSpec

pytestmark = pytest.mark.graph


class ExpertChunks:
    """Stand-in policy: the scripted expert's target, held for a whole chunk."""

    def __init__(self, sim, horizon=4):
        self.sim, self.h = sim, horizon
        self.expert = ScriptedExpert(sim.cfg.task, sim.action_scale, sim.cfg.servo_gain)
        self.seen = []

    def reset(self):
        self.seen.clear()

    def observe(self, frames):
        self.seen.append(frames)

    def act(self):
        return np.tile(self.expert.target(self.sim.state), (self.h, 1))


@pytest.fixture(scope="module")
def sim():
    s = MetaWorldSim(SimConfig(task="button-press-v3", cameras=("corner",), image_size=(24, 32)))
    yield s
    s.close()


def test_expert_chunks_solve_the_task_and_observations_follow_the_dt_grid(sim):
    pol = ExpertChunks(sim)
    res = rollout(sim, pol, seed=3, dt=0.05, n_action_steps=1)
    assert res.success and res.chunks == len(pol.seen) and res.steps < sim.max_episode_steps
    stamps = np.array([f.stamp_ns for f in pol.seen])
    np.testing.assert_array_equal(np.diff(stamps), 50_000_000)
    f = pol.seen[0]
    assert f.cameras["corner"].color.shape == (24, 32, 3) and f.cameras["corner"].depth.shape == (24, 32)
    np.testing.assert_allclose(f.proprio[:3], sim.reset(3)[:3], atol=1e-6)
    # The frames are what perception's preprocessing consumes (rgb + points + proprio).
    spec = ObservationSpec(cameras=("corner",), image_size=(16, 16), num_points=32,
                           proprio_names=("ee_x", "ee_y", "ee_z", "gripper"))
    step = frame_step(spec, f, {"corner": sim.camera_model("corner").T_world_cam})
    assert step["rgb"].shape == (1, 3, 16, 16) and step["points"].shape == (32, 3)


def test_chunks_are_executed_n_action_steps_at_a_time(sim):
    pol = ExpertChunks(sim, horizon=6)
    res = rollout(sim, pol, seed=0, dt=0.05, n_action_steps=4, max_steps=40)
    # 40 physics steps = 10 actions of 4 steps; a chunk every 4 actions: at actions 0, 4 and 8.
    assert res.steps == 40 and res.chunks == 3
    assert len(pol.seen) == 10


def test_bad_policy_output_and_dt_are_errors(sim):
    class Bad(ExpertChunks):
        def act(self):
            return np.zeros((4, 3))

    with pytest.raises(SimError, match="chunk"):
        rollout(sim, Bad(sim), seed=0, dt=0.05, n_action_steps=1)
    with pytest.raises(SimError, match="multiple"):
        rollout(sim, ExpertChunks(sim), seed=0, dt=0.03, n_action_steps=1)


def test_a_bundle_from_the_recorded_store_runs_closed_loop(tmp_path):
    """Record -> build -> bundle with the store's specs and normaliser -> evaluate.

    The model is freshly initialised (training is the policy part's); what is checked is
    that the specs, the preprocessing and the runtime fit together on the simulated arm.
    """
    import torch

    from l1flow_ros.cli import main
    from l1flow_ros.data.store import compute_normalizer, open_store
    from l1flow_ros.perception.encoders import EncoderConfig
    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.unet import UnetConfig
    from l1flow_ros.sim.rollout import evaluate_bundle
    from l1flow_ros.spec import SamplerSpec

    eps, store, bundle = tmp_path / "eps", tmp_path / "store.zarr", tmp_path / "bundle"
    assert main(["record", "--task", "reach-v3", "--demos", "1", "--out", str(eps), "--offline",
                 "--image-size", "16", "16", "--quiet"]) == 0
    assert main(["dataset", "build", str(eps), "--out", str(store), "--image-size", "16", "16",
                 "--num-points", "32", "--quiet"]) == 0
    obs, act, _ = open_store(store)
    torch.manual_seed(0)
    enc = EncoderConfig(image_channels=(8, 16), image_keypoints=8, image_feature_dim=16, point_hidden=(16, 32),
                        point_feature_dim=16, proprio_hidden=16, proprio_feature_dim=8, out_dim=32, groups=4)
    model = PolicyModel(obs, act, SamplerSpec(),
                        ModelConfig(encoder=enc, unet=UnetConfig(down_dims=(16, 32), groups=4, time_embed_dim=16)))
    save_bundle(bundle, model, make_manifest(model, compute_normalizer(store)))
    results, lat = evaluate_bundle(bundle, "reach-v3", seeds=[7], max_steps=24)
    r = results[0]
    assert r.seed == 7 and r.steps == 24 and r.chunks == 1 + (24 // 8 - 1) // act.n_action_steps
    assert len(lat) == r.chunks and all(np.isfinite(lat)) and min(lat) > 0
