"""Flow matching: velocity prediction, MSE, N Euler steps (the teacher of the one-step students).

The network predicts the velocity x1 - eps at x_t = t * x1 + (1 - t) * eps; the
sampler integrates dx/dt = v(x, t) from noise (t = 0) to the data (t = 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l1flow_ros.policy.methods.base import Method, SamplerKind
from l1flow_ros.spec import SamplerSpec

if TYPE_CHECKING:
    import torch

    from l1flow_ros.policy.config import FlowTimeConfig
    from l1flow_ros.policy.model import ModelConfig
    from l1flow_ros.policy.train import ObjectiveConfigs

    Net = torch.nn.Module


def loss(
    net: Net, cond: torch.Tensor, x1: torch.Tensor, cfg: FlowTimeConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Flow matching: the network predicts the velocity x1 - eps; MSE."""
    import torch.nn.functional as F

    from l1flow_ros.policy.objectives import flow_point

    eps, t, x_t = flow_point(x1, cfg, gen)
    return F.mse_loss(net(x_t, t, cond), x1 - eps)


def euler(
    net: Net,
    cond: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 10,
    warm: torch.Tensor | None = None,
    warm_t: float = 0.5,
) -> torch.Tensor:
    """Flow matching, v-prediction: N Euler steps of dx/dt = v(x, t) from t0 to 1."""
    from l1flow_ros.policy.samplers import tvec, warm_start_point

    t0 = 0.0 if warm is None else warm_t
    x = noise if warm is None else warm_start_point(noise, warm, warm_t)
    h = (1.0 - t0) / steps
    for i in range(steps):
        x = x + h * net(x, tvec(noise, t0 + i * h), cond)
    return x


def _sample(net: Net, cond: torch.Tensor, noise: torch.Tensor, s: SamplerSpec, model_cfg: ModelConfig,
            warm: torch.Tensor | None) -> torch.Tensor:
    return euler(net, cond, noise, s.steps, warm, s.warm_start_t)


def _default_sampler(cfgs: ObjectiveConfigs | None = None) -> SamplerSpec:
    return SamplerSpec(kind="fm", steps=10, t_values=())


KIND = SamplerKind("fm", "velocity", 10, _sample, lambda n: f"FM {n}-step", warm_start=True, flow_time=True)

METHOD = Method(
    name="fm",
    label="Flow matching",
    kinds=(KIND,),
    loss=lambda b: loss(b.net, b.cond, b.x1, b.cfgs.flow_time),
    default_sampler=_default_sampler,
)
