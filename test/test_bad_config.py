"""Bad configuration at start: every mistake in a parameter file is one clear line naming the
file (and line), the node and the parameter; nothing starts, and no node prints a traceback.

The core tests check :func:`l1flow_ros.config.check_parameter_file` and the launcher's check
(:func:`l1flow_ros.graph.launcher.check_graph_parameters`) over generated parameter files
(hypothesis): misspelt names, values of the wrong type, lower above upper, broken YAML. The
graph tests start the real processes: ``l1flow run`` with each bad file of the issue, and a
node's console script as ``ros2 launch`` starts it (no launcher check in front).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l1flow_ros.config import (
    ParameterError,
    check_parameter_file,
    check_values,
    param_name,
    read_parameter_file,
    ros_scalar,
    type_name,
)
from l1flow_ros.graph import NODE_CLASSES
from l1flow_ros.graph.launcher import NODE_CONFIGS, check_graph_parameters, config_class, graph_warnings

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "default"
EXECUTOR_OK = {"joint_names": ["a", "b"], "lower": [-1.0, -1.0], "upper": [1.0, 1.0],
               "max_velocity": [1.0, 1.0], "max_acceleration": [10.0, 10.0]}
# Config classes importable without a node (ROS-free); the recorder's lives in its node module.
CORE_NODES = ("executor_node", "inference_node", "perception_node", "sim_robot_node", "teleop_node")
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path: Path, nodes: dict[str, dict], name: str = "graph.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump({k: {"ros__parameters": v} for k, v in nodes.items()}, sort_keys=False))
    return p


def _fields(node: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(config_class(node)))


# -- core: the check itself --------------------------------------------------------------------------


@pytest.mark.core
def test_node_configs_are_the_classes_the_nodes_declare():
    for node in NODE_CLASSES:
        cls_name = NODE_CONFIGS[node].split(":")[1]
        src = (ROOT / "l1flow_ros" / "nodes" / f"{node}.py").read_text()  # read, not imported: no rclpy here
        # declared by the node itself, or by the simulated arms' shared node from its CONFIG
        assert f"declare(self, {cls_name})" in src or f"CONFIG = {cls_name}" in src, node
    assert set(NODE_CONFIGS) == set(NODE_CLASSES)


@pytest.mark.core
def test_shipped_parameter_files_pass():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        assert check_graph_parameters(path) == [], path


@pytest.mark.core
def test_scalars_are_typed_as_rcl_types_them():
    # rcl_yaml_param_parser get_value(): bool words, strtoll base 0, strtod, else string.
    cases = {"500": 500, "500.0": 500.0, "1e3": 1000.0, "fast": "fast", "yes": True, "Off": False,
             "0x10": 16, "017": 15, "08": 8.0, "-3": -3, "-.inf": -math.inf, "~": "~", "1_000": "1_000"}
    for text, want in cases.items():
        got = ros_scalar(text)
        assert got == want and type(got) is type(want), (text, got)
    assert ros_scalar("500", quoted=True) == "500"
    assert math.isnan(ros_scalar(".nan"))
    assert ros_scalar("1e999") == "1e999"  # strtod overflows (ERANGE): a string to rcl


@pytest.mark.core
@PROFILE
@given(st.text(max_size=30))
def test_any_scalar_text_has_a_type(text):
    value = ros_scalar(text)
    assert type(value) in (bool, int, float, str)
    if isinstance(value, int) and not isinstance(value, bool):
        assert -(2**63) <= value < 2**63


@pytest.mark.core
def test_each_case_of_the_issue_is_one_line_naming_file_node_and_key(tmp_path):
    cases = {
        "max_velocty": ({**EXECUTOR_OK, "max_velocty": [1.0, 1.0]}, "did you mean 'max_velocity'"),
        "rate_hz": ({**EXECUTOR_OK, "rate_hz": "fast"}, "expected double"),
        "lower": ({**EXECUTOR_OK, "lower": [2.0, -1.0]}, "above upper"),
    }
    for key, (params, what) in cases.items():
        path = _write(tmp_path, {"executor_node": params}, f"{key}.yaml")
        lines = check_graph_parameters(path)
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"{path}:") and "executor_node" in lines[0] and key in lines[0], lines
        assert what in lines[0], lines
    broken = tmp_path / "broken.yaml"
    broken.write_text('executor_node:\n  ros__parameters:\n    joint_names: ["a", "b"\n    rate_hz: 500.0\n')
    lines = check_graph_parameters(broken)
    assert len(lines) == 1 and lines[0].startswith(f"{broken}:4:") and "not valid YAML" in lines[0], lines


@pytest.mark.core
def test_every_problem_of_a_file_and_its_overrides_is_listed(tmp_path):
    path = _write(tmp_path, {"executor_node": {**EXECUTOR_OK, "max_velocty": [1.0, 1.0]},
                             "teleop_node": {"mode": "joy", "joy": {"deadzon": 0.1}}})
    lines = check_graph_parameters(path, overrides=["executor_node:rate_hz:=fast", "executor_node:spin_us:=1.5"])
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    for want in ("'max_velocty'", "'joy.deadzon' (did you mean 'joy.deadzone'?)",
                 "-p executor_node:rate_hz:=fast: executor_node: rate_hz: expected double",
                 "-p executor_node:spin_us:=1.5: executor_node: spin_us: expected integer"):
        assert want in text, text
    # A node's own line: the file line where its bad key is.
    line_of_typo = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "max_velocty" in t)
    assert f"{path}:{line_of_typo}: executor_node: unknown parameter 'max_velocty'" in text


@pytest.mark.core
def test_joint_names_against_the_deployed_bundle(tmp_path):
    actions = yaml.safe_load((BUNDLE / "manifest.json").read_text())["action"]["names"]
    base = {"inference_node": {"checkpoint": str(BUNDLE)}}
    good = _write(tmp_path, {**base, "executor_node": {"joint_names": list(reversed(actions))}}, "good.yaml")
    assert check_graph_parameters(good) == []
    bad = _write(tmp_path, {**base, "executor_node": {"joint_names": ["joint_1", *actions[1:]]}}, "bad.yaml")
    (line,) = check_graph_parameters(bad)
    assert line.startswith(f"{bad}:") and "executor_node: joint_names" in line and str(BUNDLE) in line
    # The same through -p, which names the override.
    (line,) = check_graph_parameters(good, overrides=["executor_node:joint_names:=[j1, j2]"])
    assert line.startswith("-p executor_node:joint_names:=") and "inference_node.checkpoint" in line


@pytest.mark.core
def test_missing_calibration_starts_held_with_a_warning(tmp_path):
    needs_points = yaml.safe_load((BUNDLE / "manifest.json").read_text())["observation"]["num_points"] > 0
    assert needs_points  # the shipped bundle fuses points: its calibration matters
    missing = str(tmp_path / "nowhere.yaml")
    graph = {"perception_node": {"calibration_file": missing}, "inference_node": {"checkpoint": str(BUNDLE)}}
    path = _write(tmp_path, graph)
    assert check_graph_parameters(path) == []  # it may start ...
    (line,) = graph_warnings(path)  # ... held, and says why
    assert line.startswith(f"{path}:") and "perception_node: calibration_file" in line and missing in line
    Path(missing).write_text("{}\n")
    assert graph_warnings(path) == []
    # A simulated arm that writes the same file: no warning.
    Path(missing).unlink()
    sim = _write(tmp_path, {**graph, "sim_robot_node": {"calibration_file": missing}}, "sim.yaml")
    assert graph_warnings(sim) == []


# -- core: property-based, over generated parameter files --------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyz_"


@st.composite
def _misspelling(draw):
    """(node, real name, misspelt name): one letter dropped, doubled, swapped or replaced."""
    node = draw(st.sampled_from(CORE_NODES))
    f = draw(st.sampled_from(_fields(node)))
    real = param_name(f)
    i = draw(st.integers(0, len(real) - 1))
    how = draw(st.sampled_from(("drop", "double", "swap", "replace")))
    if how == "drop":
        typo = real[:i] + real[i + 1:]
    elif how == "double":
        typo = real[:i] + real[i] + real[i:]
    elif how == "swap" and i + 1 < len(real):
        typo = real[:i] + real[i + 1] + real[i] + real[i + 2:]
    else:
        typo = real[:i] + draw(st.sampled_from(_LETTERS)) + real[i + 1:]
    known = {param_name(g) for g in _fields(node)} | {"use_sim_time", "start_type_description_service"}
    if typo in known or not typo or typo.startswith(".") or typo.endswith(".") or ".." in typo:
        typo = real + "x"
    return node, real, typo


@pytest.mark.core
@PROFILE
@given(_misspelling(), st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_a_misspelt_name_is_named_with_the_closest_real_one(tmp_path_factory, spelt, value):
    node, real, typo = spelt
    path = tmp_path_factory.mktemp("typo") / "p.yaml"
    path.write_text(f"{node}:\n  ros__parameters:\n    {typo}: {value!r}\n")
    lines = check_parameter_file(path, {node: config_class(node)})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:3: {node}: unknown parameter {typo!r}"), lines
    if len(real) >= 4:  # one edit in a name this long is always close enough for a suggestion
        assert "(did you mean" in lines[0], lines
    if "(did you mean" in lines[0]:
        suggested = lines[0].split("(did you mean ")[1].rstrip("?)").strip("'")
        assert suggested in {param_name(f) for f in _fields(node)}
        # the real name, or one at least as close to what was written
        assert difflib.SequenceMatcher(None, typo, suggested).ratio() >= \
            difflib.SequenceMatcher(None, typo, real).ratio(), (typo, real, suggested)


def _wrong_value(draw, cls: type, f: dataclasses.Field) -> str:
    """YAML text of a value of another type than the field's (as rcl reads it)."""
    want = type_name(cls, f)
    choices = {
        "double": ["fast", "'1.5'", "true", "[1.0, 2.0]"],
        "integer": ["1.5", "fast", "true", "[1, 2]"],
        "string": ["1.5", "42", "true", "[a, b]"],
        "bool": ["1", "0.5", "maybe", "[true]"],
        "double[]": ["fast", "1.5", "[a, b]", "[true, false]"],
        "integer[]": ["3", "[1.5, 2.5]", "[a]", "[true]"],
        "string[]": ["word", "[1, 2]", "[1.5]", "7"],
    }[want]
    return draw(st.sampled_from(choices))


