"""The perception engine, ROS-free: synchronised sensor sets -> stamped embeddings.

What ``perception_node`` runs, without ROS; the node subscribes, hands messages over,
runs the worker and loader threads, decodes messages (``l1flow_ros.msgs``), publishes
and reports on /diagnostics.

- **Stream selection** (:func:`needed_streams`): the synchroniser streams a checkpoint's
  observation needs, per camera ``<cam>/color`` (the model sees RGB, or colours the
  points), ``<cam>/depth`` or ``<cam>/cloud`` (points), or ``<cam>/rgbd`` (direct
  RealSense frames, already decoded); ``joint_states`` when it observes proprio. The
  first stream is the synchroniser's reference: its stamp is the observation time.
- **Bundle checks** (:meth:`PerceptionEngine.check_bundle`): a bundle the node cannot
  feed (cameras it does not have, points without extrinsics) is refused with the reason.
- **One set -> one embedding** (:meth:`PerceptionEngine.step`): age check against the
  node's clock, the set's messages -> raw frames (through the caller's message decoders,
  one message at a time), THE preprocessing path (``preprocess.frame_step``, the one
  dataset building uses), the observation history, the encoder; stage times.
- **Swap-in of a new encoder** (:meth:`PerceptionEngine.load`, then
  :meth:`PerceptionEngine.swap_in`): loading happens off the hot path; the swap replaces
  encoder, history and synchroniser at once, so no embedding mixes two checkpoints.
- **Health** (:meth:`PerceptionEngine.status`, :meth:`PerceptionEngine.refresh`): the data
  path's newest error until an embedding goes out, or why none came; a checkpoint that
  could not be loaded; stage times (p50 / p99) and each stream's age
  (:meth:`PerceptionEngine.values`, the node's /diagnostics key/values).

Threads: :meth:`~PerceptionEngine.add` from subscription callbacks, :meth:`~PerceptionEngine.step`
from one worker, :meth:`~PerceptionEngine.load` / :meth:`~PerceptionEngine.swap_in` from a loader,
the statistics from a timer. The checkpoint in use is one reference replaced in one
assignment; each call works on the one it read first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.config import param
from l1flow_ros.perception.geometry import CameraIntrinsics, PerceptionError, load_calibration
from l1flow_ros.perception.geometry import warmup as geometry_warmup
from l1flow_ros.perception.preprocess import (
    CameraFrame,
    ObservationHistory,
    RawFrames,
    frame_step,
    step_to_model,
)
from l1flow_ros.perception.sync import ApproximateTimeSync, SyncedSet
from l1flow_ros.spec import ObservationSpec

BACKENDS = ("torch", "onnxruntime", "tensorrt")
SOURCES = ("topics", "realsense")
# Per embedding: decode, fuse (frame_step), encode (history + encoder), total (the three),
# latency (observation stamp -> embedding published, on the node's clock).
STAGES = ("decode", "fuse", "encode", "total", "latency")
TIMING_WINDOW = 300  # embeddings in the p50 / p99 statistics
OK, WARN, ERROR = 0, 1, 2  # the levels of diagnostic_msgs/DiagnosticStatus


@dataclass(frozen=True)
class PerceptionConfig:
    """perception_node's parameters. Read-only ones shape the subscriptions or the source."""

    cameras: tuple[str, ...] = param((), "camera names (realsense2_camera topic prefixes); empty: the checkpoint's")
    cloud_cameras: tuple[str, ...] = param((), "cameras that deliver a PointCloud2 in place of aligned depth")
    checkpoint: str = param("", "bundle directory loaded at start; swaps also come on /l1flow/checkpoint",
                            live=True)
    calibration_file: str = param("", "YAML with each camera's extrinsics camera -> robot base")
    slop: float = param(0.02, "max |stamp - reference camera stamp| inside one synchronised set, s", live=True)
    max_observation_age: float = param(
        0.5, "observations older than this (vs. the node clock) are not encoded, s", live=True)
    publish_cloud: bool = param(False, "publish the fused model cloud on /l1flow/perception/cloud", live=True)
    cloud_frame_id: str = param("base", "frame_id of the published cloud (the robot base frame)", live=True)
    encoder_backend: str = param("torch", "torch | onnxruntime | tensorrt", live=True)
    encoder_device: str = param("cpu", "torch device of the encoder (cpu, cuda)", live=True)
    strict_joint_names: bool = param(
        False, "reject joint states that name joints the policy does not observe", live=True)
    diagnostics_period: float = param(1.0, "period of /diagnostics, s")
    source: str = param("topics", "topics (realsense2_camera-style topics) | realsense (pyrealsense2, direct)")
    realsense_serials: tuple[str, ...] = param((), "serial numbers, one per camera, for source 'realsense'")
    realsense_width: int = param(640, "colour / depth width for source 'realsense'")
    realsense_height: int = param(480, "colour / depth height for source 'realsense'")
    realsense_fps: int = param(30, "frame rate for source 'realsense'")

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


