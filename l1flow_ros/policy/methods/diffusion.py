"""Diffusion (Diffusion Policy's DDPM): epsilon prediction, MSE, the squaredcos schedule;
sampled by deterministic DDIM (``ddim``, the default, 10 steps) or ancestral DDPM
(``ddpm``, all K training steps).

Diffusion step k = 0 is data, k = K - 1 is (almost) pure noise; the network's time
input for step k is k / K.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from l1flow_ros.policy.methods.base import Method, SamplerKind
from l1flow_ros.spec import SamplerSpec

if TYPE_CHECKING:
    import torch

    from l1flow_ros.policy.model import ModelConfig
    from l1flow_ros.policy.train import ObjectiveConfigs

    Net = torch.nn.Module


def cosine_alphas_cumprod(num_train_steps: int = 100, max_beta: float = 0.999) -> torch.Tensor:
    """The 'squaredcos_cap_v2' schedule (Nichol & Dhariwal), as Diffusion Policy uses: (K,)."""
    import torch

    def abar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - abar((k + 1) / num_train_steps) / abar(k / num_train_steps), max_beta)
        for k in range(num_train_steps)
    ]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), dim=0).float()


def diffusion_time(k: int | torch.Tensor, num_train_steps: int) -> float | torch.Tensor:
    """The network's continuous time input for diffusion step k (k / K, in [0, 1))."""
    return k / num_train_steps


def loss(net: Net, cond: torch.Tensor, x1: torch.Tensor, num_train_steps: int = 100,
         gen: torch.Generator | None = None) -> torch.Tensor:
    """DDPM: diffuse to a random step k, predict the noise; MSE (squaredcos schedule)."""
    import torch
    import torch.nn.functional as F

    from l1flow_ros.policy.objectives import bcast, randn

    ac = cosine_alphas_cumprod(num_train_steps).to(x1)
    k = torch.randint(0, num_train_steps, (x1.shape[0],), generator=gen, device=x1.device)
    a = bcast(ac[k])
    eps = randn(x1.shape, x1, gen)
    x_k = a.sqrt() * x1 + (1 - a).sqrt() * eps
    return F.mse_loss(net(x_k, k.to(x1.dtype) / num_train_steps, cond), eps)


def _ddim_timesteps(steps: int, num_train_steps: int) -> list[int]:
    # "leading" spacing as in diffusers: 90, 80, ..., 0 for 10 of 100.
    stride = num_train_steps // steps
    return [i * stride for i in range(steps)][::-1]


def ddim(net: Net, cond: torch.Tensor, noise: torch.Tensor, steps: int = 10, num_train_steps: int = 100,
         clip: float = 1.0) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) over ``steps`` of the K training steps.

    Predicted clean chunks are clipped to [-clip, clip] (actions live in [-1, 1]).
    """
    from l1flow_ros.policy.samplers import tvec

    ac = cosine_alphas_cumprod(num_train_steps).tolist()
    ks = _ddim_timesteps(steps, num_train_steps)
    x = noise
    for i, k in enumerate(ks):
        a_t = ac[k]
        a_prev = ac[ks[i + 1]] if i + 1 < len(ks) else 1.0
        eps = net(x, tvec(noise, diffusion_time(k, num_train_steps)), cond)
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-clip, clip)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)  # consistent with the clipped x0
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


def ddpm(net: Net, cond: torch.Tensor, noise: torch.Tensor, num_train_steps: int = 100,
         clip: float = 1.0) -> torch.Tensor:
    """Ancestral DDPM sampling over all K steps.

    ``noise`` is (B, K, H, A): noise[:, 0] is x_K, noise[:, j] (j >= 1) the
    fresh noise added at the j-th step, so sampling stays a pure function.
    """
    from l1flow_ros.policy.samplers import tvec

    ac = cosine_alphas_cumprod(num_train_steps).tolist()
    x = noise[:, 0]  # (B, H, A)
    for j, k in enumerate(range(num_train_steps - 1, -1, -1)):
        a_t = ac[k]
        a_prev = ac[k - 1] if k > 0 else 1.0
        beta = 1 - a_t / a_prev
        eps = net(x, tvec(x, diffusion_time(k, num_train_steps)), cond)
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-clip, clip)
        # Posterior mean of q(x_{k-1} | x_k, x0).
        mean = (math.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (
            math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)
        ) * x
        if k > 0:
            var = beta * (1 - a_prev) / (1 - a_t)
            x = mean + math.sqrt(var) * noise[:, j + 1]
        else:
            x = mean
    return x


def _check_ddim(s: SamplerSpec, model_cfg: ModelConfig) -> None:
    if model_cfg.num_train_steps % s.steps:
        raise ValueError(f"ddim steps {s.steps} must divide {model_cfg.num_train_steps}")


def _check_ddpm(s: SamplerSpec, model_cfg: ModelConfig) -> None:
    if s.steps != model_cfg.num_train_steps:
        raise ValueError(f"ddpm samples all {model_cfg.num_train_steps} training steps; steps={s.steps}")


def _default_sampler(cfgs: ObjectiveConfigs | None = None) -> SamplerSpec:
    return SamplerSpec(kind="ddim", steps=10, t_values=())


DDIM = SamplerKind(
    "ddim", "epsilon", 10, lambda net, cond, noise, s, mc, warm: ddim(net, cond, noise, s.steps, mc.num_train_steps),
    lambda n: f"DDIM {n}", check=_check_ddim,
)
DDPM = SamplerKind(
    "ddpm", "epsilon", 100, lambda net, cond, noise, s, mc, warm: ddpm(net, cond, noise, mc.num_train_steps),
    lambda n: f"DDPM {n}", noise_per_step=True, check=_check_ddpm,
)

METHOD = Method(
    name="ddpm",
    label="Diffusion (DDPM)",
    kinds=(DDIM, DDPM),
    loss=lambda b: loss(b.net, b.cond, b.x1, b.model_cfg.num_train_steps),
    default_sampler=_default_sampler,
)
