"""Depth to points, camera extrinsics, multi-view fusion, workspace crop, fixed-size sampling.

Pure numpy; no ROS. Conventions:

- depth images are float32 metres (16UC1 millimetres are converted by the caller
  with :func:`depth_to_metres`); invalid depth (0, NaN, inf, outside
  ``depth_range``) is dropped, never turned into a point;
- camera frames are optical frames (x right, y down, z forward), as RealSense
  and CameraInfo use; back-projection is pinhole (K only): distortion is not
  undone, so depth must be rectified (RealSense aligned depth is);
- every fused cloud is in the robot base frame, metres.

Calibration file (YAML), one entry per camera, camera -> robot base::

    cameras:
      front:                      # 4x4 homogeneous matrix, row major
        matrix: [[1, 0, 0, 0.5], [0, 1, 0, 0.0], [0, 0, 1, 0.8], [0, 0, 0, 1]]
      wrist:                      # or translation (m) + quaternion (x, y, z, w)
        translation: [0.1, 0.0, 0.4]
        rotation: [0.0, 0.0, 0.0, 1.0]

A point ``p_cam`` of camera ``c`` is at ``T_c @ [p_cam, 1]`` in the base frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PerceptionError(ValueError):
    """Sensor data that cannot become a valid observation; the text says why."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image (CameraInfo K, size, distortion model)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals):
            raise PerceptionError(f"intrinsics not finite: fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise PerceptionError(f"focal lengths must be > 0, got fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise PerceptionError(f"image size must be > 0, got {self.width} x {self.height}")

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int, **kw) -> CameraIntrinsics:
        """From a row-major 3x3 K (9 values) as in CameraInfo.k."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.shape[0] != 9:
            raise PerceptionError(f"K must have 9 values, got {k.shape[0]}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height), **kw)

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera at another resolution (intrinsics scale with the image)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
            int(width), int(height), self.distortion_model, self.distortion,
        )


# --------------------------------------------------------------------------- depth -> points


def depth_to_metres(depth: np.ndarray) -> np.ndarray:
    """uint16 millimetres or float metres -> float32 metres (H, W)."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise PerceptionError(f"depth must be (H, W), got shape {depth.shape}")
    if depth.dtype == np.uint16:
        return depth.astype(np.float32) * np.float32(1e-3)
    if depth.dtype.kind == "f":
        return depth.astype(np.float32, copy=False)
    raise PerceptionError(f"depth dtype {depth.dtype} is neither uint16 (mm) nor float (m)")


_PIXEL_GRID_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel coordinates are reused frame after frame; caching saves ~1 ms per view at 640x480.
    key = (h, w)
    g = _PIXEL_GRID_CACHE.get(key)
    if g is None:
        if len(_PIXEL_GRID_CACHE) > 16:
            _PIXEL_GRID_CACHE.clear()
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        g = (u, v)
        _PIXEL_GRID_CACHE[key] = g
    return g


def backproject(
    depth_m: np.ndarray,
    intr: CameraIntrinsics,
    depth_range: tuple[float, float],
    rgb: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Depth (H, W) metres -> points (N, 3) float32 in the camera optical frame.

    Pixels with depth 0, NaN, inf or outside ``depth_range`` are dropped.
    With ``rgb`` (H, W, 3) uint8 aligned to the depth, also returns colours (N, 3)
    float32 in [0, 1]; otherwise ``None``.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise PerceptionError(f"depth must be (H, W), got shape {depth_m.shape}")
    h, w = depth_m.shape
    if (w, h) != (intr.width, intr.height):
        raise PerceptionError(f"depth is {w}x{h} but CameraInfo says {intr.width}x{intr.height}")
    if rgb is not None and rgb.shape[:2] != (h, w):
        raise PerceptionError(f"colour {rgb.shape[1]}x{rgb.shape[0]} is not aligned to depth {w}x{h}")
    lo, hi = depth_range
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth_m) & (depth_m > max(lo, 0.0)) & (depth_m <= hi)
    u, v = _pixel_grid(h, w)
    z = depth_m[valid].astype(np.float32)  # (N,)
    x = (u[valid] - np.float32(intr.cx)) * z / np.float32(intr.fx)
    y = (v[valid] - np.float32(intr.cy)) * z / np.float32(intr.fy)
    pts = np.stack([x, y, z], axis=1)  # (N, 3)
    cols = None
    if rgb is not None:
        cols = rgb[valid].astype(np.float32) * np.float32(1.0 / 255.0)  # (N, 3)
    return pts, cols


