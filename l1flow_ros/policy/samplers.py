"""Samplers: stateless functions (net, cond, noise[, warm]) -> action chunk (B, H, A).

Conventions, stated once for the whole package:
  - flow time t = 0 is noise, t = 1 is data; x_t = t * x1 + (1 - t) * eps;
  - diffusion step k = 0 is data, k = K - 1 is (almost) pure noise;
  - everything is in normalised action units (actions scaled to [-1, 1]);
  - the noise is an argument, so the same noise gives the same chunk on
    every backend; nothing here draws random numbers.

``net`` is called as ``net(x (B, H, A), t (B,), cond (B, D)[, r (B,)])``.
All loops run over Python constants only, so tracing unrolls them into one
ONNX graph (noise in, chunk out).

Warm start (flow samplers): instead of starting at t = 0 from eps, start at
t_w from z = (1 - t_w) * eps + t_w * a_warm, a point on the path towards the
previous chunk's unexecuted tail ``a_warm``.
"""

from __future__ import annotations

import math

import torch

Net = torch.nn.Module


def _tvec(like: torch.Tensor, t: float) -> torch.Tensor:
    # (B,) filled with t; built from a tensor so that a traced graph keeps B dynamic.
    return torch.ones_like(like[:, 0, 0]) * t


def warm_start_point(noise: torch.Tensor, warm: torch.Tensor, t_w: float) -> torch.Tensor:
    """z = (1 - t_w) * eps + t_w * a_warm, the point on the path at t_w."""
    return (1.0 - t_w) * noise + t_w * warm


def l1flow_two_step(
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
    if warm is None:
        a0 = net(noise, _tvec(noise, 0.0), cond)  # (B, H, A)
        x_t1 = noise + t1 * (a0 - noise)
        return net(x_t1, _tvec(noise, t1), cond)
    z = warm_start_point(noise, warm, warm_t)
    a0 = net(z, _tvec(noise, warm_t), cond)
    if t1 <= warm_t:
        return a0
    x_t1 = z + (t1 - warm_t) / (1.0 - warm_t) * (a0 - z)
    return net(x_t1, _tvec(noise, t1), cond)


def l1flow_euler(
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
    t0 = 0.0 if warm is None else warm_t
    x = noise if warm is None else warm_start_point(noise, warm, warm_t)
    ts = [t0 + (1.0 - t0) * i / steps for i in range(steps + 1)]
    for t, t_next in zip(ts[:-1], ts[1:]):
        a = net(x, _tvec(noise, t), cond)
        v = (a - x) / max(1.0 - t, min_gap)
        x = x + (t_next - t) * v
    return x


def fm_euler(
    net: Net,
    cond: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 10,
    warm: torch.Tensor | None = None,
    warm_t: float = 0.5,
) -> torch.Tensor:
    """Flow matching, v-prediction: N Euler steps of dx/dt = v(x, t) from t0 to 1."""
    t0 = 0.0 if warm is None else warm_t
    x = noise if warm is None else warm_start_point(noise, warm, warm_t)
    h = (1.0 - t0) / steps
    for i in range(steps):
        x = x + h * net(x, _tvec(noise, t0 + i * h), cond)
    return x


def one_step(net: Net, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A one-step generator (IMLE student): chunk = f(eps, 0)."""
    return net(noise, _tvec(noise, 0.0), cond)


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
    t0 = 0.0 if warm is None else warm_t
    x = noise if warm is None else warm_start_point(noise, warm, warm_t)
    return x + (1.0 - t0) * net(x, _tvec(noise, t0), cond, _tvec(noise, 1.0))


def flow_map_steps(net: Net, cond: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The same flow map used with several jumps (for comparison)."""
    x = noise
    for i in range(steps):
        t, r = i / steps, (i + 1) / steps
        x = x + (r - t) * net(x, _tvec(noise, t), cond, _tvec(noise, r))
    return x


def regression(net: Net, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Plain regression: one pass on a zero input; the noise only gives the shape."""
    return net(torch.zeros_like(noise), _tvec(noise, 0.0), cond)


# ---------------------------------------------------------------- diffusion (epsilon prediction)


def cosine_alphas_cumprod(num_train_steps: int = 100, max_beta: float = 0.999) -> torch.Tensor:
    """The 'squaredcos_cap_v2' schedule (Nichol & Dhariwal), as Diffusion Policy uses: (K,)."""

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


def _ddim_timesteps(steps: int, num_train_steps: int) -> list[int]:
    # "leading" spacing as in diffusers: 90, 80, ..., 0 for 10 of 100.
    stride = num_train_steps // steps
    return [i * stride for i in range(steps)][::-1]


def ddim(
    net: Net,
    cond: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 10,
    num_train_steps: int = 100,
    clip: float = 1.0,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) over ``steps`` of the K training steps.

    Predicted clean chunks are clipped to [-clip, clip] (actions live in [-1, 1]).
    """
    ac = cosine_alphas_cumprod(num_train_steps).tolist()
    ks = _ddim_timesteps(steps, num_train_steps)
    x = noise
    for i, k in enumerate(ks):
        a_t = ac[k]
        a_prev = ac[ks[i + 1]] if i + 1 < len(ks) else 1.0
        eps = net(x, _tvec(noise, diffusion_time(k, num_train_steps)), cond)
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-clip, clip)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)  # consistent with the clipped x0
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


def ddpm(
    net: Net,
    cond: torch.Tensor,
    noise: torch.Tensor,
    num_train_steps: int = 100,
    clip: float = 1.0,
) -> torch.Tensor:
    """Ancestral DDPM sampling over all K steps.

    ``noise`` is (B, K, H, A): noise[:, 0] is x_K, noise[:, j] (j >= 1) the
    fresh noise added at the j-th step, so sampling stays a pure function.
    """
    ac = cosine_alphas_cumprod(num_train_steps).tolist()
    x = noise[:, 0]  # (B, H, A)
    for j, k in enumerate(range(num_train_steps - 1, -1, -1)):
        a_t = ac[k]
        a_prev = ac[k - 1] if k > 0 else 1.0
        beta = 1 - a_t / a_prev
        eps = net(x, _tvec(x, diffusion_time(k, num_train_steps)), cond)
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
