"""What the graph under test is set up with: the arm's limits and rates, the camera, the
bundles (the good one, exported for ONNX Runtime on the CPU, and the bad ones the swap cases
set) and the nodes' parameter file."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
CALIB_YAML = """cameras:
  cam:
    translation: [0.0, 0.0, 1.0]
    rotation: [1.0, 0.0, 0.0, 0.0]
"""


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
    other = root / "policy_b"  # the hot-swap partner: the same specs, other weights
    if not (other / "policy.onnx").exists():
        log("faults: building and exporting the second bundle (hot swap)")
        _bundle(other, seed=4)
        export_bundle(other)
    out["bundle_b"] = str(other)
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
    from l1flow_ros.policy.manifest import read_manifest

    if not dst.exists():
        shutil.copytree(good, dst)
    cache = EngineCache(default_cache_dir(dst))
    ident = DeviceIdentity(*OTHER_GPU)
    for name in required_onnx(read_manifest(dst, check_weights=False)):
        key = EngineKey.for_onnx(dst / name, ident, "fp32")
        if cache.lookup(Path(name).stem, key) is None:
            cache.store(Path(name).stem, key, b"not a real engine: built elsewhere")
    return dst


NODES = ("executor_node", "perception_node", "inference_node", "recorder_node")  # started in this order
DIAG_PERIOD_S = 0.1  # the nodes' diagnostics_period: the harness reads their state from /diagnostics
REALTIME_PRIORITY, SPIN_US = 50, 200  # the executor's control thread, as config/sim.yaml runs it
RECORDED_CHUNKS = "/l1flow/action_chunk"  # the recorder's action topic


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
        # One episode over the whole suite: messages lost in recording. Its action topic is the
        # chunks, not the controller's: a recorder subscribed there is a subscriber the
        # executor cannot tell from a controller, so controller_no_subscriber could not happen.
        "recorder_node": {
            "output_dir": str(Path(assets["calibration"]).parent / "episodes"), "cameras": [CAM],
            "action_topic": RECORDED_CHUNKS, "action_type": "trajectory_msgs/msg/JointTrajectory",
            "success_topic": "", "task": "faults",
        },
        "executor_node": {
            "joint_names": list(JOINTS), "rate_hz": RATE_HZ, "output": "forward_position",
            "latency_margin": 0.01, "max_age": 1.0, "max_future": 0.1,
            "lower": list(LOWER), "upper": list(UPPER), "max_velocity": list(MAX_VEL),
            "max_acceleration": list(MAX_ACC), "gripper_joints": ["gripper"], "gripper_binary": False,
            "start_enabled": True, "diagnostics_period": DIAG_PERIOD_S,
            # As deployed (config/sim.yaml, policy.yaml): the control thread at SCHED_FIFO
            # with a short busy-wait before each deadline (normal scheduling where refused).
            "realtime_priority": REALTIME_PRIORITY, "spin_us": SPIN_US,
        },
    }


def write_params(assets: dict[str, str], path: str | Path) -> Path:
    """The nodes' parameters as a ROS 2 parameter file (``--params-file`` format)."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump({name: {"ros__parameters": _params(assets)[name]} for name in NODES},
                                   sort_keys=False))
    return path
