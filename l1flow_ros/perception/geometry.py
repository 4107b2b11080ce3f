"""Depth to points, camera extrinsics, multi-view fusion, workspace crop, fixed-size sampling.

Pure numpy; no ROS. Conventions:

- depth images are float32 metres (16UC1 millimetres are converted by the caller
  with :func:`depth_to_metres`); invalid depth (0, NaN, inf, outside
  ``depth_range``) is dropped, never turned into a point;
- camera frames are optical frames (x right, y down, z forward), as RealSense
  and CameraInfo use; back-projection is pinhole (K only): distortion is not
  undone, so depth must be rectified (RealSense aligned depth is);
- every fused cloud is in the robot base frame, metres.

Depth images become base-frame points through a :class:`PixelGrid` per camera
(:func:`pixel_grid`, cached): only the pixels whose ray meets the workspace box inside the
depth range are read, every :func:`pixel_stride`-th row and column (the pixel spacing tied to
the voxel size), with the arithmetic of :func:`backproject` + :func:`transform_points` and the
exact crop, so at stride 1 the points are those of back-projecting every pixel. The views'
points are fused by :func:`fuse_points`: voxel grid (radix sort of integer voxel keys, means of the sampled
voxels only), then farthest-point sampling by fpsample, an exact FPS checked against
:func:`exact_fps`. Measurements: docs/BENCHMARKS.md (Perception latency).

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
    """(N, 3) points -> transformed (x, y, z), each (N,) float32 contiguous (see ``_transform_xyz``)."""
    p = np.asarray(points, dtype=np.float32)
    return _transform_xyz(p[:, 0], p[:, 1], p[:, 2], T)


def _transform_xyz(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates (N,) each, 4x4 transform -> transformed (x, y, z), each (N,) float32 contiguous.

    The fusion path works on separate coordinate arrays: numpy's (N, 3) @ (3, 3) takes a
    slow non-BLAS path, and axis-0 reductions / boolean indexing of (N, 3) are strided.
    """
    R = T[:3, :3].astype(np.float32)
    t = T[:3, 3].astype(np.float32)
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


