"""A Franka Panda with its parallel gripper on a table, in MuJoCo: joint targets in, RGB-D out.

Two tasks (``TASKS``) with placement drawn per seed: ``lift`` the cube; ``place`` it on a
green target pad.

No ROS here. The models are robosuite's Panda arm and Panda gripper (MJCF + meshes, read
from the installed package's asset folder; nothing is downloaded), assembled with
``mujoco.MjSpec``; the table, cube and cameras are ours.

Conventions stated once:
- the arm's joints as a controller sees them are ``JOINT_NAMES`` = panda_joint1..7
  (radians) and ``gripper``: the opening between the fingers in metres, 0 closed,
  ``GRIPPER_MAX`` = 0.08 fully open (as franka_gripper's width);
- a command is an absolute position target for every joint, clipped to the arm's limits
  (``LOWER`` / ``UPPER``, the Panda's own joint ranges); position actuators (PD with the
  Panda's torque limits as force limits, gravity compensated as Franka's controller does)
  track it, one command per ``dt`` = ``n_substeps`` physics steps;
- the world frame is the robot base frame: x forward over the table, z up, the table top
  at z = 0;
- cameras follow the OpenCV optical convention (z forward, x right, y down), as
  :mod:`l1flow_ros.sim.metaworld_env`; depth is float32 metres along the optical axis,
  0 = no return. ``cam_front`` looks at the table from the front, ``cam_wrist`` is fixed
  on the hand, beside the flange, looking along the fingers.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco

from l1flow_ros.sim.metaworld_env import CameraModel, SimError, _RGBDRenderer

ARM_JOINTS: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
JOINT_NAMES: tuple[str, ...] = ARM_JOINTS + ("gripper",)
CAMERAS: tuple[str, ...] = ("cam_front", "cam_wrist")
GRIPPER_MAX = 0.08  # m, fully open
# Franka Panda datasheet: joint velocity and acceleration limits (rad/s, rad/s^2); the
# gripper's fingers move at up to 0.05 m/s each (0.1 m/s on the opening).
MAX_VELOCITY = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61, 0.1])
MAX_ACCELERATION = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0, 1.0])
# Joints bent, hand pointing down, about 0.45 m in front of the base and 0.3 m over the table.
HOME = np.array([0.0, -0.35, 0.0, -2.45, 0.0, 2.1, np.pi / 4, GRIPPER_MAX])
# Geom groups: robosuite's collision meshes (0, 15k triangles), its visual meshes (1, 135k
# triangles), the table, floor and cube (2). The cameras show the scene and one of the
# arm's mesh sets (PandaConfig.meshes); the marker sites stay hidden.
COLLISION_GROUP, VISUAL_GROUP, SCENE_GROUP = 0, 1, 2
GRIP_SITE = "grip_site"  # between the fingertips; what the expert places
TABLE_TOP = 0.0
CUBE_HALF = 0.02  # m, a 4 cm cube
TARGET_HALF = 0.03  # m, the place task's target pad (6 cm square, drawn only)
TASKS: tuple[str, ...] = ("lift", "place")
_HIDDEN = np.array([0.3, 0.0, -0.5])  # the target pad's place in the lift task: under the table
# Kp per joint (N m / rad); Kd = Kp / 10. Stiff enough to track a joint trajectory within
# a few milliradians, within the Panda's torque limits.
_KP = np.array([4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0])


def robosuite_assets() -> Path:
    """The installed robosuite's model folder (found without importing robosuite)."""
    spec = importlib.util.find_spec("robosuite")
    if spec is None or not spec.submodule_search_locations:
        raise SimError("the Panda model comes from robosuite's assets: pip install robosuite==1.5.2 --no-deps")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "assets"


def _look_at_quat(pos, target) -> np.ndarray:
    """MuJoCo camera quaternion (w, x, y, z) looking from ``pos`` at ``target``, world z up."""
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    R = np.stack([x, y, -fwd], axis=1)  # columns: camera x, y, z (looks down -z) in world
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, R.reshape(9))
    return q


