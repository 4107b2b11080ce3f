"""Chunk scheduler core (no ROS): a simulated clock, deterministic."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l1flow_ros.control.interp import Plan, hermite_coeffs
from l1flow_ros.control.safety import Limits, limit_step
from l1flow_ros.control.scheduler import ChunkRejected, ChunkScheduler, Mode, SchedulerConfig
from l1flow_ros.spec import ActionSpec, Chunk

pytestmark = pytest.mark.core

NAMES = ("x", "y", "z")
TICK = 2_000_000  # 500 Hz
MS = 1_000_000
DT = 0.1


def make(limits: Limits | None = None, **cfg) -> ChunkScheduler:
    lim = limits if limits is not None else Limits.build(len(NAMES))
    s = ChunkScheduler(SchedulerConfig(names=NAMES, **cfg), lim)
    s.reset(np.zeros(len(NAMES)), 0)
    return s


def chunk(t_obs_ns: int, actions, dt: float = DT, names=NAMES) -> Chunk:
    return Chunk(t_obs_ns=t_obs_ns, dt=dt, actions=np.asarray(actions, dtype=np.float64), names=names)


def ramp(h: int, start: float, step: float) -> np.ndarray:
    """(h, 3) actions start + (k + 1) * step on every dimension."""
    return np.repeat((start + step * np.arange(1, h + 1))[:, None], len(NAMES), axis=1)


def run(s: ChunkScheduler, t0: int, t1: int, tick: int = TICK):
    """Commands for ticks in (t0, t1]: times (K,), positions (K, A), velocities (K, A), modes."""
    ts, ps, vs, ms = [], [], [], []
    t = t0 + tick
    while t <= t1:
        p, v, m = s.command(t)
        ts.append(t)
        ps.append(p)
        vs.append(v)
        ms.append(m)
        t += tick
    return np.array(ts), np.array(ps), np.array(vs), ms


# -- interpolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("quintic", [False, True])
def test_hermite_segment_matches_end_states(quintic):
    rng = np.random.default_rng(0)
    p0, v0, a0, p1, v1, a1 = rng.normal(size=(6, 4))
    h = 0.37
    c = hermite_coeffs(p0, v0, a0, p1, v1, a1, h, quintic)
    plan = Plan(0, np.array([0.0, h]), c[None])
    # Evaluate just inside the segment end (after the end the plan holds at rest).
    pe, ve, ae = (np.array(x) for x in plan._poly(0, h))
    ps, vs, as_ = (np.array(x) for x in plan.eval(0))
    np.testing.assert_allclose(ps, p0, atol=1e-12)
    np.testing.assert_allclose(vs, v0, atol=1e-12)
    np.testing.assert_allclose(pe, p1, atol=1e-9)
    np.testing.assert_allclose(ve, v1, atol=1e-9)
    if quintic:
        np.testing.assert_allclose(as_, a0, atol=1e-12)
        np.testing.assert_allclose(ae, a1, atol=1e-8)


@pytest.mark.parametrize("interp", ["cubic", "quintic"])
def test_plan_reproduces_constant_velocity_motion(interp):
    # Start on a line x = 0.2 t moving at 0.2 / s; waypoints on the same line (uneven spacing):
    # the spline is the line itself except at the end, where it comes to rest (the last segment;
    # for quintic also the one before, whose end acceleration sees the stop).
    times = np.array([0.05, 0.1, 0.25, 0.3, 0.5, 0.6]) * 1e9
    pts = 0.2 * (times * 1e-9)[:, None] * np.ones((1, 2))
    plan = Plan.through(0, np.zeros(2), np.full(2, 0.2), np.zeros(2), times.astype(np.int64), pts, interp)
    for t in np.linspace(0, 0.5 if interp == "cubic" else 0.3, 41):
        p, v, _ = plan.eval(int(t * 1e9))
        np.testing.assert_allclose(p, 0.2 * t, atol=1e-12)
        np.testing.assert_allclose(v, 0.2, atol=1e-9)
    p, v, _ = plan.eval(int(0.7e9))
    np.testing.assert_allclose(p, pts[-1], atol=1e-12)
    assert v == [0.0, 0.0]


def test_unlimited_commands_follow_the_plan_exactly():
    s = make()
    s.add_chunk(chunk(0, ramp(10, 0.0, 0.05)), 0)
    ts, ps, vs, _ = run(s, 0, 900 * MS)
    ref_p, ref_v = s.sample(ts)
    np.testing.assert_allclose(ps, ref_p, atol=1e-12)
    # Command velocity is the finite difference of command positions.
    np.testing.assert_allclose(vs[1:], np.diff(ps, axis=0) / (TICK * 1e-9), atol=1e-9)
    # Waypoint k is reached at its due time.
    for k in range(9):
        i = int(np.searchsorted(ts, (k + 1) * 100 * MS))
        np.testing.assert_allclose(ps[i], 0.05 * (k + 1), atol=1e-12)
    assert s.stats().limited_ticks == 0


# -- latency compensation ----------------------------------------------------------------------


def test_actions_whose_time_has_passed_are_never_used():
    s = make(latency_margin_s=0.05)
    now = 250 * MS
    a = np.full((10, 3), 0.2)
    a[:3] = 5.0  # due at 100, 200 (past) and 300 ms (inside the 50 ms margin): must not be sent
    executed = s.add_chunk(chunk(0, a), now)
    assert executed == 7
    assert s.stats().dropped_stale_actions == 3
    times, tail = s.tail(now)
    assert times.min() > now + 50 * MS
    assert np.all(tail == 0.2)
    _, ps, _, _ = run(s, now, 1200 * MS)
    assert ps.max() <= 0.2 + 1e-12


def test_a_late_splice_drops_the_passed_part_of_the_new_chunk():
    s = make(splice="replace")
    s.add_chunk(chunk(0, np.zeros((10, 3))), 0)
    run(s, 0, 300 * MS)
    a = np.full((10, 3), 0.1)
    a[:2] = -3.0  # due at 200 and 300 ms: already passed at 300 ms
    s.add_chunk(chunk(100 * MS, a), 300 * MS)
    _, ps, _, _ = run(s, 300 * MS, 1000 * MS)
    assert ps.min() >= -1e-12


# -- limits ----------------------------------------------------------------------------------------


LIM = dict(lower=[-0.5, -0.5, -0.5], upper=[0.5, 0.5, 0.5], max_velocity=[0.3, 0.3, 0.3],
           max_acceleration=[2.0, 2.0, 2.0])


def assert_within(lim: Limits, ps: np.ndarray, vs: np.ndarray, h: float, p0=None, v0=None):
    tol = 1e-9
    assert np.all(ps >= lim.lower - tol) and np.all(ps <= lim.upper + tol)
    assert np.all(np.abs(vs) <= lim.max_velocity + tol)
    p_prev = np.concatenate([[np.zeros(ps.shape[1]) if p0 is None else p0], ps[:-1]])
    v_prev = np.concatenate([[np.zeros(ps.shape[1]) if v0 is None else v0], vs[:-1]])
    # The command moves by at most max_velocity * period per tick...
    assert np.all(np.abs(ps - p_prev) <= lim.max_velocity * h + tol)
    # ... and its velocity changes by at most max_acceleration * period.
    assert np.all(np.abs(vs - v_prev) <= lim.max_acceleration * h * (1 + 1e-9) + tol)


def test_limits_hold_for_a_chunk_that_asks_for_a_jump():
    lim = Limits.build(3, **LIM)
    s = make(lim)
    a = np.tile([3.0, -0.4, 0.2], (10, 1))  # x beyond the bound, all far from rest
    # Receding horizon: the same request every 100 ms (a plan that ends while the command is
    # still catching up stops instead, see test_plan_end_while_catching_up_...).
    out = []
    for k in range(40):
        s.add_chunk(chunk(k * 100 * MS, a), k * 100 * MS)
        out.append(run(s, k * 100 * MS, (k + 1) * 100 * MS))
    ps = np.concatenate([o[1] for o in out])
    vs = np.concatenate([o[2] for o in out])
    assert_within(lim, ps, vs, TICK * 1e-9)
    assert s.stats().limited_ticks > 0
    # It settles on the (clipped) target without overshooting it.
    np.testing.assert_allclose(ps[-1], [0.5, -0.4, 0.2], atol=1e-6)
    assert ps[:, 1].min() >= -0.4 - 1e-9 and ps[:, 2].max() <= 0.2 + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    splice=st.sampled_from(["replace", "crossfade", "ensemble"]),
    interp=st.sampled_from(["cubic", "quintic"]),
    seed=st.integers(0, 2**31 - 1),
    n_chunks=st.integers(1, 5),
)
def test_limits_hold_for_random_chunks_and_jittered_ticks(splice, interp, seed, n_chunks):
    rng = np.random.default_rng(seed)
    lim = Limits.build(3, **LIM)
    s = make(lim, splice=splice, interpolation=interp, latency_margin_s=0.01)
    t, p_prev, v_prev = 0, np.zeros(3), np.zeros(3)
    for _ in range(n_chunks):
        a = rng.uniform(-1.5, 1.5, size=(int(rng.integers(1, 12)), 3))
        try:
            s.add_chunk(chunk(t - int(rng.integers(0, 80)) * MS, a), t)
        except ChunkRejected as e:  # every action already due, or stamped before the running chunk
            assert e.reason in ("stale", "out_of_order")
        for _ in range(int(rng.integers(20, 200))):
            step = int(TICK * rng.uniform(0.3, 3.0))  # late and early ticks
            t += step
            p, v, _ = s.command(t)
            assert_within(lim, p[None], v[None], step * 1e-9, p_prev, v_prev)
            p_prev, v_prev = p, v


def test_limits_from_action_spec_and_validation():
    spec = ActionSpec(names=("a", "b"), lower=(-1, -2), upper=(1, 2), max_velocity=(0.5, 0.5),
                      gripper_indices=(1,))
    lim = Limits.from_spec(spec)
    assert lim.upper.tolist() == [1, 2] and np.isinf(lim.max_acceleration).all()
    assert lim.binary.tolist() == [False, True]
    with pytest.raises(ValueError, match="lower"):
        Limits.build(2, lower=[1, 0], upper=[0, 1])
    with pytest.raises(ValueError, match="entries"):
        Limits.build(2, max_velocity=[1.0])
    with pytest.raises(ValueError, match="> 0"):
        Limits.build(2, max_acceleration=[1.0, 0.0])
    with pytest.raises(ValueError):
        SchedulerConfig(names=NAMES, splice="average")
    with pytest.raises(ValueError):
        SchedulerConfig(names=NAMES, latency_margin_s=-0.1)
    with pytest.raises(ValueError, match="dimensions"):
        ChunkScheduler(SchedulerConfig(names=NAMES), Limits.build(2))


def test_binary_gripper_commands_open_or_closed():
    lim = Limits.build(3, max_velocity=[0.1] * 3, gripper_indices=[2])
    s = make(lim)
    a = np.zeros((10, 3))
    a[:, 2] = np.linspace(-0.9, 0.9, 10)
    s.add_chunk(chunk(0, a), 0)
    _, ps, vs, _ = run(s, 0, 1000 * MS)
    assert set(np.unique(ps[:, 2])) == {-1.0, 1.0}
    assert np.all(vs[:, 2] == 0.0)
    assert ps[-1, 2] == 1.0 and ps[0, 2] == -1.0
    # Without binary handling the gripper is an ordinary, rate-limited joint.
    s2 = make(Limits.build(3, max_velocity=[0.1] * 3, gripper_indices=[2], gripper_binary=False))
    s2.add_chunk(chunk(0, a), 0)
    _, ps2, _, _ = run(s2, 0, 1000 * MS)
    assert np.all(np.abs(np.diff(ps2[:, 2])) <= 0.1 * TICK * 1e-9 + 1e-12)


# -- splicing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("interp", ["cubic", "quintic"])
@pytest.mark.parametrize("splice", ["replace", "crossfade", "ensemble"])
def test_splice_keeps_position_and_velocity_continuous(splice, interp):
    s = make(splice=splice, interpolation=interp)
    s.add_chunk(chunk(0, ramp(16, 0.0, 0.02)), 0)
    t_splice = 332 * MS  # on a tick
    _, ps, vs, _ = run(s, 0, t_splice)
    # The new chunk disagrees with the old one: offset and opposite direction.
    s.add_chunk(chunk(300 * MS, ramp(16, 0.3, -0.02)), t_splice)
    ref_p, ref_v = s.sample(np.array([t_splice]))
    np.testing.assert_allclose(ref_p[0], ps[-1], atol=1e-12)
    np.testing.assert_allclose(ref_v[0], vs[-1], atol=1e-9)
    _, ps2, vs2, _ = run(s, t_splice, t_splice + 20 * MS)
    # Discrete continuity: the velocity change over the splice tick is no bigger than the
    # ordinary tick-to-tick changes of the new plan (bounded acceleration, no step), and the
    # position moves by the velocity times the period.
    h = TICK * 1e-9
    dv_splice = np.abs(vs2[0] - vs[-1]).max()
    dv_after = np.abs(np.diff(vs2[:10], axis=0)).max()
    assert dv_splice <= 1.5 * dv_after + 1e-12
    np.testing.assert_allclose(ps2[0] - ps[-1], vs2[0] * h, atol=1e-12)


def test_crossfade_weights_rise_linearly_over_the_overlap():
    s = make(splice="crossfade")
    s.add_chunk(chunk(0, np.zeros((10, 3))), 0)  # waypoints at 100..1000 ms
    now = 200 * MS
    run(s, 0, now)
    s.add_chunk(chunk(now, np.ones((10, 3))), now)  # waypoints at 300..1200 ms
    t, q = s.tail(now)
    w = np.clip((t - now) / (1000 * MS - now), 0, 1)
    np.testing.assert_allclose(q[:, 0], w, atol=1e-12)
    assert q[-1, 0] == 1.0


def test_ensemble_is_acts_weighted_mean():
    k = 0.5
    s = make(splice="ensemble", ensemble_k=k)
    for i in range(3):  # chunks predicting the constant i, all aligned on a 100 ms grid
        s.add_chunk(chunk(i * 100 * MS, np.full((10, 3), float(i))), i * 100 * MS + MS)
    t, q = s.tail(300 * MS)
    w = np.exp(-k * np.arange(3))  # oldest first
    both3 = t <= 1000 * MS  # predicted by all three chunks
    np.testing.assert_allclose(q[both3, 0], (w * np.arange(3)).sum() / w.sum(), atol=1e-12)
    only23 = (t > 1000 * MS) & (t <= 1100 * MS)
    np.testing.assert_allclose(q[only23, 0], (w[:2] * [1, 2]).sum() / w[:2].sum(), atol=1e-12)
    np.testing.assert_allclose(q[t > 1100 * MS, 0], 2.0, atol=1e-12)


def test_replace_takes_the_new_actions():
    s = make(splice="replace")
    s.add_chunk(chunk(0, np.zeros((10, 3))), 0)
    s.add_chunk(chunk(50 * MS, np.ones((10, 3))), 60 * MS)
    _, q = s.tail(60 * MS)
    assert np.all(q == 1.0)


# -- starvation ----------------------------------------------------------------------------------


def test_starvation_decelerates_holds_and_recovers():
    lim = Limits.build(3, max_velocity=[1.0] * 3, max_acceleration=[2.0] * 3)
    s = make(lim, starvation_timeout_s=0.15)
    s.add_chunk(chunk(0, ramp(20, 0.0, 0.03)), 0)  # 0.3 / s for 2 s
    _, ps, vs, modes = run(s, 0, 1000 * MS)
    assert modes[0] == Mode.TRACK and modes[-1] == Mode.STARVED
    st_ = s.stats()
    assert st_.starvation_events == 1
    assert_within(lim, ps, vs, TICK * 1e-9)
    # Stops: from 0.3 / s at 2 / s^2 it takes 0.15 s and 22.5 mm, then holds still.
    i_starve = modes.index(Mode.STARVED)
    stop = ps[i_starve - 1, 0] + 0.3**2 / (2 * 2.0)
    assert ps[-1, 0] == pytest.approx(stop, abs=1e-3)
    assert np.all(vs[-100:] == 0.0) and np.all(ps[-100:] == ps[-1])
    # The stale remainder of the chunk (up to 0.6) is never replayed.
    assert ps.max() < 0.3
    # A fresh chunk resumes from the held state: no jump, back to tracking.
    held = ps[-1].copy()
    s.add_chunk(chunk(1000 * MS, ramp(10, held[0], -0.01)), 1000 * MS)
    _, ps2, vs2, modes2 = run(s, 1000 * MS, 1140 * MS)  # within the starvation timeout
    assert set(modes2) == {Mode.TRACK}
    assert_within(lim, ps2, vs2, TICK * 1e-9, held, np.zeros(3))
    assert ps2[-1, 0] < held[0] - 0.01  # following the new chunk (0.1 / s downwards)
    assert s.stats().starvation_events == 1


def test_plan_end_is_starvation_and_stays_put():
    s = make(execute_steps=4)
    s.add_chunk(chunk(0, ramp(10, 0.0, 0.1)), 0)
    _, ps, vs, modes = run(s, 0, 800 * MS)
    # Only the first 4 actions execute; it comes to rest on the 4th.
    np.testing.assert_allclose(ps[-1], 0.4, atol=1e-12)
    assert modes[-1] == Mode.STARVED and s.stats().starvation_events == 1
    assert np.all(vs[-10:] == 0.0)



def test_plan_end_while_catching_up_stops_short_of_the_last_waypoint():
    # The chunk asks for 1.0 within 0.4 s (2.5 / s); the limits allow 0.3 / s, so the command
    # lags when the plan ends. It decelerates there (<= 0.3^2 / (2 * 2) = 22.5 mm more) and
    # holds, instead of going on toward the already-due last waypoint at full speed.
    lim = Limits.build(3, max_velocity=[0.3] * 3, max_acceleration=[2.0] * 3)
    s = make(lim, execute_steps=4)
    s.add_chunk(chunk(0, ramp(10, 0.0, 0.25)), 0)
    _, ps, vs, modes = run(s, 0, 1500 * MS)
    assert_within(lim, ps, vs, TICK * 1e-9)
    i_end = modes.index(Mode.STARVED)
    assert i_end == pytest.approx(200, abs=1)  # the plan ends at 0.4 s
    at_end = ps[i_end - 1, 0]
    assert 0.05 < at_end < 0.13  # lagging far behind 1.0
    assert ps[-1, 0] <= at_end + 0.3**2 / (2 * 2.0) + 1e-6
    assert np.all(vs[i_end + 100:] == 0.0) and np.all(ps[i_end + 100:] == ps[-1])
    assert s.stats().starvation_events == 1
    # A fresh chunk resumes from where it stopped, without a jump.
    held = ps[-1].copy()
    s.add_chunk(chunk(1500 * MS, ramp(10, held[0], 0.01)), 1500 * MS)
    _, ps2, vs2, modes2 = run(s, 1500 * MS, 1700 * MS)
    assert set(modes2) == {Mode.TRACK}
    assert_within(lim, ps2, vs2, TICK * 1e-9, held, np.zeros(3))

# -- rejection ----------------------------------------------------------------------------------


def _bad(kind: str) -> tuple[Chunk, int]:
    now = 500 * MS
    good = np.full((8, 3), 0.1)
    if kind == "nonfinite":
        a = good.copy()
        a[3, 1] = np.nan
        return chunk(now, a), now
    if kind == "shape":
        return chunk(now, np.zeros((8, 2))), now
    if kind == "names":
        return chunk(now, good, names=("x", "y", "w")), now
    if kind == "dt":
        return chunk(now, good, dt=0.0), now
    if kind == "future":
        return chunk(now + 400 * MS, good), now
    if kind == "too_old":
        return chunk(now - 2000 * MS, good), now
    if kind == "stale":
        return chunk(now - 50 * MS, good[:1], dt=0.04), now  # its one action was due 10 ms ago
    if kind == "out_of_order":
        return chunk(now - 250 * MS, good), now  # older than the running chunk (stamped 300 ms)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["nonfinite", "shape", "names", "dt", "future", "too_old", "stale", "out_of_order"]
)
def test_bad_chunks_are_rejected_with_a_reason_and_change_nothing(kind):
    def fresh():
        s = make(max_future_s=0.1, max_age_s=1.0, expected_dt=DT if kind == "dt" else 0.0)
        s.add_chunk(chunk(300 * MS, ramp(10, 0.0, 0.01)), 300 * MS)
        run(s, 0, 500 * MS)
        return s

    ref, s = fresh(), fresh()
    bad, now = _bad(kind)
    with pytest.raises(ChunkRejected) as err:
        s.add_chunk(bad, now)
    assert err.value.reason == kind
    assert s.stats().rejected[kind] == 1 and s.stats().accepted == 1
    _, p_ref, _, _ = run(ref, 500 * MS, 900 * MS)
    _, p, _, _ = run(s, 500 * MS, 900 * MS)
    np.testing.assert_array_equal(p, p_ref)


def test_chunk_before_reset_is_rejected():
    s = ChunkScheduler(SchedulerConfig(names=NAMES), Limits.build(3))
    with pytest.raises(ChunkRejected) as err:
        s.add_chunk(chunk(0, np.zeros((4, 3))), 0)
    assert err.value.reason == "not_ready"
    with pytest.raises(RuntimeError):
        s.command(TICK)


# -- tail, cadence, reset -------------------------------------------------------------------------


def test_tail_is_the_unexecuted_part_and_replan_cadence():
    s = make(n_action_steps=4, execute_steps=8)
    a = ramp(16, 0.0, 0.01)
    s.add_chunk(chunk(0, a), 0)
    assert not s.replan_due(350 * MS)
    assert s.replan_due(400 * MS)
    t, q = s.tail(350 * MS)
    # Actions 3..15 (due 400 .. 1600 ms), including those beyond the execution horizon.
    np.testing.assert_array_equal(t, (np.arange(4, 17) * 100 * MS))
    np.testing.assert_allclose(q, a[3:])


def test_reset_holds_the_measured_position():
    s = make()
    s.add_chunk(chunk(0, ramp(10, 0.0, 0.1)), 0)
    run(s, 0, 300 * MS)
    s.reset(np.array([0.1, -0.2, 0.3]), 300 * MS)
    assert s.mode == Mode.HOLD
    _, ps, vs, modes = run(s, 300 * MS, 400 * MS)
    assert np.all(ps == [0.1, -0.2, 0.3]) and np.all(vs == 0) and set(modes) == {Mode.HOLD}
    assert s.tail(300 * MS)[0].size == 0
    with pytest.raises(ValueError):
        s.reset(np.array([0.0, math.nan, 0.0]), 0)


def test_limit_step_passes_feasible_references_unchanged():
    lim = Limits.build(2, **{k: v[:2] for k, v in LIM.items()})
    p, v, limited = limit_step(lim, [0.0, 0.1], [0.1, 0.0], [0.0002, 0.1], [0.1, 0.0], 0.002)
    assert p == pytest.approx([0.0002, 0.1]) and not limited


def test_a_stalled_tick_does_not_leap():
    lim = Limits.build(3, max_velocity=[0.5] * 3, max_acceleration=[5.0] * 3)
    s = make(lim, max_tick_s=0.004)
    s.add_chunk(chunk(0, ramp(10, 0.0, 0.025)), 0)
    _, ps, _, _ = run(s, 0, 300 * MS)
    p_stall, _, _ = s.command(350 * MS)  # 50 ms without a tick
    assert np.abs(p_stall - ps[-1]).max() <= 0.5 * 0.004 + 1e-12
    # ... and it catches up with the plan within the limits afterwards.
    _, ps2, _, _ = run(s, 350 * MS, 600 * MS)
    ref, _ = s.sample(np.array([600 * MS]))
    np.testing.assert_allclose(ps2[-1], ref[0], atol=1e-6)


def test_concurrent_chunks_and_ticks_stay_within_limits():
    import threading
    import time

    lim = Limits.build(3, **LIM)
    s = ChunkScheduler(SchedulerConfig(names=NAMES, latency_margin_s=0.005), lim)
    t_start = time.monotonic_ns()
    s.reset(np.zeros(3), t_start)
    rows: list[tuple[int, np.ndarray, np.ndarray]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def ticker():
        try:
            while not stop.is_set():
                t = time.monotonic_ns()
                p, v, _ = s.command(t)
                rows.append((t, p, v))
                time.sleep(0.001)
        except BaseException as e:  # reported below
            errors.append(e)

    th = threading.Thread(target=ticker)
    th.start()
    rng = np.random.default_rng(3)
    for _ in range(20):
        now = time.monotonic_ns()
        s.add_chunk(chunk(now - 20 * MS, rng.uniform(-0.6, 0.6, size=(16, 3))), now)
        time.sleep(0.02)
    stop.set()
    th.join()
    assert not errors
    assert s.stats().accepted == 20
    ts = np.array([r[0] for r in rows])
    ps, vs = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    h = np.diff(ts) * 1e-9
    assert np.all(ps >= lim.lower - 1e-9) and np.all(ps <= lim.upper + 1e-9)
    assert np.all(np.abs(vs) <= lim.max_velocity + 1e-9)
    assert np.all(np.abs(np.diff(ps, axis=0)) <= lim.max_velocity * h[:, None] + 1e-9)
    assert np.all(np.abs(np.diff(vs, axis=0)) <= lim.max_acceleration * h[:, None] * (1 + 1e-9) + 1e-9)
