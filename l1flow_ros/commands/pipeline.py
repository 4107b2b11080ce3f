"""``l1flow pipeline``: scripted teleop -> record -> dataset -> train -> distil -> export -> deploy -> evaluate.

    l1flow pipeline --task button-press-v3 --demos 40

Every stage is the same command a user would run by hand (record, dataset build,
train, distill, export, eval), in order, into one run folder:

    <out>/episodes/       MCAP episodes (scripted expert teleoperating through the node graph)
    <out>/store.zarr      training store (points from the depth camera + proprioception)
    <out>/bundles/<m>/    one bundle per method, exported to ONNX
    <out>/results.json    success / latency per method, evaluated through the node graph

Methods: those of ``l1flow_ros.policy.methods`` (references such as regression left
out), each named after the sampler its bundle ships with: l1flow (L1 Flow, 2-step),
imle (1-step student of the fm teacher), ofp (1-step, self-distilled from the l1flow
bundle), fm (flow-matching teacher, 10-step), ddim (DDPM-trained, DDIM 10). A
distilled method's teacher is trained too, whether listed or not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from l1flow_ros.commands.record import expert_speed_arg, resolve_expert_speed
from l1flow_ros.policy import methods as registry

NAME = "pipeline"
HELP = "teleop -> record -> dataset -> train -> distil -> export -> deploy -> evaluate, on one Meta-World task"

METHODS = tuple(registry.by_run_name())  # bundle names: l1flow, imle, ofp, fm, ddim


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="a Meta-World v3 task, e.g. drawer-open-v3 (any whose scripted expert solves it at "
                   "some speed: --expert-speed auto finds it, or names the task where none does)")
    p.add_argument("--demos", type=int, default=40, help="scripted demonstrations to record")
    p.add_argument("--out", default=None, help="run folder (default runs/<task>)")
    p.add_argument("--methods", default="l1flow,imle", help=f"comma list of {','.join(METHODS)}")
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--distill-steps", type=int, default=1500)
    p.add_argument("--imle-pool", type=int, default=16,
                   help="IMLE: teacher samples drawn once per training item (0 = fresh every step, slower)")
    p.add_argument("--expert-speed", type=expert_speed_arg, default="auto",
                   help="the scripted expert's speed in (0, 1] for the demonstrations; auto (default) = the "
                        "slowest of 0.5, 0.75, 1 at which it solves 4 of 5 seeds of the task")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per method")
    p.add_argument("--episode-timeout", type=float, default=12.0)
    p.add_argument("--cameras", nargs="+", default=["corner"])
    p.add_argument("--num-points", type=int, default=128, help="fused points from the cameras' depth (0 = none)")
    p.add_argument("--rgb", action="store_true", help="also each camera's colour image through the CNN")
    p.add_argument("--point-color", action="store_true", help="the fused points carry their colour")
    p.add_argument("--voxel-size", type=float, default=0.01, help="voxel grid of the fusion (m)")
    p.add_argument("--down-dims", default="32,64,128", help="U-Net widths (small: trains on 2 CPU cores)")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--prefix-train", action="store_true",
                   help="train and distil with a prefix input (real-time chunking, see l1flow train --help)")
    p.add_argument("--prefix-soft", action="store_true",
                   help="--prefix-train with the prefix input over the whole overlap (l1flow train --help)")
    p.add_argument("--offline-record", action="store_true",
                   help="record by stepping the simulator directly (faster, no ROS) instead of the node graph")
    p.add_argument("--resume", action="store_true",
                   help="keep what an earlier run into the same folder finished (episodes, store, bundles, "
                        "exports, evaluations) and carry on from there; training resumes from its last save")


def _cli(argv: list[str]) -> None:
    from l1flow_ros.cli import main

    print("$ l1flow " + " ".join(argv), flush=True)
    rc = main(argv)
    if rc:
        raise RuntimeError(f"'l1flow {' '.join(argv)}' failed with exit code {rc}")


def _dataset_config(path: Path, cameras: list[str], num_points: int, rgb: bool = False, point_color: bool = False,
                    voxel_size: float = 0.01) -> None:
    """The simulated arm's dataset config: fused points from the cameras' depth (coloured or
    not), each camera's colour image when ``rgb``, and the end effector."""
    import dataclasses
    import json

    import yaml

    from l1flow_ros.data.dataset_build import sim_dataset_config

    cfg = sim_dataset_config(tuple(cameras), num_points=int(num_points))
    obs = dataclasses.replace(cfg.observation, use_rgb=bool(rgb), point_color=bool(point_color),
                              voxel_size=float(voxel_size))
    cfg = dataclasses.replace(cfg, observation=obs)
    plain = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists for YAML
    path.write_text(yaml.safe_dump(plain, sort_keys=False))