@st.composite
def _mistyped(draw):
    node = draw(st.sampled_from(CORE_NODES))
    cls = config_class(node)
    f = draw(st.sampled_from(_fields(node)))
    return node, param_name(f), type_name(cls, f), _wrong_value(draw, cls, f)


@pytest.mark.core
@PROFILE
@given(_mistyped())
def test_a_value_of_the_wrong_type_is_named_with_the_type_it_wants(tmp_path_factory, case):
    node, name, want, text = case
    head, _, leaf = name.rpartition(".")
    body = f"    {leaf}: {text}\n" if not head else f"    {head}:\n      {leaf}: {text}\n"
    path = tmp_path_factory.mktemp("type") / "p.yaml"
    path.write_text(f"{node}:\n  ros__parameters:\n{body}")
    lines = check_parameter_file(path, {node: config_class(node)})
    assert len(lines) == 1, (text, lines)
    assert lines[0].startswith(f"{path}:") and f"{node}: {name}: expected {want}, got" in lines[0], lines


@pytest.mark.core
@PROFILE
@given(st.integers(1, 7).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n))))
def test_lower_above_upper_is_refused_naming_the_limits(tmp_path_factory, limits):
    lower, upper = limits
    n = len(lower)
    path = tmp_path_factory.mktemp("lim") / "p.yaml"
    params = {"joint_names": [f"j{i}" for i in range(n)], "lower": lower, "upper": upper}
    path.write_text(yaml.safe_dump({"executor_node": {"ros__parameters": params}}))
    lines = check_parameter_file(path, {"executor_node": config_class("executor_node")})
    if all(lo <= hi for lo, hi in zip(lower, upper)):
        assert lines == []
    else:
        assert len(lines) == 1 and "executor_node" in lines[0] and "lower" in lines[0] and "upper" in lines[0], lines


