"""``l1flow train``: train a policy on a zarr store and write a checkpoint bundle.

l1flow train --objective l1flow --data demos.zarr --out bundles/door_l1flow
torchrun --nproc_per_node 4 -m l1flow_ros.cli train --objective fm --data demos.zarr --out bundles/fm --unet dp
"""

from __future__ import annotations

import argparse

from l1flow_ros.policy import methods

NAME = "train"
HELP = f"Train a policy ({' | '.join(methods.trained())}) on a zarr store into a checkpoint bundle."


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the training loop, shared with ``l1flow distill``."""
    from l1flow_ros.policy.config import TrainConfig

    d = TrainConfig()
    parser.add_argument("--data", required=True, help="zarr store (l1flow build-dataset / StoreWriter)")
    parser.add_argument("--out", required=True, help="bundle directory to write (and resume from)")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    parser.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="per process (default %(default)s)"
    )
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument(
        "--prefix-train", action="store_true",
        help="training-time prefix conditioning (real-time chunking): the network also gets a random "
             "clean prefix of each chunk and its mask, so that deployed it continues the running plan "
             "(recorded in the manifest; not for imle)",
    )
    parser.add_argument("--prefix-max-steps", type=int, default=0,
                        help="longest trained prefix in chunk steps (0 = horizon - n_action_steps)")
    parser.add_argument("--prefix-soft", action="store_true",
                        help="--prefix-train, and the network also gets the running plan over the whole "
                             "overlap, weighted as real-time chunking weighs it, not only the frozen actions")
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    parser.add_argument("--ema-decay", type=float, default=d.ema_decay)
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip)
    parser.add_argument("--save-every", type=int, default=d.save_every, help="write the bundle every N steps")
    parser.add_argument("--log-every", type=int, default=d.log_every)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--num-workers", type=int, default=d.num_workers, help="data loader processes")
    parser.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument(
        "--image-shift", type=int, default=d.image_shift, help="random-shift augmentation, +-pixels (0 = off)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def loop_config(args: argparse.Namespace, objective: str):
    from l1flow_ros.policy.config import TrainConfig

    return TrainConfig(
        objective=objective,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        ema_decay=args.ema_decay,
        grad_clip=args.grad_clip,
        save_every=args.save_every,
        log_every=args.log_every,
        seed=args.seed,
        num_workers=args.num_workers,
        device=args.device,
        amp=args.amp,
        image_shift=args.image_shift,
    )


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.replace(",", " ").split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from l1flow_ros.policy.config import FlowTimeConfig

    add_loop_arguments(parser)
    parser.add_argument(
        "--objective", default="l1flow", choices=methods.trained(),
        help="; ".join(f"{m}: {methods.get(m).label}" for m in methods.trained()),
    )
    parser.add_argument("--horizon", type=int, help="actions per chunk (default: the store's action spec)")
    parser.add_argument(
        "--n-action-steps", type=int, help="actions executed per chunk (default: the store's)"
    )
    parser.add_argument("--n-obs-steps", type=int, help="observation history (default: the store's)")
    parser.add_argument(
        "--unet",
        default="small",
        choices=["small", "dp"],
        help="small (CPU) or Diffusion-Policy size (512/1024/2048)",
    )
    parser.add_argument("--down-dims", type=_ints, help="U-Net widths, e.g. 64,128,256 (overrides --unet)")
    parser.add_argument("--embed-dim", type=int, help="observation embedding size (default 128)")
    parser.add_argument("--t1", type=float, default=0.5,
                        help="L1 Flow two-step: time of the second step (a sampler with intermediate times)")
    parser.add_argument("--sampler-steps", type=int, help="inference steps of the shipped sampler")
    f = FlowTimeConfig()
    parser.add_argument("--t-logit-mean", type=float, default=f.logit_mean)
    parser.add_argument("--t-logit-std", type=float, default=f.logit_std)
    parser.add_argument("--t-uniform-share", type=float, default=f.uniform_share)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from l1flow_ros.data.store import ChunkDataset, compute_normalizer
    from l1flow_ros.perception.encoders import EncoderConfig
    from l1flow_ros.policy.config import FlowTimeConfig
    from l1flow_ros.policy.model import ModelConfig, prediction_for
    from l1flow_ros.policy.train import ObjectiveConfigs
    from l1flow_ros.policy.unet import UNET_DP, UnetConfig

    normalizer = compute_normalizer(args.data)
    ds = ChunkDataset(args.data, args.horizon, args.n_obs_steps, normalizer)
    action_spec = ds.action_spec
    if args.n_action_steps:
        action_spec = dataclasses.replace(action_spec, n_action_steps=args.n_action_steps)
    sampler = methods.get(args.objective).default_sampler(None)
    if sampler.t_values:  # L1 Flow two-step: the time of its second step
        sampler = dataclasses.replace(sampler, t_values=(args.t1,))
    if args.sampler_steps:
        sampler = dataclasses.replace(sampler, steps=args.sampler_steps)
    unet = UNET_DP if args.unet == "dp" else UnetConfig()
    if args.down_dims:
        unet = dataclasses.replace(unet, down_dims=args.down_dims)
    encoder = EncoderConfig() if not args.embed_dim else EncoderConfig(out_dim=args.embed_dim)
    model_cfg = ModelConfig(prediction=prediction_for(sampler.kind), encoder=encoder, unet=unet)
    cfgs = ObjectiveConfigs(
        flow_time=FlowTimeConfig(args.t_logit_mean, args.t_logit_std, args.t_uniform_share),
        prefix=prefix_config(args),
    )
    return run_training(args, ds, normalizer, ds.obs_spec, action_spec, args.objective, model_cfg=model_cfg,
                        sampler=sampler, cfgs=cfgs)


def prefix_config(args: argparse.Namespace):
    """The training-time prefix conditioning the arguments ask for."""
    from l1flow_ros.policy.prefix import PrefixTrainConfig

    soft = bool(getattr(args, "prefix_soft", False))
    return PrefixTrainConfig(enabled=bool(args.prefix_train) or soft, max_steps=int(args.prefix_max_steps), soft=soft)


def run_training(args: argparse.Namespace, ds, normalizer, obs_spec, action_spec, method: str, **kw) -> int:
    """``policy.train.train`` with what `l1flow train` and `l1flow distill` pass alike (the
    loop config from the arguments, resume, the data's provenance, progress); prints the
    bundle's fingerprint."""
    from l1flow_ros.data.store import store_tasks
    from l1flow_ros.policy.train import train

    fp = train(ds, normalizer, obs_spec, action_spec, args.out, loop_config(args, method), resume=args.resume,
               info={"data": {"episodes": ds.num_episodes, "steps": len(ds), "tasks": store_tasks(args.data)}},
               progress=not args.no_progress, **kw)
    if fp:
        print(f"bundle {args.out} fingerprint {fp}")
    return 0
