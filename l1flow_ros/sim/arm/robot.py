"""panda_sim_node's parameters and the ROS-free robot they make (no ROS here).

:class:`PandaRobotConfig` is what :mod:`l1flow_ros.nodes.panda_sim_node` declares;
:func:`make_robot` builds the :class:`~l1flow_ros.sim.robot.SimRobot` over a
:class:`~l1flow_ros.sim.arm.panda.PandaSim` that the node wraps: commands and trajectories in
``JOINT_NAMES`` (panda_joint1..7, gripper opening in metres), a running trajectory sampled at
every physics substep (500 Hz), as a joint_trajectory_controller runs at its update rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from l1flow_ros.config import param
from l1flow_ros.sim.arm.panda import CAMERAS, JOINT_NAMES, TASKS, PandaConfig, PandaSim
from l1flow_ros.sim.metaworld_env import SimError
from l1flow_ros.sim.robot import SimRobot


@dataclass(frozen=True)
class PandaRobotConfig:
    """panda_sim_node's parameters (:mod:`l1flow_ros.nodes.params` declares them)."""

    task: str = param("lift", f"task: one of {list(TASKS)}")
    seed: int = param(0, "seed of the first episode; each /sim/reset uses the next", live=True)
    cameras: tuple[str, ...] = param(CAMERAS, f"cameras to publish, of {list(CAMERAS)} (empty = none)")
    image_height: int = param(96, "rendered image height, pixels")
    image_width: int = param(96, "rendered image width, pixels")
    camera_rate_hz: float = param(15.0, "camera frame rate (all cameras together)", live=True)
    joint_state_rate_hz: float = param(0.0, "rate of /joint_states; 0 = every physics step (50 Hz)", live=True)
    max_episode_steps: int = param(0, "episode length in physics steps reported as truncated; 0 = task's")
    meshes: str = param("collision", "the arm's meshes the cameras show: collision (fast) | visual")
    diagnostics_rate_hz: float = param(1.0, "rate of /diagnostics", live=True)

    def validate(self) -> None:
        if not (0.0 < self.camera_rate_hz <= 100.0):
            raise SimError(f"camera_rate_hz must be in (0, 100], got {self.camera_rate_hz}")
        if not (0.0 <= self.joint_state_rate_hz <= 1000.0):
            raise SimError(f"joint_state_rate_hz must be in [0, 1000], got {self.joint_state_rate_hz}")
        if not (0.0 < self.diagnostics_rate_hz <= 50.0):
            raise SimError(f"diagnostics_rate_hz must be in (0, 50], got {self.diagnostics_rate_hz}")
        if self.seed < 0:
            raise SimError(f"seed must be >= 0, got {self.seed}")
        self.panda_config().validate()

    def panda_config(self) -> PandaConfig:
        return PandaConfig(task=self.task, image_size=(self.image_height, self.image_width), cameras=self.cameras,
                           max_episode_steps=self.max_episode_steps, meshes=self.meshes)


def make_robot(cfg: PandaRobotConfig, clock_ns: Callable[[], int]) -> SimRobot:
    """The simulated Panda as a real-time robot (commands in ``JOINT_NAMES``)."""
    return SimRobot(PandaSim(cfg.panda_config()), cfg.seed, cfg.camera_rate_hz, clock_ns,
                    command_names=JOINT_NAMES, substep_follow=True)