@pytest.mark.core
@PROFILE
@given(st.integers(0, 10_000), st.sampled_from(["", "]", "[", ":", "{", "'", "\t", "- x\n", "  y: 1\n"]))
def test_a_broken_file_is_one_line_never_an_exception(tmp_path_factory, cut, junk):
    good = (ROOT / "config" / "policy.yaml").read_text()
    text = good[: cut % (len(good) + 1)] + junk + good[cut % (len(good) + 1):]
    path = tmp_path_factory.mktemp("cut") / "p.yaml"
    path.write_text(text)
    configs = {n: config_class(n) for n in ("perception_node", "inference_node", "executor_node")}
    lines = check_parameter_file(path, configs)  # never raises
    for line in lines:
        assert line.startswith(f"{path}") and "\n" not in line, line


@pytest.mark.core
def test_read_parameter_file_is_what_the_node_gets(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("teleop_node:\n  ros__parameters:\n    joy:\n      axes: [0, 1, 2]\n      deadzone: 1e-1\n"
                 "    task: '42'\n    action_names: []\n")
    values = {k: v for k, (v, _) in read_parameter_file(p)["teleop_node"].items()}
    assert values == {"joy.axes": [0, 1, 2], "joy.deadzone": 0.1, "task": "42", "action_names": None}
    p.write_text("executor_node:\n  ros__parameters:\n    lower: [1, 2.0]\n")
    with pytest.raises(ParameterError, match=r"p.yaml:3: lower: a list must hold one type"):
        read_parameter_file(p)
    cfg, problems = check_values(config_class("executor_node"), {"rate_hz": 250})
    assert problems == [] and cfg.rate_hz == 250.0


# -- graph: the real processes --------------------------------------------------------------------


def _run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l1flow_ros.cli", "run", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.graph
def test_l1flow_run_refuses_each_bad_file_before_any_node_starts(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text('executor_node:\n  ros__parameters:\n    joint_names: ["a", "b"\n    rate_hz: 500.0\n')
    files = {
        "max_velocty": _write(tmp_path, {"executor_node": {**EXECUTOR_OK, "max_velocty": [1.0, 1.0]}}, "a.yaml"),
        "rate_hz": _write(tmp_path, {"executor_node": {**EXECUTOR_OK, "rate_hz": "fast"}}, "b.yaml"),
        "lower": _write(tmp_path, {"executor_node": {**EXECUTOR_OK, "lower": [2.0, -1.0]}}, "c.yaml"),
        "joint_names": _write(tmp_path, {"inference_node": {"checkpoint": str(BUNDLE)},
                                         "executor_node": EXECUTOR_OK}, "d.yaml"),
        "not valid YAML": broken,
    }
    for key, path in files.items():
        r = _run_cli(str(path))
        out = r.stdout + r.stderr
        assert r.returncode == 2, out
        assert "Traceback" not in out and "running" not in out, out
        bad = [ln for ln in out.splitlines() if ln.strip().startswith(str(path))
               or ln.startswith(f"l1flow run: {path}:")]
        assert len(bad) == 1 and key in bad[0], out
        if key != "not valid YAML":
            assert "executor_node" in bad[0], out


@pytest.mark.graph
def test_a_node_started_as_ros2_launch_does_exits_with_one_line(tmp_path):
    """No launcher in front: the node's console script with --params-file, as launch_ros runs it."""
    from l1flow_ros.graph.launcher import node_command

    cases = {  # every node: a misspelt name, or a value of the wrong type
        "executor_node": ({**EXECUTOR_OK, "max_velocty": [1.0, 1.0]}, "max_velocty"),
        "teleop_node": ({"mode": "joy", "rate_hz": "fast"}, "rate_hz"),
        "perception_node": ({"slop": "fast"}, "slop"),
        "inference_node": ({"chekpoint": str(BUNDLE)}, "chekpoint"),
        "sim_robot_node": ({"taks": "button-press-v3"}, "taks"),
        "panda_sim_node": ({"taks": "lift"}, "taks"),
        "recorder_node": ({"output_dir": 5}, "output_dir"),
    }
    assert set(cases) == set(NODE_CLASSES)
    for node, (params, key) in cases.items():
        path = _write(tmp_path, {node: params}, f"{node}.yaml")
        r = subprocess.run(node_command(node, path), capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 2, out
        assert "Traceback" not in out, out
        (line,) = [ln for ln in out.splitlines() if key in ln]
        assert node in line and str(path) in line and "FATAL" in line, out
