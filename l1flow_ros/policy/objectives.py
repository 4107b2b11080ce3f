"""What the training objectives share; each method's loss is in its module
(``l1flow_ros.policy.methods``).

Every loss takes the network ``net(x (B, H, A), t (B,), cond (B, D)[, r])``,
the conditioning ``cond`` (B, D) and the clean normalised chunk ``x1`` (B, H, A),
and draws its own noise from ``gen`` (a torch.Generator, or None for the
global one). Flow time t = 0 is noise, t = 1 is data:

    x_t = t * x1 + (1 - t) * eps

Here: the noise draws, the training-time distribution of t (:func:`sample_t`), and
a teacher's samples per observation (:func:`teacher_samples`, for distillation).
"""

from __future__ import annotations

import torch

from l1flow_ros.policy.config import FlowTimeConfig


def randn(shape: tuple[int, ...], like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise on ``like``'s device and dtype."""
    return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)


def rand(n: int, like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """(n,) uniform in [0, 1) on ``like``'s device and dtype."""
    return torch.rand(n, generator=gen, device=like.device, dtype=like.dtype)


def sample_t(
    n: int, cfg: FlowTimeConfig, like: torch.Tensor, gen: torch.Generator | None = None
) -> torch.Tensor:
    """(n,) training times in (0, 1): logit-normal, ``uniform_share`` of them uniform."""
    logit = torch.sigmoid(cfg.logit_mean + cfg.logit_std * randn((n,), like, gen))
    uniform = rand(n, like, gen)
    pick = rand(n, like, gen) < cfg.uniform_share
    return torch.where(pick, uniform, logit)


def bcast(t: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1), to scale chunks by a per-sample time."""
    return t[:, None, None]


def flow_point(
    x1: torch.Tensor, cfg: FlowTimeConfig, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training point on the straight path: (eps, t (B,), x_t = t * x1 + (1 - t) * eps)."""
    eps = randn(x1.shape, x1, gen)
    t = sample_t(x1.shape[0], cfg, x1, gen)
    return eps, t, bcast(t) * x1 + (1 - bcast(t)) * eps


@torch.no_grad()
def teacher_samples(
    teacher_sample_fn, cond: torch.Tensor, m: int, shape: tuple[int, int], gen: torch.Generator | None = None
) -> torch.Tensor:
    """m samples per observation from ``teacher_sample_fn(cond, noise)``: (B, m, H, A)."""
    b = cond.shape[0]
    noise = randn((b * m, *shape), cond, gen)
    return teacher_sample_fn(cond.repeat_interleave(m, dim=0), noise).reshape(b, m, *shape)
