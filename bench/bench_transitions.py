"""Chunk transitions under inference delay: replace, cross-fade, temporal ensemble, prefix
inpainting and a prefix-trained network, side by side in one run.

``toy``: the rolling two-mode task (``l1flow_ros.policy.toy``, the rolling variant): from most
points both sides continue a demonstration, so a policy without memory picks a side again at
every chunk. Two L1 Flow bundles are trained with the real loop (plain, and with the prefix
input), exported, and run through the real parts: ``PolicyRunner`` on onnxruntime (the
exported graphs; the prefix graph with real-time chunking's weights) and ``ChunkScheduler``
(the executor's splicing, 50 Hz ticks), in simulated time: a chunk computed from the point at
``t_obs`` arrives ``d`` chunk steps later (d = 1 + the injected delay / dt: the measured delay
of an inference that takes a few ms). Reported per method and delay: the share of chunk
boundaries where the new chunk follows the other side than the one before it, and the largest
command velocity step at a boundary.

    python bench/bench_transitions.py toy --episodes 100

``graph``: the same five through the node graph on a Meta-World task, one process per node
(``l1flow eval``, the delay injected in the inference node, ``inject_delay_ms``): success over
seeded episodes, and per boundary (the executor's ``log_boundaries`` lines joined with the
inference node's ``log_chunks`` lines by observation stamp): when in the episode it came, the
executor's delay d against the prefix length imposed, and how much the splice changed the
plan's reference velocity and acceleration over the next chunk step. Reported: the largest
and the 95th percentile over the boundaries on a running plan (the chunks in flight from rest
at a start, and those drawn after the plan ran out, left out) and the largest over all of
them. The prefix-trained bundle is the plain one's recipe with ``--prefix-train``:

    l1flow pipeline --task button-press-v3 --methods l1flow --prefix-train --offline-record \
        --episodes 20 --out runs/prefix
    python bench/bench_transitions.py graph --plain models/default \
        --trained runs/prefix/bundles/l1flow --episodes 20 --out runs/transitions
    python bench/bench_transitions.py report runs/transitions/graph.json  # the tables again
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

DELAYS_MS = (0, 100, 200, 300)
# name -> (bundle, splice rule, prefix imposed)
TOY_METHODS = {
    "replace": ("plain", "replace", False),
    "crossfade": ("plain", "crossfade", False),
    "ensemble": ("plain", "ensemble", False),
    "prefix inpainting": ("plain", "replace", True),
    "prefix-trained": ("trained", "replace", True),
    "prefix-trained, soft": ("soft", "replace", True),  # --prefix-soft: the whole overlap as input
}


def train_toy_bundles(out: Path, steps: int, seed: int = 0) -> dict[str, Path]:
    """Plain, prefix-trained and soft-prefix-trained L1 Flow on the rolling toy, exported; their directories."""
    from l1flow_ros.inference.export import export_bundle
    from l1flow_ros.policy import methods, toy
    from l1flow_ros.policy.config import TrainConfig
    from l1flow_ros.policy.model import prediction_for
    from l1flow_ros.policy.prefix import PrefixTrainConfig
    from l1flow_ros.policy.train import ObjectiveConfigs, train

    ds = toy.RollingToyDataset(2048, seed=seed)
    dirs = {}
    for name, prefix, soft in (("plain", False, False), ("trained", True, False), ("soft", True, True)):
        cfgs = ObjectiveConfigs(prefix=PrefixTrainConfig(enabled=prefix, soft=soft))
        sampler = methods.get("l1flow").default_sampler(cfgs)
        model_cfg = dataclasses.replace(toy.ROLLING_MODEL, prediction=prediction_for(sampler.kind))
        cfg = TrainConfig(objective="l1flow", steps=steps, batch_size=256, lr=5e-3, warmup_steps=50,
                          ema_decay=0.995, save_every=10**9, log_every=100, seed=seed, device="cpu")
        d = out / name
        t0 = time.monotonic()
        train(ds, ds.normalizer, toy.OBS_SPEC, toy.ROLLING_ACTION, d, cfg, model_cfg=model_cfg, sampler=sampler,
              cfgs=cfgs, progress=False)
        export_bundle(d)
        print(f"trained {name} in {time.monotonic() - t0:.0f} s", flush=True)
        dirs[name] = d
    return dirs


def toy_episode(runner, splice: str, prefix: bool, delay_steps: int, seed: int) -> dict:
    """One rolled-out episode; chunk sides, boundary switches and velocity steps."""
    from l1flow_ros.control.safety import Limits
    from l1flow_ros.control.scheduler import ChunkScheduler, SchedulerConfig
    from l1flow_ros.policy import toy
    from l1flow_ros.spec import Tail

    act = toy.ROLLING_ACTION
    dt_ns = int(act.dt * 1e9)
    tick_ns = dt_ns // 5
    inf = np.full(2, np.inf)
    sched = ChunkScheduler(SchedulerConfig(names=act.names, splice=splice, max_age_s=5.0, max_future_s=1.0),
                           Limits(np.full(2, -np.inf), np.full(2, np.inf), inf, inf))
    rng = np.random.default_rng(seed)
    start = np.array([0.0, rng.uniform(-0.5, 0.5)])  # well inside the data's y0: both sides open
    sched.reset(start, 0)
    runner._rng = np.random.Generator(np.random.PCG64(seed))  # the episode's own noise
    t, p = 0, start.copy()
    sides, vs, arrivals = [], [], []
    end_ns = toy.ROLLING_STEPS * dt_ns
    arrival_ns, pending, next_obs = None, None, 0
    while t <= end_ns:
        if t >= next_obs and pending is None:  # observe and start a chunk
            emb = runner.encode({"proprio": p[None].astype(np.float32)})
            k_tail, a_tail = sched.tail(t - 300_000_000)
            tail = Tail(k_tail, a_tail) if k_tail.size else None
            chunk = runner.act(emb, t, tail, delay_steps if prefix and tail is not None else None)
            sides.append(toy.chunk_side(p, chunk.actions))
            pending, arrival_ns = chunk, t + delay_steps * dt_ns + 1
            next_obs = t + act.n_action_steps * dt_ns
        if pending is not None and t >= arrival_ns:
            try:
                sched.add_chunk(pending, t)
                arrivals.append(len(vs))
            except ValueError:
                pass  # nothing executable left: the arm holds on what it has
            pending = None
        p, v, _ = sched.command(t + 1)
        vs.append(v)
        t += tick_ns
    vs = np.asarray(vs)  # (T, 2)
    dv, acc = boundary_steps(vs, arrivals[1:], 5, tick_ns * 1e-9)  # the first chunk starts from rest
    pairs = [(a, b) for a, b in zip(sides, sides[1:]) if a is not None and b is not None]
    return {"boundaries": len(pairs), "switches": sum(a != b for a, b in pairs),
            "undecided": sum(s is None for s in sides), "chunks": len(sides),
            "max_velocity_step": dv, "max_acceleration": acc}


def boundary_steps(v: np.ndarray, at: list[int], window: int, tick_s: float) -> tuple[float, float]:
    """Largest command velocity change within ``window`` ticks after a splice (against the tick
    before it) and largest acceleration there, over the splices at tick indices ``at``."""
    dv = acc = 0.0
    for i in at:
        if i < 1:
            continue
        seg = v[i - 1 : i + window + 1]
        dv = max(dv, float(np.max(np.abs(seg - seg[0]))))
        acc = max(acc, float(np.max(np.abs(np.diff(seg, axis=0)))) / tick_s)
    return dv, acc


def run_toy(args: argparse.Namespace) -> dict:
    from l1flow_ros.inference.runner import PolicyRunner
    from l1flow_ros.policy import toy

    out = Path(args.out or tempfile.mkdtemp(prefix="transitions-"))
    dirs = train_toy_bundles(out, args.steps)
    runners = {k: PolicyRunner.open(d, "onnxruntime", with_encoder=True, threads=1, warm_start=False)
               for k, d in dirs.items()}
    dt_ms = toy.ROLLING_ACTION.dt * 1e3
    results = {}
    for delay in args.delays:
        d = 1 + int(round(delay / dt_ms))
        for name, (bundle, splice, prefix) in TOY_METHODS.items():
            eps = [toy_episode(runners[bundle], splice, prefix, d, seed) for seed in range(args.episodes)]
            b = sum(e["boundaries"] for e in eps)
            results[(name, delay)] = {
                "d": d, "boundaries": b, "switch_pct": 100.0 * sum(e["switches"] for e in eps) / max(b, 1),
                "undecided_pct": 100.0 * sum(e["undecided"] for e in eps) / max(1, sum(e["chunks"] for e in eps)),
                "max_velocity_step": max(e["max_velocity_step"] for e in eps),
                "max_acceleration": max(e["max_acceleration"] for e in eps),
            }
            r = results[(name, delay)]
            print(f"{name:18s} {delay:3d} ms (d={d}): switches {r['switch_pct']:5.1f} % of {b} boundaries, "
                  f"neither side {r['undecided_pct']:4.1f} %, boundary velocity step {r['max_velocity_step']:.2f} /s, "
                  f"acceleration {r['max_acceleration']:.1f} /s^2",
                  flush=True)
    # The demonstrator, memoryless: a fresh side at every chunk.
    print_toy_table(results, args.delays)
    (out / "toy.json").write_text(json.dumps({f"{k[0]}@{k[1]}": v for k, v in results.items()}, indent=1))
    return results


def print_toy_table(results: dict, delays) -> None:
    head = "| method | " + " | ".join(f"{d} ms: switches / max Δv" for d in delays) + " |"
    print(head)
    print("|---|" + "---|" * len(delays))
    for name in TOY_METHODS:
        cells = []
        for delay in delays:
            r = results[(name, delay)]
            cells.append(f"{r['switch_pct']:.1f} % / {r['max_velocity_step']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


# name -> (bundle, executor splice rule, inference prefix conditioning); the last one also
# keeps the executor's default splice (cross-fade) under the prefix.
GRAPH_METHODS = {**{k: v for k, v in TOY_METHODS.items() if v[0] != "soft"},
                 "prefix-trained + crossfade": ("trained", "crossfade", True)}


def ensure_prefix_graph(bundle: Path, work: Path) -> Path:
    """``bundle`` itself when it ships the prefix graph, else an exported copy of it in ``work``."""
    import shutil

    from l1flow_ros.inference.backends import has_prefix_graph
    from l1flow_ros.inference.export import export_bundle
    from l1flow_ros.policy.manifest import read_manifest

    if has_prefix_graph(read_manifest(bundle)):
        return bundle
    copy = work / bundle.name
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(bundle, copy)
    export_bundle(copy)
    return copy


def cell_events(log: Path) -> list[dict]:
    """Every chunk the executor accepted in one run (its ``log_boundaries`` lines), each joined
    with how the inference node drew it (its ``log_chunks`` line, by the observation stamp)."""
    from l1flow_ros.control.stream import parse_boundary_line
    from l1flow_ros.inference.service import CHUNK_TAG

    drawn: dict[int, dict] = {}
    events = []
    for line in log.read_text(errors="replace").splitlines():
        at = line.find(CHUNK_TAG)
        if at >= 0:
            kv = dict(f.split("=", 1) for f in line[at + len(CHUNK_TAG):].split() if "=" in f)
            drawn[int(kv["t_obs_ns"])] = {k: float(v) for k, v in kv.items() if k != "t_obs_ns"}
            continue
        e = parse_boundary_line(line)
        if e is not None:
            events.append(dataclasses.asdict(e))
    for e in events:
        d = drawn.get(e["t_obs_ns"], {})
        e["prefix_steps"] = int(d.get("delay_steps", -2))  # -1: drawn without a prefix; -2: not logged
        e["tail_age_s"] = d.get("tail_age_s", float("nan"))
        e["tail_end_after_obs_s"] = d.get("tail_end_after_obs_s", float("nan"))
        e["age_at_start_s"] = d.get("age_at_start_s", float("nan"))
    return events


def boundary_figures(events: list[dict]) -> dict:
    """The boundary statistics of one run: over every boundary (the first chunk after each
    start from rest is none), and over those on a running plan only: the chunk was observed at
    or after the arrival of its episode's first chunk (the executor's ``on_plan``) and drawn
    while the executor's tail was fresh (inference saw a plan). Left out: the chunks in flight
    from rest when the first one arrived (``from_rest``), and those drawn after the running plan
    had run out (``plan_ended``: no fresh tail, nothing for a prefix to agree with)."""
    def stats(es):
        dv = np.array([e["velocity_step"] for e in es])
        acc = np.array([e["acceleration"] for e in es])
        return {"n": len(es), "dv_max": float(dv.max()) if dv.size else float("nan"),
                "dv_p95": float(np.percentile(dv, 95)) if dv.size else float("nan"),
                "acc_max": float(acc.max()) if acc.size else float("nan")}
    b = [e for e in events if e["boundary"]]
    executor_on = [e for e in b if e["on_plan"]]
    on = [e for e in executor_on if e["tail_age_s"] >= 0]  # NaN (not logged) compares False
    prefixed = [e for e in on if e["prefix_steps"] >= 0]
    return {"all": stats(b), "on_plan": stats(on), "from_rest": len(b) - len(executor_on),
            "plan_ended": len(executor_on) - len(on), "left_out": len(b) - len(on),
            "on_plan_prefixed": len(prefixed),
            # the prefix the inference imposed against the steps the executor saw run meanwhile
            "prefix_short": sum(e["delay_steps"] > e["prefix_steps"] for e in prefixed),
            "prefix_long": sum(e["delay_steps"] < e["prefix_steps"] for e in prefixed),
            "delay_steps_p50": float(np.median([e["delay_steps"] for e in b])) if b else float("nan")}


def print_events(name: str, delay: int, events: list[dict], top: int) -> None:
    """The ``top`` largest boundary steps of a run, with what the executor and inference saw."""
    b = sorted((e for e in events if e["boundary"]), key=lambda e: -e["velocity_step"])[:top]
    for e in b:
        print(f"    {name} {delay} ms: dv {e['velocity_step']:.3f} acc {e['acceleration']:.1f} | chunk "
              f"{e['index']} of its episode, {e['since_start_s']:.2f} s after the start, on plan "
              f"{int(e['on_plan'])}, executor d {e['delay_steps']}, prefix d {e['prefix_steps']}, tail age "
              f"{e['tail_age_s']:.3f} s, obs age at start {e['age_at_start_s']:.3f} s", flush=True)


def run_graph(args: argparse.Namespace) -> list[dict]:
    """Every method and delay through the node graph (``l1flow eval``), one graph per run."""
    from dataclasses import asdict

    from l1flow_ros.graph.evaluation import evaluate_graph

    work = Path(args.out or tempfile.mkdtemp(prefix="transitions-graph-"))
    work.mkdir(parents=True, exist_ok=True)
    methods = {k: v for k, v in GRAPH_METHODS.items() if not args.methods or k in args.methods}
    if any(b == "trained" for b, _, _ in methods.values()) and not args.trained:
        raise SystemExit("--trained (the prefix-trained bundle) is needed for the prefix-trained rows")
    bundles = {"plain": ensure_prefix_graph(Path(args.plain).resolve(), work),
               "trained": Path(args.trained).resolve() if args.trained else None}
    rows = []
    for delay in args.delays:
        for name, (bundle, splice, prefix) in methods.items():
            sets = [f"executor_node:splice:={splice}", f"inference_node:prefix_conditioning:={str(prefix).lower()}",
                    f"inference_node:inject_delay_ms:={float(delay)}", "executor_node:log_boundaries:=true",
                    "inference_node:log_chunks:=true"]
            log = work / f"nodes-{name.replace(' ', '_')}-{delay}.log"
            log.unlink(missing_ok=True)
            res = evaluate_graph(bundles[bundle], args.task, args.episodes, args.seed, args.timeout,
                                 log=lambda *_: None, log_file=log, overrides=sets)
            events = cell_events(log)
            fig = boundary_figures(events)
            row = {"method": name, "delay_ms": delay, **asdict(res), "figures": fig, "events": events}
            rows.append(row)
            a, o = fig["all"], fig["on_plan"]
            print(f"{name:18s} {delay:3d} ms: {res.successes}/{res.episodes}, d p95 {res.inference_delay_steps_p95}, "
                  f"boundaries {a['n']}: velocity step max {a['dv_max']:.3f} p95 {a['dv_p95']:.3f} m/s; on a plan "
                  f"{o['n']} (left out: from rest {fig['from_rest']}, plan ended {fig['plan_ended']}): max {o['dv_max']:.3f} p95 {o['dv_p95']:.3f} m/s, "
                  f"acceleration max {o['acc_max']:.1f}; prefixed {fig['on_plan_prefixed']}, prefix shorter "
                  f"than the executor's d {fig['prefix_short']}, longer {fig['prefix_long']}; obs -> chunk p50 "
                  f"{res.chunk_latency_ms_p50:.0f} ms", flush=True)
            print_events(name, delay, events, args.top)
            (work / "graph.json").write_text(json.dumps(rows, indent=1))
    print_graph_table(rows, args.delays, methods)
    return rows


def print_graph_table(rows: list[dict], delays, methods=GRAPH_METHODS) -> None:
    by = {(r["method"], r["delay_ms"]): r for r in rows}
    print("| method | " + " | ".join(f"{d} ms: success / Δv on a plan: max / p95 / Δv max of all (m/s)"
                                    for d in delays) + " |")
    print("|---|" + "---|" * len(delays))
    for name in methods:
        cells = []
        for d in delays:
            r = by.get((name, d))
            if r is None:
                cells.append("–")
                continue
            f = r["figures"]
            cells.append(f"{r['successes']}/{r['episodes']} / {f['on_plan']['dv_max']:.3f} / "
                         f"{f['on_plan']['dv_p95']:.3f} / {f['all']['dv_max']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def run_report(args: argparse.Namespace) -> None:
    """The tables of a finished (or partial) ``graph`` run, from its graph.json (re-derived from
    the events, so a change of the statistic needs no re-run)."""
    rows = json.loads(Path(args.json).read_text())
    for r in rows:
        r["figures"] = boundary_figures(r["events"])
    delays = sorted({r["delay_ms"] for r in rows})
    methods = [m for m in GRAPH_METHODS if any(r["method"] == m for r in rows)]
    print_graph_table(rows, delays, methods)
    print()
    by = {(r["method"], r["delay_ms"]): r for r in rows}
    print("| method | " + " | ".join(f"{d} ms: boundaries on a plan / left out (from rest + plan ended) / "
                                    "executor d p50 / max acc on a plan (m/s²)" for d in delays) + " |")
    print("|---|" + "---|" * len(delays))
    for name in methods:
        cells = []
        for d in delays:
            r = by.get((name, d))
            f = r and r["figures"]
            cells.append("–" if r is None else f"{f['on_plan']['n']} / {f['from_rest']} + {f['plan_ended']} / "
                         f"{f['delay_steps_p50']:.0f} / {f['on_plan']['acc_max']:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    t = sub.add_parser("toy", help="the rolling two-mode toy: mode switches at chunk boundaries")
    t.add_argument("--episodes", type=int, default=100)
    t.add_argument("--steps", type=int, default=3000, help="training steps of each bundle")
    t.add_argument("--delays", type=int, nargs="+", default=list(DELAYS_MS), help="injected delay, ms")
    t.add_argument("--out", default="", help="where the bundles and toy.json go (default: a temp dir)")
    g = sub.add_parser("graph", help="a Meta-World task through the node graph, delay injected in inference")
    g.add_argument("--plain", default="models/default", help="an L1 Flow bundle (re-exported with the prefix "
                                                             "graph into --out when it has none)")
    g.add_argument("--trained", default="", help="the same recipe trained with --prefix-train")
    g.add_argument("--task", default="button-press-v3")
    g.add_argument("--episodes", type=int, default=20)
    g.add_argument("--seed", type=int, default=100000)
    g.add_argument("--timeout", type=float, default=10.0, help="seconds per episode")
    g.add_argument("--delays", type=int, nargs="+", default=list(DELAYS_MS), help="injected delay, ms")
    g.add_argument("--out", default="", help="work folder (copies, the nodes' logs per run, graph.json)")
    g.add_argument("--methods", nargs="+", default=[], help=f"a subset of {list(GRAPH_METHODS)}")
    g.add_argument("--top", type=int, default=3, help="largest boundary steps of each run to print")
    r = sub.add_parser("report", help="the tables of a graph run again, from its graph.json")
    r.add_argument("json", help="graph.json of a graph run")
    args = ap.parse_args()
    if args.part == "toy":
        run_toy(args)
    elif args.part == "report":
        run_report(args)
    else:
        run_graph(args)


if __name__ == "__main__":
    main()
