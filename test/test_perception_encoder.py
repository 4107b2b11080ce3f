"""Each observation step encoded once: the encoder's two parts against the whole encoder.

``Embedder.embed_history`` keeps each step's features and encodes only the steps it has not
seen; what it gives is checked against re-encoding every step (``Embedder.embed`` on the
stacked model input), on torch and on the exported graphs, with the history picking older
steps the way the node's 30 Hz input makes it pick them. The bundled model (exported before
the encoder had two parts) keeps its embedding: its ``encoder.onnx`` is the reference.
"""

from pathlib import Path

import numpy as np
import pytest

from l1flow_ros.perception.embedder import ENCODER_HEAD_ONNX, ENCODER_STEP_ONNX, Embedder
from l1flow_ros.perception.preprocess import ObservationHistory
from l1flow_ros.spec import ObservationSpec

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = ROOT / "models" / "default"
MS = 1_000_000


def tiny_bundle(path: Path, n_obs_steps: int = 2, cameras=("front", "side"), num_points: int = 64,
                use_rgb: bool = True, proprio=("ee_x", "ee_y", "ee_z")) -> Path:
    import torch

    from l1flow_ros.perception.encoders import EncoderConfig
    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.normalizer import Normalizer
    from l1flow_ros.policy.unet import UnetConfig
    from l1flow_ros.spec import ActionSpec, SamplerSpec

    torch.manual_seed(0)
    obs = ObservationSpec(cameras=cameras, image_size=(24, 32), use_rgb=use_rgb, num_points=num_points,
                          workspace=(-1, 1, -1, 1, -1, 1), proprio_names=proprio, n_obs_steps=n_obs_steps)
    act = ActionSpec(names=("ee_x", "ee_y"), horizon=8, n_action_steps=4, dt=0.1)
    enc = EncoderConfig(image_channels=(8, 16), image_keypoints=8, image_feature_dim=16, point_hidden=(16, 32),
                        point_feature_dim=16, proprio_hidden=16, proprio_feature_dim=8, out_dim=32, groups=4)
    model = PolicyModel(obs, act, SamplerSpec(),
                        ModelConfig(encoder=enc, unet=UnetConfig(down_dims=(16, 32), groups=4, time_embed_dim=16)))
    p = len(proprio)
    save_bundle(path, model, make_manifest(model, Normalizer(-np.ones(2), np.ones(2), np.linspace(0.1, 0.3, p),
                                                             np.linspace(1.0, 2.0, p))))
    return path


