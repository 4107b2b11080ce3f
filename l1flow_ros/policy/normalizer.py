"""Normalisation of actions and proprioception: plain numpy, stats ship in the manifest.

Actions are scaled per dimension from [min, max] to [-1, 1] (the range the
samplers clip to). Proprioception is standardised (x - mean) / std. A
dimension that never moves in the data (range or std below ``eps``) is only
shifted, never divided by ~0.

Applied outside the networks, so every backend (torch, ONNX, TensorRT) sees
the same normalised tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-4


def _arr(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"normalizer stat {name} has NaN or inf")
    return a


class Normalizer:
    """Holds per-dimension stats; ``normalize_*`` / ``unnormalize_*`` act on the last axis."""

    def __init__(
        self,
        action_min: Any,
        action_max: Any,
        proprio_mean: Any = (),
        proprio_std: Any = (),
    ) -> None:
        self.action_min = _arr(action_min, "action_min")
        self.action_max = _arr(action_max, "action_max")
        self.proprio_mean = _arr(proprio_mean, "proprio_mean")
        self.proprio_std = _arr(proprio_std, "proprio_std")
        if self.action_min.shape != self.action_max.shape or self.action_min.size == 0:
            raise ValueError(
                f"action_min {self.action_min.shape} and action_max {self.action_max.shape} must be equal, non-empty"
            )
        if np.any(self.action_max < self.action_min):
            raise ValueError("action_max < action_min in some dimension")
        if self.proprio_mean.shape != self.proprio_std.shape:
            raise ValueError(
                f"proprio_mean {self.proprio_mean.shape} != proprio_std {self.proprio_std.shape}"
            )
        if np.any(self.proprio_std < 0):
            raise ValueError("proprio_std must be >= 0")
        rng = self.action_max - self.action_min
        # Constant dimensions map to 0 (centre) and back to their constant value.
        self._a_scale = np.where(rng > _EPS, 2.0 / np.maximum(rng, _EPS), 1.0)
        self._a_center = (self.action_max + self.action_min) / 2.0
        self._p_scale = 1.0 / np.where(self.proprio_std > _EPS, self.proprio_std, 1.0)

    @property
    def action_dim(self) -> int:
        return int(self.action_min.size)

    @property
    def proprio_dim(self) -> int:
        return int(self.proprio_mean.size)

    @classmethod
    def identity(cls, action_dim: int, proprio_dim: int = 0) -> Normalizer:
        """No-op normaliser (actions already in [-1, 1], proprio standardised)."""
        return cls(-np.ones(action_dim), np.ones(action_dim), np.zeros(proprio_dim), np.ones(proprio_dim))

    @classmethod
    def from_data(cls, actions: np.ndarray, proprio: np.ndarray | None = None) -> Normalizer:
        """Stats from data: actions (N, A), proprio (N, P) or None."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ValueError(f"actions must be (N, A) with N > 0, got {actions.shape}")
        if proprio is None or np.asarray(proprio).size == 0:
            pm, ps = np.zeros(0), np.zeros(0)
        else:
            proprio = np.asarray(proprio, dtype=np.float64)
            pm, ps = proprio.mean(axis=0), proprio.std(axis=0)
        return cls(actions.min(axis=0), actions.max(axis=0), pm, ps)

    def _affine(self, x: np.ndarray, center: np.ndarray, scale: np.ndarray, what: str, forward: bool) -> np.ndarray:
        """(x - center) * scale as float32 (forward), or x / scale + center as float64."""
        x = np.asarray(x) if forward else np.asarray(x, dtype=np.float64)
        if x.shape[-1] != center.size:
            raise ValueError(f"{what} last dimension is {x.shape[-1]}, normalizer has {center.size}")
        return ((x - center) * scale).astype(np.float32) if forward else x / scale + center

    def normalize_action(self, a: np.ndarray) -> np.ndarray:
        return self._affine(a, self._a_center, self._a_scale, "action", True)

    def unnormalize_action(self, a: np.ndarray) -> np.ndarray:
        """Normalised (..., A) -> action units, float64."""
        return self._affine(a, self._a_center, self._a_scale, "action", False)

    def normalize_proprio(self, p: np.ndarray) -> np.ndarray:
        return self._affine(p, self.proprio_mean, self._p_scale, "proprio", True)

    def unnormalize_proprio(self, p: np.ndarray) -> np.ndarray:
        return self._affine(p, self.proprio_mean, self._p_scale, "proprio", False)

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "action_min": self.action_min.tolist(),
            "action_max": self.action_max.tolist(),
            "proprio_mean": self.proprio_mean.tolist(),
            "proprio_std": self.proprio_std.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        keys = {"action_min", "action_max", "proprio_mean", "proprio_std"}
        if set(d) != keys:
            raise ValueError(f"normalizer stats must have exactly {sorted(keys)}, got {sorted(d)}")
        return cls(**d)
