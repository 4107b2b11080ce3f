"""Mode coverage and sampling latency of every method, side by side in one run.

Trains each registered method (``l1flow_ros.policy.methods``) on the two-mode toy task (``l1flow_ros.policy.toy``) with the
real training loop, then reports for each sampler:
  - (every sampler kind of each method at its default steps, and L1 Flow with 10 Euler steps)
  - near-mode share (>= 90% is the bar), left-mode share (30-70% is the bar),
    mean RMS distance to the nearest mode;
  - network evaluations per chunk (NFE);
  - sampling latency (encode + sample, batch 1, torch on CPU), on the toy
    network and on the package's default network size (U-Net 64/128/256,
    H = 16, A = 4), median over repeated calls, with the ratio to FM 10-step.

    python bench/bench_policy.py                 # full run
    python bench/bench_policy.py --scale 0.5     # fewer training steps (quicker, rougher)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l1flow_ros.inference.backends import parse_sampler
from l1flow_ros.policy import methods, toy
from l1flow_ros.policy.bundle import load_bundle
from l1flow_ros.policy.model import ModelConfig, PolicyModel
from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

TEACHER = "fm"  # every student distils the FM bundle here (OFP starts from its weights)
# Beyond every kind at its default steps: the same L1 Flow network integrated by 10 Euler steps.
EXTRA = (("l1flow", "l1flow:10"),)


def rows_to_draw() -> list[tuple[str, str]]:
    """(method, sampler string) per table row: each method's sampler kinds, then EXTRA after its method."""
    rows = []
    for m in methods.METHODS.values():
        rows += [(m.name, f"{k.name}:{k.default_steps}") for k in m.kinds]
        rows += [e for e in EXTRA if e[0] == m.name]
    return rows


@torch.no_grad()
def latency_ms(model: PolicyModel, obs: dict[str, torch.Tensor], repeats: int) -> float:
    noise = torch.randn(model.noise_shape(1))
    for _ in range(3):
        model.sample(model.encode(obs), noise)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.sample(model.encode(obs), noise)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def default_size_model(sampler: SamplerSpec) -> PolicyModel:
    """The package's default network on a Meta-World-like spec (random weights: latency only)."""
    obs = ObservationSpec(proprio_names=("ee_x", "ee_y", "ee_z", "gripper"), use_rgb=False, n_obs_steps=2)
    act = ActionSpec(names=("ee_x", "ee_y", "ee_z", "gripper"), horizon=16, n_action_steps=8)
    return PolicyModel(obs, act, sampler, ModelConfig(prediction=methods.prediction_for(sampler.kind))).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--scale", type=float, default=2.0, help="training steps relative to the test's (default 2)"
    )
    p.add_argument("--samples", type=int, default=1000, help="start positions evaluated per method")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per method")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="keep the bundles here (default: a temporary directory)")
    p.add_argument("--reuse", action="store_true", help="load bundles already in --out instead of training")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_policy_"))

    trained = {}
    # Teachers first, then the students.
    order = [TEACHER, *(m for m in methods.trained() if m != TEACHER), *methods.distilled()]
    for objective in order:
        steps = max(1, int(toy.TOY_STEPS.get(objective, toy.DEFAULT_TOY_STEPS) * args.scale))
        teacher = work / TEACHER if methods.get(objective).distill else None
        if args.reuse and (work / objective / "manifest.json").is_file():
            trained[objective] = load_bundle(work / objective)
            print(f"loaded  {objective:10s} ({trained[objective][0].train['step']} steps)", flush=True)
            continue
        t0 = time.monotonic()
        trained[objective] = toy.train_toy(objective, work / objective, steps=steps, teacher_dir=teacher)
        print(f"trained {objective:10s} {steps:5d} steps in {time.monotonic() - t0:6.1f} s", flush=True)

    y0 = np.random.default_rng(123).uniform(-toy.Y0_RANGE, toy.Y0_RANGE, args.samples)
    obs_toy = {"proprio": torch.zeros(1, 1, 2)}
    obs_big = {"proprio": torch.zeros(1, 2, 4)}
    rows = []
    for objective, text in rows_to_draw():
        manifest, model = trained[objective]
        sampler = dataclasses.replace(parse_sampler(text, manifest.sampler), warm_start=False)
        label, nfe = methods.label(sampler), sampler.steps  # every sampler here: one network pass per step
        m = model.with_sampler(sampler)
        st = toy.mode_stats(y0, toy.sample_policy(m, manifest.normalizer_obj(), y0, seed=7))
        big = default_size_model(sampler)
        rows.append(
            (label, nfe, st, latency_ms(m, obs_toy, args.repeats), latency_ms(big, obs_big, args.repeats))
        )

    ref_toy = next(r[3] for r in rows if r[0] == "FM 10-step")
    ref_big = next(r[4] for r in rows if r[0] == "FM 10-step")
    print()
    print(
        "| method | NFE | near a mode | left share | mean error | toy net ms | x FM-10 | default net ms | x FM-10 | bar |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, nfe, st, lt, lb in rows:
        ok = "yes" if st.bimodal_ok else "no"
        print(
            f"| {label} | {nfe} | {st.near_mode:.1%} | {st.left:.1%} | {st.mean_error:.3f} | {lt:.2f} | "
            f"{lt / ref_toy:.2f} | {lb:.2f} | {lb / ref_big:.2f} | {ok} |"
        )
    print(f"\nbundles in {work}; torch {torch.__version__}, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
