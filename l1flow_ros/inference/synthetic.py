"""Untrained bundles for latency benchmarks and tests.

Latency depends on the architecture and the sampler, not on the weights, so the
benchmark compares samplers on *variants* of one bundle: the same encoder and U-Net
(weights copied wherever the shapes match), the network's prediction set to what each
sampler needs. Variants whose prediction differs from the source bundle's are not
trained for it: their chunks are meaningless, their timings are not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

TINY_OBS = ObservationSpec(cameras=("cam",), image_size=(32, 32), proprio_names=("ee_x", "ee_y", "ee_z", "gripper"))
TINY_ACTION = ActionSpec(names=("ee_x", "ee_y", "ee_z", "gripper"), horizon=8, n_action_steps=4, dt=0.05,
                         gripper_indices=(3,))


def tiny_model_config(prediction: str = "sample") -> Any:
    """A U-Net + encoder small enough for CPU tests (a few ms per network call)."""
    from l1flow_ros.perception.encoders import EncoderConfig
    from l1flow_ros.policy.model import ModelConfig
    from l1flow_ros.policy.unet import UnetConfig

    return ModelConfig(
        prediction=prediction,
        encoder=EncoderConfig(image_channels=(8, 16), image_keypoints=8, image_feature_dim=16, out_dim=32, groups=4,
                              proprio_hidden=16, proprio_feature_dim=8),
        unet=UnetConfig(down_dims=(16, 32), time_embed_dim=16, groups=4),
        num_train_steps=100,
    )


def make_bundle(out_dir: str | Path, sampler: SamplerSpec | None = None, seed: int = 0,
                obs: ObservationSpec = TINY_OBS, action: ActionSpec = TINY_ACTION, model_cfg: Any = None,
                poison_nan: bool = False) -> str:
    """Write an untrained bundle; returns its fingerprint. ``poison_nan`` puts a NaN in the weights."""
    import torch

    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import PolicyModel, prediction_for
    from l1flow_ros.policy.normalizer import Normalizer

    sampler = sampler or SamplerSpec(kind="l1flow", steps=2, t_values=(0.5,), warm_start=True)
    cfg = model_cfg or tiny_model_config(prediction_for(sampler.kind))
    torch.manual_seed(seed)
    model = PolicyModel(obs, action, sampler, cfg)
    if poison_nan:
        with torch.no_grad():
            next(model.head.parameters()).view(-1)[0] = float("nan")
    a = action.dim
    lo = np.linspace(-0.5, -0.1, a)
    norm = Normalizer(lo, lo + 1.0, np.zeros(len(obs.proprio_names)), np.ones(len(obs.proprio_names)))
    return save_bundle(out_dir, model, make_manifest(model, norm))


def variant_bundle(src_dir: str | Path, out_dir: str | Path, sampler: SamplerSpec) -> bool:
    """``src_dir``'s architecture drawn by ``sampler``, written to ``out_dir``.

    Returns True when the variant is the source network itself (same prediction, so
    the trained weights apply), False when its weights are only partly the source's.
    """
    import torch

    from l1flow_ros.policy.bundle import load_bundle, make_manifest, save_bundle
    from l1flow_ros.policy.model import PolicyModel, prediction_for

    manifest, src = load_bundle(src_dir)
    pred = prediction_for(sampler.kind)
    same = pred == manifest.model.prediction
    cfg = dataclasses.replace(manifest.model, prediction=pred)
    if sampler.kind in ("ddim", "ddpm"):
        steps = sampler.steps if sampler.kind == "ddpm" else max(cfg.num_train_steps, sampler.steps)
        cfg = dataclasses.replace(cfg, num_train_steps=steps)
    model = PolicyModel(manifest.observation, manifest.action, sampler, cfg)
    src_state = src.state_dict()
    state = model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            if k in src_state and src_state[k].shape == v.shape:
                v.copy_(src_state[k])
    from l1flow_ros.policy.normalizer import Normalizer

    save_bundle(out_dir, model, make_manifest(model, Normalizer.from_dict(manifest.normalizer), manifest.train))
    return same


def default_bench_bundle(out_dir: str | Path, size: str = "default") -> str:
    """An untrained L1 Flow bundle for latency: one 96 x 96 camera + 4-d proprio, horizon 16.

    ``size="default"``: the package's default encoder and U-Net (what ``l1flow train``
    builds by default); ``"tiny"``: the test size.
    """
    from l1flow_ros.policy.model import ModelConfig

    obs = ObservationSpec(cameras=("cam",), image_size=(96, 96), proprio_names=TINY_OBS.proprio_names)
    act = dataclasses.replace(TINY_ACTION, horizon=16, n_action_steps=8, dt=0.1)
    cfg = ModelConfig(prediction="sample") if size == "default" else tiny_model_config("sample")
    if size not in ("default", "tiny"):
        raise ValueError(f"size {size!r} must be 'default' or 'tiny'")
    return make_bundle(out_dir, SamplerSpec(kind="l1flow", steps=2, t_values=(0.5,)), obs=obs, action=act,
                       model_cfg=cfg)
