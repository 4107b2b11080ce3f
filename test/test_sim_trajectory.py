"""Joint-trajectory-controller semantics of the trajectory follower (core).

Replacement at a future stamp, past points dropped, rejection of a trajectory in the past,
position and velocity continuous at the hand-over, interpolation order (linear / cubic /
quintic) as the points carry positions / velocities / accelerations.
"""

import numpy as np
import pytest

from l1flow_ros.sim.trajectory import TrajectoryError, TrajectoryFollower

pytestmark = pytest.mark.core

NAMES = ("x", "y", "g")
MS = 1_000_000
S = 1_000_000_000


def rows(f, times):
    return np.array([f(t) for t in times])


def test_names_reordered_linear_between_points_and_the_end_held():
    f = TrajectoryFollower(NAMES)
    assert f.sample(0) is None and not f.active
    # Names in another order are reordered; points at +100, +200, +300 ms from rest at 0.
    f.set(("y", "x", "g"), 1000 * MS, [100 * MS, 200 * MS, 300 * MS],
          [[1.0, 0.0, 1.0], [3.0, 2.0, 1.0], [5.0, 4.0, 1.0]], current=np.zeros(3), now_ns=1000 * MS)
    assert f.order == 1
    np.testing.assert_allclose(f.sample(1000 * MS), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(f.sample(1100 * MS), [0.0, 1.0, 1.0])
    # Linear between points: the midpoint, and a constant velocity of 20 units/s.
    np.testing.assert_allclose(f.sample(1150 * MS), [1.0, 2.0, 1.0])
    p, v, a = f.state(1250 * MS)
    np.testing.assert_allclose(p, [3.0, 4.0, 1.0])
    np.testing.assert_allclose(v, [20.0, 20.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(a, 0.0, atol=1e-9)
    # The hand-over segment leaves from rest and meets the linear segment's velocity.
    np.testing.assert_allclose(f.state(1000 * MS)[1], 0.0, atol=1e-9)
    np.testing.assert_allclose(f.state(1100 * MS - 1)[1], [20.0, 20.0, 0.0], atol=1e-4)
    # After the last point: held, at rest.
    p, v, _ = f.state(5000 * MS)
    np.testing.assert_allclose(p, [4.0, 5.0, 1.0])
    np.testing.assert_allclose(v, 0.0)
    f.cancel()
    assert not f.active and f.sample(0) is None


def test_interpolation_order_follows_the_fields_the_points_carry():
    """From rest at t=0, a cubic (given velocities) reproduces x = t^3 exactly and a
    quintic (given accelerations too) x = t^5; positions alone give straight segments."""
    times = [0.25, 0.5, 1.0]
    tfs = [int(t * S) for t in times]
    probe = np.linspace(0.0, 1.0, 41)

    cubic = TrajectoryFollower(("x",))
    cubic.set(("x",), 0, tfs, rows(lambda t: [t**3], times), np.zeros(1), now_ns=0,
              velocities=rows(lambda t: [3 * t**2], times))
    assert cubic.order == 3
    got = np.array([cubic.state(int(t * S)) for t in probe])[:, :, 0]  # (N, 3): p, v, a
    np.testing.assert_allclose(got[:, 0], probe**3, atol=1e-9)
    np.testing.assert_allclose(got[:-1, 1], 3 * probe[:-1] ** 2, atol=1e-7)  # held (at rest) at the end

    quintic = TrajectoryFollower(("x",))
    quintic.set(("x",), 0, tfs, rows(lambda t: [t**5], times), np.zeros(1), now_ns=0,
                velocities=rows(lambda t: [5 * t**4], times),
                accelerations=rows(lambda t: [20 * t**3], times))
    assert quintic.order == 5
    got = np.array([quintic.state(int(t * S)) for t in probe])[:, :, 0]
    np.testing.assert_allclose(got[:, 0], probe**5, atol=1e-9)
    np.testing.assert_allclose(got[:-1, 2], 20 * probe[:-1] ** 3, atol=1e-6)
    # The cubic cannot follow t^5 given only its velocities: the orders differ.
    c5 = TrajectoryFollower(("x",))
    c5.set(("x",), 0, tfs, rows(lambda t: [t**5], times), np.zeros(1), now_ns=0,
           velocities=rows(lambda t: [5 * t**4], times))
    assert np.max(np.abs([c5.sample(int(t * S))[0] - t**5 for t in probe])) > 1e-3

    linear = TrajectoryFollower(("x",))
    linear.set(("x",), 0, tfs, rows(lambda t: [t**3], times), np.zeros(1), now_ns=0)
    mid = 0.75
    np.testing.assert_allclose(linear.sample(int(mid * S)), [(0.5**3 + 1.0) / 2])


def test_future_stamp_replaces_the_running_trajectory_from_its_stamp():
    old = dict(names=NAMES, start_ns=0, times_from_start_ns=[S, 2 * S],
               positions=[[1.0, -1.0, 0.5], [2.0, 0.0, 1.0]], current=np.zeros(3), now_ns=0)
    f, ref = TrajectoryFollower(NAMES), TrajectoryFollower(NAMES)
    f.set(**old)
    ref.set(**old)
    # At 0.5 s a trajectory stamped 1.5 s arrives: the old one runs unchanged until 1.5 s.
    f.set(NAMES, 1500 * MS, [500 * MS], [[-1.0, 3.0, 0.0]], np.zeros(3), now_ns=500 * MS)
    for t in (500 * MS, 900 * MS, 1200 * MS, 1500 * MS - 1):
        np.testing.assert_allclose(f.state(t)[0], ref.state(t)[0], atol=1e-12)
        np.testing.assert_allclose(f.state(t)[1], ref.state(t)[1], atol=1e-9)
    # From 1.5 s it follows the new one, reaching its point at 2 s and holding it.
    assert not np.allclose(f.sample(1700 * MS), ref.sample(1700 * MS))
    np.testing.assert_allclose(f.sample(2000 * MS), [-1.0, 3.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(f.sample(9 * S), [-1.0, 3.0, 0.0])
    # Continuous at the hand-over: position and velocity there are the old trajectory's.
    p_h, v_h, _ = ref.state(1500 * MS)
    assert np.linalg.norm(v_h) > 0.5  # the old trajectory is moving at the hand-over
    p, v, _ = f.state(1500 * MS)
    np.testing.assert_allclose(p, p_h, atol=1e-12)
    np.testing.assert_allclose(v, v_h, atol=1e-9)


def test_zero_stamp_means_now_and_points_in_the_past_are_dropped():
    # Received at 500 ms, stamped 100 ms: the points due at 110 and 300 ms are dropped.
    far = [[50.0, 50.0, 50.0], [-50.0, 40.0, 0.0]]
    keep = [[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]]
    f = TrajectoryFollower(NAMES)
    f.set(NAMES, 100 * MS, [10 * MS, 200 * MS, 500 * MS, 600 * MS], far + keep, np.zeros(3), now_ns=500 * MS)
    g = TrajectoryFollower(NAMES)  # the same trajectory without the past points
    g.set(NAMES, 0, [100 * MS, 200 * MS], keep, np.zeros(3), now_ns=500 * MS)
    for t in range(500, 800, 7):
        np.testing.assert_allclose(f.sample(t * MS), g.sample(t * MS), atol=1e-12)
    assert np.all(np.abs(np.array([f.sample(t * MS) for t in range(500, 800, 5)])) <= 2.0 + 1e-9)
    # Stamp zero: the times count from the receive time.
    h = TrajectoryFollower(NAMES)
    h.set(NAMES, 0, [100 * MS], [[1.0, 2.0, 3.0]], np.zeros(3), now_ns=7 * S)
    np.testing.assert_allclose(h.sample(7 * S + 100 * MS), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(h.sample(7 * S), [0.0, 0.0, 0.0])


def test_a_trajectory_in_the_past_is_rejected_and_the_running_one_kept():
    f, ref = TrajectoryFollower(NAMES), TrajectoryFollower(NAMES)
    for x in (f, ref):
        x.set(NAMES, 0, [S], [[1.0, 1.0, 1.0]], np.zeros(3), now_ns=0)
    with pytest.raises(TrajectoryError, match="past"):
        f.set(NAMES, 100 * MS, [10 * MS, 200 * MS], [[4.0, 4.0, 0.0], [5.0, 5.0, 0.0]], np.zeros(3),
              now_ns=500 * MS)
    # A single point due at the stamp (time_from_start 0) leaves nothing to follow either.
    with pytest.raises(TrajectoryError):
        f.set(NAMES, 0, [0], [[4.0, 4.0, 0.0]], np.zeros(3), now_ns=500 * MS)
    for t in (500 * MS, 700 * MS, 2 * S):
        np.testing.assert_allclose(f.sample(t), ref.sample(t))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fields", ["p", "pv", "pva"])
def test_position_and_velocity_continuous_at_the_hand_over(seed, fields):
    """Random running and new trajectories, hand-over at a random time inside a segment."""
    rng = np.random.default_rng(seed)

    def traj(t0_ns):
        k = int(rng.integers(1, 5))
        tfs = np.cumsum(rng.integers(50, 400, size=k)) * MS
        kw = dict(positions=rng.normal(size=(k, 3)).tolist())
        if "v" in fields:
            kw["velocities"] = rng.normal(size=(k, 3)).tolist()
        if "a" in fields:
            kw["accelerations"] = rng.normal(size=(k, 3)).tolist()
        return dict(names=NAMES, start_ns=t0_ns, times_from_start_ns=tfs.tolist(), **kw)

    f, ref = TrajectoryFollower(NAMES), TrajectoryFollower(NAMES)
    first = traj(1)
    for x in (f, ref):
        x.set(current=np.zeros(3), now_ns=0, **first)
    end_old = first["times_from_start_ns"][-1]
    now = int(rng.integers(0, end_old))
    stamp = int(now + rng.integers(0, 300) * MS) if seed % 2 else 0
    new = traj(stamp)
    f.set(current=np.zeros(3), now_ns=now, **new)
    h = max(stamp, now)
    p0, v0, _ = ref.state(h)  # the running trajectory at the hand-over
    p1, v1, _ = f.state(h)
    np.testing.assert_allclose(p1, p0, atol=1e-9)
    np.testing.assert_allclose(v1, v0, atol=1e-6)
    # Just after h the follower is still there (no jump in the next microsecond).
    p2, v2, _ = f.state(h + 1000)
    np.testing.assert_allclose(p2, p0, atol=1e-3)
    np.testing.assert_allclose(v2, v0, atol=0.5)
    # And it reaches the new trajectory's last point on time.
    t_last = (stamp if stamp > 0 else now) + new["times_from_start_ns"][-1]
    np.testing.assert_allclose(f.sample(t_last), np.asarray(new["positions"][-1]), atol=1e-9)


@pytest.mark.parametrize("names,tfs,pos,kw", [
    (("x", "y"), [MS], [[0.0, 0.0]], {}),
    (NAMES, [], [], {}),
    (NAMES, [2 * MS, MS], [[0.0] * 3, [0.0] * 3], {}),
    (NAMES, [-MS, MS], [[0.0] * 3, [0.0] * 3], {}),
    (NAMES, [MS], [[0.0, np.nan, 0.0]], {}),
    (NAMES, [MS], [[0.0, 0.0]], {}),
    (NAMES, [MS, 2 * MS], [[0.0] * 3], {}),
    (NAMES, [MS, 2 * MS], [[0.0] * 3] * 2, {"velocities": [[0.0] * 3]}),
    (NAMES, [MS], [[0.0] * 3], {"velocities": [[0.0, np.inf, 0.0]]}),
    (NAMES, [MS], [[0.0] * 3], {"accelerations": [[0.0] * 3]}),
])
def test_bad_trajectories_are_rejected_and_keep_the_old_one(names, tfs, pos, kw):
    f = TrajectoryFollower(NAMES)
    f.set(NAMES, 0, [MS], [[1.0, 1.0, 1.0]], np.zeros(3), now_ns=0)
    with pytest.raises(TrajectoryError):
        f.set(names, 0, tfs, pos, np.zeros(3), now_ns=0, **kw)
    np.testing.assert_allclose(f.sample(10 * MS), [1.0, 1.0, 1.0])
