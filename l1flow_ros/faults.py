"""Fault injection through the real node graph: does the package fail safe?

The harness starts the real ``perception_node``, ``inference_node`` and ``executor_node``
one OS process per node, as ``ros2 launch`` (and ``l1flow run``) starts them
(:class:`l1flow_ros.graph.launcher.ProcessGraph`: each node's console script with
``--params-file``, the lifecycle inference node configured and activated; a node is
stopped, killed or restarted as a process), on a small untrained bundle (one RGB-D camera
with points + end-effector proprioception, exported for ONNX Runtime on the CPU). The
nodes' parameters are written to a parameter file next to the bundle (``faults_graph.yaml``),
their output to ``nodes.log``. The harness plays the world around them itself:

- a camera: colour (rgb8), aligned depth (16UC1) and CameraInfo at 10 Hz;
- an arm: ``/joint_states`` at 100 Hz whose position is the last command received on the
  forward-position controller topic (a perfect position controller), clipped to its bounds;
- a GUARD on the controller topic that checks every command on its own, without the
  executor's bookkeeping (rules below). The arm and the guard run in a process of their
  own (:class:`ArmGuard`), apart from the harness's camera and probes.

The harness never looks inside a node. What it knows of the nodes comes from what they
publish and from the operating system: /diagnostics (every node's level, message and
key/values, published every ``DIAG_PERIOD_S``; the executor's ``mode``, ``chunk_age_ms``,
``missed_ticks``, ``deadlines``, ``period_error_*_us``; perception's ``fingerprint`` and
``embeddings_published``), the chunk topic, the controller topic (the guard), each node's
process (alive or its exit code), and the inference node's lifecycle ``get_state`` service.
"The executor runs a chunk made from an observation stamped at or after t" is: its latest
status has mode ``track`` and header stamp - ``chunk_age_ms`` >= t (snapped to the stamp
of the chunk seen on the wire within the 0.1 ms rounding). "Nodes up": every process
running, every node on /diagnostics within the last 2 s, the executor's control deadlines
and perception's published embeddings advancing, the inference node ``active``.

Each case: wait until the graph streams normally, inject the fault, watch, clear it, and
wait for normal operation (a chunk made from fresh data run by the executor, the
nodes' /diagnostics back to OK). Recorded per case: what was injected, whether the nodes
stayed up, the /diagnostics reason seen, whether the arm was held, commands outside the
limits, commands that moved the arm while only invalid or stale data was on offer, chunks
made from invalid observations, recovery and its time, and control ticks missed.

Guard rules, for every command on the controller topic (A = 4 action dimensions):

1. finite, A values;
2. inside the configured position limits: ``lower - 1e-9 <= p <= upper + 1e-9``;
3. per-step change: ``|p_k - p_prev| <= max_velocity * (clip(dt_src, g T, 2 g T) + T) + 1e-9``
   per dimension, with ``T`` the control period, ``dt_src`` the difference of the two
   commands' middleware source timestamps (stamped when published, so bunching on the
   way to the guard does not matter) and ``g`` the difference of their publication
   sequence numbers (commands lost in transport in between; 1 normally). The elapsed time
   is taken as at least one period per command and at most two: the executor never
   integrates more than two periods in one tick, so after a stall, or after a gap in the
   stream (disabled, no subscriber), a command may not leap. One more period of slack
   covers the time between the executor reading its clock and publishing. After the
   guard (re)subscribes, the first command is judged against the arm's position.

"Arm held" (cases where only invalid or no data is on offer): after the fault starts, the
arm must come to rest within ``SETTLE_MAX_S`` (the executor's starvation rule: the running
chunk ends, the command reaches its last waypoint within the limits and stops; "at rest" =
all commands of the last ``REST_S`` within ``HOLD_TOL``), and then stay within ``HOLD_TOL``
of that position for ``HOLD_S`` until the fault is cleared. A command outside is counted
as a command from invalid data (no valid data exists in that window). For injected bad
chunks and embeddings the sensors are paused, so the executor comes to rest, and the bad
messages are sent during the hold; a bad chunk asks for a far-away position (``POISON``):
executing it would move the arm. Chunks on the wire made by the inference node from an
observation stamped after the fault began (``GRACE_S``), or from a stamp the harness
poisoned or an embedding it injected, are counted as chunks from invalid data.

Run it: ``l1flow faults`` (all cases) or ``l1flow faults --cases camera_stops,chunk_nan``;
``--markdown FILE`` / ``--json FILE`` write the table. ROS traffic stays on this machine
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a domain of its own, so a real arm on the
network never hears it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

JOINTS = ("ee_x", "ee_y", "ee_z", "gripper")
CAM = "cam"
IMG_H, IMG_W = 24, 32
RATE_HZ = 500.0
PERIOD_S = 1.0 / RATE_HZ
LOWER = (-0.5, -0.5, 0.0, -1.0)
UPPER = (0.5, 0.5, 0.5, 1.0)
MAX_VEL = (0.5, 0.5, 0.5, 10.0)
MAX_ACC = (5.0, 5.0, 5.0, 100.0)
HOME = (0.0, 0.0, 0.25, -1.0)  # where the simulated arm starts
POISON = (0.5, 0.5, 0.5, 1.0)  # the far-away target of poisoned chunks / observations
CAMERA_HZ = 10.0
JOINT_HZ = 100.0
CHUNK_H, CHUNK_DT = 8, 0.05  # horizon and dt of the bundle's chunks
FAULT_S = 1.6  # how long a fault lasts where the policy keeps running
REST_S = 0.25  # "at rest": every command of the last REST_S within HOLD_TOL of each other
SETTLE_MAX_S = 5.0  # the arm must come to rest within this after the fault starts
HOLD_S = 0.8  # then it must stay there this long (bad messages are injected meanwhile)
HOLD_TOL = 1e-3  # "held": within this of the position at the start of the hold window
# Chunks stamped this long after the fault began are made from faulty data: a camera frame
# may pair with a joint state up to the synchroniser's slop (0.02 s) older, published up to
# one joint-state period (0.01 s) before the change; twice that, to be safe.
GRACE_S = 0.1
# A chunk made from the last good observation may still arrive this long after the fault
# began (perception and inference drop observations older than 0.5 s): no hold before it.
MIN_SETTLE_S = 0.8
REASON_TIMEOUT_S = 10.0  # the fault lasts until the expected reason was seen, at most this long
RECOVER_TIMEOUT_S = 25.0
GEN_MARKER = "<!-- generated by `l1flow faults`: everything below this line is replaced -->"
CALIB_YAML = """cameras:
  cam:
    translation: [0.0, 0.0, 1.0]
    rotation: [1.0, 0.0, 0.0, 0.0]
