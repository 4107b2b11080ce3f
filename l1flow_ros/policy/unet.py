"""Conditional 1-D U-Net over an action chunk (the backbone of every method here).

As in Diffusion Policy (Chi et al. 2023): temporal convolutions over the chunk,
GroupNorm, and FiLM conditioning of every residual block on a global vector
made of the observation embedding and a sinusoidal embedding of the
continuous time ``t``. One-step flow-map students additionally see a second
time ``r`` (the end of the jump); its embedding starts at zero so a student
initialised from a flow-matching teacher starts as that teacher.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The config lives in the torch-free model_config (manifests are read without torch);
# UNET_DP is re-exported for ``from l1flow_ros.policy.unet import UNET_DP``.
from l1flow_ros.policy.model_config import UNET_DP, UnetConfig  # noqa: F401


class SinusoidalEmbedding(nn.Module):
    """(B,) float -> (B, dim), the transformer position code on a continuous input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arg = x[:, None].float() * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish()
        )


class ConditionalResidualBlock1D(nn.Module):
    """conv -> FiLM(cond) -> conv, plus a residual."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel, groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.c_out = c_out

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.block1(x)  # (B, C, H)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1) each
        y = self.block2(scale * y + bias)
        return y + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """forward(x (B, H, A), t (B,), cond (B, D)[, r (B,)][, prefix=(B, H, A), mask=(B, H)]) -> (B, H, A).

    With ``cfg.prefix_input`` the network also takes a clean action prefix and its mask (1
    where the prefix holds) as input channels; without them it sees no prefix (zeros).

    The chunk length H must be divisible by 2 ** (len(down_dims) - 1).
    What the output means (clean chunk, velocity, noise) is up to the objective.
    """

    def __init__(self, action_dim: int, cond_dim: int, cfg: UnetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or UnetConfig()
        self.cfg = cfg
        te = cfg.time_embed_dim
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(te), nn.Linear(te, 4 * te), nn.Mish(), nn.Linear(4 * te, te)
        )
        if cfg.two_times:
            self.r_embed = nn.Sequential(
                SinusoidalEmbedding(te), nn.Linear(te, 4 * te), nn.Mish(), nn.Linear(4 * te, te)
            )
            # Zero output: the r input starts ignored (student == teacher at init).
            nn.init.zeros_(self.r_embed[-1].weight)
            nn.init.zeros_(self.r_embed[-1].bias)
        film_dim = te + cond_dim
        k, g = cfg.kernel_size, cfg.groups
        self.action_dim = action_dim
        c_in = 2 * action_dim + 1 if cfg.prefix_input else action_dim
        dims = (c_in, *cfg.down_dims)
        pairs = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (ci, co) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1D(ci, co, film_dim, k, g),
                        ConditionalResidualBlock1D(co, co, film_dim, k, g),
                        nn.Conv1d(co, co, 3, stride=2, padding=1) if not last else nn.Identity(),
                    ]
                )
            )
        mid = cfg.down_dims[-1]
        self.mid = nn.ModuleList(
            [
                ConditionalResidualBlock1D(mid, mid, film_dim, k, g),
                ConditionalResidualBlock1D(mid, mid, film_dim, k, g),
            ]
        )
        self.up = nn.ModuleList()
        # Every up stage upsamples: the deepest skip has the mid resolution, the
        # highest-resolution skip is not needed (as in Diffusion Policy).
        for ci, co in reversed(pairs[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1D(2 * co, ci, film_dim, k, g),
                        ConditionalResidualBlock1D(ci, ci, film_dim, k, g),
                        nn.ConvTranspose1d(ci, ci, 4, stride=2, padding=1),
                    ]
                )
            )
        c0 = cfg.down_dims[0]
        self.final = nn.Sequential(Conv1dBlock(c0, c0, k, g), nn.Conv1d(c0, action_dim, 1))
        self.min_horizon = 2 ** (len(cfg.down_dims) - 1)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, r: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None, mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.time_embed(t * self.cfg.time_scale)  # (B, te)
        if self.cfg.two_times:
            if r is None:
                raise ValueError("this network is a flow map: it needs the target time r")
            emb = emb + self.r_embed(r * self.cfg.time_scale)
        c = torch.cat([emb, cond], dim=-1)  # (B, te + D)
        if self.cfg.prefix_input:
            if prefix is None or mask is None:
                prefix, mask = torch.zeros_like(x), torch.zeros_like(x[:, :, 0])
            x = torch.cat([x, prefix, mask[:, :, None]], dim=-1)  # (B, H, 2A + 1)
        elif prefix is not None:
            raise ValueError("this network takes no prefix (it was not trained with prefix_input)")
        h = x.transpose(1, 2)  # (B, C, H): convolve over time
        skips = []
        for res1, res2, down in self.down:
            h = res2(res1(h, c), c)
            skips.append(h)
            h = down(h)
        for res in self.mid:
            h = res(h, c)
        for res1, res2, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(res2(res1(h, c), c))
        return self.final(h).transpose(1, 2)  # (B, H, A)