def build_arm_spec() -> mujoco.MjSpec:
    """The Panda with its gripper, position actuators, renamed joints; no scene."""
    assets = robosuite_assets()
    arm = mujoco.MjSpec.from_file(str(assets / "robots" / "panda" / "robot.xml"))
    grip = mujoco.MjSpec.from_file(str(assets / "grippers" / "panda_gripper.xml"))
    arm.body("right_hand").add_frame().attach_body(grip.body("right_gripper"), "", "")
    for i, name in enumerate(ARM_JOINTS):
        arm.joint(f"joint{i + 1}").name = name
        arm.joint(name).armature = 0.1  # reflected rotor inertia, as MuJoCo Menagerie's Panda
    for i, act in enumerate([a for a in arm.actuators if a.name.startswith("torq_j")]):
        kp = _KP[i]
        torque = float(act.ctrlrange[1])
        j = arm.joint(ARM_JOINTS[i])
        act.name = ARM_JOINTS[i]
        act.target = ARM_JOINTS[i]
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        act.gainprm[:3] = [kp, 0.0, 0.0]
        act.biasprm[:3] = [0.0, -kp, -kp / 10.0]
        act.ctrlrange = j.range
        act.forcelimited = True
        act.forcerange = [-torque, torque]
    # Gravity compensated like a real Franka under joint position control.
    for b in arm.bodies:
        if b.name.startswith("link") or b.name in ("right_hand", "right_gripper", "leftfinger", "rightfinger"):
            b.gravcomp = 1.0
    return arm


def build_scene_spec() -> mujoco.MjSpec:
    """The arm on a table with a cube and the two cameras."""
    spec = build_arm_spec()
    spec.option.timestep = 0.002
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.noslip_iterations = 3  # grasped objects do not creep out of the fingers
    spec.visual.map.znear = 0.005
    spec.visual.map.zfar = 10.0
    w = spec.worldbody
    w.add_light(pos=[0.4, 0.0, 1.5], dir=[0.0, 0.0, -1.0], diffuse=[0.8, 0.8, 0.8])
    w.add_light(pos=[1.2, -0.8, 1.0], dir=[-0.6, 0.5, -0.6], diffuse=[0.4, 0.4, 0.4])
    w.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2.0, 2.0, 0.05],
               pos=[0.0, 0.0, -0.75], rgba=[0.35, 0.35, 0.38, 1.0])
    w.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.6, 0.5, 0.375],
               pos=[0.3, 0.0, TABLE_TOP - 0.375], rgba=[0.62, 0.5, 0.38, 1.0], friction=[1.0, 0.005, 0.0001])
    cube = w.add_body(name="cube", pos=[0.5, 0.0, TABLE_TOP + CUBE_HALF])
    cube.add_freejoint(name="cube_joint")
    cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF] * 3, mass=0.05,
                  rgba=[0.85, 0.15, 0.12, 1.0], friction=[1.5, 0.01, 0.0001], condim=4)
    for g in w.geoms:
        g.group = SCENE_GROUP
    cube.geoms[0].group = SCENE_GROUP
    pad = w.add_body(name="target", pos=_HIDDEN)
    pad.add_geom(name="target", type=mujoco.mjtGeom.mjGEOM_BOX, size=[TARGET_HALF, TARGET_HALF, 0.0005],
                 rgba=[0.1, 0.75, 0.2, 1.0], contype=0, conaffinity=0, group=SCENE_GROUP)
    front_pos = [1.45, 0.5, 0.85]
    w.add_camera(name="cam_front", pos=front_pos, quat=_look_at_quat(front_pos, [0.3, 0.0, 0.15]), fovy=45.0)
    # On the hand, 7 cm off the flange axis across the fingers' travel (the hand's y), tilted
    # 20 deg toward the fingers; looks down the hand's +z (the camera's -z).
    tilt = np.deg2rad(20.0)
    qt = np.array([np.cos(tilt / 2), np.sin(tilt / 2), 0.0, 0.0])  # about the hand's x
    q_down = np.array([0.0, 0.0, 1.0, 0.0])  # 180 deg about y: camera -z = hand +z
    q = np.empty(4)
    mujoco.mju_mulQuat(q, qt, q_down)
    spec.body("right_gripper").add_camera(name="cam_wrist", pos=[0.0, 0.07, 0.02], quat=q, fovy=58.0)
    return spec


