"""``l1flow distill``: a one-step student from a trained teacher bundle.

    l1flow distill --method imle --teacher bundles/fm --data demos.zarr --out bundles/imle
    l1flow distill --method ofp  --teacher bundles/fm --data demos.zarr --out bundles/ofp

The student shares the teacher's specs and normaliser and starts from its
weights (IMLE: its encoder). ``imle`` needs a flow-matching (fm) teacher;
``ofp`` self-distils against its own EMA, from the teacher's weights when
one is given, else from scratch.
"""

from __future__ import annotations

import argparse

from l1flow_ros.policy import methods

NAME = "distill"
HELP = f"Distil a one-step student ({' | '.join(methods.distilled())}) from a teacher bundle."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from l1flow_ros.commands.train import add_loop_arguments
    from l1flow_ros.policy.methods.imle import ImleConfig
    from l1flow_ros.policy.methods.ofp import OfpConfig

    add_loop_arguments(parser)
    parser.add_argument(
        "--method", required=True, choices=methods.distilled(),
        help="; ".join(f"{m}: {methods.get(m).label}" for m in methods.distilled()),
    )
    parser.add_argument(
        "--teacher",
        help="teacher bundle (required for imle; ofp starts from it when given, else from scratch)",
    )
    i, o = ImleConfig(), OfpConfig()
    parser.add_argument(
        "--teacher-samples", type=int, default=i.teacher_samples, help="IMLE: m per observation"
    )
    parser.add_argument(
        "--student-samples", type=int, default=i.student_samples, help="IMLE: n per observation"
    )
    parser.add_argument("--teacher-steps", type=int, default=i.teacher_steps, help="IMLE: 0 = teacher's own")
    parser.add_argument(
        "--teacher-pool", type=int, default=i.teacher_pool,
        help="IMLE: draw K teacher samples per training item once, then m of them per step "
             "(several times cheaper; 0 = fresh teacher samples every step)",
    )
    parser.add_argument("--guidance", type=float, default=o.guidance, help="OFP: self-guidance weight")
    parser.add_argument("--warm-t", type=float, default=o.warm_t, help="OFP: warm-start time t_w")
    parser.add_argument(
        "--warm-share", type=float, default=o.warm_share, help="OFP: batch share from warm starts"
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from l1flow_ros.commands.train import prefix_config, run_training
    from l1flow_ros.data.store import ChunkDataset, compute_normalizer
    from l1flow_ros.policy.config import FlowTimeConfig
    from l1flow_ros.policy.manifest import read_manifest
    from l1flow_ros.policy.methods.imle import ImleConfig
    from l1flow_ros.policy.methods.ofp import OfpConfig
    from l1flow_ros.policy.train import ObjectiveConfigs

    if args.teacher:
        teacher = read_manifest(args.teacher)
        normalizer = teacher.normalizer_obj()
        ds = ChunkDataset(args.data, teacher.action.horizon, teacher.observation.n_obs_steps, normalizer)
        if ds.obs_spec != teacher.observation:
            raise SystemExit("the store's observation spec differs from the teacher's")
        if ds.action_spec.names != teacher.action.names:
            raise SystemExit(f"the store's actions {ds.action_spec.names} differ from the teacher's")
        obs_spec, action_spec, flow_time = teacher.observation, teacher.action, teacher_flow_time(teacher)
    elif methods.get(args.method).needs_teacher:
        raise SystemExit(f"{args.method} distils a teacher: give --teacher")
    else:  # OFP from scratch: self-distillation needs no teacher
        normalizer = compute_normalizer(args.data)
        ds = ChunkDataset(args.data, normalizer=normalizer)
        obs_spec, action_spec, flow_time = ds.obs_spec, ds.action_spec, FlowTimeConfig()
    ofp = dataclasses.replace(
        OfpConfig(),
        guidance=args.guidance,
        warm_t=args.warm_t,
        warm_share=args.warm_share,
        shift=action_spec.n_action_steps,
    )
    cfgs = ObjectiveConfigs(
        flow_time=flow_time,
        imle=ImleConfig(args.teacher_samples, args.student_samples, args.teacher_steps,
                        teacher_pool=args.teacher_pool),
        ofp=ofp,
        prefix=prefix_config(args),
    )
    return run_training(args, ds, normalizer, obs_spec, action_spec, args.method,
                        sampler=methods.get(args.method).default_sampler(cfgs), cfgs=cfgs, teacher_dir=args.teacher)


def teacher_flow_time(manifest):
    """The teacher's training-time distribution, when it recorded one."""
    from l1flow_ros.policy.config import FlowTimeConfig

    try:
        return FlowTimeConfig(**manifest.train["objective"]["flow_time"])
    except (KeyError, TypeError):
        return FlowTimeConfig()
