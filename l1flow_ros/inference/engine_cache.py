"""TensorRT engine cache: engines built from a bundle's ONNX files, kept beside the bundle.

An engine is only valid on the GPU model and TensorRT version that built it, for the
exact ONNX bytes it was built from, at the precision and batch profile it was built
for. Each cached engine ``<stem>.<key>.engine`` carries a ``<stem>.<key>.json`` record
of that key plus the engine's own sha256, so a lookup can tell a valid engine from a
stale one (other GPU, other TensorRT, re-exported ONNX) or a truncated one without
deserialising it. A valid engine is never rebuilt.

This module is pure Python (no TensorRT, no CUDA): the keying and validation are
tested on CPU; :mod:`l1flow_ros.inference.trt_backend` supplies the device identity and
the engine bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENGINE_DIR_NAME = "engines"


class EngineCacheError(RuntimeError):
    """A cached engine that cannot be used here; the text says why."""


@dataclass(frozen=True)
class DeviceIdentity:
    """What an engine is tied to besides its ONNX: the GPU model and the TensorRT version."""

    gpu_name: str  # e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # e.g. "9.0"
    trt_version: str  # e.g. "11.4.0.106"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two equal keys may share one engine file."""

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    trt_version: str
    precision: str = "fp32"  # "fp32" | "fp16"
    max_batch: int = 1

    @classmethod
    def for_onnx(cls, onnx_path: str | Path, device: DeviceIdentity, precision: str = "fp32",
                 max_batch: int = 1) -> EngineKey:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision {precision!r} must be 'fp32' or 'fp16'")
        return cls(
            onnx_sha256=file_sha256(onnx_path),
            gpu_name=device.gpu_name,
            compute_capability=device.compute_capability,
            trt_version=device.trt_version,
            precision=precision,
            max_batch=int(max_batch),
        )

    def digest(self) -> str:
        """Short stable hash of the key (file names)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def mismatch(self, other: EngineKey) -> list[str]:
        """Human-readable differences from ``other`` (empty when equal)."""
        out = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: built for {b!r}, need {a!r}")
        return out


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir(bundle_dir: str | Path) -> Path:
    """Engines live in ``<bundle>/engines/`` (not part of the bundle's fingerprint)."""
    return Path(bundle_dir) / ENGINE_DIR_NAME


class EngineCache:
    """A directory of engines keyed by :class:`EngineKey`."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)

    def paths(self, stem: str, key: EngineKey) -> tuple[Path, Path]:
        base = f"{stem}.{key.digest()}"
        return self.dir / f"{base}.engine", self.dir / f"{base}.json"

    def records(self, stem: str) -> list[dict]:
        """Every engine record for ``stem`` in the cache (valid or not)."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob(f"{stem}.*.json")):
            try:
                rec = json.loads(p.read_text())
                rec["_path"] = str(p.with_suffix(".engine"))
                out.append(rec)
            except (OSError, ValueError):
                continue
        return out

    def lookup(self, stem: str, key: EngineKey) -> Path | None:
        """The engine for ``key`` if a valid one is cached, else None.

        Valid = record present and equal to ``key``, engine file present with the
        recorded size and sha256. An invalid entry is left in place (it may belong to
        another machine sharing the directory) and simply not used.
        """
        engine, meta = self.paths(stem, key)
        try:
            rec = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("key") != dataclasses.asdict(key):
            return None
        try:
            if engine.stat().st_size != rec.get("engine_bytes"):
                return None
        except OSError:
            return None
        if file_sha256(engine) != rec.get("engine_sha256"):
            return None
        return engine

    def store(self, stem: str, key: EngineKey, engine_bytes: bytes, build_seconds: float = 0.0) -> Path:
        """Write an engine atomically (engine first, then its record)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        engine, meta = self.paths(stem, key)
        atomic_write(engine, bytes(engine_bytes))
        rec = {
            "key": dataclasses.asdict(key),
            "engine_bytes": len(engine_bytes),
            "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
            "build_seconds": round(float(build_seconds), 3),
        }
        atomic_write(meta, json.dumps(rec, indent=1, sort_keys=True).encode())
        return engine

    def check_usable(self, stem: str, key: EngineKey, allow_build: bool) -> Path | None:
        """The valid engine for ``key``, or None when one may be built.

        Raises :class:`EngineCacheError` when no valid engine exists, building is not
        allowed, and the cache holds engines for this ONNX built elsewhere (another GPU
        or TensorRT version): the message names the difference.
        """
        hit = self.lookup(stem, key)
        if hit is not None or allow_build:
            return hit
        same_onnx = [r for r in self.records(stem) if r.get("key", {}).get("onnx_sha256") == key.onnx_sha256]
        if not same_onnx:
            raise EngineCacheError(f"no TensorRT engine for {stem} in {self.dir} and engine building is disabled")
        reasons = []
        for r in same_onnx:
            try:
                other = EngineKey(**r["key"])
            except TypeError:
                reasons.append("unreadable engine record")
                continue
            reasons.append("; ".join(key.mismatch(other)) or "engine file corrupt (hash mismatch)")
        raise EngineCacheError(
            f"cached TensorRT engine for {stem} was built for another target ({' | '.join(reasons)}) "
            "and engine building is disabled"
        )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; bundles are shared read-only files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def get_or_build(cache: EngineCache, stem: str, key: EngineKey, build: Callable[[], bytes],
                 allow_build: bool = True) -> tuple[Path, bool]:
    """(engine path, built now?): the cached engine for ``key``, else ``build()`` stored.

    A valid cached engine is always used as is: ``build`` is not called.
    """
    hit = cache.check_usable(stem, key, allow_build)
    if hit is not None:
        return hit, False
    t0 = time.monotonic()
    blob = build()
    return cache.store(stem, key, blob, time.monotonic() - t0), True
