"""One inference protocol over torch, ONNX Runtime and TensorRT.

``open_encoder(bundle, backend)`` and ``open_policy(bundle, backend)`` return an
:class:`Encoder` / :class:`Policy` whose ``run`` takes and returns numpy arrays:

- ``Encoder.run(obs) -> (B, D)`` with ``obs`` the model input of
  :class:`~l1flow_ros.spec.ObservationSpec` batched B first (proprio already normalised);
- ``Policy.run(cond (B, D), noise (B, H, A)[, warm (B, H, A)]) -> (B, H, A)``, normalised
  actions: the whole sampler runs inside one graph; normalisation and noise drawing
  are the caller's (:class:`~l1flow_ros.inference.runner.PolicyRunner`).

The backend is chosen once, when the object is built: each backend is a *graph*
callable ``graph(list of arrays) -> array`` and :class:`Encoder` / :class:`Policy`
only ever call it, so the hot path has no backend branches. torch runs the same
``encoder_graph()`` / ``policy_graph()`` modules that are exported to ONNX, so all
backends compute the same function for the same noise.

TensorRT and CUDA modules are imported only when those backends are opened.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from l1flow_ros.policy import methods
from l1flow_ros.spec import SamplerSpec

BACKENDS = ("torch", "onnxruntime", "tensorrt")

# ONNX Runtime execution providers, fastest first; only the available ones are used.
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

ENCODER_ONNX = "encoder.onnx"
POLICY_ONNX = "policy.onnx"
ENCODER_OUTPUT = "embedding"
POLICY_INPUTS = ("cond", "noise")
WARM_INPUT = "warm"
PREFIX_INPUTS = ("prefix", "weights")  # the running plan (B, H, A) normalised, its weights (B, H)
PREFIX_ONNX = "policy.prefix.onnx"
POLICY_OUTPUT = "actions"


class BackendError(RuntimeError):
    """A backend that cannot be opened here (missing package, file or device); says why."""


class Graph(Protocol):
    """A compiled graph: positional numpy inputs -> one numpy output."""

    input_names: tuple[str, ...]

    def __call__(self, inputs: Sequence[np.ndarray]) -> np.ndarray: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- file names


def sampler_tag(spec: SamplerSpec) -> str:
    """Short name of a sampler configuration, e.g. 'l1flow2', 'fm10', 'ddpm100'."""
    return f"{spec.kind}{spec.steps}"


def policy_onnx_name(sampler: SamplerSpec | None = None, warm: bool = False) -> str:
    """``policy.onnx`` for the bundle's own sampler, ``policy.<tag>.onnx`` for another.

    The warm-start variant (extra ``warm`` input) is ``policy.warm.onnx``.
    """
    stem = "policy" if sampler is None else f"policy.{sampler_tag(sampler)}"
    return f"{stem}.warm.onnx" if warm else f"{stem}.onnx"


def noise_shape(spec: SamplerSpec, horizon: int, action_dim: int, batch: int = 1) -> tuple[int, ...]:
    """Shape of the noise input: (B, H, A), or (B, K, H, A) for ancestral DDPM (fresh noise per step)."""
    if methods.sampler_kind(spec.kind).noise_per_step:
        return (batch, spec.steps, horizon, action_dim)
    return (batch, horizon, action_dim)


def parse_sampler(text: str, base: SamplerSpec | None = None) -> SamplerSpec:
    """'fm:10', 'ddim:10', 'ddpm:100', 'l1flow:2', 'imle', 'ofp:1' -> SamplerSpec.

    Fields not given (t values, warm start) come from ``base`` when the kind matches.
    """
    kind, _, steps = text.strip().partition(":")
    if kind not in methods.SAMPLER_KINDS:
        raise ValueError(f"unknown sampler {text!r}; kinds: {sorted(methods.SAMPLER_KINDS)} (e.g. 'fm:10')")
    try:
        n = int(steps) if steps else methods.sampler_kind(kind).default_steps
    except ValueError as e:
        raise ValueError(f"sampler {text!r}: steps must be an integer") from e
    if n < 1:
        raise ValueError(f"sampler {text!r}: steps must be >= 1")
    if base is not None and base.kind == kind:
        import dataclasses

        return dataclasses.replace(base, steps=n)
    return SamplerSpec(kind=kind, steps=n)


# ---------------------------------------------------------------------------- front objects


class Encoder:
    """Observation -> embedding on one backend."""

    def __init__(self, graph: Graph, input_shapes: dict[str, tuple[int, ...]], out_dim: int,
                 backend: str) -> None:
        self._graph = graph
        self.input_names: tuple[str, ...] = tuple(graph.input_names)
        self.input_shapes = dict(input_shapes)  # batch 1
        self.out_dim = int(out_dim)
        self.backend = backend

    def run(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """``obs`` modality -> (B, ...) float32; returns (B, D) float32."""
        return self._graph([obs[k] for k in self.input_names])

    def warmup(self, n: int = 3) -> None:
        obs = {k: np.zeros(s, np.float32) for k, s in self.input_shapes.items()}
        for _ in range(max(1, n)):
            self.run(obs)

    def close(self) -> None:
        self._graph.close()


class Policy:
    """(cond, noise[, warm]) -> normalised action chunk on one backend."""

    def __init__(self, graph: Graph, cond_dim: int, horizon: int, action_dim: int, backend: str,
                 sampler: SamplerSpec) -> None:
        self._graph = graph
        self.cond_dim = int(cond_dim)
        self.horizon = int(horizon)
        self.action_dim = int(action_dim)
        self.backend = backend
        self.sampler = sampler
        self.takes_warm = WARM_INPUT in graph.input_names
        self.takes_prefix = PREFIX_INPUTS[0] in graph.input_names

    def run(self, cond: np.ndarray, noise: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        """cond (B, D), noise (B, H, A), then the graph's other inputs: warm (B, H, A) normalised
        for the warm-start graph, prefix (B, H, A) normalised and weights (B, H) for the prefix
        graph (None for none) -> (B, H, A) float32."""
        return self._graph((cond, noise, *(x for x in extra if x is not None)))

    def warmup(self, n: int = 3) -> None:
        cond = np.zeros((1, self.cond_dim), np.float32)
        noise = np.zeros(noise_shape(self.sampler, self.horizon, self.action_dim), np.float32)
        chunk = np.zeros((1, self.horizon, self.action_dim), np.float32)
        extra: tuple[np.ndarray, ...] = ()
        if self.takes_warm:
            extra = (chunk,)
        elif self.takes_prefix:
            extra = (chunk, np.zeros((1, self.horizon), np.float32))
        for _ in range(max(1, n)):
            self.run(cond, noise, *extra)

    def close(self) -> None:
        self._graph.close()


# ---------------------------------------------------------------------------- torch


class TorchGraph:
    """An ``nn.Module`` taking positional tensors, run eagerly under inference mode."""

    def __init__(self, module: Any, input_names: Sequence[str], device: str = "cpu", threads: int = 0) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(int(threads))  # process-wide: torch has no per-module setting
        self._torch = torch
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.input_names = tuple(input_names)
        self._sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

    def __call__(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            xs = [torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device) for x in inputs]
            y = self.module(*xs)
            out = y.float().cpu().numpy()
        self._sync()
        return out

    def close(self) -> None:
        self.module = None


# ---------------------------------------------------------------------------- onnxruntime


def resolve_providers(requested: Sequence[str] | None = None, available: Sequence[str] | None = None) -> list[str]:
    """The requested providers that this onnxruntime build has, in the requested order.

    CPU is always appended last as the fallback. Unknown names raise.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    requested = list(requested or DEFAULT_PROVIDERS)
    known = set(DEFAULT_PROVIDERS) | set(available) | {"CPUExecutionProvider"}
    bad = [p for p in requested if p not in known]
    if bad:
        raise BackendError(f"unknown onnxruntime providers {bad}; this build has {list(available)}")
    out = [p for p in requested if p in available]
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


