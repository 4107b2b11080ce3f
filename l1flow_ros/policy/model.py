"""The policy: observation encoder + a chunk network + the sampler its SamplerSpec names.

A policy is: normalise (numpy, outside) -> ``encode`` -> ``sample`` ->
unnormalise (numpy, outside). ``policy_graph()`` and ``encoder_graph()`` are
the two modules exported to ONNX; the runtime feeds them numpy arrays. The encoder is
also exported in two parts, ``encoder_step_graph()`` (one observation step's features)
and ``encoder_head_graph()`` (the steps' features -> the embedding), so that perception
encodes each step once.

What the chunk network predicts depends on how it was trained
(``ModelConfig.prediction``), and only the sampler kinds made for that prediction
can draw it: the table and the samplers are in ``l1flow_ros.policy.methods``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from l1flow_ros.perception.encoders import ObservationEncoder
from l1flow_ros.policy.methods import PREDICTIONS, WARM_START_KINDS, prediction_for, sampler_kind
from l1flow_ros.policy.model_config import ModelConfig  # torch-free: manifests read without torch
from l1flow_ros.policy.samplers import impose_prefix, prefix_net
from l1flow_ros.policy.unet import ConditionalUnet1D
from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

if TYPE_CHECKING:
    from l1flow_ros.policy.manifest import Manifest


class PolicyGraph(nn.Module):
    """forward(cond (B, D), noise[, warm (B, H, A)]) -> normalised chunk (B, H, A)."""

    def __init__(self, model: PolicyModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, cond: torch.Tensor, noise: torch.Tensor, warm: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.model.sample(cond, noise, warm)


class PrefixPolicyGraph(nn.Module):
    """forward(cond (B, D), noise, prefix (B, H, A), weights (B, H)) -> normalised chunk (B, H, A):
    the running plan's prefix imposed (``l1flow_ros.policy.prefix``)."""

    def __init__(self, model: PolicyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, cond: torch.Tensor, noise: torch.Tensor, prefix: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        return self.model.sample(cond, noise, prefix=prefix, weights=weights)


class EncoderGraph(nn.Module):
    """forward(*inputs in ``model.encoder.input_names`` order) -> (B, D)."""

    def __init__(self, model: PolicyModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_tensors(*inputs)


class EncoderStepGraph(nn.Module):
    """forward(*one step per row, ``model.encoder.step_input_names`` order) -> features (N, S)."""

    def __init__(self, model: PolicyModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder.step_features(*inputs)


class EncoderHeadGraph(nn.Module):
    """forward(features (B, To, S)[, proprio (B, To, P)]) -> (B, D): the steps' cached features
    and the proprio history -> the embedding ``EncoderGraph`` gives."""

    def __init__(self, model: PolicyModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, feats: torch.Tensor, *proprio: torch.Tensor) -> torch.Tensor:
        return self.encoder.head(feats, proprio[0] if proprio else None)


class PolicyModel(nn.Module):
    """Holds ``.encoder`` (ObservationEncoder) and ``.head`` (ConditionalUnet1D)."""

    def __init__(
        self,
        obs_spec: ObservationSpec,
        action_spec: ActionSpec,
        sampler: SamplerSpec,
        cfg: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        cfg = cfg or ModelConfig(prediction=prediction_for(sampler.kind))
        if action_spec.dim < 1:
            raise ValueError("action spec has no dimensions (names is empty)")
        if cfg.prediction == "flow_map" and not cfg.unet.two_times:
            cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, two_times=True))
        self.obs_spec = obs_spec
        self.action_spec = action_spec
        self.cfg = cfg
        self.encoder = ObservationEncoder(obs_spec, cfg.encoder)
        self.head = ConditionalUnet1D(action_spec.dim, self.encoder.out_dim, cfg.unet)
        if action_spec.horizon % self.head.min_horizon:
            raise ValueError(
                f"horizon {action_spec.horizon} must be a multiple of {self.head.min_horizon} "
                f"for a U-Net with down_dims {cfg.unet.down_dims}"
            )
        self.sampler = sampler
        self._check_sampler(sampler)

    def _check_sampler(self, sampler: SamplerSpec) -> None:
        kind = sampler_kind(sampler.kind)
        if kind.prediction != self.cfg.prediction:
            raise ValueError(
                f"a {self.cfg.prediction!r} network cannot be sampled with {sampler.kind!r}; "
                f"use {PREDICTIONS[self.cfg.prediction]}"
            )
        if sampler.steps < 1:
            raise ValueError(f"sampler steps must be >= 1, got {sampler.steps}")
        if kind.check is not None:
            kind.check(sampler, self.cfg)
        if sampler.warm_start and (not kind.warm_start or not 0.0 <= sampler.warm_start_t < 1.0):
            raise ValueError(f"warm start needs a sampler in {WARM_START_KINDS} and 0 <= warm_start_t < 1")

    def with_sampler(self, sampler: SamplerSpec) -> PolicyModel:
        """The same weights sampled another way (e.g. DDPM 100 instead of DDIM 10)."""
        other = copy.copy(self)  # shares the modules
        other._check_sampler(sampler)
        other.sampler = sampler
        return other

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of the noise ``sample`` takes: (B, H, A); DDPM: (B, K, H, A), one per step."""
        h, a = self.action_spec.horizon, self.action_spec.dim
        if sampler_kind(self.sampler.kind).noise_per_step:
            return (batch, self.cfg.num_train_steps, h, a)
        return (batch, h, a)

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(obs)  # (B, D)

    @property
    def prefix_mode(self) -> str | None:
        """How a running plan's prefix is imposed on this network's samples: "trained" (it was
        trained with a prefix input), "inpaint" (a flow-time sampler), None (not at all)."""
        if self.cfg.unet.prefix_input:
            return "trained"
        return "inpaint" if sampler_kind(self.sampler.kind).flow_time else None

    def sample(
        self, cond: torch.Tensor, noise: torch.Tensor, warm: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None, weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised chunk (B, H, A); the same inputs give the same chunk.

        ``prefix`` (B, H, A) normalised and ``weights`` (B, H): the running plan and how much of
        it the chunk keeps (``l1flow_ros.policy.prefix``); not together with ``warm``.
        """
        kind = sampler_kind(self.sampler.kind)
        if warm is not None and not kind.warm_start:
            raise ValueError(f"sampler {kind.name!r} takes no warm start")
        if prefix is None:
            return kind.sample(self.head, cond, noise, self.sampler, self.cfg, warm)
        mode = self.prefix_mode
        if mode is None:
            raise ValueError(f"sampler {kind.name!r} cannot take a prefix (not a flow-time sampler)")
        if warm is not None or weights is None:
            raise ValueError("a prefix comes with its weights and without a warm start")
        trained = mode == "trained"
        net = prefix_net(self.head, noise, prefix, weights, trained, soft=trained and self.cfg.unet.prefix_soft)
        return impose_prefix(kind.sample(net, cond, noise, self.sampler, self.cfg, None), prefix, weights)

    def forward(
        self, obs: dict[str, torch.Tensor], noise: torch.Tensor, warm: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.sample(self.encode(obs), noise, warm)

    def policy_graph(self) -> PolicyGraph:
        """Module for export: forward(cond, noise[, warm]) with the sampler unrolled."""
        return PolicyGraph(self)

    def prefix_graph(self) -> PrefixPolicyGraph:
        """Module for export: forward(cond, noise, prefix, weights), the sampler unrolled."""
        return PrefixPolicyGraph(self)

    def encoder_graph(self) -> EncoderGraph:
        """Module for export: positional inputs in ``self.encoder.input_names`` order."""
        return EncoderGraph(self)

    def encoder_step_graph(self) -> EncoderStepGraph:
        """Module for export: one observation step's features (the encoder's first part)."""
        return EncoderStepGraph(self)

    def encoder_head_graph(self) -> EncoderHeadGraph:
        """Module for export: cached step features (+ proprio) -> the embedding (the second part)."""
        return EncoderHeadGraph(self)


def build_model(manifest: Manifest) -> PolicyModel:
    """A freshly initialised model with the architecture a manifest describes."""
    return PolicyModel(manifest.observation, manifest.action, manifest.sampler, manifest.model)