@dataclass(frozen=True)
class PandaConfig:
    task: str = "lift"  # one of TASKS
    image_size: tuple[int, int] = (96, 96)  # (H, W) of every camera
    cameras: tuple[str, ...] = CAMERAS
    n_substeps: int = 10  # physics steps (2 ms) per command: dt = 20 ms
    max_episode_steps: int = 0  # 0 = the task's own: 300 (6 s at dt = 20 ms) lift, 450 place
    # Cube placement drawn per seed: centre x, y (m) in these ranges, yaw in +-yaw_range rad.
    cube_x: tuple[float, float] = (0.42, 0.62)
    cube_y: tuple[float, float] = (-0.15, 0.15)
    yaw_range: float = np.pi / 4
    lift_height: float = 0.05  # m above its resting height: the cube counts as lifted
    place_tolerance: float = 0.02  # m, cube centre to target centre (xy): the cube counts as placed
    min_target_distance: float = 0.12  # m, target centre from the cube's start (xy)
    # The arm as the cameras see it: "collision" (grey convex meshes; 96 x 96 RGB-D in about
    # a tenth of the time) or "visual" (robosuite's detailed meshes). docs/BENCHMARKS.md.
    meshes: str = "collision"

    def validate(self) -> None:
        if self.task not in TASKS:
            raise SimError(f"unknown task {self.task!r}; tasks: {list(TASKS)}")
        h, w = self.image_size
        if not (8 <= h <= 2048 and 8 <= w <= 2048):
            raise SimError(f"image_size {self.image_size} out of range [8, 2048]")
        bad = [c for c in self.cameras if c not in CAMERAS]
        if bad or len(set(self.cameras)) != len(self.cameras):
            raise SimError(f"cameras {list(self.cameras)}: each one of {list(CAMERAS)}, once")
        if self.n_substeps < 1 or self.max_episode_steps < 0:
            raise SimError("n_substeps must be >= 1 and max_episode_steps >= 0")
        if not (self.cube_x[0] <= self.cube_x[1] and self.cube_y[0] <= self.cube_y[1]):
            raise SimError("cube_x / cube_y ranges must be (low, high)")
        if self.meshes not in ("collision", "visual"):
            raise SimError(f"meshes must be 'collision' or 'visual', got {self.meshes!r}")
        if not (0.0 < self.lift_height < 0.5):
            raise SimError(f"lift_height must be in (0, 0.5) m, got {self.lift_height}")


@dataclass(frozen=True)
class PandaStep:
    success: bool  # the task was solved at some step of this episode
    truncated: bool  # the episode reached max_episode_steps
    cube_pos: np.ndarray  # (3,) world frame


