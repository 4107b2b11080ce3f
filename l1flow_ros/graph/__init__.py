"""Which nodes make up each deployment graph, and where their parameter files are.

One description serves both ways of starting the graph:
- ``launch/*.launch.py`` (launch_ros, on a full ROS 2 install) start one process per node
  with ``parameters=[<config file>]``;
- ``l1flow run <config>`` (:mod:`l1flow_ros.graph.launcher`) starts the same nodes, one OS
  process per node, with the same parameter file, where the ``ros2`` command line is missing.

A graph is its parameter file: the nodes are the file's top-level keys.

This package is the ROS-side tooling that runs and drives whole graphs (the nodes themselves
are in :mod:`l1flow_ros.nodes`): :mod:`.launcher` (one process per node), :mod:`.evaluation`
(``l1flow eval`` / ``demo``: seeded episodes on the simulated arm), :mod:`.recording` (graph
recording of scripted demonstrations) and :mod:`.faults` (the fault suite). Nodes these tools
run in their own process (their probes, ``--one-process``) are brought up and torn down by
:class:`l1flow_ros.nodes.composition.Composition`. This module itself imports no ROS package.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

PACKAGE = "l1flow_ros"

# node name -> "module:Class"; the node name is also the console script.
NODE_CLASSES: dict[str, str] = {
    "sim_robot_node": "l1flow_ros.nodes.sim_robot_node:SimRobotNode",
    "panda_sim_node": "l1flow_ros.nodes.panda_sim_node:PandaSimNode",
    "teleop_node": "l1flow_ros.nodes.teleop_node:TeleopNode",
    "recorder_node": "l1flow_ros.nodes.recorder_node:RecorderNode",
    "perception_node": "l1flow_ros.nodes.perception_node:PerceptionNode",
    "inference_node": "l1flow_ros.nodes.inference_node:InferenceNode",
    "executor_node": "l1flow_ros.nodes.executor_node:ExecutorNode",
}

# Lifecycle nodes: configured and activated by whoever starts the graph (launch file,
# launcher, in-process composition). test_launch checks this against the classes.
LIFECYCLE_NODES: frozenset[str] = frozenset({"inference_node"})

# The graphs the package ships: name -> parameter file in config/.
GRAPHS: dict[str, str] = {
    "policy": "policy.yaml",
    "sim": "sim.yaml",
    "teleop": "teleop.yaml",
}


def share_dir() -> Path:
    """The package's share directory (colcon install) or the source tree (pip -e)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (not a ROS install)
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2]


def config_path(name_or_path: str | Path) -> Path:
    """A graph name ("policy", "sim", ...) or a path to a parameter file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"parameter file {p} does not exist")
        return p
    if str(name_or_path) not in GRAPHS:
        raise ValueError(f"unknown graph {name_or_path!r}; known: {sorted(GRAPHS)} or a .yaml path")
    return share_dir() / "config" / GRAPHS[str(name_or_path)]


def nodes_in_config(path: str | Path) -> list[str]:
    """The node names a parameter file configures, in file order (unknown keys are an error)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a ROS 2 parameter file (top level must be a mapping)")
    nodes = []
    for key, body in data.items():
        name = str(key).lstrip("/")
        if name not in NODE_CLASSES:
            raise ValueError(f"{path}: unknown node {key!r}; known: {sorted(NODE_CLASSES)}")
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise ValueError(f"{path}: node {key!r} has no ros__parameters")
        nodes.append(name)
    return nodes


def node_class(name: str):
    """Import and return the node class for a node name."""
    module, cls = NODE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def resolve_path(value: str) -> str:
    """``package://l1flow_ros/<rel>`` -> a path in the package's share directory; else unchanged.

    Parameter files name bundled files this way, so one file works from a source tree,
    a pip install and a colcon install alike.
    """
    prefix = f"package://{PACKAGE}/"
    if isinstance(value, str) and value.startswith(prefix):
        return str(share_dir() / value[len(prefix):])
    return value


def parameter_value(path: str | Path, node: str, name: str, default=None):
    """One node's parameter as the file sets it (``default`` where it does not)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    for key, body in data.items():
        if str(key).lstrip("/") == node and isinstance(body, dict):
            return (body.get("ros__parameters") or {}).get(name, default)
    return default