"""


# ------------------------------------------------------------------------------- assets


def _bundle(out: Path, seed: int, action: Any = None, poison_nan: bool = False) -> str:
    """A small untrained bundle: camera ``cam`` (RGB + 64 points) + end-effector proprio."""
    from l1flow_ros.inference.synthetic import TINY_ACTION, make_bundle
    from l1flow_ros.perception.encoders import EncoderConfig
    from l1flow_ros.policy.model import ModelConfig
    from l1flow_ros.policy.unet import UnetConfig
    from l1flow_ros.spec import ObservationSpec

    obs = ObservationSpec(cameras=(CAM,), image_size=(IMG_H, IMG_W), num_points=64,
                          workspace=(-2, 2, -2, 2, -2, 2), voxel_size=0.01, proprio_names=JOINTS, n_obs_steps=2)
    enc = EncoderConfig(image_channels=(8, 16), image_keypoints=8, image_feature_dim=16, point_hidden=(16, 32),
                        point_feature_dim=16, proprio_hidden=16, proprio_feature_dim=8, out_dim=32, groups=4)
    cfg = ModelConfig(prediction="sample", encoder=enc, unet=UnetConfig(down_dims=(16, 32), groups=4,
                                                                          time_embed_dim=16), num_train_steps=100)
    act = action or dataclasses.replace(TINY_ACTION, horizon=CHUNK_H, dt=CHUNK_DT)
    return make_bundle(out, seed=seed, obs=obs, action=act, model_cfg=cfg, poison_nan=poison_nan)


def build_assets(root: str | Path, log: Callable[[str], None] = print) -> dict[str, str]:
    """The bundle (exported for onnxruntime), the calibration and the bad bundles of the swap cases."""
    from l1flow_ros.inference.export import export_bundle
    from l1flow_ros.inference.synthetic import TINY_ACTION

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    calib = root / "calibration.yaml"
    calib.write_text(CALIB_YAML)
    out["calibration"] = str(calib)
    good = root / "policy"
    if not (good / "policy.onnx").exists():
        log("faults: building and exporting the test bundle")
        _bundle(good, seed=1)
        export_bundle(good)
    out["bundle"] = str(good)
    out["missing"] = str(root / "does_not_exist")
    corrupt = root / "corrupt"
    if not corrupt.exists():
        shutil.copytree(good, corrupt)
        (corrupt / "manifest.json").write_text('{"format_version": 1, "observation": ')
    out["corrupt"] = str(corrupt)
    dims = root / "other_dims"
    if not (dims / "manifest.json").exists():
        _bundle(dims, seed=2, action=dataclasses.replace(TINY_ACTION, names=("j0", "j1", "j2"), gripper_indices=(),
                                                         horizon=CHUNK_H, dt=CHUNK_DT))
    out["other_dims"] = str(dims)
    nan = root / "nan_weights"
    if not (nan / "manifest.json").exists():
        _bundle(nan, seed=3, poison_nan=True)
    out["nan_weights"] = str(nan)
    out["other_gpu"] = str(_other_gpu_bundle(good, root / "other_gpu"))
    return out


OTHER_GPU = ("NVIDIA A100-SXM4-80GB", "8.0", "10.0.1.6")  # the identity recorded in the foreign engine


def _other_gpu_bundle(good: Path, dst: Path) -> Path:
    """The good bundle plus an engine cache whose engines were built on another GPU / TensorRT."""
    from l1flow_ros.inference.checkpoint import required_onnx
    from l1flow_ros.inference.engine_cache import DeviceIdentity, EngineCache, EngineKey, default_cache_dir
    from l1flow_ros.policy.bundle import read_manifest

    if not dst.exists():
        shutil.copytree(good, dst)
    cache = EngineCache(default_cache_dir(dst))
    ident = DeviceIdentity(*OTHER_GPU)
    for name in required_onnx(read_manifest(dst, check_weights=False)):
        key = EngineKey.for_onnx(dst / name, ident, "fp32")
        if cache.lookup(Path(name).stem, key) is None:
            cache.store(Path(name).stem, key, b"not a real engine: built elsewhere")
    return dst


# ------------------------------------------------------------------------------- results


@dataclass
class CaseResult:
    name: str
    injected: str
    survived: bool = False
    nodes_alive: bool = False
    behaviour: str = ""  # the reason seen on /diagnostics (or in the parameter answer)
    reasons: list[str] = field(default_factory=list)  # distinct non-OK statuses seen
    expected: str = ""  # regex of the reason the responsible node must give
    reason_seen: bool = False
    arm_held: str = "n/a"  # yes | no | n/a (the policy kept running) | no commands
    commands: int = 0  # commands the guard saw during the case
    outside_limits: int = 0
    from_invalid: int = 0  # commands that moved the arm while only invalid / stale data was on offer
    invalid_chunks: int = 0  # chunks on the wire made from an observation the harness poisoned
    recovered: bool = False
    recover_s: float = float("nan")
    missed_ticks: int = 0
    lost_commands: int = 0  # commands the guard never received (middleware sequence gaps)
    not_run: str = ""  # why the case could not run (then it is not counted as survived)
    notes: list[str] = field(default_factory=list)

    def judge(self) -> None:
        self.survived = (not self.not_run and self.nodes_alive and self.reason_seen and self.recovered
                         and self.outside_limits == 0 and self.from_invalid == 0 and self.invalid_chunks == 0
                         and self.arm_held not in ("no", "no commands"))


@dataclass
class Totals:
    tried: int
    survived: int
    not_run: int
    missed_ticks: int
    outside_limits: int
    from_invalid: int
    invalid_chunks: int
    lost_commands: int

    @property
    def ok(self) -> bool:
        # A case that could not run did not survive either.
        return (self.survived == self.tried and self.outside_limits == 0 and self.from_invalid == 0
                and self.invalid_chunks == 0)


def totals(results: list[CaseResult]) -> Totals:
    return Totals(
        tried=len(results),
        survived=sum(r.survived for r in results),
        not_run=sum(bool(r.not_run) for r in results),
        missed_ticks=sum(r.missed_ticks for r in results),
        outside_limits=sum(r.outside_limits for r in results),
        from_invalid=sum(r.from_invalid for r in results),
        invalid_chunks=sum(r.invalid_chunks for r in results),
        lost_commands=sum(r.lost_commands for r in results),
    )


# ------------------------------------------------------------------------------- the world around the nodes


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


class ArmGuard:
    """The simulated arm and the guard, in a process of their own (``python -m l1flow_ros.faults
    --controller``), so that checking 500 commands a second does not compete with the
    harness's camera and probes for one interpreter. One subscription on the controller topic: the arm follows
    every command (a perfect position controller) and the guard checks it; ``/joint_states``
    at 100 Hz reports the arm's position. Driven by JSON lines on stdin (see :meth:`handle`)."""

    def __init__(self, context: Any) -> None:
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState

        self.node = Node("l1flow_faults_arm", context=context)
        self.lock = threading.Lock()
        self.arm = np.array(HOME, dtype=np.float64)
        self.js_on, self.js_names, self.js_offset = True, [*JOINTS, "right_j0"], 0
        self.cmd_t: list[int] = []  # middleware source time of each command, ns
        self.cmd_p: list[list[float]] = []
        self.violations: list[tuple[int, str]] = []
        self.lost = 0  # commands that never arrived (sequence-number gaps)
        self._prev: tuple[int | None, int | None, np.ndarray] = (None, None, self.arm.copy())
        self._qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_js = self.node.create_publisher(JointState, "/joint_states",
                                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.sub = None
        self.connect()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._js_loop, name="faults_arm", daemon=True)
        self._thread.start()

    def connect(self) -> None:
        from std_msgs.msg import Float64MultiArray

        with self.lock:
            self._prev = (None, None, self.arm.copy())  # the first command is judged against the arm
        if self.sub is None:
            self.sub = self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                                     self._on_command, self._qos)

    def disconnect(self) -> None:
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub = None

    def _on_command(self, msg: Any, info: Any) -> None:
        t = int(info["source_timestamp"])
        seq = info.get("publication_sequence_number")
        p = np.asarray(msg.data, dtype=np.float64)
        with self.lock:
            why = None
            t0, seq0, p0 = self._prev
            gap = 1 if seq is None or seq0 is None else max(1, int(seq) - int(seq0))
            if seq is None and t0 is not None:  # no sequence numbers: infer lost commands from the time
                gap = max(1, int(round((t - t0) * 1e-9 / PERIOD_S)))
            if gap > 1:
                self.lost += gap - 1
            if p.shape != (len(JOINTS),) or not np.isfinite(p).all():
                why = f"not {len(JOINTS)} finite values: {list(msg.data)}"
            elif np.any(p < np.asarray(LOWER) - 1e-9) or np.any(p > np.asarray(UPPER) + 1e-9):
                why = f"outside position limits: {np.round(p, 4).tolist()}"
            else:
                # ``gap`` commands since the last one seen (lost ones in between), each at most two
                # periods of motion; at least one period each.
                dt = gap * PERIOD_S if t0 is None else min(max((t - t0) * 1e-9, gap * PERIOD_S), 2 * gap * PERIOD_S)
                step = np.abs(p - p0)
                allowed = np.asarray(MAX_VEL) * (dt + PERIOD_S) + 1e-9
                if np.any(step > allowed):
                    j = int(np.argmax(step / allowed))
                    why = f"{JOINTS[j]} moved {step[j]:.5f} in one command (allowed {allowed[j]:.5f})"
            if why is not None:
                self.violations.append((t, why))
            if p.shape == (len(JOINTS),):
                self.cmd_t.append(t)
                self.cmd_p.append(p.tolist())
                if np.isfinite(p).all():
                    self._prev = (t, None if seq is None else int(seq), p)
                    self.arm = np.clip(p, LOWER, UPPER)  # a real arm stops at its bounds

    def _js_loop(self) -> None:
        from l1flow_ros.msgs.sensor_conv import joint_state_to_msg

        next_t = time.monotonic()
        while not self._stop.is_set():
            with self.lock:  # stamped with the state it was read with: a change orders with stamps
                on, names, arm = self.js_on, list(self.js_names), self.arm.copy()
                stamp = time.time_ns() + self.js_offset
            if on:
                pos = [float(arm[JOINTS.index(n)]) if n in JOINTS else 0.0 for n in names]
                try:
                    self.pub_js.publish(joint_state_to_msg(names, pos, stamp))
                except Exception:  # the context is going down
                    return
            next_t += 1.0 / JOINT_HZ
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "joints":
            with self.lock:
                self.js_on, self.js_names, self.js_offset = bool(req["on"]), list(req["names"]), int(req["offset_ns"])
        elif op == "connect":
            self.connect()
        elif op == "disconnect":
            self.disconnect()
        elif op == "since":  # commands with source time >= t (the recent ones; cheap)
            t0 = int(req["t"])
            with self.lock:
                k = len(self.cmd_t)
                while k > 0 and self.cmd_t[k - 1] >= t0:
                    k -= 1
                return {"t": self.cmd_t[k:], "p": self.cmd_p[k:]}
        elif op == "report":
            i, j = int(req.get("cmd", 0)), int(req.get("viol", 0))
            with self.lock:
                return {"t": self.cmd_t[i:], "p": self.cmd_p[i:], "n_cmd": len(self.cmd_t),
                        "violations": self.violations[j:], "n_viol": len(self.violations), "lost": self.lost,
                        "arm": self.arm.tolist()}
        else:
            return {"error": f"unknown op {op!r}"}
        return {"ok": True}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.node.destroy_node()


