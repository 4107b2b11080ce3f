"""``l1flow dataset``: turn recorded episodes into the zarr training store, inspect them.

    l1flow dataset build EPISODES_DIR --out STORE --config dataset.yaml
    l1flow dataset build EPISODES_DIR --out STORE --sim-cameras corner --image-size 96 96
    l1flow dataset info EPISODES_DIR
    l1flow dataset recover EPISODES_DIR | FILE ...   # cut-off recordings -> recovered/ (or corrupt/)
    l1flow dataset config --out dataset.yaml          # a starting config for the simulated arm

The config (YAML) holds the observation spec and action spec the policy will be trained
with (see l1flow_ros/spec.py) plus the topics to read::

    observation: {cameras: [corner], image_size: [96, 96], proprio_names: [ee_x, ...], n_obs_steps: 2}
    action: {names: [ee_x, ee_y, ee_z, gripper], dt: 0.1, horizon: 16, n_action_steps: 8, ...}
    joint_states_topic: /joint_states
    action_topic: /forward_position_controller/commands
    calibration: ""          # camera extrinsics YAML, needed when num_points > 0
    only_successful: true
"""

from __future__ import annotations

import argparse
import sys

NAME = "dataset"
HELP = "build the zarr training store from MCAP episodes (and inspect episodes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="MCAP episodes -> zarr store")
    b.add_argument("episodes", help="folder of episode .mcap files")
    b.add_argument("--out", required=True, help="zarr store to write")
    b.add_argument("--config", help="dataset config YAML (observation / action specs, topics)")
    b.add_argument("--sim-cameras", nargs="+", default=None,
                   help="no --config: simulated-arm config with these cameras")
    b.add_argument("--image-size", nargs=2, type=int, default=(96, 96), metavar=("H", "W"))
    b.add_argument("--num-points", type=int, default=0, help="no --config: points per observation (0 = none)")
    b.add_argument("--append", action="store_true", help="append to an existing store with the same specs")
    b.add_argument("--include-failed", action="store_true", help="keep episodes whose metadata says failure")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    i = sub.add_parser("info", help="list episodes with their metadata and message counts")
    i.add_argument("episodes", help="folder of episode .mcap files")
    r = sub.add_parser("recover", help="rewrite recordings cut off while written (.part, truncated .mcap) "
                                       "as finished episodes in recovered/")
    r.add_argument("paths", nargs="+", help="episode folders (their .part files) or episode files")
    c = sub.add_parser("config", help="write a starting dataset config for the simulated arm")
    c.add_argument("--out", required=True)
    c.add_argument("--cameras", nargs="+", default=["corner"])
    c.add_argument("--image-size", nargs=2, type=int, default=(96, 96), metavar=("H", "W"))


def run(args: argparse.Namespace) -> int:
    from l1flow_ros.data.dataset_build import DatasetError

    try:
        return {"build": _build, "info": _info, "recover": _recover, "config": _config}[args.dataset_command](args)
    except DatasetError as e:
        print(f"l1flow dataset: {e}", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace) -> int:
    import dataclasses

    from l1flow_ros.data.dataset_build import DatasetConfig, build_dataset, sim_dataset_config

    if args.config:
        cfg = DatasetConfig.load(args.config)
    else:
        cfg = sim_dataset_config(cameras=tuple(args.sim_cameras or ("corner",)), image_size=tuple(args.image_size),
                                 num_points=args.num_points)
    if args.include_failed:
        cfg = dataclasses.replace(cfg, only_successful=False)
    report = build_dataset(args.episodes, args.out, cfg, append=args.append, progress=not args.quiet)
    print(report.summary())
    print(f"store: {args.out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from l1flow_ros.data.dataset_build import DatasetError
    from l1flow_ros.data.mcap_io import EpisodeError, leftover_parts, list_episodes, read_metadata, topics

    try:
        files = list_episodes(args.episodes)
    except EpisodeError as e:
        raise DatasetError(str(e)) from None
    for f in files:
        try:
            meta = read_metadata(f)
            counts = topics(f)
        except Exception as e:  # one unreadable file must not hide the others
            print(f"{f.name}: unreadable ({e})")
            continue
        dur = (meta.get("end_ns", 0) - meta.get("start_ns", 0)) * 1e-9
        print(f"{f.name}: task={meta.get('task', '?')} success={meta.get('success', '?')} duration={dur:.1f}s")
        for topic, (type_name, n) in sorted(counts.items()):
            print(f"    {topic:48s} {type_name:36s} {n}")
    print(f"{len(files)} episodes")
    for p in leftover_parts(args.episodes):
        print(f"{p.name}: a recording cut off while written (`l1flow dataset recover {args.episodes}`)")
    return 0


def _recover(args: argparse.Namespace) -> int:
    """Folders: their leftover .part files (as the recorder does on start); files: each rewritten into
    recovered/ beside it. Exit 1 when something could not be read at all."""
    from pathlib import Path

    from l1flow_ros.data.mcap_io import (
        RECOVERED_DIR,
        EpisodeError,
        free_path,
        recover_episode,
        recover_leftovers,
    )

    bad = 0
    for arg in map(Path, args.paths):
        if arg.is_dir():
            done = recover_leftovers(arg)
            for x in done:
                print(x)
                bad += x.outcome != "recovered"
            if not done:
                print(f"{arg}: no cut-off recordings")
            continue
        name = arg.name[: -len(".part")] if arg.name.endswith(".part") else arg.name
        dest = free_path(arg.parent / RECOVERED_DIR / (name if name.endswith(".mcap") else name + ".mcap"))
        try:
            s = recover_episode(arg, dest)
        except (OSError, EpisodeError) as e:
            print(f"{arg}: cannot recover: {e}")
            bad += 1
            continue
        state = "complete" if s.finished and not s.damage else "; ".join(x for x in [s.cut, *s.damage] if x)
        print(f"{arg}: {s.messages} messages -> {dest} ({state})" if s.messages else f"{arg}: no message readable ({state})")
        bad += s.messages == 0
    return 1 if bad else 0


def _config(args: argparse.Namespace) -> int:
    import yaml

    from l1flow_ros.data.dataset_build import sim_dataset_config

    cfg = sim_dataset_config(cameras=tuple(args.cameras), image_size=tuple(args.image_size))

    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    with open(args.out, "w") as f:
        yaml.safe_dump(plain(cfg.to_dict()), f, sort_keys=False)
    print(f"wrote {args.out}")
    return 0
