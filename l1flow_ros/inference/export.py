"""Export a bundle's networks to ONNX: ``encoder.onnx`` and ``policy.onnx``.

- ``encoder.onnx``: the observation modalities (positional, in the encoder's
  ``input_names`` order) -> ``embedding`` (B, D).
- ``encoder.step.onnx`` and ``encoder.head.onnx``: the same encoder in two parts, one
  observation step's ``features`` (rgb, points) and the steps' features (+ proprio) ->
  ``embedding``, so perception encodes each step once (``perception.embedder``).
- ``policy.onnx``: ``cond`` (B, D), ``noise`` (B, H, A) (DDPM: (B, K, H, A)) -> ``actions``
  (B, H, A), normalised, with the whole sampler unrolled into one graph (the sampler
  loops run over Python constants, so tracing unrolls them).
- ``policy.warm.onnx``: the same with a third input ``warm`` (B, H, A), when the
  bundle's sampler supports a warm start.
- ``policy.prefix.onnx``: inputs ``cond``, ``noise``, ``prefix`` (B, H, A) and ``weights``
  (B, H): the running plan's prefix imposed (real-time chunking, ``policy.prefix``), for
  flow-time samplers and prefix-trained networks.
- ``policy.<tag>.onnx``: the same network drawn by another sampler, for comparisons
  (``--samplers fm:10 ddim:10 ...``); only samplers the network's prediction supports.

Normalisation stays outside the graphs (stats in the manifest). The batch axis is
dynamic. Every exported graph is checked against torch on the same inputs with
onnxruntime on CPU: max abs error <= ``atol`` (1e-4) or the export fails. The files are
then recorded in the manifest, whose fingerprint the bundle API recomputes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.inference.backends import (
    ENCODER_ONNX,
    ENCODER_OUTPUT,
    POLICY_INPUTS,
    POLICY_OUTPUT,
    PREFIX_INPUTS,
    PREFIX_ONNX,
    WARM_INPUT,
    noise_shape,
    parse_sampler,
    policy_onnx_name,
    sampler_tag,
)
from l1flow_ros.inference.engine_cache import atomic_write
from l1flow_ros.policy.prefix import rtc_weights
from l1flow_ros.spec import SamplerSpec

DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """An export that failed or does not match torch; the text says why."""


@dataclass
class ExportReport:
    files: dict[str, float] = field(default_factory=dict)  # file name -> max abs error vs torch
    fingerprint: str = ""

    def lines(self) -> list[str]:
        return [f"{name}: max |onnx - torch| = {err:.2e}" for name, err in self.files.items()]


def export_bundle(bundle_dir: str | Path, samplers: Sequence[SamplerSpec | str] = (), opset: int = DEFAULT_OPSET,
                  atol: float = 1e-4, encoder: bool = True) -> ExportReport:
    """Write the ONNX graphs into ``bundle_dir``, check parity, record them in the manifest."""
    import torch

    from l1flow_ros.policy.bundle import load_bundle

    bundle_dir = Path(bundle_dir)
    manifest, model = load_bundle(bundle_dir, device="cpu")
    model = model.eval()
    report = ExportReport()
    gen = torch.Generator().manual_seed(0)

    if encoder:
        names = tuple(model.encoder.input_names)
        shapes = model.encoder.input_shapes(2)
        args = tuple(_rand(shapes[n], gen, unit=(n == "rgb")) for n in names)
        report.files[ENCODER_ONNX] = _export_and_check(
            model.encoder_graph(), args, names, ENCODER_OUTPUT, bundle_dir / ENCODER_ONNX, opset, atol)
        report.files.update(_export_encoder_parts(model, bundle_dir, gen, opset, atol))

    cond_dim = model.encoder.out_dim
    h, a = manifest.action.horizon, manifest.action.dim
    specs: list[tuple[SamplerSpec | None, bool]] = [(None, False)]
    if manifest.sampler.warm_start:
        specs.append((None, True))
    seen = {sampler_tag(manifest.sampler)}
    for s in samplers:
        spec = parse_sampler(s, manifest.sampler) if isinstance(s, str) else s
        if sampler_tag(spec) in seen:
            continue
        seen.add(sampler_tag(spec))
        specs.append((spec, False))

    for spec, warm in specs:
        try:
            m = model if spec is None else model.with_sampler(spec)
        except ValueError as e:
            raise ExportError(f"sampler {sampler_tag(spec)}: {e}") from e
        sampler = spec or manifest.sampler
        cond = torch.randn(2, cond_dim, generator=gen)
        noise = torch.randn(*noise_shape(sampler, h, a, 2), generator=gen)
        args: tuple[torch.Tensor, ...] = (cond, noise)
        names = POLICY_INPUTS
        if warm:
            args = (*args, torch.rand(2, h, a, generator=gen) * 2 - 1)
            names = (*POLICY_INPUTS, WARM_INPUT)
        name = policy_onnx_name(spec, warm)
        report.files[name] = _export_and_check(m.policy_graph(), args, names, POLICY_OUTPUT, bundle_dir / name,
                                               opset, atol)

    if model.prefix_mode is not None:  # the running plan's prefix imposed (real-time chunking)
        cond = torch.randn(2, cond_dim, generator=gen)
        noise = torch.randn(2, h, a, generator=gen)
        prefix = torch.rand(2, h, a, generator=gen) * 2 - 1
        weights = torch.from_numpy(np.stack([rtc_weights(h, 1, h - 2), rtc_weights(h, 3, h // 2)]))
        report.files[PREFIX_ONNX] = _export_and_check(
            model.prefix_graph(), (cond, noise, prefix, weights), (*POLICY_INPUTS, *PREFIX_INPUTS), POLICY_OUTPUT,
            bundle_dir / PREFIX_ONNX, opset, atol)

    report.fingerprint = record_files(bundle_dir, list(report.files))
    return report


def _export_encoder_parts(model: Any, bundle_dir: Path, gen: Any, opset: int, atol: float) -> dict[str, float]:
    """``encoder.step.onnx`` (one step's features) and ``encoder.head.onnx`` (the steps' features
    + proprio -> embedding), for encoders with per-step modalities (perception.embedder)."""
    from l1flow_ros.perception.embedder import (
        ENCODER_HEAD_ONNX,
        ENCODER_STEP_ONNX,
        STEP_FEATURES,
    )

    enc = model.encoder
    step_names = tuple(enc.step_input_names)
    if not step_names:
        return {}
    shapes = enc.input_shapes(2)
    step_args = tuple(_rand(shapes[n][:1] + shapes[n][2:], gen, unit=(n == "rgb")) for n in step_names)
    out = {ENCODER_STEP_ONNX: _export_and_check(model.encoder_step_graph(), step_args, step_names, STEP_FEATURES,
                                                bundle_dir / ENCODER_STEP_ONNX, opset, atol)}
    head_names: tuple[str, ...] = (STEP_FEATURES, *(("proprio",) if enc.use_proprio else ()))
    head_args = (_rand((2, enc.obs_spec.n_obs_steps, enc.step_feature_dim), gen),
                 *((_rand(shapes["proprio"], gen),) if enc.use_proprio else ()))
    out[ENCODER_HEAD_ONNX] = _export_and_check(model.encoder_head_graph(), head_args, head_names, ENCODER_OUTPUT,
                                               bundle_dir / ENCODER_HEAD_ONNX, opset, atol)
    return out


def _rand(shape: Sequence[int], gen: Any, unit: bool = False):
    import torch

    return torch.rand(*shape, generator=gen) if unit else torch.randn(*shape, generator=gen)


def _export_and_check(module: Any, args: tuple, input_names: Sequence[str], output_name: str, path: Path,
                      opset: int, atol: float) -> float:
    """Trace ``module`` to ``path`` (batch axis dynamic); return max abs error vs torch."""
    import onnxruntime as ort
    import torch

    dyn = {n: {0: "batch"} for n in (*input_names, output_name)}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter: the loops are Python constants, tracing unrolls them.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, input_names=list(input_names),
                          output_names=[output_name], dynamic_axes=dyn, opset_version=opset,
                          do_constant_folding=True)
        expected = module(*args).numpy()
    data = buf.getvalue()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = {n: x.numpy() for n, x in zip(input_names, args)}
    got = sess.run([output_name], feed)[0]
    if got.shape != expected.shape:
        raise ExportError(f"{path.name}: onnx output shape {got.shape} != torch {expected.shape}")
    err = float(np.max(np.abs(got - expected)))
    if not np.isfinite(err) or err > atol:
        raise ExportError(f"{path.name}: onnxruntime differs from torch by {err:.3g} > {atol:g}")
    atomic_write(path, data)
    return err


def record_files(bundle_dir: Path, names: list[str]) -> str:
    """List exported files in the manifest; the bundle API recomputes the fingerprint."""
    from l1flow_ros.policy.manifest import add_files

    return add_files(bundle_dir, names)

