"""PolicyRunner: input transforms -> backend graph -> output transforms, for one bundle.

Around the backends of :mod:`l1flow_ros.inference.backends` it does what the graphs
deliberately leave out:

- normalisation with the manifest's statistics (proprio in, actions out);
- noise drawing from a seeded generator (the graphs take noise as an input);
- the running plan: the executor's tail, resampled to the new chunk's action times and
  normalised, fed to the prefix-conditioned graph with real-time chunking's weights (given
  the inference delay), or to the warm-start graph;
- timestamps: the chunk carries the observation time and the bundle fingerprint.

ROS-free; the inference node holds one runner per loaded checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.inference.backends import (
    Encoder,
    Policy,
    has_prefix_graph,
    noise_shape,
    open_encoder,
    open_policy,
)
from l1flow_ros.policy.prefix import rtc_weights
from l1flow_ros.spec import Chunk, Tail


def tail_overlap(tail: Tail, chunk_times_ns: np.ndarray) -> int:
    """How many of the new chunk's first actions the tail covers (due no later than its end)."""
    return int(np.count_nonzero(np.asarray(chunk_times_ns) <= int(tail.times_ns[-1])))


def resample_tail(tail: Tail, chunk_times_ns: np.ndarray, min_overlap: int = 1) -> np.ndarray | None:
    """Tail actions at the new chunk's action times: (H, A), or None without overlap.

    Linear interpolation inside the tail; beyond its end the last action is held
    (what the executor would do), before its start the first one. ``None`` when fewer
    than ``min_overlap`` chunk times fall inside the tail's span: a tail that ended
    before the new chunk starts says nothing about it.
    """
    t = np.asarray(tail.times_ns, dtype=np.float64)
    q = np.asarray(chunk_times_ns, dtype=np.float64)
    inside = int(np.count_nonzero((q >= t[0]) & (q <= t[-1])))
    if inside < min_overlap:
        return None
    a = np.asarray(tail.actions, dtype=np.float64)
    # np.interp clamps outside [t0, tK]: hold first / last action.
    return np.stack([np.interp(q, t, a[:, j]) for j in range(a.shape[1])], axis=1)  # (H, A)