def _voxel_sort(xyz: tuple[np.ndarray, np.ndarray, np.ndarray], voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The points sorted by voxel: (order (N,) point indices, starts (M + 1,) where each voxel's
    points begin in ``order``, then N). Voxels in key order (x-, then y-, then z-major) of a grid
    anchored at the origin; within a voxel the points keep their input order."""
    inv = np.float32(1.0 / voxel_size)
    ks, dims = [], []
    for c in xyz:
        f = c * inv
        np.floor(f, out=f)
        f -= f.min()
        k = f.astype(np.int64)  # voxel index along one axis, grid anchored at 0 (then shifted to 0)
        ks.append(k)
        dims.append(int(k.max()) + 1)
    if float(dims[0]) * float(dims[1]) * float(dims[2]) >= 2.0**62:
        raise PerceptionError(f"voxel grid {dims} too large for voxel size {voxel_size}")
    key = ks[0]  # (N,) one integer per voxel
    key *= dims[1]
    key += ks[1]
    key *= dims[2]
    key += ks[2]
    n = key.shape[0]
    key_bits = max(1, (dims[0] * dims[1] * dims[2] - 1).bit_length())
    if key_bits <= 48:
        order = _radix_order(key, key_bits)
    else:
        order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.empty(n + 1, dtype=bool)  # sorted position starts a new voxel (and the end)
    first[:1] = True
    first[n:] = True
    np.not_equal(key[1:], key[:-1], out=first[1:n])
    return order, np.flatnonzero(first)


def _radix_order(key: np.ndarray, bits: int) -> np.ndarray:
    """The stable sort order of non-negative int64 keys below 2**bits: an LSD radix sort, 16 bits
    a pass, each pass numpy's stable argsort of uint16 (a radix sort itself). At 100 k keys of
    21 bits, two passes take a third of the CPU time of sorting the keys packed with their index
    as int64 (measured: bench/bench_perception.py --paths), and ties keep the input order."""
    order = np.argsort(key.astype(np.uint16), kind="stable")  # the low 16 bits (astype wraps)
    for shift in range(16, bits, 16):
        digit = (key >> shift).astype(np.uint16)[order]  # the next 16 bits, in the order so far
        order = order[np.argsort(digit, kind="stable")]
    return order


def _voxel_means(
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray], colors: np.ndarray | None, points: np.ndarray,
    voxel: np.ndarray, m: int,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray | None]:
    """Mean point (and colour) of each of ``m`` voxels, over the points ``points`` (K,) whose
    voxels are ``voxel`` (K,). Sums in float64, in the order given (bincount: 3x less time than
    reduceat at ~1.4 points a voxel, measured)."""
    counts = np.bincount(voxel, minlength=m).astype(np.float64)  # (M,)
    out = tuple((np.bincount(voxel, weights=c[points], minlength=m) / counts).astype(np.float32) for c in xyz)
    col = None
    if colors is not None:
        cp = colors[points]
        col = np.stack([np.bincount(voxel, weights=cp[:, j], minlength=m) / counts for j in range(3)],
                       axis=1).astype(np.float32)
    return (out[0], out[1], out[2]), col


def _voxel_soa(
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray], colors: np.ndarray | None, voxel_size: float
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray | None]:
    order, starts = _voxel_sort(xyz, voxel_size)
    m = starts.shape[0] - 1
    voxel = np.repeat(np.arange(m), np.diff(starts))  # of each sorted point
    return _voxel_means(xyz, colors, order, voxel, m)


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
    """Run the fusion path once on a tiny cloud (first calls allocate and import; do it off the hot path)."""
    cfg = CloudConfig(num_points=4, workspace=(-1, 1, -1, 1, -1, 1), voxel_size=0.01, depth_range=(0.05, 3.0))
    fuse_views([(np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3)).astype(np.float32), None)], [np.eye(4)], cfg)


# --------------------------------------------------------------------------- farthest-point sampling

# "fpsample": the fpsample package's bucket FPS (QuickFPS over a kd-line tree, C++): an exact FPS,
# 4096 -> 1024 points in 1.3 ms against 9.8 ms for "numpy" (ours) and 4.2 ms for open3d's
# farthest_point_down_sample (one core, measured side by side: bench/bench_perception.py --fps-only).
# "numpy": exact FPS in numpy, kept as the reference the library is checked against.
FPS_METHODS = ("fpsample", "numpy")


def exact_fps(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices (n,) of the exact farthest-point sample of (M, 3) points from ``start``, M >= n.

    Each pick is the point farthest from those picked so far (the first of equals); numpy,
    the reference :func:`farthest_point_sample`'s library result is checked against.
    """
    pts = np.asarray(points, dtype=np.float32)
    return _fps_numpy((pts[:, 0], pts[:, 1], pts[:, 2]), n, start)


def _fps_numpy(xyz: tuple[np.ndarray, np.ndarray, np.ndarray], n: int, start: int = 0) -> np.ndarray:
    # Separate contiguous coordinate arrays and in-place ufuncs: ~8x faster than
    # einsum over (M, 3) at these sizes, the loop being bound by per-call overhead.
    x, y, z = (np.ascontiguousarray(c, dtype=np.float32) for c in xyz)
    out = np.empty(n, dtype=np.int64)
    dist = np.full(x.shape[0], np.inf, dtype=np.float32)
    acc = np.empty_like(dist)
    tmp = np.empty_like(dist)
    i = int(start)
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
    return out


def _fps_library(xyz: tuple[np.ndarray, np.ndarray, np.ndarray], n: int) -> np.ndarray:
    try:
        import fpsample
    except ImportError:
        raise PerceptionError("farthest-point sampling needs the fpsample package (requirements/cpu.txt): "
                              "pip install fpsample") from None
    m = xyz[0].shape[0]
    pc = np.stack(xyz, axis=1).astype(np.float32, copy=False)  # (M, 3)
    # Bucket height from the cloud size (2^h buckets): h 5 at 4096-8191 candidates, the fastest there.
    h = min(7, max(3, m.bit_length() // 2 - 1))
    # fpsample 0.3.3 reads start_idx after its kd-tree has reordered the points, so the first pick is
    # the point its tree puts first: a fixed function of the cloud (the rest is exact FPS from it).
    idx = np.asarray(fpsample.bucket_fps_kdline_sampling(pc, n, h=h, start_idx=0), dtype=np.int64)
    seen = np.zeros(m, dtype=bool)
    if idx.shape == (n,) and idx.min() >= 0 and idx.max() < m:
        seen[idx] = True
        if int(np.count_nonzero(seen)) == n:
            return idx
    # A repeated or out-of-range index (reported against older fpsample versions): the exact
    # sample from the same start, so the cloud is the one the library should have returned.
    start = int(idx[0]) if idx.size and 0 <= idx[0] < m else 0
    return _fps_numpy(xyz, n, start)


def farthest_point_sample(
    points: np.ndarray, n: int, max_candidates: int | None = None, method: str = "fpsample"
) -> np.ndarray:
    """Indices (n,) of a deterministic farthest-point sample of (N, 3) points (see ``_fps_soa``)."""
    return _fps_soa((points[:, 0], points[:, 1], points[:, 2]), n, max_candidates, method)


def _fps_soa(
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray], n: int, max_candidates: int | None = None,
    method: str = "fpsample",
) -> np.ndarray:
    """Indices (n,) of a deterministic farthest-point sample.

    With fewer than ``n`` points all are taken and the rest repeat them in order
    (the encoder is permutation invariant, so repetition only reweights).
    ``max_candidates`` first thins the input with a fixed stride, which bounds the
    cost on dense clouds. ``method``: one of FPS_METHODS ("numpy" starts at point 0).
    """
    m = xyz[0].shape[0]
    if m == 0:
        raise PerceptionError("no points to sample from")
    if m <= n:
        return np.resize(np.arange(m), n)
    cand = None
    if max_candidates is not None and m > max_candidates:
        cand = np.linspace(0, m - 1, max_candidates).astype(np.int64)
        xyz = (xyz[0][cand], xyz[1][cand], xyz[2][cand])
        if max_candidates <= n:
            return cand[np.resize(np.arange(max_candidates), n)]
    if method == "fpsample":
        out = _fps_library(xyz, n)
    elif method == "numpy":
        out = _fps_numpy(xyz, n)
    else:
        raise PerceptionError(f"farthest-point sampling method {method!r} not in {FPS_METHODS}")
    return out if cand is None else cand[out]


@dataclass(frozen=True)
class CloudConfig:
    """How views become one fixed-size cloud (the point part of ObservationSpec)."""

    num_points: int
    workspace: tuple[float, ...]
    voxel_size: float
    depth_range: tuple[float, float]
    point_color: bool = False
    fps_candidates_per_point: int = 4
    fps: str = "fpsample"  # one of FPS_METHODS
    # Depth pixels used: every pixel_stride-th row and column; 0: from the voxel size (pixel_stride()).
    pixel_stride: int = 0


# --------------------------------------------------------------------------- depth image -> base-frame points


@dataclass(frozen=True, eq=False)
class PixelGrid:
    """The pixels of one depth camera that can become points of the fused cloud, and their rays.

    Made once per camera and configuration by :func:`pixel_grid` (and cached), so that a frame
    only gathers the depths of those pixels: a pixel is kept when its ray meets the workspace
    box inside the depth range (the crop done in pixel space, before back-projection), on a
    lattice of every ``stride``-th row and column (:func:`pixel_stride`). ``z_lo`` / ``z_hi``
    bound the depths at which a pixel's point can be inside the box; they are a slightly wide
    pre-filter and the exact crop follows, so at stride 1 the points are bit-identical to
    :func:`backproject` + :func:`transform_points` + :func:`crop_mask` (same arithmetic).
    """

    height: int
    width: int
    stride: int
    pixels: np.ndarray  # (K,) intp, row-major flat indices into the depth image
    du: np.ndarray  # (K,) float32, u - cx
    dv: np.ndarray  # (K,) float32, v - cy
    z_lo: np.ndarray  # (K,) float32, metres: shallower, the point is outside the box or depth range
    z_hi: np.ndarray  # (K,) float32, metres: deeper, the same
    fx: np.float32
    fy: np.float32
    T: np.ndarray  # (4, 4) camera -> base


_GRID_CACHE: dict[tuple, PixelGrid] = {}


def pixel_stride(intr: CameraIntrinsics, depth_m: float, voxel_size: float) -> int:
    """The largest pixel step whose points, on a surface facing the camera at ``depth_m``, are
    no farther apart than ``voxel_size``: the voxel grid then still gets a point in (nearly)
    every voxel the surface crosses, from 1/step² of the pixels. What is narrower than a voxel
    can fall between the sampled pixels (the voxel grid would have averaged it away too)."""
    if voxel_size <= 0 or not np.isfinite(depth_m) or depth_m <= 0:
        return 1
    footprint = depth_m / min(intr.fx, intr.fy)  # metres between neighbouring pixels at that depth
    return max(1, int(np.floor(voxel_size / footprint + 1e-9)))


def pixel_grid(intr: CameraIntrinsics, T: np.ndarray, cfg: CloudConfig) -> PixelGrid:
    """The :class:`PixelGrid` of a camera with intrinsics ``intr`` and camera -> base ``T``."""
    T = np.asarray(T, dtype=np.float64)
    key = (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height, T.tobytes(), tuple(cfg.workspace),
           tuple(cfg.depth_range), cfg.voxel_size, cfg.pixel_stride)
    g = _GRID_CACHE.get(key)
    if g is None:
        if len(_GRID_CACHE) >= 32:
            _GRID_CACHE.clear()
        g = _GRID_CACHE[key] = _make_pixel_grid(intr, T, cfg)
    return g


def _make_pixel_grid(intr: CameraIntrinsics, T: np.ndarray, cfg: CloudConfig) -> PixelGrid:
    ws = cfg.workspace
    if len(ws) != 6:
        raise PerceptionError(f"workspace must be 6 values (xmin xmax ymin ymax zmin zmax), got {ws}")
    h, w = intr.height, intr.width
    v, u = np.mgrid[0:h, 0:w]
    du = (u.astype(np.float32) - np.float32(intr.cx)).reshape(-1)  # (H*W,) as backproject computes it
    dv = (v.astype(np.float32) - np.float32(intr.cy)).reshape(-1)
    # Ray of each pixel in the base frame, per metre of depth (z_cam = 1): p = o + z * d.
    d_cam = np.stack([du / intr.fx, dv / intr.fy, np.ones_like(du, dtype=np.float64)])  # (3, H*W)
    d = T[:3, :3] @ d_cam
    o = T[:3, 3]
    near = np.full(d.shape[1], -np.inf)
    far = np.full(d.shape[1], np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(3):  # slab test against the workspace box
            lo, hi = float(ws[2 * i]), float(ws[2 * i + 1])
            t1, t2 = (lo - o[i]) / d[i], (hi - o[i]) / d[i]
            par = d[i] == 0  # parallel to the slab: inside for every depth or for none
            inside = lo <= o[i] <= hi
            near = np.maximum(near, np.where(par, -np.inf if inside else np.inf, np.minimum(t1, t2)))
            far = np.minimum(far, np.where(par, np.inf if inside else -np.inf, np.maximum(t1, t2)))
    lo0 = np.float32(max(cfg.depth_range[0], 0.0))
    hi0 = np.float32(cfg.depth_range[1])
    margin = 1e-4 + 1e-4 * np.abs(far)  # the exact crop follows: never lose a point to rounding here
    z_lo = np.maximum(near - margin, float(np.nextafter(lo0, np.float32(np.inf))))  # z > lo0, as backproject
    z_hi = np.minimum(far + margin, float(hi0))
    keep = z_lo <= z_hi
    stride = cfg.pixel_stride
    if stride <= 0:
        # The stride for the median far end of the pixels' in-box depth range: the deepest a
        # surface they see can be, so most pixels' points are at least that dense.
        stride = pixel_stride(intr, float(np.median(z_hi[keep])) if keep.any() else 0.0, cfg.voxel_size)
    if stride > 1:
        off = (stride - 1) // 2
        keep &= ((u.reshape(-1) % stride) == off) & ((v.reshape(-1) % stride) == off)
    pixels = np.flatnonzero(keep)
    return PixelGrid(
        height=h, width=w, stride=int(stride), pixels=pixels, du=du[pixels], dv=dv[pixels],
        z_lo=z_lo[pixels].astype(np.float32), z_hi=z_hi[pixels].astype(np.float32),
        fx=np.float32(intr.fx), fy=np.float32(intr.fy), T=T,
    )


def check_depth(depth: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """A depth image as an array, checked: (H, W) uint16 mm or float m, the size CameraInfo says."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise PerceptionError(f"depth must be (H, W), got shape {depth.shape}")
    if depth.dtype != np.uint16 and depth.dtype.kind != "f":
        raise PerceptionError(f"depth dtype {depth.dtype} is neither uint16 (mm) nor float (m)")
    h, w = depth.shape
    if (w, h) != (intr.width, intr.height):
        raise PerceptionError(f"depth is {w}x{h} but CameraInfo says {intr.width}x{intr.height}")
    return depth


def has_valid_depth(depth: np.ndarray, depth_range: tuple[float, float]) -> bool:
    """Whether any pixel of a depth image (uint16 mm or float m) is a valid depth in range."""
    z = depth_to_metres(depth)
    with np.errstate(invalid="ignore"):
        return bool(np.any(np.isfinite(z) & (z > max(depth_range[0], 0.0)) & (z <= depth_range[1])))


Soa = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]  # x, y, z (N,) and colours (N, 3) or None


def depth_points(depth: np.ndarray, grid: PixelGrid, workspace: Sequence[float], rgb: np.ndarray | None = None) -> Soa:
    """A depth image (H, W) (uint16 mm or float m) -> its points in the base frame, inside the
    workspace: (x, y, z) float32 (N,) each and, with ``rgb`` (H, W, 3) uint8 aligned to the
    depth, colours (N, 3) float32 in [0, 1] (else None). Only the grid's pixels are read."""
    depth = np.asarray(depth)
    if depth.shape != (grid.height, grid.width):
        raise PerceptionError(f"depth is {depth.shape[1]}x{depth.shape[0]} but CameraInfo says "
                              f"{grid.width}x{grid.height}")
    if rgb is not None and rgb.shape[:2] != depth.shape:
        raise PerceptionError(f"colour {rgb.shape[1]}x{rgb.shape[0]} is not aligned to depth "
                              f"{depth.shape[1]}x{depth.shape[0]}")
    flat = depth.reshape(-1)  # a view of the message's buffer unless its rows are padded
    z = flat[grid.pixels]  # (K,) only the pixels that can land in the workspace
    if z.dtype == np.uint16:
        z = z.astype(np.float32)
        z *= np.float32(1e-3)  # = depth_to_metres
    elif z.dtype.kind == "f":
        z = z.astype(np.float32, copy=False)
    else:
        raise PerceptionError(f"depth dtype {depth.dtype} is neither uint16 (mm) nor float (m)")
    m = z >= grid.z_lo  # NaN and inf fail one of the two
    m &= z <= grid.z_hi
    sel = np.flatnonzero(m)
    z = z[sel]
    x = grid.du[sel] * z / grid.fx  # as backproject: ((u - cx) * z) / fx
    y = grid.dv[sel] * z / grid.fy
    x, y, z = _transform_xyz(x, y, z, grid.T)
    keep = _crop_soa(x, y, z, workspace)  # exact, as the camera-frame path crops
    if not keep.all():
        sel = sel[keep]
        x, y, z = x[keep], y[keep], z[keep]
    cols = None
    if rgb is not None:
        cols = np.asarray(rgb).reshape(-1, 3)[grid.pixels[sel]].astype(np.float32) * np.float32(1.0 / 255.0)
    return x, y, z, cols


def camera_points(points: np.ndarray, colors: np.ndarray | None, T: np.ndarray, workspace: Sequence[float]) -> Soa:
    """Points (N, 3) in a camera frame (and colours) -> base frame, cropped to the workspace."""
    x, y, z = _transform_soa(points, T)
    keep = _crop_soa(x, y, z, workspace)
    cols = None if colors is None else np.asarray(colors, dtype=np.float32)[keep]
    return x[keep], y[keep], z[keep], cols


def fuse_points(parts: Sequence[Soa], cfg: CloudConfig) -> np.ndarray:
    """Base-frame workspace points of every view -> (num_points, 3 or 6) float32: concatenated,
    voxel downsampled, farthest-point sampled to exactly ``num_points``. A view without colours
    is grey when the cloud has colour. Raises PerceptionError when nothing is inside the workspace."""
    x, y, z = (np.concatenate([p[i] for p in parts]) for i in range(3))  # (N,) each
    cols = None
    if cfg.point_color:
        cols = np.concatenate([p[3] if p[3] is not None else np.full((p[0].shape[0], 3), 0.5, np.float32)
                               for p in parts], axis=0)
    if x.shape[0] == 0:
        raise PerceptionError("no points inside the workspace crop box")
    max_cand = cfg.num_points * cfg.fps_candidates_per_point
    if cfg.voxel_size > 0:
        order, starts = _voxel_sort((x, y, z), cfg.voxel_size)
        m = starts.shape[0] - 1
        if m > max_cand and max_cand > cfg.num_points:
            # Sampling reads max_cand voxels, evenly spaced in key order (as _fps_soa thins):
            # only those voxels' points are gathered and averaged.
            c = np.linspace(0, m - 1, max_cand).astype(np.int64)
            first, count = starts[c], starts[c + 1] - starts[c]
            ends = np.cumsum(count)
            pos = np.arange(int(ends[-1])) + np.repeat(first - (ends - count), count)  # sorted positions
            order, m = order[pos], max_cand
            voxel = np.repeat(np.arange(m), count)
        else:
            voxel = np.repeat(np.arange(m), np.diff(starts))
        (x, y, z), cols = _voxel_means((x, y, z), cols, order, voxel, m)
    idx = _fps_soa((x, y, z), cfg.num_points, max_cand, cfg.fps)
    out = np.stack([x[idx], y[idx], z[idx]], axis=1)  # (num_points, 3)
    if cols is not None:
        out = np.concatenate([out, cols[idx]], axis=1)  # (num_points, 6)
    return np.ascontiguousarray(out, dtype=np.float32)


def fuse_views(
    views: Sequence[tuple[np.ndarray, np.ndarray | None]],
    extrinsics: Sequence[np.ndarray],
    cfg: CloudConfig,
) -> np.ndarray:
    """Per-camera points (camera frame) -> (num_points, 3 or 6) float32 in the base frame.

    Each view is (points (N, 3), colours (N, 3) or None). Points are moved to the
    base frame, concatenated, cropped to the workspace, voxel downsampled, then
    farthest-point sampled to exactly ``num_points`` (:func:`fuse_points`). Raises
    PerceptionError when nothing valid is left.
    """
    if len(views) != len(extrinsics):
        raise PerceptionError(f"{len(views)} views but {len(extrinsics)} extrinsics")
    if sum(pts.shape[0] for pts, _ in views) == 0:
        raise PerceptionError("no valid depth in any view")
    parts = [camera_points(pts, cols if cfg.point_color else None, T, cfg.workspace)
             for (pts, cols), T in zip(views, extrinsics)]
    return fuse_points(parts, cfg)
