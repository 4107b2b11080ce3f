"""Training objectives, one function each, all on the same chunk network.

Every loss takes the network ``net(x (B, H, A), t (B,), cond (B, D)[, r])``,
the conditioning ``cond`` (B, D) and the clean normalised chunk ``x1`` (B, H, A),
and draws its own noise from ``gen`` (a torch.Generator, or None for the
global one). Flow time t = 0 is noise, t = 1 is data:

    x_t = t * x1 + (1 - t) * eps

- :func:`l1flow_loss`: predict the clean chunk from x_t, L1 (L1 Flow).
- :func:`fm_loss`: predict the velocity x1 - eps, MSE (flow matching).
- :func:`ddpm_loss`: predict eps from the diffused chunk, MSE (Diffusion Policy).
- :func:`regression_loss`: predict the chunk from nothing, L1 (mode-averaging reference).
- :func:`imle_loss`: one-step student vs. teacher samples, bi-directional Chamfer.
- :func:`ofp_loss`: One-Step Flow Policy self-distillation of a flow map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from l1flow_ros.policy import samplers
from l1flow_ros.policy.config import FlowTimeConfig, ImleConfig, OfpConfig

Net = torch.nn.Module


def _randn(shape: tuple[int, ...], like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)


def _rand(n: int, like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=like.device, dtype=like.dtype)


def sample_t(
    n: int, cfg: FlowTimeConfig, like: torch.Tensor, gen: torch.Generator | None = None
) -> torch.Tensor:
    """(n,) training times in (0, 1): logit-normal, ``uniform_share`` of them uniform."""
    logit = torch.sigmoid(cfg.logit_mean + cfg.logit_std * _randn((n,), like, gen))
    uniform = _rand(n, like, gen)
    pick = _rand(n, like, gen) < cfg.uniform_share
    return torch.where(pick, uniform, logit)


def _bcast(t: torch.Tensor) -> torch.Tensor:
    return t[:, None, None]  # (B,) -> (B, 1, 1)


def l1flow_loss(
    net: Net, cond: torch.Tensor, x1: torch.Tensor, cfg: FlowTimeConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """L1 Flow: the network predicts the clean chunk from x_t; L1 loss."""
    eps = _randn(x1.shape, x1, gen)
    t = sample_t(x1.shape[0], cfg, x1, gen)
    x_t = _bcast(t) * x1 + (1 - _bcast(t)) * eps
    return F.l1_loss(net(x_t, t, cond), x1)


def fm_loss(
    net: Net, cond: torch.Tensor, x1: torch.Tensor, cfg: FlowTimeConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Flow matching: the network predicts the velocity x1 - eps; MSE."""
    eps = _randn(x1.shape, x1, gen)
    t = sample_t(x1.shape[0], cfg, x1, gen)
    x_t = _bcast(t) * x1 + (1 - _bcast(t)) * eps
    return F.mse_loss(net(x_t, t, cond), x1 - eps)


