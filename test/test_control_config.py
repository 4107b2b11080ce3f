"""ExecutorConfig (l1flow_ros.control.config), without ROS: defaults, the live / fixed split,
validation, the scheduler configuration and the limits merged with a checkpoint's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from l1flow_ros.config import with_changes
from l1flow_ros.control.config import ExecutorConfig
from l1flow_ros.spec import ActionSpec

pytestmark = pytest.mark.core

# The parameters that may change while the node runs; every other one is fixed at start.
LIVE = {"latency_margin", "splice", "crossfade_duration", "ensemble_k", "interpolation", "execute_steps",
        "n_action_steps", "max_future", "max_age", "starvation_timeout", "lower", "upper", "max_velocity",
        "max_acceleration", "gripper_joints", "gripper_binary", "gripper_open", "gripper_closed", "spin_us",
        "accept_fingerprints", "log_boundaries"}


def test_defaults_descriptions_and_the_live_split():
    cfg = ExecutorConfig()
    cfg.validate()
    fields = {f.name: f for f in dataclasses.fields(ExecutorConfig)}
    assert {n for n, f in fields.items() if f.metadata["live"]} == LIVE
    assert all(f.metadata["description"] for f in fields.values())
    assert cfg.joint_names == ("ee_x", "ee_y", "ee_z", "gripper") and cfg.rate_hz == 500.0
    assert (cfg.output, cfg.splice, cfg.interpolation) == ("forward_position", "crossfade", "cubic")
    assert (cfg.executor_priority, cfg.middleware_priority, cfg.realtime_priority) == (-1, -1, 0)
    assert cfg.lower == () and cfg.cpu_affinity == () and cfg.log_boundaries is False
    assert (cfg.max_chunk_bytes, cfg.python_switch_interval, cfg.tail_rate_hz) == (65536, 0.0001, 20.0)
    assert cfg.period_ns == 2_000_000


def test_priorities_below_the_control_thread():
    cfg = ExecutorConfig(realtime_priority=50)
    assert (cfg.executor_thread_priority, cfg.middleware_thread_priority) == (49, 48)
    assert (ExecutorConfig().executor_thread_priority, ExecutorConfig().middleware_thread_priority) == (0, 0)
    assert ExecutorConfig(realtime_priority=1).middleware_thread_priority == 0
    cfg = ExecutorConfig(realtime_priority=50, executor_priority=0, middleware_priority=10)
    assert (cfg.executor_thread_priority, cfg.middleware_thread_priority) == (0, 10)


@pytest.mark.parametrize("changes, words", [
    ({"rate_hz": 0.5}, "rate_hz"),
    ({"output": "torque"}, "output"),
    ({"tail_rate_hz": 600.0}, "tail_rate_hz"),
    ({"diagnostics_period": 0.0}, "diagnostics_period"),
    ({"spin_us": 2001}, "spin_us"),  # longer than a 500 Hz period
    ({"realtime_priority": 100}, "realtime_priority"),
    ({"realtime_priority": 10, "executor_priority": 10}, "executor_priority"),
    ({"middleware_priority": 5}, "middleware_priority"),  # above a control thread at normal scheduling
    ({"max_chunk_bytes": 100}, "max_chunk_bytes"),
    ({"python_switch_interval": -1.0}, "python_switch_interval"),
    ({"gripper_joints": ("hand",)}, "gripper_joints"),
    ({"max_velocity": (1.0, 2.0)}, "max_velocity has 2"),  # for 4 joints
    ({"splice": "average"}, "splice"),
    ({"joint_names": ("a", "a")}, "names"),
])
def test_validate_names_the_fault(changes, words):
    with pytest.raises(ValueError, match=words):
        dataclasses.replace(ExecutorConfig(), **changes).validate()


def test_live_changes_go_through_validate_and_fixed_ones_are_refused():
    cfg = ExecutorConfig()
    new = with_changes(cfg, {"splice": "ensemble", "max_velocity": [1, 1, 1, 10]})
    assert new.splice == "ensemble" and new.max_velocity == (1.0, 1.0, 1.0, 10.0)
    with pytest.raises(ValueError, match="rate_hz"):
        with_changes(cfg, {"rate_hz": 100.0})
    with pytest.raises(ValueError, match="splice"):
        with_changes(cfg, {"splice": "average"})


def test_scheduler_config_carries_every_timing_field():
    cfg = ExecutorConfig(rate_hz=250.0, latency_margin=0.02, splice="replace", crossfade_duration=0.05,
                         execute_steps=4, max_future=0.2, max_age=0.5, starvation_timeout=0.3)
    s = cfg.scheduler_config()
    assert s.names == cfg.joint_names and s.splice == "replace"
    assert (s.latency_margin_s, s.crossfade_s, s.max_future_s, s.max_age_s, s.starvation_timeout_s) == (
        0.02, 0.05, 0.2, 0.5, 0.3)
    assert s.execute_steps == 4 and s.max_tick_s == pytest.approx(2.0 / 250.0)


def test_limits_are_the_tighter_of_config_and_checkpoint():
    cfg = ExecutorConfig(max_velocity=(0.5, 0.5, 0.5, 10.0), upper=(1.0, 1.0, 1.0, 1.0), gripper_binary=False)
    own = cfg.limits()
    assert not own.binary.any() and np.all(np.isinf(own.max_acceleration))
    # The checkpoint lists its actions in another order; its y is slower, its gripper binary.
    spec = ActionSpec(names=("ee_y", "ee_x", "ee_z", "gripper"), max_velocity=(0.1, 1.0, 1.0, 1.0),
                      upper=(0.2, 0.3, 0.4, 1.0), max_acceleration=(2.0, 3.0, 4.0, 5.0), gripper_indices=(3,))
    lim = cfg.limits(spec)
    np.testing.assert_array_equal(lim.max_velocity, [0.5, 0.1, 0.5, 1.0])
    np.testing.assert_array_equal(lim.upper, [0.3, 0.2, 0.4, 1.0])
    np.testing.assert_array_equal(lim.max_acceleration, [3.0, 2.0, 4.0, 5.0])
    assert lim.gripper_indices == (3,) and lim.gripper_binary is False
    with pytest.raises(ValueError, match="joint_names"):
        cfg.limits(dataclasses.replace(spec, names=("a", "b", "c", "d")))