class OrtGraph:
    """An ONNX file run by onnxruntime with the first available providers."""

    def __init__(self, onnx_path: str | Path, providers: Sequence[str] | None = None, threads: int = 0,
                 fp16: bool = False, engine_cache_dir: str | Path | None = None) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise BackendError(f"{path} not found: run `l1flow export` on the bundle first")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        # No busy-waiting of the intra-op threads after a run: on a few cores shared with the
        # control loop, the camera and the other nodes, a spinning pool takes the CPU they need
        # (a swap's warm-up spun both cores for its duration).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        names = resolve_providers(providers)
        opts: list[dict] = []
        for p in names:
            if p == "TensorrtExecutionProvider":
                o = {"trt_fp16_enable": bool(fp16)}
                if engine_cache_dir:
                    Path(engine_cache_dir).mkdir(parents=True, exist_ok=True)
                    o.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache_dir))
                opts.append(o)
            else:
                opts.append({})
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=names, provider_options=opts)
        self.providers = tuple(self.session.get_providers())
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self._output = [self.session.get_outputs()[0].name]

    def __call__(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        feed = {n: np.ascontiguousarray(x, dtype=np.float32) for n, x in zip(self.input_names, inputs)}
        return self.session.run(self._output, feed)[0]

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------------------------- factories


def _load_torch(bundle_dir: str | Path, device: str, sampler: SamplerSpec | None):
    """(manifest, model) from the bundle; ``sampler`` overrides the manifest's sampler (same weights)."""
    from l1flow_ros.policy.bundle import load_bundle

    manifest, model = load_bundle(bundle_dir, device=device)
    if sampler is not None and sampler != manifest.sampler:
        model = model.with_sampler(sampler)
    return manifest, model


_TORCH_LOCK = threading.Lock()


def open_encoder(bundle_dir: str | Path, backend: str = "torch", **opts: Any) -> Encoder:
    """The bundle's observation encoder on ``backend``.

    opts: ``device`` (torch: "cpu"/"cuda"), ``threads`` (torch / onnxruntime intra-op threads, 0 = default),
    ``providers`` (onnxruntime),
    ``fp16``, ``engine_cache_dir``, ``allow_build`` (tensorrt).
    """
    from l1flow_ros.policy.manifest import read_manifest

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    shapes, out_dim = _encoder_shapes(manifest)
    graph = _open_graph(bundle_dir, backend, ENCODER_ONNX, lambda m: (m.encoder_graph(), _enc_names(m)),
                        None, opts)
    return Encoder(graph, shapes, out_dim, backend)


def open_policy(bundle_dir: str | Path, backend: str = "torch", sampler: SamplerSpec | str | None = None,
                warm: bool = False, prefix: bool = False, **opts: Any) -> Policy:
    """The bundle's sampler (or ``sampler``, same network) as one graph on ``backend``.

    ``warm=True`` opens the warm-start variant (extra ``warm`` input); only for bundles
    whose sampler has ``warm_start``. ``prefix=True`` opens the prefix-conditioned variant
    (extra ``prefix`` and ``weights`` inputs), the bundle's own sampler only.
    """
    if prefix:
        return _open_prefix_policy(Path(bundle_dir), backend, opts)
    from l1flow_ros.policy.manifest import read_manifest

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    if isinstance(sampler, str):
        sampler = parse_sampler(sampler, manifest.sampler)
    if sampler == manifest.sampler:
        sampler = None
    spec = sampler or manifest.sampler
    if warm and not spec.warm_start:
        raise BackendError(f"sampler {sampler_tag(spec)} of {bundle_dir} has no warm start")
    names = (*POLICY_INPUTS, WARM_INPUT) if warm else POLICY_INPUTS
    graph = _open_graph(bundle_dir, backend, policy_onnx_name(sampler, warm),
                        lambda m: (m.policy_graph(), names), sampler, opts)
    _, cond_dim = _encoder_shapes(manifest)
    return Policy(graph, cond_dim, manifest.action.horizon, manifest.action.dim, backend, spec)


def has_prefix_graph(manifest: Any, backend: str = "onnxruntime") -> bool:
    """Whether a bundle's policy can be drawn with a running plan's prefix on ``backend``: its
    network was trained with a prefix input or its sampler is a flow-time one, and (for the
    graph backends) ``policy.prefix.onnx`` was exported."""
    possible = manifest.model.unet.prefix_input or methods.sampler_kind(manifest.sampler.kind).flow_time
    return possible and (backend == "torch" or PREFIX_ONNX in manifest.files)


def _open_prefix_policy(bundle_dir: Path, backend: str, opts: dict) -> Policy:
    from l1flow_ros.policy.manifest import read_manifest

    manifest = read_manifest(bundle_dir)
    if not has_prefix_graph(manifest, backend):
        raise BackendError(f"{bundle_dir} cannot be drawn with a prefix on {backend} (a flow-time sampler "
                           f"and {PREFIX_ONNX} are needed; re-export it: l1flow export)")
    names = (*POLICY_INPUTS, *PREFIX_INPUTS)
    graph = _open_graph(bundle_dir, backend, PREFIX_ONNX, lambda m: (m.prefix_graph(), names), None, opts)
    _, cond_dim = _encoder_shapes(manifest)
    return Policy(graph, cond_dim, manifest.action.horizon, manifest.action.dim, backend, manifest.sampler)


def _enc_names(model: Any) -> tuple[str, ...]:
    return tuple(model.encoder.input_names)


def encoder_signature(manifest: Any) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]], int]:
    """(input names in graph order, batch-1 input shapes by modality, embedding dim) of a
    manifest's encoder, without opening any graph."""
    from l1flow_ros.perception.encoders import ObservationEncoder

    with _TORCH_LOCK:
        enc = ObservationEncoder(manifest.observation, manifest.model.encoder)
    return tuple(enc.input_names), enc.input_shapes(1), enc.out_dim


