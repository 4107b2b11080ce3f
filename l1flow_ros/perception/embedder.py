"""A checkpoint bundle's observation encoder: model input -> embedding (no ROS).

Wraps the runtime's backend protocol (``inference.backends.open_encoder``: torch,
onnxruntime or tensorrt) with what the encoder graph does not hold: the
proprio normalisation from the manifest, the batch axis, and output checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.perception.geometry import PerceptionError


class Embedder:
    """model input (To, ...) per ObservationSpec -> embedding (D,) float32.

    Attributes: ``fingerprint``, ``obs_spec``, ``period_s`` (the action dt: the
    spacing of the observation history in training), ``out_dim``, ``bundle_dir``.
    Raises BundleError / BackendError when the bundle cannot be opened.
    """

    def __init__(self, bundle_dir: str | Path, backend: str = "torch", warmup: bool = True, **opts: Any) -> None:
        from l1flow_ros.inference.backends import open_encoder
        from l1flow_ros.policy.manifest import read_manifest

        self.bundle_dir = Path(bundle_dir)
        self.manifest = read_manifest(self.bundle_dir)
        self.fingerprint: str = self.manifest.fingerprint
        self.obs_spec = self.manifest.observation
        self.period_s: float = float(self.manifest.action.dt)
        self._normalizer = self.manifest.normalizer_obj()
        self._encoder = open_encoder(self.bundle_dir, backend, **opts)
        self.out_dim: int = int(self._encoder.out_dim)
        self.input_names: tuple[str, ...] = tuple(self._encoder.input_names)
        self.backend = backend
        if warmup:
            self._encoder.warmup(2)

    def embed(self, model_input: Mapping[str, np.ndarray]) -> np.ndarray:
        """One observation (no batch axis) -> (D,) float32; PerceptionError if the output is not finite."""
        obs = {}
        for k in self.input_names:
            if k not in model_input:
                raise PerceptionError(f"model input lacks {k!r} (encoder reads {self.input_names})")
            x = model_input[k]
            if k == "proprio":
                x = self._normalizer.normalize_proprio(x)  # (To, P)
            obs[k] = np.ascontiguousarray(x, dtype=np.float32)[None]  # (1, To, ...)
        out = np.asarray(self._encoder.run(obs), dtype=np.float32).reshape(-1)  # (D,)
        if out.shape[0] != self.out_dim or not np.all(np.isfinite(out)):
            raise PerceptionError("encoder output is not a finite vector of the expected size")
        return out

    def close(self) -> None:
        self._encoder.close()
