"""A checkpoint bundle's observation encoder: model input -> embedding (no ROS).

Wraps the runtime's backend protocol (``inference.backends.open_encoder``: torch,
onnxruntime or tensorrt) with what the encoder graph does not hold: the
proprio normalisation from the manifest, the batch axis, and output checks.

Each observation step is encoded once (:meth:`Embedder.embed_history`): the encoder is
also opened in its two parts (``ObservationEncoder.step_features`` and ``.head``; on the
graph backends ``encoder.step.onnx`` and ``encoder.head.onnx``, which ``l1flow export``
writes), a step's features are kept while the history can still pick it, and a set
encodes only its new step, then the small head over all steps' features. The embedding
is the one re-encoding every step gives (up to float rounding: a convolution over one
step and over a batch of steps may sum in another order). A bundle exported before the
two parts existed runs its whole ``encoder.onnx`` every set, as it always did. The whole
encoder is opened only when it is run (:meth:`Embedder.embed`): a checkpoint swap in
the node opens and warms up the two parts alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.perception.geometry import PerceptionError

ENCODER_STEP_ONNX = "encoder.step.onnx"  # one step per row -> features (N, S)
ENCODER_HEAD_ONNX = "encoder.head.onnx"  # features (B, To, S)[, proprio (B, To, P)] -> embedding
STEP_FEATURES = "features"  # the step graph's output and the head graph's first input


class Embedder:
    """model input (To, ...) per ObservationSpec -> embedding (D,) float32.

    Attributes: ``fingerprint``, ``obs_spec``, ``period_s`` (the action dt: the
    spacing of the observation history in training), ``out_dim``, ``bundle_dir``,
    ``caches_steps`` (whether :meth:`embed_history` encodes each step once).
    ``cache_steps=False`` keeps the whole encoder for every set (for comparisons).
    Raises BundleError / BackendError when the bundle cannot be opened.
    """

    def __init__(self, bundle_dir: str | Path, backend: str = "torch", warmup: bool = True,
                 cache_steps: bool = True, **opts: Any) -> None:
        from l1flow_ros.inference.backends import encoder_signature
        from l1flow_ros.policy.manifest import read_manifest

        self.bundle_dir = Path(bundle_dir)
        self.manifest = read_manifest(self.bundle_dir)
        self.fingerprint: str = self.manifest.fingerprint
        self.obs_spec = self.manifest.observation
        self.period_s: float = float(self.manifest.action.dt)
        self._normalizer = self.manifest.normalizer_obj()
        self.backend = backend
        self._opts = dict(opts)
        names, self._shapes, out_dim = encoder_signature(self.manifest)
        self.out_dim: int = int(out_dim)
        self.input_names: tuple[str, ...] = tuple(names)
        self.step_input_names = tuple(k for k in self.input_names if k in ("rgb", "points"))
        self._encoder: Any = None  # the whole encoder, opened by the first embed()
        self._step = self._head = None
        has_parts = backend == "torch" or {ENCODER_STEP_ONNX, ENCODER_HEAD_ONNX} <= set(self.manifest.files)
        if cache_steps and self.step_input_names and has_parts:
            self._step, self._head = self._open_parts(self._opts)
        self.caches_steps = self._step is not None
        if not self.caches_steps:
            self._whole()  # a bundle without the parts fails here, at open, as before
        self._features: OrderedDict[int, np.ndarray] = OrderedDict()  # step id -> (S,) features
        self.steps_encoded = 0  # steps that went through the step graph (for checks)
        if warmup:
            if self.caches_steps:
                self._warm_parts()
            else:
                self._encoder.warmup(2)

    def _whole(self) -> Any:
        """The whole encoder graph, opened on first use."""
        if self._encoder is None:
            from l1flow_ros.inference.backends import open_encoder

            self._encoder = open_encoder(self.bundle_dir, self.backend, **self._opts)
        return self._encoder

    def _open_parts(self, opts: dict[str, Any]) -> tuple[Any, Any]:
        from l1flow_ros.inference.backends import _open_graph

        head_names = (STEP_FEATURES, *(("proprio",) if "proprio" in self.input_names else ()))
        step = _open_graph(self.bundle_dir, self.backend, ENCODER_STEP_ONNX,
                           lambda m: (m.encoder_step_graph(), self.step_input_names), None, opts)
        head = _open_graph(self.bundle_dir, self.backend, ENCODER_HEAD_ONNX,
                           lambda m: (m.encoder_head_graph(), head_names), None, opts)
        return step, head

    def _warm_parts(self) -> None:
        shapes = self._shapes  # batch 1: (1, To, ...)
        step_in = [np.zeros(shapes[k][:1] + shapes[k][2:], np.float32) for k in self.step_input_names]
        for _ in range(2):
            f = self._step(step_in)  # (1, S)
            to = self.obs_spec.n_obs_steps
            head_in = [np.repeat(f[:, None], to, axis=1)]
            if "proprio" in self.input_names:
                head_in.append(np.zeros(shapes["proprio"], np.float32))
            self._head(head_in)

    def _check(self, out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32).reshape(-1)  # (D,)
        if out.shape[0] != self.out_dim or not np.all(np.isfinite(out)):
            raise PerceptionError("encoder output is not a finite vector of the expected size")
        return out

    def embed(self, model_input: Mapping[str, np.ndarray]) -> np.ndarray:
        """One observation (no batch axis) -> (D,) float32, every step encoded; PerceptionError
        if the output is not finite."""
        obs = {}
        for k in self.input_names:
            if k not in model_input:
                raise PerceptionError(f"model input lacks {k!r} (encoder reads {self.input_names})")
            x = model_input[k]
            if k == "proprio":
                x = self._normalizer.normalize_proprio(x)  # (To, P)
            obs[k] = np.ascontiguousarray(x, dtype=np.float32)[None]  # (1, To, ...)
        return self._check(self._whole().run(obs))

    def embed_history(self, history: Any) -> np.ndarray:
        """The embedding of ``history``'s model input (``preprocess.ObservationHistory``), each
        step encoded once: the steps this embedder has not seen go through the step part, one
        at a time, the head combines all steps' features. Without the two parts: :meth:`embed`."""
        from l1flow_ros.perception.preprocess import stack_steps

        picked = history.picked()  # [(step id, step)], oldest first
        if not self.caches_steps:
            return self.embed(stack_steps([s for _, s in picked]))
        new = {i: s for i, s in picked if i not in self._features}
        for i, s in new.items():  # one step a call: the graph backends hold batch-1 buffers (TensorRT)
            rows = []
            for k in self.step_input_names:
                if k not in s:
                    raise PerceptionError(f"model input lacks {k!r} (encoder reads {self.input_names})")
                rows.append(np.ascontiguousarray(s[k], dtype=np.float32)[None])  # (1, ...)
            f = np.asarray(self._step(rows), dtype=np.float32).reshape(-1)  # (S,)
            if not np.all(np.isfinite(f)):
                raise PerceptionError("encoder step features are not finite")
            self._features[i] = f
            self.steps_encoded += 1
        while len(self._features) > max(history.capacity, 1) + 1:  # the history keeps no more
            self._features.popitem(last=False)
        head_in = [np.stack([self._features[i] for i, _ in picked])[None]]  # (1, To, S)
        if "proprio" in self.input_names:
            if any("proprio" not in s for _, s in picked):
                raise PerceptionError(f"model input lacks 'proprio' (encoder reads {self.input_names})")
            p = np.stack([np.asarray(s["proprio"], dtype=np.float32) for _, s in picked])  # (To, P)
            head_in.append(np.ascontiguousarray(self._normalizer.normalize_proprio(p), dtype=np.float32)[None])
        return self._check(self._head(head_in))

    def close(self) -> None:
        for g in (self._encoder, self._step, self._head):
            if g is not None:
                g.close()