# --------------------------------------------------------------------------- extrinsics


def quaternion_to_matrix(q: Sequence[float]) -> np.ndarray:
    """(x, y, z, w) quaternion -> 3x3 rotation; normalised, zero norm rejected."""
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.shape[0] != 4 or not np.all(np.isfinite(q)):
        raise PerceptionError(f"quaternion must be 4 finite values (x, y, z, w), got {q.tolist()}")
    n = np.linalg.norm(q)
    if n < 1e-9:
        raise PerceptionError("quaternion has zero norm")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def make_transform(translation: Sequence[float], rotation_xyzw: Sequence[float]) -> np.ndarray:
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    if t.shape[0] != 3 or not np.all(np.isfinite(t)):
        raise PerceptionError(f"translation must be 3 finite values, got {t.tolist()}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation_xyzw)
    T[:3, 3] = t
    return T


def validate_transform(T: np.ndarray, name: str = "") -> np.ndarray:
    """Check a 4x4 rigid transform (finite, orthonormal rotation, det +1, last row 0 0 0 1)."""
    try:
        T = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PerceptionError(f"{name}: transform is not numeric ({e})") from None
    if T.shape != (4, 4):
        raise PerceptionError(f"{name}: transform must be 4x4, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise PerceptionError(f"{name}: transform has NaN or inf")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
        raise PerceptionError(f"{name}: last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise PerceptionError(f"{name}: rotation part is not a proper rotation matrix")
    return T


def parse_calibration(data: Mapping) -> dict[str, np.ndarray]:
    """Calibration mapping (see module docstring) -> {camera: 4x4 camera->base}."""
    if not isinstance(data, Mapping) or not isinstance(data.get("cameras"), Mapping):
        raise PerceptionError("calibration must be a mapping with a 'cameras' mapping")
    out: dict[str, np.ndarray] = {}
    for cam, entry in data["cameras"].items():
        if not isinstance(entry, Mapping):
            raise PerceptionError(f"calibration of camera {cam!r} must be a mapping")
        if "matrix" in entry:
            out[str(cam)] = validate_transform(entry["matrix"], str(cam))
        elif "translation" in entry and "rotation" in entry:
            try:
                out[str(cam)] = make_transform(entry["translation"], entry["rotation"])
            except (TypeError, ValueError) as e:
                raise PerceptionError(f"camera {cam!r}: {e}") from None
        else:
            raise PerceptionError(f"camera {cam!r}: give 'matrix' (4x4) or 'translation' + 'rotation' (x y z w)")
    return out


def load_calibration(path: str | Path) -> dict[str, np.ndarray]:
    """Read the calibration YAML -> {camera: 4x4 camera->base}."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise PerceptionError(f"cannot read calibration file {p}: {e}") from None
    except yaml.YAMLError as e:
        raise PerceptionError(f"calibration file {p} is not valid YAML: {e}") from None
    return parse_calibration(data)


def _transform_soa(points: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) points -> transformed (x, y, z), each (N,) float32 contiguous.

    The fusion path works on separate coordinate arrays: numpy's (N, 3) @ (3, 3) takes a
    slow non-BLAS path, and axis-0 reductions / boolean indexing of (N, 3) are strided.
    """
    p = np.asarray(points, dtype=np.float32)
    R = T[:3, :3].astype(np.float32)
    t = T[:3, 3].astype(np.float32)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    out = []
    for i in range(3):
        c = x * R[i, 0]
        c += y * R[i, 1]
        c += z * R[i, 2]
        c += t[i]
        out.append(c)
    return out[0], out[1], out[2]


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(N, 3) points, 4x4 transform -> (N, 3) float32."""
    return np.stack(_transform_soa(points, T), axis=1)


# --------------------------------------------------------------------------- crop / sample


def _crop_soa(x: np.ndarray, y: np.ndarray, z: np.ndarray, workspace: Sequence[float]) -> np.ndarray:
    if len(workspace) != 6:
        raise PerceptionError(f"workspace must be 6 values (xmin xmax ymin ymax zmin zmax), got {workspace}")
    m = np.ones(x.shape[0], dtype=bool)
    for i, c in enumerate((x, y, z)):
        m &= c >= np.float32(workspace[2 * i])
        m &= c <= np.float32(workspace[2 * i + 1])
    return m


def crop_mask(points: np.ndarray, workspace: Sequence[float]) -> np.ndarray:
    """(N, 3) -> bool (N,) inside the box (xmin xmax ymin ymax zmin zmax), bounds inclusive."""
    return _crop_soa(points[:, 0], points[:, 1], points[:, 2], workspace)


def _voxel_soa(
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray], colors: np.ndarray | None, voxel_size: float
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray | None]:
    inv = np.float32(1.0 / voxel_size)
    ks, dims = [], []
    for c in xyz:
        k = np.floor(c * inv).astype(np.int64)  # voxel index along one axis, grid anchored at 0
        k -= k.min()
        ks.append(k)
        dims.append(int(k.max()) + 1)
    if float(dims[0]) * float(dims[1]) * float(dims[2]) >= 2.0**62:
        raise PerceptionError(f"voxel grid {dims} too large for voxel size {voxel_size}")
    key = (ks[0] * dims[1] + ks[1]) * dims[2] + ks[2]  # (N,) one integer per voxel
    order = np.argsort(key)
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))  # first point of each voxel
    counts = np.diff(np.append(starts, key.shape[0])).astype(np.float64)  # (M,)
    out = tuple((np.add.reduceat(c[order].astype(np.float64), starts) / counts).astype(np.float32) for c in xyz)
    col = None
    if colors is not None:
        col = (np.add.reduceat(colors[order].astype(np.float64), starts, axis=0) / counts[:, None]).astype(np.float32)
    return (out[0], out[1], out[2]), col


def voxel_downsample(
    points: np.ndarray, colors: np.ndarray | None, voxel_size: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average points (and colours) per voxel of a grid anchored at the origin.

    Output is ordered by voxel index (x, then y, then z), so it does not depend on
    the input order and farthest-point sampling (which starts at the first point)
    is deterministic. numpy sort + reduceat on coordinate arrays: ~3x less CPU than
    open3d's ``voxel_down_sample`` at 400k points (measured here), no float64 point vectors.
    """
    if voxel_size <= 0 or points.shape[0] == 0:
        return points, colors
    xyz, col = _voxel_soa((points[:, 0], points[:, 1], points[:, 2]), colors, voxel_size)
    return np.stack(xyz, axis=1), col


def warmup() -> None:
    """Run the fusion path once on a tiny cloud (first calls allocate; do it off the hot path)."""
    cfg = CloudConfig(num_points=4, workspace=(-1, 1, -1, 1, -1, 1), voxel_size=0.01, depth_range=(0.05, 3.0))
    fuse_views([(np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3)).astype(np.float32), None)], [np.eye(4)], cfg)


def farthest_point_sample(points: np.ndarray, n: int, max_candidates: int | None = None) -> np.ndarray:
    """Indices (n,) of a deterministic farthest-point sample of (N, 3) points (see ``_fps_soa``)."""
    return _fps_soa((points[:, 0], points[:, 1], points[:, 2]), n, max_candidates)


def _fps_soa(
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray], n: int, max_candidates: int | None = None
) -> np.ndarray:
    """Indices (n,) of a deterministic farthest-point sample, starting at point 0.

    With fewer than ``n`` points all are taken and the rest repeat them in order
    (the encoder is permutation invariant, so repetition only reweights).
    ``max_candidates`` first thins the input with a fixed stride, which bounds the
    O(N * n) cost on dense clouds.
    """
    m = xyz[0].shape[0]
    if m == 0:
        raise PerceptionError("no points to sample from")
    if m <= n:
        return np.resize(np.arange(m), n)
    cand = np.arange(m)
    if max_candidates is not None and m > max_candidates:
        cand = np.linspace(0, m - 1, max_candidates).astype(np.int64)
    # Separate contiguous coordinate arrays and in-place ufuncs: ~8x faster than
    # einsum over (M, 3) at these sizes, the loop being bound by per-call overhead.
    x, y, z = (np.ascontiguousarray(c[cand], dtype=np.float32) for c in xyz)
    out = np.empty(n, dtype=np.int64)
    dist = np.full(x.shape[0], np.inf, dtype=np.float32)
    acc = np.empty_like(dist)
    tmp = np.empty_like(dist)
    i = 0
    for k in range(n):
        out[k] = i
        np.subtract(x, x[i], out=acc)
        np.multiply(acc, acc, out=acc)
        np.subtract(y, y[i], out=tmp)
        np.multiply(tmp, tmp, out=tmp)
        acc += tmp
        np.subtract(z, z[i], out=tmp)
        np.multiply(tmp, tmp, out=tmp)
        acc += tmp
        np.minimum(dist, acc, out=dist)
        i = int(np.argmax(dist))
    return cand[out]


