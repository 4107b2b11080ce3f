"""The fault suite (l1flow_ros.graph.faults) over real rclpy: the real perception, inference and
executor nodes on one shared graph, one OS process per node (as ``ros2 launch`` starts
them), each fault injected, watched, cleared; the harness reads only what the nodes publish.

Per case: the nodes stay up, the responsible node gives the expected reason on /diagnostics
(or the parameter answer), the independent guard on the controller topic sees no command
outside the limits and none from invalid data, the arm is held where it must be, and
normal operation resumes. Generous timeouts only; no absolute timing is asserted.
"""

from __future__ import annotations

import pytest

from l1flow_ros.graph import faults


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    assets = faults.build_assets(tmp_path_factory.mktemp("faults"), log=lambda m: None)
    # Started without CameraInfo: the first case is "CameraInfo never arrives".
    h = faults.Harness(assets, log=lambda m: None, camera_info_at_start=False)
    h.start()
    try:
        yield h
    finally:
        h.close()
        torch.set_num_threads(n)


@pytest.mark.parametrize("case", faults.CASES, ids=faults.CASE_NAMES)
@pytest.mark.graph
def test_fault_case(harness, case):
    r = harness.run_case(case)
    detail = f"{r.behaviour} | seen: {r.reasons[:6]} | notes: {r.notes}"
    assert not r.not_run, r.not_run
    assert r.nodes_alive, f"a node died or stopped reporting: {detail}"
    assert r.reason_seen, f"expected {case.expect}: {detail}"
    assert r.outside_limits == 0, f"guard: {detail}"
    assert r.from_invalid == 0, f"the arm moved while only invalid data was on offer: {detail}"
    assert r.invalid_chunks == 0, f"a chunk was made from invalid data: {detail}"
    assert r.arm_held in ("yes", "yes (no commands)", "n/a"), f"arm held: {r.arm_held}: {detail}"
    assert r.recovered, f"did not recover: {detail}"
    assert r.survived


@pytest.mark.core
def test_guard_rule_flags_a_leap_and_a_bound():
    """The guard's own rules, without ROS: a step beyond max_velocity x (elapsed + T) and a
    position beyond the limits are flagged; a step inside is not."""
    import numpy as np

    g = faults.ArmGuard.__new__(faults.ArmGuard)  # the rule only; no node
    import threading

    g.lock = threading.Lock()
    g.arm = np.array(faults.HOME)
    g.cmd_t, g.cmd_p, g.violations, g.lost = [], [], [], 0
    g._prev = (None, None, g.arm.copy())

    class Msg:
        def __init__(self, p):
            self.data = list(p)

    T = int(faults.PERIOD_S * 1e9)
    t0 = 1_000_000_000_000
    vmax = np.asarray(faults.MAX_VEL)
    p = np.array(faults.HOME)
    g._on_command(Msg(p + vmax * 1.9 * faults.PERIOD_S), {"source_timestamp": t0, "publication_sequence_number": 1})
    assert not g.violations
    p1 = np.asarray(g.cmd_p[-1])
    # One period later, a step of 3.5 periods at max velocity: a leap.
    g._on_command(Msg(p1 + vmax * 3.5 * faults.PERIOD_S), {"source_timestamp": t0 + T,
                                                            "publication_sequence_number": 2})
    assert len(g.violations) == 1 and "moved" in g.violations[0][1]
    # Three commands lost in transport (sequence 2 -> 6): the same step is allowed.
    p2 = np.asarray(g.cmd_p[-1])
    g._on_command(Msg(p2 + vmax * 3.5 * faults.PERIOD_S), {"source_timestamp": t0 + 5 * T,
                                                            "publication_sequence_number": 6})
    assert len(g.violations) == 1 and g.lost == 3
    g._on_command(Msg(np.array(faults.UPPER) + 0.01), {"source_timestamp": t0 + 6 * T,
                                                       "publication_sequence_number": 7})
    assert len(g.violations) == 2 and "outside" in g.violations[1][1]
