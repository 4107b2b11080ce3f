"""The world around the nodes in the harness's process: the camera and the sensor faults it
can play (:class:`SensorState`), the probes on the chunk topic and /diagnostics, and the
publishers that inject bad embeddings and chunks (:class:`World`)."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from l1flow_ros.graph.faults.assets import CAM, CAMERA_HZ, CHUNK_DT, CHUNK_H, IMG_H, IMG_W, JOINTS, POISON
from l1flow_ros.graph.faults.guard import Controller

CAMERA_TOPICS = (f"/{CAM}/color/image_raw", f"/{CAM}/aligned_depth_to_color/image_raw", f"/{CAM}/color/camera_info")


@dataclass
class SensorState:
    """What the harness's camera and arm publish; a case changes it to inject a fault."""

    cameras: bool = True  # colour + depth published
    camera_info: bool = True
    joints: bool = True
    depth: str = "ok"  # ok | nan | inf | zero
    encoding: str = "rgb8"
    size: tuple[int, int] = (IMG_H, IMG_W)
    joint_names: tuple[str, ...] = (*JOINTS, "right_j0")
    stamp_offset_ns: int = 0

    @property
    def poisoned(self) -> bool:
        """A camera frame published in this state is invalid data. (Joint-state faults are not
        the frame's: a frame may still pair with a good joint state sent just before the
        change; those cases are judged by the stamps after the fault began.)"""
        return (self.depth != "ok" or self.encoding not in ("rgb8", "bgr8") or self.size != (IMG_H, IMG_W)
                or self.stamp_offset_ns != 0)


