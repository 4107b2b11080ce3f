"""L1 Flow: flow matching as *sample prediction*, an L1 loss, and a two-step sampler.

The network predicts the clean chunk from x_t = t * x1 + (1 - t) * eps. The
two-step sampler takes one Euler step from noise to t1 (0.5) with the first
prediction, then returns the second prediction; ``steps != 2`` integrates with
N Euler steps of v = (a - x_t) / (1 - t) instead.
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
    """L1 Flow: the network predicts the clean chunk from x_t; L1 loss."""
    import torch.nn.functional as F

    from l1flow_ros.policy.objectives import flow_point

    eps, t, x_t = flow_point(x1, cfg, gen)
    return F.l1_loss(net(x_t, t, cond), x1)


def two_step(
    net: Net,
    cond: torch.Tensor,
    noise: torch.Tensor,
    t1: float = 0.5,
    warm: torch.Tensor | None = None,
    warm_t: float = 0.5,
) -> torch.Tensor:
    """L1 Flow two-step sampler (the network predicts the clean chunk).

    a0 = f(eps, 0); x_t1 = eps + t1 * (a0 - eps); return f(x_t1, t1).
    With a warm start the first prediction is made at t_w from z, and the
    second step is taken only if t1 > t_w (otherwise one step is enough).
    """
    from l1flow_ros.policy.samplers import tvec, warm_start_point

    if warm is None:
        a0 = net(noise, tvec(noise, 0.0), cond)  # (B, H, A)
        x_t1 = noise + t1 * (a0 - noise)
        return net(x_t1, tvec(noise, t1), cond)
    z = warm_start_point(noise, warm, warm_t)
    a0 = net(z, tvec(noise, warm_t), cond)
    if t1 <= warm_t:
        return a0
    x_t1 = z + (t1 - warm_t) / (1.0 - warm_t) * (a0 - z)
    return net(x_t1, tvec(noise, t1), cond)


def euler(
    net: Net,
    cond: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    warm: torch.Tensor | None = None,
    warm_t: float = 0.5,
    min_gap: float = 0.05,
) -> torch.Tensor:
    """N Euler steps of a sample-prediction network: v = (a - x_t) / (1 - t).

    The denominator is clamped at ``min_gap`` so a step near t = 1 cannot blow
    up. The last step lands exactly on the prediction (t = 1).
    """
    from l1flow_ros.policy.samplers import tvec, warm_start_point

    t0 = 0.0 if warm is None else warm_t
    x = noise if warm is None else warm_start_point(noise, warm, warm_t)
    ts = [t0 + (1.0 - t0) * i / steps for i in range(steps + 1)]
    for t, t_next in zip(ts[:-1], ts[1:]):
        a = net(x, tvec(noise, t), cond)
        v = (a - x) / max(1.0 - t, min_gap)
        x = x + (t_next - t) * v
    return x


def _sample(net: Net, cond: torch.Tensor, noise: torch.Tensor, s: SamplerSpec, model_cfg: ModelConfig,
            warm: torch.Tensor | None) -> torch.Tensor:
    if s.steps == 2:
        return two_step(net, cond, noise, s.t_values[0], warm, s.warm_start_t)
    return euler(net, cond, noise, s.steps, warm, s.warm_start_t)


def _check(s: SamplerSpec, model_cfg: ModelConfig) -> None:
    if s.steps == 2 and not (0.0 < s.t_values[0] < 1.0):
        raise ValueError(f"l1flow two-step needs 0 < t_values[0] < 1, got {s.t_values}")


def _label(steps: int) -> str:
    return "L1 Flow 2-step" if steps == 2 else f"L1 Flow {steps}-step Euler"


def _default_sampler(cfgs: ObjectiveConfigs | None = None) -> SamplerSpec:
    return SamplerSpec(kind="l1flow", steps=2, t_values=(0.5,))


KIND = SamplerKind("l1flow", "sample", 2, _sample, _label, warm_start=True, check=_check, flow_time=True)

METHOD = Method(
    name="l1flow",
    label="L1 Flow",
    kinds=(KIND,),
    loss=lambda b: loss(b.net, b.cond, b.x1, b.cfgs.flow_time),
    default_sampler=_default_sampler,
)
