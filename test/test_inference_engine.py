"""The inference node's work without ROS: InferenceConfig and InferenceService (load, checks,
swaps by fingerprint, one embedding -> chunk with timing, drops counted by reason)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from l1flow_ros.inference.checkpoint import CheckpointRejected
from l1flow_ros.inference.config import InferenceConfig
from l1flow_ros.inference.runner import PolicyRunner, Tail
from l1flow_ros.inference.service import CHUNK_TAG, COUNTERS, TAIL_WAIT_S, Dropped, InferenceService
from l1flow_ros.inference.synthetic import TINY_ACTION, make_bundle
from l1flow_ros.policy.bundle import read_manifest

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.core]

CFG = InferenceConfig(threads=1, warmup_iterations=1)
EMB = np.linspace(-1, 1, 32).astype(np.float32)  # (D,), the tiny policy's embedding size
T_OBS = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine")
    make_bundle(root / "a", seed=1)
    make_bundle(root / "b", seed=2)
    make_bundle(root / "dims", seed=4, action=dataclasses.replace(TINY_ACTION, names=("j0", "j1", "j2"),
                                                                      gripper_indices=()))
    return {k: root / k for k in ("a", "b", "dims")}


def _fp(path: Path) -> str:
    return read_manifest(path).fingerprint


def test_config_names_defaults_live_split_and_validation():
    # The node's parameters as they were before the config moved here: name -> (default, live).
    want = {
        "checkpoint": ("", True), "backend": ("torch", False), "device": ("cpu", False),
        "providers": (("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), False),
        "threads": (0, False), "fp16": (False, False), "engine_cache_dir": ("", False),
        "allow_engine_build": (True, False), "cuda_graph": (True, False), "seed": (0, False),
        "warm_start": (True, True), "prefix_conditioning": (True, True), "n_action_steps": (-1, True),
        "inject_delay_ms": (0.0, True), "warmup_iterations": (5, False), "max_observation_age": (0.0, True),
        "diagnostics_period": (1.0, False), "log_chunks": (False, True), "autostart": (False, False),
    }
    got = {f.name: (f.default, f.metadata["live"]) for f in dataclasses.fields(InferenceConfig)}
    assert got == want
    InferenceConfig().validate()
    for bad, why in [({"backend": "tflite"}, "backend"), ({"threads": -1}, ">= 0"),
                     ({"warmup_iterations": -1}, ">= 0"), ({"max_observation_age": -0.1}, "max_observation_age"),
                     ({"diagnostics_period": 0.0}, "diagnostics_period"), ({"n_action_steps": -2}, "n_action_steps"),
                     ({"inject_delay_ms": -1.0}, "inject_delay_ms")]:
        with pytest.raises(ValueError, match=why):
            InferenceConfig(**bad).validate()
    opts = InferenceConfig(providers=("CPUExecutionProvider", ""), engine_cache_dir="").backend_opts()
    assert opts["providers"] == ["CPUExecutionProvider"] and opts["engine_cache_dir"] is None


def test_load_then_infer_is_the_runners_chunk_timed_and_counted(bundles):
    svc = InferenceService()
    assert svc.active is None and svc.tail_names(CFG) is None
    cfg = dataclasses.replace(CFG, seed=5)
    runner = svc.load(str(bundles["a"]), cfg)
    assert svc.active is runner and runner.fingerprint == _fp(bundles["a"])
    chunk = svc.infer(EMB, T_OBS, runner.fingerprint, cfg, now_ns=T_OBS)
    want = PolicyRunner.open(bundles["a"], "torch", seed=5, threads=1).act(EMB, T_OBS)
    np.testing.assert_allclose(chunk.actions, want.actions, atol=1e-5)
    assert chunk.t_obs_ns == T_OBS and chunk.fingerprint == runner.fingerprint
    assert svc.latency.count == 1 and svc.counts["chunks"] == 0  # counted once published
    svc.published(T_OBS, T_OBS + 3_000_000)
    assert svc.counts["chunks"] == 1 and svc.age.summary()["last"] == pytest.approx(3.0)
    vals = svc.values(cfg)
    assert vals["fingerprint"] == runner.fingerprint and vals["pending_fingerprint"] == "-"
    assert vals["checkpoint"] == str(bundles["a"]) and vals["sampler"] == "l1flow:2" and vals["warm_start"] == "True"
    assert float(vals["inference_ms_p50"]) > 0
    # A head retired (closed) while /diagnostics still holds it: its values, not an exception
    # (a swap's promotion closed the old head under the diagnostics timer and the node died).
    runner.close()
    assert runner.policy is None and svc.values(cfg)["sampler"] == "l1flow:2"
    svc.close()
    assert svc.active is None and runner.policy is None  # freed


def test_load_rejects_a_bad_bundle_and_keeps_nothing(tmp_path):
    make_bundle(tmp_path / "nan", poison_nan=True)
    svc = InferenceService()
    with pytest.raises(CheckpointRejected, match="non-finite"):
        svc.load(str(tmp_path / "nan"), CFG)
    make_bundle(tmp_path / "raw", seed=1)
    with pytest.raises(CheckpointRejected, match="l1flow export"):  # a graph backend, not exported
        svc.load(str(tmp_path / "raw"), dataclasses.replace(CFG, backend="onnxruntime"))
    assert svc.active is None


def test_each_drop_has_its_counter_and_severity(bundles):
    svc = InferenceService()
    fp = svc.load(str(bundles["a"]), CFG).fingerprint
    aged = dataclasses.replace(CFG, max_observation_age=0.5)
    cases = [
        (lambda: svc.infer(EMB, T_OBS, fp, aged, now_ns=T_OBS + 1_000_000_000), "stale_embedding", False),
        (lambda: svc.infer(EMB, T_OBS, "f" * 16, CFG, now_ns=T_OBS), "unknown_fingerprint", False),
        (lambda: svc.infer(EMB[:7], T_OBS, fp, CFG, now_ns=T_OBS), "invalid_embedding", True),
        # NaN in, NaN out: the runner refuses to return such a chunk.
        (lambda: svc.infer(np.full(32, np.nan, np.float32), T_OBS, fp, CFG, now_ns=T_OBS), "failed_inference", True),
    ]
    for call, counter, severe in cases:
        with pytest.raises(Dropped) as e:
            call()
        assert e.value.counter == counter and e.value.severe is severe and str(e.value)
    assert {k: v for k, v in svc.counts.items() if v} == {c: 1 for _, c, _ in cases}
    assert set(svc.counts) == set(COUNTERS) and svc.latency.count == 0
    # Young enough, and the age check off: both decoded.
    svc.infer(EMB, T_OBS, fp, aged, now_ns=T_OBS + 400_000_000)
    svc.infer(EMB, T_OBS, fp, CFG, now_ns=T_OBS + 10**12)
    assert svc.latency.count == 2
    svc.close()


def test_tail_is_the_prefix_or_the_warm_start_as_configured(bundles):
    svc = InferenceService()
    fp = svc.load(str(bundles["a"]), CFG).fingerprint
    assert svc.tail_names(CFG) == TINY_ACTION.names and svc.active.supports_prefix
    times = T_OBS + np.arange(30, dtype=np.int64) * 20_000_000
    svc.set_tail(Tail(times, np.full((30, TINY_ACTION.dim), 0.3)))
    every = dict(n_action_steps=0)  # a chunk for every embedding
    cold = dataclasses.replace(CFG, warm_start=False, prefix_conditioning=False, **every)
    warm = dataclasses.replace(CFG, prefix_conditioning=False, **every)
    off = svc.infer(EMB, T_OBS, fp, cold, now_ns=T_OBS).actions
    on = svc.infer(EMB, T_OBS, fp, warm, now_ns=T_OBS).actions
    ref = PolicyRunner.open(bundles["a"], "torch", seed=0, threads=1)
    np.testing.assert_allclose(off, ref.act(EMB, T_OBS).actions, atol=1e-5)  # cold
    np.testing.assert_allclose(on, ref.act(EMB, T_OBS, svc.tail).actions, atol=1e-5)  # warm
    # Prefix: an embedding 0.12 s old, chunk dt 0.05 s: d >= ceil(0.121 / 0.05) = 3 actions kept.
    svc.set_tail(svc.tail)  # fresh again (opening the reference may take longer than TAIL_FRESH_S on a busy machine)
    pre = svc.infer(EMB, T_OBS, fp, dataclasses.replace(CFG, **every), now_ns=T_OBS + 120_000_000)
    assert svc.delay_steps >= 3
    np.testing.assert_allclose(pre.actions[: svc.delay_steps], 0.3, atol=1e-6)
    assert not np.allclose(pre.actions[svc.delay_steps:], 0.3, atol=1e-3)
    np.testing.assert_allclose(pre.actions, ref.act(EMB, T_OBS, svc.tail, svc.delay_steps).actions, atol=1e-5)
    svc.close()


def test_a_chunk_every_n_action_steps_while_the_executor_runs_a_plan(bundles):
    svc = InferenceService()
    fp = svc.load(str(bundles["a"]), CFG).fingerprint
    dt_ns = int(TINY_ACTION.dt * 1e9)
    s = TINY_ACTION.n_action_steps
    step = dt_ns // 2  # embeddings twice per chunk step
    # No plan running (no tail): every embedding gives a chunk.
    assert all(svc.infer(EMB, T_OBS + k * step, fp, CFG, now_ns=T_OBS + k * step) is not None for k in range(3))
    svc.set_tail(Tail(T_OBS + np.arange(1, 40, dtype=np.int64) * dt_ns, np.zeros((39, TINY_ACTION.dim))))
    got = [svc.infer(EMB, T_OBS + k * step, fp, CFG, now_ns=T_OBS + k * step) is not None for k in range(3, 40)]
    made = [3 + i for i, g in enumerate(got) if g]
    assert made and all(b - a == 2 * s for a, b in zip(made, made[1:])), made  # every s chunk steps
    assert svc.skipped == len(got) - len(made)
    # n_action_steps beyond the horizon is refused when the bundle is loaded, with the reason.
    with pytest.raises(ValueError, match="n_action_steps"):
        svc.load(str(bundles["a"]), dataclasses.replace(CFG, n_action_steps=TINY_ACTION.horizon))
    svc.close()


def test_after_a_chunk_from_rest_the_next_waits_for_the_executors_tail(bundles):
    """With an executor that sends tails, a chunk drawn while no plan runs is not raced by
    another one from rest: embeddings within TAIL_WAIT_S are skipped; when the tail comes the
    cadence applies (the next chunk, s steps on, has the prefix); with no tail it draws again."""
    svc = InferenceService()
    fp = svc.load(str(bundles["a"]), CFG).fingerprint
    dt_ns = int(TINY_ACTION.dt * 1e9)
    s = TINY_ACTION.n_action_steps
    plan = Tail(T_OBS + np.arange(1, 40, dtype=np.int64) * dt_ns, np.full((39, TINY_ACTION.dim), 0.2))
    svc.set_tail(plan)
    svc.tail_t -= 10.0  # the executor stopped: its last tail is stale
    assert svc.infer(EMB, T_OBS, fp, CFG, now_ns=T_OBS) is not None  # from rest
    assert f"{CHUNK_TAG} t_obs_ns={T_OBS} " in svc.last_chunk and "delay_steps=-1" in svc.last_chunk
    skipped = svc.skipped
    assert svc.infer(EMB, T_OBS + dt_ns, fp, CFG, now_ns=T_OBS + dt_ns) is None  # waits for the tail
    assert svc.skipped == skipped + 1
    time.sleep(TAIL_WAIT_S + 0.05)  # no tail came (the executor did not take it): draw again
    assert svc.infer(EMB, T_OBS + 2 * dt_ns, fp, CFG, now_ns=T_OBS + 2 * dt_ns) is not None
    svc.set_tail(plan)  # the executor took it: the cadence from its observation, with the prefix
    t_next = T_OBS + (2 + s) * dt_ns
    assert svc.infer(EMB, T_OBS + 3 * dt_ns, fp, CFG, now_ns=T_OBS + 3 * dt_ns) is None
    assert svc.infer(EMB, t_next, fp, CFG, now_ns=t_next + dt_ns // 2) is not None
    assert svc.delay_steps is not None and svc.delay_steps >= 1 and "tail_age_s=-1" not in svc.last_chunk
    svc.clear_tail()  # the executor's plan stopped (an empty tail): no prefix from the old one at once
    assert not svc.plan_running()
    assert svc.infer(EMB, t_next + s * dt_ns, fp, CFG, now_ns=t_next + s * dt_ns) is not None
    assert svc.delay_steps is None and "delay_steps=-1" in svc.last_chunk
    # An executor that never sent a tail: every embedding still gives a chunk.
    fresh = InferenceService()
    fp = fresh.load(str(bundles["a"]), CFG).fingerprint
    assert all(fresh.infer(EMB, T_OBS + k * dt_ns, fp, CFG, now_ns=T_OBS + k * dt_ns) is not None for k in range(3))
    fresh.close()
    svc.close()


def test_swap_stages_pending_and_the_first_embedding_of_it_promotes(bundles):
    swapped = threading.Event()
    staged: list = []
    svc = InferenceService(on_swapped=lambda r: (staged.append(r), swapped.set()))
    fp_a, fp_b = _fp(bundles["a"]), _fp(bundles["b"])
    # Unconfigured: a bundle may be checked (it is loaded at configure), nothing to swap.
    assert not svc.needs_swap(svc.check(str(bundles["b"]), CFG))
    a = svc.load(str(bundles["a"]), CFG)
    assert not svc.needs_swap(svc.check(str(bundles["a"]), CFG))  # the running contents
    with pytest.raises(CheckpointRejected, match="action names"):
        svc.check(str(bundles["dims"]), CFG)
    manifest = svc.check(str(bundles["b"]), CFG)
    assert svc.needs_swap(manifest)
    svc.swap(str(bundles["b"]), CFG)
    assert swapped.wait(60.0), "the swap never finished"
    assert svc.pending is staged[0] and svc.pending.fingerprint == fp_b and svc.counts["swaps"] == 1
    assert svc.values(CFG)["pending_fingerprint"] == fp_b
    assert svc.needs_swap(svc.check(str(bundles["a"]), CFG))  # back to a cancels the pending b
    # Embeddings of the old encoder are still decoded by the old head, until one of the new arrives.
    assert svc.infer(EMB, T_OBS, fp_a, CFG, now_ns=T_OBS).fingerprint == fp_a
    assert svc.infer(EMB, T_OBS, fp_b, CFG, now_ns=T_OBS).fingerprint == fp_b
    assert svc.active is staged[0] and svc.pending is None and a.policy is None  # a retired and freed
    with pytest.raises(Dropped):
        svc.infer(EMB, T_OBS, fp_a, CFG, now_ns=T_OBS)
    svc.close()


def test_a_failed_swap_is_reported_and_an_overtaken_one_discarded(bundles, tmp_path):
    failed: list = []
    done = threading.Event()
    swapped: list = []
    svc = InferenceService(on_swapped=swapped.append,
                           on_swap_failed=lambda p, e: (failed.append((p, e)), done.set()))
    a = svc.load(str(bundles["a"]), CFG)
    svc.swap(str(tmp_path / "gone"), CFG)  # passed no check: opening it fails on the worker
    assert done.wait(60.0) and failed[0][0] == str(tmp_path / "gone")
    assert svc.active is a and svc.pending is None and svc.counts["swaps"] == 0
    # A swap that cleanup overtakes (here: held at its open until cleanup is done) frees what it opened.
    gate, opened, real_open = threading.Event(), [], svc._open

    def held_open(path, cfg):
        gate.wait(60.0)
        opened.append(real_open(path, cfg))
        return opened[-1]

    svc._open = held_open
    svc.swap(str(bundles["b"]), CFG)
    svc.release()
    gate.set()
    svc.close()  # joins the worker
    assert opened and opened[0].policy is None, "the overtaken swap's policy was not freed"
    assert svc.active is None and svc.pending is None and not swapped
