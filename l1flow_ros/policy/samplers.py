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