class World:
    """The harness's rclpy node in the main process: the camera, probes and injection
    publishers; the arm and the guard run in the :class:`Controller` process."""

    def __init__(self, context: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import GetState
        from rcl_interfaces.srv import SetParameters
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from std_srvs.srv import SetBool, Trigger
        from trajectory_msgs.msg import JointTrajectory

        self.node = Node("l1flow_faults", context=context)
        n = self.node
        rel = lambda d: QoSProfile(depth=d, reliability=ReliabilityPolicy.RELIABLE)  # noqa: E731
        self.lock = threading.Lock()
        self.sensors = SensorState()
        self.controller = Controller()
        self.poisoned_stamps: set[int] = set()
        self.injected_stamps: set[int] = set()  # embeddings / chunks the harness sent itself
        self.frames_sent = 0
        self.chunks: list[tuple[int, int, str]] = []  # (published ns, t_obs ns, fingerprint)
        self.embeddings: list[tuple[int, int, str]] = []  # (receive ns, t_obs ns, fingerprint)
        self.diags: list[tuple[int, str, int, str]] = []  # (receive ns, node, level, message)
        # Per node: (receive ns, header stamp ns, key/values) of every status it published.
        self.diag_values: dict[str, list[tuple[int, int, dict[str, str]]]] = {}
        self.info_sent_ns = 0  # when CameraInfo was last published
        self.sent: dict[str, list[tuple[int, int]]] = {t: [] for t in CAMERA_TOPICS}  # (publish ns, stamp)
        self.pub_color = n.create_publisher(Image, CAMERA_TOPICS[0], qos_profile_sensor_data)
        self.pub_depth = n.create_publisher(Image, CAMERA_TOPICS[1], qos_profile_sensor_data)
        self.pub_info = n.create_publisher(CameraInfo, CAMERA_TOPICS[2], qos_profile_sensor_data)
        self.pub_emb = n.create_publisher(Image, "/l1flow/embedding", rel(1))
        self.pub_chunk = n.create_publisher(JointTrajectory, "/l1flow/action_chunk", rel(10))  # as the inference node (qos.CHUNKS_OUT)
        n.create_subscription(JointTrajectory, "/l1flow/action_chunk", self._on_chunk, rel(100))
        n.create_subscription(Image, "/l1flow/embedding", self._on_embedding, rel(100))
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, rel(100))
        self.enable_cli = n.create_client(SetBool, "/l1flow/executor/enable")
        self.param_cli = n.create_client(SetParameters, "/inference_node/set_parameters")
        self.state_cli = n.create_client(GetState, "/inference_node/get_state")
        self.rec_start_cli = n.create_client(Trigger, "/recorder/start")
        self.rec_stop_cli = n.create_client(Trigger, "/recorder/stop")
        self.rng = np.random.default_rng(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._camera_loop, name="faults_camera", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.controller.close()

    def connect_controller(self) -> None:
        self.controller.request(op="connect")

    def disconnect_controller(self) -> None:
        self.controller.request(op="disconnect")

    # -- probes -------------------------------------------------------------------------------

    def _on_chunk(self, msg: Any, info: Any) -> None:
        """Kept by when it was published (the writer's source timestamp, same clock as
        time.time_ns()), not when this process got to it: a starved harness must not see gaps
        that the inference node did not make."""
        from l1flow_ros.msgs.chunk_conv import stamp_to_ns

        with self.lock:
            self.chunks.append((int(info["source_timestamp"]), stamp_to_ns(msg.header.stamp), msg.header.frame_id))

    def _on_embedding(self, msg: Any) -> None:
        from l1flow_ros.msgs.chunk_conv import stamp_to_ns

        with self.lock:
            self.embeddings.append((time.time_ns(), stamp_to_ns(msg.header.stamp), msg.header.frame_id))

    def _on_diag(self, msg: Any) -> None:
        from l1flow_ros.msgs.chunk_conv import stamp_to_ns

        now = time.time_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        with self.lock:
            for st in msg.status:
                lvl = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
                self.diags.append((now, st.name, lvl, st.message))
                self.diag_values.setdefault(st.name, []).append((now, stamp, {kv.key: kv.value for kv in st.values}))

    # -- sensors --------------------------------------------------------------------------------

    def set_sensors(self, **changes: Any) -> None:
        with self.lock:
            self.sensors = dataclasses.replace(self.sensors, **changes)
            s = self.sensors
        self.controller.request(op="joints", on=s.joints, names=list(s.joint_names), offset_ns=s.stamp_offset_ns)

    def clear_sensors(self) -> None:
        with self.lock:
            self.sensors = SensorState()
        self.set_sensors()

    def _camera_loop(self) -> None:
        period = 1.0 / CAMERA_HZ
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self._publish()
            except Exception:  # the context is going down
                if self._stop.is_set():
                    return
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()

    def _publish(self) -> None:
        from l1flow_ros.msgs.sensor_conv import camera_info_to_msg, image_to_msg
        from l1flow_ros.perception.geometry import CameraIntrinsics

        with self.lock:  # stamped with the state it was read with (see ArmGuard._js_loop)
            s = self.sensors
            stamp = time.time_ns() + s.stamp_offset_ns
        h, w = s.size
        if s.camera_info:
            intr = CameraIntrinsics(fx=40.0, fy=40.0, cx=(IMG_W - 1) / 2, cy=(IMG_H - 1) / 2, width=IMG_W,
                                    height=IMG_H)
            self.pub_info.publish(camera_info_to_msg(intr, stamp, CAM))
            with self.lock:
                self.info_sent_ns = time.time_ns()
                self.sent[CAMERA_TOPICS[2]].append((self.info_sent_ns, stamp))
        if not s.cameras:
            return
        rgb = self.rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        col = image_to_msg(rgb, "rgb8", stamp, CAM)
        if s.encoding != "rgb8":
            col.encoding = s.encoding
        if s.depth == "ok":
            dep = image_to_msg((self.rng.uniform(0.6, 1.4, (h, w)) * 1000).astype(np.uint16), "16UC1", stamp, CAM)
        elif s.depth == "zero":
            dep = image_to_msg(np.zeros((h, w), np.uint16), "16UC1", stamp, CAM)
        else:
            dep = image_to_msg(np.full((h, w), np.nan if s.depth == "nan" else np.inf, np.float32), "32FC1", stamp,
                               CAM)
        with self.lock:
            # A frame sent while CameraInfo is withheld is valid (a camera's intrinsics do not
            # change): encoding it once CameraInfo arrives is right. Chunks made while none
            # had arrived are caught by the no-valid-data window instead.
            if s.poisoned:
                self.poisoned_stamps.add(stamp)
            self.frames_sent += 1
        self.pub_color.publish(col)
        self.pub_depth.publish(dep)
        t = time.time_ns()
        with self.lock:
            self.sent[CAMERA_TOPICS[0]].append((t, stamp))
            self.sent[CAMERA_TOPICS[1]].append((t, stamp))

    # -- injections -----------------------------------------------------------------------------

    def send_embedding(self, fingerprint: str, dim: int = 32, value: float = 0.5, stamp_ns: int | None = None) -> int:
        from l1flow_ros.msgs.chunk_conv import embedding_to_msg

        stamp = time.time_ns() if stamp_ns is None else stamp_ns
        msg = embedding_to_msg(np.full(dim, value, np.float32), stamp, fingerprint)
        with self.lock:
            self.injected_stamps.add(stamp)
        self.pub_emb.publish(msg)
        return stamp

    def send_chunk(self, stamp_ns: int, names: tuple[str, ...] = JOINTS, target: tuple[float, ...] = POISON,
                   nan: bool = False, fingerprint: str = "faults:injected") -> None:
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from l1flow_ros.msgs.chunk_conv import ns_to_duration, ns_to_stamp

        msg = JointTrajectory()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = fingerprint
        msg.joint_names = list(names)
        for k in range(CHUNK_H):
            pt = JointTrajectoryPoint()
            pos = [float(target[i % len(target)]) for i in range(len(names))]
            if nan and k == CHUNK_H // 2:
                pos[0] = float("nan")
            pt.positions = pos
            pt.time_from_start = ns_to_duration(int((k + 1) * CHUNK_DT * 1e9))
            msg.points.append(pt)
        with self.lock:
            self.injected_stamps.add(stamp_ns)
        self.pub_chunk.publish(msg)

    def call(self, client: Any, request: Any, timeout: float = 15.0) -> Any:
        from l1flow_ros.nodes.composition import call_service

        return call_service(client, request, timeout)
