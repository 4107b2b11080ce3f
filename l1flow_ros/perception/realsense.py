"""Direct pyrealsense2 input: several cameras by serial number, colour + depth aligned to colour.

An alternative to the realsense2_camera topics (``source: realsense`` in the
perception node): no image transport in between, and hardware timestamps.
Each camera runs its own capture thread; every complete colour + depth pair
becomes a :class:`~l1flow_ros.perception.preprocess.CameraFrame` (colour
(H, W, 3) uint8 RGB, depth (H, W) float32 metres aligned to colour with
``rs.align``, the colour stream's intrinsics) handed to ``on_frame(camera, frame)``.

Timestamps: frames in the ``global_time`` / ``system_time`` domains are
already host time (ms). ``hardware_clock`` frames (device time since boot)
are mapped to host time with the smallest observed host-minus-device offset,
i.e. the offset of the least-delayed frame, which tracks the device clock
without adding transport jitter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from l1flow_ros.perception.geometry import CameraIntrinsics
from l1flow_ros.perception.preprocess import CameraFrame


class RealSenseError(RuntimeError):
    """A RealSense camera that cannot be opened or streamed; the text says why."""


def intrinsics_from_rs(i: Any) -> CameraIntrinsics:
    """pyrealsense2 intrinsics -> CameraIntrinsics."""
    return CameraIntrinsics(
        fx=float(i.fx), fy=float(i.fy), cx=float(i.ppx), cy=float(i.ppy), width=int(i.width),
        height=int(i.height), distortion_model=str(i.model).split(".")[-1], distortion=tuple(float(c) for c in i.coeffs),
    )


class ClockMapper:
    """Device clock (ms) -> host clock (ns): host = device + min over recent frames of (arrival - device)."""

    def __init__(self, window: int = 300) -> None:
        self._offsets: list[int] = []
        self._window = int(window)

    def __call__(self, device_ms: float, arrival_ns: int) -> int:
        dev_ns = int(round(device_ms * 1e6))
        self._offsets.append(arrival_ns - dev_ns)
        if len(self._offsets) > self._window:
            del self._offsets[0]
        return dev_ns + min(self._offsets)


class FramesetConverter:
    """rs frameset (colour + depth) -> CameraFrame, or None when the set lacks one of them."""

    def __init__(self) -> None:
        import pyrealsense2 as rs

        self._rs = rs
        self._align = rs.align(rs.stream.color)
        self._clock = ClockMapper()

    def __call__(self, frameset: Any, arrival_ns: int | None = None) -> CameraFrame | None:
        rs = self._rs
        arrival_ns = time.time_ns() if arrival_ns is None else arrival_ns
        fs = frameset.as_frameset() if not isinstance(frameset, rs.composite_frame) else frameset
        if not fs.get_depth_frame() or not fs.get_color_frame():
            return None  # a partial set (a dropped frame): wait for the next
        fs = self._align.process(fs)  # depth resampled onto the colour image
        d, c = fs.get_depth_frame(), fs.get_color_frame()
        if not d or not c:
            return None
        depth = np.asanyarray(d.get_data()).astype(np.float32) * np.float32(d.get_units())  # (H, W) m
        color = np.asanyarray(c.get_data())
        fmt = c.profile.format()
        if fmt == rs.format.bgr8:
            color = color[:, :, ::-1]
        elif fmt != rs.format.rgb8:
            raise RealSenseError(f"colour format {fmt} is not rgb8 / bgr8")
        color = np.ascontiguousarray(color, dtype=np.uint8)  # copy: the rs buffer is recycled
        intr = intrinsics_from_rs(c.profile.as_video_stream_profile().get_intrinsics())
        domain = c.get_frame_timestamp_domain()
        if domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            stamp = int(round(c.get_timestamp() * 1e6))
        else:
            stamp = self._clock(c.get_timestamp(), arrival_ns)
        return CameraFrame(color=color, depth=depth, intrinsics=intr, stamp_ns=stamp)


class CameraLoop:
    """A capture thread: ``next_frameset(timeout_ms) -> (ok, frameset)``, converted, handed to ``on_frame``."""

    def __init__(
        self,
        camera: str,
        next_frameset: Callable[[int], tuple[bool, Any]],
        on_frame: Callable[[str, CameraFrame], None],
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.camera = camera
        self._next = next_frameset
        self._on_frame = on_frame
        self._on_error = on_error or (lambda cam, why: None)
        self._convert = FramesetConverter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"realsense_{camera}", daemon=True)
        self.frames = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok, fs = self._next(200)
                if not ok:
                    continue
                frame = self._convert(fs, time.time_ns())
            except Exception as e:  # a camera error is reported, the loop keeps trying
                self._on_error(self.camera, f"{type(e).__name__}: {e}")
                self._stop.wait(0.1)
                continue
            if frame is not None:
                self.frames += 1
                self._on_frame(self.camera, frame)


class RealSenseSource:
    """Cameras by serial number ({camera name: serial}), each streamed by its own rs.pipeline."""

    def __init__(
        self,
        serials: dict[str, str],
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        on_frame: Callable[[str, CameraFrame], None] | None = None,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.serials = dict(serials)
        self.size = (int(width), int(height))
        self.fps = int(fps)
        self._on_frame = on_frame or (lambda cam, f: None)
        self._on_error = on_error
        self._pipes: list[Any] = []
        self._loops: list[CameraLoop] = []

    def start(self) -> None:
        """Open every camera; raises RealSenseError naming the missing serials."""
        import pyrealsense2 as rs

        ctx = rs.context()
        present = [d.get_info(rs.camera_info.serial_number) for d in ctx.query_devices()]
        missing = [f"{c} ({s})" for c, s in self.serials.items() if s not in present]
        if missing:
            raise RealSenseError(f"RealSense camera(s) {missing} not connected; connected serials: {present}")
        w, h = self.size
        for cam, serial in self.serials.items():
            cfg = rs.config()
            cfg.enable_device(serial)
            cfg.enable_stream(rs.stream.color, w, h, rs.format.rgb8, self.fps)
            cfg.enable_stream(rs.stream.depth, w, h, rs.format.z16, self.fps)
            pipe = rs.pipeline(ctx)
            try:
                profile = pipe.start(cfg)
            except RuntimeError as e:
                self.stop()
                raise RealSenseError(f"camera {cam} ({serial}): cannot stream {w}x{h}@{self.fps}: {e}") from e
            for s in profile.get_device().query_sensors():
                if s.supports(rs.option.global_time_enabled):
                    s.set_option(rs.option.global_time_enabled, 1)  # host-clock timestamps
            self._pipes.append(pipe)
            loop = CameraLoop(cam, pipe.try_wait_for_frames, self._on_frame, self._on_error)
            self._loops.append(loop)
            loop.start()

    def stop(self) -> None:
        for loop in self._loops:
            loop.stop()
        for pipe in self._pipes:
            try:
                pipe.stop()
            except RuntimeError:
                pass  # already stopped
        self._loops.clear()
        self._pipes.clear()
