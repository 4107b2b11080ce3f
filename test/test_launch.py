"""launch/*.launch.py and `l1flow run` describe the same nodes with the same parameter files.

launch_ros is not installable here, so the launch files are read as Python source (ast):
every Node / LifecycleNode they start, and the parameter file they default to.
"""

import ast
from pathlib import Path

import pytest

from l1flow_ros.graph import GRAPHS, NODE_CLASSES, config_path, node_class, nodes_in_config

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[1]


def _launch_plan(path: Path) -> tuple[list[str], str, list[bool]]:
    """(executables started, the params_file default, whether each node gets params_file).

    An included launch file of this package contributes its nodes; it must be passed the
    including file's params_file.
    """
    tree = ast.parse(path.read_text())
    nodes, uses_params, params_default = [], [], None
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            continue
        kw = {k.arg: k.value for k in call.keywords}
        if call.func.id == "IncludeLaunchDescription":
            consts = [n.value for n in ast.walk(call.args[0]) if isinstance(n, ast.Constant)]
            included = next(c for c in consts if str(c).endswith(".launch.py"))
            passed = {ast.literal_eval(k): v for k, v in zip(kw["launch_arguments"].func.value.keys,
                                                              kw["launch_arguments"].func.value.values)}
            assert isinstance(passed["params_file"], ast.Name) and passed["params_file"].id == "params_file"
            sub_nodes, _, sub_uses = _launch_plan(path.parent / included)
            nodes += sub_nodes
            uses_params += sub_uses
            continue
        if call.func.id in ("Node", "LifecycleNode"):
            assert ast.literal_eval(kw["package"]) == "l1flow_ros"
            exe = ast.literal_eval(kw["executable"])
            assert ast.literal_eval(kw["name"]) == exe
            nodes.append(exe)
            params = kw["parameters"]
            names = {n.id for n in ast.walk(params) if isinstance(n, ast.Name)}
            uses_params.append("params_file" in names or "overrides" in names)
        if call.func.id == "DeclareLaunchArgument" and ast.literal_eval(call.args[0]) == "params_file":
            consts = [n.value for n in ast.walk(kw["default_value"]) if isinstance(n, ast.Constant)]
            params_default = next(c for c in consts if str(c).endswith(".yaml"))
    return nodes, params_default, uses_params


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_launch_file_matches_l1flow_run(graph):
    launch = ROOT / "launch" / f"{graph}.launch.py"
    nodes, params_file, uses_params = _launch_plan(launch)
    assert params_file == GRAPHS[graph]
    assert all(uses_params), "every node must get the graph's parameter file"
    cfg = config_path(graph)
    assert cfg.resolve() == (ROOT / "config" / params_file).resolve()
    assert sorted(nodes) == sorted(nodes_in_config(cfg))


def test_every_config_names_real_nodes():
    for yaml_file in sorted((ROOT / "config").glob("*.yaml")):
        for name in nodes_in_config(yaml_file):
            cls = node_class(name)
            assert cls.__name__.lower().replace("node", "") == name.replace("_", "").replace("node", "")


def test_console_scripts_cover_every_node():
    setup = (ROOT / "setup.py").read_text()
    for name in NODE_CLASSES:
        assert f'"{name}"' in setup


def test_unknown_graph_and_bad_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown graph"):
        config_path("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("not_a_node:\n  ros__parameters: {}\n")
    with pytest.raises(ValueError, match="unknown node"):
        nodes_in_config(bad)
