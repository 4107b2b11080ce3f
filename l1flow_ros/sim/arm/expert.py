"""Scripted experts for the Panda's tasks: Cartesian waypoints through differential IK.

At reset the expert reads the cube's pose and the target's (privileged state, as
Meta-World's experts read theirs) and plans grip-site waypoints: above the cube, down to
it, close, lift, then hold (lift) or carry over the target, down, open, up (place). Every step it moves a Cartesian target along the plan (minimum-jerk between
waypoints) and turns it into joint targets with :class:`~l1flow_ros.sim.arm.ik.DiffIK`
from its previous command, so every command is within the arm's position and velocity
limits: the path a Cartesian teleoperation would take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l1flow_ros.sim.arm.ik import DiffIK
from l1flow_ros.sim.arm.panda import (
    ARM_JOINTS,
    CUBE_HALF,
    GRIP_SITE,
    GRIPPER_MAX,
    MAX_VELOCITY,
    PandaSim,
)


def grasp_rotation(theta: float) -> np.ndarray:
    """(3, 3) hand pointing down with its fingers closing along world (cos, sin, 0) of ``theta``."""
    x = np.array([np.cos(theta), np.sin(theta), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s**3 * (10.0 - 15.0 * s + 6.0 * s * s)


@dataclass(frozen=True)
class Waypoint:
    duration: float  # s to get here from the previous waypoint
    position: np.ndarray  # (3,) grip site, world frame
    theta: float  # rad, closing direction of the fingers about world z
    gripper: float  # m, finger opening


class PandaExpert:
    """Joint targets (8,) for :class:`PandaSim`, one per step, from a waypoint plan for the
    sim's task."""

    def __init__(self, sim: PandaSim, speed: float = 1.0, above: float = 0.12, lift: float = 0.15) -> None:
        if not (0.0 < speed <= 2.0):
            raise ValueError(f"expert speed must be in (0, 2], got {speed}")
        self.sim = sim
        self.speed = float(speed)
        self.above = float(above)
        self.lift = float(lift)
        self.ik = DiffIK(sim.model, ARM_JOINTS, GRIP_SITE, MAX_VELOCITY[:7])
        self.plan: list[Waypoint] = []
        self.q = np.zeros(8)
        self.t = 0.0

    def reset(self) -> None:
        """Plan from the sim's current state (call after ``sim.reset``)."""
        sim = self.sim
        self.q = sim.joint_positions()
        self.t = 0.0
        p0, R0 = sim.site_pose(GRIP_SITE)
        theta0 = float(np.arctan2(R0[1, 0], R0[0, 0]))
        cube, yaw = sim.cube_pose()
        # A face normal of the cube closest to the hand's current closing direction.
        k = np.round((theta0 - yaw) / (np.pi / 2))
        theta = float(yaw + k * np.pi / 2)
        grasp = cube + [0.0, 0.0, -0.25 * CUBE_HALF]
        up = np.array([0.0, 0.0, 1.0])
        v = 1.0 / self.speed
        self.plan = [
            Waypoint(0.0, p0, theta0, GRIPPER_MAX),
            Waypoint(1.2 * v, grasp + self.above * up, theta, GRIPPER_MAX),
            Waypoint(0.8 * v, grasp, theta, GRIPPER_MAX),
            Waypoint(0.6 * v, grasp, theta, 0.0),  # close
            Waypoint(1.0 * v, grasp + self.lift * up, theta, 0.0),
        ]
        if sim.cfg.task == "place":
            # Carry at the lift height, put it down 2 mm above its resting height, open, go up.
            drop = np.array([sim.target_pos[0], sim.target_pos[1], grasp[2] + 0.002])
            self.plan += [
                Waypoint(1.2 * v, drop + self.lift * up, theta, 0.0),
                Waypoint(0.8 * v, drop, theta, 0.0),
                Waypoint(0.5 * v, drop, theta, GRIPPER_MAX),  # open
                Waypoint(0.6 * v, drop + self.above * up, theta, GRIPPER_MAX),
            ]
        last = self.plan[-1]
        self.plan.append(Waypoint(1e9, last.position, last.theta, last.gripper))  # hold

    def pose_at(self, t: float) -> tuple[np.ndarray, float, float]:
        """(grip-site position, theta, gripper opening) the plan wants at ``t`` s."""
        for a, b in zip(self.plan, self.plan[1:]):
            if t <= b.duration:
                s = _min_jerk(t / b.duration)
                g = a.gripper + min(t / b.duration, 1.0) * (b.gripper - a.gripper)
                return a.position + s * (b.position - a.position), a.theta + s * (b.theta - a.theta), g
            t -= b.duration
        last = self.plan[-1]
        return last.position, last.theta, last.gripper

    def act(self) -> np.ndarray:
        """The next joint target (8,) in ``JOINT_NAMES`` order; advances the plan by one dt."""
        dt = self.sim.dt
        self.t += dt
        pos, theta, grip = self.pose_at(self.t)
        q7 = self.ik.step(self.q[:7], pos, grasp_rotation(theta), dt)
        # The gripper moves at most at its own speed limit.
        g = self.q[7] + np.clip(grip - self.q[7], -MAX_VELOCITY[7] * dt, MAX_VELOCITY[7] * dt)
        self.q = np.concatenate([q7, [g]])
        return self.q.copy()


def run_expert_episode(sim: PandaSim, seed: int, expert: PandaExpert | None = None,
                     max_steps: int | None = None) -> tuple[bool, int, np.ndarray]:
    """Reset to ``seed`` and let the expert drive; -> (success, steps, commands (N, 8))."""
    expert = expert or PandaExpert(sim)
    sim.reset(seed)
    expert.reset()
    cmds = []
    limit = sim.max_episode_steps if max_steps is None else int(max_steps)
    for k in range(limit):
        q = expert.act()
        cmds.append(q)
        res = sim.step(q)
        if res.success:
            return True, k + 1, np.array(cmds)
    return False, limit, np.array(cmds)
