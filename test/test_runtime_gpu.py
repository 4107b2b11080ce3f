"""GPU backends (CUDA / TensorRT): parity with torch, engine cache reuse. Skipped without a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import exported_tiny_bundle

from l1flow_ros.inference.backends import open_policy
from l1flow_ros.inference.synthetic import TINY_ACTION

pytestmark = [pytest.mark.gpu, pytest.mark.core]

needs_trt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                               reason="TensorRT not installed (pip install -r requirements/gpu.txt)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return exported_tiny_bundle(tmp_path_factory.mktemp("gpu") / "b", seed=4)


def _inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cond = rng.standard_normal((1, 32), dtype=np.float32)
    noise = rng.standard_normal((1, TINY_ACTION.horizon, TINY_ACTION.dim), dtype=np.float32)
    warm = rng.uniform(-1, 1, noise.shape).astype(np.float32)
    return cond, noise, warm


def test_torch_cuda_matches_cpu(bundle):
    cond, noise, _ = _inputs()
    cpu = open_policy(bundle, "torch").run(cond, noise)
    gpu = open_policy(bundle, "torch", device="cuda").run(cond, noise)
    assert np.max(np.abs(cpu - gpu)) <= 1e-3


def test_onnxruntime_cuda_provider_matches_torch(bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDA (install onnxruntime-gpu)")
    cond, noise, _ = _inputs()
    ref = open_policy(bundle, "torch").run(cond, noise)
    p = open_policy(bundle, "onnxruntime", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert p._graph.providers[0] == "CUDAExecutionProvider"
    assert np.max(np.abs(p.run(cond, noise) - ref)) <= 1e-3


@needs_trt
def test_tensorrt_fp32_parity_cuda_graph_and_cache_reuse(bundle, tmp_path):
    cond, noise, warm = _inputs(1)
    ref = open_policy(bundle, "torch").run(cond, noise)
    cache = tmp_path / "engines"
    p1 = open_policy(bundle, "tensorrt", engine_cache_dir=cache)
    assert p1._graph.built
    out = [p1.run(cond, noise) for _ in range(3)]  # first call captures the CUDA graph, then replays
    for o in out:
        assert np.max(np.abs(o - ref)) <= 1e-3
    assert p1._graph._graph_exec is not None or not p1._graph._use_graph
    mtime = p1._graph.engine_path.stat().st_mtime_ns
    p1.close()
    p2 = open_policy(bundle, "tensorrt", engine_cache_dir=cache)
    assert not p2._graph.built and p2._graph.engine_path.stat().st_mtime_ns == mtime  # never rebuilt
    assert np.max(np.abs(p2.run(cond, noise) - ref)) <= 1e-3
    # New inputs are seen by the replayed graph (buffers are re-filled each call).
    cond2, noise2, _ = _inputs(2)
    assert np.max(np.abs(p2.run(cond2, noise2) - open_policy(bundle, "torch").run(cond2, noise2))) <= 1e-3
    pw = open_policy(bundle, "tensorrt", warm=True, engine_cache_dir=cache)
    ref_w = open_policy(bundle, "torch", warm=True).run(cond, noise, warm)
    assert np.max(np.abs(pw.run(cond, noise, warm) - ref_w)) <= 1e-3


@needs_trt
def test_tensorrt_fp16_close_to_fp32(bundle, tmp_path):
    cond, noise, _ = _inputs(3)
    ref = open_policy(bundle, "torch").run(cond, noise)
    p = open_policy(bundle, "tensorrt", fp16=True, engine_cache_dir=tmp_path / "engines")
    assert np.max(np.abs(p.run(cond, noise) - ref)) <= 5e-2 * max(1.0, float(np.max(np.abs(ref))))


@needs_trt
def test_tensorrt_runner_and_validation_on_this_gpu(bundle, tmp_path):
    from l1flow_ros.inference.checkpoint import validate_checkpoint
    from l1flow_ros.inference.runner import PolicyRunner
    from l1flow_ros.inference.trt_backend import device_identity

    ident = device_identity()
    assert ident.gpu_name and ident.trt_version
    cache = tmp_path / "engines"
    r = PolicyRunner.open(bundle, "tensorrt", engine_cache_dir=cache, seed=0)
    r.warmup(3)
    validate_checkpoint(bundle, r.manifest, "tensorrt", engine_cache_dir=cache, allow_build=False)
    c_trt = r.act(np.zeros(32, np.float32), 1_000)
    c_ref = PolicyRunner.open(bundle, "torch", seed=0).act(np.zeros(32, np.float32), 1_000)
    assert np.max(np.abs(c_trt.actions - c_ref.actions)) <= 1e-3
