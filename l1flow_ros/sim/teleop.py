"""Teleoperation devices -> absolute arm targets, no ROS.

Three sources of the same absolute command ([ee_x, ee_y, ee_z, gripper] for the
simulated arm, or any joint-position vector for a real one):

- :class:`JoyTeleop`: gamepad / spacemouse axes are end-effector velocities integrated
  into a target, a button toggles the gripper, a deadman button gates motion;
- :class:`LeaderMirror`: a leader arm's joint positions, picked by name, scaled and offset;
- :class:`l1flow_ros.sim.metaworld_env.ScriptedExpert`: Meta-World's expert (simulation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from l1flow_ros.config import param


class TeleopError(ValueError):
    """Bad teleop configuration or device input; the text says why."""


@dataclass(frozen=True)
class JoyConfig:
    # Joystick axis per Cartesian direction x, y, z of the base frame. Defaults for a
    # gamepad under the joy driver: left stick sideways -> x, left stick forward -> y
    # (away from the base), right stick vertical -> z.
    axes: tuple[int, ...] = (0, 1, 4)
    axis_scale: tuple[float, ...] = (-0.15, 0.15, 0.15)  # m/s at full deflection; the sign flips an axis
    deadzone: float = 0.1  # |axis| below this counts as 0
    deadman_button: int = 4  # motion only while held; -1 = always enabled
    gripper_button: int = 0  # each press toggles open (-1) / closed (+1); -1 = none
    lower: tuple[float, ...] = (-0.5, 0.4, 0.05)  # target box, metres
    upper: tuple[float, ...] = (0.5, 1.0, 0.5)

    def validate(self) -> None:
        n = len(self.axes)
        if n == 0 or len(self.axis_scale) != n or len(self.lower) != n or len(self.upper) != n:
            raise TeleopError(
                f"axes {self.axes}, axis_scale {self.axis_scale}, lower {self.lower}, upper {self.upper} "
                "must have the same non-zero length"
            )
        if any(a < 0 for a in self.axes):
            raise TeleopError(f"axis indices must be >= 0, got {self.axes}")
        if not (0.0 <= self.deadzone < 1.0):
            raise TeleopError(f"deadzone must be in [0, 1), got {self.deadzone}")
        if any(lo > hi for lo, hi in zip(self.lower, self.upper)):
            raise TeleopError(f"lower {self.lower} exceeds upper {self.upper}")


class JoyTeleop:
    """Integrates joystick velocities into an absolute target; holds when released."""

    def __init__(self, cfg: JoyConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.target: np.ndarray | None = None  # (n + 1,) position dims + gripper
        self._gripper_pressed = False
        self.enabled = False

    def sync(self, position: Sequence[float]) -> None:
        """Start from the arm's measured position (n + 1 values, gripper last)."""
        p = np.asarray(position, dtype=np.float64).reshape(-1)
        if p.shape != (len(self.cfg.axes) + 1,) or not np.all(np.isfinite(p)):
            raise TeleopError(f"need {len(self.cfg.axes) + 1} finite positions to sync, got {p.tolist()}")
        self.target = p.copy()
        self.target[:-1] = np.clip(p[:-1], self.cfg.lower, self.cfg.upper)
        self.target[-1] = 1.0 if p[-1] > 0.0 else -1.0

    def update(self, axes: Sequence[float], buttons: Sequence[int], dt: float) -> np.ndarray | None:
        """One joystick sample held for ``dt`` seconds -> new target, or None (no command).

        None when the deadman is released or no position is known yet.
        """
        c = self.cfg
        axes = np.asarray(axes, dtype=np.float64).reshape(-1)
        need_axes = max(c.axes) + 1
        need_buttons = max(c.deadman_button, c.gripper_button) + 1
        if axes.size < need_axes:
            raise TeleopError(f"joy message has {axes.size} axes, mapping needs {need_axes}")
        if len(buttons) < need_buttons:
            raise TeleopError(f"joy message has {len(buttons)} buttons, mapping needs {need_buttons}")
        if not np.all(np.isfinite(axes)):
            raise TeleopError("joy axes have NaN or inf")
        if not (0.0 <= dt <= 1.0):
            raise TeleopError(f"joy dt {dt} s out of [0, 1]")
        pressed = c.gripper_button >= 0 and bool(buttons[c.gripper_button])
        toggle = pressed and not self._gripper_pressed  # on the press edge only
        self._gripper_pressed = pressed
        self.enabled = c.deadman_button < 0 or bool(buttons[c.deadman_button])
        if self.target is None or not self.enabled:
            return None
        v = axes[list(c.axes)]
        v = np.where(np.abs(v) < c.deadzone, 0.0, v)
        self.target[:-1] = np.clip(self.target[:-1] + v * np.asarray(c.axis_scale) * dt, c.lower, c.upper)
        if toggle:
            self.target[-1] = -self.target[-1] if self.target[-1] != 0 else 1.0
        return self.target.copy()


@dataclass(frozen=True)
class LeaderConfig:
    joint_names: tuple[str, ...] = ("ee_x", "ee_y", "ee_z", "gripper")  # leader names, command order
    scale: tuple[float, ...] = ()  # per joint; empty = 1
    offset: tuple[float, ...] = ()  # per joint; empty = 0

    def validate(self) -> None:
        n = len(self.joint_names)
        if n == 0 or len(set(self.joint_names)) != n:
            raise TeleopError(f"leader joint_names must be unique and non-empty, got {self.joint_names}")
        for k in ("scale", "offset"):
            v = getattr(self, k)
            if v and len(v) != n:
                raise TeleopError(f"leader {k} has {len(v)} values for {n} joints")


