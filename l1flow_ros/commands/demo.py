"""``l1flow demo``: the simulated teleop-then-deploy loop on the bundled model.

1. teleop: the scripted Meta-World expert teleoperates the simulated arm through the
   node graph (sim_robot_node <- teleop_node, recorder_node writing MCAP episodes);
2. deploy: the bundled policy (models/default) runs the arm through perception ->
   inference -> executor for several seeded episodes;
3. report: success rate, latency and control jitter, and a PNG (episode 1's commanded vs
   executed trajectory, latency histogram).

Training your own policy from the recorded episodes is `l1flow pipeline`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "demo"
HELP = "simulated teleop-then-deploy demo on the bundled model (success, latency, jitter, plot)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--episodes", type=int, default=5, help="policy episodes")
    p.add_argument("--demos", type=int, default=2, help="teleoperated episodes recorded first (0: skip)")
    p.add_argument("--out", default="demo_out", help="folder for episodes, results and the plot")
    p.add_argument("--bundle", default=None, help="bundle to deploy (default: the bundled models/default)")
    p.add_argument("--backend", default=None, help="torch | onnxruntime | tensorrt (default: sim.yaml's)")


def run(args: argparse.Namespace) -> int:
    from l1flow_ros.graph import share_dir
    from l1flow_ros.graph.evaluation import evaluate_graph, result_json
    from l1flow_ros.policy.manifest import BundleError, bundle_task, read_manifest

    out = Path(args.out)
    bundle = Path(args.bundle) if args.bundle else share_dir() / "models" / "default"
    try:
        manifest = read_manifest(bundle)
    except BundleError as e:
        print(f"l1flow demo: {e}", file=sys.stderr)
        return 1
    task = bundle_task(manifest) or "button-press-v3"
    cams = tuple(manifest.observation.cameras)
    print(f"== l1flow demo: {task}, bundle {bundle.name} ({manifest.fingerprint}, sampler "
          f"{manifest.sampler.kind}:{manifest.sampler.steps})")
    if args.demos > 0:
        from l1flow_ros.graph.recording import record_demos_ros

        print(f"== 1. teleop: scripted expert drives the arm through the node graph, recording {args.demos} episodes")
        try:
            files = record_demos_ros(task, args.demos, out / "episodes", cams, (96, 96), seed=0, progress=False,
                                     expert_speed=0.5, log_file=out / "nodes_teleop.log")
        except (RuntimeError, ValueError) as e:
            print(f"l1flow demo: {e}", file=sys.stderr)
            return 1
        print(f"   {len(files)} MCAP episodes in {out / 'episodes'} (node output: {out / 'nodes_teleop.log'})")
    print(f"== 2. deploy: {args.episodes} seeded episodes, sim -> perception -> inference -> executor (500 Hz)")
    try:
        res = evaluate_graph(bundle, task, args.episodes, backend=args.backend, plot=out / "demo.png",
                             log_file=out / "nodes_deploy.log")
    except (RuntimeError, ValueError) as e:
        print(f"l1flow demo: {e}", file=sys.stderr)
        return 1
    print("== 3. results")
    print(res.table())
    (out / "results.json").write_text(result_json(res))
    print(f"plot: {out / 'demo.png'}   results: {out / 'results.json'}   node output: {out / 'nodes_deploy.log'}")
    return 0