def _controller_main() -> int:
    """``python -m l1flow_ros.faults --controller``: the ArmGuard process."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ag = ArmGuard(ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(ag.node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    print(json.dumps({"ok": True}), flush=True)
    try:
        for line in sys.stdin:
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            print(json.dumps(ag.handle(req)), flush=True)
    finally:
        ex.shutdown(timeout_sec=2.0)
        ag.close()
        ctx.try_shutdown()
    return 0


class Controller:
    """The main process's handle on the ArmGuard process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-m", "l1flow_ros.faults", "--controller"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=dict(os.environ))
        if not self._read().get("ok"):
            raise RuntimeError("the arm / guard process did not start")

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the arm / guard process exited (code {self.proc.poll()})")
        return json.loads(line)

    def request(self, **req: Any) -> dict[str, Any]:
        with self.lock:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10.0)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


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
        from std_srvs.srv import SetBool
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
        self.chunks: list[tuple[int, int, str]] = []  # (receive ns, t_obs ns, fingerprint)
        self.diags: list[tuple[int, str, int, str]] = []  # (receive ns, node, level, message)
        # Per node: (receive ns, header stamp ns, key/values) of every status it published.
        self.diag_values: dict[str, list[tuple[int, int, dict[str, str]]]] = {}
        self.info_sent_ns = 0  # when CameraInfo was last published
        self.pub_color = n.create_publisher(Image, f"/{CAM}/color/image_raw", qos_profile_sensor_data)
        self.pub_depth = n.create_publisher(Image, f"/{CAM}/aligned_depth_to_color/image_raw", qos_profile_sensor_data)
        self.pub_info = n.create_publisher(CameraInfo, f"/{CAM}/color/camera_info", qos_profile_sensor_data)
        self.pub_emb = n.create_publisher(Image, "/l1flow/embedding", rel(1))
        self.pub_chunk = n.create_publisher(JointTrajectory, "/l1flow/action_chunk", rel(1))
        n.create_subscription(JointTrajectory, "/l1flow/action_chunk", self._on_chunk, rel(100))
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, rel(100))
        self.enable_cli = n.create_client(SetBool, "/l1flow/executor/enable")
        self.param_cli = n.create_client(SetParameters, "/inference_node/set_parameters")
        self.state_cli = n.create_client(GetState, "/inference_node/get_state")
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

    def _on_chunk(self, msg: Any) -> None:
        from l1flow_ros.msgs.chunk_conv import stamp_to_ns

        with self.lock:
            self.chunks.append((time.time_ns(), stamp_to_ns(msg.header.stamp), msg.header.frame_id))

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


# ------------------------------------------------------------------------------- the graph


NODES = ("executor_node", "perception_node", "inference_node")  # started in this order
DIAG_PERIOD_S = 0.1  # the nodes' diagnostics_period: the harness reads their state from /diagnostics


def _params(assets: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        "perception_node": {
            "cameras": [CAM], "checkpoint": "", "calibration_file": assets["calibration"],
            "encoder_backend": "onnxruntime", "max_observation_age": 0.5, "slop": 0.02,
            "diagnostics_period": DIAG_PERIOD_S,
        },
        "inference_node": {
            "checkpoint": assets["bundle"], "backend": "onnxruntime", "providers": ["CPUExecutionProvider"],
            "threads": 1, "warmup_iterations": 1, "max_observation_age": 0.5,
            "diagnostics_period": DIAG_PERIOD_S,
        },
        "executor_node": {
            "joint_names": list(JOINTS), "rate_hz": RATE_HZ, "output": "forward_position",
            "latency_margin": 0.01, "max_age": 1.0, "max_future": 0.1,
            "lower": list(LOWER), "upper": list(UPPER), "max_velocity": list(MAX_VEL),
            "max_acceleration": list(MAX_ACC), "gripper_joints": ["gripper"], "gripper_binary": False,
            "start_enabled": True, "diagnostics_period": DIAG_PERIOD_S,
        },
    }


