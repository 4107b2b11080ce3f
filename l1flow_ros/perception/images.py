"""Colour images: cropping and resizing to the size the model sees (opencv, no ROS).

Images inside the core are (H, W, 3) uint8 RGB; messages become such arrays in one place,
:mod:`l1flow_ros.msgs.sensor_conv` (encodings, row padding, byte order), for live and recorded
frames alike. The model input is (3, H, W) float32 in [0, 1]; the dataset stores the uint8
(3, H, W) form and :func:`rgb_to_float` is the one conversion both training and the node apply.
"""

from __future__ import annotations

import cv2
import numpy as np

from l1flow_ros.perception.geometry import PerceptionError


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