class LeaderMirror:
    """Leader-arm joint positions -> follower command: ``scale * q_leader + offset``."""

    def __init__(self, cfg: LeaderConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        n = len(cfg.joint_names)
        self.scale = np.asarray(cfg.scale or (1.0,) * n, dtype=np.float64)
        self.offset = np.asarray(cfg.offset or (0.0,) * n, dtype=np.float64)

    def command(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        if len(names) != len(positions):
            raise TeleopError(f"leader joint state has {len(names)} names and {len(positions)} positions")
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.cfg.joint_names if n not in index]
        if missing:
            raise TeleopError(f"leader joint state lacks {missing}")
        q = np.array([positions[index[n]] for n in self.cfg.joint_names], dtype=np.float64)
        if not np.all(np.isfinite(q)):
            raise TeleopError("leader joint positions have NaN or inf")
        return self.scale * q + self.offset


MODES = ("joy", "leader", "expert")
# The simulated arm's command order, which expert mode requires: metaworld_env.ACTION_NAMES
# (test_teleop checks), written here so that teleop does not import MuJoCo.
SIM_ACTION_NAMES = ("ee_x", "ee_y", "ee_z", "gripper")
_JOY, _LEADER = JoyConfig(), LeaderConfig()


@dataclass(frozen=True)
class TeleopConfig:
    """teleop_node's parameters (:mod:`l1flow_ros.nodes.params` declares them): the mode, and
    the settings of each mode, grouped under ``joy.*`` and ``leader.*``."""

    mode: str = param("joy", "joy | leader | expert")
    enabled: bool = param(True, "publish commands (live: pause / resume teleop)", live=True)
    action_names: tuple[str, ...] = param(SIM_ACTION_NAMES, "command vector order (/joint_states names)")
    rate_hz: float = param(50.0, "joy mode: command rate")
    joy_axes: tuple[int, ...] = param(_JOY.axes, "Joy axis index per Cartesian direction", name="joy.axes")
    joy_axis_scale: tuple[float, ...] = param(_JOY.axis_scale, "m/s at full deflection per direction",
                                              name="joy.axis_scale")
    joy_deadzone: float = param(_JOY.deadzone, "axis magnitude treated as zero", name="joy.deadzone")
    joy_deadman_button: int = param(_JOY.deadman_button, "hold to move; -1 = none", name="joy.deadman_button")
    joy_gripper_button: int = param(_JOY.gripper_button, "press toggles the gripper; -1 = none",
                                    name="joy.gripper_button")
    joy_lower: tuple[float, ...] = param(_JOY.lower, "target box lower corner, metres", name="joy.lower")
    joy_upper: tuple[float, ...] = param(_JOY.upper, "target box upper corner, metres", name="joy.upper")
    leader_joint_names: tuple[str, ...] = param(_LEADER.joint_names, "leader joints, command order",
                                                name="leader.joint_names")
    leader_scale: tuple[float, ...] = param((0.0,), "per-joint scale ([0.0] = 1 for all)", name="leader.scale")
    leader_offset: tuple[float, ...] = param((0.0,), "per-joint offset ([0.0] = 0 for all)", name="leader.offset")
    task: str = param("button-press-v3", "expert mode: Meta-World v3 task")
    action_scale: float = param(0.01, "expert mode: Meta-World action_scale (metres)")
    servo_gain: float = param(0.25, "expert mode: the sim's servo_gain")
    expert_speed: float = param(1.0, "expert mode: step scale in (0, 1]; < 1 = slower demos")

    def joy(self) -> JoyConfig:
        return JoyConfig(axes=self.joy_axes, axis_scale=self.joy_axis_scale, deadzone=self.joy_deadzone,
                         deadman_button=self.joy_deadman_button, gripper_button=self.joy_gripper_button,
                         lower=self.joy_lower, upper=self.joy_upper)

    def leader(self) -> LeaderConfig:
        def unset(v: tuple[float, ...]) -> tuple[float, ...]:
            return () if v == (0.0,) else v  # [0.0]: the default, all joints alike

        return LeaderConfig(joint_names=self.leader_joint_names, scale=unset(self.leader_scale),
                            offset=unset(self.leader_offset))

    def validate(self) -> None:
        if self.mode not in MODES:
            raise TeleopError(f"mode {self.mode!r} not in {MODES}")
        if not (0.0 < self.rate_hz <= 1000.0):
            raise TeleopError(f"rate_hz must be in (0, 1000], got {self.rate_hz}")
        if self.mode == "joy":
            self.joy().validate()
            if len(self.action_names) != len(self.joy_axes) + 1:
                raise TeleopError(
                    f"joy mode: action_names {self.action_names} must be the {len(self.joy_axes)} axes + gripper"
                )
        if self.mode == "leader":
            self.leader().validate()
        if self.mode == "expert":
            if self.action_scale <= 0 or not (0.0 < self.servo_gain <= 1.0):
                raise TeleopError(f"expert: action_scale {self.action_scale} > 0, servo_gain in (0, 1]")
            if self.action_names != SIM_ACTION_NAMES:
                raise TeleopError(f"expert mode commands {SIM_ACTION_NAMES}, got action_names {self.action_names}")
