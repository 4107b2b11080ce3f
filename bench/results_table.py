"""The results table of ``l1flow pipeline`` runs: success through the node graph, and the
policies' latency measured side by side in one run.

    python bench/results_table.py runs/button-press-v3 runs/drawer-close-v3 ... [--out table.md]

For each run folder (made by ``l1flow pipeline --out``) it reads ``results.json`` (success over
seeded episodes, observation -> chunk latency in the full node graph) and times every method's
exported policy (``policy.onnx``: the whole sampler in one graph) and the shared encoder on
onnxruntime CPU, interleaved in rounds so every method sees the same machine state. The bar of
the teleop-then-deploy issue is checked per task: L1 Flow 2-step within 5 points of the FM
10-step teacher, at >= 4x lower policy latency, with >= 80 % success.

A "hold still" row per task is the floor: the same seeds and episode time limit with the arm
held where the reset put it (no policy), run on the simulator directly. Some tasks succeed
on some seeds without any motion; a policy's success means something only above that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from l1flow_ros.policy import methods

# The pipeline's methods by bundle name, in registry order, each labelled by the sampler it ships with
# ("l1flow": "L1 Flow 2-step", ..., "ddim": "DDIM 10").
LABEL = {name: methods.label(m.default_sampler(None)) for name, m in methods.by_run_name().items()}
ORDER = tuple(LABEL)


def time_chunks(bundles: dict[str, Path], iters: int, rounds: int, threads: int) -> dict[str, list[float]]:
    """Milliseconds per call of every bundle's policy graph and of the (shared) encoder,
    interleaved in ``rounds`` (onnxruntime CPU)."""
    from l1flow_ros.inference.backends import noise_shape, open_encoder, open_policy
    from l1flow_ros.inference.bench import Row, measure_interleaved

    rng = np.random.default_rng(0)
    runs = []
    for m, d in bundles.items():
        pol = open_policy(d, "onnxruntime", threads=threads)
        cond = rng.standard_normal((1, pol.cond_dim), dtype=np.float32)
        noise = rng.standard_normal(noise_shape(pol.sampler, pol.horizon, pol.action_dim), dtype=np.float32)
        pol.warmup(10)
        runs.append((Row(m, "onnxruntime-cpu", True), (lambda p=pol, c=cond, n=noise: p.run(c, n))))
    enc = open_encoder(next(iter(bundles.values())), "onnxruntime", threads=threads)
    obs = {k: rng.standard_normal(s).astype(np.float32) for k, s in enc.input_shapes.items()}
    enc.warmup(10)
    runs.append((Row("encoder", "onnxruntime-cpu", True), (lambda: enc.run(obs))))
    return {row.sampler: row.samples_ms for row in measure_interleaved(runs, iters, rounds, log=lambda _: None)}


def hold_still(task: str, seeds: list[int], timeout_s: float) -> int:
    """Episodes of ``seeds`` that succeed within ``timeout_s`` with the arm held at its reset pose."""
    from l1flow_ros.sim.metaworld_env import MetaWorldSim, SimConfig

    sim = MetaWorldSim(SimConfig(task=task, cameras=()))
    try:
        steps = int(round(timeout_s / sim.dt))
        n = 0
        for seed in seeds:
            sim.reset(seed)
            n += any(sim.step().success for _ in range(steps))
        return n
    finally:
        sim.close()


def task_rows(run: Path, iters: int, rounds: int, threads: int) -> tuple[str, list[dict], float]:
    results = {r["method"]: r for r in json.loads((run / "results.json").read_text())}
    methods = [m for m in ORDER if m in results]
    bundles = {m: run / "bundles" / m for m in methods}
    lat = time_chunks(bundles, iters, rounds, threads)
    enc = float(np.median(lat["encoder"]))
    task = results[methods[0]]["task"]
    rows = []
    for m in methods:
        r = results[m]
        rows.append({
            "method": m,
            "sampler": r["sampler"],
            "successes": r["successes"],
            "episodes": r["episodes"],
            "success_rate": r["success_rate"],
            "policy_ms_p50": float(np.median(lat[m])),
            "policy_ms_p99": float(np.percentile(lat[m], 99)),
            "chunk_ms_p50": float(np.median(lat[m])) + enc,
            "graph_obs_to_chunk_ms_p50": r["chunk_latency_ms_p50"],
            "graph_obs_to_chunk_ms_p99": r["chunk_latency_ms_p99"],
            "graph_obs_to_embedding_ms_p50": r.get("embedding_latency_ms_p50", float("nan")),
        })
    return task, rows, enc


def bar(rows: list[dict]) -> str:
    by = {r["method"]: r for r in rows}
    if "l1flow" not in by or "fm" not in by:
        return "n/a (needs l1flow and fm)"
    l1, fm = by["l1flow"], by["fm"]
    gap = 100 * (fm["success_rate"] - l1["success_rate"])
    speed = fm["chunk_ms_p50"] / l1["chunk_ms_p50"]
    ok = gap <= 5 and speed >= 4 and l1["success_rate"] >= 0.8
    return (f"{'met' if ok else 'NOT met'}: L1 Flow {100 * l1['success_rate']:.0f} % vs FM {100 * fm['success_rate']:.0f} % "
            f"({gap:+.0f} points for FM), {speed:.1f}x lower chunk latency")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="pipeline run folders")
    p.add_argument("--iters", type=int, default=50, help="calls per method per round")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds (many short ones follow a drifting machine)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (the sim graph's setting)")
    p.add_argument("--seed", type=int, default=100000, help="the evaluation's --seed (episodes used seed + 1 ...)")
    p.add_argument("--timeout", type=float, default=12.0, help="the evaluation's episode time limit (s)")
    p.add_argument("--out", help="also write the markdown here")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    lines = [
        "| task | method | sampler | success | chunk latency p50 ms (policy + encoder) | vs FM 10 | "
        "policy p50 / p99 ms | in the graph: obs -> embedding p50, obs -> chunk p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    bars, everything = [], []
    for run in args.runs:
        task, rows, enc = task_rows(Path(run), args.iters, args.rounds, args.threads)
        fm = next((r for r in rows if r["method"] == "fm"), None)
        for r in rows:
            ratio = f"{fm['chunk_ms_p50'] / r['chunk_ms_p50']:.1f}x faster" if fm else ""
            if r is fm:
                ratio = "1x"
            lines.append(
                f"| {task} | {LABEL.get(r['method'], r['method'])} | {r['sampler']} | "
                f"{r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f} %) | "
                f"{r['chunk_ms_p50']:.2f} | {ratio} | {r['policy_ms_p50']:.2f} / {r['policy_ms_p99']:.2f} | "
                f"{r['graph_obs_to_embedding_ms_p50']:.0f}, {r['graph_obs_to_chunk_ms_p50']:.0f} / "
                f"{r['graph_obs_to_chunk_ms_p99']:.0f} |"
            )
        n = max(r["episodes"] for r in rows)
        still = hold_still(task, [args.seed + 1 + k for k in range(n)], args.timeout)
        lines.append(f"| {task} | hold still (no policy) | - | {still}/{n} ({100 * still / n:.0f} %) | | | | |")
        bars.append(f"- {task}: {bar(rows)} (encoder {enc:.2f} ms p50)")
        everything.append({"task": task, "encoder_ms_p50": enc, "rows": rows, "hold_still_successes": still,
                           "hold_still_episodes": n})
    text = "\n".join(lines + ["", *bars])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
