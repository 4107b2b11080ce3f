"""One-Step Flow Policy: self-distillation of a flow map u(x_t, t, r), the average
velocity over [t, r], by self-consistency and self-guidance, with a warm start from
the previous chunk.

One step: x_1 = x_t + (1 - t) * u(x_t, t, r = 1), from noise (t = 0) or, warm, from
a point on the path towards the previous chunk's unexecuted tail (t = t_w).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from l1flow_ros.policy.methods.base import Method, SamplerKind
from l1flow_ros.spec import SamplerSpec

if TYPE_CHECKING:
    import torch

    from l1flow_ros.policy.config import FlowTimeConfig
    from l1flow_ros.policy.model import ModelConfig
    from l1flow_ros.policy.train import ObjectiveConfigs

    Net = torch.nn.Module


@dataclass(frozen=True)
class OfpConfig:
    # Batch shares: plain flow matching (r = t, the base case), warm starts, and the rest
    # self-consistency. On the two-mode task, spending the batch on consistency jumps that
    # end at r = 1 (the one-step use) gave the best one-step samples (docs/BENCHMARKS.md).
    flow_share: float = 0.1
    warm_share: float = 0.1
    one_share: float = 0.97  # within the consistency share, how often the jump ends at r = 1
    warm_t: float = 0.5
    warm_noise: float = 0.05  # std of the perturbation of the warm tail (it is never exact)
    shift: int = 8  # steps between consecutive chunks (the executed part), for warm-start targets
    # Self-guidance weight w: the flow target gets w * (u_ema(c) - u_ema(null)). Off by default:
    # at w = 0.3 the two-mode task lost one-step sample quality (83.5% -> 69% near a mode).
    guidance: float = 0.0
    cond_dropout: float = 0.1  # share of unconditional flow samples (the guidance's reference)


def flow_map_one_step(
    net: Net,
    cond: torch.Tensor,
    noise: torch.Tensor,
    warm: torch.Tensor | None = None,
    warm_t: float = 0.5,
) -> torch.Tensor:
    """A flow-map student (One-Step Flow Policy): x_1 = x_t + (1 - t) * u(x_t, t, r=1).

    u is the average velocity over [t, 1]; with a warm start t = t_w.
    """
    from l1flow_ros.policy.samplers import tvec, warm_start_point

    t0 = 0.0 if warm is None else warm_t
    x = noise if warm is None else warm_start_point(noise, warm, warm_t)
    return x + (1.0 - t0) * net(x, tvec(noise, t0), cond, tvec(noise, 1.0))


def flow_map_steps(net: Net, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The same flow map used with several jumps (for comparison)."""
    from l1flow_ros.policy.samplers import tvec

    x = noise
    for i in range(steps):
        t, r = i / steps, (i + 1) / steps
        x = x + (r - t) * net(x, tvec(noise, t), cond, tvec(noise, r))
    return x


def warm_tail(x1: torch.Tensor, shift: int) -> torch.Tensor:
    """What the previous chunk's unexecuted tail looks like on this chunk's time grid.

    The chunk planned ``shift`` steps earlier covered this chunk's first
    H - shift actions; beyond its end the executor holds the last one. (B, H, A).
    """
    import torch

    h = x1.shape[1]
    shift = min(max(shift, 0), h - 1)
    if shift == 0:
        return x1
    head = x1[:, : h - shift]
    return torch.cat([head, head[:, -1:].expand(-1, shift, -1)], dim=1)


def loss(
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
    import torch
    import torch.nn.functional as F

    from l1flow_ros.policy.objectives import bcast, flow_point, rand, randn

    b = x1.shape[0]
    n_flow = max(1, int(round(cfg.flow_share * b)))
    n_warm = int(round(cfg.warm_share * b))
    n_cons = b - n_flow - n_warm
    if n_cons < 1:
        raise ValueError(f"ofp batch {b} too small for the flow / warm shares")
    eps, t, x_t = flow_point(x1, tcfg, gen)
    losses = []

    # 1. Flow matching at r = t with self-guidance.
    sl = slice(0, n_flow)
    c = cond[sl]
    drop = rand(n_flow, x1, gen) < cfg.cond_dropout
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
    ts = rand(n_cons, x1, gen) * 0.98  # start before the end, so the jump has length
    r = ts + (1 - ts) * rand(n_cons, x1, gen)
    r = torch.where(rand(n_cons, x1, gen) < cfg.one_share, torch.ones_like(r), r)
    xs = bcast(ts) * x1[sl] + (1 - bcast(ts)) * eps[sl]
    c = cond[sl]
    with torch.no_grad():
        m = (ts + r) / 2
        x_m = xs + bcast(m - ts) * target(xs, ts, c, m)
        x_r = x_m + bcast(r - m) * target(x_m, m, c, r)
        u_tgt = (x_r - xs) / bcast(r - ts)
    losses.append(F.mse_loss(net(xs, ts, c, r), u_tgt, reduction="sum"))

    # 3. Warm start: one jump from the previous chunk's tail to the data.
    if n_warm:
        sl = slice(b - n_warm, b)
        tw = cfg.warm_t
        a_warm = warm_tail(x1[sl], cfg.shift) + cfg.warm_noise * randn(x1[sl].shape, x1, gen)
        z = (1 - tw) * eps[sl] + tw * a_warm
        ones, tws = torch.ones(n_warm, device=x1.device), torch.full((n_warm,), tw, device=x1.device)
        x_pred = z + (1 - tw) * net(z, tws, cond[sl], ones)
        losses.append(F.mse_loss(x_pred, x1[sl], reduction="sum"))
    return sum(losses) / x1.numel()


def _sample(net: Net, cond: torch.Tensor, noise: torch.Tensor, s: SamplerSpec, model_cfg: ModelConfig,
            warm: torch.Tensor | None) -> torch.Tensor:
    if s.steps == 1:
        return flow_map_one_step(net, cond, noise, warm, s.warm_start_t)
    if warm is not None:
        raise ValueError("ofp warm start is one step (steps=1)")
    return flow_map_steps(net, cond, noise, s.steps)


def _default_sampler(cfgs: ObjectiveConfigs | None = None) -> SamplerSpec:
    t_w = cfgs.ofp.warm_t if cfgs is not None else OfpConfig().warm_t
    return SamplerSpec(kind="ofp", steps=1, t_values=(), warm_start=True, warm_start_t=t_w)


def _student_init(cfgs: ObjectiveConfigs, teacher_prediction: str) -> str:
    # A velocity (fm) teacher is a flow map with r ignored (the r-embedding starts at zero), so
    # the student starts as the teacher; other heads mean other things: only the encoder.
    return "teacher" if teacher_prediction == "velocity" else "encoder"


KIND = SamplerKind("ofp", "flow_map", 1, _sample, lambda n: f"OFP {n}-step", warm_start=True,
                   flow_time=True)

METHOD = Method(
    name="ofp",
    label="One-Step Flow Policy (self-distillation)",
    kinds=(KIND,),
    loss=lambda b: loss(b.net, b.ema_head, b.cond, b.x1, b.cfgs.ofp, b.cfgs.flow_time),
    default_sampler=_default_sampler,
    distill=True,
    teacher="l1flow",
    student_init=_student_init,
)
