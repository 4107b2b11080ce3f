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
condition, so a slow inference never delays the other callbacks. A chunk is computed
every ``n_action_steps`` chunk steps (the first embedding that late; every embedding while
the executor runs no plan). ``/l1flow/executor/tail`` (the executor's running plan) is the
prefix the chunk keeps for the inference delay (real-time chunking), or its warm start.

Hot-swap (``ros2 param set /inference_node checkpoint <bundle>``): the set is validated
synchronously (missing path, corrupt manifest / weights / fingerprint, NaN weights,
other action names or observation spec, missing exports, TensorRT engine for another
GPU) and rejected with the reason, or accepted; the bundle is then opened and warmed up
on a worker thread, becomes the pending head, and its path is published on
``/l1flow/checkpoint``. The first embedding carrying the new fingerprint promotes it.
Embeddings of any other fingerprint are dropped (WARN on /diagnostics).

The work itself (loading, checks, swaps, inference, timing) is
:class:`l1flow_ros.inference.service.InferenceService`; this node wires it to topics,
timers and lifecycle transitions. Parameters: :class:`l1flow_ros.inference.config.InferenceConfig`
(``checkpoint``, ``warm_start`` and ``max_observation_age`` live; the others read-only,
fixed at start).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from l1flow_ros.config import with_changes
from l1flow_ros.graph import resolve_path
from l1flow_ros.inference.checkpoint import CheckpointRejected
from l1flow_ros.inference.config import InferenceConfig
from l1flow_ros.inference.latency import Latest
from l1flow_ros.inference.runner import PolicyRunner
from l1flow_ros.inference.service import Dropped, InferenceService
from l1flow_ros.msgs.chunk_conv import MessageError, chunk_to_msg, embedding_from_msg, tail_from_msg
from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import ERROR, ERROR_HOLD_S, OK, WARN, Diagnostics
from l1flow_ros.nodes.params import LiveParameters, declare
from l1flow_ros.nodes.qos import CHUNKS_OUT, LATCHED, RELIABLE_1

NODE_NAME = "inference_node"


class InferenceNode(LifecycleNode):
    # Callbacks that may run at once: inference (_infer_group), I/O (_io_group: embeddings, tail,
    # diagnostics) and the default group (parameter and lifecycle services: a checkpoint swap is
    # accepted or rejected while a chunk is being computed). composition.executor_for reads it.
    callback_threads = 3

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.cfg: InferenceConfig = declare(self, InferenceConfig)
        self.service = InferenceService(on_swapped=self._on_swapped, on_swap_failed=self._on_swap_failed,
                                        log=self.get_logger())
        self._mailbox = Latest()  # the newest embedding message, handed from I/O to inference
        self._active = False
        self._checked: Any = None  # manifest of the bundle a `checkpoint` set passed, until applied
        self._reverting = False  # the node puts `checkpoint` back itself after a failed swap
        self._error: str | None = None  # last problem, shown on /diagnostics
        self._error_level = OK
        self._error_t = 0.0  # monotonic time of the last problem

        self._io_group = MutuallyExclusiveCallbackGroup()
        self._infer_group = MutuallyExclusiveCallbackGroup()
        self._diag = Diagnostics(self, NODE_NAME)
        # Latched: perception nodes started later still learn the bundle in use.
        self._pub_ckpt = self.create_publisher(String, "/l1flow/checkpoint", LATCHED)
        self._pub_chunk = None
        self._sub_emb = None
        self._sub_tail = None
        self._guard = None
        # rclpy runs the last-added check first: the config's own (types, validate()), then the bundle's.
        self.add_on_set_parameters_callback(self._check_checkpoint)
        self._live = LiveParameters(self, self._on_config)
        self.create_timer(self.cfg.diagnostics_period, self._publish_diag, callback_group=self._io_group)

    # ------------------------------------------------------------------ parameters

    def _check_checkpoint(self, params: list[Parameter]) -> SetParametersResult:
        """A ``checkpoint`` set passes the bundle's checks against the running policy or is
        refused with the reason (the running policy untouched)."""
        self._checked = None
        if self._reverting or not any(p.name == "checkpoint" for p in params):
            return SetParametersResult(successful=True)
        try:
            cfg = with_changes(self.cfg, {p.name: p.value for p in params})
        except ValueError as e:
            return SetParametersResult(successful=False, reason=str(e))
        path = resolve_path(cfg.checkpoint)
        try:
            self._checked = self.service.check(path, cfg)
        except CheckpointRejected as e:
            self._set_error(f"checkpoint {path} rejected, old policy kept: {e}", WARN)
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _on_config(self, old: InferenceConfig, new: InferenceConfig) -> None:
        """An accepted set; a checked bundle other than the loaded one is swapped in (while
        configured). warm_start and max_observation_age are read at each inference."""
        manifest, self._checked = self._checked, None
        if manifest is not None and self.service.needs_swap(manifest):
            self.service.swap(resolve_path(new.checkpoint), new)

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            runner = self.service.load(resolve_path(self.cfg.checkpoint), self.cfg)
        except Exception as e:  # configure fails with the reason; the node stays unconfigured
            self._set_error(f"configure failed: {e}", ERROR)
            return TransitionCallbackReturn.FAILURE
        self._pub_chunk = self.create_lifecycle_publisher(JointTrajectory, "/l1flow/action_chunk", CHUNKS_OUT)
        self._guard = self.create_guard_condition(self._infer_once, callback_group=self._infer_group)
        self._sub_emb = self.create_subscription(Image, "/l1flow/embedding", self._on_embedding, RELIABLE_1,
                                                 callback_group=self._io_group)
        self._sub_tail = self.create_subscription(JointTrajectory, "/l1flow/executor/tail", self._on_tail,
                                                  RELIABLE_1, callback_group=self._io_group)
        self._clear_error()
        self._publish_checkpoint(runner.path)
        self.get_logger().info(
            f"loaded {runner.path} ({runner.fingerprint}, {runner.sampler.kind} "
            f"{runner.sampler.steps} steps, backend {self.cfg.backend}, "
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
        for sub in (self._sub_emb, self._sub_tail):
            if sub is not None:
                self.destroy_subscription(sub)
        if self._guard is not None:
            self.destroy_guard_condition(self._guard)
        if self._pub_chunk is not None:
            self.destroy_lifecycle_publisher(self._pub_chunk)
        self._sub_emb = self._sub_tail = self._guard = self._pub_chunk = None
        self._mailbox.take()
        self.service.release()  # frees the policies; a swap in flight discards its result

    def close(self) -> None:
        """Free the policies and wait for a swap worker (idempotent)."""
        self._release()
        self.service.close()

    # ------------------------------------------------------------------ checkpoint swaps (worker thread)

    def _on_swapped(self, runner: PolicyRunner) -> None:
        self._clear_error()
        self._publish_checkpoint(runner.path)

    def _on_swap_failed(self, path: str, error: Exception) -> None:
        self._set_error(f"checkpoint {path} failed to load, old policy kept: {error}", ERROR)
        head = self.service.pending or self.service.active
        if head is None:
            return
        self._reverting = True  # the bundle in use passed its checks already
        try:
            self.set_parameters([Parameter("checkpoint", value=head.path)])
        finally:
            self._reverting = False

    def _publish_checkpoint(self, path: str) -> None:
        self._pub_ckpt.publish(String(data=str(Path(path).resolve())))

    # ------------------------------------------------------------------ data path

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_embedding(self, msg: Image) -> None:
        if not self._active:
            return
        self._mailbox.put(msg)
        guard = self._guard
        if guard is not None:
            guard.trigger()

    def _on_tail(self, msg: JointTrajectory) -> None:
        names = self.service.tail_names(self.cfg)
        if names is None:
            return
        try:
            if msg.points:
                self.service.set_tail(tail_from_msg(msg, names))
            else:  # an empty tail: the executor's plan stopped, no prefix from the old one
                self.service.clear_tail()
        except MessageError as e:
            self._set_error(str(self.service.reject("invalid_tail", f"executor tail ignored: {e}", False)), WARN)

    def _infer_once(self) -> None:
        """Decode the newest embedding with the head of its fingerprint (inference group)."""
        msg = self._mailbox.take()
        if msg is None or not self._active:
            return
        try:
            try:
                emb, t_obs, fp = embedding_from_msg(msg)
            except MessageError as e:
                raise self.service.reject("invalid_embedding", f"embedding dropped: {e}", True) from e
            chunk = self.service.infer(emb, t_obs, fp, self.cfg, self._now_ns())
        except Dropped as d:
            self._set_error(str(d), ERROR if d.severe else WARN)
            return
        if chunk is None:  # between planning instants (n_action_steps)
            return
        if self.service.horizon_warning:
            self._set_error(f"real-time chunking: {self.service.horizon_warning}", WARN)
        pub = self._pub_chunk
        if pub is None or not self._active:
            return
        pub.publish(chunk_to_msg(chunk))
        self.service.published(t_obs, self._now_ns())
        if self.cfg.log_chunks:
            self.get_logger().info(self.service.last_chunk)
        if self._error is not None and time.monotonic() - self._error_t > ERROR_HOLD_S:
            # Chunks flow again: the last problem is over (it stays in the counters). Shown for
            # ERROR_HOLD_S at least, so that a diagnostics aggregator sees it.
            self._clear_error()
            self._publish_diag()

    # ------------------------------------------------------------------ diagnostics

    def _set_error(self, text: str, level: bytes) -> None:
        new = text != self._error
        self._error, self._error_level = text, level
        self._error_t = time.monotonic()
        if new:  # logged once per distinct reason (a stream of bad input does not flood the log)
            # One call site per severity and throttling (rclpy requires it). Embedding problems come
            # per message and their texts carry ages and fingerprints: at most one a second.
            log = self.get_logger()
            error = level == ERROR
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
        self._error, self._error_level = None, OK

    def _publish_diag(self) -> None:
        if self._error:
            level, message = self._error_level, self._error
        elif self.service.active is None:
            level, message = WARN, "unconfigured: no policy loaded"
        elif not self._active:
            level, message = OK, "inactive"
        else:
            level, message = OK, "publishing action chunks"
        state = self._state_machine.current_state[1]  # as /inference_node/get_state answers
        self._diag.publish(level, message, self.service.values(self.cfg, self._mailbox.dropped, state))


def main(args: list[str] | None = None) -> None:
    spin_node(InferenceNode, args, close_first=True)


if __name__ == "__main__":
    main()
