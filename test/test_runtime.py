"""Runtime core (no ROS): export parity, backends, runner, warm start, engine cache, hot-swap logic."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import exported_tiny_bundle

from l1flow_ros.inference.backends import (
    BackendError,
    noise_shape,
    open_encoder,
    open_policy,
    parse_sampler,
    resolve_providers,
)
from l1flow_ros.inference.checkpoint import CheckpointRejected, validate_checkpoint
from l1flow_ros.inference.engine_cache import (
    DeviceIdentity,
    EngineCache,
    EngineCacheError,
    EngineKey,
    get_or_build,
)
from l1flow_ros.inference.export import export_bundle
from l1flow_ros.inference.hotswap import HeadSwitcher
from l1flow_ros.inference.latency import LatencyWindow, Latest
from l1flow_ros.inference.runner import PolicyRunner, Tail, resample_tail
from l1flow_ros.inference.synthetic import TINY_ACTION, TINY_OBS, make_bundle
from l1flow_ros.spec import SamplerSpec

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.core]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny exported L1 Flow bundle with warm start (encoder, policy, warm policy)."""
    return exported_tiny_bundle(tmp_path_factory.mktemp("rt") / "b", seed=1)


def _obs(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    h, w = TINY_OBS.image_size
    return {
        "rgb": rng.random((batch, 1, 1, 3, h, w), dtype=np.float32),
        "proprio": rng.standard_normal((batch, 1, 4), dtype=np.float32),
    }


# ---------------------------------------------------------------------------- export


def test_export_records_files_and_refreshes_fingerprint(bundle):
    from l1flow_ros.policy.bundle import read_manifest

    m = read_manifest(bundle)  # validates the new fingerprint over all files
    assert {"encoder.onnx", "policy.onnx", "policy.warm.onnx"} <= set(m.files)
    raw = json.loads((bundle / "manifest.json").read_text())
    assert raw["fingerprint"] == m.fingerprint


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_torch_same_noise(bundle, batch):
    """fp32 parity of the exported graphs with torch, batch axis dynamic: max abs error <= 1e-4."""
    rng = np.random.default_rng(batch)
    obs = _obs(rng, batch)
    enc_t, enc_o = open_encoder(bundle, "torch"), open_encoder(bundle, "onnxruntime", threads=1)
    e_t, e_o = enc_t.run(obs), enc_o.run(obs)
    assert e_t.shape == (batch, enc_t.out_dim)
    assert np.max(np.abs(e_t - e_o)) <= 1e-4

    noise = rng.standard_normal((batch, TINY_ACTION.horizon, TINY_ACTION.dim), dtype=np.float32)
    warm = rng.uniform(-1, 1, noise.shape).astype(np.float32)
    for w in (False, True):
        pt, po = open_policy(bundle, "torch", warm=w), open_policy(bundle, "onnxruntime", warm=w, threads=1)
        args = (e_t, noise, warm) if w else (e_t, noise)
        a_t, a_o = pt.run(*args), po.run(*args)
        assert a_t.shape == noise.shape
        assert np.max(np.abs(a_t - a_o)) <= 1e-4
    # Different noise gives a different chunk: the noise really is an input of the graph.
    other = open_policy(bundle, "onnxruntime", threads=1).run(e_t, noise + 1.0)
    assert np.max(np.abs(other - a_o)) > 1e-3


def test_export_comparison_sampler_and_rejects_incompatible(tmp_path):
    d = tmp_path / "b"
    make_bundle(d, sampler=SamplerSpec(kind="imle", steps=1))
    from l1flow_ros.inference.export import ExportError

    with pytest.raises(ExportError, match="cannot be sampled"):
        export_bundle(d, samplers=["ddim:10"], encoder=False)
    rep = export_bundle(d, samplers=["l1flow:3"], encoder=False)
    assert "policy.l1flow3.onnx" in rep.files and rep.files["policy.l1flow3.onnx"] <= 1e-4
    p = open_policy(d, "onnxruntime", sampler="l1flow:3", threads=1)
    assert p.sampler.kind == "l1flow" and p.sampler.steps == 3


def test_ddpm_noise_has_one_slice_per_step():
    assert noise_shape(SamplerSpec(kind="ddpm", steps=100), 8, 4, 2) == (2, 100, 8, 4)
    assert noise_shape(SamplerSpec(kind="fm", steps=10), 8, 4, 2) == (2, 8, 4)
    assert parse_sampler("ddim:10").steps == 10 and parse_sampler("ofp").steps == 1
    with pytest.raises(ValueError):
        parse_sampler("euler:3")


def test_fp16_conversion_keeps_io_float32_and_stays_close(bundle):
    import onnx
    import onnxruntime as ort

    from l1flow_ros.inference.onnx_fp16 import convert_float_to_float16

    m32 = onnx.load(str(bundle / "policy.onnx"))
    m16 = convert_float_to_float16(m32)
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in m16.graph.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in m16.graph.output)
    assert all(t.data_type != onnx.TensorProto.FLOAT for t in m16.graph.initializer)
    rng = np.random.default_rng(0)
    feed = {"cond": rng.standard_normal((1, 32), dtype=np.float32),
            "noise": rng.standard_normal((1, 8, 4), dtype=np.float32)}
    a = ort.InferenceSession(m32.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    b = ort.InferenceSession(m16.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert b.dtype == np.float32
    assert np.max(np.abs(a - b)) <= 2e-2 * max(1.0, np.max(np.abs(a)))


# ---------------------------------------------------------------------------- backends


def test_providers_in_order_only_available_cpu_last():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["TensorrtExecutionProvider"], avail) == ["CPUExecutionProvider"]
    assert resolve_providers(["CPUExecutionProvider", "CUDAExecutionProvider"], avail) == [
        "CPUExecutionProvider", "CUDAExecutionProvider"]
    with pytest.raises(BackendError, match="unknown"):
        resolve_providers(["FastestExecutionProvider"], avail)


def test_unknown_backend_and_missing_export(tmp_path):
    make_bundle(tmp_path / "raw")
    with pytest.raises(BackendError, match="unknown backend"):
        open_policy(tmp_path / "raw", "jax")
    with pytest.raises(BackendError, match="l1flow export"):
        open_policy(tmp_path / "raw", "onnxruntime", threads=1)


# ---------------------------------------------------------------------------- runner


def test_runner_torch_and_onnxruntime_same_chunk_for_same_seed(bundle):
    rng = np.random.default_rng(3)
    r_t = PolicyRunner.open(bundle, "torch", seed=7, with_encoder=True)
    r_o = PolicyRunner.open(bundle, "onnxruntime", threads=1, seed=7, with_encoder=True)
    obs = {k: v[0] for k, v in _obs(rng, 1).items()}
    e = r_t.encode(obs)
    assert np.max(np.abs(e - r_o.encode(obs))) <= 1e-4
    t_obs = 5_000_000_000
    c_t, c_o = r_t.act(e, t_obs), r_o.act(e, t_obs)
    assert c_t.actions.shape == (TINY_ACTION.horizon, TINY_ACTION.dim)
    assert np.max(np.abs(c_t.actions - c_o.actions)) <= 1e-4
    assert c_t.t_obs_ns == t_obs and c_t.fingerprint == r_t.fingerprint and c_t.names == TINY_ACTION.names
    # The generator advances: the next chunk uses fresh noise.
    assert np.max(np.abs(r_t.act(e, t_obs).actions - c_t.actions)) > 1e-4
    with pytest.raises(ValueError, match="expects"):
        r_t.act(np.zeros(5, np.float32), t_obs)


def test_runner_warm_start_uses_tail_resampled_to_chunk_times(bundle):
    r = PolicyRunner.open(bundle, "onnxruntime", threads=1, seed=0)
    assert r.supports_warm_start
    e = np.zeros(r.embed_dim, np.float32)
    t_obs = 10_000_000_000
    times = r.chunk_times_ns(t_obs)
    # A tail covering the chunk, in action units at its own times.
    tail_t = np.linspace(times[0] - 20_000_000, times[-1] + 20_000_000, 30).astype(np.int64)
    tail_a = np.stack([np.linspace(-0.4, 0.4, 30)] * TINY_ACTION.dim, axis=1)
    tail = Tail(tail_t, tail_a)
    cold = PolicyRunner.open(bundle, "onnxruntime", threads=1, seed=0).act(e, t_obs)
    warm = r.act(e, t_obs, tail)
    assert np.max(np.abs(warm.actions - cold.actions)) > 1e-4  # the tail changed the chunk
    # A tail that ended before the chunk starts says nothing: same as cold.
    old = Tail(tail_t - 10_000_000_000, tail_a)
    again = PolicyRunner.open(bundle, "onnxruntime", threads=1, seed=0).act(e, t_obs, old)
    assert np.max(np.abs(again.actions - cold.actions)) <= 1e-6


def test_resample_tail_linear_and_hold():
    t = np.array([0, 100, 200], np.int64)
    a = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    q = np.array([50, 150, 250, 400])
    w = resample_tail(Tail(t, a), q)
    np.testing.assert_allclose(w[:, 0], [0.5, 1.5, 2.0, 2.0])  # interpolate, then hold the last
    np.testing.assert_allclose(w[:, 1], [1.0, 0.5, 0.0, 0.0])
    assert resample_tail(Tail(t, a), np.array([300, 400])) is None
    with pytest.raises(ValueError):
        Tail(np.array([0, 0]), np.zeros((2, 2)))


# ---------------------------------------------------------------------------- TensorRT engine cache


def _key(onnx: Path, gpu: str = "NVIDIA H100", trt: str = "11.4.0", prec: str = "fp32") -> EngineKey:
    return EngineKey.for_onnx(onnx, DeviceIdentity(gpu, "9.0", trt), prec)


def test_engine_cache_keyed_by_gpu_trt_onnx_precision(tmp_path):
    onnx = tmp_path / "policy.onnx"
    onnx.write_bytes(b"graph-v1")
    cache = EngineCache(tmp_path / "engines")
    k = _key(onnx)
    calls = []

    def build() -> bytes:
        calls.append(1)
        return b"ENGINE" + bytes(len(calls))

    p1, built1 = get_or_build(cache, "policy", k, build)
    p2, built2 = get_or_build(cache, "policy", k, build)
    assert built1 and not built2 and p1 == p2 and len(calls) == 1  # never rebuilt when valid
    for other in (_key(onnx, gpu="NVIDIA A100"), _key(onnx, trt="10.9.0"), _key(onnx, prec="fp16")):
        assert other.digest() != k.digest()
        assert cache.lookup("policy", other) is None
    onnx.write_bytes(b"graph-v2")  # re-exported ONNX: new hash, old engine not used
    assert cache.lookup("policy", _key(onnx)) is None


def test_engine_cache_rejects_corrupt_and_foreign_engines(tmp_path):
    onnx = tmp_path / "policy.onnx"
    onnx.write_bytes(b"graph")
    cache = EngineCache(tmp_path / "engines")
    built_on = _key(onnx, gpu="NVIDIA A100")
    path = cache.store("policy", built_on, b"ENGINE-A100")
    here = _key(onnx, gpu="NVIDIA H100")
    with pytest.raises(EngineCacheError, match="A100"):
        cache.check_usable("policy", here, allow_build=False)
    assert cache.check_usable("policy", here, allow_build=True) is None  # may build its own
    path.write_bytes(b"ENGINE-A10X")  # same size, other bytes
    assert cache.lookup("policy", built_on) is None


# ---------------------------------------------------------------------------- checkpoint validation


def test_validate_checkpoint_rejects_each_bad_case(bundle, tmp_path):
    from l1flow_ros.policy.bundle import read_manifest

    running = read_manifest(bundle)
    assert validate_checkpoint(bundle, running, "onnxruntime").fingerprint == running.fingerprint

    def rejected(path, match, **kw):
        with pytest.raises(CheckpointRejected, match=match):
            validate_checkpoint(path, running, kw.pop("backend", "torch"), **kw)

    rejected(tmp_path / "nowhere", "does not exist")
    rejected("", "empty")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(bundle, corrupt)
    (corrupt / "manifest.json").write_text("{ not json")
    rejected(corrupt, "corrupt")
    trunc = tmp_path / "trunc"
    shutil.copytree(bundle, trunc)
    data = (trunc / "weights.safetensors").read_bytes()
    (trunc / "weights.safetensors").write_bytes(data[: len(data) // 2])
    rejected(trunc, "does not match")
    make_bundle(tmp_path / "nan", poison_nan=True)
    rejected(tmp_path / "nan", "non-finite")
    act = dataclasses.replace(TINY_ACTION, names=("j1", "j2", "j3"), gripper_indices=())
    make_bundle(tmp_path / "dims", action=act)
    rejected(tmp_path / "dims", "action names")
    make_bundle(tmp_path / "obs", obs=dataclasses.replace(TINY_OBS, image_size=(64, 64)))
    rejected(tmp_path / "obs", "observation spec")
    make_bundle(tmp_path / "unexported", seed=3)
    rejected(tmp_path / "unexported", "l1flow export", backend="onnxruntime")
    # TensorRT: the only cached engine was built on another GPU and building is off.
    a100 = DeviceIdentity("NVIDIA A100", "8.0", "11.4.0")
    h100 = DeviceIdentity("NVIDIA H100", "9.0", "11.4.0")
    eng = tmp_path / "engines"
    for name in ("policy.onnx", "policy.warm.onnx"):
        EngineCache(eng).store(Path(name).stem, EngineKey.for_onnx(bundle / name, a100), b"x")
    rejected(bundle, "another target", backend="tensorrt", device=h100, engine_cache_dir=eng, allow_build=False)
    validate_checkpoint(bundle, running, "tensorrt", device=a100, engine_cache_dir=eng, allow_build=False)


# ---------------------------------------------------------------------------- hot-swap state machine


class _Head:
    def __init__(self, fp: str) -> None:
        self.fingerprint = fp


def test_head_switcher_routes_by_fingerprint_and_promotes_once():
    a, b, c = _Head("A"), _Head("B"), _Head("C")
    sw = HeadSwitcher(a)
    assert sw.route("A") == (a, []) and sw.state == "steady"
    assert sw.stage(b) == [] and sw.state == "pending"
    assert sw.route("A")[0] is a  # old embeddings still decoded by the old head
    assert sw.route("X") == (None, []) and sw.unknown == 1
    head, retired = sw.route("B")
    assert head is b and retired == [a] and sw.state == "steady" and sw.promotions == 1
    assert sw.route("A") == (None, [])  # after the switch, old-encoder embeddings are dropped
    # A newer request supersedes an unpromoted one.
    sw.stage(c)
    assert sw.stage(_Head("D")) == [c]
    # Staging the active fingerprint cancels the pending swap (both extra heads are freed).
    pending, d2 = sw.pending, _Head("B")
    assert sw.stage(d2) == [pending, d2]
    assert sw.state == "steady" and sw.active is b


def test_latest_keeps_newest_and_latency_window():
    box = Latest()
    for i in range(5):
        box.put(i)
    assert box.take() == 4 and box.take() is None and box.dropped == 4
    w = LatencyWindow(4)
    assert np.isnan(w.summary()["p50"])
    for s in (0.001, 0.002, 0.003, 0.004, 0.100):
        w.add(s)
    s = w.summary()
    assert s["max"] == pytest.approx(100.0) and s["last"] == pytest.approx(100.0)
    assert 2.0 <= s["p50"] <= 4.0  # the oldest (1 ms) left the window
