"""Differential inverse kinematics for an arm, behind a small ROS-free interface.

The solver is mink (quadratic-programming differential IK on MuJoCo models, with the
DAQP solver): each :meth:`DiffIK.step` finds the joint velocity that best moves a frame
toward a target pose within the joints' position and velocity limits, and integrates it
over ``dt``. A Cartesian teleoperation step (a target moved by a joystick velocity) and a
scripted expert's waypoint tracking are the same call.
"""

from __future__ import annotations

from collections.abc import Sequence

import mink
import mujoco
import numpy as np


class IKError(ValueError):
    """Bad input for the IK; the text says why."""


class DiffIK:
    """Joint positions that put ``frame`` (a site) at a target pose.

    ``model`` is a kinematic model of the arm (extra joints, e.g. fingers, stay where
    they are); ``joints`` the arm joints the IK moves, in the caller's order;
    ``max_velocity`` (len(joints),) their speed limits. Not thread-safe.
    """

    def __init__(self, model: mujoco.MjModel, joints: Sequence[str], frame: str, max_velocity: Sequence[float],
                 position_cost: float = 1.0, orientation_cost: float = 0.5, posture_cost: float = 1e-3,
                 damping: float = 1e-3, solver: str = "daqp") -> None:
        self.model = model
        self.joints = tuple(joints)
        try:
            self._qadr = np.array([model.jnt_qposadr[model.joint(j).id] for j in self.joints])
            model.site(frame)
        except KeyError as e:
            raise IKError(f"the IK model has no {e}") from None
        v = np.asarray(max_velocity, dtype=np.float64).reshape(-1)
        if v.shape != (len(self.joints),) or np.any(v <= 0):
            raise IKError(f"max_velocity needs {len(self.joints)} positive values, got {v.tolist()}")
        self.frame = frame
        self.config = mink.Configuration(model)
        self.task = mink.FrameTask(frame, "site", position_cost=position_cost,
                                   orientation_cost=orientation_cost, lm_damping=1.0)
        self.posture = mink.PostureTask(model, cost=posture_cost)
        self.limits = [mink.ConfigurationLimit(model),
                       mink.VelocityLimit(model, dict(zip(self.joints, v.tolist())))]
        self.damping = float(damping)
        self.solver = solver

    def _load(self, q: np.ndarray) -> None:
        full = self.config.q.copy()
        full[self._qadr] = q
        self.config.update(full)

    def fk(self, q: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of the frame at joint positions ``q``."""
        self._load(self._check_q(q))
        T = self.config.get_transform_frame_to_world(self.frame, "site")
        return T.translation().copy(), T.rotation().as_matrix().copy()

    def _check_q(self, q) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (len(self.joints),) or not np.all(np.isfinite(q)):
            raise IKError(f"joint positions need {len(self.joints)} finite values, got {q.tolist()}")
        return q

    def step(self, q: Sequence[float], position: Sequence[float], rotation: np.ndarray, dt: float,
             posture: Sequence[float] | None = None) -> np.ndarray:
        """Joint positions (len(joints),) one ``dt`` later, moving the frame toward the pose
        (``rotation`` (3, 3) in the world frame); within position and velocity limits.
        ``posture``: joint positions the redundancy is drawn toward (default ``q``)."""
        q = self._check_q(q)
        p = np.asarray(position, dtype=np.float64).reshape(-1)
        R = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        if p.shape != (3,) or not (np.all(np.isfinite(p)) and np.all(np.isfinite(R))):
            raise IKError("target pose needs a finite position (3,) and rotation (3, 3)")
        if not (dt > 0):
            raise IKError(f"dt must be > 0, got {dt}")
        self._load(q)
        self.task.set_target(mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(R), p))
        ref = self.config.q.copy()
        if posture is not None:
            ref[self._qadr] = self._check_q(posture)
        self.posture.set_target(ref)
        v = mink.solve_ik(self.config, [self.task, self.posture], dt, self.solver, damping=self.damping,
                          limits=self.limits)
        self.config.integrate_inplace(v, dt)
        return self.config.q[self._qadr].copy()

    def solve(self, q: Sequence[float], position: Sequence[float], rotation: np.ndarray, dt: float = 0.02,
              iterations: int = 200, tol: float = 1e-4) -> tuple[np.ndarray, bool]:
        """Repeated :meth:`step` until the frame is within ``tol`` (m, and rad) of the pose;
        -> (joint positions, converged)."""
        q = self._check_q(q)
        posture = q.copy()
        for _ in range(int(iterations)):
            q = self.step(q, position, rotation, dt, posture)
            pos, rot = self.fk(q)
            err_r = np.linalg.norm(mink.SO3.from_matrix(rot.T @ np.asarray(rotation)).log())
            if np.linalg.norm(pos - np.asarray(position)) < tol and err_r < tol:
                return q, True
        return q, False