class PandaSim:
    """The Panda, a table, a cube (and a target pad); seeded placement; joint targets.

    Not thread-safe: one thread steps it.
    """

    def __init__(self, cfg: PandaConfig | None = None) -> None:
        cfg = cfg or PandaConfig()
        cfg.validate()
        self.cfg = cfg
        self.model = build_scene_spec().compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._vadr = np.array([m.jnt_dofadr[m.joint(j).id] for j in ARM_JOINTS])
        self._fq = np.array([m.jnt_qposadr[m.joint(f).id] for f in ("finger_joint1", "finger_joint2")])
        self._fv = np.array([m.jnt_dofadr[m.joint(f).id] for f in ("finger_joint1", "finger_joint2")])
        self._act = np.array([m.actuator(j).id for j in ARM_JOINTS])
        self._fact = np.array([m.actuator(a).id for a in ("gripper_finger_joint1", "gripper_finger_joint2")])
        self._cube_q = m.jnt_qposadr[m.joint("cube_joint").id]
        self._cube_body = m.body("cube").id
        self._target_body = m.body("target").id
        self.target_pos = _HIDDEN.copy()
        lo = m.jnt_range[[m.joint(j).id for j in ARM_JOINTS], 0]
        hi = m.jnt_range[[m.joint(j).id for j in ARM_JOINTS], 1]
        self.lower = np.concatenate([lo, [0.0]])  # (8,) in JOINT_NAMES order
        self.upper = np.concatenate([hi, [GRIPPER_MAX]])
        self._cam_ids = {c: m.camera(c).id for c in cfg.cameras}
        self.max_episode_steps = int(cfg.max_episode_steps or {"lift": 300, "place": 450}[cfg.task])
        self._renderer: mujoco.Renderer | None = None
        self.seed: int | None = None
        self.steps = 0
        self.success = False
        self.target = HOME.copy()
        self.cube_rest_z = TABLE_TOP + CUBE_HALF
        self.reset(0)

    @property
    def dt(self) -> float:
        """Seconds of simulated time per command (step)."""
        return float(self.model.opt.timestep * self.cfg.n_substeps)

    # ------------------------------------------------------------------ episodes
    def cube_placement(self, seed: int) -> tuple[float, float, float]:
        """(x, y, yaw) of the cube for ``seed``."""
        return self._placement(seed)[0]

    def _placement(self, seed: int) -> tuple[tuple[float, float, float], np.ndarray]:
        """((cube x, y, yaw), target pad centre (3,)) for ``seed``; the pad is drawn after the
        cube (the lift task's cubes are the place task's) and hidden in the lift task."""
        rng = np.random.default_rng(int(seed))
        c = self.cfg
        cube = (float(rng.uniform(*c.cube_x)), float(rng.uniform(*c.cube_y)),
                float(rng.uniform(-c.yaw_range, c.yaw_range)))
        if c.task != "place":
            return cube, _HIDDEN.copy()
        for _ in range(1000):
            t = np.array([rng.uniform(*c.cube_x), rng.uniform(*c.cube_y), TABLE_TOP + 0.0005])
            if np.hypot(t[0] - cube[0], t[1] - cube[1]) >= c.min_target_distance:
                return cube, t
        raise SimError(f"no target {c.min_target_distance} m from the cube within the placement ranges")

    def reset(self, seed: int) -> None:
        """New episode: the arm at ``HOME`` at rest, the cube placed from ``seed``."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._qadr] = HOME[:7]
        d.qpos[self._fq] = [HOME[7] / 2, -HOME[7] / 2]
        (x, y, yaw), self.target_pos = self._placement(seed)
        m.body_pos[self._target_body] = self.target_pos
        d.qpos[self._cube_q:self._cube_q + 7] = [x, y, self.cube_rest_z, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.seed = int(seed)
        self.steps = 0
        self.success = False
        self.set_target(HOME)
        mujoco.mj_forward(m, d)

    # ------------------------------------------------------------------ state
    def joint_positions(self) -> np.ndarray:
        """(8,) measured positions in ``JOINT_NAMES`` order (gripper: finger opening, m)."""
        q = self.data.qpos
        return np.concatenate([q[self._qadr], [q[self._fq[0]] - q[self._fq[1]]]])

    def joint_velocities(self) -> np.ndarray:
        v = self.data.qvel
        return np.concatenate([v[self._vadr], [v[self._fv[0]] - v[self._fv[1]]]])

    def cube_pose(self) -> tuple[np.ndarray, float]:
        """(position (3,), yaw about world z) of the cube."""
        q = self.data.qpos[self._cube_q:self._cube_q + 7]
        w, x, y, z = q[3:]
        return q[:3].copy(), float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    def site_pose(self, name: str = GRIP_SITE) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of a site in the world frame."""
        s = self.model.site(name).id
        return self.data.site_xpos[s].copy(), self.data.site_xmat[s].reshape(3, 3).copy()

    def lifted(self) -> bool:
        """The cube is above its resting height by ``lift_height``, held between the fingers."""
        cube, _ = self.cube_pose()
        grip, _ = self.site_pose()
        return bool(cube[2] - self.cube_rest_z >= self.cfg.lift_height and np.linalg.norm(cube - grip) < 0.05)

    def placed(self) -> bool:
        """The cube rests on the table within ``place_tolerance`` of the pad, let go of."""
        cube, _ = self.cube_pose()
        grip, _ = self.site_pose()
        return bool(np.hypot(*(cube[:2] - self.target_pos[:2])) <= self.cfg.place_tolerance
                    and abs(cube[2] - self.cube_rest_z) < 0.005 and grip[2] - cube[2] > 0.03)

    def solved(self) -> bool:
        """The configured task's success condition, now."""
        return self.lifted() if self.cfg.task == "lift" else self.placed()

    # ------------------------------------------------------------------ commands
    def check_command(self, q) -> np.ndarray:
        """Validate an absolute target (8,) in ``JOINT_NAMES`` order; clip to the limits."""
        t = np.asarray(q, dtype=np.float64).reshape(-1)
        if t.shape != (len(JOINT_NAMES),):
            raise SimError(f"command needs {len(JOINT_NAMES)} values {list(JOINT_NAMES)}, got {t.size}")
        if not np.all(np.isfinite(t)):
            raise SimError(f"command has NaN or inf: {t.tolist()}")
        return np.clip(t, self.lower, self.upper)

    def set_target(self, q) -> None:
        self.target = self.check_command(q)
        self.data.ctrl[self._act] = self.target[:7]
        self.data.ctrl[self._fact] = [self.target[7] / 2, -self.target[7] / 2]

    def step(self, q=None, follow: Callable[[float], Any] | None = None) -> PandaStep:
        """``n_substeps`` physics steps toward ``q`` (or the last target). ``follow(s)``, when
        given, is the target before each physics step, ``s`` seconds into this step: a
        controller at the physics rate (500 Hz), e.g. a trajectory follower sampled there."""
        if q is not None:
            self.set_target(q)
        h = float(self.model.opt.timestep)
        for i in range(self.cfg.n_substeps):
            if follow is not None:
                target = follow(i * h)
                if target is not None:
                    self.set_target(target)
            mujoco.mj_step(self.model, self.data)
        self.steps += 1
        self.success = self.success or self.solved()
        return PandaStep(self.success, self.steps >= self.max_episode_steps, self.cube_pose()[0])

    # ------------------------------------------------------------------ cameras
    def camera_model(self, cam: str) -> CameraModel:
        """Intrinsics and current extrinsics (OpenCV optical frame -> world) of a camera."""
        if cam not in self._cam_ids:
            raise SimError(f"camera {cam!r} not configured; configured: {list(self.cfg.cameras)}")
        h, w = self.cfg.image_size
        i = self._cam_ids[cam]
        f = 0.5 * h / np.tan(np.deg2rad(float(self.model.cam_fovy[i])) / 2.0)
        T = np.eye(4)
        T[:3, :3] = self.data.cam_xmat[i].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        T[:3, 3] = self.data.cam_xpos[i]
        return CameraModel(cam, int(w), int(h), float(f), float(f), (w - 1) / 2.0, (h - 1) / 2.0, T)

    def render(self, cam: str, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (H, W, 3) uint8, depth (H, W) float32 metres, 0 = none), one render pass."""
        if cam not in self._cam_ids:
            raise SimError(f"camera {cam!r} not configured; configured: {list(self.cfg.cameras)}")
        if self._renderer is None:
            m = self.model
            m.vis.quality.shadowsize = 0
            m.vis.quality.offsamples = 0
            h, w = self.cfg.image_size
            m.vis.global_.offwidth = max(int(m.vis.global_.offwidth), w)
            m.vis.global_.offheight = max(int(m.vis.global_.offheight), h)
            self._renderer = _RGBDRenderer(m, height=h, width=w)
            self._vopt = mujoco.MjvOption()
            self._vopt.geomgroup[:] = 0
            arm = VISUAL_GROUP if self.cfg.meshes == "visual" else COLLISION_GROUP
            self._vopt.geomgroup[[arm, SCENE_GROUP]] = 1
            self._vopt.sitegroup[:] = 0
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        self._renderer.update_scene(self.data if data is None else data, camera=self._cam_ids[cam],
                                      scene_option=self._vopt)
        rgb, depth = self._renderer.render_rgbd()
        depth[depth >= 0.99 * self.model.vis.map.zfar * self.model.stat.extent] = 0.0
        return rgb, depth

    def snapshot(self) -> mujoco.MjData:
        """Copy of the physics state, to render on another thread."""
        return copy.copy(self.data)

    def close_renderer(self) -> None:
        """Free the GL context; call from the thread that rendered."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def close(self) -> None:
        self.close_renderer()
