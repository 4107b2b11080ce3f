"""CommandStream and the executor's status (l1flow_ros.control.stream / status), without ROS:
enable from the measured position, controller loss, what each output sends per tick, joint
states picked by name, the diagnostics summary."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from l1flow_ros.control.safety import Limits
from l1flow_ros.control.scheduler import ChunkRejected, ChunkScheduler, SchedulerConfig, SchedulerStats
from l1flow_ros.control.status import ERROR, OK, WARN, JointPicker, health, summary
from l1flow_ros.control.stream import CommandStream, boundary_line, parse_boundary_line
from l1flow_ros.spec import Chunk

pytestmark = pytest.mark.core

NAMES = ("x", "y", "grip")
TICK = 2_000_000
T0 = 10_000_000_000


def make(output: str = "forward_position") -> CommandStream:
    lim = Limits.build(3, gripper_indices=(2,), gripper_binary=False)
    return CommandStream(ChunkScheduler(SchedulerConfig(names=NAMES), lim), output)


def chunk(t_obs: int, actions) -> Chunk:
    return Chunk(t_obs, 0.1, np.asarray(actions, dtype=np.float64), NAMES)


def test_enable_needs_a_measured_position_and_starts_there():
    s = make()
    ok, why = s.enable(True, T0)
    assert not ok and "x" in why and s.tick(T0) is None
    s.set_measured(np.array([0.1, 0.2, -1.0]), 5.0)
    assert s.enable(True, T0) == (True, "enabled")
    assert s.enable(True, T0) == (True, "already enabled")
    np.testing.assert_array_equal(s.tick(T0 + TICK), [0.1, 0.2, -1.0])  # at rest, no jump
    assert s.ticks == 1
    assert s.enable(False, T0) == (True, "disabled") and s.tick(T0 + 2 * TICK) is None and s.ticks == 1
    assert s.enable(False, T0) == (True, "already disabled")


def test_a_lost_controller_stops_the_stream_and_its_return_restarts_from_the_measured_position():
    s = make()
    s.set_measured(np.zeros(3), 0.0)
    s.enable(True, T0)
    s.add_chunk(chunk(T0, np.tile([0.5, 0.0, 1.0], (10, 1))), T0)
    moving = [s.tick(T0 + k * TICK)[0] for k in range(1, 200)]
    assert moving[-1] > 0.01
    assert s.controller_present(False, T0) is False and s.controller_present(False, T0) is None
    assert s.tick(T0 + 200 * TICK) is None
    s.set_measured(np.array([-0.3, 0.0, -1.0]), 1.0)  # teleop moved the arm meanwhile
    assert s.controller_present(True, T0 + 300 * TICK) is True
    assert s.controller_present(True, T0 + 300 * TICK) is None
    np.testing.assert_allclose(s.tick(T0 + 301 * TICK), [-0.3, 0.0, -1.0], atol=1e-12)


def test_ee_delta_sums_to_the_motion_with_grippers_absolute():
    s = make("ee_delta")
    s.set_measured(np.array([0.1, 0.0, -1.0]), 0.0)
    s.enable(True, T0)
    a = np.tile([0.1, 0.0, 1.0], (5, 1))
    a[:, 1] = 0.01 * np.arange(1, 6)
    s.add_chunk(chunk(T0, a), T0)
    d = np.array([s.tick(T0 + k * TICK) for k in range(1, 400)])  # 0.8 s: past the chunk's end
    np.testing.assert_allclose(d[:, :2].sum(axis=0), [0.0, 0.05], atol=1e-9)
    assert d[-1, 2] == pytest.approx(1.0)  # the gripper's absolute command, not a difference


def test_joint_trajectory_sends_the_plan_once_per_plan():
    s = make("joint_trajectory")
    s.set_measured(np.zeros(3), 0.0)
    s.enable(True, T0)
    times, p, v = s.tick(T0 + TICK)  # the hold plan, once
    assert len(times) == 1 and np.all(v == 0)
    assert s.tick(T0 + 2 * TICK) is None
    a = np.tile([0.0, 0.0, 0.0], (10, 1))
    a[:, 0] = 0.01 * np.arange(1, 11)
    s.add_chunk(chunk(T0, a), T0 + 2 * TICK)
    assert s.chunk_dt_ns == 100_000_000
    times, p, v = s.tick(T0 + 3 * TICK)
    assert np.all(np.diff(times) > 0) and times[-1] == T0 + 1_000_000_000  # to the last action's due time
    assert p.shape == (len(times), 3) and p[-1, 0] == pytest.approx(0.1) and np.all(v[-1] == 0)
    assert s.tick(T0 + 4 * TICK) is None


def test_rejections_are_reported_once_each():
    s = make()
    s.set_measured(np.zeros(3), 0.0)
    s.enable(True, T0)
    with pytest.raises(ChunkRejected):
        s.add_chunk(chunk(T0 + 5_000_000_000, np.zeros((4, 3))), T0)  # 5 s in the future
    s.reject("future")
    s.reject("too_old")
    r = s.report()
    assert (r.rejections, r.new_rejections, r.last_rejection, r.enabled, r.measured) == (2, 2, "too_old", True, True)
    assert s.report().new_rejections == 0 and s.report().rejections == 2


def test_joint_picker_takes_the_named_joints_in_command_order():
    j = JointPicker(NAMES)
    np.testing.assert_array_equal(j.pick(["grip", "other", "x", "y"], [1.0, 9.0, 0.1, 0.2]), [0.1, 0.2, 1.0])
    np.testing.assert_array_equal(j.pick(["x", "y", "grip"], [1.0, 2.0, 3.0]), [1.0, 2.0, 3.0])  # new order
    assert j.pick(["x", "y"], [1.0, 2.0]) is None and "grip" in j.problem
    assert j.pick(["x", "y", "grip"], [1.0, 2.0]) is None and "2 positions for 3 names" in j.problem
    assert j.pick(["x", "y", "grip"], [1.0, float("nan"), 3.0]) is None and "NaN" in j.problem


def test_health_puts_the_worst_first():
    assert health(enabled=True, starved=False, output_topic="/out") == (OK, "streaming")
    assert health(enabled=False, starved=False, output_topic="/out") == (OK, "disabled")
    assert health(enabled=True, starved=True, output_topic="/out")[0] == WARN
    level, message = health(enabled=True, starved=False, output_topic="/out", new_missed=3, new_rejections=2,
                            last_rejection="future: 5 s ahead", joint_states_age_s=2.5,
                            joint_states_problem="/joint_states lacks ['x']")
    assert level == ERROR
    parts = message.split("; ")
    assert parts[0].startswith("rejected 2 chunk(s): future") and "2.5 s" in parts[1] and "3 control" in parts[2]
    assert health(enabled=False, starved=False, output_topic="/out", controller_lost=True)[0] == WARN
    assert health(enabled=True, starved=False, output_topic="/out", controller_lost=True)[0] == ERROR


def test_summary_keeps_every_diagnostics_field():
    s = make()
    timing = {"period_error_us_p50": 1.04, "period_error_us_p99": 20.0, "period_error_us_max": 300.0,
              "missed_ticks": 4.0, "deadlines": 1000.0, "periods": 999.0}
    level, message, values = summary(s.report(), SchedulerStats(accepted=3), timing, now_ns=T0,
                                     output="forward_position", output_topic="/out", rate_hz=500.0, new_missed=4,
                                     replan_due=True, control_thread="SCHED_FIFO 50", executor_thread="x",
                                     middleware_threads="y")
    assert list(values) == [
        "enabled", "mode", "output", "rate_hz", "period_error_us_p50", "period_error_us_p99",
        "period_error_us_max", "missed_ticks", "deadlines", "starvation_events", "chunk_age_ms",
        "chunks_accepted", "chunks_rejected", "last_rejection", "dropped_stale_actions", "limited_ticks",
        "replan_due", "inference_delay_steps_p95", "obs_to_arrival_ms_p50", "obs_to_arrival_ms_p95",
        "boundary_velocity_step_max", "boundary_acceleration_max", "boundary_velocity_step_p95",
        "boundaries_spliced", "boundaries_on_plan", "on_plan_boundary_velocity_step_max",
        "on_plan_boundary_velocity_step_p95", "on_plan_boundary_acceleration_max",
        "control_thread", "executor_thread", "middleware_threads"]
    assert values["inference_delay_steps_p95"] == -1 and np.isnan(values["obs_to_arrival_ms_p95"])  # no chunk yet
    assert values["missed_ticks"] == 4 and values["period_error_us_p50"] == 1.0 and values["chunks_accepted"] == 3
    assert values["control_thread"] == "SCHED_FIFO 50" and np.isnan(values["chunk_age_ms"])
    assert level == WARN and "no /joint_states" in message and "4 control ticks missed" in message


def test_the_delay_of_accepted_chunks_is_reported_after_warm_up():
    """Stamps -> d = ceil(latency / dt) on /diagnostics; rejected chunks and warm-up do not count."""
    s = make()
    s.set_measured(np.zeros(len(NAMES)), 0.0)
    assert s.enable(True, T0)[0]
    for i in range(6):  # 3 warm-up chunks, then 3 at 130 ms obs -> arrival with dt 0.1 s: d = 2
        t_obs = T0 + i * 100_000_000
        s.add_chunk(chunk(t_obs, np.zeros((8, len(NAMES)))), t_obs + 130_000_000)
    with pytest.raises(ChunkRejected):  # older than the running chunk: not counted
        s.add_chunk(chunk(T0, np.zeros((8, len(NAMES)))), T0 + 700_000_000)
    r = s.report()
    assert s.delay.samples == 3 and r.delay_steps == 2 and abs(r.delay_ms_p50 - 130.0) < 1e-6


def test_boundary_velocity_step_is_measured_after_splices_not_at_the_start():
    s = make()
    s.set_measured(np.zeros(3), 0.0)
    s.enable(True, T0)
    # The first chunk starts the arm from rest: not a boundary.
    s.add_chunk(chunk(T0, [[0.01 * (k + 1), 0.0, 1.0] for k in range(10)]), T0)
    for k in range(1, 100):
        s.tick(T0 + k * TICK)
    r = s.report()
    assert r.boundary_velocity_step == 0.0 and r.boundary_acceleration == 0.0
    # The same motion continued: a small step. Then a chunk going back: a large one.
    t = T0 + 100 * TICK
    s.add_chunk(chunk(t, [[0.02 + 0.01 * (k + 1), 0.0, 1.0] for k in range(10)]), t)
    for k in range(1, 60):
        s.tick(t + k * TICK)
    smooth = s.report().boundary_velocity_step
    t += 60 * TICK
    s.add_chunk(chunk(t, [[0.0, 0.0, -1.0]] * 10), t)  # the gripper's own jump is left out
    for k in range(1, 60):
        s.tick(t + k * TICK)
    r = s.report()
    assert r.boundary_velocity_step > 5 * max(smooth, 1e-3) and r.boundary_acceleration > 0


def test_boundaries_from_rest_are_told_apart_from_those_on_a_running_plan():
    """A chunk observed before the first chunk of a start arrived (in flight from rest) is a
    boundary but not on a plan; one observed after it is. Each accepted chunk is an event with
    its own delay, and the log line of an event reads back as the same event."""
    s = make()
    s.set_measured(np.zeros(3), 0.0)
    s.enable(True, T0)
    ramp = [[0.01 * (k + 1), 0.0, 1.0] for k in range(10)]
    s.add_chunk(chunk(T0 - 200_000_000, ramp), T0)  # the first: from rest
    for k in range(1, 25):
        s.tick(T0 + k * TICK)
    t1 = T0 + 25 * TICK
    s.add_chunk(chunk(T0 - 50_000_000, [[0.3, 0.0, 1.0]] * 10), t1)  # observed before the first arrived
    for k in range(26, 100):
        s.tick(T0 + k * TICK)
    t2 = T0 + 100 * TICK
    s.add_chunk(chunk(t2 - 130_000_000, [[0.3, 0.0, 1.0]] * 10), t2)  # observed on the plan: d = 2
    r = s.report()
    ev = s.events()
    assert [e.index for e in ev] == [0, 1, 2] and [e.boundary for e in ev] == [False, True, True]
    assert [e.on_plan for e in ev] == [False, False, True]
    assert ev[2].delay_steps == 2 and abs(ev[2].since_start_s - 0.2) < 1e-9
    assert r.boundaries == 2 and r.boundaries_on_plan == 1
    assert ev[1].velocity_step > ev[2].velocity_step  # the jump to 0.3 came with the chunk from rest
    assert r.boundary_velocity_step == ev[1].velocity_step and r.on_plan_velocity_step == ev[2].velocity_step
    assert ev[2].velocity_step <= r.boundary_velocity_step_p95 <= ev[1].velocity_step
    assert parse_boundary_line("[executor_node] " + boundary_line(ev[1])).index == 1
    back = parse_boundary_line(boundary_line(ev[2]))
    assert back.on_plan and back.delay_steps == 2 and abs(back.velocity_step - ev[2].velocity_step) < 1e-5
    assert parse_boundary_line("chunk event: t_obs_ns=x") is None and parse_boundary_line("other") is None
    s.enable(False, t2)
    s.enable(True, t2 + TICK)  # a new start from rest: counting starts again at index 0
    s.add_chunk(chunk(t2, ramp), t2 + 2 * TICK)
    assert s.events()[-1].index == 0 and not s.events()[-1].boundary


def test_chunks_of_other_fingerprints_are_refused_when_a_list_is_given():
    s = make()
    s.set_measured(np.zeros(3), 0.0)
    s.enable(True, T0)
    s.fingerprints = frozenset({"aaaa000011112222"})
    foreign = Chunk(T0, 0.1, np.tile([0.1, 0.0, 1.0], (10, 1)), NAMES, fingerprint="ffff000011112222")
    with pytest.raises(ChunkRejected, match="ffff000011112222.*accept_fingerprints"):
        s.add_chunk(foreign, T0)
    assert s.scheduler.stats().accepted == 0
    s.add_chunk(dataclasses.replace(foreign, fingerprint="aaaa000011112222"), T0)
    assert s.scheduler.stats().accepted == 1