def _encoder_shapes(manifest: Any) -> tuple[dict[str, tuple[int, ...]], int]:
    """(batch-1 input shapes by modality, embedding dim) of a manifest's encoder."""
    _, shapes, out_dim = encoder_signature(manifest)
    return shapes, out_dim


def _open_graph(bundle_dir: Path, backend: str, onnx_name: str, torch_module, sampler, opts: dict) -> Graph:
    if backend == "torch":
        device = str(opts.get("device", "cpu"))
        with _TORCH_LOCK:
            _, model = _load_torch(bundle_dir, device, sampler)
            module, names = torch_module(model)
        return TorchGraph(module, names, device, threads=int(opts.get("threads", 0)))
    if backend == "onnxruntime":
        return OrtGraph(bundle_dir / onnx_name, providers=opts.get("providers"), threads=int(opts.get("threads", 0)),
                        fp16=bool(opts.get("fp16", False)), engine_cache_dir=opts.get("engine_cache_dir"))
    if backend == "tensorrt":
        from l1flow_ros.inference.trt_backend import TrtGraph

        return TrtGraph(bundle_dir / onnx_name, fp16=bool(opts.get("fp16", False)),
                        cache_dir=opts.get("engine_cache_dir"), allow_build=bool(opts.get("allow_build", True)),
                        cuda_graph=bool(opts.get("cuda_graph", True)))
    raise BackendError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
