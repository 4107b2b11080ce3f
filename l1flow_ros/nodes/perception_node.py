"""perception_node: N RGB-D cameras (+ clouds) and /joint_states -> stamped embedding.

Thin node over the perception core: it subscribes, synchronises
(``perception.sync``), runs THE preprocessing path (``perception.preprocess``,
the same one dataset building uses) and the checkpoint's encoder
(``perception.embedder``), and publishes ``/l1flow/embedding`` (32FC1 1 x D,
header.stamp = observation time, frame_id = checkpoint fingerprint).

Threads: subscription callbacks only queue messages into the synchroniser;
a worker thread turns the newest complete set into an embedding (older
pending sets are dropped); a loader thread opens a new checkpoint's encoder
off the hot path and swaps it in atomically. Bundles come from the
``checkpoint`` parameter and from ``/l1flow/checkpoint`` (reliable,
transient local), which the inference node publishes once it has validated
and warmed a bundle.

Topics (remappable): per camera ``/<cam>/color/image_raw``,
``/<cam>/aligned_depth_to_color/image_raw``, ``/<cam>/color/camera_info``,
``/<cam>/depth/color/points`` (for cameras in ``cloud_cameras``);
``/joint_states``; out: ``/l1flow/embedding``, ``/l1flow/perception/cloud``
(when ``publish_cloud``), ``/diagnostics``.

Bad input (wrong encoding or size, invalid depth, no CameraInfo, a silent
camera, unknown joints): logged, ERROR on /diagnostics with the reason, no
embedding from it; the node keeps running and recovers with good input.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import String

from l1flow_ros.graph import resolve_path
from l1flow_ros.msgs.chunk_conv import MessageError, embedding_to_msg, stamp_to_ns
from l1flow_ros.msgs.sensor_conv import (
    camera_frame_from_msgs,
    camera_info_from_msg,
    joint_state_from_msg,
    pointcloud_to_msg,
)
from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import Diagnostics
from l1flow_ros.perception.geometry import PerceptionError, load_calibration
from l1flow_ros.perception.geometry import warmup as geometry_warmup
from l1flow_ros.perception.preprocess import (
    CameraFrame,
    ObservationHistory,
    RawFrames,
    frame_step,
    step_to_model,
)
from l1flow_ros.perception.sync import ApproximateTimeSync, SyncedSet

NODE_NAME = "perception_node"
BACKENDS = ("torch", "onnxruntime", "tensorrt")
SOURCES = ("topics", "realsense")
STAGES = ("decode", "fuse", "encode", "total", "latency")

RELIABLE_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_1 = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)
RELIABLE_10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


@dataclass(frozen=True)
class PerceptionConfig:
    cameras: tuple[str, ...] = ()
    cloud_cameras: tuple[str, ...] = ()
    checkpoint: str = ""
    calibration_file: str = ""
    slop: float = 0.02
    max_observation_age: float = 0.5
    publish_cloud: bool = False
    cloud_frame_id: str = "base"
    encoder_backend: str = "torch"
    encoder_device: str = "cpu"
    strict_joint_names: bool = False
    diagnostics_period: float = 1.0
    source: str = "topics"
    realsense_serials: tuple[str, ...] = ()
    realsense_width: int = 640
    realsense_height: int = 480
    realsense_fps: int = 30

    def validate(self) -> None:
        """Raise ValueError with the reason for an unusable configuration."""
        if self.slop < 0:
            raise ValueError(f"slop must be >= 0 s, got {self.slop}")
        if self.max_observation_age <= 0:
            raise ValueError(f"max_observation_age must be > 0 s, got {self.max_observation_age}")
        if self.diagnostics_period <= 0:
            raise ValueError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")
        if self.encoder_backend not in BACKENDS:
            raise ValueError(f"encoder_backend {self.encoder_backend!r} not in {BACKENDS}")
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} not in {SOURCES}")
        if len(set(self.cameras)) != len(self.cameras) or any(not c or "/" in c for c in self.cameras):
            raise ValueError(f"cameras must be distinct non-empty names without '/', got {list(self.cameras)}")
        extra = set(self.cloud_cameras) - set(self.cameras)
        if self.cameras and extra:
            raise ValueError(f"cloud_cameras {sorted(extra)} are not in cameras")
        if self.source == "realsense" and len(self.realsense_serials) != len(self.cameras):
            raise ValueError("source 'realsense' needs one serial number per camera (realsense_serials)")


# name -> (default, description, read_only). Read-only ones shape the subscriptions.
_PARAMS: dict[str, tuple[Any, str, bool]] = {
    "cameras": ([""], "camera names (realsense2_camera topic prefixes); empty: the checkpoint's", True),
    "cloud_cameras": ([""], "cameras that deliver a PointCloud2 in place of aligned depth", True),
    "checkpoint": ("", "bundle directory loaded at start; swaps also come on /l1flow/checkpoint", False),
    "calibration_file": ("", "YAML with each camera's extrinsics camera -> robot base", True),
    "slop": (0.02, "max |stamp - reference camera stamp| inside one synchronised set, s", False),
    "max_observation_age": (0.5, "observations older than this (vs. the node clock) are not encoded, s", False),
    "publish_cloud": (False, "publish the fused model cloud on /l1flow/perception/cloud", False),
    "cloud_frame_id": ("base", "frame_id of the published cloud (the robot base frame)", False),
    "encoder_backend": ("torch", "torch | onnxruntime | tensorrt", False),
    "encoder_device": ("cpu", "torch device of the encoder (cpu, cuda)", False),
    "strict_joint_names": (False, "reject joint states that name joints the policy does not observe", False),
    "diagnostics_period": (1.0, "period of /diagnostics, s", True),
    "source": ("topics", "topics (realsense2_camera-style topics) | realsense (pyrealsense2, direct)", True),
    "realsense_serials": ([""], "serial numbers, one per camera, for source 'realsense'", True),
    "realsense_width": (640, "colour / depth width for source 'realsense'", True),
    "realsense_height": (480, "colour / depth height for source 'realsense'", True),
    "realsense_fps": (30, "frame rate for source 'realsense'", True),
}


def _clean_list(v: Any) -> tuple[str, ...]:
    # String-array parameters cannot be empty in a YAML default; [""] means "none".
    return tuple(str(x) for x in (v or ()) if str(x))


class _StreamError(Exception):
    def __init__(self, stream: str, reason: str) -> None:
        super().__init__(f"{stream}: {reason}")
        self.stream = stream


@dataclass
class _Pipeline:
    """What one checkpoint needs: its encoder, history and synchroniser streams."""

    embedder: Any
    history: ObservationHistory
    sync: ApproximateTimeSync
    newest_ns: int | None = None  # stamp of the newest observation in the history


class PerceptionNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, desc, ro) in _PARAMS.items():
            ptype = {
                str: ParameterType.PARAMETER_STRING,
                float: ParameterType.PARAMETER_DOUBLE,
                bool: ParameterType.PARAMETER_BOOL,
                int: ParameterType.PARAMETER_INTEGER,
                list: ParameterType.PARAMETER_STRING_ARRAY,
            }[type(default)]
            self.declare_parameter(name, default, ParameterDescriptor(description=desc, type=ptype, read_only=ro))
        self.cfg = self._read_config()
        self.cfg.validate()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = False
        self._pending: SyncedSet | None = None
        self._pipe: _Pipeline | None = None
        self._intr: dict[str, Any] = {}  # camera -> CameraIntrinsics | MessageError
        self._subs: dict[str, Any] = {}
        self._timings: dict[str, deque] = {s: deque(maxlen=300) for s in STAGES}
        self._n_published = 0
        self._last_ok_ns: int | None = None
        self._error: str | None = None
        self._error_ns = 0
        self._logged: tuple[str | None, float] = (None, 0.0)
        self._last_diag_state: tuple[int, str] | None = None
        self.last_model_input: dict[str, np.ndarray] | None = None  # for tests and debugging
        self._ckpt_error: str | None = None
        self._pub_emb = self.create_publisher(Image, "/l1flow/embedding", RELIABLE_1)
        self._pub_cloud = self.create_publisher(PointCloud2, "/l1flow/perception/cloud", RELIABLE_1)
        self._diag = Diagnostics(self, NODE_NAME)
        self._calib: dict[str, np.ndarray] = {}
        self._calib_error: str | None = None
        self._load_calibration()
        self._retry_path: str | None = None  # a checkpoint that failed while no encoder runs
        self._retry_t = 0.0

        # One (default) callback group, a single-threaded executor (composition.executor_for):
        # every callback only hands work over, to the synchroniser, the worker or the loader.
        self._ensure_subscriptions(self.cfg.cameras)
        self.create_subscription(
            JointState, "/joint_states", lambda m: self._on_sensor("joint_states", m), RELIABLE_10
        )
        self.create_subscription(String, "/l1flow/checkpoint", self._on_checkpoint_msg, LATCHED_1)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
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
            self._load_queue.put((self.cfg.checkpoint, False))
        else:
            self._set_ckpt_error("no checkpoint yet (set 'checkpoint' or publish on /l1flow/checkpoint)")
        self.get_logger().info(
            f"perception: cameras {list(self.cfg.cameras) or '(from checkpoint)'}, source {self.cfg.source}, "
            f"backend {self.cfg.encoder_backend}"
        )

    # ------------------------------------------------------------------ config / parameters

    def _read_config(self, overrides: dict[str, Any] | None = None) -> PerceptionConfig:
        vals = {n: self.get_parameter(n).value for n in _PARAMS}
        vals.update(overrides or {})
        for n in ("cameras", "cloud_cameras", "realsense_serials"):
            vals[n] = _clean_list(vals[n])
        for n in ("checkpoint", "calibration_file"):
            vals[n] = resolve_path(vals[n])
        return PerceptionConfig(**vals)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        try:
            cfg = self._read_config({p.name: p.value for p in params})
            cfg.validate()
            for p in params:
                if p.name == "checkpoint" and p.value:
                    from l1flow_ros.policy.bundle import read_manifest

                    read_manifest(p.value, check_weights=False)
        except Exception as e:  # any reason to reject goes back to the caller
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list) -> None:
        old = self.cfg
        self.cfg = self._read_config()
        names = {p.name for p in params}
        if "checkpoint" in names and self.cfg.checkpoint:
            self._load_queue.put((self.cfg.checkpoint, False))
        elif names & {"encoder_backend", "encoder_device"} and self._pipe is not None:
            self._load_queue.put((str(self._pipe.embedder.bundle_dir), True))
        elif "slop" in names and self.cfg.slop != old.slop and self._pipe is not None:
            with self._lock:
                self._pipe = replace(self._pipe, sync=self._new_sync(self._pipe.embedder.obs_spec))

    def _load_calibration(self) -> None:
        """(Re)read the calibration file; an error is kept and reported when a bundle needs points."""
        if not self.cfg.calibration_file:
            return
        try:
            self._calib = load_calibration(self.cfg.calibration_file)
            self._calib_error = None
        except PerceptionError as e:
            self._calib_error = str(e)

    # ------------------------------------------------------------------ subscriptions

    def _ensure_subscriptions(self, cameras: tuple[str, ...]) -> None:
        if self.cfg.source != "topics":
            return
        for cam in cameras:
            if cam in self._subs:
                continue
            subs = [
                self.create_subscription(
                    Image, f"/{cam}/color/image_raw", lambda m, c=cam: self._on_sensor(f"{c}/color", m),
                    qos_profile_sensor_data,
                ),
                self.create_subscription(
                    CameraInfo, f"/{cam}/color/camera_info", lambda m, c=cam: self._on_info(c, m),
                    qos_profile_sensor_data,
                ),
            ]
            if cam in self.cfg.cloud_cameras:
                subs.append(self.create_subscription(
                    PointCloud2, f"/{cam}/depth/color/points", lambda m, c=cam: self._on_sensor(f"{c}/cloud", m),
                    qos_profile_sensor_data,
                ))
            else:
                subs.append(self.create_subscription(
                    Image, f"/{cam}/aligned_depth_to_color/image_raw",
                    lambda m, c=cam: self._on_sensor(f"{c}/depth", m),
                    qos_profile_sensor_data,
                ))
            self._subs[cam] = subs

    def _streams(self, spec: Any) -> list[str]:
        """Synchroniser streams a checkpoint's observation needs; the first is the reference."""
        out = []
        for cam in spec.cameras:
            if self.cfg.source == "realsense":
                out.append(f"{cam}/rgbd")
                continue
            cloud_cam = cam in self.cfg.cloud_cameras
            if spec.use_rgb or (spec.num_points > 0 and spec.point_color and not cloud_cam):
                out.append(f"{cam}/color")
            if spec.num_points > 0:
                out.append(f"{cam}/cloud" if cloud_cam else f"{cam}/depth")
        if spec.proprio_names:
            out.append("joint_states")
        return out

    def _new_sync(self, spec: Any) -> ApproximateTimeSync:
        window = max(1.0, 2 * self.cfg.max_observation_age)
        return ApproximateTimeSync(self._streams(spec), self.cfg.slop, window_s=window, max_queue=2000)

    # ------------------------------------------------------------------ callbacks (cheap)

    def _on_sensor(self, stream: str, msg: Any) -> None:
        pipe = self._pipe
        if pipe is None or stream not in pipe.sync.streams:
            return
        stamp = stamp_to_ns(msg.header.stamp)
        last = pipe.sync.last_stamp(stream)
        if last is not None and last - stamp > pipe.sync.window_ns:
            # Time went backwards (simulated time reset, a recording replayed from its start):
            # the synchroniser never goes back in time, so it would wait for the old time. Restart.
            pipe.sync.reset()
            self._set_error(f"{stream}: stamps jumped {(last - stamp) * 1e-9:.2f} s back (clock reset?): "
                            "synchroniser restarted")
        out = pipe.sync.add(stream, stamp, msg)
        if out is not None:
            with self._cond:
                if pipe is self._pipe:
                    self._pending = out  # keep newest: an unprocessed older set is dropped
                    self._cond.notify()

    def _on_frame(self, cam: str, frame: CameraFrame) -> None:
        """A direct (pyrealsense2) camera frame, already decoded, hardware-stamped."""
        pipe = self._pipe
        stream = f"{cam}/rgbd"
        if pipe is None or stream not in pipe.sync.streams:
            return
        out = pipe.sync.add(stream, frame.stamp_ns, frame)
        if out is not None:
            with self._cond:
                if pipe is self._pipe:
                    self._pending = out
                    self._cond.notify()

    def _on_info(self, cam: str, msg: CameraInfo) -> None:
        try:
            intr = camera_info_from_msg(msg)
        except MessageError as e:
            self._intr[cam] = e
            return
        if cam not in self._intr and any(abs(d) > 1e-6 for d in intr.distortion):
            # Back-projection is pinhole: aligned RealSense depth / colour carry ~zero distortion.
            self.get_logger().warning(f"camera {cam!r}: CameraInfo has non-zero distortion {intr.distortion}; "
                                      "points are back-projected without undistortion (use rectified images)")
        self._intr[cam] = intr

    def _on_checkpoint_msg(self, msg: String) -> None:
        if msg.data:
            self._load_queue.put((msg.data, False))

    # ------------------------------------------------------------------ checkpoint loading (off the hot path)

    def _loader_loop(self) -> None:
        from l1flow_ros.perception.embedder import Embedder

        while True:
            req = self._load_queue.get()
            while req is not None and not self._load_queue.empty():  # only the newest request matters
                req = self._load_queue.get()
            if req is None:
                return
            path, reload = req
            cur = self._pipe
            try:
                if cur is not None and not reload and Path(path).resolve() == cur.embedder.bundle_dir.resolve():
                    from l1flow_ros.policy.bundle import read_manifest

                    if read_manifest(path, check_weights=False).fingerprint == cur.embedder.fingerprint:
                        continue
                emb = Embedder(path, self.cfg.encoder_backend, device=self.cfg.encoder_device)
                if self._calib_error or not self._calib:
                    self._load_calibration()  # e.g. the simulator writes it after this node started
                self._check_bundle(emb.obs_spec)
                if emb.obs_spec.num_points > 0:
                    geometry_warmup()
            except Exception as e:  # a bad bundle never stops the node; the old encoder keeps running
                self._set_ckpt_error(f"checkpoint {path} not loaded: {e}")
                # With no encoder at all, retry later (a calibration or export still being written).
                self._retry_path = path if self._pipe is None else None
                continue
            self._retry_path = None
            self._ensure_subscriptions(emb.obs_spec.cameras)
            pipe = _Pipeline(emb, ObservationHistory(emb.obs_spec.n_obs_steps, emb.period_s),
                             self._new_sync(emb.obs_spec))
            with self._cond:
                self._pipe = pipe
                self._pending = None
            self._ckpt_error = None
            self._publish_diag(on_change=True)
            self.get_logger().info(f"encoder of {path} ({emb.fingerprint}, {emb.backend}) in use")

    def _check_bundle(self, spec: Any) -> None:
        """A bundle the node cannot feed is rejected with the reason."""
        if self.cfg.cameras and not set(spec.cameras) <= set(self.cfg.cameras):
            raise PerceptionError(f"needs cameras {list(spec.cameras)}, node has {list(self.cfg.cameras)}")
        if self.cfg.source == "realsense" and not set(spec.cameras) <= set(self.cfg.cameras):
            raise PerceptionError(f"needs cameras {list(spec.cameras)} the RealSense source does not open")
        if spec.num_points > 0:
            if self._calib_error:
                raise PerceptionError(f"needs points but the calibration is unusable: {self._calib_error}")
            missing = [c for c in spec.cameras if c not in self._calib]
            if missing:
                raise PerceptionError(f"needs points but {self.cfg.calibration_file or 'no calibration file'} "
                                      f"has no extrinsics for {missing}")

    # ------------------------------------------------------------------ worker (the hot path)

    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                s, self._pending = self._pending, None
                pipe = self._pipe
            if pipe is None:
                continue
            try:
                self._process(pipe, s)
            except _StreamError as e:
                pipe.sync.invalidate(e.stream)
                self._set_error(str(e))
            except (MessageError, PerceptionError) as e:
                self._set_error(str(e))
            except Exception as e:  # keep running whatever happens; say what it was
                self._set_error(f"unexpected {type(e).__name__}: {e}")

    def _decode(self, spec: Any, s: SyncedSet) -> RawFrames:
        cams = {}
        for cam in spec.cameras:
            if f"{cam}/rgbd" in s.items:
                cams[cam] = s.items[f"{cam}/rgbd"]
                continue
            intr = self._intr.get(cam)
            if isinstance(intr, MessageError):
                raise _StreamError(f"{cam}/camera_info", str(intr))
            if intr is None and f"{cam}/depth" in s.items:
                raise PerceptionError(f"camera {cam!r}: no CameraInfo received on /{cam}/color/camera_info")
            for stream, kw in ((f"{cam}/color", "color"), (f"{cam}/depth", "depth"), (f"{cam}/cloud", "cloud")):
                if stream in s.items:
                    try:
                        part = camera_frame_from_msgs(info=intr, **{kw: s.items[stream]})
                    except MessageError as e:
                        raise _StreamError(stream, str(e)) from None
                    f = cams.setdefault(cam, CameraFrame(intrinsics=intr))
                    for attr in ("color", "depth", "cloud", "cloud_colors"):
                        if getattr(part, attr) is not None:
                            setattr(f, attr, getattr(part, attr))
            f = cams.get(cam)
            if f is not None and f.color is not None and f.depth is not None and f.color.shape[:2] != f.depth.shape:
                raise PerceptionError(f"camera {cam!r}: depth is not aligned to colour (sizes differ)")
        proprio = None
        if spec.proprio_names:
            try:
                proprio, _ = joint_state_from_msg(
                    s.items["joint_states"], spec.proprio_names, allow_extra=not self.cfg.strict_joint_names
                )
            except MessageError as e:
                raise _StreamError("joint_states", str(e)) from None
        return RawFrames(cameras=cams, proprio=proprio, stamp_ns=s.stamp_ns)

    def _process(self, pipe: _Pipeline, s: SyncedSet) -> None:
        spec = pipe.embedder.obs_spec
        t0 = time.perf_counter()
        age = (self.get_clock().now().nanoseconds - s.stamp_ns) * 1e-9
        if age > self.cfg.max_observation_age:
            raise PerceptionError(f"observation is {age:.3f} s old (> max_observation_age)")
        if -age > self.cfg.max_observation_age:
            raise PerceptionError(f"observation is stamped {-age:.3f} s in the future (> max_observation_age): "
                                  "sensor clock ahead of this node's clock?")
        frames = self._decode(spec, s)
        t1 = time.perf_counter()
        step = frame_step(spec, frames, self._calib)
        t2 = time.perf_counter()
        if pipe.newest_ns is not None and s.stamp_ns <= pipe.newest_ns:
            pipe.history.clear()  # time went backwards (see _on_sensor): the history starts afresh
        pipe.history.push(s.stamp_ns, step_to_model(step))
        pipe.newest_ns = s.stamp_ns
        model_input = pipe.history.get()
        emb = pipe.embedder.embed(model_input)
        t3 = time.perf_counter()
        self._pub_emb.publish(embedding_to_msg(emb, s.stamp_ns, pipe.embedder.fingerprint))
        self.last_model_input = model_input
        if self.cfg.publish_cloud and "points" in step:
            pts = step["points"]
            self._pub_cloud.publish(pointcloud_to_msg(
                pts[:, :3], pts[:, 3:6] if pts.shape[1] >= 6 else None, s.stamp_ns, self.cfg.cloud_frame_id
            ))
        now_ns = self.get_clock().now().nanoseconds
        for k, v in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0, (now_ns - s.stamp_ns) * 1e-9)):
            self._timings[k].append(v)
        self._n_published += 1
        self._last_ok_ns = now_ns
        if self._error is not None:
            self._error = None
            self._publish_diag(on_change=True)

    # ------------------------------------------------------------------ health

    def _set_error(self, reason: str) -> None:
        self._error = reason
        self._error_ns = self.get_clock().now().nanoseconds
        last, t = self._logged
        if reason != last or time.monotonic() - t > 5.0:
            self.get_logger().error(reason)
            self._logged = (reason, time.monotonic())
        self._publish_diag(on_change=True)

    def _set_ckpt_error(self, reason: str) -> None:
        """A checkpoint that could not be loaded: ERROR while no encoder runs, else WARN (old one runs)."""
        if reason != self._ckpt_error:
            self.get_logger().error(reason)
        self._ckpt_error = reason
        self._publish_diag(on_change=True)

    def _stale_reason(self, pipe: _Pipeline, now_ns: int) -> str | None:
        if self._last_ok_ns is not None and now_ns - self._last_ok_ns <= self.cfg.max_observation_age * 1e9:
            return None
        worst, worst_age = None, -1.0
        for st in pipe.sync.streams:
            t = pipe.sync.last_stamp(st)
            if t is None:
                return f"{st}: no valid message received"
            age = (now_ns - t) * 1e-9
            if age > worst_age:
                worst, worst_age = st, age
        if worst_age > self.cfg.max_observation_age:
            return f"{worst}: last message {worst_age:.2f} s ago (stopped publishing?)"
        return f"no embedding for {self.cfg.max_observation_age} s: streams not within slop {self.cfg.slop} s"

    def _on_diag_timer(self) -> None:
        pipe = self._pipe
        now = self.get_clock().now().nanoseconds
        if pipe is None and self._retry_path and time.monotonic() - self._retry_t > 2.0:
            self._retry_t = time.monotonic()
            self._load_queue.put((self._retry_path, True))
        # Without a fresh error from the data path, say why no embedding came lately (an old
        # reason is replaced: the input may have changed since).
        if pipe is not None and (self._error is None or now - self._error_ns > self.cfg.max_observation_age * 1e9):
            reason = self._stale_reason(pipe, now)
            if reason is not None:
                self._set_error(reason)
                return
        self._publish_diag()

    def _publish_diag(self, on_change: bool = False) -> None:
        pipe = self._pipe
        if self._error:
            level, message = DiagnosticStatus.ERROR, self._error
        elif self._ckpt_error:
            level = DiagnosticStatus.ERROR if pipe is None else DiagnosticStatus.WARN
            message = self._ckpt_error
        else:
            level, message = DiagnosticStatus.OK, "publishing embeddings"
        state = (int.from_bytes(level, "little") if isinstance(level, bytes) else int(level), message)
        if on_change and state == self._last_diag_state:
            return
        self._last_diag_state = state
        vals = {
            "fingerprint": pipe.embedder.fingerprint if pipe else "",
            "backend": pipe.embedder.backend if pipe else self.cfg.encoder_backend,
            "embeddings_published": str(self._n_published),
        }
        for k, d in self._timings.items():
            if d:
                a = np.asarray(d) * 1e3
                vals[f"{k}_ms_p50"] = f"{np.percentile(a, 50):.2f}"
                vals[f"{k}_ms_p99"] = f"{np.percentile(a, 99):.2f}"
        if pipe is not None:
            now = self.get_clock().now().nanoseconds
            for s in pipe.sync.streams:
                t = pipe.sync.last_stamp(s)
                vals[f"age_s/{s}"] = "never" if t is None else f"{(now - t) * 1e-9:.3f}"
        self._diag.publish(level, message, vals)

    # ------------------------------------------------------------------ realsense / shutdown

    def _start_realsense(self) -> None:
        from l1flow_ros.perception.realsense import RealSenseSource

        try:
            self._rs_source = RealSenseSource(
                dict(zip(self.cfg.cameras, self.cfg.realsense_serials)),
                self.cfg.realsense_width, self.cfg.realsense_height, self.cfg.realsense_fps,
                on_frame=self._on_frame,
                on_error=lambda cam, why: self._set_error(f"RealSense camera {cam}: {why}"),
            )
            self._rs_source.start()
        except Exception as e:
            self._set_error(f"RealSense source: {e}")

    def close(self) -> None:
        """Stop the worker, loader and camera threads (idempotent)."""
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
