"""What every sampler shares; the samplers themselves (stateless functions
(net, cond, noise[, warm]) -> action chunk (B, H, A)) are in their methods'
modules, ``l1flow_ros.policy.methods``.

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

import torch


def tvec(like: torch.Tensor, t: float) -> torch.Tensor:
    # (B,) filled with t; built from a tensor so that a traced graph keeps B dynamic.
    return torch.ones_like(like[:, 0, 0]) * t


def warm_start_point(noise: torch.Tensor, warm: torch.Tensor, t_w: float) -> torch.Tensor:
    """z = (1 - t_w) * eps + t_w * a_warm, the point on the path at t_w."""
    return (1.0 - t_w) * noise + t_w * warm



def prefix_net(net, noise: torch.Tensor, prefix: torch.Tensor, weights: torch.Tensor, trained: bool,
               soft: bool = False):
    """``net`` with a running plan's prefix imposed (:mod:`l1flow_ros.policy.prefix`): prefix
    (B, H, A) normalised, weights (B, H) in [0, 1] (1: frozen).

    Inpainting: each input x at flow time t is pulled towards the prefix's point on the same
    noise path, ``x + W (t y + (1 - t) eps - x)``. Trained: the network (``prefix_input``)
    also gets the frozen prefix and its mask as extra channels (``soft``, a network trained
    so: the prefix over the whole overlap, with the weights as its mask). Returns a callable with
    ``net``'s signature; a pure function of its inputs (nothing is kept between calls).
    """
    w = weights[:, :, None]  # (B, H, 1)
    extra = {}
    if trained:
        mask = weights if soft else (weights >= 1.0).to(prefix.dtype)  # (B, H)
        extra = {"prefix": prefix * (mask > 0).to(prefix.dtype)[:, :, None], "mask": mask}

    def conditioned(x, t, cond, *r):
        tt = t[:, None, None]
        return net(x + w * (tt * prefix + (1.0 - tt) * noise - x), t, cond, *r, **extra)

    return conditioned


def impose_prefix(out: torch.Tensor, prefix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The sampled chunk drawn towards the prefix by its weights: the frozen actions (weight 1)
    equal to it, the rest of the overlap part way."""
    return out + weights[:, :, None] * (prefix - out)