def write_params(assets: dict[str, str], path: str | Path) -> Path:
    """The nodes' parameters as a ROS 2 parameter file (``--params-file`` format)."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump({name: {"ros__parameters": _params(assets)[name]} for name in NODES},
                                   sort_keys=False))
    return path


def _float(values: dict[str, str], key: str) -> float:
    try:
        return float(values.get(key, "nan"))
    except ValueError:
        return float("nan")


@dataclass(frozen=True)
class ExecutorState:
    """One /diagnostics status of the executor node."""

    stamp_ns: int  # the status's header stamp: when the executor took these values
    mode: str  # hold | track | starved
    t_obs_ns: int | None  # observation stamp of the running chunk (stamp - chunk_age_ms)
    values: dict[str, str]


class Harness:
    """The node graph (one process per node), the world around it, and the case runner."""

    def __init__(self, assets: dict[str, str], log: Callable[[str], None] = print,
                 camera_info_at_start: bool = True) -> None:
        self.assets = assets
        self.log = log
        self.camera_info_at_start = camera_info_at_start
        self.context = None
        self.executor = None
        self.graph: Any = None  # l1flow_ros.graph.launcher.ProcessGraph
        self.started_ns: dict[str, int] = {}  # when each node's current process was started
        self.world: World | None = None
        self._spinner: threading.Thread | None = None
        self.fingerprint = ""
        self.exit_codes: dict[str, int] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start the world, then the nodes (one process each, the inference node configured and
        activated); with CameraInfo at start, wait until the graph streams. Call it from a
        thread that lives as long as the harness: the node processes are tied to it."""
        import rclpy

        from l1flow_ros.graph.launcher import ProcessGraph
        from l1flow_ros.nodes.composition import make_executor
        from l1flow_ros.policy.bundle import read_manifest

        root = Path(self.assets["calibration"]).parent
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.world = World(self.context)
        self.world.set_sensors(camera_info=self.camera_info_at_start)
        self.executor = make_executor([self.world.node], self.context)  # not the stock multi-threaded one
        self._spinner = threading.Thread(target=self.executor.spin, name="faults_spin", daemon=True)
        self._spinner.start()
        self.world.start()
        self.fingerprint = read_manifest(self.assets["bundle"], check_weights=False).fingerprint
        log_file = root / "nodes.log"
        self.log(f"faults: node output in {log_file}")
        self.graph = ProcessGraph(write_params(self.assets, root / "faults_graph.yaml"), NODES, log_file=log_file)
        t = time.time_ns()
        self.graph.start()
        self.started_ns = dict.fromkeys(NODES, t)
        if self.camera_info_at_start:
            if not self.wait(self.streaming, timeout):
                raise RuntimeError(f"the node graph did not start streaming (see {log_file})")

    def stop_node(self, name: str, sig: int) -> int:
        """Stop one node's process with ``sig`` (SIGKILL after 10 s); its exit code."""
        return self.graph.stop_node(name, sig)

    def restart_node(self, name: str) -> None:
        """Stop the node's process (SIGINT) if it runs and start a new one with the same
        parameters (the inference node configured and activated again)."""
        self.graph.restart_node(name)
        self.started_ns[name] = time.time_ns()

    def close(self) -> None:
        if self.graph is not None:
            self.exit_codes = self.graph.stop()
        if self.world is not None:
            self.world.stop()
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=5.0)
        if self.world is not None:
            self.world.node.destroy_node()
        if self.context is not None:
            self.context.try_shutdown()
        if self._spinner is not None:
            self._spinner.join(timeout=5.0)

    # -- state queries (what the nodes publish) -----------------------------------------------

    @staticmethod
    def wait(cond: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(poll)
        return cond()

    def _executor_state(self, rx: int, stamp: int, values: dict[str, str]) -> ExecutorState:
        # chunk_age_ms = stamp - observation stamp of the running chunk, rounded to 0.1 ms: the
        # chunk on the wire whose stamp it names (within that rounding) gives the exact stamp.
        age = _float(values, "chunk_age_ms")
        t_obs = None
        if age == age:
            t_obs = stamp - int(round(age * 1e6))
            with self.world.lock:
                near = [t for _, t, _ in self.world.chunks[-200:] if abs(t - t_obs) <= 100_000]
            if near:
                t_obs = min(near, key=lambda t: abs(t - t_obs))
        return ExecutorState(stamp, values.get("mode", ""), t_obs, values)

    def executor_state(self, after_ns: int | None = None, timeout: float = 5.0) -> ExecutorState | None:
        """The executor's latest /diagnostics status; with ``after_ns``, wait (at most
        ``timeout``) for one stamped at or after it (None if none came)."""
        end = time.monotonic() + timeout
        while True:
            with self.world.lock:
                last = (self.world.diag_values.get("executor_node") or [None])[-1]
            if last is not None and (after_ns is None or last[1] >= after_ns):
                return self._executor_state(*last)
            if after_ns is None or time.monotonic() > end:
                return None
            time.sleep(0.01)

    def missed_ticks(self, after_ns: int | None = None) -> int:
        """The executor's missed control ticks (cumulative, from /diagnostics)."""
        st = self.executor_state(after_ns)
        v = _float(st.values, "missed_ticks") if st is not None else float("nan")
        return 0 if v != v else int(v)

    @staticmethod
    def _runs_chunk_since(st: ExecutorState | None, t_ns: int) -> bool:
        return st is not None and st.mode == "track" and st.t_obs_ns is not None and st.t_obs_ns >= t_ns

    def accepted_since(self, t_ns: int) -> bool:
        """The executor runs a chunk made from an observation stamped at or after ``t_ns``
        (its latest /diagnostics: mode track, header stamp - chunk_age_ms >= t_ns)."""
        return self._runs_chunk_since(self.executor_state(), t_ns)

    def first_accepted_since(self, t_ns: int) -> int | None:
        """The stamp of the first executor status (stamped at or after ``t_ns``) that reports
        running a chunk made from an observation stamped at or after ``t_ns``."""
        with self.world.lock:
            hist = list(self.world.diag_values.get("executor_node", ()))
        k = len(hist)
        while k > 0 and hist[k - 1][1] >= t_ns:
            k -= 1
        for rx, stamp, values in hist[k:]:
            if self._runs_chunk_since(self._executor_state(rx, stamp, values), t_ns):
                return stamp
        return None

    def last_level(self, node: str, since_ns: int) -> int | None:
        with self.world.lock:
            for t, name, lvl, _ in reversed(self.world.diags):
                if t < since_ns:
                    return None
                if name == node:
                    return lvl
        return None

    def last_values(self, node: str, since_ns: int) -> dict[str, str] | None:
        """The key/values of the node's latest status stamped at or after ``since_ns``."""
        with self.world.lock:
            hist = self.world.diag_values.get(node) or []
            return dict(hist[-1][2]) if hist and hist[-1][1] >= since_ns else None

    def streaming(self) -> bool:
        """Chunks from fresh observations reach the executor and perception reports OK."""
        now = time.time_ns()
        return self.accepted_since(now - int(0.3e9)) and self.last_level("perception_node", now - int(0.6e9)) == 0

    def healthy_since(self, t_ns: int) -> bool:
        return (self.accepted_since(t_ns) and self.last_level("perception_node", t_ns) == 0
                and self.last_level("inference_node", t_ns) == 0)

    def inference_state(self) -> str:
        """The inference node's lifecycle state, asked through its get_state service."""
        from lifecycle_msgs.srv import GetState

        try:
            return self.world.call(self.world.state_cli, GetState.Request(), timeout=5.0).current_state.label
        except RuntimeError as e:
            return f"unknown ({e})"

    def alive_problems(self) -> list[str]:
        """Why the graph is not up, from outside: a node process that ended; a node silent on
        /diagnostics for 2 s; the executor's control deadlines not advancing (control thread
        gone); perception publishing no embeddings (its worker gone); the inference node
        not active (lifecycle get_state); the harness's own spinner gone."""
        out = [f"{n} exited with code {rc}" for n, rc in self.graph.exited().items()]
        if self._spinner is None or not self._spinner.is_alive():
            out.append("the harness's executor stopped")
        since = time.time_ns() - int(2e9)
        with self.world.lock:
            recent = {n: [v for rx, _, v in hist if rx > since] for n, hist in self.world.diag_values.items()}
        for name in NODES:
            if not recent.get(name):
                out.append(f"{name}: no /diagnostics for 2 s")
        for name, key, what in (("executor_node", "deadlines", "control deadlines"),
                                ("perception_node", "embeddings_published", "embeddings published")):
            vals = [_float(v, key) for v in recent.get(name, ())]
            if len(vals) >= 2 and not vals[-1] > vals[0]:
                out.append(f"{name}: {what} not advancing over the last 2 s ({vals[0]:.0f})")
        state = self.inference_state()
        if state != "active":
            out.append(f"inference_node: lifecycle state {state}")
        return out

    def nodes_alive(self) -> bool:
        return not self.alive_problems()

    # -- one case --------------------------------------------------------------------------------

    def _restart_exited(self, res: CaseResult) -> None:
        """A node process that ended (crashed) is reported with its last output and started
        again, so that the next case finds the whole graph."""
        for name in list(self.graph.exited()):
            res.notes.append(f"{name}'s last output: {_short(self.graph.tail(name, 5), 400)}")
            try:
                self.restart_node(name)
            except RuntimeError as e:
                res.notes.append(f"{name} could not be restarted: {e}")

    def run_case(self, case: Case) -> CaseResult:
        res = CaseResult(case.name, case.injected, expected=case.expect[1] if case.expect else "")
        w = self.world
        if case.needs_streaming and not w.sensors.camera_info:  # started without CameraInfo
            w.set_sensors(camera_info=True)
        if case.needs_streaming and not self.wait(self.streaming, RECOVER_TIMEOUT_S):
            res.not_run = "the graph was not streaming normally before the case"
            res.notes += self.alive_problems()
            res.nodes_alive = not res.notes
            self._restart_exited(res)
            return res
        rep0 = w.controller.request(op="report", cmd=1 << 62, viol=1 << 62)
        with w.lock:
            i_chunk, i_diag = len(w.chunks), len(w.diags)
        missed0 = self.missed_ticks()
        ctx = CaseContext(self, res, time.time_ns(), case)
        try:
            case.run(ctx)
        except Exception as e:  # a harness failure is reported, never hidden
            res.not_run = f"harness error: {type(e).__name__}: {e}"
            w.clear_sensors()
            w.connect_controller()
        res.missed_ticks = self.missed_ticks() - missed0
        problems = self.alive_problems()
        res.nodes_alive = not problems
        res.notes += problems
        self._restart_exited(res)
        time.sleep(0.05)  # commands still on their way to the guard
        rep = w.controller.request(op="report", cmd=rep0["n_cmd"], viol=rep0["n_viol"])
        cmd_t = np.asarray(rep["t"], dtype=np.int64)
        cmd_p = np.asarray(rep["p"], dtype=np.float64).reshape(-1, len(JOINTS))
        viol = rep["violations"]
        res.lost_commands = rep["lost"] - rep0["lost"]
        with w.lock:
            chunks = w.chunks[i_chunk:]
            diags = w.diags[i_diag:]
            poisoned = set(w.poisoned_stamps)
            injected = set(w.injected_stamps)
        res.commands = int(cmd_t.size)
        res.outside_limits = len(viol)
        res.notes += [f"guard: {why}" for _, why in viol[:3]]
        # Chunks the inference node made from a poisoned observation or an injected embedding
        # (the harness's own chunks carry a "faults:" fingerprint).
        late = ctx.onset + int(GRACE_S * 1e9)
        bad = [(t_rx, t_obs) for t_rx, t_obs, fp in chunks
               if not fp.startswith("faults:") and (t_obs in poisoned or t_obs in injected
                                                    or (ctx.no_valid_data and late <= t_obs and t_rx <= ctx.cleared_at))]
        res.invalid_chunks = len(bad)
        res.notes += [f"chunk from invalid data: observation {(t_obs - ctx.onset) * 1e-6:.0f} ms after the fault "
                      f"began, received {(t_rx - ctx.onset) * 1e-6:.0f} ms after (cleared at "
                      f"{(ctx.cleared_at - ctx.onset) * 1e-6:.0f} ms)" for t_rx, t_obs in bad[:3]]
        if ctx.hold is not None:
            t0, t1 = ctx.hold
            m = (cmd_t >= t0) & (cmd_t <= t1)
            if ctx.expect_silence:
                res.arm_held = "yes (no commands)" if not m.any() else "no"
                res.from_invalid = int(m.sum())
            elif not m.any():
                res.arm_held = "no commands"
            else:
                dev = np.abs(cmd_p[m] - cmd_p[m][0]).max(axis=1)
                res.from_invalid = int((dev > HOLD_TOL).sum())
                res.arm_held = "yes" if res.from_invalid == 0 else "no"
        seen: list[str] = []  # distinct statuses, non-OK ones (the faults) for the report
        everything: list[str] = []
        for _, name, lvl, msg in diags:
            s = f"{name.replace('_node', '')}: {msg}"
            if s not in everything:
                everything.append(s)
            if lvl > 0 and s not in seen:
                seen.append(s)
        res.reasons = seen + ctx.answers
        if case.expect:
            node, pattern = case.expect
            prefix = node.replace("_node", "") + ": "
            # A status message may list several problems ("a; b"): the one that matches.
            hits = [prefix + part for s in everything + ctx.answers if s.startswith(prefix)
                    for part in s[len(prefix):].split("; ") if re.search(pattern, part)]
            res.reason_seen = bool(hits)
            res.behaviour = hits[0] if hits else "expected reason not seen; " + "; ".join(res.reasons[:2])
        else:
            res.reason_seen = True
            res.behaviour = "; ".join(res.reasons[:2]) or "no fault reported"
        if ctx.behaviour:
            res.behaviour = ctx.behaviour
        root = str(Path(self.assets["bundle"]).resolve().parent)
        res.behaviour = _short(res.behaviour.replace(root, "$WORKDIR"))
        res.reasons = [x.replace(root, "$WORKDIR") for x in res.reasons]
        res.notes = [x.replace(root, "$WORKDIR") for x in res.notes]
        if ctx.recovered_at is not None:
            res.recovered = True
            res.recover_s = round((ctx.recovered_at - ctx.cleared_at) * 1e-9, 2)
        res.judge()
        return res


def _short(text: str, n: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class CaseContext:
    """What a case function uses: time marks, the world, and the recovery wait."""

    def __init__(self, h: Harness, res: CaseResult, t0: int, case: Case | None = None) -> None:
        self.case = case
        self.h = h
        self.w = h.world
        self.res = res
        self.t0 = t0
        self.onset: int = t0
        self.hold: tuple[int, int] | None = None
        self.hold_start: int | None = None
        self.no_valid_data = False  # only invalid or no data on offer between onset and clear
        self.expect_silence = False
        self.cleared_at: int = t0
        self.recovered_at: int | None = None
        self.answers: list[str] = []  # parameter-set answers etc., as "node: reason"
        self.behaviour = ""  # what the case saw, where no node reason is expected

    def fault(self, **sensor_changes: Any) -> None:
        if sensor_changes:
            self.w.set_sensors(**sensor_changes)  # returns once the arm process applied it
        self.onset = time.time_ns()

    def settle(self) -> None:
        """Wait until the arm is at rest (the executor's starvation rule: the running chunk
        ends, the command reaches its last waypoint within the limits and stops); the hold
        window starts then. Not at rest within SETTLE_MAX_S: the window starts anyway."""
        self.no_valid_data = True
        end = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < end:
            time.sleep(0.05)
            now = time.time_ns()
            if now - self.onset < MIN_SETTLE_S * 1e9:
                continue
            rep = self.w.controller.request(op="since", t=now - int(REST_S * 1e9))
            t, p = np.asarray(rep["t"], dtype=np.int64), np.asarray(rep["p"]).reshape(-1, len(JOINTS))
            if t.size and t[0] < now - int(0.8 * REST_S * 1e9) and np.ptp(p, axis=0).max() <= HOLD_TOL:
                self.hold_start = int(t[0])
                return
            if not t.size and self.expect_silence:
                self.hold_start = now
                return
        self.res.notes.append(f"the arm was not at rest {SETTLE_MAX_S} s after the fault began")
        self.hold_start = time.time_ns()

    def wait_reason(self, timeout: float = REASON_TIMEOUT_S) -> None:
        """Keep the fault on until the responsible node has given the expected reason (a
        loaded machine may take a few diagnostics periods), at most ``timeout``."""
        if self.case is None or self.case.expect is None:
            return
        node, pattern = self.case.expect
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.w.lock:
                msgs = [m for t, n, _, m in self.w.diags if t >= self.onset and n == node]
            if any(re.search(pattern, part) for m in msgs for part in m.split("; ")):
                return
            time.sleep(0.05)

    def end_hold(self) -> None:
        self.hold = (self.hold_start or self.onset, time.time_ns())

    def clear(self, **sensor_changes: Any) -> None:
        self.cleared_at = time.time_ns()
        if sensor_changes:
            self.w.set_sensors(**sensor_changes)
        else:
            self.w.clear_sensors()

    def wait_recovered(self, since: int | None = None, timeout: float = RECOVER_TIMEOUT_S) -> None:
        """Normal operation again: the executor reports running a chunk made from an
        observation stamped after the clear (recovered at the stamp of the first such report)
        and perception and inference report OK."""
        t = self.cleared_at if since is None else since
        end = time.monotonic() + timeout
        first = None
        while time.monotonic() < end:
            if first is None:
                first = self.h.first_accepted_since(t)
            if first is not None and self.h.healthy_since(t):
                self.recovered_at = first
                return
            time.sleep(0.02)


@dataclass(frozen=True)
class Case:
    name: str
    injected: str
    run: Callable[[CaseContext], None]
    expect: tuple[str, str] | None  # (node, regex of its /diagnostics message)
    needs_streaming: bool = True


# ------------------------------------------------------------------------------- the cases


def _held(inject: Callable[[CaseContext], None] | None = None, **fault: Any) -> Callable[[CaseContext], None]:
    """Fault on; the arm must come to rest and stay there while ``inject`` sends bad messages
    (no valid data is on offer meanwhile); fault off; normal operation must resume."""

    def run(c: CaseContext) -> None:
        c.fault(**fault)
        c.settle()
        end = time.monotonic() + HOLD_S
        while time.monotonic() < end:
            if inject is not None:
                inject(c)
            time.sleep(HOLD_S / 5)
        if inject is not None:
            inject(c)
        c.wait_reason()
        c.end_hold()
        c.clear()
        c.wait_recovered()

    return run


def _camera_info_never(c: CaseContext) -> None:
    h = c.h
    with c.w.lock:
        info_sent = c.w.info_sent_ns >= h.started_ns["perception_node"]
    if info_sent:  # this perception process may have seen CameraInfo: start a new one, none sent
        c.w.set_sensors(camera_info=False)
        h.restart_node("perception_node")
        c.res.notes.append("perception node process restarted (SIGINT, then started again)")
    # The encoder loads once the inference node announces its bundle (seconds on a busy machine):
    # perception's /diagnostics then name its fingerprint.
    t = h.started_ns["perception_node"]
    if not h.wait(lambda: bool((h.last_values("perception_node", t) or {}).get("fingerprint")), 120.0):
        c.res.notes.append("perception reported no encoder 120 s after its start")
    c.fault(camera_info=False)
    c.settle()
    time.sleep(HOLD_S)
    c.wait_reason()
    c.end_hold()
    c.clear()
    c.wait_recovered()


def _emb_unknown(c: CaseContext) -> None:
    c.w.send_embedding("0123456789abcdef")


def _emb_nan(c: CaseContext) -> None:
    c.w.send_embedding(c.h.fingerprint, value=float("nan"))


def _emb_dim(c: CaseContext) -> None:
    c.w.send_embedding(c.h.fingerprint, dim=7)


def _chunk(offset_s: float = 0.0, **kw: Any) -> Callable[[CaseContext], None]:
    def inject(c: CaseContext) -> None:
        c.w.send_chunk(time.time_ns() + int(offset_s * 1e9), **kw)

    return inject


def _chunk_out_of_limits(c: CaseContext) -> None:
    """A valid chunk whose targets lie far outside the position limits: clamped, never sent."""
    c.fault(cameras=False)
    time.sleep(0.5)
    t0 = time.time_ns()
    for _ in range(4):
        c.w.send_chunk(time.time_ns(), target=(5.0, -5.0, 5.0, 5.0), fingerprint="faults:out_of_limits")
        time.sleep(0.2)
    rep = c.w.controller.request(op="since", t=t0)
    p = np.asarray(rep["p"]).reshape(-1, len(JOINTS))
    if p.size:
        reached = ", ".join(f"{n} {lo:+.3f}..{hi:+.3f}" for n, lo, hi in zip(JOINTS, p.min(0), p.max(0)))
        c.behaviour = f"executor: clamped to the limits; commands spanned {reached}"
    c.clear()
    c.wait_recovered()


def _no_subscriber(c: CaseContext) -> None:
    c.fault()
    c.w.disconnect_controller()
    time.sleep(FAULT_S)
    c.wait_reason()
    c.clear()
    c.w.connect_controller()
    c.wait_recovered()


def _disable_enable(c: CaseContext) -> None:
    from std_srvs.srv import SetBool

    c.fault()
    ans = c.w.call(c.w.enable_cli, SetBool.Request(data=False))
    t_off = time.time_ns()
    c.answers.append(f"executor (service answer): {ans.message}")
    time.sleep(1.0)
    c.wait_reason()
    c.hold = (t_off + int(2 * PERIOD_S * 1e9), time.time_ns())
    c.expect_silence = True
    c.cleared_at = time.time_ns()
    ans = c.w.call(c.w.enable_cli, SetBool.Request(data=True))
    c.answers.append(f"executor (service answer): {ans.message}")
    c.wait_recovered()


def _inference_down(sig: int) -> Callable[[CaseContext], None]:
    """The graph's inference node process stopped with ``sig`` while the executor streams
    (SIGINT: a clean shutdown; SIGKILL: no clean shutdown, no last message); once the arm is
    held, a new process is started, configured and activated (the clear)."""

    def run(c: CaseContext) -> None:
        h = c.h
        pid = h.graph.procs["inference_node"].popen.pid
        c.fault()
        try:
            rc = h.stop_node("inference_node", sig)
            c.res.notes.append(f"inference node process {pid} stopped with {signal.Signals(sig).name}, exit code {rc}")
            c.settle()
            time.sleep(HOLD_S)
            c.wait_reason()
            c.end_hold()
        finally:
            c.clear()
            t = time.monotonic()
            h.restart_node("inference_node")
            c.res.notes.append(f"new inference node process configured and active {time.monotonic() - t:.1f} s "
                               "after its start")
        c.wait_recovered()

    return run


def _cpu_starvation(c: CaseContext) -> None:
    n = os.cpu_count() or 2
    h = c.h
    st0 = h.executor_state()
    d0, m0 = _float(st0.values, "deadlines"), _float(st0.values, "missed_ticks")
    c.fault()
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(4.0)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    t_end = time.time_ns()
    c.res.notes.append(f"{n} busy processes (one per core) for 4 s")
    # The executor's /diagnostics before the load and the first one after it: cumulative
    # counts, so the difference spans the whole load (and up to one diagnostics period more).
    st1 = h.executor_state(after_ns=t_end, timeout=10.0)
    if st1 is None:
        raise RuntimeError("no executor /diagnostics within 10 s after the load ended")
    dl, ms = _float(st1.values, "deadlines") - d0, _float(st1.values, "missed_ticks") - m0
    c.behaviour = (f"executor: streamed on; {ms:.0f} of {dl:.0f} control deadlines missed "
                   f"({100 * ms / max(dl, 1):.0f} %)")
    v = st1.values
    c.res.notes.append(f"executor period error over its timing window (/diagnostics): p50 "
                       f"{_float(v, 'period_error_p50_us'):.0f} us, p99 {_float(v, 'period_error_p99_us'):.0f} us, "
                       f"max {_float(v, 'period_error_max_us'):.0f} us")
    c.clear()
    c.wait_recovered()


def _swap(key: str) -> Callable[[CaseContext], None]:
    def run(c: CaseContext) -> None:
        from rcl_interfaces.msg import Parameter as ParamMsg
        from rcl_interfaces.msg import ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        c.fault()
        req = SetParameters.Request(parameters=[ParamMsg(name="checkpoint", value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=c.h.assets[key]))])
        ans = c.w.call(c.w.param_cli, req).results[0]
        c.answers.append(f"inference (parameter answer): {'accepted' if ans.successful else 'rejected'}: {ans.reason}")
        c.cleared_at = time.time_ns()
        time.sleep(0.5)
        with c.w.lock:
            fps = {fp for t, _, fp in c.w.chunks if t >= c.onset and not fp.startswith("faults:")}
        if fps - {c.h.fingerprint}:
            c.res.notes.append(f"chunks with other fingerprints: {sorted(fps)}")
            c.res.invalid_chunks += 1
        c.wait_reason()
        c.wait_recovered()

    return run


def _engine_other_gpu(c: CaseContext) -> None:
    """A cached TensorRT engine recorded for another GPU / TensorRT must be refused on its
    metadata, before anything is deserialised or any TensorRT call is made."""
    from l1flow_ros.inference.checkpoint import CheckpointRejected, validate_checkpoint
    from l1flow_ros.inference.engine_cache import DeviceIdentity
    from l1flow_ros.policy.bundle import read_manifest

    c.fault()
    device = _this_device()
    trt_before = "tensorrt" in sys.modules
    running = read_manifest(c.h.assets["bundle"], check_weights=False)
    try:
        validate_checkpoint(c.h.assets["other_gpu"], running, "tensorrt", allow_build=False, device=device)
        c.answers.append("validate_checkpoint: accepted (engine for another GPU not refused)")
    except CheckpointRejected as e:
        c.answers.append(f"validate_checkpoint: rejected: {e}")
    if not trt_before and "tensorrt" in sys.modules:
        c.answers.append("validate_checkpoint: TensorRT was imported to check the engine")
    c.res.notes.append(f"this machine: {device.gpu_name} / TensorRT {device.trt_version}; cached engine: "
                       f"{OTHER_GPU[0]} / TensorRT {OTHER_GPU[2]}")
    assert isinstance(device, DeviceIdentity)
    c.cleared_at = time.time_ns()
    c.wait_recovered()


def _this_device() -> Any:
    """This machine's GPU identity, or a stand-in on a machine without one (the check is the same)."""
    from l1flow_ros.inference.engine_cache import DeviceIdentity

    try:
        import torch

        if torch.cuda.is_available():
            from l1flow_ros.inference.trt_backend import device_identity

            return device_identity()
    except Exception:
        pass
    return DeviceIdentity("(no GPU here: stand-in identity)", "0.0", "none")


S = 1e9
CASES: tuple[Case, ...] = (
    Case("camera_info_never", "camera started without CameraInfo (perception restarted)", _camera_info_never,
         ("perception_node", r"CameraInfo"), needs_streaming=False),
    Case("camera_stops", "colour + depth stop until the arm is at rest + 0.8 s, then come back", _held(None, cameras=False),
         ("perception_node", r"last message .* ago")),
    Case("depth_nan", "depth image all NaN (32FC1)", _held(None, depth="nan"),
         ("perception_node", r"depth has no valid pixel")),
    Case("depth_inf", "depth image all +inf (32FC1)", _held(None, depth="inf"),
         ("perception_node", r"depth has no valid pixel")),
    Case("depth_zero", "depth image all 0 (16UC1)", _held(None, depth="zero"),
         ("perception_node", r"depth has no valid pixel")),
    Case("wrong_encoding", "colour image with encoding rgba8", _held(None, encoding="rgba8"),
         ("perception_node", r"encoding")),
    Case("wrong_size", "colour + depth 12 x 16 while CameraInfo says 24 x 32", _held(None, size=(12, 16)),
         ("perception_node", r"size|12|16")),
    Case("joint_states_missing", "/joint_states stops until the arm is at rest + 0.8 s", _held(None, joints=False),
         ("perception_node", r"joint_states")),
    Case("joint_names_unexpected", "/joint_states with joints j_unknown_0, j_unknown_1 only",
         _held(None, joint_names=("j_unknown_0", "j_unknown_1")), ("perception_node", r"joint")),
    Case("clock_jump_back", "stamps of all sensor data jump 30 s back (simulated time reset)",
         _held(None, stamp_offset_ns=int(-30 * S)), ("perception_node", r"jump|old")),
    Case("clock_jump_forward", "stamps of all sensor data jump 5 s ahead, then back",
         _held(None, stamp_offset_ns=int(5 * S)), ("perception_node", r"future|jump")),
    Case("embedding_unknown_fingerprint", "embeddings stamped with an unknown checkpoint fingerprint",
         _held(_emb_unknown, cameras=False), ("inference_node", r"unknown checkpoint")),
    Case("embedding_nan", "embedding with NaN values", _held(_emb_nan, cameras=False), ("inference_node", r"NaN")),
    Case("embedding_wrong_dim", "embedding with 7 values (the head expects 32)", _held(_emb_dim, cameras=False),
         ("inference_node", r"expects 32")),
    Case("chunk_nan", "action chunk with a NaN (other actions at the far corner)", _held(_chunk(nan=True), cameras=False),
         ("executor_node", r"NaN")),
    Case("chunk_wrong_dim", "action chunk with 3 dimensions (j0, j1, j2) at the far corner",
         _held(_chunk(names=("j0", "j1", "j2")), cameras=False), ("executor_node", r"names|missing")),
    Case("chunk_future", "action chunk stamped 5 s in the future, far corner", _held(_chunk(5.0), cameras=False),
         ("executor_node", r"future")),
    Case("chunk_too_old", "action chunk stamped 5 s ago, far corner", _held(_chunk(-5.0), cameras=False),
         ("executor_node", r"too_old")),
    Case("chunk_out_of_limits", "valid chunk asking for (5, -5, 5, 5): far outside the limits",
         _chunk_out_of_limits, None),
    Case("controller_no_subscriber", "the controller topic loses its subscribers for 1.6 s", _no_subscriber,
         ("executor_node", r"subscriber")),
    Case("swap_missing_path", "checkpoint parameter set to a path that does not exist", _swap("missing"),
         ("inference_node", r"does not exist")),
    Case("swap_corrupt", "checkpoint parameter set to a bundle with a truncated manifest", _swap("corrupt"),
         ("inference_node", r"manifest|JSON|corrupt|json")),
    Case("swap_other_dims", "checkpoint parameter set to a bundle with 3 action dimensions", _swap("other_dims"),
         ("inference_node", r"action names")),
    Case("swap_nan_weights", "checkpoint parameter set to a bundle with a NaN weight", _swap("nan_weights"),
         ("inference_node", r"NaN|nan")),
    Case("swap_engine_other_gpu", "TensorRT engine cache recorded for another GPU / TensorRT version",
         _engine_other_gpu, ("validate_checkpoint", r"rejected: .*another target")),
    Case("disable_enable", "execution disabled mid-chunk for 1 s, then enabled", _disable_enable,
         ("executor_node", r"disable")),
    Case("inference_restart", "inference node process stopped (SIGINT); once the arm is held, a new one "
         "started, configured + activated", _inference_down(signal.SIGINT), ("executor_node", r"starved")),
    Case("inference_killed", "inference node process killed (SIGKILL) while the executor streams; then started "
         "again", _inference_down(signal.SIGKILL), ("executor_node", r"starved")),
    Case("cpu_starvation", "one busy process per core for 4 s while streaming at 500 Hz", _cpu_starvation,
         None),
)
CASE_NAMES = tuple(c.name for c in CASES)


def select(names: list[str] | None) -> list[Case]:
    if not names:
        return list(CASES)
    unknown = [n for n in names if n not in CASE_NAMES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; cases: {', '.join(CASE_NAMES)}")
    return [c for c in CASES if c.name in names]  # suite order: camera_info_never first


# ------------------------------------------------------------------------------- report


def run_suite(cases: list[Case], workdir: str | Path, log: Callable[[str], None] = print) -> list[CaseResult]:
    assets = build_assets(workdir, log)
    info_first = bool(cases) and cases[0].name == "camera_info_never"
    h = Harness(assets, log, camera_info_at_start=not info_first)
    results = []
    try:
        log(f"faults: starting {', '.join(NODES)}, one process each")
        h.start()
        for case in cases:
            r = h.run_case(case)
            log(f"  {r.name:<30} {'survived' if r.survived else 'FAILED'}  {r.behaviour}")
            results.append(r)
    finally:
        h.close()
        bad = {n: rc for n, rc in h.exit_codes.items() if rc != 0}
        log(f"faults: nodes stopped{f'; exit codes {bad}' if bad else ' (exit code 0 each)'}")
    return results


def machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, Python "
            f"{platform.python_version()}, load average at the end {load}")


def _fmt_s(x: float) -> str:
    return "-" if x != x else f"{x:.2f} s"


def markdown(results: list[CaseResult], command: str) -> str:
    t = totals(results)
    lines = [
        f"Command: `{command}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}.",
        "",
        "| case | injected | behaviour seen (/diagnostics or answer) | nodes up | arm held | outside limits "
        "| from invalid data | recovered | missed ticks | survived |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        beh = (r.not_run and f"NOT RUN: {r.not_run}") or r.behaviour
        rec = f"yes, {_fmt_s(r.recover_s)}" if r.recovered else "no"
        lines.append(
            f"| {r.name} | {r.injected} | {beh.replace('|', '/')} | {'yes' if r.nodes_alive else 'no'} | "
            f"{r.arm_held} | {r.outside_limits} | {r.from_invalid + r.invalid_chunks} | {rec} | {r.missed_ticks} | "
            f"{'yes' if r.survived else 'no'} |")
    lines += [
        "",
        "| total | |",
        "|---|---|",
        f"| cases tried | {t.tried} |",
        f"| cases survived | {t.survived} |",
        f"| cases not run | {t.not_run} |",
        f"| control ticks missed (sum) | {t.missed_ticks} |",
        f"| commands outside limits | {t.outside_limits} |",
        f"| commands from invalid data | {t.from_invalid} |",
        f"| chunks from invalid observations | {t.invalid_chunks} |",
        f"| commands lost on the way to the guard (judged across the gap) | {t.lost_commands} |",
        "",
    ]
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        lines += ["Notes:", ""] + [f"- {name}: {n}" for name, n in notes] + [""]
    return "\n".join(lines)


def write_markdown(path: str | Path, body: str, preamble: str = "") -> None:
    """Replace everything below the generator marker; the hand-written text above it stays."""
    path = Path(path)
    head = preamble
    if path.exists():
        text = path.read_text()
        if GEN_MARKER in text:
            head = text.split(GEN_MARKER)[0].rstrip("\n") + "\n\n"
    path.write_text(f"{head}{GEN_MARKER}\n\n{body}")


def results_json(results: list[CaseResult], command: str) -> str:
    t = totals(results)
    return json.dumps({"command": command, "machine": machine(), "totals": dataclasses.asdict(t) | {"ok": t.ok},
                       "cases": [dataclasses.asdict(r) for r in results]}, indent=1, default=str)


if __name__ == "__main__":
    if sys.argv[1:] == ["--controller"]:
        sys.exit(_controller_main())
    sys.exit("usage: l1flow faults (this module's --controller mode is started by the harness)")
