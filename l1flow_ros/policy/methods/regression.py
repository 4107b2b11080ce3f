"""Plain L1 regression: one deterministic chunk per observation, the mode-averaging reference.

The network sees a zero chunk at t = 0 (the noise only gives the shape), so the
same observation always gives the same chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l1flow_ros.policy.methods.base import Method, SamplerKind
from l1flow_ros.spec import SamplerSpec

if TYPE_CHECKING:
    import torch

    from l1flow_ros.policy.model import ModelConfig
    from l1flow_ros.policy.train import ObjectiveConfigs

    Net = torch.nn.Module


def sample(net: Net, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Plain regression: one pass on a zero input; the noise only gives the shape."""
    import torch

    from l1flow_ros.policy.samplers import tvec

    return net(torch.zeros_like(noise), tvec(noise, 0.0), cond)


def loss(net: Net, cond: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Plain L1 regression: one pass on a zero input."""
    import torch
    import torch.nn.functional as F

    return F.l1_loss(sample(net, cond, torch.zeros_like(x1)), x1)


def _sample(net: Net, cond: torch.Tensor, noise: torch.Tensor, s: SamplerSpec, model_cfg: ModelConfig,
            warm: torch.Tensor | None) -> torch.Tensor:
    return sample(net, cond, noise)


def _default_sampler(cfgs: ObjectiveConfigs | None = None) -> SamplerSpec:
    return SamplerSpec(kind="regression", steps=1, t_values=())


KIND = SamplerKind("regression", "regression", 1, _sample, lambda n: "Regression")

METHOD = Method(
    name="regression",
    label="Regression (L1)",
    kinds=(KIND,),
    loss=lambda b: loss(b.net, b.cond, b.x1),
    default_sampler=_default_sampler,
    reference=True,
)
