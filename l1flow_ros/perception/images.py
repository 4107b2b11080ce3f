"""Colour images: decoding and resizing to the size the model sees (opencv, no ROS).

Images inside the core are (H, W, 3) uint8 RGB. The model input is
(3, H, W) float32 in [0, 1]; the dataset stores the uint8 (3, H, W) form and
:func:`rgb_to_float` is the one conversion both training and the node apply.
"""

from __future__ import annotations

import cv2
import numpy as np

from l1flow_ros.perception.geometry import PerceptionError

COLOR_ENCODINGS = ("rgb8", "bgr8")


def decode_color(buf: bytes | np.ndarray) -> np.ndarray:
    """Compressed image bytes (JPEG / PNG) -> (H, W, 3) uint8 RGB."""
    arr = np.frombuffer(bytes(buf), dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR) if arr.size else None
    if img is None:
        raise PerceptionError("compressed image could not be decoded")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_rgb(img: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) uint8 in ``encoding`` -> (H, W, 3) uint8 RGB."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise PerceptionError(f"colour image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    if encoding == "rgb8":
        return img
    if encoding == "bgr8":
        return np.ascontiguousarray(img[:, :, ::-1])
    raise PerceptionError(f"colour encoding {encoding!r} not in {COLOR_ENCODINGS}")


def center_crop_box(h: int, w: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the largest centred crop with the output's aspect ratio."""
    target = out_w / out_h
    if w / h > target:  # too wide: crop columns
        cw = max(1, int(round(h * target)))
        x0 = (w - cw) // 2
        return 0, h, x0, x0 + cw
    ch = max(1, int(round(w / target)))
    y0 = (h - ch) // 2
    return y0, y0 + ch, 0, w


def resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8: centre crop to the aspect ratio, then area resize.

    Cropping (not stretching) keeps the geometry the encoder saw in training
    whatever the camera's aspect ratio.
    """
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise PerceptionError(f"model image size must be > 0, got {size}")
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        raise PerceptionError("empty image")
    y0, y1, x0, x1 = center_crop_box(h, w, out_h, out_w)
    crop = img[y0:y1, x0:x1]
    if crop.shape[:2] == (out_h, out_w):
        return np.ascontiguousarray(crop)
    # INTER_AREA when shrinking avoids aliasing; LINEAR when enlarging.
    interp = cv2.INTER_AREA if crop.shape[0] >= out_h else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (out_w, out_h), interpolation=interp)


def to_chw(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) uint8 (the dataset's layout)."""
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def rgb_to_float(rgb_u8: np.ndarray) -> np.ndarray:
    """uint8 (..., 3, H, W) -> float32 in [0, 1]; the single conversion used in training and the node."""
    # Division (not * 1/255) so the result is bit-identical to the usual `x.float() / 255`.
    return rgb_u8.astype(np.float32) / np.float32(255.0)
