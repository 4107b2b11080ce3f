"""``l1flow run``: start a graph's nodes from its parameter file, one process per node."""

from __future__ import annotations

import argparse
import sys

NAME = "run"
HELP = "start the nodes of a parameter file (policy, sim, teleop or a .yaml), one process each"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from l1flow_ros.graph.launcher import DISCOVERY_RANGES

    p.add_argument("config", help="graph name (policy | sim | teleop) or a ROS 2 parameter file")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    p.add_argument(
        "-p", "--param", action="append", default=[], metavar="NODE:NAME:=VALUE",
        help="override one parameter, e.g. inference_node:checkpoint:=/path/to/bundle",
    )
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID of the launcher and every node (default: the environment's, else 0)")
    p.add_argument("--discovery-range", choices=DISCOVERY_RANGES, default=None,
                   help="ROS_AUTOMATIC_DISCOVERY_RANGE (default: the environment's, else LOCALHOST: "
                        "no other machine sees the nodes; SUBNET for a controller on another machine)")


def run(args: argparse.Namespace) -> int:
    from l1flow_ros.config import read_parameter_file
    from l1flow_ros.graph import config_path, nodes_in_config
    from l1flow_ros.graph.launcher import run as run_graph

    try:
        path = config_path(args.config)
        read_parameter_file(path)  # not YAML: one line naming the file and the line
        names = nodes_in_config(path)
    except (ValueError, OSError) as e:
        print(f"l1flow run: {e}", file=sys.stderr)
        return 2
    print(f"l1flow run: {path} -> {', '.join(names)}", flush=True)
    return run_graph(path, names, overrides=args.param, duration=args.duration,
                     domain_id=args.domain_id, discovery_range=args.discovery_range)
