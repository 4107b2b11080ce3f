"""Inference latency of every sampler on every available backend, side by side in one run.

For one bundle, each sampler (by default every sampler kind of the registered methods,
``l1flow_ros.policy.methods``, at its default steps: L1 Flow 2-step, IMLE 1-step,
OFP 1-step, FM 10-step, DDIM 10, DDPM 100) is a *variant* of the bundle (same encoder and U-Net; weights copied
where shapes match, see :mod:`l1flow_ros.inference.synthetic`): latency depends on the
architecture and the number of network evaluations, not on what the weights learnt.
Each variant is exported to ONNX (parity-checked like ``l1flow export``) and run on each
backend. Measurements are interleaved in rounds (every configuration gets a slice of
each round) so that drifts of a shared machine hit all configurations alike, and
results are reported as p50 / p99 plus ratios to FM 10-step and DDPM 100 on the same
backend.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.inference.backends import open_encoder, open_policy, parse_sampler, sampler_tag
from l1flow_ros.policy import methods

DEFAULT_SAMPLERS = methods.default_samplers()  # "l1flow:2", "imle:1", ..., "ddpm:100"


@dataclass(frozen=True)
class BackendConfig:
    """One way of running a graph: a backend and its options, with a display label."""

    label: str
    backend: str
    opts: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return dict(self.opts)


def available_backends(threads: int = 0) -> list[BackendConfig]:
    """torch CPU and onnxruntime CPU always; CUDA / TensorRT ones when this machine has them."""
    out = [BackendConfig("torch-cpu", "torch", (("device", "cpu"), ("threads", threads))),
           BackendConfig("onnxruntime-cpu", "onnxruntime",
                         (("providers", ("CPUExecutionProvider",)), ("threads", threads)))]
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    if cuda:
        out.append(BackendConfig("torch-cuda", "torch", (("device", "cuda"),)))
    if "CUDAExecutionProvider" in providers:
        out.append(BackendConfig("onnxruntime-cuda", "onnxruntime",
                                 (("providers", ("CUDAExecutionProvider", "CPUExecutionProvider")),)))
    if "TensorrtExecutionProvider" in providers:
        out.append(BackendConfig("onnxruntime-trt", "onnxruntime", (("providers", (
            "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")),)))
    try:
        import tensorrt  # noqa: F401

        from l1flow_ros.inference.trt_backend import device_identity

        device_identity()
        out.append(BackendConfig("tensorrt", "tensorrt", (("fp16", False),)))
        out.append(BackendConfig("tensorrt-fp16", "tensorrt", (("fp16", True),)))
    except Exception:
        pass
    return out


@dataclass
class Row:
    sampler: str  # tag, e.g. "fm10"
    backend: str  # BackendConfig label
    trained: bool  # the bundle's own weights (same prediction) or a partly untrained variant
    samples_ms: list[float] = dataclasses.field(default_factory=list)
    error: str = ""
    label: str = ""  # display name, e.g. "FM 10-step" (the tag when empty)

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples_ms, 50)) if self.samples_ms else float("nan")

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples_ms, 99)) if self.samples_ms else float("nan")


def prepare_variants(bundle: str | Path, samplers: tuple[str, ...], workdir: Path,
                     export: bool = True) -> dict[str, tuple[Path, bool, str]]:
    """tag -> (variant bundle dir, trained?, display name) for each sampler, exported to ONNX."""
    from l1flow_ros.inference.export import export_bundle
    from l1flow_ros.inference.synthetic import variant_bundle
    from l1flow_ros.policy.manifest import read_manifest

    base = read_manifest(bundle).sampler
    out = {}
    for text in samplers:
        spec = parse_sampler(text, base)
        spec = dataclasses.replace(spec, warm_start=False)  # cold start: the fair comparison
        d = workdir / sampler_tag(spec)
        trained = variant_bundle(bundle, d, spec)
        if export:
            export_bundle(d, encoder=False)
        out[sampler_tag(spec)] = (d, trained, methods.label(spec))
    return out


def bench_inference(bundle: str | Path, workdir: str | Path, samplers: tuple[str, ...] = DEFAULT_SAMPLERS,
                    backends: list[BackendConfig] | None = None, iters: int = 200, warmup: int = 10,
                    rounds: int = 5, encoder: bool = True, log=print) -> list[Row]:
    """Latency rows for every (sampler, backend), measured interleaved in ``rounds``."""
    workdir = Path(workdir)
    backends = backends if backends is not None else available_backends()
    need_onnx = any(b.backend != "torch" for b in backends)
    log(f"preparing {len(samplers)} sampler variants in {workdir} ...")
    variants = prepare_variants(bundle, samplers, workdir, export=need_onnx)
    rng = np.random.default_rng(0)
    runs: list[tuple[Row, Any]] = []
    for tag, (d, trained, label) in variants.items():
        for b in backends:
            row = Row(tag, b.label, trained, label=label)
            try:
                pol = open_policy(d, b.backend, **b.kwargs())
                cond = rng.standard_normal((1, pol.cond_dim), dtype=np.float32)
                from l1flow_ros.inference.backends import noise_shape

                noise = rng.standard_normal(noise_shape(pol.sampler, pol.horizon, pol.action_dim), dtype=np.float32)
                pol.warmup(warmup)
                runs.append((row, (lambda p=pol, c=cond, n=noise: p.run(c, n))))
            except Exception as e:  # a backend that cannot run this graph is reported, not fatal
                row.error = str(e).splitlines()[0][:200]
                runs.append((row, None))
    if encoder:
        for b in backends:
            row = Row("encoder", b.label, True)
            try:
                if b.backend != "torch":
                    from l1flow_ros.inference.export import export_bundle

                    first = next(iter(variants.values()))[0]
                    if not (first / "encoder.onnx").is_file():
                        export_bundle(first)
                enc = open_encoder(next(iter(variants.values()))[0], b.backend, **b.kwargs())
                obs = {k: rng.random(s, dtype=np.float32) for k, s in enc.input_shapes.items()}
                enc.warmup(warmup)
                runs.append((row, (lambda e=enc, o=obs: e.run(o))))
            except Exception as e:
                row.error = str(e).splitlines()[0][:200]
                runs.append((row, None))
    return measure_interleaved(runs, iters, rounds, log)


def measure_interleaved(runs: list[tuple[Row, Any]], iters: int, rounds: int, log=print) -> list[Row]:
    """Time every ``(row, fn)`` (``fn`` None: skipped) ``iters`` times, interleaved in ``rounds``
    so that every function sees the same machine state; milliseconds go to ``row.samples_ms``."""
    per_round = max(1, iters // rounds)
    for r in range(rounds):
        log(f"round {r + 1}/{rounds}")
        for row, fn in runs:
            if fn is None:
                continue
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                row.samples_ms.append(1e3 * (time.perf_counter() - t0))
    return [row for row, _ in runs]


def ratios(rows: list[Row], ref: str) -> dict[tuple[str, str], float]:
    """(sampler, backend) -> p50 / p50 of ``ref`` on the same backend."""
    base = {r.backend: r.p50 for r in rows if r.sampler == ref and r.samples_ms}
    return {(r.sampler, r.backend): r.p50 / base[r.backend] for r in rows
            if r.samples_ms and r.sampler != "encoder" and r.backend in base and base[r.backend] > 0}


def format_table(rows: list[Row]) -> str:
    """A markdown table: p50 / p99 and the ratio of p50 to FM 10-step and DDPM 100 per backend."""
    to_fm, to_ddpm = ratios(rows, "fm10"), ratios(rows, "ddpm100")
    lines = ["| sampler | backend | weights | p50 ms | p99 ms | p50 / FM 10 | p50 / DDPM 100 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        name = r.label or r.sampler
        w = "bundle" if r.trained else "untrained variant"
        if r.sampler == "encoder":
            name, w = "encoder (obs -> embedding)", "bundle"
        if r.error:
            lines.append(f"| {name} | {r.backend} | {w} | n/a | n/a | | | ({r.error})")
            continue
        f = to_fm.get((r.sampler, r.backend))
        d = to_ddpm.get((r.sampler, r.backend))
        lines.append(f"| {name} | {r.backend} | {w} | {r.p50:.3f} | {r.p99:.3f} | "
                     f"{'' if f is None else f'{f:.3f}'} | {'' if d is None else f'{d:.4f}'} |")
    return "\n".join(lines)
