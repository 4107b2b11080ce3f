"""Meta-World v3 (MuJoCo Sawyer) as a robot: absolute end-effector targets in, RGB-D out.

No ROS here; :mod:`l1flow_ros.nodes.sim_robot_node` wraps it.

Conventions stated once:
- the arm's "joints" as the policy sees them are the end effector: ``ACTION_NAMES``
  = (ee_x, ee_y, ee_z, gripper); positions in metres in the MuJoCo world frame
  (= robot base frame); gripper in [-1, 1], -1 open, +1 closed;
- a command is an absolute target. Each physics step turns it into Meta-World's delta
  action ``clip(servo_gain * (target - hand_pos) / action_scale, -1, 1)`` (gripper passed
  through): a rate-limited first-order position servo (time constant dt / servo_gain =
  50 ms, at most ``action_scale`` = 1 cm per 12.5 ms step). A gain of 1 (dead-beat)
  oscillates by ~3 cm around a held target because the hand lags Meta-World's mocap body;
  0.25 holds within 0.3 mm and equals the gain Meta-World's experts use (p = 25);
- cameras follow the OpenCV optical convention: z forward, x right, y down. MuJoCo
  cameras look down their -z axis with y up, so ``R_cv = R_mujoco @ diag(1, -1, -1)``;
- depth images are float32 metres along the optical axis; 0 = no return (nothing
  within the far plane), as RealSense drivers report missing depth.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Headless rendering: EGL fails on many CPU machines; osmesa always works. Must be set
# before mujoco creates a GL context (an explicit user choice wins).
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco

ACTION_NAMES: tuple[str, ...] = ("ee_x", "ee_y", "ee_z", "gripper")
ARM_JOINTS: tuple[str, ...] = tuple(f"right_j{i}" for i in range(7))
JOINT_NAMES: tuple[str, ...] = ACTION_NAMES + ARM_JOINTS
CAMERAS: tuple[str, ...] = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")
GRIPPER_INDEX = 3


class SimError(ValueError):
    """Bad configuration or command for the simulated arm; the text says why."""


def task_names() -> list[str]:
    """Every Meta-World v3 task name this simulator accepts."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return sorted(ALL_V3_ENVIRONMENTS)


@dataclass(frozen=True)
class SimConfig:
    task: str = "button-press-v3"
    cameras: tuple[str, ...] = ("corner",)
    image_size: tuple[int, int] = (96, 96)  # (H, W) of every camera
    # Rotate cameras whose image would come out upside down (Meta-World's corner
    # cameras do) by 180 degrees about the optical axis; extrinsics follow.
    upright: bool = True
    max_episode_steps: int = 0  # 0 = Meta-World's task horizon (500 steps)
    servo_gain: float = 0.25  # fraction of the target error corrected per physics step

    def validate(self) -> None:
        names = task_names()
        if self.task not in names:
            raise SimError(f"unknown Meta-World task {self.task!r}; v3 tasks: {', '.join(names)}")
        bad = [c for c in self.cameras if c not in CAMERAS]
        if bad:
            raise SimError(f"unknown camera(s) {bad}; Meta-World cameras: {list(CAMERAS)}")
        if len(set(self.cameras)) != len(self.cameras):
            raise SimError(f"cameras repeated: {list(self.cameras)}")
        h, w = self.image_size
        if not (8 <= h <= 2048 and 8 <= w <= 2048):
            raise SimError(f"image_size {self.image_size} out of range [8, 2048]")
        if not (0.0 < self.servo_gain <= 1.0):
            raise SimError(f"servo_gain must be in (0, 1], got {self.servo_gain}")
        if self.max_episode_steps < 0:
            raise SimError(f"max_episode_steps must be >= 0, got {self.max_episode_steps}")


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics (pixel centres at integer coordinates) and camera -> world pose."""

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    T_world_cam: np.ndarray = field(repr=False)  # (4, 4) OpenCV optical frame -> world

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class StepResult:
    state: np.ndarray  # (39,) Meta-World's goal-observable observation (what the expert reads)
    success: bool  # the task has been solved at some step of this episode
    truncated: bool  # the episode reached max_episode_steps
    info: dict[str, Any]


def rotation_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=np.float64).reshape(9))  # (w, x, y, z)
    q = q / np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    return np.array([q[1], q[2], q[3], q[0]])


class _RGBDRenderer(mujoco.Renderer):
    """``mujoco.Renderer`` that reads colour and depth from one render pass.

    ``Renderer.render()`` draws the scene once per output, and its depth pass costs as much
    as the colour pass on a software renderer (osmesa, 96 x 96: 15 ms for both -> 9 ms for
    one, ``bench/bench_sim.py``). The depth buffer of the colour pass holds the same
    geometry; it is converted to metres exactly as ``Renderer.render()`` converts it.
    """

    def render_rgbd(self) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (H, W, 3) uint8, depth (H, W) float32 metres along the optical axis)."""
        if self._mjr_context is None:
            raise RuntimeError("render_rgbd cannot be called after close")
        if self._gl_context:
            self._gl_context.make_current()
        mujoco.mjr_render(self._rect, self._scene, self._mjr_context)
        rgb = np.empty((self._height, self._width, 3), dtype=np.uint8)
        z = np.empty((self._height, self._width), dtype=np.float32)
        mujoco.mjr_readPixels(rgb, z, self._rect, self._mjr_context)
        extent = self._model.stat.extent
        znear = np.float32(self._model.vis.map.znear * extent)
        zfar = np.float32(self._model.vis.map.zfar * extent)
        # OpenGL perspective terms in float32, mapped for MuJoCo's reversed Z (as Renderer)
        c_coef = np.float32(-0.5) * (-(zfar + znear) / (zfar - znear)) - np.float32(0.5)
        d_coef = np.float32(-0.5) * (-(np.float32(2) * zfar * znear) / (zfar - znear))
        depth = (d_coef / (z.astype(np.float64) + c_coef)).astype(np.float32)
        return np.flipud(rgb), np.flipud(depth)


