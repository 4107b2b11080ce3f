"""The fault suite (l1flow_ros.graph.faults) over real rclpy: the real perception, inference and
executor nodes on one shared graph, one OS process per node (as ``ros2 launch`` starts
them), each fault injected, watched, cleared; the harness reads only what the nodes publish.

Per case: the nodes stay up, the responsible node gives the expected reason on /diagnostics
(or the parameter answer), the independent guard on the controller topic sees no command
outside the limits and none from invalid data, the arm is held where it must be, the case's
own checks pass (hot swap: chunk gaps, head per embedding, command continuity), and normal
operation resumes. Generous timeouts only; no absolute timing is asserted.

Missed control ticks: the suite's verdict (``survived``, docs/RELIABILITY.md) holds every
case but cpu_starvation to at most 1 per 10 s (none in hot_swap_streaming's swap windows).
A shared 2-core VM does not meet that on its own: the bare loop beside the executor (same
deadlines, same SCHED_FIFO priority, a process of its own) misses ticks there too, and the
executor, whose control thread shares a GIL with its callback thread, misses a few more
(measured over whole suites: 1-7 in a 2-11 s case with the bare loop at 0; a C thread at a
higher priority woke 2 ms late 28 times a minute per CPU on the idle VM, docs/RELIABILITY.md).
So here a case may exceed the rule by FLOOR_FACTOR times the bare loop's count plus
TICK_SLACK, which still catches what the rule is for: the executor run without real-time
scheduling missed 15-106 per case on a machine whose bare loop missed none.
The floor counts three times: a stall that makes the bare loop (one thread) miss k ticks can
make the executor, whose tick needs its control thread and the GIL its callback thread may
hold (two real-time threads a stall can catch, not one), miss about 2-3k. Measured with one
core kept busy by another process: 60 against the bare loop's 43 in 2 s; hot_swap_streaming
199 against 83 over the case (150 against 68 in its swap windows); a whole suite's fault
cases 415 against 151 (2.75x). On the quiet machine the same cases gave 69 against 52.
"""

from __future__ import annotations

import collections

import pytest

from l1flow_ros.graph import faults

TICK_SLACK = 10  # missed ticks a case may have beyond the rule and three times the bare loop's (module docstring)
FLOOR_FACTOR = 3


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    assets = faults.build_assets(tmp_path_factory.mktemp("faults"), log=lambda m: None)
    # Started without CameraInfo: the first case is "CameraInfo never arrives".
    h = faults.Harness(assets, log=lambda m: None, camera_info_at_start=False)
    h.start()
    h.start_recording()  # one episode over every case: test_recording_lost_nothing checks it
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
    assert not r.failures, f"the case's own checks: {r.failures}: {detail}"
    assert r.recovered, f"did not recover: {detail}"
    assert r.missed_ticks >= 0 and r.duration_s > 0, detail
    if r.ticks_judged:
        assert r.missed_ticks <= r.ticks_allowed + FLOOR_FACTOR * max(r.floor_missed, 0) + TICK_SLACK, (
            f"{r.missed_ticks} control ticks missed in {r.duration_s:.1f} s (allowed {r.ticks_allowed}; the bare "
            f"loop beside it missed {r.floor_missed}; steal {r.steal_pct} %): {detail}")
    if r.ticks_ok:
        assert r.survived


@pytest.mark.graph
def test_recording_lost_nothing(harness):
    """The recorder recorded the camera, /joint_states and the commands over the cases run
    before this one (all of them in a full run): every message published in the span its
    file covers is in it. Commands the recorder lost while cpu_starvation starved its
    process (normal scheduling) are reported, not asserted: the starvation is the case's
    point, and the executor's command publisher keeps 10 unacknowledged commands."""
    rec = harness.stop_recording()
    assert not rec.error, rec.error
    assert rec.topics and all(t.in_file > 0 for t in rec.topics), rec.summary()
    starved = [r.span_ns for r in harness.results if r.name == "cpu_starvation"]
    elsewhere = [t for t in rec.lost_at if not any(a <= t <= b for a, b in starved)]
    assert not elsewhere, rec.summary()


