"""Node parameters from a frozen config dataclass (l1flow_ros.nodes.params), on real rclpy nodes."""

from dataclasses import dataclass

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter

from l1flow_ros.nodes.params import LiveParameters, ParameterError, declare, param

pytestmark = pytest.mark.node


@dataclass(frozen=True)
class DemoConfig:
    name: str = param("arm", "a name")
    rate_hz: float = param(500.0, "a rate (Hz)")
    steps: int = param(8, "a count", live=True)
    enabled: bool = param(False, "a switch", live=True)
    joints: tuple[str, ...] = param(("a", "b"), "joint names")
    limits: tuple[float, ...] = param((), "limits (empty = none)", live=True)

    def validate(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError("rate_hz must be > 0")
        if self.limits and len(self.limits) != len(self.joints):
            raise ValueError(f"limits: {len(self.limits)} values for {len(self.joints)} joints")


def _node(ctx, tmp_path, yaml_body: str = "", overrides: tuple[str, ...] = ()) -> Node:
    args = ["--ros-args"]
    if yaml_body:
        f = tmp_path / "params.yaml"
        f.write_text("params_demo:\n  ros__parameters:\n" + yaml_body)
        args += ["--params-file", str(f)]
    for o in overrides:
        args += ["-p", o]
    return Node("params_demo", context=ctx, cli_args=args)


def test_defaults_and_file_values_with_the_usual_spellings(ros_context, tmp_path):
    node = _node(ros_context, tmp_path, "    rate_hz: 250\n    joints: ['x', 'y', 'z']\n    limits: [1, 2, 3]\n",
                 overrides=("steps:=4",))
    cfg = declare(node, DemoConfig)
    assert cfg == DemoConfig(rate_hz=250.0, steps=4, joints=("x", "y", "z"), limits=(1.0, 2.0, 3.0))
    assert isinstance(cfg.rate_hz, float) and all(isinstance(v, float) for v in cfg.limits)
    d = node.describe_parameter("rate_hz")
    assert d.read_only and d.description.startswith("[double] ")
    assert not node.describe_parameter("steps").read_only
    node.destroy_node()


@pytest.mark.parametrize("empty", ["[]", "['']"])
def test_both_empty_list_spellings_mean_empty(ros_context, tmp_path, empty):
    node = _node(ros_context, tmp_path, f"    joints: {empty}\n")
    assert declare(node, DemoConfig).joints == ()
    node.destroy_node()


@pytest.mark.parametrize("body, words", [
    ("    rate_hz: fast\n", ["rate_hz", "double", "'fast'"]),
    ("    steps: 2.5\n", ["steps", "integer"]),
    ("    joints: [1, 2]\n", ["joints", "string[]"]),
    ("    rate_hz: -1.0\n", ["rate_hz must be > 0"]),
    ("    limits: [1.0]\n", ["limits: 1 values for 2 joints"]),
])
def test_a_bad_file_is_an_error_naming_the_parameter(ros_context, tmp_path, body, words):
    node = _node(ros_context, tmp_path, body)
    with pytest.raises(ParameterError) as e:
        declare(node, DemoConfig)
    for w in words:
        assert w in str(e.value)
    node.destroy_node()


def test_live_changes_are_validated_applied_or_refused(ros_context, tmp_path):
    node = _node(ros_context, tmp_path)
    node.cfg = declare(node, DemoConfig)
    seen = []
    LiveParameters(node, lambda old, new: seen.append((old.steps, new.steps, new.limits)))

    ok = node.set_parameters_atomically([Parameter("steps", value=16), Parameter("limits", value=[0.5, 1.0])])
    assert ok.successful, ok.reason
    assert node.cfg.steps == 16 and node.cfg.limits == (0.5, 1.0)
    assert seen == [(8, 16, (0.5, 1.0))]

    before = node.cfg
    for p, why in [(Parameter("limits", value=[1.0]), "limits: 1 values"),
                   (Parameter("steps", value="many"), "expected integer"),
                   (Parameter("rate_hz", value=100.0), "read-only")]:
        r = node.set_parameters([p])[0]
        assert not r.successful and why in r.reason, r.reason
    assert node.cfg is before and len(seen) == 1
    assert node.get_parameter("steps").value == 16  # a refused change leaves the parameter as it was
    node.destroy_node()