class MetaWorldSim:
    """One Meta-World v3 task with seeded episodes and absolute end-effector targets.

    Not thread-safe: a single thread steps it (the node holds a lock).
    """

    def __init__(self, cfg: SimConfig) -> None:
        cfg.validate()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.cfg = cfg
        env = ALL_V3_ENVIRONMENTS[cfg.task]()
        # Meta-World's goal-observable setup (env_dict._create_observable_goal_envs):
        # the expert policies read the goal from the last 3 entries of the state.
        env._partially_observable = False
        del env.sawyer_observation_space  # cached for the old observability
        env._set_task_called = True
        # Seeded episodes: each reset draws the object / goal vector from env.np_random,
        # which reset() seeds; then the vector stays frozen for the episode, as after
        # Meta-World's set_task.
        env.seeded_rand_vec = True
        self.env = env
        self.model = env.model
        self.data = env.data
        self.max_episode_steps = int(cfg.max_episode_steps or env.max_path_length)
        self.action_scale = float(env.action_scale)
        self.workspace_low = np.asarray(env.mocap_low, dtype=np.float64).copy()  # (3,)
        self.workspace_high = np.asarray(env.mocap_high, dtype=np.float64).copy()  # (3,)
        self._arm_qpos = np.array([self.model.jnt_qposadr[self.model.joint(j).id] for j in ARM_JOINTS])
        self._arm_qvel = np.array([self.model.jnt_dofadr[self.model.joint(j).id] for j in ARM_JOINTS])
        self._cam_ids = {c: self.model.camera(c).id for c in cfg.cameras}
        self._renderer: mujoco.Renderer | None = None
        self._flip: dict[str, bool] = {}
        self.seed: int | None = None
        self.steps = 0
        self.success = False
        self.target = np.zeros(4)
        self.state = np.zeros(39)
        self.reset(0)

    # ------------------------------------------------------------------ episodes
    @property
    def dt(self) -> float:
        """Seconds of simulated time per step (Meta-World: 5 x 2.5 ms = 12.5 ms)."""
        return float(self.env.dt)

    def reset(self, seed: int) -> np.ndarray:
        """New episode with object / goal placement drawn from ``seed``; returns the state."""
        env = self.env
        env.seed(int(seed))
        env._freeze_rand_vec = False
        state, _ = env.reset()
        env._freeze_rand_vec = True
        self.seed = int(seed)
        self.steps = 0
        self.success = False
        self.state = np.asarray(state, dtype=np.float64)
        # Hold: the first target is where the hand is, gripper open.
        self.target = np.concatenate([self.hand_pos, [-1.0]])
        if not self._flip:
            self._flip = {c: self._upside_down(c) for c in self.cfg.cameras} if self.cfg.upright else {}
        return self.state.copy()

    @property
    def hand_pos(self) -> np.ndarray:
        """(3,) end-effector position in the world frame, metres."""
        return np.asarray(self.env.get_endeff_pos(), dtype=np.float64).copy()

    def gripper_position(self) -> float:
        """Measured gripper in action units: -1 fingers fully apart, +1 fully closed."""
        opening = float(self.state[3])  # Meta-World: finger distance / 0.1 m, clipped to [0, 1]
        return float(np.clip(1.0 - 2.0 * opening, -1.0, 1.0))

    def joint_positions(self) -> np.ndarray:
        """(11,) positions in ``JOINT_NAMES`` order: ee xyz, gripper, right_j0..6."""
        return np.concatenate([self.hand_pos, [self.gripper_position()], self.data.qpos[self._arm_qpos]])

    def joint_velocities(self) -> np.ndarray:
        """(11,) velocities in ``JOINT_NAMES`` order (ee from the body's linear velocity)."""
        v = np.zeros(6)
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_BODY, self.model.body("hand").id, v, 0)
        # mj_objectVelocity returns (angular, linear) in the world frame with flg_local = 0.
        return np.concatenate([v[3:], [0.0], self.data.qvel[self._arm_qvel]])

    # ------------------------------------------------------------------ commands
    def check_target(self, target: Any) -> np.ndarray:
        """Validate an absolute target [ee_x, ee_y, ee_z, gripper]; clip to the workspace."""
        t = np.asarray(target, dtype=np.float64).reshape(-1)
        if t.shape != (4,):
            raise SimError(f"target needs 4 values {ACTION_NAMES}, got {t.size}")
        if not np.all(np.isfinite(t)):
            raise SimError(f"target has NaN or inf: {t.tolist()}")
        out = t.copy()
        out[:3] = np.clip(t[:3], self.workspace_low, self.workspace_high)
        out[3] = np.clip(t[3], -1.0, 1.0)
        return out

    def set_target(self, target: Any) -> None:
        self.target = self.check_target(target)

    def apply_delta(self, delta: Any) -> None:
        """Per-command displacement [dx, dy, dz, gripper]: moves the target, gripper absolute."""
        d = np.asarray(delta, dtype=np.float64).reshape(-1)
        if d.shape != (4,):
            raise SimError(f"delta command needs 4 values [dx, dy, dz, gripper], got {d.size}")
        if not np.all(np.isfinite(d)):
            raise SimError(f"delta command has NaN or inf: {d.tolist()}")
        self.set_target(np.concatenate([self.target[:3] + d[:3], d[3:]]))

    def delta_action(self, target: np.ndarray | None = None) -> np.ndarray:
        """(4,) Meta-World action that moves the hand toward ``target`` (default: current)."""
        t = self.target if target is None else self.check_target(target)
        a = np.empty(4)
        a[:3] = np.clip(self.cfg.servo_gain * (t[:3] - self.hand_pos) / self.action_scale, -1.0, 1.0)
        a[3] = t[3]
        return a

    def step(self, target: Any | None = None) -> StepResult:
        """One physics step (``dt``) toward ``target`` (or the last one set)."""
        if target is not None:
            self.set_target(target)
        env = self.env
        # The sim keeps running past Meta-World's horizon (a robot does not stop);
        # Meta-World's step() refuses to, so its counter is held below the horizon.
        env.curr_path_length = min(env.curr_path_length, env.max_path_length - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state, _reward, _term, _trunc, info = env.step(self.delta_action().astype(np.float32))
        self.steps += 1
        self.state = np.asarray(state, dtype=np.float64)
        self.success = self.success or bool(info.get("success", 0.0) > 0.0)
        return StepResult(self.state.copy(), self.success, self.steps >= self.max_episode_steps, dict(info))

    # ------------------------------------------------------------------ cameras
    def _upside_down(self, cam: str) -> bool:
        """True when the image's down axis points up in the world (then rotate 180 deg)."""
        R = self._mujoco_cam_rotation(cam)
        y_down_world = -R[:, 1]  # OpenCV y (image down) = -MuJoCo y
        return bool(y_down_world[2] > 0.1)

    def _mujoco_cam_rotation(self, cam: str) -> np.ndarray:
        return self.data.cam_xmat[self._cam_ids[cam]].reshape(3, 3).copy()  # columns: cam axes in world

    def camera_model(self, cam: str) -> CameraModel:
        """Intrinsics and current extrinsics of a configured camera."""
        if cam not in self._cam_ids:
            raise SimError(f"camera {cam!r} not configured; configured: {list(self.cfg.cameras)}")
        h, w = self.cfg.image_size
        i = self._cam_ids[cam]
        fovy = float(self.model.cam_fovy[i])
        # MuJoCo's fovy spans the full image height; square pixels.
        f = 0.5 * h / np.tan(np.deg2rad(fovy) / 2.0)
        R = self._mujoco_cam_rotation(cam) @ np.diag([1.0, -1.0, -1.0])  # -> OpenCV optical
        if self._flip.get(cam, False):
            R = R @ np.diag([-1.0, -1.0, 1.0])  # 180 deg about the optical axis
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = self.data.cam_xpos[i]
        return CameraModel(cam, int(w), int(h), float(f), float(f), (w - 1) / 2.0, (h - 1) / 2.0, T)

    def _get_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            m = self.model
            # Fast CPU rendering: ~100 ms -> ~17 ms per RGB-D frame at ~100 px (docs/BENCHMARKS.md, simulated arm).
            m.vis.quality.shadowsize = 0
            m.vis.quality.offsamples = 0
            h, w = self.cfg.image_size
            m.vis.global_.offwidth = max(int(m.vis.global_.offwidth), w)
            m.vis.global_.offheight = max(int(m.vis.global_.offheight), h)
            r = _RGBDRenderer(m, height=h, width=w)
            flags = r.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            self._renderer = r
        return self._renderer

    def render(self, cam: str, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (H, W, 3) uint8, depth (H, W) float32 metres, 0 = none) of one camera.

        ``data`` renders a snapshot (see :meth:`snapshot`) instead of the live state, so
        rendering can run on another thread than physics. The renderer's GL context
        belongs to the thread that first renders.
        """
        if cam not in self._cam_ids:
            raise SimError(f"camera {cam!r} not configured; configured: {list(self.cfg.cameras)}")
        r = self._get_renderer()
        r.update_scene(self.data if data is None else data, camera=self._cam_ids[cam])
        rgb, depth = r.render_rgbd()
        far = self.model.vis.map.zfar * self.model.stat.extent
        depth[depth >= 0.99 * far] = 0.0
        if self._flip.get(cam, False):
            rgb = np.ascontiguousarray(rgb[::-1, ::-1])
            depth = np.ascontiguousarray(depth[::-1, ::-1])
        return rgb, depth

    def snapshot(self) -> mujoco.MjData:
        """Copy of the physics state for rendering elsewhere (~1 ms; no simulation)."""
        return copy.copy(self.data)

    def close_renderer(self) -> None:
        """Free the GL context; call from the thread that rendered."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def close(self) -> None:
        self.close_renderer()
        self.env.close()


class ScriptedExpert:
    """Meta-World's hand-written expert for a task, speaking absolute targets.

    The expert outputs a delta action from the state; the target it means is
    ``hand_pos + clip(delta, -1, 1) * action_scale / servo_gain``, which
    :meth:`MetaWorldSim.step` turns back into the same delta, so through the absolute
    interface the expert acts exactly as in Meta-World. (For the experts with gain
    p = 25 the target is then exactly the point the expert steers to.)

    ``speed`` < 1 scales the expert's steps down: slower, longer demonstrations (more
    samples per episode at a policy's dt). 0.5 still solves button-press, drawer-open,
    door-open, pick-place, reach and push; much lower breaks experts that gate on timing.
    """

    def __init__(
        self, task: str, action_scale: float = 0.01, servo_gain: float = 0.25, speed: float = 1.0
    ) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            raise SimError(f"no scripted expert for task {task!r}")
        self.task = task
        self.action_scale = float(action_scale)
        self.servo_gain = float(servo_gain)
        if not (0.0 < speed <= 1.0):
            raise SimError(f"expert speed must be in (0, 1], got {speed}")
        self.speed = float(speed)
        self.policy = ENV_POLICY_MAP[task]()

    def target(self, state: np.ndarray) -> np.ndarray:
        """(39,) goal-observable state -> (4,) absolute target [ee_x, ee_y, ee_z, gripper]."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape != (39,) or not np.all(np.isfinite(s)):
            raise SimError(f"expert needs Meta-World's finite 39-d state, got shape {s.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Meta-World warns when its gains saturate
            a = np.asarray(self.policy.get_action(s), dtype=np.float64)
        out = np.empty(4)
        out[:3] = s[:3] + np.clip(a[:3], -1.0, 1.0) * (self.speed * self.action_scale / self.servo_gain)
        out[3] = np.clip(a[3], -1.0, 1.0)
        return out


def run_expert_episode(
    sim: MetaWorldSim, seed: int, max_steps: int | None = None, speed: float = 1.0
) -> tuple[bool, int]:
    """Reset to ``seed`` and let the scripted expert drive; -> (success, steps taken)."""
    expert = ScriptedExpert(sim.cfg.task, sim.action_scale, sim.cfg.servo_gain, speed)
    state = sim.reset(seed)
    limit = sim.max_episode_steps if max_steps is None else int(max_steps)
    for k in range(limit):
        res = sim.step(expert.target(state))
        state = res.state
        if res.success:
            return True, k + 1
    return False, limit


EXPERT_SPEEDS = (0.5, 0.75, 1.0)  # tried slowest first: slower demonstrations give more samples per episode


@dataclass(frozen=True)
class SpeedChoice:
    """The expert speed picked for a task (None: no speed tried works), and what each speed
    tried solved."""

    task: str
    speed: float | None
    tried: tuple[tuple[float, int, int], ...]  # (speed, solved, seeds)

    def summary(self) -> str:
        return ", ".join(f"{v:g}: {k}/{n}" for v, k, n in self.tried)


def try_expert_speeds(
    task: str, seeds: Sequence[int] = range(5), speeds: Sequence[float] = EXPERT_SPEEDS, min_solved: int = 4
) -> SpeedChoice:
    """The slowest of ``speeds`` at which the scripted expert solves at least ``min_solved`` of
    ``seeds`` within the task's horizon (``speed`` None when none does). Meta-World's experts
    gate on timing, so a slower expert fails tasks (peg-insert-side, stick-pull, basketball,
    ... at 0.5) that it solves at 1.0."""
    if not 0 < min_solved <= len(seeds):
        raise SimError(f"min_solved must be in 1..{len(seeds)}, got {min_solved}")
    sim = MetaWorldSim(SimConfig(task=task, cameras=("corner",), image_size=(16, 16)))
    tried: list[tuple[float, int, int]] = []
    try:
        for v in sorted(float(x) for x in speeds):
            k = sum(run_expert_episode(sim, int(s), speed=v)[0] for s in seeds)
            tried.append((v, k, len(seeds)))
            if k >= min_solved:
                return SpeedChoice(task, v, tuple(tried))
    finally:
        sim.close()
    return SpeedChoice(task, None, tuple(tried))


def choose_expert_speed(task: str, **kw: Any) -> SpeedChoice:
    """:func:`try_expert_speeds`, raising :class:`SimError` naming the task and what every
    speed solved when none works: the recording speed for ``task``."""
    c = try_expert_speeds(task, **kw)
    if c.speed is None:
        raise SimError(f"the scripted expert of {task} solves too few seeded episodes at every speed tried "
                       f"({c.summary()}): no demonstrations to record for this task")
    return c


def calibration_dict(models: list[CameraModel], parent_frame: str = "world") -> dict[str, Any]:
    """Camera -> base extrinsics (and intrinsics) in perception.geometry's calibration layout."""
    cams: dict[str, Any] = {}
    for m in models:
        T = np.asarray(m.T_world_cam)
        cams[m.name] = {
            "parent_frame": parent_frame,
            "translation": [float(x) for x in T[:3, 3]],
            "rotation": [float(x) for x in rotation_to_quat_xyzw(T[:3, :3])],  # x y z w
            "width": int(m.width),
            "height": int(m.height),
            "fx": float(m.fx),
            "fy": float(m.fy),
            "cx": float(m.cx),
            "cy": float(m.cy),
        }
    return {"base_frame": parent_frame, "cameras": cams}


def write_calibration_yaml(path: str | Path, models: list[CameraModel], parent_frame: str = "world") -> Path:
    """Write camera extrinsics (OpenCV optical frame -> base) to a YAML file."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Camera extrinsics: pose of each camera's optical frame (z forward, x right, y down)\n"
        "# in the robot base frame; translation in metres, rotation as quaternion x y z w.\n"
    )
    path.write_text(header + yaml.safe_dump(calibration_dict(models, parent_frame), sort_keys=False))
    return path
