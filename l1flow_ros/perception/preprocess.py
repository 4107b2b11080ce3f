"""THE preprocessing path: raw sensor frames -> model input. Used by dataset building and the node.

There is one way raw frames become model input, so training and deployment
cannot drift apart:

    frames (RawFrames) --frame_step--> step (storage form: what the dataset keeps)
                       --step_to_model--> one model step (float32)
    ObservationHistory stacks n_obs_steps model steps -> model input (spec.py ObservationSpec)

Storage form of one step (the zarr store holds exactly these arrays)::

    rgb      (V, 3, H, W) uint8     cameras in obs_spec.cameras order, RGB, model size
    points   (num_points, 3 or 6)   float32, robot base frame, metres (+ rgb in [0, 1])
    proprio  (P,)                   float32, obs_spec.proprio_names order, raw units

Model input (one observation, no batch dim), keys present per the spec::

    rgb      (To, V, 3, H, W) float32 in [0, 1]
    points   (To, num_points, C) float32
    proprio  (To, P) float32 raw units (normalised by the policy's Normalizer, not here)
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from l1flow_ros.perception.geometry import (
    CameraIntrinsics,
    CloudConfig,
    PerceptionError,
    Soa,
    camera_points,
    check_depth,
    depth_points,
    fuse_points,
    has_valid_depth,
    pixel_grid,
)
from l1flow_ros.perception.images import resize_rgb, rgb_to_float, to_chw
from l1flow_ros.spec import ObservationSpec


@dataclass
class CameraFrame:
    """One camera at one instant, as decoded from its sensor (no resizing yet).

    color: (H, W, 3) uint8 RGB, or None when the model uses no image of it.
    depth: (H, W) uint16 millimetres or float32 metres, aligned to ``color``.
    intrinsics: of the depth image (= of the colour image when aligned).
    cloud: (N, 3) float32 points in the camera optical frame, used in place of
        depth when given (e.g. a PointCloud2 input); cloud_colors (N, 3) in [0, 1].
    """

    color: np.ndarray | None = None
    depth: np.ndarray | None = None
    intrinsics: CameraIntrinsics | None = None
    cloud: np.ndarray | None = None
    cloud_colors: np.ndarray | None = None
    stamp_ns: int = 0


@dataclass
class RawFrames:
    """All sensors for one observation: cameras by name, proprio in spec order."""

    cameras: dict[str, CameraFrame] = field(default_factory=dict)
    proprio: np.ndarray | None = None  # (P,)
    stamp_ns: int = 0


def cloud_config(spec: ObservationSpec) -> CloudConfig:
    return CloudConfig(
        num_points=spec.num_points,
        workspace=tuple(spec.workspace),
        voxel_size=spec.voxel_size,
        depth_range=tuple(spec.depth_range),
        point_color=spec.point_color,
    )


def _camera_points(name: str, cam: CameraFrame, spec: ObservationSpec, T: np.ndarray, cfg: CloudConfig) -> Soa:
    """One camera's points in the base frame, inside the workspace (see geometry.depth_points)."""
    if cam.cloud is not None:
        pts = np.asarray(cam.cloud, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise PerceptionError(f"camera {name!r}: cloud must be (N, 3), got {pts.shape}")
        ok = np.all(np.isfinite(pts), axis=1)
        z = np.linalg.norm(pts, axis=1)
        ok &= (z > spec.depth_range[0]) & (z <= spec.depth_range[1])
        cols = cam.cloud_colors[ok] if (spec.point_color and cam.cloud_colors is not None) else None
        return camera_points(pts[ok], cols, T, cfg.workspace)
    if cam.depth is None:
        raise PerceptionError(f"camera {name!r}: no depth image and no point cloud")
    if cam.intrinsics is None:
        raise PerceptionError(f"camera {name!r}: no CameraInfo (intrinsics) for its depth")
    depth = check_depth(cam.depth, cam.intrinsics)
    rgb = cam.color if (spec.point_color and cam.color is not None) else None
    # Only the pixels that can land in the workspace are read (geometry.PixelGrid, cached per camera).
    part = depth_points(depth, pixel_grid(cam.intrinsics, T, cfg), cfg.workspace, rgb)
    if part[0].shape[0] == 0 and not has_valid_depth(depth, tuple(spec.depth_range)):
        raise PerceptionError(f"camera {name!r}: depth has no valid pixel (all 0, NaN, inf or out of range)")
    return part


def frame_step(
    spec: ObservationSpec, frames: RawFrames, calib: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Raw frames -> one step in storage form (see module docstring). Raises PerceptionError."""
    out: dict[str, np.ndarray] = {}
    missing = [c for c in spec.cameras if c not in frames.cameras]
    if missing and (spec.use_rgb or spec.num_points > 0):
        raise PerceptionError(f"no frame from camera(s) {missing}")
    if spec.use_rgb and spec.cameras:
        views = []
        for c in spec.cameras:
            col = frames.cameras[c].color
            if col is None:
                raise PerceptionError(f"camera {c!r}: no colour image")
            col = np.asarray(col)
            if col.ndim != 3 or col.shape[2] != 3 or col.dtype != np.uint8:
                raise PerceptionError(f"camera {c!r}: colour must be (H, W, 3) uint8, got {col.shape} {col.dtype}")
            views.append(to_chw(resize_rgb(col, spec.image_size)))
        out["rgb"] = np.stack(views, axis=0)  # (V, 3, H, W) uint8
    if spec.num_points > 0:
        calib = calib or {}
        no_cal = [c for c in spec.cameras if c not in calib]
        if no_cal:
            raise PerceptionError(f"no extrinsics (calibration) for camera(s) {no_cal}")
        ccfg = cloud_config(spec)
        parts = [_camera_points(c, frames.cameras[c], spec, calib[c], ccfg) for c in spec.cameras]
        out["points"] = fuse_points(parts, ccfg)  # (num_points, C)
    if spec.proprio_names:
        if frames.proprio is None:
            raise PerceptionError("no proprioception (joint states)")
        p = np.asarray(frames.proprio, dtype=np.float32).reshape(-1)
        if p.shape[0] != len(spec.proprio_names):
            raise PerceptionError(f"proprio has {p.shape[0]} values, spec names {len(spec.proprio_names)}")
        if not np.all(np.isfinite(p)):
            raise PerceptionError("proprio has NaN or inf")
        out["proprio"] = p  # (P,)
    return out


def step_to_model(step: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Storage-form step -> model-dtype step (rgb uint8 -> float32 [0, 1]); no time axis."""
    out = {}
    for k, v in step.items():
        out[k] = rgb_to_float(v) if k == "rgb" else np.asarray(v, dtype=np.float32)
    return out


def preprocess_frames(
    spec: ObservationSpec, frames: RawFrames, calib: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Raw frames -> one model step: rgb (V, 3, H, W) f32 [0, 1], points (N, C), proprio (P,)."""
    return step_to_model(frame_step(spec, frames, calib))


def stack_steps(steps: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[To x step] -> model input with the time axis first, e.g. rgb (To, V, 3, H, W)."""
    if not steps:
        raise PerceptionError("no steps to stack")
    return {k: np.stack([s[k] for s in steps], axis=0) for k in steps[0]}


_STEP_IDS = itertools.count()  # process-wide: a step's id is never given to another step


class ObservationHistory:
    """The last ``n_obs_steps`` observations, spaced ``period_s`` apart, oldest first.

    Training takes consecutive dataset frames (recorded every ``period_s``, the
    action dt). The node sees frames faster than that, so :meth:`get` picks,
    for each history slot k, the newest step not newer than
    ``t_now - k * period_s``. Before enough history exists, the oldest step
    repeats (the same padding an episode start gets in training).

    Each pushed step gets an id no other step in this process gets (:meth:`picked`), so an
    encoder can keep the features of a step it encoded (``Embedder.embed_history``).
    """

    def __init__(self, n_obs_steps: int, period_s: float = 0.0) -> None:
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        self.n_obs_steps = int(n_obs_steps)
        self.period_ns = int(round(max(period_s, 0.0) * 1e9))
        # Enough steps to cover the history at up to ~100 Hz input.
        keep = 1 if self.n_obs_steps == 1 else max(4 * self.n_obs_steps, 200)
        self._buf: deque[tuple[int, dict[str, np.ndarray]]] = deque(maxlen=keep)
        self._ids: deque[int] = deque(maxlen=keep)  # each step's id, as in _buf

    @property
    def capacity(self) -> int:
        """The most steps kept."""
        return self._buf.maxlen or 0

    def clear(self) -> None:
        self._buf.clear()
        self._ids.clear()

    def __len__(self) -> int:
        return len(self._buf)

    def push(self, stamp_ns: int, step: Mapping[str, np.ndarray]) -> None:
        if self._buf and stamp_ns <= self._buf[-1][0]:
            raise PerceptionError(f"observation at {stamp_ns} ns is not newer than {self._buf[-1][0]} ns")
        self._buf.append((int(stamp_ns), dict(step)))
        self._ids.append(next(_STEP_IDS))

    def get(self) -> dict[str, np.ndarray]:
        """Model input (To, ...) ending at the newest step."""
        return stack_steps([s for _, s in self.picked()])

    def picked(self) -> list[tuple[int, dict[str, np.ndarray]]]:
        """The steps of the model input, oldest first, as (the step's id, the step)."""
        if not self._buf:
            raise PerceptionError("observation history is empty")
        stamps = [s for s, _ in self._buf]
        t_now = stamps[-1]
        picked = []
        j = len(self._buf) - 1
        for k in range(self.n_obs_steps):
            target = t_now - k * self.period_ns
            while j > 0 and stamps[j] > target:
                j -= 1
            picked.append((self._ids[j], self._buf[j][1]))
        picked.reverse()  # oldest first
        return picked
