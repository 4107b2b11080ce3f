"""Every registered method, end to end at tiny size: one step of the real training loop on
a synthetic batch, sampling, ONNX export, and onnxruntime == torch for the same noise.

A method added to ``l1flow_ros.policy.methods`` is tested here without editing this file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from l1flow_ros import spec
from l1flow_ros.inference.backends import noise_shape, open_encoder, open_policy, parse_sampler
from l1flow_ros.inference.export import export_bundle
from l1flow_ros.perception.encoders import EncoderConfig
from l1flow_ros.policy import methods, toy
from l1flow_ros.policy.bundle import load_bundle, read_manifest
from l1flow_ros.policy.config import TrainConfig
from l1flow_ros.policy.model import ModelConfig
from l1flow_ros.policy.prefix import rtc_weights
from l1flow_ros.policy.train import LOG_FILE, ObjectiveConfigs, train
from l1flow_ros.policy.unet import UnetConfig

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.core]

# Tiny: a one-level U-Net, and 10 diffusion training steps so that DDPM samples all of them quickly.
TINY = ModelConfig(
    encoder=EncoderConfig(proprio_hidden=16, proprio_feature_dim=8, out_dim=16),
    unet=UnetConfig(down_dims=(16,), kernel_size=3, time_embed_dim=16),
    num_train_steps=10,
)
ATOL = 1e-4  # fp32 ONNX Runtime vs torch, as ``l1flow export`` checks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """name -> bundle dir, each trained for one step on demand (a student's teacher first)."""
    root = tmp_path_factory.mktemp("methods")
    ds = toy.ToyDataset(64, seed=0)  # (1, 2) proprio -> (8, 2) chunks, two modes
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name in done:
            return done[name]
        method = methods.get(name)
        teacher = get(method.teacher) if method.teacher else None
        cfg = TrainConfig(objective=name, steps=1, batch_size=8, warmup_steps=1, save_every=10**9, log_every=1,
                          device="cpu")
        train(ds, ds.normalizer, toy.OBS_SPEC, toy.ACTION_SPEC, root / name, cfg,
              model_cfg=dataclasses.replace(TINY, prediction=method.prediction), cfgs=ObjectiveConfigs(),
              teacher_dir=teacher, progress=False)  # fmt: skip
        done[name] = root / name
        return done[name]

    return get


def _kind_specs(method: methods.Method, num_train_steps: int) -> list[str]:
    """Every sampler kind the method brings, at its default steps (at most the K diffusion steps)."""
    return [f"{k.name}:{min(k.default_steps, num_train_steps)}" for k in method.kinds]


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_train_sample_export_parity(name, trained):
    method = methods.get(name)
    d = trained(name)

    # One training step with the method's own loss, recorded; the bundle ships its default sampler.
    log = [json.loads(line) for line in (d / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1] and math.isfinite(log[-1]["loss"])
    manifest, model = load_bundle(d)
    assert manifest.train["train"]["objective"] == name
    assert manifest.sampler == method.default_sampler(ObjectiveConfigs())
    assert manifest.model.prediction == method.prediction
    if method.teacher:
        assert manifest.train["teacher"] == read_manifest(trained(method.teacher)).fingerprint

    # Sampling in torch: the shape, finite, and the same noise gives the same chunk.
    h, a = toy.ACTION_SPEC.horizon, toy.ACTION_SPEC.dim
    gen = torch.Generator().manual_seed(1)
    obs = {"proprio": torch.randn(3, 1, 2, generator=gen)}
    noise = torch.randn(model.noise_shape(3), generator=gen)
    with torch.no_grad():
        chunk = model(obs, noise)
        assert chunk.shape == (3, h, a) and torch.isfinite(chunk).all()
        assert torch.equal(model(obs, noise.clone()), chunk)

    # Export: the bundle's sampler (and its warm-start variant), and every other kind of the method.
    others = [s for s in _kind_specs(method, manifest.model.num_train_steps)
              if parse_sampler(s, manifest.sampler) != manifest.sampler]
    report = export_bundle(d, samplers=others)
    expected = {"encoder.onnx", "policy.onnx"} | ({"policy.warm.onnx"} if manifest.sampler.warm_start else set())
    prefix = methods.sampler_kind(manifest.sampler.kind).flow_time  # the prefix-conditioned graph
    expected |= {"policy.prefix.onnx"} if prefix else set()
    assert expected <= set(report.files) and len(report.files) == len(expected) + len(others)
    assert set(report.files) <= set(read_manifest(d).files)

    # onnxruntime == torch for the same inputs, on every exported graph.
    rng = np.random.default_rng(2)
    x = {"proprio": rng.standard_normal((3, 1, 2), dtype=np.float32)}
    e_t, e_o = open_encoder(d, "torch").run(x), open_encoder(d, "onnxruntime", threads=1).run(x)
    assert e_t.shape == (3, model.encoder.out_dim) and np.max(np.abs(e_t - e_o)) <= ATOL
    variants = [(None, False), *[(s, False) for s in others]]
    if manifest.sampler.warm_start:
        variants.append((None, True))
    for sampler, warm in variants:
        p_t = open_policy(d, "torch", sampler=sampler, warm=warm)
        p_o = open_policy(d, "onnxruntime", sampler=sampler, warm=warm, threads=1)
        n = rng.standard_normal(noise_shape(p_t.sampler, h, a, 3), dtype=np.float32)
        w = rng.uniform(-1, 1, (3, h, a)).astype(np.float32) if warm else None
        out_t, out_o = p_t.run(e_t, n, w), p_o.run(e_t, n, w)
        assert out_t.shape == (3, h, a) and np.isfinite(out_t).all()
        assert np.max(np.abs(out_t - out_o)) <= ATOL, (name, sampler, warm)
    if prefix:  # real-time chunking: the first d actions are the prefix, on both backends
        p_t, p_o = open_policy(d, "torch", prefix=True), open_policy(d, "onnxruntime", prefix=True, threads=1)
        n = rng.standard_normal((3, h, a), dtype=np.float32)
        y = rng.uniform(-1, 1, (3, h, a)).astype(np.float32)
        wts = np.stack([rtc_weights(h, k, h - 2) for k in (0, 1, 3)])
        out_t, out_o = p_t.run(e_t, n, y, wts), p_o.run(e_t, n, y, wts)
        assert np.max(np.abs(out_t - out_o)) <= ATOL, (name, "prefix")
        for i, k in enumerate((0, 1, 3)):
            np.testing.assert_allclose(out_t[i, :k], y[i, :k], atol=1e-6)


def test_registry_is_consistent():
    # Every sampler kind a manifest may name has a method that draws it, and no other.
    assert set(methods.SAMPLER_KINDS) == set(spec.SAMPLER_KINDS)
    assert len({m.run_name for m in methods.METHODS.values()}) == len(methods.METHODS)
    for m in methods.METHODS.values():
        s = m.default_sampler(None)
        assert s.kind in {k.name for k in m.kinds} and methods.prediction_for(s.kind) == m.prediction
        assert parse_sampler(s.kind).steps == methods.sampler_kind(s.kind).default_steps
        assert methods.label(s)
        if m.distill:
            teacher = methods.get(m.teacher)
            assert not teacher.distill
            assert m.teacher_prediction in (None, teacher.prediction)
    assert set(methods.trained()) | set(methods.distilled()) == set(methods.METHODS)
    with pytest.raises(ValueError, match="unknown method"):
        methods.get("euler")
    with pytest.raises(ValueError, match="unknown sampler kind"):
        methods.sampler_kind("euler")
