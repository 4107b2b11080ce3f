"""perception_node: N RGB-D cameras (+ clouds) and /joint_states -> stamped embedding.

Thin node over the perception engine (``perception.pipeline``: parameters, stream
selection, bundle checks, synchronised set -> THE preprocessing path -> history -> the
checkpoint's encoder, swap-in, health). It subscribes, decodes messages (``l1flow_ros.msgs``)
and publishes ``/l1flow/embedding`` (32FC1 1 x D, header.stamp = observation time,
frame_id = checkpoint fingerprint).

Threads: subscription callbacks only queue messages into the synchroniser; a worker
thread turns the newest complete set into an embedding (older pending sets are dropped);
a loader thread opens a new checkpoint's encoder off the hot path and swaps it in
atomically. Bundles come from the ``checkpoint`` parameter and from ``/l1flow/checkpoint``
(reliable, transient local), which the inference node publishes once it has validated
and warmed a bundle.

Topics (remappable): per camera ``/<cam>/color/image_raw``,
``/<cam>/aligned_depth_to_color/image_raw``, ``/<cam>/color/camera_info``,
``/<cam>/depth/color/points`` (for cameras in ``cloud_cameras``);
``/joint_states``; out: ``/l1flow/embedding``, ``/l1flow/perception/cloud``
(when ``publish_cloud``), ``/diagnostics``.

Bad input (wrong encoding or size, invalid depth, no CameraInfo, a silent
camera, unknown joints): logged, ERROR on /diagnostics with the reason, no
embedding from it; the node keeps running and recovers with good input. An error
stays until an embedding goes out, or is replaced by why none came once
``max_observation_age`` has passed without a new one.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import String

from l1flow_ros.graph import resolve_path
from l1flow_ros.msgs import sensor_conv
from l1flow_ros.msgs.chunk_conv import MessageError, embedding_to_msg, stamp_to_ns
from l1flow_ros.nodes import qos
from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import Diagnostics
from l1flow_ros.nodes.params import LiveParameters, declare
from l1flow_ros.perception.geometry import CameraIntrinsics, PerceptionError
from l1flow_ros.perception.pipeline import Embedded, PerceptionConfig, PerceptionEngine, StreamError
from l1flow_ros.perception.preprocess import CameraFrame
from l1flow_ros.perception.sync import SyncedSet

NODE_NAME = "perception_node"


def _resolved(cfg: PerceptionConfig) -> PerceptionConfig:
    """``package://`` paths made real (the engine reads files, the node's config keeps what was set)."""
    return replace(cfg, checkpoint=resolve_path(cfg.checkpoint), calibration_file=resolve_path(cfg.calibration_file))


class PerceptionNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.cfg: PerceptionConfig = declare(self, PerceptionConfig)
        self.engine = PerceptionEngine(_resolved(self.cfg), lambda: self.get_clock().now().nanoseconds,
                                       self._decode_camera, self._decode_proprio)
        self._cond = threading.Condition()
        self._stop = False
        self._pending: SyncedSet | None = None  # the newest complete set, not yet taken by the worker
        self._subs: dict[str, Any] = {}
        self._logged: tuple[str | None, float] = (None, 0.0)
        self._last_diag_state: tuple[int, str] | None = None
        self.last_model_input: dict[str, Any] | None = None  # for tests and debugging
        self._ckpt_requested = False  # the parameter set being applied names 'checkpoint'
        self._pub_emb = self.create_publisher(Image, "/l1flow/embedding", qos.RELIABLE_1)
        self._pub_cloud = self.create_publisher(PointCloud2, "/l1flow/perception/cloud", qos.RELIABLE_1)
        self._diag = Diagnostics(self, NODE_NAME)

        # One (default) callback group, a single-threaded executor (composition.executor_for):
        # every callback only hands work over, to the synchroniser, the worker or the loader.
        self._ensure_subscriptions(self.cfg.cameras)
        self.create_subscription(JointState, "/joint_states", lambda m: self._on_sensor("joint_states", m),
                                 qos.RELIABLE_10)
        self.create_subscription(String, "/l1flow/checkpoint", self._on_checkpoint_msg, qos.LATCHED)
        self._live = LiveParameters(self, self._on_config)
        self.add_on_set_parameters_callback(self._check_checkpoint)
        self.create_timer(self.cfg.diagnostics_period, self._on_diag_timer)

        self._rs_source = None
        if self.cfg.source == "realsense":
            self._start_realsense()

        self._load_queue: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._loader = threading.Thread(target=self._loader_loop, name="perception_loader", daemon=True)
        self._worker = threading.Thread(target=self._worker_loop, name="perception_worker", daemon=True)
        self._loader.start()
        self._worker.start()
        if self.cfg.checkpoint:
            self._load_queue.put((resolve_path(self.cfg.checkpoint), False))
        else:
            self._set_ckpt_error("no checkpoint yet (set 'checkpoint' or publish on /l1flow/checkpoint)")
        self.get_logger().info(f"perception: cameras {list(self.cfg.cameras) or '(from checkpoint)'}, "
                               f"source {self.cfg.source}, backend {self.cfg.encoder_backend}")

    # ------------------------------------------------------------------ parameters

    def _check_checkpoint(self, params: list) -> SetParametersResult:
        """A checkpoint set while running must be a readable bundle (at start, one that is not
        yet is retried: an export may still be being written)."""
        from l1flow_ros.policy.manifest import read_manifest

        paths = [p.value for p in params if p.name == "checkpoint"]
        self._ckpt_requested = bool(paths)
        try:
            for path in filter(None, paths):
                read_manifest(resolve_path(path), check_weights=False)
        except Exception as e:  # any reason to refuse goes back to the caller
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _on_config(self, old: PerceptionConfig, new: PerceptionConfig) -> None:
        self.engine.configure(_resolved(new))
        if self._ckpt_requested and new.checkpoint:
            self._load_queue.put((resolve_path(new.checkpoint), False))
        elif (new.encoder_backend, new.encoder_device) != (old.encoder_backend, old.encoder_device):
            if self.engine.embedder is not None:
                self._load_queue.put((str(self.engine.embedder.bundle_dir), True))

    # ------------------------------------------------------------------ subscriptions and callbacks (cheap)

    def _ensure_subscriptions(self, cameras: tuple[str, ...]) -> None:
        if self.cfg.source != "topics":
            return
        for cam in cameras:
            if cam in self._subs:
                continue
            # (message type, topic under /<cam>/, synchroniser stream under <cam>/)
            streams = [(Image, "color/image_raw", "color"),
                       (PointCloud2, "depth/color/points", "cloud") if cam in self.cfg.cloud_cameras
                       else (Image, "aligned_depth_to_color/image_raw", "depth")]
            subs = [self.create_subscription(msg_type, f"/{cam}/{topic}",
                                             lambda m, s=f"{cam}/{stream}": self._on_sensor(s, m), qos.SENSOR)
                    for msg_type, topic, stream in streams]
            subs.append(self.create_subscription(CameraInfo, f"/{cam}/color/camera_info",
                                                 lambda m, c=cam: self._on_info(c, m), qos.SENSOR))
            self._subs[cam] = subs

    def _on_sensor(self, stream: str, msg: Any) -> None:
        self._offer(stream, stamp_to_ns(msg.header.stamp), msg)

    def _offer(self, stream: str, stamp_ns: int, item: Any) -> None:
        synced, restarted = self.engine.add(stream, stamp_ns, item)
        if restarted:
            self._set_error(restarted)
        if synced is not None:
            with self._cond:
                if self._pending is not None:
                    self.engine.n_dropped += 1  # on /diagnostics as sets_dropped
                self._pending = synced  # keep newest: an unprocessed older set is dropped
                self._cond.notify()

    def _on_info(self, cam: str, msg: CameraInfo) -> None:
        try:
            intr = sensor_conv.camera_info_from_msg(msg)
        except MessageError as e:
            self.engine.intrinsics[cam] = e
            return
        if cam not in self.engine.intrinsics and any(abs(d) > 1e-6 for d in intr.distortion):
            # Back-projection is pinhole: aligned RealSense depth / colour carry ~zero distortion.
            self.get_logger().warning(f"camera {cam!r}: CameraInfo has non-zero distortion {intr.distortion}; "
                                      "points are back-projected without undistortion (use rectified images)")
        self.engine.intrinsics[cam] = intr

    def _on_checkpoint_msg(self, msg: String) -> None:
        if msg.data:
            self._load_queue.put((msg.data, False))

    # ------------------------------------------------------------------ checkpoint loading (off the hot path)

    def _loader_loop(self) -> None:
        retry = None  # a checkpoint that failed while no encoder runs: tried again every 2 s
        while True:
            try:
                req = self._load_queue.get(timeout=2.0 if retry else None)
            except queue.Empty:
                req = (retry, True)
            while req is not None and not self._load_queue.empty():  # only the newest request matters
                req = self._load_queue.get()
            if req is None:
                return
            path, reload = req
            try:
                emb = self.engine.load(path, reload)
            except Exception as e:  # a bad bundle never stops the node; the old encoder keeps running
                self._set_ckpt_error(f"checkpoint {path} not loaded: {e}")
                # With no encoder at all, retry later (a calibration or export still being written).
                retry = path if self.engine.embedder is None else None
                continue
            if emb is None:  # that bundle is in use already
                continue
            retry = None
            self._ensure_subscriptions(emb.obs_spec.cameras)
            with self._cond:
                self.engine.swap_in(emb)
                self._pending = None
            self._publish_diag(on_change=True)
            self.get_logger().info(f"encoder of {path} ({emb.fingerprint}, {emb.backend}) in use")

    # ------------------------------------------------------------------ worker (the hot path)

    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                synced, self._pending = self._pending, None
            try:
                out = self.engine.step(synced)
                if out is not None:
                    self._publish(out)
            except (MessageError, PerceptionError) as e:
                self._set_error(str(e))
            except Exception as e:  # keep running whatever happens; say what it was
                self._set_error(f"unexpected {type(e).__name__}: {e}")

    def _decode_camera(self, stream: str, msg: Any, intr: CameraIntrinsics | None) -> CameraFrame:
        """One camera message ("<cam>/color", "/depth" or "/cloud") -> its part of the frame."""
        try:
            return sensor_conv.camera_frame_from_msgs(info=intr, depth_mm=True, **{stream.rsplit("/", 1)[1]: msg})
        except MessageError as e:
            raise StreamError(stream, str(e)) from None

    def _decode_proprio(self, msg: JointState, names: tuple[str, ...]) -> Any:
        try:
            return sensor_conv.joint_state_from_msg(msg, names, allow_extra=not self.cfg.strict_joint_names)[0]
        except MessageError as e:
            raise StreamError("joint_states", str(e)) from None

    def _publish(self, out: Embedded) -> None:
        self._pub_emb.publish(embedding_to_msg(out.embedding, out.stamp_ns, out.fingerprint))
        self.last_model_input = out.model_input
        if self.cfg.publish_cloud and "points" in out.step:
            pts = out.step["points"]  # (num_points, 3 or 6): xyz (+ rgb)
            cols = pts[:, 3:6] if pts.shape[1] >= 6 else None
            self._pub_cloud.publish(sensor_conv.pointcloud_to_msg(pts[:, :3], cols, out.stamp_ns, self.cfg.cloud_frame_id))
        had_error = self.engine.error is not None
        self.engine.record(out)  # clears the data path's error
        if had_error:
            self._publish_diag(on_change=True)

    # ------------------------------------------------------------------ health

    def _set_error(self, reason: str) -> None:
        self.engine.fail(reason)
        last, t = self._logged
        if reason != last or time.monotonic() - t > 5.0:  # the same reason at most every 5 s in the log
            self.get_logger().error(reason)
            self._logged = (reason, time.monotonic())
        self._publish_diag(on_change=True)

    def _set_ckpt_error(self, reason: str) -> None:
        if reason != self.engine.checkpoint_error:
            self.get_logger().error(reason)
        self.engine.checkpoint_error = reason
        self._publish_diag(on_change=True)

    def _on_diag_timer(self) -> None:
        reason = self.engine.refresh(self.get_clock().now().nanoseconds)
        if reason is not None:
            self._set_error(reason)
        else:
            self._publish_diag()

    def _publish_diag(self, on_change: bool = False) -> None:
        state = self.engine.status()  # (level, message)
        if on_change and state == self._last_diag_state:
            return
        self._last_diag_state = state
        vals = self.engine.values(self.get_clock().now().nanoseconds)
        self._diag.publish(bytes([state[0]]), state[1], vals)

    # ------------------------------------------------------------------ realsense / shutdown

    def _start_realsense(self) -> None:
        from l1flow_ros.perception.realsense import RealSenseSource

        try:
            self._rs_source = RealSenseSource(
                dict(zip(self.cfg.cameras, self.cfg.realsense_serials)),
                self.cfg.realsense_width, self.cfg.realsense_height, self.cfg.realsense_fps,
                # a direct camera frame: a CameraFrame already, hardware-stamped
                on_frame=lambda cam, frame: self._offer(f"{cam}/rgbd", frame.stamp_ns, frame),
                on_error=lambda cam, why: self._set_error(f"RealSense camera {cam}: {why}"),
            )
            self._rs_source.start()
        except Exception as e:
            self._set_error(f"RealSense source: {e}")

    def close(self) -> None:
        """Stop the worker, loader and camera threads (idempotent)."""
        if not hasattr(self, "_cond"):  # __init__ failed (bad parameters) before any thread existed
            return
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._cond.notify_all()
        self._load_queue.put(None)
        if self._rs_source is not None:
            self._rs_source.stop()
        self._worker.join(timeout=5.0)
        self._loader.join(timeout=30.0)

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    spin_node(PerceptionNode, args)


if __name__ == "__main__":
    main()