def run(args: argparse.Namespace) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # the stage headers show even when a stage fails
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        print(f"l1flow pipeline: unknown method(s) {bad}; choose from {METHODS}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    try:
        results = _pipeline(args, methods, out)
    except (RuntimeError, ValueError) as e:
        print(f"l1flow pipeline: {e}", file=sys.stderr)
        return 1
    print(f"\n== {args.task}: {args.demos} demos, {time.monotonic() - t_start:.0f} s in all")
    print(format_table(results))
    return 0


def format_table(results: list[dict]) -> str:
    head = "| method | sampler | success | obs->chunk p50 / p99 (ms) | inference p50 (ms) |\n|---|---|---|---|---|"
    rows = [
        f"| {r['method']} | {r['sampler']} | {r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f} %) "
        f"| {r['chunk_latency_ms_p50']:.1f} / {r['chunk_latency_ms_p99']:.1f} | {r['inference_ms_p50']:.2f} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def _pipeline(args: argparse.Namespace, methods: list[str], out: Path) -> list[dict]:
    from dataclasses import asdict

    from l1flow_ros.graph.evaluation import evaluate_graph

    episodes, store, bundles = out / "episodes", out / "store.zarr", out / "bundles"
    resume = bool(args.resume)
    # A stage's marker file is written only once the stage finished; --resume skips those stages.
    print(f"== 1. teleop + record: {args.demos} scripted demonstrations of {args.task}")
    if resume and (out / ".recorded").is_file():
        print("   (done in an earlier run)")
    else:
        speed = resolve_expert_speed(args.task, args.expert_speed)
        rec = ["record", "--task", args.task, "--demos", str(args.demos), "--out", str(episodes),
               "--expert-speed", str(speed), "--quiet", "--cameras", *args.cameras]
        _cli(rec + (["--offline"] if args.offline_record else []))
        (out / ".recorded").write_text(f"{args.demos}\n")
    print("== 2. dataset")
    if resume and (out / ".dataset").is_file():
        print("   (done in an earlier run)")
    else:
        cfg = out / "dataset.yaml"
        _dataset_config(cfg, args.cameras, args.num_points, args.rgb, args.point_color, args.voxel_size)
        _cli(["dataset", "build", str(episodes), "--out", str(store), "--config", str(cfg), "--quiet"])
        (out / ".dataset").write_text("ok\n")
    common = ["--data", str(store), "--batch-size", "64", "--lr", "3e-4", "--no-progress", "--log-every", "100"]
    if resume:
        common.append("--resume")  # continues from OUT/train_state.pt; a finished run is only re-saved
    if args.prefix_train or args.prefix_soft:
        common.append("--prefix-soft" if args.prefix_soft else "--prefix-train")
    arch = ["--down-dims", args.down_dims, "--embed-dim", str(args.embed_dim)]
    warm = str(max(1, min(100, args.train_steps // 10)))
    by_name = registry.by_run_name()
    teacher_of = {m: registry.get(by_name[m].teacher).run_name for m in methods if by_name[m].distill}
    need = set(methods) | set(teacher_of.values())
    print("== 3. train")
    for m, method in by_name.items():
        if m in need and not method.distill:
            if resume and (bundles / m / ".trained").is_file():
                print(f"   {m}: done in an earlier run")
                continue
            _cli(["train", "--objective", method.name, "--out", str(bundles / m), "--steps", str(args.train_steps),
                  "--warmup-steps", warm, "--save-every", str(min(500, args.train_steps)), *common, *arch])
            (bundles / m / ".trained").write_text(f"{args.train_steps}\n")
    print("== 4. distil")
    dwarm = str(max(1, min(100, args.distill_steps // 10)))
    for m, method in by_name.items():
        if m in teacher_of:
            if resume and (bundles / m / ".trained").is_file():
                print(f"   {m}: done in an earlier run")
                continue
            pool = ["--teacher-pool", str(args.imle_pool)] if method.teacher_pool is not None else []
            _cli(["distill", "--method", method.name, "--teacher", str(bundles / teacher_of[m]),
                  "--out", str(bundles / m), "--steps", str(args.distill_steps), "--warmup-steps", dwarm,
                  "--save-every", str(min(500, args.distill_steps)), *common, *pool])
            (bundles / m / ".trained").write_text(f"{args.distill_steps}\n")
    print("== 5. export")
    for m in methods:
        if resume and (bundles / m / ".exported").is_file():
            print(f"   {m}: done in an earlier run")
            continue
        _cli(["export", str(bundles / m)])
        (bundles / m / ".exported").write_text("ok\n")
    print("== 6. deploy + evaluate through the node graph")
    results_path = out / "results.json"
    earlier = {}
    if resume and results_path.is_file():
        earlier = {r["method"]: r for r in json.loads(results_path.read_text())
                   if r.get("episodes") == args.episodes}
    results = []
    for m in methods:
        if m in earlier:
            print(f"   {m}: evaluated in an earlier run")
            results.append(earlier[m])
            continue
        res = evaluate_graph(bundles / m, args.task, args.episodes, episode_timeout=args.episode_timeout,
                             backend="onnxruntime", log=lambda s, m=m: print(f"   [{m}] {s}", flush=True),
                             log_file=out / f"nodes_eval_{m}.log")
        results.append({"method": m, **asdict(res)})
        results_path.write_text(json.dumps(results, indent=2))  # after each method: a stop loses one at most
        print(res.table())
    text = json.dumps(results, indent=2)  # every method, in order (earlier runs' too)
    if not results_path.is_file() or results_path.read_text() != text:
        results_path.write_text(text)
    return results
