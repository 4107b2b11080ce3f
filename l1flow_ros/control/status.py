"""What the executor reports (no ROS): joint positions picked from a joint-state stream,
and the status of one diagnostics period (level, message, key/values)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from l1flow_ros.control.scheduler import Mode, SchedulerStats
from l1flow_ros.control.stream import StreamReport

OK, WARN, ERROR = 0, 1, 2  # the levels of diagnostic_msgs/DiagnosticStatus


class JointPicker:
    """Positions of ``names`` (command order) out of a joint-state stream that may carry
    other joints, in any order. At the arm's rate (up to 1 kHz): the name lookup is redone
    only when the stream's names change. ``problem`` says why the last unusable one was
    ignored."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.problem = ""
        self._seen: object = None  # the last name list, and where names are in it
        self._index: list[int] = []

    def pick(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray | None:
        """(A,) positions in ``self.names`` order, or None (``problem`` says why)."""
        if len(positions) != len(names):
            self.problem = f"/joint_states has {len(positions)} positions for {len(names)} names"
            return None
        if names != self._seen:
            index = {n: i for i, n in enumerate(names)}
            missing = [n for n in self.names if n not in index]
            if missing:
                self.problem = f"/joint_states lacks {missing} (has {list(names)[:8]})"
                return None
            self._seen, self._index = list(names), [index[n] for n in self.names]
        q = np.array([positions[i] for i in self._index], dtype=np.float64)
        if not np.all(np.isfinite(q)):
            self.problem = "/joint_states has NaN or inf positions"
            return None
        return q


def health(*, enabled: bool, starved: bool, output_topic: str, new_rejections: int = 0,
           last_rejection: str = "", checkpoint_error: str = "", controller_lost: bool = False,
           measured: bool = True, joint_states_age_s: float | None = None, joint_states_problem: str = "",
           joint_states_timeout_s: float = 1.0, new_missed: int = 0) -> tuple[int, str]:
    """(level, message) of one diagnostics period: every problem of the period, the worst
    first (the order below within a level), then the state."""
    problems: list[tuple[int, str]] = []
    if new_rejections:
        problems.append((ERROR, f"rejected {new_rejections} chunk(s): {last_rejection}"))
    if checkpoint_error:
        problems.append((ERROR, checkpoint_error))
    if controller_lost:
        problems.append((ERROR if enabled else WARN, f"no subscriber on {output_topic}: "
                         "not streaming; restarts from /joint_states when a controller subscribes"))
    if not measured:
        problems.append((WARN, "no /joint_states for the configured joint_names"))
    elif joint_states_age_s is not None and joint_states_age_s > joint_states_timeout_s:
        why = f" ({joint_states_problem})" if joint_states_problem else ""
        problems.append((WARN, f"no usable /joint_states for {joint_states_age_s:.1f} s{why}"))
    if new_missed:
        problems.append((WARN, f"{new_missed} control ticks missed"))
    if not enabled:
        problems.append((OK, "disabled"))
    elif starved:
        problems.append((WARN, "starved: holding position, no fresh chunk"))
    elif not problems:
        problems.append((OK, "streaming"))
    problems.sort(key=lambda x: -x[0])  # stable: the order above within a level
    return problems[0][0], "; ".join(text for _, text in problems)


def summary(r: StreamReport, st: SchedulerStats, timing: Mapping[str, float], *, now_ns: int, output: str,
            output_topic: str, rate_hz: float, new_missed: int, replan_due: bool, checkpoint_error: str = "",
            joint_states_problem: str = "", joint_states_age_s: float | None = None,
            joint_states_timeout_s: float = 1.0, control_thread: str = "", executor_thread: str = "",
            middleware_threads: str = "") -> tuple[int, str, dict]:
    """(level, message, values) of one diagnostics period of the executor: its stream report,
    the scheduler's statistics, the loop's ``timing_stats()``; how each thread is scheduled
    (``control_thread``, ``executor_thread``, ``middleware_threads``) goes last into the values.
    Keys: the executor_node table of :mod:`l1flow_ros.nodes.diagnostics`."""
    level, message = health(
        enabled=r.enabled, starved=st.mode == Mode.STARVED, output_topic=output_topic,
        new_rejections=r.new_rejections, last_rejection=r.last_rejection, checkpoint_error=checkpoint_error,
        controller_lost=r.controller_lost, measured=r.measured, joint_states_age_s=joint_states_age_s,
        joint_states_problem=joint_states_problem, joint_states_timeout_s=joint_states_timeout_s,
        new_missed=new_missed)
    age_ms = (now_ns - st.chunk_t_obs_ns) * 1e-6 if st.chunk_t_obs_ns is not None else float("nan")
    values = {
        "enabled": r.enabled,
        "mode": st.mode.value,
        "output": output,
        "rate_hz": rate_hz,
        "period_error_us_p50": round(timing["period_error_us_p50"], 1),
        "period_error_us_p99": round(timing["period_error_us_p99"], 1),
        "period_error_us_max": round(timing["period_error_us_max"], 1),
        "missed_ticks": int(timing["missed_ticks"]),
        "deadlines": int(timing["deadlines"]),
        "starvation_events": st.starvation_events,
        "chunk_age_ms": round(age_ms, 1),
        "chunks_accepted": st.accepted,
        "chunks_rejected": r.rejections,
        "last_rejection": r.last_rejection,
        "dropped_stale_actions": st.dropped_stale_actions,
        "limited_ticks": st.limited_ticks,
        "replan_due": replan_due,
        "inference_delay_steps_p95": -1 if r.delay_steps is None else r.delay_steps,
        "obs_to_arrival_ms_p50": round(r.delay_ms_p50, 1),
        "obs_to_arrival_ms_p95": round(r.delay_ms_p95, 1),
        "boundary_velocity_step_max": round(r.boundary_velocity_step, 4),
        "boundary_acceleration_max": round(r.boundary_acceleration, 2),
        "boundary_velocity_step_p95": round(r.boundary_velocity_step_p95, 4),
        "boundaries_spliced": r.boundaries,
        "boundaries_on_plan": r.boundaries_on_plan,
        "on_plan_boundary_velocity_step_max": round(r.on_plan_velocity_step, 4),
        "on_plan_boundary_velocity_step_p95": round(r.on_plan_velocity_step_p95, 4),
        "on_plan_boundary_acceleration_max": round(r.on_plan_acceleration, 2),
        "control_thread": control_thread,
        "executor_thread": executor_thread,
        "middleware_threads": middleware_threads,
    }
    return level, message, values
