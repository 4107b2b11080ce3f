"""The inference node's configuration (no ROS): one frozen dataclass and its validation.

Every field is a ROS parameter of ``inference_node`` (declared by
:func:`l1flow_ros.nodes.params.declare`). ``live=True`` fields may change while the node
runs: ``checkpoint`` (a hot swap), ``warm_start``, ``prefix_conditioning``, ``n_action_steps``,
``inject_delay_ms`` and ``max_observation_age`` (read at each inference). The others are fixed at start: they shape the backend the bundle is opened on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from l1flow_ros.config import param
from l1flow_ros.inference.backends import BACKENDS, DEFAULT_PROVIDERS


@dataclass(frozen=True)
class InferenceConfig:
    """All parameters of the inference node, validated by :meth:`validate`."""

    checkpoint: str = param(
        "", "checkpoint bundle (a directory, or package://l1flow_ros/<rel>) directory; set while running to "
        "hot-swap", live=True)
    backend: str = param("torch", "torch | onnxruntime | tensorrt")
    device: str = param("cpu", "torch device (cpu, cuda, cuda:1)")
    providers: tuple[str, ...] = param(DEFAULT_PROVIDERS,
                                       "onnxruntime execution providers in order; unavailable ones skipped")
    threads: int = param(0, "torch / onnxruntime intra-op threads (0 = library default)")
    fp16: bool = param(False, "tensorrt / onnxruntime-TensorRT: fp16 engine")
    engine_cache_dir: str = param("", "TensorRT engine cache (empty: <bundle>/engines)")
    allow_engine_build: bool = param(True, "build a TensorRT engine when no valid cached one exists")
    cuda_graph: bool = param(True, "tensorrt: replay each call as one CUDA graph")
    seed: int = param(0, "seed of the noise generator")
    warm_start: bool = param(True, "use the executor's tail as warm start when the policy supports it", live=True)
    prefix_conditioning: bool = param(
        True, "real-time chunking: keep the executor's running plan for the first d actions of a chunk "
        "(d: the inference delay) and draw the rest of the overlap towards it, when the bundle ships the "
        "prefix graph (before warm start)", live=True)
    n_action_steps: int = param(
        -1, "execution horizon s: a chunk is computed from the first embedding s chunk steps after the last "
        "chunk's observation (-1 = the bundle's n_action_steps, 0 = every embedding); while the executor "
        "runs no plan every embedding is used", live=True)
    inject_delay_ms: float = param(0.0, "added to each inference before its chunk is published, ms "
                                        "(benchmarks and tests of delay handling; 0 = off)", live=True)
    warmup_iterations: int = param(5, "runs of each graph before a checkpoint is used")
    max_observation_age: float = param(0.0, "drop embeddings older than this vs. the node clock, s (0 = off)",
                                       live=True)
    diagnostics_period: float = param(1.0, "period of /diagnostics, s")
    log_chunks: bool = param(False, "log how each chunk was drawn: its observation, the prefix length d, the "
                             "executor tail it saw (benchmarks)", live=True)
    autostart: bool = param(False, "configure and activate at start (standalone use without a lifecycle manager)")

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} not in {BACKENDS}")
        if self.threads < 0 or self.warmup_iterations < 0:
            raise ValueError("threads and warmup_iterations must be >= 0")
        if self.max_observation_age < 0:
            raise ValueError(f"max_observation_age must be >= 0 s (0 = off), got {self.max_observation_age}")
        if self.n_action_steps < -1:
            raise ValueError(f"n_action_steps must be >= 0, or -1 for the bundle's, got {self.n_action_steps}")
        if not 0 <= self.inject_delay_ms <= 10_000:
            raise ValueError(f"inject_delay_ms must be in [0, 10000], got {self.inject_delay_ms}")
        if self.diagnostics_period <= 0:
            raise ValueError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")

    def backend_opts(self) -> dict[str, Any]:
        """Keyword options of :func:`~l1flow_ros.inference.backends.open_policy` for this config."""
        return {
            "device": self.device,
            "providers": [p for p in self.providers if p],
            "threads": self.threads,
            "fp16": self.fp16,
            "engine_cache_dir": self.engine_cache_dir or None,
            "allow_build": self.allow_engine_build,
            "cuda_graph": self.cuda_graph,
        }

    def checkpoint_checks(self) -> dict[str, Any]:
        """Keyword options of :func:`~l1flow_ros.inference.checkpoint.validate_checkpoint` for this config."""
        return {"warm_start": self.warm_start, "fp16": self.fp16,
                "engine_cache_dir": self.engine_cache_dir or None, "allow_build": self.allow_engine_build}
