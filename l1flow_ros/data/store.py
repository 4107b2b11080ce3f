"""The training store (zarr) and the chunk dataset read from it.

Layout of a store (one zarr v3 group)::

    action        (N, A)             float32  action k: the target sent after observation k
    proprio       (N, P)             float32  raw units           (if the spec has proprio)
    rgb           (N, V, 3, H, W)    uint8                        (if the spec uses rgb)
    points        (N, Np, 3 or 6)    float32  robot base frame    (if the spec has points)
    episode_ends  (E,)               int64    exclusive end index of each episode
    attrs: format, observation (ObservationSpec), action (ActionSpec)

Each step holds the storage form of ``perception.preprocess`` (one step, no
time axis); :class:`ChunkDataset` stacks the ``n_obs_steps`` history and the
``horizon`` future actions, repeating the first / last step at episode edges.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from l1flow_ros.perception.images import rgb_to_float
from l1flow_ros.policy.normalizer import Normalizer
from l1flow_ros.spec import ActionSpec, ObservationSpec

STORE_FORMAT = "l1flow_store/1"
_CHUNK_STEPS = 256  # zarr chunk length along time


class StoreError(ValueError):
    """A store or an episode that cannot be used; the message says why."""


class StoreWriteError(StoreError):
    """The store's storage refused a write (disk full, ...); the store is as before the episode."""


def _expected_shapes(obs_spec: ObservationSpec) -> dict[str, tuple[int, ...]]:
    """Per-step storage shapes, per modality present in the spec."""
    shapes: dict[str, tuple[int, ...]] = {}
    if obs_spec.use_rgb and obs_spec.cameras:
        shapes["rgb"] = (len(obs_spec.cameras), 3, *obs_spec.image_size)
    if obs_spec.num_points > 0:
        shapes["points"] = (obs_spec.num_points, 6 if obs_spec.point_color else 3)
    if obs_spec.proprio_names:
        shapes["proprio"] = (len(obs_spec.proprio_names),)
    return shapes