@dataclass(frozen=True)
class CloudConfig:
    """How views become one fixed-size cloud (the point part of ObservationSpec)."""

    num_points: int
    workspace: tuple[float, ...]
    voxel_size: float
    depth_range: tuple[float, float]
    point_color: bool = False
    fps_candidates_per_point: int = 4


def fuse_views(
    views: Sequence[tuple[np.ndarray, np.ndarray | None]],
    extrinsics: Sequence[np.ndarray],
    cfg: CloudConfig,
) -> np.ndarray:
    """Per-camera points (camera frame) -> (num_points, 3 or 6) float32 in the base frame.

    Each view is (points (N, 3), colours (N, 3) or None). Points are moved to the
    base frame, concatenated, cropped to the workspace, voxel downsampled, then
    farthest-point sampled to exactly ``num_points``. Raises PerceptionError when
    nothing valid is left.
    """
    if len(views) != len(extrinsics):
        raise PerceptionError(f"{len(views)} views but {len(extrinsics)} extrinsics")
    axes: tuple[list, list, list] = ([], [], [])
    col_all = []
    n_valid = 0
    for (pts, cols), T in zip(views, extrinsics):
        n_valid += pts.shape[0]
        xyz = _transform_soa(pts, T)
        keep = _crop_soa(*xyz, cfg.workspace)  # crop per view: less to concatenate
        for a, c in zip(axes, xyz):
            a.append(c[keep])
        if cfg.point_color:
            if cols is None:
                col_all.append(np.full((int(keep.sum()), 3), 0.5, dtype=np.float32))  # grey: view without colour
            else:
                col_all.append(cols[keep].astype(np.float32, copy=False))
    if n_valid == 0:
        raise PerceptionError("no valid depth in any view")
    x, y, z = (np.concatenate(a) for a in axes)  # (N,) each
    cols = np.concatenate(col_all, axis=0) if cfg.point_color else None
    if x.shape[0] == 0:
        raise PerceptionError("no points inside the workspace crop box")
    if cfg.voxel_size > 0:
        (x, y, z), cols = _voxel_soa((x, y, z), cols, cfg.voxel_size)
    idx = _fps_soa((x, y, z), cfg.num_points, cfg.num_points * cfg.fps_candidates_per_point)
    out = np.stack([x[idx], y[idx], z[idx]], axis=1)  # (num_points, 3)
    if cols is not None:
        out = np.concatenate([out, cols[idx]], axis=1)  # (num_points, 6)
    return np.ascontiguousarray(out, dtype=np.float32)
