"""Sensor message <-> array conversions: Image, CameraInfo, PointCloud2, JointState.

The one decoder of sensor messages: perception_node decodes live messages here, and
dataset building decodes the recorded ones here too, so a recorded image becomes exactly
the array the node sees at serving time (``test_dataset.py`` checks it through the whole
MCAP -> dataset route). The ``*_from_msg`` functions are duck-typed: they read only the
ROS field names (``height``, ``width``, ``encoding``, ``step``, ``is_bigendian``,
``data``, ``header.stamp``, ...), so rclpy messages and the objects ``mcap_ros2`` decodes
from episode files go through the same code.

Every ``*_from_msg`` either returns valid arrays or raises
:class:`~l1flow_ros.msgs.chunk_conv.MessageError` with a reason; never another
exception, whatever the message holds (fuzz-tested).

Arrays follow the perception core's conventions: colour (H, W, 3) uint8 RGB,
depth (H, W) float32 metres, points (N, 3) float32, colours (N, 3) float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField

from l1flow_ros.msgs.chunk_conv import MessageError, ns_to_stamp, stamp_to_ns
from l1flow_ros.perception.geometry import CameraIntrinsics, PerceptionError
from l1flow_ros.perception.preprocess import CameraFrame

COLOR_ENCODINGS = ("rgb8", "bgr8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
MAX_SIDE = 16384  # no real camera is larger; guards against absurd headers

# PointField datatype -> numpy dtype (little endian; byte-swapped for big-endian clouds).
_PF_DTYPES = {
    PointField.INT8: np.dtype("i1"),
    PointField.UINT8: np.dtype("u1"),
    PointField.INT16: np.dtype("<i2"),
    PointField.UINT16: np.dtype("<u2"),
    PointField.INT32: np.dtype("<i4"),
    PointField.UINT32: np.dtype("<u4"),
    PointField.FLOAT32: np.dtype("<f4"),
    PointField.FLOAT64: np.dtype("<f8"),
}


def _check_size(msg: Image) -> tuple[int, int, int]:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"image is empty ({w} x {h})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise MessageError(f"image {w} x {h} is larger than {MAX_SIDE} pixels a side")
    if len(msg.data) != step * h:
        raise MessageError(f"image data is {len(msg.data)} bytes, expected step {step} x height {h}")
    return h, w, step


def _rows(msg: Image, h: int, w: int, step: int, bpp: int) -> np.ndarray:
    """Image data -> (H, W * bpp) uint8 without row padding."""
    if step < w * bpp:
        raise MessageError(f"image step {step} < width {w} x {bpp} bytes per pixel")
    return _buffer(msg.data).reshape(h, step)[:, : w * bpp]


def _buffer(data) -> np.ndarray:
    """A message's bytes as a read-only uint8 array: a view of its buffer when it has one
    (rclpy's array.array, the bytes mcap_ros2 decodes), else a copy (e.g. a list)."""
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        buf = np.frombuffer(bytes(data), dtype=np.uint8)
    buf.flags.writeable = False  # never written through: it is the message's memory
    return buf


def image_from_msg(
    msg: Image, expected_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, str]:
    """Image -> (array, encoding).

    rgb8 / bgr8 -> (H, W, 3) uint8 **RGB**; 16UC1 (mm) / 32FC1 (m) -> (H, W) float32
    metres (invalid depth such as 0 or NaN is kept as is: it is dropped in
    back-projection). ``expected_size`` is (width, height). Other encodings are rejected.
    """
    enc = str(msg.encoding)
    if enc not in COLOR_ENCODINGS + DEPTH_ENCODINGS:
        raise MessageError(f"image encoding {enc!r} not supported (use {COLOR_ENCODINGS + DEPTH_ENCODINGS})")
    h, w, step = _check_size(msg)
    if expected_size is not None and (w, h) != tuple(expected_size):
        raise MessageError(f"image is {w} x {h}, expected {expected_size[0]} x {expected_size[1]}")
    if enc in COLOR_ENCODINGS:
        img = np.ascontiguousarray(_rows(msg, h, w, step, 3).reshape(h, w, 3))
        if enc == "bgr8":
            img = np.ascontiguousarray(img[:, :, ::-1])
        return img, enc
    if enc == "16UC1":
        raw = np.ascontiguousarray(_rows(msg, h, w, step, 2))
        mm = raw.view(">u2" if msg.is_bigendian else "<u2").reshape(h, w)
        return mm.astype(np.float32) * np.float32(1e-3), enc
    raw = np.ascontiguousarray(_rows(msg, h, w, step, 4))
    m = raw.view(">f4" if msg.is_bigendian else "<f4").reshape(h, w)
    return m.astype(np.float32), enc


def color_from_msg(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """rgb8 / bgr8 Image -> (H, W, 3) uint8 RGB."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise MessageError(f"colour image encoding {msg.encoding!r} is not one of {COLOR_ENCODINGS}")
    return image_from_msg(msg, expected_size)[0]


def depth_from_msg(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """16UC1 (mm) / 32FC1 (m) Image -> (H, W) float32 metres."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise MessageError(f"depth image encoding {msg.encoding!r} is not one of {DEPTH_ENCODINGS}")
    return image_from_msg(msg, expected_size)[0]


def depth_raw_from_msg(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """16UC1 Image -> (H, W) uint16 millimetres, a read-only view of the message's buffer (a copy
    only for padded rows or big-endian data); 32FC1 -> float32 metres as :func:`depth_from_msg`.
    The perception path reads only the pixels it uses and converts them as ``depth_to_metres``
    does, so the points are those of the float32 metres :func:`depth_from_msg` gives."""
    if msg.encoding != "16UC1":
        return depth_from_msg(msg, expected_size)
    h, w, step = _check_size(msg)
    if expected_size is not None and (w, h) != tuple(expected_size):
        raise MessageError(f"image is {w} x {h}, expected {expected_size[0]} x {expected_size[1]}")
    mm = np.ascontiguousarray(_rows(msg, h, w, step, 2)).view(">u2" if msg.is_bigendian else "<u2")
    return mm.reshape(h, w) if mm.dtype.isnative else mm.reshape(h, w).astype(np.uint16)


def image_to_msg(img: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """Array -> Image. (H, W, 3) uint8 RGB for rgb8 / bgr8, (H, W) uint16 mm for 16UC1, float m for 32FC1."""
    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    a = np.asarray(img)
    if encoding in COLOR_ENCODINGS:
        a = np.ascontiguousarray(a if encoding == "rgb8" else a[:, :, ::-1], dtype=np.uint8)
        bpp = 3
    elif encoding == "16UC1":
        a, bpp = np.ascontiguousarray(a, dtype="<u2"), 2
    elif encoding == "32FC1":
        a, bpp = np.ascontiguousarray(a, dtype="<f4"), 4
    else:
        raise MessageError(f"image encoding {encoding!r} not supported")
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * bpp
    msg.data = a.tobytes()
    return msg


def camera_info_from_msg(msg: CameraInfo) -> CameraIntrinsics:
    """CameraInfo -> intrinsics (K, size, distortion model)."""
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0 or w > MAX_SIDE or h > MAX_SIDE:
        raise MessageError(f"CameraInfo size {w} x {h} is not a valid image size")
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.shape[0] != 9:
        raise MessageError(f"CameraInfo K has {k.shape[0]} values, expected 9")
    if not np.all(np.isfinite(k)):
        raise MessageError("CameraInfo K has NaN or inf")
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise MessageError("CameraInfo D has NaN or inf")
    try:
        return CameraIntrinsics.from_k(
            k, w, h, distortion_model=str(msg.distortion_model), distortion=tuple(float(x) for x in d)
        )
    except PerceptionError as e:
        raise MessageError(f"CameraInfo: {e}") from None


def camera_info_to_msg(intr: CameraIntrinsics, stamp_ns: int = 0, frame_id: str = "") -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.distortion_model = intr.distortion_model or "plumb_bob"
    msg.d = list(intr.distortion) if intr.distortion else [0.0] * 5
    return msg


# --------------------------------------------------------------------------- PointCloud2


def _field_column(raw: np.ndarray, f: PointField, big: bool) -> np.ndarray:
    dt = _PF_DTYPES[f.datatype]
    if big:
        dt = dt.newbyteorder(">")
    col = np.ascontiguousarray(raw[:, f.offset : f.offset + dt.itemsize])
    return col.view(dt).reshape(-1)


def pointcloud_from_msg(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 -> (points (N, 3) float32, colours (N, 3) float32 in [0, 1] or None).

    Needs float32 / float64 fields x, y, z (count 1); a packed ``rgb`` / ``rgba``
    field (float32 or uint32 bits 0x00RRGGBB) gives colours. Points with a
    non-finite coordinate (holes of organised clouds) are dropped.
    """
    h, w = int(msg.height), int(msg.width)
    ps, rs = int(msg.point_step), int(msg.row_step)
    if h < 0 or w < 0 or h * w > MAX_SIDE * MAX_SIDE:
        raise MessageError(f"point cloud size {w} x {h} is invalid")
    if h * w == 0:
        return np.zeros((0, 3), np.float32), None
    if ps <= 0:
        raise MessageError(f"point_step {ps} must be > 0")
    if rs < w * ps:
        raise MessageError(f"row_step {rs} < width {w} x point_step {ps}")
    if len(msg.data) != rs * h:
        raise MessageError(f"point cloud data is {len(msg.data)} bytes, expected row_step {rs} x height {h}")
    fields = {}
    for f in msg.fields:
        if f.name in fields:
            raise MessageError(f"point cloud field {f.name!r} repeated")
        fields[f.name] = f
    for name in ("x", "y", "z"):
        f = fields.get(name)
        if f is None:
            raise MessageError(f"point cloud has no {name!r} field")
        if f.datatype not in (PointField.FLOAT32, PointField.FLOAT64):
            raise MessageError(f"point cloud field {name!r} datatype {f.datatype} is not FLOAT32 or FLOAT64")
        if f.count != 1:
            raise MessageError(f"point cloud field {name!r} has count {f.count}, expected 1")
        if f.offset + _PF_DTYPES[f.datatype].itemsize > ps:
            raise MessageError(f"point cloud field {name!r} at offset {f.offset} exceeds point_step {ps}")
    big = bool(msg.is_bigendian)
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(h, rs)[:, : w * ps].reshape(h * w, ps)
    pts = np.stack([_field_column(raw, fields[n], big) for n in ("x", "y", "z")], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        pts = pts.astype(np.float32)  # float64 beyond float32 range becomes inf: dropped below
    ok = np.all(np.isfinite(pts), axis=1)
    cols = None
    cf = fields.get("rgb", fields.get("rgba"))
    if cf is not None:
        if cf.datatype not in (PointField.FLOAT32, PointField.UINT32, PointField.INT32) or cf.count != 1:
            raise MessageError(f"point cloud colour field datatype {cf.datatype} is not a packed 32-bit rgb")
        if cf.offset + 4 > ps:
            raise MessageError(f"point cloud colour field at offset {cf.offset} exceeds point_step {ps}")
        packed = np.ascontiguousarray(raw[:, cf.offset : cf.offset + 4]).view(">u4" if big else "<u4")
        packed = packed.reshape(-1)
        rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1)
        cols = rgb[ok].astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(pts[ok]), cols


def pointcloud_to_msg(
    points: np.ndarray, colors: np.ndarray | None = None, stamp_ns: int = 0, frame_id: str = "base"
) -> PointCloud2:
    """(N, 3) points (+ (N, 3) colours in [0, 1]) -> unorganised PointCloud2 (x y z [rgb] float32)."""
    p = np.asarray(points, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != 3:
        raise MessageError(f"points must be (N, 3), got {p.shape}")
    n = p.shape[0]
    names = ["x", "y", "z"] + (["rgb"] if colors is not None else [])
    rec = np.zeros(n, dtype=[(nm, "<f4") for nm in names])
    rec["x"], rec["y"], rec["z"] = p[:, 0], p[:, 1], p[:, 2]
    if colors is not None:
        c = np.asarray(colors, dtype=np.float32)
        if c.shape != p.shape:
            raise MessageError(f"colours {c.shape} do not match points {p.shape}")
        c8 = np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint32)
        packed = (c8[:, 0] << 16) | (c8[:, 1] << 8) | c8[:, 2]
        rec["rgb"] = packed.astype("<u4").view("<f4")
    msg = PointCloud2()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name=nm, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, nm in enumerate(names)
    ]
    msg.is_bigendian = False
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * n
    msg.is_dense = True
    msg.data = rec.tobytes()
    return msg


# --------------------------------------------------------------------------- JointState


def joint_state_from_msg(
    msg: JointState, names: Sequence[str], allow_extra: bool = True
) -> tuple[np.ndarray, int]:
    """JointState -> (positions (P,) float64 in ``names`` order, stamp_ns).

    Every expected name must be present (missing -> error); names the caller does
    not expect are an error unless ``allow_extra`` (a robot often publishes more
    joints than the policy observes).
    """
    got = list(msg.name)
    if len(got) != len(msg.position):
        raise MessageError(f"joint state has {len(got)} names but {len(msg.position)} positions")
    if len(set(got)) != len(got):
        raise MessageError("joint state has repeated joint names")
    index = {n: i for i, n in enumerate(got)}
    missing = [n for n in names if n not in index]
    if missing:
        unknown = sorted(set(got) - set(names))
        raise MessageError(f"joint state lacks joints {missing} (it has unknown joints {unknown})")
    if not allow_extra:
        extra = sorted(set(got) - set(names))
        if extra:
            raise MessageError(f"joint state has unknown joints {extra}")
    pos = np.asarray(msg.position, dtype=np.float64)
    out = pos[[index[n] for n in names]] if names else np.zeros(0)
    if not np.all(np.isfinite(out)):
        raise MessageError("joint state positions have NaN or inf")
    return out, stamp_to_ns(msg.header.stamp)


def joint_state_to_msg(names: Sequence[str], positions: Sequence[float], stamp_ns: int = 0) -> JointState:
    msg = JointState()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.name = list(names)
    msg.position = [float(x) for x in positions]
    return msg


# --------------------------------------------------------------------------- one camera


def camera_frame_from_msgs(
    color: Image | None = None,
    depth: Image | None = None,
    info: CameraInfo | CameraIntrinsics | None = None,
    cloud: PointCloud2 | None = None,
    depth_mm: bool = False,
) -> CameraFrame:
    """The messages of one camera at one instant -> CameraFrame (dataset building and the node).

    Sizes are checked against the CameraInfo when there is one: the colour image
    and the depth aligned to it must both have the CameraInfo's size. ``depth_mm``: 16UC1
    depth stays uint16 millimetres, a view of the message (:func:`depth_raw_from_msg`; the
    same points, without converting the whole image).
    """
    intr = info if info is None or isinstance(info, CameraIntrinsics) else camera_info_from_msg(info)
    size = (intr.width, intr.height) if intr is not None else None
    frame = CameraFrame(intrinsics=intr)
    stamps = []
    if color is not None:
        frame.color = color_from_msg(color, size)
        stamps.append(stamp_to_ns(color.header.stamp))
    if depth is not None:
        frame.depth = (depth_raw_from_msg if depth_mm else depth_from_msg)(depth, size)
        if frame.color is not None and frame.color.shape[:2] != frame.depth.shape:
            raise MessageError(
                f"depth {frame.depth.shape[1]}x{frame.depth.shape[0]} is not aligned to colour "
                f"{frame.color.shape[1]}x{frame.color.shape[0]}"
            )
        stamps.append(stamp_to_ns(depth.header.stamp))
    if cloud is not None:
        frame.cloud, frame.cloud_colors = pointcloud_from_msg(cloud)
        stamps.append(stamp_to_ns(cloud.header.stamp))
    frame.stamp_ns = min(stamps) if stamps else 0
    return frame
