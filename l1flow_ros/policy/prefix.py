"""Prefix-conditioned sampling (real-time chunking): what a new chunk owes the running plan.

While a chunk is computed the arm keeps executing the running plan: the first ``d`` actions
of the new chunk (``d``: the inference delay in control steps) are already executed or due
when it arrives, and the plan has actions planned beyond them. Real-time chunking (Black,
Galliker and Levine, 2025) makes the new chunk agree with that plan: the first ``d`` actions
equal to it, the rest of the overlap drawn towards it with weights that decay to 0 where the
running plan ends (:func:`rtc_weights`).

Two ways, both exportable (no backward pass in the graph), chosen by the network
(``UnetConfig.prefix_input``):

- **inpainting** (any flow network): at each network call the input chunk is pulled towards
  the running plan's point on the same noise path, ``x <- x + W (t y + (1 - t) eps - x)``, and
  the output is pulled towards the plan, ``out <- out + W (y - out)``;
- **trained** (a network trained with a random clean prefix and its mask as extra input
  channels, :class:`PrefixTrainConfig`): the network also sees the frozen prefix (``W == 1``)
  and continues it, besides the inpainting of the rest of the overlap.

``d <= s <= H - d`` (s: ``n_action_steps``, the execution horizon; H: the chunk horizon):
each chunk is executed for ``s`` steps after its delay, so the next one must be requested
after at least ``d`` steps and arrive before this one runs out. :func:`check_horizons`.

This module is numpy only (the inference runner builds the weights); the torch side is in
:mod:`l1flow_ros.policy.samplers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODES = ("inpaint", "trained")


@dataclass(frozen=True)
class PrefixTrainConfig:
    """Training-time prefix conditioning (recorded in the manifest with the objective's knobs).

    Each training chunk gets a random prefix length ``d`` in ``[0, max_steps]`` (0 with
    probability ``none_share``): its first ``d`` clean actions and their mask are given to the
    network as extra input channels; the loss is the method's own, on the whole chunk.
    ``soft``: the mask is :func:`rtc_weights` over a random overlap ``e`` in ``[d, H]`` (the
    running plan's actions that the new chunk's times cover) and the prefix the clean actions
    over it, as the inference node then gives them: the network also sees where the plan goes
    beyond the frozen actions (with one frozen action, which mode the plan is in).
    """

    enabled: bool = False
    max_steps: int = 0  # longest prefix; 0 = horizon - n_action_steps
    none_share: float = 0.2  # share of chunks trained with no prefix (d = 0: the first chunk)
    soft: bool = False  # the mask carries the overlap's weights, not only the frozen d

    def __post_init__(self) -> None:
        if self.max_steps < 0 or not 0.0 <= self.none_share <= 1.0:
            raise ValueError("prefix max_steps must be >= 0 and none_share in [0, 1]")

    def longest(self, horizon: int, n_action_steps: int) -> int:
        """The longest prefix trained for chunks of ``horizon`` executed ``n_action_steps`` at a time."""
        d = self.max_steps or horizon - n_action_steps
        return max(0, min(d, horizon - 1))


def check_horizons(horizon: int, n_action_steps: int, delay_steps: int | None = None) -> None:
    """Raise ValueError unless ``1 <= s <= H - 1`` and, with a measured delay d, ``d <= s <= H - d``."""
    h, s = int(horizon), int(n_action_steps)
    if not 1 <= s <= h - 1:
        raise ValueError(f"n_action_steps {s} must be in [1, horizon - 1 = {h - 1}] "
                         f"(the next chunk must arrive before this one runs out)")
    if delay_steps is None:
        return
    d = int(delay_steps)
    if d > s:
        raise ValueError(f"inference delay {d} steps > n_action_steps {s}: a chunk is requested before "
                         f"the previous one arrived (raise n_action_steps or make inference faster)")
    if s > h - d:
        raise ValueError(f"n_action_steps {s} > horizon {h} - delay {d}: the running chunk runs out "
                         f"before the next one arrives (lower n_action_steps)")


def rtc_weights(horizon: int, delay_steps: int, overlap: int) -> np.ndarray:
    """(H,) float32: 1 for the first ``d`` actions (frozen), RTC's exponentially decaying
    weights over the rest of the overlap with the running plan (its first ``overlap`` actions),
    0 beyond it.

    For ``d <= i < overlap``: ``w_i = c (e^c - 1) / (e - 1)``, ``c = (overlap - i) / (overlap - d + 1)``.
    """
    h = int(horizon)
    e = max(0, min(int(overlap), h))
    d = max(0, min(int(delay_steps), e))
    w = np.zeros(h, np.float32)
    w[:d] = 1.0
    if e > d:
        i = np.arange(d, e, dtype=np.float64)
        c = (e - i) / (e - d + 1)
        w[d:e] = c * np.expm1(c) / (math.e - 1.0)
    return w


def delay_steps(elapsed_s: float, dt: float) -> int:
    """Control steps of the running plan executed in ``elapsed_s``: ceil(elapsed / dt), >= 0."""
    if dt <= 0:
        return 0
    return max(0, math.ceil(elapsed_s / dt - 1e-9))
