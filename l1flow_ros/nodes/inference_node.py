"""inference_node: embeddings in, timestamped action chunks out; checkpoint hot-swap.

A lifecycle node (the GPU engine is a heavy resource):

- ``configure``: validate the ``checkpoint`` bundle, open it on ``backend`` and warm it
  up; publish its path on ``/l1flow/checkpoint`` (reliable, transient local) so that
  perception loads the matching encoder;
- ``activate``: decode embeddings into chunks; ``deactivate``: stop; ``cleanup``: free.

Data path: ``/l1flow/embedding`` (Image 32FC1 1 x D, stamp = observation time,
frame_id = fingerprint) -> the head whose fingerprint matches -> ``/l1flow/action_chunk``
(JointTrajectory, stamp = observation time, frame_id = fingerprint). Only the newest
embedding is kept; inference runs in its own callback group, woken by a guard
condition, so a slow inference never delays the other callbacks. When the sampler
supports it, ``/l1flow/executor/tail`` (the executor's unexecuted plan) is the warm start.

Hot-swap (``ros2 param set /inference_node checkpoint <bundle>``): the set is validated
synchronously (missing path, corrupt manifest / weights / fingerprint, NaN weights,
other action names or observation spec, missing exports, TensorRT engine for another
GPU) and rejected with the reason, or accepted; the bundle is then opened and warmed up
on a worker thread, becomes the pending head, and its path is published on
``/l1flow/checkpoint``. The first embedding carrying the new fingerprint promotes it.
Embeddings of any other fingerprint are dropped (WARN on /diagnostics).

Parameters (read-only ones change only while unconfigured):
  checkpoint (str), backend (torch | onnxruntime | tensorrt), device (torch device),
  providers (onnxruntime providers, in order), threads, fp16, engine_cache_dir,
  allow_engine_build, cuda_graph, seed, warm_start, warmup_iterations,
  max_observation_age (s, 0 = off), diagnostics_period (s), autostart.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from l1flow_ros.graph import resolve_path
from l1flow_ros.inference.backends import BACKENDS, DEFAULT_PROVIDERS
from l1flow_ros.inference.checkpoint import CheckpointRejected, validate_checkpoint
from l1flow_ros.inference.hotswap import HeadSwitcher
from l1flow_ros.inference.latency import LatencyWindow, Latest
from l1flow_ros.inference.runner import PolicyRunner, Tail
from l1flow_ros.msgs.chunk_conv import (
    MessageError,
    chunk_to_msg,
    duration_to_ns,
    embedding_from_msg,
    stamp_to_ns,
)
from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import Diagnostics

NODE_NAME = "inference_node"
ERROR_HOLD_S = 1.0  # a problem stays on /diagnostics at least this long after it last happened

RELIABLE_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class InferenceConfig:
    checkpoint: str = ""
    backend: str = "torch"
    device: str = "cpu"
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    threads: int = 0
    fp16: bool = False
    engine_cache_dir: str = ""
    allow_engine_build: bool = True
    cuda_graph: bool = True
    seed: int = 0
    warm_start: bool = True
    warmup_iterations: int = 5
    max_observation_age: float = 0.0
    diagnostics_period: float = 1.0
    autostart: bool = False

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} not in {BACKENDS}")
        if self.threads < 0 or self.warmup_iterations < 0:
            raise ValueError("threads and warmup_iterations must be >= 0")
        if self.max_observation_age < 0:
            raise ValueError(f"max_observation_age must be >= 0 s (0 = off), got {self.max_observation_age}")
        if self.diagnostics_period <= 0:
            raise ValueError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")

    def backend_opts(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "providers": list(self.providers),
            "threads": self.threads,
            "fp16": self.fp16,
            "engine_cache_dir": self.engine_cache_dir or None,
            "allow_build": self.allow_engine_build,
            "cuda_graph": self.cuda_graph,
        }


# name -> (default, description, live). Non-live ones change only while unconfigured.
_PARAMS: dict[str, tuple[Any, str, bool]] = {
    "checkpoint": ("", "checkpoint bundle (a directory, or package://l1flow_ros/<rel>) directory; set while running to hot-swap", True),
    "backend": ("torch", "torch | onnxruntime | tensorrt", False),
    "device": ("cpu", "torch device (cpu, cuda, cuda:1)", False),
    "providers": (list(DEFAULT_PROVIDERS), "onnxruntime execution providers in order; unavailable ones skipped",
                  False),
    "threads": (0, "torch / onnxruntime intra-op threads (0 = library default)", False),
    "fp16": (False, "tensorrt / onnxruntime-TensorRT: fp16 engine", False),
    "engine_cache_dir": ("", "TensorRT engine cache (empty: <bundle>/engines)", False),
    "allow_engine_build": (True, "build a TensorRT engine when no valid cached one exists", False),
    "cuda_graph": (True, "tensorrt: replay each call as one CUDA graph", False),
    "seed": (0, "seed of the noise generator", False),
    "warm_start": (True, "use the executor's tail as warm start when the policy supports it", True),
    "warmup_iterations": (5, "runs of each graph before a checkpoint is used", False),
    "max_observation_age": (0.0, "drop embeddings older than this vs. the node clock, s (0 = off)", True),
    "diagnostics_period": (1.0, "period of /diagnostics, s", False),
    "autostart": (False, "configure and activate at start (standalone use without a lifecycle manager)", False),
}


def tail_from_msg(msg: JointTrajectory, names: tuple[str, ...]) -> Tail:
    """Executor tail -> :class:`Tail` in ``names`` order; raises MessageError with the reason."""
    if not msg.points:
        raise MessageError("tail has no points")
    got = tuple(msg.joint_names)
    if set(got) != set(names) or len(got) != len(names):
        raise MessageError(f"tail joints {list(got)} are not the policy's {list(names)}")
    order = [got.index(n) for n in names]
    t0 = stamp_to_ns(msg.header.stamp)
    times, rows = [], []
    for k, p in enumerate(msg.points):
        if len(p.positions) != len(got):
            raise MessageError(f"tail point {k} has {len(p.positions)} positions for {len(got)} joints")
        times.append(t0 + duration_to_ns(p.time_from_start))
        rows.append([p.positions[i] for i in order])
    try:
        return Tail(np.asarray(times, np.int64), np.asarray(rows, np.float64))
    except ValueError as e:
        raise MessageError(f"tail: {e}") from e


class InferenceNode(LifecycleNode):
    # Callbacks that may run at once: inference (_infer_group), I/O (_io_group: embeddings, tail,
    # diagnostics) and the default group (parameter and lifecycle services: a checkpoint swap is
    # accepted or rejected while a chunk is being computed). composition.executor_for reads it.
    callback_threads = 3

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, desc, live) in _PARAMS.items():
            extra = "" if live else " (read-only while configured)"
            self.declare_parameter(name, default, ParameterDescriptor(description=desc + extra))
        self.cfg = self._read_config()
        self.cfg.validate()

        self._switcher = HeadSwitcher()
        self._mailbox = Latest()
        self._tail: Tail | None = None
        self._latency = LatencyWindow(512)
        self._age = LatencyWindow(512)  # observation time -> chunk published
        self._lock = threading.Lock()
        self._configured = False
        self._active = False
        self._swap_gen = 0
        self._swap_thread: threading.Thread | None = None
        self._reverting = False
        self._counts = {"chunks": 0, "unknown_fingerprint": 0, "invalid_embedding": 0, "stale_embedding": 0,
                        "invalid_tail": 0, "failed_inference": 0, "swaps": 0}
        self._error: str | None = None  # last problem, shown on /diagnostics
        self._error_level = DiagnosticStatus.OK
        self._error_t = 0.0  # monotonic time of the last problem

        self._io_group = MutuallyExclusiveCallbackGroup()
        self._infer_group = MutuallyExclusiveCallbackGroup()
        self._diag = Diagnostics(self, NODE_NAME)
        # Latched: perception nodes started later still learn the bundle in use.
        self._pub_ckpt = self.create_publisher(String, "/l1flow/checkpoint", LATCHED_1)
        self._pub_chunk = None
        self._sub_emb = None
        self._sub_tail = None
        self._guard = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(self.cfg.diagnostics_period, self._publish_diag, callback_group=self._io_group)

    # ------------------------------------------------------------------ parameters

    def _read_config(self, overrides: dict[str, Any] | None = None) -> InferenceConfig:
        vals = {n: self.get_parameter(n).value for n in _PARAMS}
        vals.update(overrides or {})
        vals["providers"] = tuple(p for p in vals["providers"] if p)
        vals["checkpoint"] = resolve_path(vals["checkpoint"])
        return InferenceConfig(**vals)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        if self._reverting:
            return SetParametersResult(successful=True)
        changes = {p.name: p.value for p in params if p.name in _PARAMS}
        try:
            cfg = self._read_config(changes)
            cfg.validate()
        except (ValueError, TypeError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        if self._configured:
            frozen = [n for n in changes if not _PARAMS[n][2] and changes[n] != getattr(self.cfg, n, None)
                      and not (n == "providers" and tuple(changes[n]) == self.cfg.providers)]
            if frozen:
                return SetParametersResult(
                    successful=False, reason=f"{frozen} can only change while unconfigured (cleanup first)")
        if "checkpoint" in changes:
            active = self._switcher.active
            try:
                manifest = validate_checkpoint(
                    cfg.checkpoint, active.manifest if active is not None else None, cfg.backend,
                    warm_start=cfg.warm_start, fp16=cfg.fp16, engine_cache_dir=cfg.engine_cache_dir or None,
                    allow_build=cfg.allow_engine_build)
            except CheckpointRejected as e:
                self._set_error(f"checkpoint {cfg.checkpoint} rejected, old policy kept: {e}", DiagnosticStatus.WARN)
                return SetParametersResult(successful=False, reason=str(e))
            # The same contents (fingerprint) as the running head and nothing pending: nothing to do.
            unchanged = active is not None and manifest.fingerprint == active.fingerprint \
                and self._switcher.pending is None
            if self._configured and not unchanged:
                self._start_swap(cfg.checkpoint, cfg)
        self.cfg = cfg
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.cfg = self._read_config()
        try:
            self.cfg.validate()
            validate_checkpoint(self.cfg.checkpoint, None, self.cfg.backend, warm_start=self.cfg.warm_start,
                                fp16=self.cfg.fp16, engine_cache_dir=self.cfg.engine_cache_dir or None,
                                allow_build=self.cfg.allow_engine_build)
            runner = self._open_runner(self.cfg.checkpoint, self.cfg)
        except Exception as e:  # configure fails with the reason; the node stays unconfigured
            self._set_error(f"configure failed: {e}", DiagnosticStatus.ERROR)
            return TransitionCallbackReturn.FAILURE
        for old in self._switcher.set_active(runner):
            old.close()
        self._pub_chunk = self.create_lifecycle_publisher(JointTrajectory, "/l1flow/action_chunk", RELIABLE_1)
        self._guard = self.create_guard_condition(self._infer_once, callback_group=self._infer_group)
        self._sub_emb = self.create_subscription(Image, "/l1flow/embedding", self._on_embedding, RELIABLE_1,
                                                 callback_group=self._io_group)
        self._sub_tail = self.create_subscription(JointTrajectory, "/l1flow/executor/tail", self._on_tail,
                                                  RELIABLE_1, callback_group=self._io_group)
        self._configured = True
        self._clear_error()
        self._publish_checkpoint(runner.path)
        self.get_logger().info(
            f"loaded {runner.path} ({runner.fingerprint}, {runner.policy.sampler.kind} "
            f"{runner.policy.sampler.steps} steps, backend {self.cfg.backend}, "
            f"warm start {'on' if runner.supports_warm_start else 'off'})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # activates the chunk publisher first
        self._active = True
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._mailbox.take()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._active = False
        self._configured = False
        with self._lock:
            self._swap_gen += 1  # a swap in flight discards its result
        for sub in (self._sub_emb, self._sub_tail):
            if sub is not None:
                self.destroy_subscription(sub)
        if self._guard is not None:
            self.destroy_guard_condition(self._guard)
        if self._pub_chunk is not None:
            self.destroy_lifecycle_publisher(self._pub_chunk)
        self._sub_emb = self._sub_tail = self._guard = self._pub_chunk = None
        self._mailbox.take()
        self._tail = None
        for old in self._switcher.set_active(None):
            old.close()

    def close(self) -> None:
        """Free the policies and wait for a swap worker (idempotent)."""
        t = self._swap_thread
        self._release()
        if t is not None:
            t.join(timeout=10.0)

    # ------------------------------------------------------------------ checkpoints

    def _open_runner(self, path: str, cfg: InferenceConfig) -> PolicyRunner:
        runner = PolicyRunner.open(path, cfg.backend, seed=cfg.seed, warm_start=cfg.warm_start,
                                   **cfg.backend_opts())
        try:
            runner.warmup(cfg.warmup_iterations)
        except Exception:
            runner.close()
            raise
        return runner

    def _start_swap(self, path: str, cfg: InferenceConfig) -> None:
        with self._lock:
            self._swap_gen += 1
            gen = self._swap_gen
        t = threading.Thread(target=self._swap_worker, args=(path, cfg, gen), name="l1flow-swap", daemon=True)
        self._swap_thread = t
        t.start()

    def _swap_worker(self, path: str, cfg: InferenceConfig, gen: int) -> None:
        """Open + warm up the new bundle off the control path, then stage it."""
        t0 = time.monotonic()
        try:
            runner = self._open_runner(path, cfg)
        except Exception as e:
            with self._lock:
                current = gen == self._swap_gen
            if current:
                self._set_error(f"checkpoint {path} failed to load, old policy kept: {e}", DiagnosticStatus.ERROR)
                self._revert_checkpoint_param()
            return
        with self._lock:
            current = gen == self._swap_gen and self._configured
            if current:
                freed = self._switcher.stage(runner)
        if not current:
            runner.close()
            return
        for f in freed:
            f.close()
        self._counts["swaps"] += 1
        self._clear_error()
        self.get_logger().info(
            f"checkpoint {path} ({runner.fingerprint}) warmed up in {time.monotonic() - t0:.2f} s; "
            "switching when perception sends its embeddings")
        self._publish_checkpoint(runner.path)

    def _revert_checkpoint_param(self) -> None:
        active = self._switcher.pending or self._switcher.active
        if active is None:
            return
        self._reverting = True
        try:
            self.set_parameters([Parameter("checkpoint", value=active.path)])
            self.cfg = dataclasses.replace(self.cfg, checkpoint=active.path)
        finally:
            self._reverting = False

    def _publish_checkpoint(self, path: str) -> None:
        self._pub_ckpt.publish(String(data=str(Path(path).resolve())))

    # ------------------------------------------------------------------ data path

    def _on_embedding(self, msg: Image) -> None:
        if not self._active:
            return
        self._mailbox.put(msg)
        guard = self._guard
        if guard is not None:
            guard.trigger()

    def _on_tail(self, msg: JointTrajectory) -> None:
        head = self._switcher.active
        if head is None or not head.supports_warm_start or not self.cfg.warm_start:
            return
        try:
            self._tail = tail_from_msg(msg, head.names)
        except MessageError as e:
            self._counts["invalid_tail"] += 1
            self._set_error(f"executor tail ignored: {e}", DiagnosticStatus.WARN)

    def _infer_once(self) -> None:
        """Decode the newest embedding with the head of its fingerprint (inference group)."""
        msg = self._mailbox.take()
        if msg is None or not self._active:
            return
        try:
            emb, t_obs, fp = embedding_from_msg(msg)
        except MessageError as e:
            self._counts["invalid_embedding"] += 1
            self._set_error(f"embedding dropped: {e}", DiagnosticStatus.ERROR)
            return
        cfg = self.cfg
        if cfg.max_observation_age > 0:
            age = (self.get_clock().now().nanoseconds - t_obs) * 1e-9
            if age > cfg.max_observation_age:
                self._counts["stale_embedding"] += 1
                self._set_error(f"embedding {age:.3f} s old > max_observation_age", DiagnosticStatus.WARN)
                return
        head, retired = self._switcher.route(fp)
        for r in retired:
            self.get_logger().info(f"switched to {head.path} ({head.fingerprint})")
            r.close()
        if head is None:
            self._counts["unknown_fingerprint"] += 1
            self._set_error(f"embedding of unknown checkpoint {fp!r} dropped (active "
                            f"{self._fp(self._switcher.active)}, pending {self._fp(self._switcher.pending)})",
                            DiagnosticStatus.WARN)
            return
        if emb.shape[0] != head.embed_dim:
            self._counts["invalid_embedding"] += 1
            self._set_error(f"embedding has {emb.shape[0]} values, {head.fingerprint} expects {head.embed_dim}",
                            DiagnosticStatus.ERROR)
            return
        tail = self._tail if cfg.warm_start else None
        t0 = time.perf_counter()
        try:
            chunk = head.act(emb, t_obs, tail)
        except Exception as e:  # a failing backend never takes the node down; no chunk from it
            self._counts["failed_inference"] += 1
            self._set_error(f"inference failed, no chunk: {e}", DiagnosticStatus.ERROR)
            return
        self._latency.add(time.perf_counter() - t0)
        pub = self._pub_chunk
        if pub is None or not self._active:
            return
        pub.publish(chunk_to_msg(chunk))
        self._counts["chunks"] += 1
        if self._error is not None and time.monotonic() - self._error_t > ERROR_HOLD_S:
            # Chunks flow again: the last problem is over (it stays in the counters). Shown for
            # ERROR_HOLD_S at least, so that a diagnostics aggregator sees it.
            self._clear_error()
            self._publish_diag()
        self._age.add((self.get_clock().now().nanoseconds - t_obs) * 1e-9)

    # ------------------------------------------------------------------ diagnostics

    @staticmethod
    def _fp(head: Any) -> str:
        return head.fingerprint if head is not None else "-"

    def _set_error(self, text: str, level: bytes) -> None:
        new = text != self._error
        self._error, self._error_level = text, level
        self._error_t = time.monotonic()
        if new:  # logged once per distinct reason (a stream of bad input does not flood the log)
            # One call site per severity and throttling (rclpy requires it). Embedding problems come
            # per message and their texts carry ages and fingerprints: at most one a second.
            log = self.get_logger()
            error = level == DiagnosticStatus.ERROR
            if text.startswith("embedding"):
                if error:
                    log.error(text, throttle_duration_sec=1.0)
                else:
                    log.warning(text, throttle_duration_sec=1.0)
            elif error:
                log.error(text)
            else:
                log.warning(text)
            self._publish_diag()

    def _clear_error(self) -> None:
        self._error, self._error_level = None, DiagnosticStatus.OK

    def _publish_diag(self) -> None:
        active, pending = self._switcher.active, self._switcher.pending
        if self._error:
            level, message = self._error_level, self._error
        elif active is None:
            level, message = DiagnosticStatus.WARN, "unconfigured: no policy loaded"
        elif not self._active:
            level, message = DiagnosticStatus.OK, "inactive"
        else:
            level, message = DiagnosticStatus.OK, "publishing action chunks"
        lat, age = self._latency.summary(), self._age.summary()
        vals = {
            "backend": self.cfg.backend,
            "checkpoint": active.path if active else "",
            "fingerprint": self._fp(active),
            "pending_fingerprint": self._fp(pending),
            "sampler": f"{active.policy.sampler.kind}:{active.policy.sampler.steps}" if active else "",
            "warm_start": str(bool(active and active.supports_warm_start and self.cfg.warm_start)),
            "inference_ms_last": f"{lat['last']:.3f}",
            "inference_ms_p50": f"{lat['p50']:.3f}",
            "inference_ms_p99": f"{lat['p99']:.3f}",
            "inference_ms_max": f"{lat['max']:.3f}",
            "obs_to_chunk_ms_p50": f"{age['p50']:.3f}",
            "obs_to_chunk_ms_p99": f"{age['p99']:.3f}",
            "embeddings_overwritten": str(self._mailbox.dropped),
            **{k: str(v) for k, v in self._counts.items()},
        }
        self._diag.publish(level, message, vals)


def main(args: list[str] | None = None) -> None:
    spin_node(InferenceNode, args, close_first=True)


if __name__ == "__main__":
    main()
