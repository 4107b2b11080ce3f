"""The simulated arm's real-time engine (l1flow_ros.sim.robot), no ROS: config, commands,
frame hand-off on a fake clock, and the physics loop's deadlines."""

import threading
import time

import numpy as np
import pytest

from l1flow_ros.sim.metaworld_env import JOINT_NAMES, MetaWorldSim, SimError
from l1flow_ros.sim.robot import RESYNC_S, SimRobot, SimRobotConfig
from l1flow_ros.sim.trajectory import TrajectoryError

MS = 1_000_000


class Clock:
    """A clock the test moves: ``t`` seconds (monotonic) and ``ns`` (the stamping clock)."""

    def __init__(self):
        self.t = 0.0
        self.ns = 1_000 * MS

    def monotonic(self):
        return self.t

    def clock_ns(self):
        return self.ns


@pytest.fixture(scope="module")
def sim():
    s = MetaWorldSim(SimRobotConfig(cameras=("corner",), image_height=16, image_width=24).sim_config())
    yield s
    s.close()


@pytest.mark.core
def test_config_defaults_validation_and_sim_config():
    cfg = SimRobotConfig()
    cfg.validate()
    assert (cfg.task, cfg.seed, cfg.cameras, cfg.camera_rate_hz, cfg.diagnostics_rate_hz) == (
        "button-press-v3", 0, ("corner",), 15.0, 1.0)
    sc = SimRobotConfig(task="reach-v3", cameras=(), image_height=24, image_width=32, max_episode_steps=50).sim_config()
    assert (sc.task, sc.cameras, sc.image_size, sc.max_episode_steps) == ("reach-v3", (), (24, 32), 50)
    for bad, words in [(dict(camera_rate_hz=0.0), "camera_rate_hz"), (dict(camera_rate_hz=101.0), "camera_rate_hz"),
                       (dict(diagnostics_rate_hz=0.0), "diagnostics_rate_hz"), (dict(seed=-1), "seed"),
                       (dict(task="no-task-v3"), "task"), (dict(cameras=("nowhere",)), "camera")]:
        with pytest.raises(SimError, match=words):
            SimRobotConfig(**bad).validate()


@pytest.mark.graph
def test_frames_are_due_at_the_camera_rate_and_dropped_while_the_renderer_is_busy(sim):
    c = Clock()
    r = SimRobot(sim, seed=0, camera_rate_hz=10.0, clock_ns=c.clock_ns, monotonic=c.monotonic)
    tick = r.step()
    assert tick.snapshot is not None and tick.stamp_ns == c.ns and tick.q.shape == (len(JOINT_NAMES),)
    r.offer_frame(tick.stamp_ns, tick.snapshot)
    c.t = 0.05
    assert r.step().snapshot is None and r.n_frames_dropped == 0  # not due yet
    c.t = 0.1
    assert r.step().snapshot is None and r.n_frames_dropped == 1  # due, but the renderer has the last one
    stop = threading.Event()
    stamp, snap = r.wait_frame(stop)
    assert stamp == tick.stamp_ns
    images = r.render(snap)
    assert set(images) == {"corner"}
    rgb, depth = images["corner"]
    assert rgb.shape == (16, 24, 3) and rgb.dtype == np.uint8 and depth.shape == (16, 24)
    r.frame_done(rendered=True)
    assert r.n_frames == 1
    c.t = 0.2
    assert r.step().snapshot is not None  # free again: the next due frame is taken
    r.frame_done(rendered=False)  # (a failed render frees the renderer without counting a frame)
    assert r.n_frames == 1
    # Far behind (a stalled thread): one frame now, the next a period later, no burst.
    c.t = 5.0
    assert r.step().snapshot is not None
    r.frame_done(rendered=True)
    assert r.step().snapshot is None
    c.t = 5.1
    assert r.step().snapshot is not None
    # The rate may change while running: the next frame is due at the new rate.
    r.frame_done(rendered=True)
    r.camera_rate_hz = 2.0
    c.t = 5.2
    assert r.step().snapshot is not None  # due at 5.2 (set at the old rate)
    r.frame_done(rendered=True)
    c.t = 5.6
    assert r.step().snapshot is None
    c.t = 5.7
    assert r.step().snapshot is not None
    stop.set()
    assert r.wait_frame(stop) is None


