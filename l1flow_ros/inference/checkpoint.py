"""Cheap, synchronous checks of a checkpoint bundle before it may replace the running one.

Used by the inference node's parameter callback (``checkpoint`` set): everything here
must be fast enough to answer a ``ros2 param set`` (reading the manifest, hashing the
files, scanning the weights for NaN), so an invalid bundle is *rejected with a reason*
and the running policy is untouched. Loading and warming up happen afterwards, off the
control path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l1flow_ros.inference.backends import BACKENDS, policy_onnx_name
from l1flow_ros.inference.engine_cache import (
    DeviceIdentity,
    EngineCache,
    EngineCacheError,
    EngineKey,
    default_cache_dir,
)


class CheckpointRejected(ValueError):
    """A bundle that may not replace the running one; the text says why."""


def required_onnx(manifest: Any, warm_start: bool = True) -> list[str]:
    """The ONNX files the graph backends need for this bundle's policy."""
    names = [policy_onnx_name()]
    if warm_start and manifest.sampler.warm_start:
        names.append(policy_onnx_name(warm=True))
    return names


def compatibility_errors(new: Any, running: Any) -> list[str]:
    """Why ``new`` cannot drive the robot ``running`` drives (empty when it can)."""
    errs = []
    if tuple(new.action.names) != tuple(running.action.names):
        errs.append(f"action names {list(new.action.names)} differ from the running {list(running.action.names)}")
    if new.action.kind != running.action.kind:
        errs.append(f"action kind {new.action.kind!r} differs from the running {running.action.kind!r}")
    if new.observation != running.observation:
        diff = [k for k in vars(new.observation) if getattr(new.observation, k) != getattr(running.observation, k)]
        errs.append(f"observation spec differs from the running one in {diff}")
    return errs


def validate_checkpoint(path: str | Path, running: Any | None = None, backend: str = "torch", *,
                        warm_start: bool = True, fp16: bool = False, engine_cache_dir: str | Path | None = None,
                        allow_build: bool = True, device: DeviceIdentity | None = None) -> Any:
    """The bundle's manifest if it may be loaded on ``backend`` next to ``running``.

    Raises :class:`CheckpointRejected` for: a missing or non-bundle path; a corrupt or
    unreadable manifest or weights, or contents that do not match the fingerprint
    (the bundle API's checks); NaN / inf weights; another action dimension, action names
    or observation spec than the running policy; missing ONNX exports for a graph
    backend; (tensorrt) a cached engine built for another GPU or TensorRT version when
    building is not allowed.
    """
    from l1flow_ros.policy.manifest import BundleError, read_manifest

    if backend not in BACKENDS:
        raise CheckpointRejected(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    text = str(path).strip()
    if not text:
        raise CheckpointRejected("empty checkpoint path")
    p = Path(text).expanduser()
    if not p.exists():
        raise CheckpointRejected(f"checkpoint {p} does not exist")
    try:
        manifest = read_manifest(p, check_weights=True)
    except BundleError as e:
        raise CheckpointRejected(str(e)) from e
    except OSError as e:
        raise CheckpointRejected(f"checkpoint {p} is unreadable: {e}") from e
    if running is not None:
        errs = compatibility_errors(manifest, running)
        if errs:
            raise CheckpointRejected("; ".join(errs))
    if backend in ("onnxruntime", "tensorrt"):
        missing = [n for n in required_onnx(manifest, warm_start) if n not in manifest.files]
        if missing:
            raise CheckpointRejected(f"checkpoint {p} has no {missing}: run `l1flow export {p}` first")
    if backend == "tensorrt":
        if device is None:
            from l1flow_ros.inference.backends import BackendError
            from l1flow_ros.inference.trt_backend import device_identity

            try:
                device = device_identity()
            except BackendError as e:  # no GPU / TensorRT here: a reason, not an exception
                raise CheckpointRejected(f"cannot check TensorRT engines here: {e}") from e
        cache = EngineCache(engine_cache_dir or default_cache_dir(p))
        precision = "fp16" if fp16 else "fp32"
        for name in required_onnx(manifest, warm_start):
            key = EngineKey.for_onnx(p / name, device, precision)
            try:
                cache.check_usable(Path(name).stem, key, allow_build)
            except EngineCacheError as e:
                raise CheckpointRejected(str(e)) from e
    return manifest
