"""``l1flow soak``: the simulated graph (one process per node) looping episodes for a given
time; per window: success, each node's memory / fds / threads, DDS entities, obs -> chunk
p99, control period error p99 and missed ticks beside the machine's floor."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

NAME = "soak"
HELP = "run the simulated graph for a given time and report leaks and drift per window"


def _minutes(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 minutes, got {text}")
    return x


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default="package://l1flow_ros/models/default",
                   help="checkpoint bundle (exported for onnxruntime; default: the bundled model)")
    p.add_argument("--minutes", type=_minutes, default=30.0, help="measured time (default 30)")
    p.add_argument("--window", type=_minutes, default=5.0, help="window length in minutes (default 5)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds of episodes before the first window")
    p.add_argument("--task", default=None, help="Meta-World v3 task (default: the parameter file's)")
    p.add_argument("--seed", type=int, default=200000, help="first episode seed is seed + 1")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per episode")
    p.add_argument("--config", default="sim", help="graph parameter file (default: sim)")
    p.add_argument("--set", action="append", default=[], metavar="NODE:PARAM:=VALUE",
                   help="set a node parameter for this run (repeatable)")
    p.add_argument("--node-log", default=None, help="write the nodes' output here (default: the terminal)")
    p.add_argument("--markdown", default=None,
                   help="write the table into this file, between its soak markers (the rest stays; e.g. "
                        "docs/RELIABILITY.md)")
    p.add_argument("--json", default=None, help="write the results as JSON")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID of the run (default: one from the process id, traffic on localhost only)")


def run(args: argparse.Namespace) -> int:
    # Before rclpy is imported: the run talks only to itself.
    from l1flow_ros.graph.launcher import private_domain_id

    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None else private_domain_id(os.getpid()))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    bad = [o for o in args.set if o.count(":") < 2 or ":=" not in o]
    if bad:
        print(f"l1flow soak: --set takes NODE:PARAM:=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    if args.warmup < 0:
        print(f"l1flow soak: --warmup must be >= 0 s, got {args.warmup}", file=sys.stderr)
        return 2
    from l1flow_ros.graph import resolve_path
    from l1flow_ros.graph.soak import result_json, soak_graph, write_markdown
    from l1flow_ros.policy.manifest import BundleError

    command = "l1flow " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        res = soak_graph(resolve_path(args.bundle), args.minutes * 60.0, args.window * 60.0, args.warmup,
                         args.task, args.seed, args.timeout, args.config, log_file=args.node_log,
                         overrides=args.set)
    except (RuntimeError, ValueError, FileNotFoundError, BundleError) as e:
        print(f"l1flow soak: {e}", file=sys.stderr)
        return 1
    text = res.table(command)
    print(text)
    if args.markdown:
        write_markdown(args.markdown, text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(result_json(res))
    return 0 if res.passed else 1