def random_step(spec: ObservationSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One model step (no time axis), as step_to_model gives it."""
    out = {}
    if spec.use_rgb and spec.cameras:
        out["rgb"] = rng.random((len(spec.cameras), 3, *spec.image_size), dtype=np.float32)
    if spec.num_points:
        out["points"] = rng.uniform(-1, 1, (spec.num_points, 3)).astype(np.float32)
    if spec.proprio_names:
        out["proprio"] = rng.normal(size=len(spec.proprio_names)).astype(np.float32)
    return out


def run_sequence(cached: Embedder, full: Embedder, n: int, rng, period_ms: int = 33, atol: float = 1e-6):
    """Push n steps at 30 Hz (the history picks steps ~0.1 s apart, so an older slot holds a step
    several sets old), with one clock reset; each set's cached embedding against re-encoding it."""
    hist = ObservationHistory(cached.obs_spec.n_obs_steps, cached.period_s)
    stamp, worst = 0, 0.0
    for k in range(n):
        if k == n // 2:
            hist.clear()  # time went backwards: the node's history starts afresh
            stamp = 0
        stamp += period_ms * MS
        hist.push(stamp, random_step(cached.obs_spec, rng))
        a, b = cached.embed_history(hist), full.embed(hist.get())
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
        worst = max(worst, float(np.max(np.abs(a - b))))
    return worst


def test_history_step_ids_are_unique_and_follow_the_picked_steps():
    h = ObservationHistory(3, period_s=0.1)
    for k in range(6):
        h.push((k + 1) * 40 * MS, {"proprio": np.full(1, k, np.float32)})
    picked = h.picked()
    assert [float(s["proprio"][0]) for _, s in picked] == [0.0, 2.0, 5.0]  # 40, 120, 240 ms
    ids = [i for i, _ in picked]
    assert ids == sorted(ids) and len(set(ids)) == 3
    np.testing.assert_array_equal(h.get()["proprio"][:, 0], [0, 2, 5])
    h.clear()
    h.push(40 * MS, {"proprio": np.zeros(1, np.float32)})
    assert h.picked()[0][0] > max(ids)  # a step after a clear is never taken for one before it


def test_torch_each_step_encoded_once_and_same_embedding(tmp_path):
    b = tiny_bundle(tmp_path / "b")
    cached, full = Embedder(b, warmup=False), Embedder(b, warmup=False, cache_steps=False)
    assert cached.caches_steps and not full.caches_steps
    worst = run_sequence(cached, full, 16, np.random.default_rng(0))
    assert worst < 1e-6
    assert cached.steps_encoded == 16  # every step once, none twice


@pytest.mark.parametrize("spec", [dict(n_obs_steps=3), dict(use_rgb=False), dict(num_points=0, cameras=("a",)),
                                  dict(proprio=(), n_obs_steps=1)])
def test_torch_parts_for_other_observations(tmp_path, spec):
    b = tiny_bundle(tmp_path / "b", **spec)
    cached, full = Embedder(b, warmup=False), Embedder(b, warmup=False, cache_steps=False)
    run_sequence(cached, full, 8, np.random.default_rng(1))
    assert cached.steps_encoded == 8


def test_proprio_only_encoder_has_no_parts(tmp_path):
    b = tiny_bundle(tmp_path / "b", cameras=(), num_points=0, use_rgb=False)
    e = Embedder(b, warmup=False)
    assert not e.caches_steps
    hist = ObservationHistory(2, e.period_s)
    hist.push(MS, {"proprio": np.ones(3, np.float32)})
    np.testing.assert_array_equal(e.embed_history(hist), e.embed(hist.get()))


def test_exported_parts_on_onnxruntime_match_the_whole_graph_and_torch(tmp_path):
    from l1flow_ros.inference.export import export_bundle
    from l1flow_ros.policy.manifest import read_manifest

    b = tiny_bundle(tmp_path / "b")
    rep = export_bundle(b)
    assert {ENCODER_STEP_ONNX, ENCODER_HEAD_ONNX} <= set(rep.files) <= set(read_manifest(b).files)
    ort = Embedder(b, "onnxruntime", threads=1)
    ort_full = Embedder(b, "onnxruntime", threads=1, cache_steps=False)
    assert ort.caches_steps
    run_sequence(ort, ort_full, 10, np.random.default_rng(2), atol=1e-5)
    torch_full = Embedder(b, warmup=False, cache_steps=False)
    run_sequence(ort, torch_full, 6, np.random.default_rng(3), atol=1e-5)
    hist = ObservationHistory(2, 0.1)
    bad = random_step(ort.obs_spec, np.random.default_rng(4))
    bad["points"][0, 0] = np.nan
    hist.push(MS, bad)
    with pytest.raises(Exception, match="finite"):
        ort.embed_history(hist)


def test_bundled_model_embedding_unchanged():
    """models/default was exported before the encoder had two parts: on onnxruntime it runs its
    whole encoder.onnx as before; torch, which now encodes each step once, gives that graph's
    embedding."""
    ort = Embedder(DEFAULT_BUNDLE, "onnxruntime", threads=1, warmup=False)
    assert not ort.caches_steps  # no encoder.step.onnx in that bundle: the old path
    tor = Embedder(DEFAULT_BUNDLE, warmup=False)
    assert tor.caches_steps
    rng = np.random.default_rng(5)
    spec = tor.obs_spec
    hist = ObservationHistory(spec.n_obs_steps, tor.period_s)
    for k in range(8):
        step = random_step(spec, rng)
        lo, hi = np.asarray(spec.workspace[0::2]), np.asarray(spec.workspace[1::2])
        step["points"] = (lo + (hi - lo) * rng.random((spec.num_points, 3))).astype(np.float32)
        hist.push((k + 1) * 50 * MS, step)
        ref = ort.embed(hist.get())
        np.testing.assert_array_equal(ort.embed_history(hist), ref)
        np.testing.assert_allclose(tor.embed_history(hist), ref, rtol=1e-5, atol=1e-5)