@pytest.mark.core
def test_check_recording_finds_what_the_file_lacks(tmp_path):
    """The recording check without ROS: a file missing one image, one joint state and one of
    two equal commands reports exactly those three as lost, with when they were published."""
    from l1flow_ros.data.mcap_io import EpisodeWriter
    from l1flow_ros.graph.faults.record_check import check_recording

    def hdr(t):
        return {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": "cam"}

    t0 = 1_700_000_000 * 10**9
    img = [t0 + k * 10**8 for k in range(5)]
    js = [t0 + k * 10**7 for k in range(20)]
    cmd_t = [t0 + k * 2 * 10**6 for k in range(200)]
    cmd_p = [[0.1, 0.2, 0.3, float(k // 2)] for k in range(200)]  # pairs of equal commands
    w = EpisodeWriter(tmp_path / "e.mcap", flush_period_s=0.0)
    for t in img:
        if t != img[2]:
            w.write("/cam/color/image_raw", "sensor_msgs/msg/Image",
                    {"header": hdr(t - 30 * 10**9), "height": 1, "width": 1, "encoding": "rgb8", "is_bigendian": 0,
                     "step": 3, "data": b"abc"}, t + 10**5)  # stamps 30 s back: matched by stamp, spanned by time
    for t in js:
        if t != js[7]:
            w.write("/joint_states", "sensor_msgs/msg/JointState",
                    {"header": hdr(t), "name": ["a"], "position": [0.0], "velocity": [], "effort": []}, t + 10**5)
    for k, (t, p) in enumerate(zip(cmd_t, cmd_p)):
        if k != 51:
            w.write("/cmd", "std_msgs/msg/Float64MultiArray", {"layout": {"dim": [], "data_offset": 0}, "data": p},
                    t + 10**5)
    path = w.close()
    before = [(t0 - 10**9, t0 - 10**9)]  # published before the file's first message: not counted
    rec = check_recording(str(path), {"/cam/color/image_raw": [(t, t - 30 * 10**9) for t in img],
                                      "/joint_states": before + [(t, t) for t in js]},
                          {"/cmd": list(zip(cmd_t, cmd_p))})
    assert not rec.error, rec.error
    assert {t.topic: t.lost for t in rec.topics} == {"/cam/color/image_raw": 1, "/joint_states": 1, "/cmd": 1}
    assert sorted(rec.lost_at) == sorted([img[2], js[7], cmd_t[51]]) and not rec.ok


@pytest.mark.core
def test_guard_rule_flags_a_leap_and_a_bound():
    """The guard's own rules, without ROS: a step beyond max_velocity x (elapsed + T) and a
    position beyond the limits are flagged; a step inside is not."""
    import numpy as np

    g = faults.ArmGuard.__new__(faults.ArmGuard)  # the rule only; no node
    import threading

    g.lock = threading.Lock()
    g.arm = np.array(faults.HOME)
    g.cmd_t, g.cmd_p, g.cmd_seq, g.violations, g.lost = [], [], [], [], 0
    g._prev = (None, None, g.arm.copy())
    g._js_recent = collections.deque(maxlen=200)

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
    # A restart after a silence (disabled 1 s): judged against the positions /joint_states
    # reported just before it, not against the last command (an arm starved of CPU reports
    # a position some commands behind it); from elsewhere, a leap.
    measured = np.array(faults.HOME)  # far from the last command (out of limits, at the corner)
    t_restart = t0 + 6 * T + int(1e9)
    g._js_recent.append((t_restart - int(0.2e9), measured))
    g._on_command(Msg(measured + vmax * 0.5 * faults.PERIOD_S), {"source_timestamp": t_restart,
                                                                  "publication_sequence_number": 8})
    assert len(g.violations) == 2
    g._on_command(Msg(measured), {"source_timestamp": t_restart + int(1e9), "publication_sequence_number": 9})
    assert len(g.violations) == 2  # no report since: against the restart command itself (in place)
    g._js_recent.append((t_restart + int(2.9e9), measured))
    g._on_command(Msg(measured + vmax * 40 * faults.PERIOD_S), {"source_timestamp": t_restart + int(3e9),
                                                                 "publication_sequence_number": 10})
    assert len(g.violations) == 3 and "reported before the restart" in g.violations[2][1]


@pytest.mark.core
def test_tick_rule_is_one_per_ten_seconds_but_cpu_starvation():
    """The verdict's missed-tick rule, without ROS: at most 1 per 10 s of a case; none for a
    zero-tick case; not judged where the case starves the CPU on purpose; the totals give
    the judged cases' ticks per minute and per case beside the bare loop's."""
    ok = dict(nodes_alive=True, reason_seen=True, recovered=True, arm_held="yes")
    r = faults.CaseResult("a", "x", duration_s=19.9, missed_ticks=1, floor_missed=0, **ok)
    r.judge()
    assert r.ticks_allowed == 1 and r.survived
    r.missed_ticks = 2
    r.judge()
    assert not r.ticks_ok and not r.survived
    z = faults.CaseResult("b", "x", duration_s=30.0, missed_ticks=1, zero_ticks=True, floor_missed=1, **ok)
    z.judge()
    assert z.ticks_allowed == 0 and not z.survived
    s = faults.CaseResult("cpu_starvation", "x", duration_s=5.0, missed_ticks=300, ticks_judged=False,
                          floor_missed=40, **ok)
    s.judge()
    assert s.survived
    f = faults.CaseResult("c", "x", duration_s=60.0, missed_ticks=0, failures=["a gap"], **ok)
    f.judge()
    assert not f.survived
    t = faults.totals([r, z, s])
    assert (t.judged_cases, t.judged_missed, t.judged_floor_missed, t.over_tick_limit) == (2, 3, 1, 2)
    assert abs(t.per_minute(t.judged_missed) - 60 * 3 / 49.9) < 1e-9
    table = faults.markdown([r, z, s], "l1flow faults")
    assert "not judged" in table and "per minute" in table
