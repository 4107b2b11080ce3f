"""Bundle manifests, torch-free: read, validate, fingerprint (the format: :mod:`l1flow_ros.policy.bundle`).

Everything of a bundle but its weights as tensors: :class:`Manifest`, :func:`read_manifest`
(with the finite-weights check through ``safetensors.numpy``), :func:`compute_fingerprint`,
:func:`add_files` and :func:`bundle_task`. The executor node reads a checkpoint's action
limits here without importing torch into its 500 Hz process; ``policy.bundle`` adds what
needs torch (``make_manifest``, ``save_bundle``, ``load_bundle``) and re-exports the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.policy.model_config import ModelConfig
from l1flow_ros.policy.normalizer import Normalizer
from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"


class BundleError(Exception):
    """A bundle that cannot be used; the message says why."""


@dataclass(frozen=True)
class Manifest:
    observation: ObservationSpec
    action: ActionSpec
    sampler: SamplerSpec
    normalizer: dict[str, list[float]]  # Normalizer.to_dict()
    model: ModelConfig
    train: dict[str, Any] = field(default_factory=dict)  # dataclasses.asdict of the training configs
    format_version: int = FORMAT_VERSION
    fingerprint: str = ""
    files: tuple[str, ...] = (WEIGHTS,)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Parse and validate; raises BundleError with the reason."""
        if not isinstance(d, dict):
            raise BundleError(f"{MANIFEST} must hold a JSON object, got {type(d).__name__}")
        version = d.get("format_version")
        if not isinstance(version, int):
            raise BundleError(f"{MANIFEST} has no integer format_version")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"bundle format version {version} is newer than this l1flow_ros reads ({FORMAT_VERSION}); "
                "upgrade l1flow_ros"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = (
            set(d) - names,
            {"observation", "action", "sampler", "normalizer", "model"} - set(d),
        )
        if unknown:
            raise BundleError(f"{MANIFEST} has unknown fields {sorted(unknown)}")
        if missing:
            raise BundleError(f"{MANIFEST} is missing {sorted(missing)}")
        try:
            m = cls(
                observation=ObservationSpec.from_dict(d["observation"]),
                action=ActionSpec.from_dict(d["action"]),
                sampler=SamplerSpec.from_dict(d["sampler"]),
                normalizer=Normalizer.from_dict(d["normalizer"]).to_dict(),
                model=ModelConfig.from_dict(d["model"]),
                train=dict(d.get("train", {})),
                format_version=version,
                fingerprint=str(d.get("fingerprint", "")),
                files=tuple(d.get("files", (WEIGHTS,))),
            )
        except (TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{MANIFEST} is invalid: {e}") from e
        m.validate()
        return m

    def validate(self) -> None:
        """Cross-checks between the parts; raises BundleError."""
        norm = Normalizer.from_dict(self.normalizer)
        if norm.action_dim != self.action.dim:
            raise BundleError(f"normalizer has {norm.action_dim} action dims, action spec {self.action.dim}")
        if norm.proprio_dim != len(self.observation.proprio_names):
            raise BundleError(
                f"normalizer has {norm.proprio_dim} proprio dims, observation spec "
                f"{len(self.observation.proprio_names)}"
            )
        if WEIGHTS not in self.files:
            raise BundleError(f"{MANIFEST} does not list {WEIGHTS}")
        for f in self.files:
            if os.path.basename(f) != f or f in ("", ".", "..", MANIFEST):
                raise BundleError(f"bad file name {f!r} in {MANIFEST}")

    def normalizer_obj(self) -> Normalizer:
        return Normalizer.from_dict(self.normalizer)


def _canonical(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


# Fields added to the manifest after bundles were first written: left out of the hashed form
# while at their default, so that a bundle written before them keeps its fingerprint.
LATER_FIELDS = {("model", "unet", "prefix_input"): False, ("model", "unet", "prefix_soft"): False}


def compute_fingerprint(bundle_dir: str | os.PathLike, manifest: Manifest) -> str:
    """sha256 over the manifest without its fingerprint and every listed file, 16 hex digits."""
    d = manifest.to_dict()
    d.pop("fingerprint")
    for path, default in LATER_FIELDS.items():
        *parents, leaf = path
        node = d
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf, default) == default:
            node.pop(leaf, None)
    h = hashlib.sha256(_canonical(d))
    for name in sorted(manifest.files):
        p = Path(bundle_dir) / name
        if not p.is_file():
            raise BundleError(f"bundle {bundle_dir} is missing {name}")
        h.update(name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _write_manifest(bundle_dir: Path, manifest: Manifest) -> None:
    tmp = bundle_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, bundle_dir / MANIFEST)  # readers never see half a manifest


def add_files(bundle_dir: str | os.PathLike, names: list[str]) -> str:
    """List extra files (e.g. ``encoder.onnx``, ``policy.onnx`` written by export) in the
    manifest and refresh the fingerprint; returns the new fingerprint. The caller checked the
    bundle before writing them (an export loads it first); files it rewrote (a re-export)
    change the fingerprint like new ones do."""
    m = read_manifest(bundle_dir, check_weights=False, check_fingerprint=False)
    files = tuple(dict.fromkeys((*m.files, *names)))
    m = dataclasses.replace(m, files=files, fingerprint="")
    m.validate()
    fp = compute_fingerprint(bundle_dir, m)
    _write_manifest(Path(bundle_dir), dataclasses.replace(m, fingerprint=fp))
    return fp


def read_manifest(bundle_dir: str | os.PathLike, check_weights: bool = True,
                  check_fingerprint: bool = True) -> Manifest:
    """Read and validate a bundle's manifest; raises BundleError with a clear reason.

    Checks: the directory and every listed file exist, the JSON parses, the
    format version is not newer than this code, no unknown fields, the
    fingerprint matches the contents, and (``check_weights``) all weights
    are finite.
    """
    d = Path(bundle_dir)
    if not d.is_dir():
        raise BundleError(f"bundle {bundle_dir} is not a directory")
    p = d / MANIFEST
    if not p.is_file():
        raise BundleError(f"bundle {bundle_dir} has no {MANIFEST}")
    try:
        raw = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{p} is corrupt: {e}") from e
    m = Manifest.from_dict(raw)
    for name in m.files:
        if not (d / name).is_file():
            raise BundleError(f"bundle {bundle_dir} is missing {name} (listed in {MANIFEST})")
    fp = compute_fingerprint(d, dataclasses.replace(m, fingerprint="")) if check_fingerprint else m.fingerprint
    if m.fingerprint != fp:
        raise BundleError(
            f"bundle {bundle_dir} fingerprint {m.fingerprint!r} does not match its contents ({fp})"
        )
    if check_weights:
        _check_weights(d / WEIGHTS)
    return m


def _check_weights(path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{path} is unreadable: {e}") from e
    bad = [k for k, v in tensors.items() if not np.all(np.isfinite(v))]
    if bad:
        raise BundleError(f"{path} has non-finite values in {bad[:5]}")


def bundle_task(manifest: Manifest) -> str | None:
    """The task a bundle was trained for: the one task of its training store's episodes
    (recorded in their metadata), or None when the store named none or several."""
    tasks = (manifest.train or {}).get("data", {}).get("tasks") or []
    return str(tasks[0]) if len(tasks) == 1 else None