class StoreWriter:
    """Writes episodes to a new store (``mode="w"``) or appends to one (``mode="a"``)."""

    def __init__(
        self, path: str | os.PathLike, obs_spec: ObservationSpec, action_spec: ActionSpec, mode: str = "w"
    ) -> None:
        import zarr

        if action_spec.dim < 1:
            raise StoreError("action spec has no names")
        self.path = str(path)
        self.obs_spec, self.action_spec = obs_spec, action_spec
        self.shapes = _expected_shapes(obs_spec)
        if mode == "a" and os.path.exists(self.path):
            self.group = zarr.open_group(self.path, mode="a")
            o, a = _read_specs(self.group)
            if o != obs_spec or a.names != action_spec.names:
                raise StoreError(f"{self.path} holds other specs; cannot append")
            return
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        self.group = zarr.open_group(self.path, mode="w")
        self.group.attrs.update(
            {
                "format": STORE_FORMAT,
                "observation": dataclasses.asdict(obs_spec),
                "action": dataclasses.asdict(action_spec),
            }
        )
        self.group.create_array(
            "action", shape=(0, action_spec.dim), chunks=(_CHUNK_STEPS * 16, action_spec.dim), dtype="float32"
        )
        self.group.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64")
        for k, s in self.shapes.items():
            dtype = "uint8" if k == "rgb" else "float32"
            chunk = (16 if k == "rgb" else _CHUNK_STEPS, *s)
            self.group.create_array(k, shape=(0, *s), chunks=chunk, dtype=dtype)

    @property
    def num_episodes(self) -> int:
        return int(self.group["episode_ends"].shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.group["action"].shape[0])

    def add_episode(self, obs: dict[str, np.ndarray], actions: np.ndarray, task: str | None = None) -> None:
        """Append one episode: obs[k] (T, *step shape) in storage form, actions (T, A).

        ``task`` (the episode metadata's task name) joins the store's ``tasks`` attribute,
        which training copies into the bundle so evaluation knows what the policy was for.

        rgb may be uint8 or float in [0, 1] (converted). Raises StoreError on a
        missing / extra modality, a wrong shape, or non-finite values, and
        writes nothing then.
        """
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.action_spec.dim or actions.shape[0] < 1:
            raise StoreError(f"actions must be (T >= 1, {self.action_spec.dim}), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise StoreError("actions have NaN or inf")
        t = actions.shape[0]
        if set(obs) != set(self.shapes):
            raise StoreError(f"episode has modalities {sorted(obs)}, the spec needs {sorted(self.shapes)}")
        arrays = {}
        for k, s in self.shapes.items():
            v = np.asarray(obs[k])
            if v.shape != (t, *s):
                raise StoreError(f"{k} must be {(t, *s)} for {t} actions, got {v.shape}")
            if k == "rgb":
                if v.dtype != np.uint8:
                    if not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1:
                        raise StoreError("float rgb must be finite and in [0, 1]")
                    v = np.round(v * 255.0).astype(np.uint8)
            else:
                v = v.astype(np.float32)
                if not np.all(np.isfinite(v)):
                    raise StoreError(f"{k} has NaN or inf")
            arrays[k] = v
        # All or nothing: a write the disk refuses halfway is undone (arrays cut back to their
        # lengths before), so the store stays consistent and every earlier episode readable.
        names = [*arrays, "action", "episode_ends"]
        before = {k: self.group[k].shape[0] for k in names}
        try:
            for k, v in arrays.items():
                self.group[k].append(v)
            self.group["action"].append(actions)
            self.group["episode_ends"].append(np.array([self.num_steps], dtype=np.int64))
        except OSError as e:
            undone = "undone"
            for k in names:
                try:
                    self.group[k].resize((before[k], *self.group[k].shape[1:]))
                except OSError as e2:
                    undone = f"NOT undone ({k}: {e2})"
            raise StoreWriteError(f"writing an episode to {self.path}: {e}; the episode's writes {undone}") from None
        if task:
            tasks = list(self.group.attrs.get("tasks", []))
            if task not in tasks:
                self.group.attrs["tasks"] = [*tasks, str(task)]

    def close(self) -> None:
        """Nothing is buffered (every episode is written when added); kept for symmetry."""

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _read_specs(group: Any) -> tuple[ObservationSpec, ActionSpec]:
    attrs = dict(group.attrs)
    if attrs.get("format") != STORE_FORMAT:
        raise StoreError(f"not an l1flow store (format {attrs.get('format')!r}, expected {STORE_FORMAT!r})")
    try:
        return ObservationSpec.from_dict(attrs["observation"]), ActionSpec.from_dict(attrs["action"])
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"store specs are invalid: {e}") from e


def store_tasks(path: str | os.PathLike) -> list[str]:
    """Task names of a store's episodes, in first-seen order ([] when none was recorded)."""
    import zarr

    return [str(t) for t in zarr.open_group(str(path), mode="r").attrs.get("tasks", [])]


def open_store(path: str | os.PathLike) -> tuple[ObservationSpec, ActionSpec, dict[str, np.ndarray]]:
    """Read a whole store into memory: (obs spec, action spec, arrays)."""
    import zarr

    if not os.path.exists(path):
        raise StoreError(f"no store at {path}")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as e:  # zarr raises several types for a non-store path
        raise StoreError(f"{path} is not a zarr store: {e}") from e
    obs_spec, action_spec = _read_specs(group)
    keys = ["action", "episode_ends", *_expected_shapes(obs_spec)]
    missing = [k for k in keys if k not in group]
    if missing:
        raise StoreError(f"store {path} lacks arrays {missing}")
    arrays = {k: group[k][:] for k in keys}
    n = arrays["action"].shape[0]
    ends = arrays["episode_ends"]
    if len(ends) == 0 or ends[-1] != n or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise StoreError(f"store {path} has inconsistent episode_ends for {n} steps")
    for k in keys[2:]:
        if arrays[k].shape[0] != n:
            raise StoreError(f"store {path}: {k} has {arrays[k].shape[0]} steps, action has {n}")
    return obs_spec, action_spec, arrays


