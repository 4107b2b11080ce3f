"""The inference node's work, without ROS: checkpoint bundles in, timestamped chunks out.

:class:`InferenceService` owns the policies one inference node has loaded (a
:class:`~l1flow_ros.inference.hotswap.HeadSwitcher` of
:class:`~l1flow_ros.inference.runner.PolicyRunner`) and everything about them that is not
ROS wiring:

- :meth:`~InferenceService.load` (configure): validate, open and warm up a bundle; it
  becomes the only head;
- :meth:`~InferenceService.check` (a ``checkpoint`` set): the cheap synchronous checks a
  new bundle must pass next to the running one (:func:`~l1flow_ros.inference.checkpoint.validate_checkpoint`),
  so that a bad one is refused with the reason; :meth:`~InferenceService.needs_swap` says
  whether it differs from what is loaded (by fingerprint);
- :meth:`~InferenceService.swap`: open and warm up on a worker thread, then stage it as the
  pending head; ``on_swapped(runner)`` or ``on_swap_failed(path, error)`` tells the caller
  (on the worker thread). A swap that a later swap or :meth:`~InferenceService.release`
  overtook discards its result;
- :meth:`~InferenceService.infer`: one embedding (D,) of an observation stamped ``t_obs_ns``
  with a fingerprint -> a :class:`~l1flow_ros.spec.Chunk`, routed to the head of that
  fingerprint (promoting a pending one), timed; an input that gives no chunk raises
  :class:`Dropped`, counted under its reason in :attr:`~InferenceService.counts`;
- the counters and latency windows that /diagnostics reports (:meth:`~InferenceService.values`).

Thread use (as the node runs it): ``infer`` on one thread, ``check`` / ``swap`` / ``load`` /
``release`` on others; the head switch is locked, a swap's generation is checked under
``_lock``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from l1flow_ros.control.realtime import lower_this_thread
from l1flow_ros.inference.checkpoint import validate_checkpoint
from l1flow_ros.inference.config import InferenceConfig
from l1flow_ros.inference.hotswap import HeadSwitcher
from l1flow_ros.inference.latency import LatencyWindow
from l1flow_ros.inference.runner import PolicyRunner, Tail
from l1flow_ros.policy.prefix import check_horizons, delay_steps
from l1flow_ros.spec import Chunk

# Inputs that gave no chunk, by reason (the /diagnostics counters, with "chunks" and "swaps").
COUNTERS = ("chunks", "unknown_fingerprint", "invalid_embedding", "stale_embedding", "invalid_tail",
            "failed_inference", "swaps")
# An embedding between two planning instants (n_action_steps) is skipped, not an error.
CADENCE_TOLERANCE = 0.25  # of a chunk step: an embedding this early still starts the next chunk
TAIL_FRESH_S = 0.5  # an executor tail older than this means the executor runs no plan
# After a chunk drawn while the executor ran no plan, the next embedding waits this long for
# the executor's tail (its plan, if it took the chunk) rather than racing it with a chunk drawn
# from rest: that one would replace the first with no prefix to agree with (a plain boundary
# at every start). Only with an executor that has sent a tail since the policy was loaded.
TAIL_WAIT_S = 0.15
CHUNK_TAG = "chunk drawn:"  # the start of a ``log_chunks`` line


class Dropped(Exception):
    """An input that gave no chunk; the text says why.

    ``counter``: the key of :attr:`InferenceService.counts` it was counted under; ``severe``:
    bad data or a failing backend (an error), rather than stale or foreign input (a warning).
    """

    def __init__(self, counter: str, reason: str, severe: bool) -> None:
        super().__init__(reason)
        self.counter = counter
        self.severe = severe


def fingerprint_of(head: Any) -> str:
    return head.fingerprint if head is not None else "-"


class InferenceService:
    """The loaded policies of one inference node, their swaps, and the numbers about them."""

    def __init__(self, *, on_swapped: Callable[[PolicyRunner], None] | None = None,
                 on_swap_failed: Callable[[str, Exception], None] | None = None,
                 log: Any = None, window: int = 512) -> None:
        self.switcher = HeadSwitcher()
        self.latency = LatencyWindow(window)  # head.act() time, s
        self.age = LatencyWindow(window)  # observation time -> chunk published, s
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.tail: Tail | None = None  # the executor's running plan (prefix / warm start)
        self.tail_t: float = -1e9  # monotonic time the tail arrived
        self.compute = LatencyWindow(32)  # recent inference + injected delay, s: the expected delay
        self.last_t_obs_ns: int | None = None  # observation of the last chunk computed
        self.skipped = 0  # embeddings skipped between planning instants
        self.delay_steps: int | None = None  # d the last chunk was drawn with (prefix conditioning)
        self.horizon_warning: str | None = None  # d <= s <= H - d violated by the last chunk's d
        self.last_chunk: str = ""  # how the last chunk was drawn, one line (the node's ``log_chunks``)
        self.tail_seen = False  # an executor tail came since the policy was loaded
        self._from_rest_t: float | None = None  # monotonic time the last chunk drawn with no plan was done
        self._on_swapped = on_swapped
        self._on_swap_failed = on_swap_failed
        self._log = log if log is not None else logging.getLogger(__name__)  # anything with .info(str)
        self._lock = threading.Lock()
        self._loaded = False
        self._gen = 0  # swap generation: a worker whose generation is not the newest discards its result
        self._swap_thread: threading.Thread | None = None

    @property
    def active(self) -> PolicyRunner | None:
        return self.switcher.active

    @property
    def pending(self) -> PolicyRunner | None:
        return self.switcher.pending

    # ------------------------------------------------------------------ checkpoints

    def check(self, path: str, cfg: InferenceConfig) -> Any:
        """The bundle's manifest if it may replace the running policy; raises
        :class:`~l1flow_ros.inference.checkpoint.CheckpointRejected` with the reason."""
        active = self.switcher.active
        return validate_checkpoint(path, active.manifest if active is not None else None, cfg.backend,
                                   **cfg.checkpoint_checks())

    def needs_swap(self, manifest: Any) -> bool:
        """Whether a checked bundle should be loaded: it is not the running head's contents
        (fingerprint) with nothing pending."""
        active = self.switcher.active
        unchanged = active is not None and manifest.fingerprint == active.fingerprint \
            and self.switcher.pending is None
        return self._loaded and not unchanged

    def _open(self, path: str, cfg: InferenceConfig) -> PolicyRunner:
        runner = PolicyRunner.open(path, cfg.backend, seed=cfg.seed, warm_start=cfg.warm_start,
                                   **cfg.backend_opts())
        try:
            s = self.execution_horizon(runner, cfg)
            if s > 0:
                check_horizons(runner.action_spec.horizon, s)
            runner.warmup(cfg.warmup_iterations)
        except Exception:
            runner.close()
            raise
        return runner

    def load(self, path: str, cfg: InferenceConfig) -> PolicyRunner:
        """Validate, open and warm up ``path``; it replaces every head. Raises with the reason
        (``CheckpointRejected`` or the backend's error) and then changes nothing."""
        validate_checkpoint(path, None, cfg.backend, **cfg.checkpoint_checks())
        runner = self._open(path, cfg)
        with self._lock:
            self._loaded = True
            freed = self.switcher.set_active(runner)
        for old in freed:
            old.close()
        return runner

    def swap(self, path: str, cfg: InferenceConfig) -> None:
        """Open and warm up ``path`` on a worker thread, then stage it as the pending head
        (promoted by the first embedding with its fingerprint)."""
        with self._lock:
            self._gen += 1
            gen = self._gen
        t = threading.Thread(target=self._swap_worker, args=(path, cfg, gen), name="l1flow-swap", daemon=True)
        self._swap_thread = t
        t.start()

    def _swap_worker(self, path: str, cfg: InferenceConfig, gen: int) -> None:
        # Opened and warmed up at a lower priority: on a machine with no core to spare, this
        # work took the running head's CPU (a 0.43 s chunk gap with every process on one core).
        # Only with one intra-op thread: a session's thread pool, started here, would inherit
        # the priority and slow the new head down for good.
        if cfg.threads == 1:
            lower_this_thread()
        t0 = time.monotonic()
        try:
            runner = self._open(path, cfg)
        except Exception as e:
            with self._lock:
                current = gen == self._gen
            if current and self._on_swap_failed is not None:
                self._on_swap_failed(path, e)
            return
        with self._lock:
            current = gen == self._gen and self._loaded
            freed = self.switcher.stage(runner) if current else [runner]
        for f in freed:
            f.close()
        if not current:
            return
        self.counts["swaps"] += 1
        self._log.info(f"checkpoint {path} ({runner.fingerprint}) warmed up in {time.monotonic() - t0:.2f} s; "
                       "switching when perception sends its embeddings")
        if self._on_swapped is not None:
            self._on_swapped(runner)

    def release(self) -> None:
        """Free every head (cleanup); a swap in flight discards its result."""
        with self._lock:
            self._gen += 1
            self._loaded = False
        self.tail, self.last_t_obs_ns = None, None
        self.tail_seen, self._from_rest_t = False, None
        for old in self.switcher.set_active(None):
            old.close()

    def close(self, timeout: float = 10.0) -> None:
        """:meth:`release`, then wait for a swap worker (idempotent)."""
        t = self._swap_thread
        self.release()
        if t is not None:
            t.join(timeout=timeout)

    # ------------------------------------------------------------------ data path

    def reject(self, counter: str, reason: str, severe: bool) -> Dropped:
        """Count an input under ``counter`` and return the :class:`Dropped` that says why."""
        self.counts[counter] += 1
        return Dropped(counter, reason, severe)

    def tail_names(self, cfg: InferenceConfig) -> tuple[str, ...] | None:
        """The action names (in order) an executor tail must carry, or None when the node has
        nothing loaded (the tail also tells whether the executor runs a plan)."""
        head = self.switcher.active
        return None if head is None else head.names

    def set_tail(self, tail: Tail) -> None:
        self.tail, self.tail_t, self.tail_seen = tail, time.monotonic(), True

    def clear_tail(self) -> None:
        """The executor runs no plan any more (it sent an empty tail): no prefix, no warm start
        from the last one, even within TAIL_FRESH_S."""
        self.tail, self.tail_seen = None, True

    def execution_horizon(self, head: PolicyRunner, cfg: InferenceConfig) -> int:
        """s: chunk steps between planning instants (0: every embedding)."""
        return head.action_spec.n_action_steps if cfg.n_action_steps < 0 else cfg.n_action_steps

    def plan_running(self) -> bool:
        """The executor streams a plan: its tail is fresh and not empty."""
        return self.tail is not None and time.monotonic() - self.tail_t < TAIL_FRESH_S

    def due(self, t_obs_ns: int, cfg: InferenceConfig) -> bool:
        """Whether the embedding of the observation stamped ``t_obs_ns`` starts a chunk: the
        first one at least s chunk steps (less a quarter step) after the last chunk's
        observation; every one while the executor runs no plan or with s = 0, except within
        TAIL_WAIT_S after a chunk drawn with no plan (the executor's tail says whether it took
        it). Skipped ones are counted."""
        head = self.switcher.active
        if head is None or self.last_t_obs_ns is None:
            return True
        if not self.plan_running():
            waiting = self.tail_seen and self._from_rest_t is not None \
                and time.monotonic() - self._from_rest_t < TAIL_WAIT_S
            self.skipped += int(waiting)
            return not waiting
        s = self.execution_horizon(head, cfg)
        period_ns = (s - CADENCE_TOLERANCE) * head.action_spec.dt * 1e9
        if s == 0 or t_obs_ns - self.last_t_obs_ns >= period_ns:
            return True
        self.skipped += 1
        return False

    def _prefix_delay(self, head: PolicyRunner, cfg: InferenceConfig, t_obs_ns: int, now_ns: int) -> int | None:
        """d for a chunk of this observation started now: the plan's steps executed by the time
        it arrives (its age now plus the recent compute time's 99th percentile and a millisecond
        on the wire); None when no prefix is imposed."""
        if not (cfg.prefix_conditioning and head.supports_prefix and self.plan_running()):
            return None
        expected = self.compute.summary()["p99"] * 1e-3 if self.compute.count else 0.0
        dt = head.action_spec.dt
        d = delay_steps((now_ns - t_obs_ns) * 1e-9 + expected + 1e-3, dt)
        s, h = self.execution_horizon(head, cfg), head.action_spec.horizon
        self.horizon_warning = None
        if s > 0:
            try:
                check_horizons(h, s, d)
            except ValueError as e:
                self.horizon_warning = str(e)
        return min(d, h)

    def infer(self, embedding: np.ndarray, t_obs_ns: int, fingerprint: str, cfg: InferenceConfig,
              now_ns: int) -> Chunk | None:
        """Embedding (D,) of the observation stamped ``t_obs_ns`` (``now_ns`` on the same clock)
        -> the chunk the head of ``fingerprint`` computes, or None between planning instants
        (:meth:`due`); raises :class:`Dropped`."""
        if cfg.max_observation_age > 0:
            age = (now_ns - t_obs_ns) * 1e-9
            if age > cfg.max_observation_age:
                raise self.reject("stale_embedding", f"embedding {age:.3f} s old > max_observation_age", False)
        head, retired = self.switcher.route(fingerprint)
        for r in retired:
            self._log.info(f"switched to {head.path} ({head.fingerprint})")
            r.close()
        if head is None:
            raise self.reject("unknown_fingerprint", (
                f"embedding of unknown checkpoint {fingerprint!r} dropped (active "
                f"{fingerprint_of(self.switcher.active)}, pending {fingerprint_of(self.switcher.pending)})"), False)
        if embedding.shape[0] != head.embed_dim:
            raise self.reject("invalid_embedding", (
                f"embedding has {embedding.shape[0]} values, {head.fingerprint} expects {head.embed_dim}"), True)
        if not self.due(t_obs_ns, cfg):
            return None
        on_plan = self.plan_running()
        d = self._prefix_delay(head, cfg, t_obs_ns, now_ns)
        tail = self.tail if (d is not None or cfg.warm_start) and on_plan else None
        t0 = time.perf_counter()
        try:
            chunk = head.act(embedding, t_obs_ns, tail, d)
        except Exception as e:  # a failing backend never takes the node down; no chunk from it
            raise self.reject("failed_inference", f"inference failed, no chunk: {e}", True) from e
        took = time.perf_counter() - t0
        self.latency.add(took)
        if cfg.inject_delay_ms > 0:  # on top of the inference, before the chunk goes out
            time.sleep(cfg.inject_delay_ms * 1e-3)
        self.compute.add(time.perf_counter() - t0)
        self._from_rest_t = None if on_plan else time.monotonic()
        self.delay_steps = d
        self.last_t_obs_ns = int(t_obs_ns)
        self.last_chunk = self._describe(t_obs_ns, now_ns, d, tail)
        return chunk

    def _describe(self, t_obs_ns: int, now_ns: int, d: int | None, tail: Tail | None) -> str:
        """The line ``log_chunks`` writes for a chunk: its observation, the d it was drawn with
        (-1: no prefix), the tail it saw (age, its last due time after t_obs; -1: none)."""
        tail_age = time.monotonic() - self.tail_t if tail is not None else -1.0
        tail_end = (int(tail.times_ns[-1]) - int(t_obs_ns)) * 1e-9 if tail is not None and tail.times_ns.size else -1.0
        return (f"{CHUNK_TAG} t_obs_ns={int(t_obs_ns)} age_at_start_s={(now_ns - t_obs_ns) * 1e-9:.4f} "
                f"delay_steps={-1 if d is None else d} tail_age_s={tail_age:.4f} tail_end_after_obs_s={tail_end:.4f}")

    def published(self, t_obs_ns: int, now_ns: int) -> None:
        """A chunk for the observation stamped ``t_obs_ns`` went out at ``now_ns``."""
        self.counts["chunks"] += 1
        self.age.add((now_ns - t_obs_ns) * 1e-9)

    # ------------------------------------------------------------------ diagnostics

    def values(self, cfg: InferenceConfig, embeddings_overwritten: int = 0, lifecycle_state: str = "") -> dict[str, str]:
        """Every /diagnostics key/value of the inference node: the loaded policy, its timing
        (ms), ``embeddings_overwritten`` (the node's mailbox: embeddings replaced by a newer one
        before inference took them), the counters and the node's ``lifecycle_state``. Keys: the
        inference_node table of :mod:`l1flow_ros.nodes.diagnostics`."""
        active, pending = self.switcher.active, self.switcher.pending
        lat, age = self.latency.summary(), self.age.summary()
        return {
            "backend": cfg.backend,
            "checkpoint": active.path if active else "",
            "fingerprint": fingerprint_of(active),
            "pending_fingerprint": fingerprint_of(pending),
            "sampler": f"{active.sampler.kind}:{active.sampler.steps}" if active else "",
            "warm_start": str(bool(active and active.supports_warm_start and cfg.warm_start)),
            "prefix_conditioning": str(bool(active and active.supports_prefix and cfg.prefix_conditioning)),
            "n_action_steps": str(self.execution_horizon(active, cfg)) if active else "",
            "delay_steps_last": "" if self.delay_steps is None else str(self.delay_steps),
            "inject_delay_ms": f"{cfg.inject_delay_ms:.1f}",
            "embeddings_skipped": str(self.skipped),
            "inference_ms_last": f"{lat['last']:.3f}",
            "inference_ms_p50": f"{lat['p50']:.3f}",
            "inference_ms_p99": f"{lat['p99']:.3f}",
            "inference_ms_max": f"{lat['max']:.3f}",
            "obs_to_chunk_ms_p50": f"{age['p50']:.3f}",
            "obs_to_chunk_ms_p99": f"{age['p99']:.3f}",
            "embeddings_overwritten": str(embeddings_overwritten),
            **{k: str(v) for k, v in self.counts.items()},
            "lifecycle_state": lifecycle_state,
        }