class PolicyRunner:
    """One bundle ready to run: embedding (or observation) -> timestamped :class:`Chunk`."""

    def __init__(self, path: str | Path, manifest: Any, policy: Policy, warm_policy: Policy | None = None,
                 encoder: Encoder | None = None, seed: int = 0, prefix_policy: Policy | None = None) -> None:
        from l1flow_ros.policy.normalizer import Normalizer

        self.path = str(path)
        self.manifest = manifest
        self.fingerprint: str = manifest.fingerprint
        self.action_spec = manifest.action
        self.names = tuple(manifest.action.names)
        self.normalizer = Normalizer.from_dict(dict(manifest.normalizer))
        self.policy = policy
        self.warm_policy = warm_policy
        self.prefix_policy = prefix_policy
        self.encoder = encoder
        self.embed_dim = policy.cond_dim
        self.sampler = policy.sampler  # kept after close(): /diagnostics may read a head retired under it
        self._rng = np.random.Generator(np.random.PCG64(seed))
        h, a = self.action_spec.horizon, self.action_spec.dim
        self._noise = np.empty(noise_shape(policy.sampler, h, a, 1), np.float32)  # (1, [K,] H, A)
        self._dt_ns = int(round(self.action_spec.dt * 1e9))
        self._k = np.arange(1, h + 1, dtype=np.int64)  # action k due at t_obs + (k + 1) dt

    @classmethod
    def open(cls, bundle_dir: str | Path, backend: str = "torch", *, seed: int = 0, with_encoder: bool = False,
             warm_start: bool = True, prefix: bool = True, **opts: Any) -> PolicyRunner:
        """Open the bundle's policy (and its warm-start and prefix-conditioned variants, the
        encoder) on ``backend``; a variant the bundle does not ship is left out."""
        from l1flow_ros.policy.manifest import read_manifest

        manifest = read_manifest(bundle_dir)
        policy = open_policy(bundle_dir, backend, **opts)
        warm = pre = None
        if warm_start and manifest.sampler.warm_start:
            warm = open_policy(bundle_dir, backend, warm=True, **opts)
        if prefix and has_prefix_graph(manifest, backend):
            pre = open_policy(bundle_dir, backend, prefix=True, **opts)
        encoder = open_encoder(bundle_dir, backend, **opts) if with_encoder else None
        return cls(bundle_dir, manifest, policy, warm, encoder, seed, pre)

    @property
    def supports_warm_start(self) -> bool:
        return self.warm_policy is not None

    @property
    def supports_prefix(self) -> bool:
        return self.prefix_policy is not None

    def warmup(self, n: int = 3) -> None:
        """Run every graph ``n`` times (allocations, autotuning, CUDA graph capture)."""
        for g in (self.policy, self.warm_policy, self.prefix_policy, self.encoder):
            if g is not None:
                g.warmup(n)

    def encode(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """One observation (no batch dim, proprio raw) -> embedding (D,)."""
        if self.encoder is None:
            raise RuntimeError("runner opened without encoder (with_encoder=False)")
        batch = {}
        for k in self.encoder.input_names:
            x = np.asarray(obs[k], dtype=np.float32)
            if k == "proprio":
                x = self.normalizer.normalize_proprio(x)
            batch[k] = x[None]
        return self.encoder.run(batch)[0]

    def chunk_times_ns(self, t_obs_ns: int) -> np.ndarray:
        return int(t_obs_ns) + self._k * self._dt_ns  # (H,)

    def act(self, embedding: np.ndarray, t_obs_ns: int, tail: Tail | None = None,
            delay_steps: int | None = None) -> Chunk:
        """Embedding (D,) of an observation stamped ``t_obs_ns`` -> chunk in action units.

        With a ``tail`` (the running plan) that overlaps the new chunk: given ``delay_steps``
        (d) and a prefix-conditioned graph, the chunk keeps the plan's first d actions and is
        drawn towards the rest of the overlap (real-time chunking, ``policy.prefix``); else,
        with a warm-start graph, it starts from the tail. Otherwise from noise.
        """
        cond = np.asarray(embedding, dtype=np.float32).reshape(1, -1)  # (1, D)
        if cond.shape[1] != self.embed_dim:
            raise ValueError(f"embedding has {cond.shape[1]} values, policy expects {self.embed_dim}")
        self._rng.standard_normal(out=self._noise, dtype=np.float32)
        use_prefix = delay_steps is not None and self.prefix_policy is not None
        plan = None
        if tail is not None and (use_prefix or self.warm_policy is not None):
            if tail.actions.shape[1] != len(self.names):
                raise ValueError(f"tail has {tail.actions.shape[1]} dims, policy has {len(self.names)}")
            times = self.chunk_times_ns(t_obs_ns)
            w = resample_tail(tail, times)
            if w is not None:
                plan = self.normalizer.normalize_action(w)[None].astype(np.float32)  # (1, H, A)
        if plan is None:
            out = self.policy.run(cond, self._noise)
        elif use_prefix:
            weights = rtc_weights(self.action_spec.horizon, delay_steps, tail_overlap(tail, times))[None]
            out = self.prefix_policy.run(cond, self._noise, plan, weights)
        else:
            out = self.warm_policy.run(cond, self._noise, plan)
        actions = self.normalizer.unnormalize_action(out[0])  # (H, A) float64
        if not np.all(np.isfinite(actions)):
            raise FloatingPointError("policy produced NaN or inf actions")
        return Chunk(t_obs_ns=int(t_obs_ns), dt=self.action_spec.dt, actions=actions, names=self.names,
                     fingerprint=self.fingerprint)

    def close(self) -> None:
        for g in (self.policy, self.warm_policy, self.prefix_policy, self.encoder):
            if g is not None:
                g.close()
        self.policy = self.warm_policy = self.prefix_policy = self.encoder = None