def compute_normalizer(path: str | os.PathLike) -> Normalizer:
    """Normaliser stats over a whole store (actions min/max, proprio mean/std)."""
    _, _, arrays = open_store(path)
    return Normalizer.from_data(arrays["action"], arrays.get("proprio"))


class ChunkDataset(Dataset):
    """One item per stored step t: the ``n_obs_steps`` observations ending at t and the
    ``horizon`` actions starting at t.

    Item: ``{"obs": {k: (To, ...) float32}, "action": (H, A) float32}``; rgb in
    [0, 1]; proprio and actions normalised when a normaliser is given. History
    before an episode's first step repeats the first step; actions after its
    last step repeat the last action (the arm holds its final target).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        horizon: int | None = None,
        n_obs_steps: int | None = None,
        normalizer: Normalizer | None = None,
    ) -> None:
        obs_spec, action_spec, self.arrays = open_store(path)
        self.horizon = int(horizon or action_spec.horizon)
        self.n_obs_steps = int(n_obs_steps or obs_spec.n_obs_steps)
        if self.horizon < 1 or self.n_obs_steps < 1:
            raise ValueError("horizon and n_obs_steps must be >= 1")
        self.obs_spec = dataclasses.replace(obs_spec, n_obs_steps=self.n_obs_steps)
        self.action_spec = dataclasses.replace(action_spec, horizon=self.horizon)
        self.normalizer = normalizer
        ends = self.arrays["episode_ends"]
        starts = np.concatenate([[0], ends[:-1]])
        n = int(ends[-1])
        # For every step: the first and last index of its episode.
        ep = np.searchsorted(ends, np.arange(n), side="right")
        self.first, self.last = starts[ep], ends[ep] - 1
        if normalizer is not None:
            self.arrays["action"] = normalizer.normalize_action(self.arrays["action"])
            if "proprio" in self.arrays:
                self.arrays["proprio"] = normalizer.normalize_proprio(self.arrays["proprio"])
        self.obs_keys = [k for k in ("rgb", "points", "proprio") if k in self.arrays]

    @property
    def num_episodes(self) -> int:
        return int(len(self.arrays["episode_ends"]))

    def __len__(self) -> int:
        return int(self.arrays["action"].shape[0])

    def indices(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(observation indices (To,), action indices (H,)) for step t, edge-padded."""
        obs_idx = np.clip(np.arange(t - self.n_obs_steps + 1, t + 1), self.first[t], None)
        act_idx = np.clip(np.arange(t, t + self.horizon), None, self.last[t])
        return obs_idx, act_idx

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        """A whole batch at once, (B, To, ...) and (B, H, A): what the training loop asks for."""
        t = np.asarray(idx, dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() >= len(self)):
            raise IndexError("batch index out of range")
        obs_idx = np.maximum(
            t[:, None] + np.arange(1 - self.n_obs_steps, 1), self.first[t][:, None]
        )  # (B, To)
        act_idx = np.minimum(t[:, None] + np.arange(self.horizon), self.last[t][:, None])  # (B, H)
        obs = {}
        for k in self.obs_keys:
            v = self.arrays[k][obs_idx]
            obs[k] = torch.from_numpy(rgb_to_float(v) if k == "rgb" else np.ascontiguousarray(v, np.float32))
        return {"obs": obs, "action": torch.from_numpy(np.ascontiguousarray(self.arrays["action"][act_idx]))}

    def __getitem__(self, t: int) -> dict[str, Any]:
        t = int(t)
        if not 0 <= t < len(self):
            raise IndexError(t)
        obs_idx, act_idx = self.indices(t)
        obs = {}
        for k in self.obs_keys:
            v = self.arrays[k][obs_idx]
            obs[k] = torch.from_numpy(rgb_to_float(v) if k == "rgb" else np.ascontiguousarray(v, np.float32))
        return {"obs": obs, "action": torch.from_numpy(np.ascontiguousarray(self.arrays["action"][act_idx]))}
