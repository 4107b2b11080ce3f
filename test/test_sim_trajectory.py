"""Joint-trajectory-controller behaviour of the simulated arm (core)."""

import numpy as np
import pytest

from l1flow_ros.sim.trajectory import TrajectoryError, TrajectoryFollower

pytestmark = pytest.mark.core

NAMES = ("x", "y", "g")
MS = 1_000_000


def test_interpolates_from_current_target_and_holds_the_end():
    f = TrajectoryFollower(NAMES)
    assert f.sample(0) is None
    # Names in another order are reordered; point 0 at +100 ms, point 1 at +200 ms.
    f.set(("y", "x", "g"), 1000 * MS, [100 * MS, 200 * MS], [[1.0, 0.0, 1.0], [3.0, 2.0, 1.0]],
          current=np.zeros(3), now_ns=1000 * MS)
    np.testing.assert_allclose(f.sample(1000 * MS), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(f.sample(1050 * MS), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(f.sample(1150 * MS), [1.0, 2.0, 1.0])
    np.testing.assert_allclose(f.sample(5000 * MS), [2.0, 3.0, 1.0])
    f.cancel()
    assert not f.active and f.sample(0) is None


def test_past_points_are_skipped_and_zero_stamp_means_now():
    f = TrajectoryFollower(NAMES)
    f.set(NAMES, 0, [10 * MS, 20 * MS], [[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]], np.zeros(3), now_ns=500 * MS)
    np.testing.assert_allclose(f.sample(515 * MS), [1.5, 1.5, 0.0])
    f.set(NAMES, 100 * MS, [10 * MS], [[4.0, 4.0, 0.0]], np.zeros(3), now_ns=500 * MS)  # all in the past
    np.testing.assert_allclose(f.sample(500 * MS), [4.0, 4.0, 0.0])


@pytest.mark.parametrize("names,tfs,pos", [
    (("x", "y"), [MS], [[0.0, 0.0]]),
    (NAMES, [], []),
    (NAMES, [2 * MS, MS], [[0.0] * 3, [0.0] * 3]),
    (NAMES, [MS], [[0.0, np.nan, 0.0]]),
    (NAMES, [MS], [[0.0, 0.0]]),
])
def test_bad_trajectories_are_rejected_and_keep_the_old_one(names, tfs, pos):
    f = TrajectoryFollower(NAMES)
    f.set(NAMES, 0, [MS], [[1.0, 1.0, 1.0]], np.zeros(3), now_ns=0)
    with pytest.raises(TrajectoryError):
        f.set(names, 0, tfs, pos, np.zeros(3), now_ns=0)
    np.testing.assert_allclose(f.sample(10 * MS), [1.0, 1.0, 1.0])