def ddpm_loss(
    net: Net,
    cond: torch.Tensor,
    x1: torch.Tensor,
    num_train_steps: int = 100,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """DDPM: diffuse to a random step k, predict the noise; MSE (squaredcos schedule)."""
    ac = samplers.cosine_alphas_cumprod(num_train_steps).to(x1)
    k = torch.randint(0, num_train_steps, (x1.shape[0],), generator=gen, device=x1.device)
    a = _bcast(ac[k])
    eps = _randn(x1.shape, x1, gen)
    x_k = a.sqrt() * x1 + (1 - a).sqrt() * eps
    return F.mse_loss(net(x_k, k.to(x1.dtype) / num_train_steps, cond), eps)


def regression_loss(net: Net, cond: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Plain L1 regression: one pass on a zero input."""
    return F.l1_loss(samplers.regression(net, cond, torch.zeros_like(x1)), x1)


# ---------------------------------------------------------------- one-step students


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bi-directional Chamfer between sample sets a (B, m, H, A) and b (B, n, H, A).

    Mean over the batch of: every a's squared distance to its nearest b (b
    covers a) plus every b's distance to its nearest a (b stays on a).
    Distances are per element (mean over H * A).
    """
    d = torch.cdist(a.flatten(2), b.flatten(2)).square() / a[0, 0].numel()  # (B, m, n)
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


def imle_loss(
    student: Net,
    cond: torch.Tensor,
    teacher_samples: torch.Tensor,
    cfg: ImleConfig,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """IMLE distillation: n one-step student samples per observation against the
    teacher's m samples (B, m, H, A), bi-directional Chamfer: every teacher mode
    gets a nearby student sample, and no student sample drifts off the teacher's
    support."""
    b, _, h, a = teacher_samples.shape
    n = cfg.student_samples
    noise = _randn((b * n, h, a), teacher_samples, gen)
    s = samplers.one_step(student, cond.repeat_interleave(n, dim=0), noise).reshape(b, n, h, a)
    return chamfer(teacher_samples, s)


@torch.no_grad()
def teacher_samples(
    teacher_sample_fn, cond: torch.Tensor, m: int, shape: tuple[int, int], gen: torch.Generator | None = None
) -> torch.Tensor:
    """m samples per observation from ``teacher_sample_fn(cond, noise)``: (B, m, H, A)."""
    b = cond.shape[0]
    noise = _randn((b * m, *shape), cond, gen)
    return teacher_sample_fn(cond.repeat_interleave(m, dim=0), noise).reshape(b, m, *shape)


def warm_tail(x1: torch.Tensor, shift: int) -> torch.Tensor:
    """What the previous chunk's unexecuted tail looks like on this chunk's time grid.

    The chunk planned ``shift`` steps earlier covered this chunk's first
    H - shift actions; beyond its end the executor holds the last one. (B, H, A).
    """
    h = x1.shape[1]
    shift = min(max(shift, 0), h - 1)
    if shift == 0:
        return x1
    head = x1[:, : h - shift]
    return torch.cat([head, head[:, -1:].expand(-1, shift, -1)], dim=1)


def ofp_loss(
    net: Net,
    target: Net,
    cond: torch.Tensor,
    x1: torch.Tensor,
    cfg: OfpConfig,
    tcfg: FlowTimeConfig,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """One-Step Flow Policy: train a flow map u(x_t, t, r) (average velocity over [t, r]).

    The batch is split three ways:
      1. flow (r = t): u matches the instantaneous velocity x1 - eps, plus
         self-guidance w * (u_target(c) - u_target(null)) from the EMA target,
         with a share of null (zero) conditioning so the null branch is trained;
      2. self-consistency (t < r): one jump t -> r matches two jumps of the EMA
         target, t -> m -> r, m = (t + r) / 2; half the jumps end at r = 1;
      3. warm start: from z = (1 - t_w) eps + t_w a_warm, with a_warm the
         previous chunk's tail, one jump to r = 1 must land on x1.
    ``target`` is the EMA copy of ``net`` (no gradient flows through it).
    """
    b = x1.shape[0]
    n_flow = max(1, int(round(cfg.flow_share * b)))
    n_warm = int(round(cfg.warm_share * b))
    n_cons = b - n_flow - n_warm
    if n_cons < 1:
        raise ValueError(f"ofp batch {b} too small for the flow / warm shares")
    eps = _randn(x1.shape, x1, gen)
    t = sample_t(b, tcfg, x1, gen)
    x_t = _bcast(t) * x1 + (1 - _bcast(t)) * eps
    losses = []

    # 1. Flow matching at r = t with self-guidance.
    sl = slice(0, n_flow)
    c = cond[sl]
    drop = _rand(n_flow, x1, gen) < cfg.cond_dropout
    c_in = torch.where(drop[:, None], torch.zeros_like(c), c)
    v = x1[sl] - eps[sl]
    if cfg.guidance > 0:
        with torch.no_grad():
            xs, ts = x_t[sl], t[sl]
            g = target(xs, ts, c, ts) - target(xs, ts, torch.zeros_like(c), ts)
        v = v + cfg.guidance * torch.where(drop[:, None, None], torch.zeros_like(g), g)
    losses.append(F.mse_loss(net(x_t[sl], t[sl], c_in, t[sl]), v, reduction="sum"))

    # 2. Self-consistency: u(t -> r) = mean of the target's u(t -> m) and u(m -> r).
    sl = slice(n_flow, n_flow + n_cons)
    ts = _rand(n_cons, x1, gen) * 0.98  # start before the end, so the jump has length
    r = ts + (1 - ts) * _rand(n_cons, x1, gen)
    r = torch.where(_rand(n_cons, x1, gen) < cfg.one_share, torch.ones_like(r), r)
    xs = _bcast(ts) * x1[sl] + (1 - _bcast(ts)) * eps[sl]
    c = cond[sl]
    with torch.no_grad():
        m = (ts + r) / 2
        x_m = xs + _bcast(m - ts) * target(xs, ts, c, m)
        x_r = x_m + _bcast(r - m) * target(x_m, m, c, r)
        u_tgt = (x_r - xs) / _bcast(r - ts)
    losses.append(F.mse_loss(net(xs, ts, c, r), u_tgt, reduction="sum"))

    # 3. Warm start: one jump from the previous chunk's tail to the data.
    if n_warm:
        sl = slice(b - n_warm, b)
        tw = cfg.warm_t
        a_warm = warm_tail(x1[sl], cfg.shift) + cfg.warm_noise * _randn(x1[sl].shape, x1, gen)
        z = (1 - tw) * eps[sl] + tw * a_warm
        ones, tws = torch.ones(n_warm, device=x1.device), torch.full((n_warm,), tw, device=x1.device)
        x_pred = z + (1 - tw) * net(z, tws, cond[sl], ones)
        losses.append(F.mse_loss(x_pred, x1[sl], reduction="sum"))
    return sum(losses) / x1.numel()
