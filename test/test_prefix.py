"""Prefix-conditioned sampling (real-time chunking): weights, the horizon check, training with a
prefix input, and the prefix graph on every backend here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from l1flow_ros.inference.backends import open_policy
from l1flow_ros.inference.export import export_bundle
from l1flow_ros.policy import toy
from l1flow_ros.policy.bundle import load_bundle
from l1flow_ros.policy.config import TrainConfig
from l1flow_ros.policy.model import PolicyModel, prediction_for
from l1flow_ros.policy.prefix import PrefixTrainConfig, check_horizons, delay_steps, rtc_weights
from l1flow_ros.policy.train import ObjectiveConfigs, random_prefix, train

pytestmark = pytest.mark.core


def test_rtc_weights_freeze_d_then_decay_to_zero_where_the_plan_ends():
    w = rtc_weights(16, 3, 10)
    assert w.shape == (16,) and w.dtype == np.float32
    assert np.all(w[:3] == 1.0) and np.all(w[10:] == 0.0)
    assert np.all(np.diff(w[3:10]) < 0) and 0 < w[9] < w[3] < 1
    assert np.all(rtc_weights(8, 0, 0) == 0) and np.all(rtc_weights(8, 5, 3)[:3] == 1)  # overlap < d
    assert delay_steps(0.0, 0.1) == 0 and delay_steps(0.1, 0.1) == 1 and delay_steps(0.1001, 0.1) == 2


def test_horizon_check_says_which_bound_fails():
    check_horizons(16, 8)
    check_horizons(16, 8, 8)
    for args, why in [((16, 0), r"\[1, horizon - 1"), ((16, 16), r"\[1, horizon - 1"),
                      ((16, 4, 5), "delay 5 steps > n_action_steps 4"), ((16, 12, 5), "runs out")]:
        with pytest.raises(ValueError, match=why):
            check_horizons(*args)


def test_random_prefix_masks_the_first_d_clean_actions():
    x1 = torch.randn(256, 8, 2)
    prefix, mask = random_prefix(x1, 5, 0.25, torch.Generator().manual_seed(0))
    d = mask.sum(1)
    assert set(d.tolist()) <= set(range(6)) and (d == 0).float().mean().item() == pytest.approx(0.25, abs=0.1)
    assert torch.equal(mask, (torch.arange(8)[None] < d[:, None]).float())  # a prefix, no holes
    assert torch.equal(prefix, x1 * mask[:, :, None])


def test_soft_random_prefix_carries_the_rtc_weights_over_a_random_overlap():
    h = 8
    x1 = torch.randn(512, h, 2)
    prefix, mask = random_prefix(x1, 4, 0.2, torch.Generator().manual_seed(0), soft=True)
    overlaps = set()
    for i in range(x1.shape[0]):
        d = int((mask[i] == 1).sum())
        if d == 0:
            assert torch.all(mask[i] == 0)
            continue
        e = int((mask[i] > 0).sum())
        assert 1 <= d <= 4 and d <= e <= h
        np.testing.assert_allclose(mask[i].numpy(), rtc_weights(h, d, e), rtol=1e-6, atol=1e-7)
        overlaps.add(e - d)
    assert overlaps >= {0, 1, 2, 3}  # the overlap beyond the frozen actions varies
    assert torch.equal(prefix, x1 * (mask > 0).float()[:, :, None])


def _train(objective: str, out, prefix: bool, teacher=None, steps: int = 2, soft: bool = False):
    from l1flow_ros.policy import methods

    ds = toy.ToyDataset(256)
    cfgs = ObjectiveConfigs(prefix=PrefixTrainConfig(enabled=prefix, soft=soft))
    sampler = methods.get(objective).default_sampler(cfgs)
    model_cfg = dataclasses.replace(toy.TOY_MODEL, prediction=prediction_for(sampler.kind))
    cfg = TrainConfig(objective=objective, steps=steps, batch_size=16, warmup_steps=1, save_every=10**9,
                      log_every=1, device="cpu")
    train(ds, ds.normalizer, toy.OBS_SPEC, toy.ACTION_SPEC, out, cfg, model_cfg=model_cfg, sampler=sampler,
          cfgs=cfgs, teacher_dir=teacher, progress=False)
    return load_bundle(out)


@pytest.mark.parametrize("objective,soft", [("l1flow", False), ("fm", False), ("l1flow", True)])
def test_prefix_trained_bundle_records_it_exports_and_keeps_the_prefix(objective, soft, tmp_path):
    manifest, model = _train(objective, tmp_path / objective, prefix=True, soft=soft)
    assert manifest.model.unet.prefix_input and model.prefix_mode == "trained"
    assert manifest.model.unet.prefix_soft is soft
    assert manifest.train["objective"]["prefix"]["enabled"] is True
    assert manifest.train["objective"]["prefix"]["soft"] is soft
    report = export_bundle(tmp_path / objective)
    assert "policy.prefix.onnx" in report.files
    h, a = toy.ACTION_SPEC.horizon, toy.ACTION_SPEC.dim
    rng = np.random.default_rng(0)
    cond = rng.standard_normal((3, model.encoder.out_dim), dtype=np.float32)
    noise = rng.standard_normal((3, h, a), dtype=np.float32)
    y = rng.uniform(-1, 1, (3, h, a)).astype(np.float32)
    w = np.stack([rtc_weights(h, k, h - 2) for k in (0, 2, 4)])
    p_t = open_policy(tmp_path / objective, "torch", prefix=True)
    p_o = open_policy(tmp_path / objective, "onnxruntime", prefix=True, threads=1)
    out_t, out_o = p_t.run(cond, noise, y, w), p_o.run(cond, noise, y, w)
    assert np.max(np.abs(out_t - out_o)) <= 1e-4
    for i, k in enumerate((0, 2, 4)):
        np.testing.assert_allclose(out_t[i, :k], y[i, :k], atol=1e-6)
    # The trained network reads the prefix: another prefix changes the free actions.
    assert not np.allclose(p_t.run(cond, noise, -y, w)[1, 2:], out_t[1, 2:], atol=1e-5)


@pytest.mark.parametrize("soft", [False, True])
def test_the_trained_network_gets_the_frozen_prefix_or_with_soft_the_whole_weighted_overlap(soft):
    from l1flow_ros.policy.samplers import prefix_net

    h, a = 8, 2
    seen = {}

    def net(x, t, cond, prefix=None, mask=None):  # what the network is given
        seen.update(prefix=prefix, mask=mask)
        return x

    y, noise = torch.randn(1, h, a), torch.randn(1, h, a)
    w = torch.from_numpy(rtc_weights(h, 2, 6))[None]  # 2 frozen, the plan covers 6
    prefix_net(net, noise, y, w, trained=True, soft=soft)(noise, torch.zeros(1), torch.zeros(1, 4))
    if soft:
        torch.testing.assert_close(seen["mask"], w)
        torch.testing.assert_close(seen["prefix"][:, :6], y[:, :6])
    else:
        torch.testing.assert_close(seen["mask"], (w >= 1).float())
        torch.testing.assert_close(seen["prefix"][:, :2], y[:, :2])
        assert torch.all(seen["prefix"][:, 2:6] == 0)
    assert torch.all(seen["prefix"][:, 6:] == 0)


def test_imle_refuses_prefix_training_with_the_reason(tmp_path):
    _train("fm", tmp_path / "fm", prefix=False, steps=1)
    with pytest.raises(ValueError, match="cannot be trained with a prefix input"):
        _train("imle", tmp_path / "imle", prefix=True, teacher=tmp_path / "fm", steps=1)


def test_ofp_student_with_a_prefix_input_starts_as_its_teacher(tmp_path):
    from l1flow_ros.policy import methods
    from l1flow_ros.policy.train import _widened

    _, teacher = _train("fm", tmp_path / "fm", prefix=False, steps=1)
    sampler = methods.get("ofp").default_sampler(None)
    cfg = dataclasses.replace(teacher.cfg, prediction=prediction_for(sampler.kind),
                              unet=dataclasses.replace(teacher.cfg.unet, prefix_input=True))
    student = PolicyModel(toy.OBS_SPEC, toy.ACTION_SPEC, sampler, cfg)
    student.load_state_dict(_widened(teacher.state_dict(), student.state_dict()), strict=False)
    x, t, r = torch.randn(4, 8, 2), torch.rand(4), torch.ones(4)
    cond = torch.randn(4, teacher.encoder.out_dim)
    with torch.no_grad():  # zero prefix inputs: the widened first layer computes what the teacher's did
        np.testing.assert_allclose(student.head(x, t, cond, r).numpy(), teacher.head(x, t, cond).numpy(), atol=1e-5)


def test_inpainting_keeps_the_frozen_prefix_for_every_flow_sampler():
    from l1flow_ros.policy import methods

    h, a = toy.ACTION_SPEC.horizon, toy.ACTION_SPEC.dim
    for name in ("l1flow", "fm", "ofp", "imle"):
        sampler = methods.get(name).default_sampler(None)
        cfg = dataclasses.replace(toy.TOY_MODEL, prediction=prediction_for(sampler.kind))
        model = PolicyModel(toy.OBS_SPEC, toy.ACTION_SPEC, sampler, cfg).eval()
        assert model.prefix_mode == "inpaint"
        cond, noise, y = torch.randn(2, model.encoder.out_dim), torch.randn(2, h, a), torch.randn(2, h, a)
        w = torch.from_numpy(np.stack([rtc_weights(h, 3, 6)] * 2))
        with torch.no_grad():
            out = model.sample(cond, noise, prefix=y, weights=w)
        torch.testing.assert_close(out[:, :3], y[:, :3])
    ddim = methods.get("ddpm").default_sampler(None)
    cfg = dataclasses.replace(toy.TOY_MODEL, prediction=prediction_for(ddim.kind))
    model = PolicyModel(toy.OBS_SPEC, toy.ACTION_SPEC, ddim, cfg)
    assert model.prefix_mode is None
    with pytest.raises(ValueError, match="not a flow-time sampler"):
        model.sample(torch.randn(1, model.encoder.out_dim), torch.randn(1, h, a), prefix=torch.zeros(1, h, a),
                     weights=torch.ones(1, h))


def test_bundles_written_before_the_prefix_input_keep_their_fingerprint():
    from pathlib import Path

    from l1flow_ros.policy.manifest import compute_fingerprint, read_manifest

    bundled = Path(__file__).resolve().parents[1] / "models" / "default"
    manifest = read_manifest(bundled)
    assert "prefix_input" not in (bundled / "manifest.json").read_text()  # written before the field
    assert not manifest.model.unet.prefix_input
    assert compute_fingerprint(bundled, manifest) == manifest.fingerprint


def test_an_exported_bundle_exports_again(tmp_path):
    """Re-exporting (e.g. to add the prefix graph to an older bundle) rewrites the graphs and
    refreshes the fingerprint instead of failing on the files it just rewrote."""
    _train("l1flow", tmp_path / "b", prefix=False, steps=1)
    first = export_bundle(tmp_path / "b", opset=17).fingerprint
    before = (tmp_path / "b" / "policy.onnx").read_bytes()
    second = export_bundle(tmp_path / "b", opset=18)  # other bytes for the same listed files
    assert (tmp_path / "b" / "policy.onnx").read_bytes() != before
    assert "policy.prefix.onnx" in second.files and second.fingerprint
    assert load_bundle(tmp_path / "b")[0].fingerprint == second.fingerprint != first
