"""Checkpoint bundle: a directory with ``manifest.json`` + ``weights.safetensors`` (+ exports).

``manifest.json`` holds the specs, the sampler, the normaliser stats, the model
and training configs, the format version, the list of bundle files and a
fingerprint: the first 16 hex digits of sha256 over the manifest without its
fingerprint and the bytes of every listed file. Two bundles with the same
fingerprint behave the same; the perception and inference nodes stamp and
check embeddings with it.

Files in the directory that the manifest does not list (a training state,
TensorRT engine caches) are not part of the bundle's identity.

Reading and checking a bundle (the manifest, its fingerprint, finite weights) needs no
torch and lives in :mod:`l1flow_ros.policy.manifest`; this module adds the model side:
:func:`make_manifest`, :func:`save_bundle`, :func:`load_bundle`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

# The torch-free half (manifest, fingerprint, checks), re-exported: existing
# ``from l1flow_ros.policy.bundle import read_manifest`` and the like keep working.
from l1flow_ros.policy.manifest import (  # noqa: F401
    FORMAT_VERSION,
    MANIFEST,
    WEIGHTS,
    BundleError,
    Manifest,
    _write_manifest,
    add_files,
    bundle_task,
    compute_fingerprint,
    read_manifest,
)
from l1flow_ros.policy.model import PolicyModel, build_model
from l1flow_ros.policy.normalizer import Normalizer


def make_manifest(
    model: PolicyModel, normalizer: Normalizer, train: dict[str, Any] | None = None
) -> Manifest:
    """The manifest of a model (fingerprint filled in by :func:`save_bundle`)."""
    return Manifest(
        observation=model.obs_spec,
        action=model.action_spec,
        sampler=model.sampler,
        normalizer=normalizer.to_dict(),
        model=model.cfg,
        train=dict(train or {}),
    )


def save_bundle(bundle_dir: str | os.PathLike, model: PolicyModel, manifest: Manifest) -> str:
    """Write weights and manifest; returns the fingerprint.

    The manifest's specs must be the model's. ONNX exports left from an older
    save that the new manifest does not list are removed: they no longer
    match the weights.
    """
    from safetensors.torch import save_file

    if (manifest.observation, manifest.action, manifest.model) != (
        model.obs_spec,
        model.action_spec,
        model.cfg,
    ):
        raise BundleError("manifest specs / model config differ from the model's")
    manifest.validate()
    d = Path(bundle_dir)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    tmp = d / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, d / WEIGHTS)
    for p in d.glob("*.onnx"):
        if p.name not in manifest.files:
            p.unlink()
    manifest = dataclasses.replace(manifest, format_version=FORMAT_VERSION, fingerprint="")
    fp = compute_fingerprint(d, manifest)
    _write_manifest(d, dataclasses.replace(manifest, fingerprint=fp))
    return fp


def load_bundle(bundle_dir: str | os.PathLike, device: str = "cpu") -> tuple[Manifest, PolicyModel]:
    """Validated manifest and the model with its weights, in eval mode on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    m = read_manifest(bundle_dir, check_weights=False)
    try:
        state = load_file(str(Path(bundle_dir) / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{bundle_dir}/{WEIGHTS} is unreadable: {e}") from e
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise BundleError(f"{bundle_dir}/{WEIGHTS} has non-finite values in {bad[:5]}")
    try:
        model = build_model(m)
    except ValueError as e:
        raise BundleError(f"bundle {bundle_dir}: cannot build the model: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BundleError(f"bundle {bundle_dir}: weights do not fit the model: {e}") from e
    return m, model.to(device).eval()