class StreamError(PerceptionError):
    """Invalid data on one stream (a decoder raises it): that stream's queue is dropped, so
    no set is built from what came before the bad message."""

    def __init__(self, stream: str, reason: str) -> None:
        super().__init__(f"{stream}: {reason}")
        self.stream = stream


def needed_streams(spec: ObservationSpec, source: str = "topics",
                   cloud_cameras: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Synchroniser streams a checkpoint's observation needs; the first is the reference."""
    out = []
    for cam in spec.cameras:
        if source == "realsense":
            out.append(f"{cam}/rgbd")
            continue
        cloud_cam = cam in cloud_cameras
        if spec.use_rgb or (spec.num_points > 0 and spec.point_color and not cloud_cam):
            out.append(f"{cam}/color")
        if spec.num_points > 0:
            out.append(f"{cam}/cloud" if cloud_cam else f"{cam}/depth")
    if spec.proprio_names:
        out.append("joint_states")
    return tuple(out)


@dataclass
class _Checkpoint:
    """What one checkpoint needs: its encoder, history and synchroniser."""

    embedder: Any  # perception.embedder.Embedder
    history: ObservationHistory
    sync: ApproximateTimeSync
    newest_ns: int | None = None  # stamp of the newest observation in the history


@dataclass(frozen=True)
class Embedded:
    """One observation's embedding and what went into it."""

    embedding: np.ndarray  # (D,) float32
    stamp_ns: int  # the observation's time (the reference stream's stamp)
    fingerprint: str  # of the checkpoint whose encoder made it
    model_input: dict[str, np.ndarray]  # the encoder's input, e.g. rgb (To, V, 3, H, W)
    step: dict[str, np.ndarray]  # this observation in storage form, e.g. points (num_points, 3 or 6)
    times_s: tuple[float, float, float, float]  # seconds: decode, fuse, encode, total


# The caller's message decoding, one synchronised message at a time; both raise StreamError
# naming the stream at fault. camera: (stream such as "front/depth", message, the camera's
# intrinsics or None) -> CameraFrame with that part (color, depth or cloud) set.
# proprio: (message, joint names) -> (P,) positions in that order.
CameraDecoder = Callable[[str, Any, CameraIntrinsics | None], CameraFrame]
ProprioDecoder = Callable[[Any, tuple[str, ...]], np.ndarray]


class PerceptionEngine:
    """Synchronised sets -> embeddings for the checkpoint in use; see the module docstring.

    ``cfg`` is a :class:`PerceptionConfig` with paths already resolved; ``clock_ns`` is the
    node's clock (observation stamps are compared with it); ``decode_camera`` and
    ``decode_proprio`` turn the synchronised items into arrays (items that are already a
    ``CameraFrame``, the ``<cam>/rgbd`` stream, are used as they are).
    """

    def __init__(self, cfg: PerceptionConfig, clock_ns: Callable[[], int],
                 decode_camera: CameraDecoder, decode_proprio: ProprioDecoder) -> None:
        self.cfg = cfg
        self._clock = clock_ns
        self._decode_camera = decode_camera
        self._decode_proprio = decode_proprio
        # camera -> its intrinsics (from CameraInfo), or why its CameraInfo is unusable
        self.intrinsics: dict[str, CameraIntrinsics | Exception] = {}
        self.calib: dict[str, np.ndarray] = {}  # camera -> (4, 4) camera -> base
        self.calib_error: str | None = None
        self._ck: _Checkpoint | None = None
        self._timings: dict[str, deque] = {s: deque(maxlen=TIMING_WINDOW) for s in STAGES}
        self.n_published = 0
        self.n_dropped = 0  # complete sets replaced by a newer one before the worker took them
        self.last_ok_ns: int | None = None  # node-clock time of the last embedding
        self.error: str | None = None  # the data path's newest problem (see status())
        self.error_ns = 0
        self.checkpoint_error: str | None = None  # why the last checkpoint asked for is not in use
        self.load_calibration()

    # ------------------------------------------------------------------ configuration

    @property
    def embedder(self) -> Any:
        """The encoder in use (``perception.embedder.Embedder``), or None before the first swap-in."""
        ck = self._ck
        return ck.embedder if ck is not None else None

    @property
    def streams(self) -> tuple[str, ...]:
        ck = self._ck
        return ck.sync.streams if ck is not None else ()

    def configure(self, cfg: PerceptionConfig) -> None:
        """A live parameter change; a new slop takes a new synchroniser (the history stays)."""
        old, self.cfg = self.cfg, cfg
        ck = self._ck
        if ck is not None and cfg.slop != old.slop:
            ck.sync = self._new_sync(ck.embedder.obs_spec)

    def load_calibration(self) -> None:
        """(Re)read the calibration file; an error is kept and reported when a bundle needs points."""
        if not self.cfg.calibration_file:
            return
        try:
            self.calib = load_calibration(self.cfg.calibration_file)
            self.calib_error = None
        except PerceptionError as e:
            self.calib_error = str(e)

    def _new_sync(self, spec: ObservationSpec) -> ApproximateTimeSync:
        window = max(1.0, 2 * self.cfg.max_observation_age)
        streams = needed_streams(spec, self.cfg.source, self.cfg.cloud_cameras)
        return ApproximateTimeSync(streams, self.cfg.slop, window_s=window, max_queue=2000)

    # ------------------------------------------------------------------ checkpoints

    def check_bundle(self, spec: ObservationSpec) -> None:
        """A bundle the node cannot feed is refused: PerceptionError with the reason."""
        cfg = self.cfg
        if cfg.cameras and not set(spec.cameras) <= set(cfg.cameras):
            raise PerceptionError(f"needs cameras {list(spec.cameras)}, node has {list(cfg.cameras)}")
        if cfg.source == "realsense" and not set(spec.cameras) <= set(cfg.cameras):
            raise PerceptionError(f"needs cameras {list(spec.cameras)} the RealSense source does not open")
        if spec.num_points > 0:
            if self.calib_error:
                raise PerceptionError(f"needs points but the calibration is unusable: {self.calib_error}")
            missing = [c for c in spec.cameras if c not in self.calib]
            if missing:
                raise PerceptionError(f"needs points but {cfg.calibration_file or 'no calibration file'} "
                                      f"has no extrinsics for {missing}")

    def load(self, path: str, reload: bool = False) -> Any:
        """Open, check and warm the encoder of the bundle at ``path``; None when that bundle
        (same directory, same fingerprint) is already in use and ``reload`` is false.
        Raises (BundleError, BackendError, PerceptionError) when it cannot be used."""
        from l1flow_ros.perception.embedder import Embedder
        from l1flow_ros.policy.manifest import read_manifest

        cur = self.embedder
        if cur is not None and not reload and Path(path).resolve() == cur.bundle_dir.resolve():
            if read_manifest(path, check_weights=False).fingerprint == cur.fingerprint:
                return None
        emb = Embedder(path, self.cfg.encoder_backend, device=self.cfg.encoder_device)
        if self.calib_error or not self.calib:
            self.load_calibration()  # e.g. the simulator writes it after this node started
        self.check_bundle(emb.obs_spec)
        if emb.obs_spec.num_points > 0:
            geometry_warmup()
        return emb

    def swap_in(self, embedder: Any) -> None:
        """Use ``embedder`` from the next set on. A checkpoint that observes as the current
        one does (same observation spec and history spacing: the usual swap between two
        trainings of one setup) keeps the history and the synchroniser, so its first embedding
        comes from the next set, not after a new set is gathered; any other gets fresh ones."""
        spec, cur = embedder.obs_spec, self._ck
        if cur is not None and cur.embedder.obs_spec == spec and cur.embedder.period_s == embedder.period_s:
            self._ck = _Checkpoint(embedder, cur.history, cur.sync, cur.newest_ns)
        else:
            self._ck = _Checkpoint(embedder, ObservationHistory(spec.n_obs_steps, embedder.period_s),
                                   self._new_sync(spec))
        self.checkpoint_error = None

    # ------------------------------------------------------------------ the data path

    def add(self, stream: str, stamp_ns: int, item: Any) -> tuple[SyncedSet | None, str | None]:
        """Queue one message (ignored when the checkpoint does not use ``stream``).

        Returns (the newest new complete set or None, why the synchroniser restarted or None).
        """
        ck = self._ck
        if ck is None or stream not in ck.sync.streams:
            return None, None
        restarted = None
        last = ck.sync.last_stamp(stream)
        if last is not None and last - stamp_ns > ck.sync.window_ns:
            # Time went backwards (simulated time reset, a recording replayed from its start):
            # the synchroniser never goes back in time, so it would wait for the old time. Restart.
            ck.sync.reset()
            restarted = (f"{stream}: stamps jumped {(last - stamp_ns) * 1e-9:.2f} s back (clock reset?): "
                         "synchroniser restarted")
        return ck.sync.add(stream, stamp_ns, item), restarted

    def frames(self, spec: ObservationSpec, s: SyncedSet) -> RawFrames:
        """The set's items -> raw frames, through the decoders; StreamError names the stream at fault."""
        cams: dict[str, CameraFrame] = {}
        for cam in spec.cameras:
            if f"{cam}/rgbd" in s.items:
                cams[cam] = s.items[f"{cam}/rgbd"]
                continue
            intr = self.intrinsics.get(cam)
            if isinstance(intr, Exception):
                raise StreamError(f"{cam}/camera_info", str(intr))
            if intr is None and f"{cam}/depth" in s.items:
                raise PerceptionError(f"camera {cam!r}: no CameraInfo received on /{cam}/color/camera_info")
            for stream in (f"{cam}/color", f"{cam}/depth", f"{cam}/cloud"):
                if stream in s.items:
                    part = self._decode_camera(stream, s.items[stream], intr)
                    f = cams.setdefault(cam, CameraFrame(intrinsics=intr))
                    for attr in ("color", "depth", "cloud", "cloud_colors"):
                        if getattr(part, attr) is not None:
                            setattr(f, attr, getattr(part, attr))
            f = cams.get(cam)
            if f is not None and f.color is not None and f.depth is not None and f.color.shape[:2] != f.depth.shape:
                raise PerceptionError(f"camera {cam!r}: depth is not aligned to colour (sizes differ)")
        proprio = None
        if spec.proprio_names:
            proprio = self._decode_proprio(s.items["joint_states"], tuple(spec.proprio_names))
        return RawFrames(cameras=cams, proprio=proprio, stamp_ns=s.stamp_ns)

    def step(self, s: SyncedSet) -> Embedded | None:
        """One synchronised set -> its embedding; None for a set made before a swap to a
        checkpoint with other streams. Raises PerceptionError (or the decoders' errors)
        for a set that must not be encoded; a StreamError also drops that stream's queue."""
        ck = self._ck
        if ck is None or set(s.items) != set(ck.sync.streams):
            return None
        spec = ck.embedder.obs_spec
        t0 = time.perf_counter()
        age = (self._clock() - s.stamp_ns) * 1e-9
        if age > self.cfg.max_observation_age:
            raise PerceptionError(f"observation is {age:.3f} s old (> max_observation_age)")
        if -age > self.cfg.max_observation_age:
            raise PerceptionError(f"observation is stamped {-age:.3f} s in the future (> max_observation_age): "
                                  "sensor clock ahead of this node's clock?")
        try:
            frames = self.frames(spec, s)
        except StreamError as e:
            if e.stream in ck.sync.streams:  # e.g. "<cam>/camera_info" is not synchronised
                ck.sync.invalidate(e.stream)
            raise
        t1 = time.perf_counter()
        step = frame_step(spec, frames, self.calib)
        t2 = time.perf_counter()
        if ck.newest_ns is not None and s.stamp_ns <= ck.newest_ns:
            ck.history.clear()  # time went backwards (see add()): the history starts afresh
        ck.history.push(s.stamp_ns, step_to_model(step))
        ck.newest_ns = s.stamp_ns
        emb = ck.embedder.embed_history(ck.history)  # only the new step is encoded (its features kept)
        model_input = ck.history.get()
        t3 = time.perf_counter()
        return Embedded(emb, s.stamp_ns, ck.embedder.fingerprint, model_input, step,
                        (t1 - t0, t2 - t1, t3 - t2, t3 - t0))

    def record(self, out: Embedded) -> None:
        """``out`` went out: its stage times and latency (stamp -> now) join the statistics."""
        now_ns = self._clock()
        for k, v in zip(STAGES, (*out.times_s, (now_ns - out.stamp_ns) * 1e-9)):
            self._timings[k].append(v)
        self.n_published += 1
        self.last_ok_ns = now_ns
        self.error = None

    # ------------------------------------------------------------------ health

    def fail(self, reason: str) -> None:
        """A problem on the data path: reported until an embedding goes out, or until
        :meth:`refresh` replaces it once it is max_observation_age old."""
        self.error, self.error_ns = reason, self._clock()

    def status(self) -> tuple[int, str]:
        """(level, message): the data path's error; else a checkpoint that could not be loaded
        (ERROR while no encoder runs, WARN while the previous one keeps running); else OK."""
        if self.error:
            return ERROR, self.error
        if self.checkpoint_error:
            return (ERROR if self._ck is None else WARN), self.checkpoint_error
        return OK, "publishing embeddings"

    def refresh(self, now_ns: int) -> str | None:
        """Without a fresh error from the data path, why no embedding came lately (it becomes
        the error: an older reason is replaced, the input may have changed since); None if one came."""
        if self.error is not None and now_ns - self.error_ns <= self.cfg.max_observation_age * 1e9:
            return None
        reason = self.stale_reason(now_ns)
        if reason is not None:
            self.fail(reason)
        return reason

    def timings_ms(self) -> dict[str, tuple[float, float]]:
        """stage -> (p50, p99) in ms over the last embeddings; stages with none left out."""
        out = {}
        for k, d in self._timings.items():
            a = np.asarray(list(d)) * 1e3  # list(): one atomic copy while the worker appends
            if a.size:
                out[k] = (float(np.percentile(a, 50)), float(np.percentile(a, 99)))
        return out

    def stream_ages_s(self, now_ns: int) -> dict[str, float | None]:
        """stream -> seconds since its newest valid message (None: never), for the checkpoint in use."""
        ck = self._ck
        if ck is None:
            return {}
        out = {}
        for st in ck.sync.streams:
            t = ck.sync.last_stamp(st)
            out[st] = None if t is None else (now_ns - t) * 1e-9
        return out

    def values(self, now_ns: int) -> dict[str, str]:
        """Every /diagnostics key/value of the perception node: the encoder in use, the
        embeddings published, each stage's p50 / p99 (ms) and each stream's age (s, "never"
        before its first message). Keys: the perception_node table of
        :mod:`l1flow_ros.nodes.diagnostics`."""
        emb = self.embedder
        vals = {
            "fingerprint": emb.fingerprint if emb else "",
            "backend": emb.backend if emb else self.cfg.encoder_backend,
            "embeddings_published": str(self.n_published),
            "sets_dropped": str(self.n_dropped),
        }
        for k, (p50, p99) in self.timings_ms().items():
            vals[f"{k}_ms_p50"], vals[f"{k}_ms_p99"] = f"{p50:.2f}", f"{p99:.2f}"
        for st, age in self.stream_ages_s(now_ns).items():
            vals[f"{st}/age_s"] = "never" if age is None else f"{age:.3f}"
        return vals

    def stale_reason(self, now_ns: int) -> str | None:
        """Why no embedding came for max_observation_age (None: one did, or no checkpoint yet)."""
        if self._ck is None:
            return None
        age_limit = self.cfg.max_observation_age
        if self.last_ok_ns is not None and now_ns - self.last_ok_ns <= age_limit * 1e9:
            return None
        worst, worst_age = None, -1.0
        for st, age in self.stream_ages_s(now_ns).items():
            if age is None:
                return f"{st}: no valid message received"
            if age > worst_age:
                worst, worst_age = st, age
        if worst_age > age_limit:
            return f"{worst}: last message {worst_age:.2f} s ago (stopped publishing?)"
        return f"no embedding for {age_limit} s: streams not within slop {self.cfg.slop} s"
