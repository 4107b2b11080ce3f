"""``l1flow run``: start a graph's nodes from its parameter file, one process per node."""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "start the nodes of a parameter file (policy, sim, teleop or a .yaml), one process each"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="graph name (policy | sim | teleop) or a ROS 2 parameter file")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    p.add_argument(
        "-p", "--param", action="append", default=[], metavar="NODE:NAME:=VALUE",
        help="override one parameter, e.g. inference_node:checkpoint:=/path/to/bundle",
    )


def run(args: argparse.Namespace) -> int:
    from l1flow_ros.graph import config_path, nodes_in_config
    from l1flow_ros.graph.launcher import run as run_graph

    path = config_path(args.config)
    names = nodes_in_config(path)
    print(f"l1flow run: {path} -> {', '.join(names)}", flush=True)
    return run_graph(path, names, overrides=args.param, duration=args.duration)
