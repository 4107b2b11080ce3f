"""Specs shared by every part: what a policy observes, what it outputs, how it samples.

These dataclasses are the contract between perception, the policy core, the
runtime and the executor. They are plain data (no torch, no ROS), serialised
into a bundle's ``manifest.json`` with :func:`dataclasses.asdict` and read back
with ``from_dict``.

Conventions stated once:
- times are in seconds as float in specs; message stamps are integer nanoseconds;
- action k (0-based) of a chunk for an observation stamped ``t_obs`` is due at
  ``t_obs + (k + 1) * dt``;
- flow time ``t = 0`` is noise, ``t = 1`` is data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _from_dict(cls, d: dict[str, Any]):
    """Build a dataclass from a dict, ignoring unknown keys, tuples from lists."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


@dataclass(frozen=True)
class ObservationSpec:
    """What the encoder consumes.

    Model input (one observation, no batch dimension), produced by
    ``perception.preprocess`` both in training and in the node:
      - ``rgb``:     (n_obs_steps, V, 3, H, W) float32 in [0, 1], V = len(cameras) if use_rgb
      - ``points``:  (n_obs_steps, num_points, 3 or 6) float32, robot base frame, metres
                     (+ rgb in [0, 1] when point_color) if num_points > 0
      - ``proprio``: (n_obs_steps, len(proprio_names)) float32, raw units (normalised
                     by the normaliser outside the network)
    """

    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (96, 96)  # (H, W) the model sees
    use_rgb: bool = True
    num_points: int = 0  # 0 = no point input
    point_color: bool = False
    workspace: tuple[float, ...] = (-1.0, 1.0, -1.0, 1.0, -0.5, 1.5)  # xmin xmax ymin ymax zmin zmax
    voxel_size: float = 0.005
    depth_range: tuple[float, float] = (0.05, 3.0)  # metres
    proprio_names: tuple[str, ...] = ()
    n_obs_steps: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObservationSpec:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class ActionSpec:
    """What the policy outputs and the executor streams."""

    names: tuple[str, ...] = ()
    horizon: int = 16  # actions per chunk
    n_action_steps: int = 8  # executed before replanning
    dt: float = 0.1  # seconds between consecutive actions of a chunk
    # Per-dimension limits, in action units; empty = unlimited.
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    max_velocity: tuple[float, ...] = ()  # units / s
    max_acceleration: tuple[float, ...] = ()  # units / s^2
    gripper_indices: tuple[int, ...] = ()  # dims treated as binary open / closed
    # "joint_position" (absolute targets) or "ee_delta" (end-effector displacement per dt).
    kind: str = "joint_position"

    @property
    def dim(self) -> int:
        return len(self.names)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionSpec:
        return _from_dict(cls, d)


SAMPLER_KINDS = ("l1flow", "fm", "ddim", "ddpm", "imle", "ofp", "regression")


@dataclass(frozen=True)
class SamplerSpec:
    """How a chunk is drawn from the network.

    kind:
      - ``l1flow``: sample prediction, two steps (Euler 0 -> t_values[0], then predict), or
        ``steps`` Euler steps when steps != 2;
      - ``fm``: velocity prediction, ``steps`` Euler steps;
      - ``ddim`` / ``ddpm``: epsilon prediction diffusion with ``steps`` inference steps;
      - ``imle`` / ``ofp``: one-step students (noise -> chunk in one pass);
      - ``regression``: one pass, no noise.
    """

    kind: str = "l1flow"
    steps: int = 2
    t_values: tuple[float, ...] = (0.5,)
    warm_start: bool = False  # the network accepts a warm start from the previous chunk
    warm_start_t: float = 0.5  # z = (1 - t_w) * eps + t_w * a_warm

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"sampler kind {self.kind!r} not in {SAMPLER_KINDS}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerSpec:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class Chunk:
    """A timestamped action chunk, in action units (not normalised).

    actions: (H, A); action k is due at t_obs_ns + (k + 1) * dt.
    """

    t_obs_ns: int
    dt: float
    actions: Any  # np.ndarray (H, A) float64
    names: tuple[str, ...] = field(default=())
    fingerprint: str = ""

    def due_ns(self, k: int) -> int:
        return self.t_obs_ns + int(round((k + 1) * self.dt * 1e9))


@dataclass(frozen=True)
class Tail:
    """The executor's planned but unexecuted actions.

    times_ns: (K,) absolute due times, increasing; actions: (K, A) in action units,
    columns in the policy's action order.
    """

    times_ns: np.ndarray
    actions: np.ndarray

    def __post_init__(self) -> None:
        t = np.asarray(self.times_ns)
        a = np.asarray(self.actions)
        if t.ndim != 1 or a.ndim != 2 or a.shape[0] != t.shape[0] or t.shape[0] == 0:
            raise ValueError(f"tail needs times (K,) and actions (K, A), got {t.shape} and {a.shape}")
        if np.any(np.diff(t) <= 0):
            raise ValueError("tail times must be strictly increasing")
        if not np.all(np.isfinite(a)):
            raise ValueError("tail actions have NaN or inf")
