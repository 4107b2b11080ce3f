"""``l1flow faults``: fault injection through the real node graph (one process per node);
nothing unsafe may reach the arm."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile

NAME = "faults"
HELP = "inject faults into perception -> inference -> executor and check the arm stays safe"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", default="", help="comma-separated case names (default: all; --list shows them)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--markdown", default=None, help="write the table here (text above the generator marker is kept)")
    p.add_argument("--json", default=None, help="write the results as JSON")
    p.add_argument("--workdir", default=None, help="where the test bundles go (default: a temporary directory)")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID of the run (default: one from the process id, traffic on localhost only)")


def run(args: argparse.Namespace) -> int:
    # Before rclpy is imported: the run talks only to itself, never to a robot on the network.
    from l1flow_ros.graph.launcher import private_domain_id

    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None else private_domain_id(os.getpid()))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from l1flow_ros.graph import faults

    if args.list:
        for c in faults.CASES:
            print(f"{c.name:<30} {c.injected}")
        return 0
    try:
        cases = faults.select([c.strip() for c in args.cases.split(",") if c.strip()])
    except ValueError as e:
        print(f"l1flow faults: {e}", file=sys.stderr)
        return 2
    command = "l1flow faults " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 \
        else "l1flow faults"
    with tempfile.TemporaryDirectory(prefix="l1flow_faults_") as tmp:
        try:
            results, recording = faults.run_suite(cases, args.workdir or tmp)
        except (RuntimeError, ValueError) as e:
            print(f"l1flow faults: {e}", file=sys.stderr)
            return 1
    body = faults.markdown(results, command.strip(), recording)
    print(body)
    if args.markdown:
        faults.write_markdown(args.markdown, body)
    if args.json:
        with open(args.json, "w") as f:
            f.write(faults.results_json(results, command.strip(), recording))
    return 0 if faults.totals(results).ok and recording.ok else 1
