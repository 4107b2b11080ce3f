"""``l1flow eval``: seeded episodes of a bundle through the full node graph on the simulated arm."""

from __future__ import annotations

import argparse
import sys

NAME = "eval"
HELP = "evaluate a bundle through perception -> inference -> executor -> simulated arm"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="checkpoint bundle directory (exported for onnxruntime)")
    p.add_argument("--task", default=None, help="Meta-World v3 task (default: the bundle's training task, else the parameter file's)")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=100000, help="first episode seed is seed + 1")
    p.add_argument("--timeout", type=float, default=12.0, help="seconds per episode")
    p.add_argument("--config", default="sim", help="graph parameter file (default: sim)")
    p.add_argument("--backend", default=None, help="torch | onnxruntime | tensorrt (default: the file's)")
    p.add_argument("--plot", default=None, help="write a PNG: episode 1 trajectory + latency histogram")
    p.add_argument("--json", default=None, help="write the results as JSON")
    p.add_argument("--one-process", action="store_true",
                   help="compose every node into this process instead (to compare; deploy one process per node)")
    p.add_argument("--node-log", default=None, help="write the nodes' output here (default: the terminal)")
    p.add_argument("--set", action="append", default=[], metavar="NODE:PARAM:=VALUE",
                   help="set a node parameter for this run, e.g. executor_node:splice:=replace or "
                        "inference_node:inject_delay_ms:=200 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from l1flow_ros.graph.evaluation import evaluate_graph, result_json

    if args.episodes < 1:
        print("l1flow eval: --episodes must be >= 1", file=sys.stderr)
        return 2
    task = args.task
    if task is None:  # the bundle's own task when its episodes recorded one, else the parameter file's
        from l1flow_ros.policy.manifest import BundleError, bundle_task, read_manifest

        try:
            task = bundle_task(read_manifest(args.bundle))
        except BundleError:
            task = None  # evaluate_graph reports the bundle's problem
    bad = [o for o in args.set if o.count(":") < 2 or ":=" not in o]
    if bad:
        print(f"l1flow eval: --set takes NODE:PARAM:=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    try:
        res = evaluate_graph(args.bundle, task, args.episodes, args.seed, args.timeout, args.config,
                             args.backend, args.plot, log_file=args.node_log,
                             composed=args.one_process, overrides=args.set)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"l1flow eval: {e}", file=sys.stderr)
        return 1
    print(res.table())
    if args.json:
        with open(args.json, "w") as f:
            f.write(result_json(res))
    return 0