@pytest.mark.graph
def test_commands_trajectories_and_resets(sim):
    c = Clock()
    r = SimRobot(sim, seed=5, camera_rate_hz=10.0, clock_ns=c.clock_ns, monotonic=c.monotonic)
    here = r.sim.target.copy()
    # A trajectory over 100 ms to a point 4 cm away in x, followed on the stamping clock.
    goal = here + np.array([0.04, 0.0, 0.0, 0.0])
    r.follow(["ee_x", "ee_y", "ee_z", "gripper"], 0, [100 * MS], [goal.tolist()])
    c.ns += 50 * MS
    r.step()
    np.testing.assert_allclose(r.sim.target, here + [0.02, 0.0, 0.0, 0.0], atol=1e-12)
    with pytest.raises(TrajectoryError):
        r.follow(["ee_x"], 0, [MS], [[0.1]])
    # An absolute target cancels the trajectory: the target stays where it was set.
    r.set_target(here)
    c.ns += 50 * MS
    r.step()
    np.testing.assert_allclose(r.sim.target, here)
    r.apply_delta([0.0, 0.0, 0.01, 1.0])
    np.testing.assert_allclose(r.sim.target[[2, 3]], [here[2] + 0.01, 1.0])
    with pytest.raises(SimError):
        r.set_target([float("nan"), 0.6, 0.2, 0.0])
    with pytest.raises(SimError):
        r.apply_delta([0.0, 0.0])
    assert r.reset() == (1, 6) and r.sim.seed == 6
    r.next_reset_seed(5)
    assert r.reset() == (2, 5)
    st = r.status()
    assert list(st) == ["episode", "seed", "step", "success", "truncated", "target", "physics_steps",
                        "physics_overruns", "frames", "frames_dropped"]
    assert (st["episode"], st["seed"], st["step"], st["physics_steps"]) == (2, 5, 0, 2)


@pytest.mark.graph
def test_physics_loop_keeps_its_deadlines_and_resynchronises_after_a_stall():
    sim = MetaWorldSim(SimRobotConfig(cameras=()).sim_config())
    r = SimRobot(sim, seed=0, camera_rate_hz=10.0, clock_ns=time.monotonic_ns)
    dt = sim.dt
    stall = 3 * RESYNC_S
    times = []

    def on_tick(tick):
        times.append(time.monotonic())
        assert tick.snapshot is None  # no cameras, no frames
        if len(times) == 5:
            time.sleep(stall)  # a starved physics thread
        return len(times) < 25

    r.run(on_tick, threading.Event())
    sim.close()
    assert len(times) == 25 and r.n_steps == 25  # on_tick's False ended the loop
    assert r.n_overruns >= 1
    # After the stall the loop starts again from now: the next steps come a dt apart, not in
    # a burst catching up the stalled time (which would be about stall / dt = 24 steps at once).
    # Lower bounds only: a loaded machine makes steps later, never earlier.
    after = np.diff(times[5:15])
    assert after.sum() >= 0.8 * 9 * dt, after
    assert times[-1] - times[0] >= stall + 0.8 * 19 * dt


@pytest.mark.graph
def test_physics_loop_ends_when_stopped():
    sim = MetaWorldSim(SimRobotConfig(cameras=()).sim_config())
    r = SimRobot(sim, seed=0, camera_rate_hz=10.0, clock_ns=time.monotonic_ns)
    stop = threading.Event()
    t = threading.Thread(target=r.run, args=(lambda tick: True, stop))
    t.start()
    deadline = time.monotonic() + 30.0
    while r.n_steps < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(timeout=5.0)
    sim.close()
    assert not t.is_alive() and r.n_steps >= 10
