"""MCAP episodes -> the zarr training store, through perception's one preprocessing path.

For each episode, a time grid ``t_k = t_0 + k * dt`` (``dt`` = the action spec's) is laid
over the recording. Step k holds:

- the observation at ``t_k``: for each camera the newest colour frame stamped at or
  before ``t_k`` with its depth and CameraInfo (same stamp when present), and the
  newest /joint_states at or before ``t_k`` (``proprio_names`` picked by name), turned
  into the storage form by :func:`l1flow_ros.perception.preprocess.frame_step` — the
  very function the perception node runs;
- action k: the commanded target in effect at ``t_k + dt`` (the newest command sent at
  or before it), matching the chunk contract (action k is due at ``t_obs + (k + 1) dt``).

The grid starts when every stream has a message and one ``dt`` before the first command
(so the first action is the first command), and ends at the last observation.
Observations use their header stamps (the sensor time), commands their receive time;
both come from the same ROS clock.

No rclpy needed: messages are read from the files' own schemas, then decoded by
:mod:`l1flow_ros.msgs` — the decoder perception_node runs on live messages — so a recorded
frame becomes exactly the array the node would have seen.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.data.mcap_io import EpisodeError, leftover_parts, list_episodes, read_messages, read_metadata
from l1flow_ros.msgs.chunk_conv import MessageError, command_from_msg
from l1flow_ros.msgs.sensor_conv import camera_frame_from_msgs, camera_info_from_msg, joint_state_from_msg
from l1flow_ros.msgs.stamps import header_stamp_ns
from l1flow_ros.perception.geometry import PerceptionError, parse_calibration
from l1flow_ros.perception.preprocess import RawFrames, frame_step
from l1flow_ros.spec import ActionSpec, ObservationSpec


class DatasetError(ValueError):
    """A dataset configuration or episode that cannot be built; the text says why."""


@dataclass(frozen=True)
class DatasetConfig:
    observation: ObservationSpec
    action: ActionSpec
    joint_states_topic: str = "/joint_states"
    action_topic: str = "/forward_position_controller/commands"
    calibration: str = ""  # YAML (perception.geometry format); '' = the episode's own, if recorded
    only_successful: bool = True  # skip episodes whose metadata says success: false
    min_steps: int = 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetConfig:
        d = dict(d)
        try:
            obs = ObservationSpec.from_dict(d.pop("observation", {}))
            act = ActionSpec.from_dict(d.pop("action", {}))
            cfg = cls(observation=obs, action=act, **d)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"dataset config: {e}") from None
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> DatasetConfig:
        """From a YAML or JSON file with ``observation`` / ``action`` sections."""
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise DatasetError(f"cannot read dataset config {p}: {e}") from None
        if not isinstance(data, dict):
            raise DatasetError(f"dataset config {p} must be a mapping")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.action.dim < 1:
            raise DatasetError("action.names is empty")
        if not self.action.dt > 0:
            raise DatasetError(f"action.dt must be > 0, got {self.action.dt}")
        if self.min_steps < 1:
            raise DatasetError(f"min_steps must be >= 1, got {self.min_steps}")
        o = self.observation
        if (o.use_rgb or o.num_points > 0) and not o.cameras:
            raise DatasetError("observation uses images or points but lists no cameras")


def sim_dataset_config(
    cameras: Sequence[str] = ("corner",),
    image_size: tuple[int, int] = (96, 96),
    num_points: int = 0,
    n_obs_steps: int = 2,
    horizon: int = 16,
    n_action_steps: int = 8,
    dt: float = 0.1,
    calibration: str = "",
) -> DatasetConfig:
    """The dataset config for the simulated arm (Meta-World EE targets).

    The gripper is a continuous dimension here (no ``gripper_indices``): Meta-World's
    experts command graded efforts (0, 0.6, 0.7, +-1), and binarising them breaks
    assembly, basketball and shelf-place (measured, seeds 0-3: 0/4, 0/4, 1/4 solved
    instead of 4/4 each).
    """
    from l1flow_ros.sim.metaworld_env import ACTION_NAMES

    return DatasetConfig(
        observation=ObservationSpec(
            cameras=tuple(cameras), image_size=tuple(image_size), use_rgb=True, num_points=num_points,
            workspace=(-0.6, 0.6, 0.3, 1.1, -0.05, 0.6), proprio_names=ACTION_NAMES, n_obs_steps=n_obs_steps,
        ),
        action=ActionSpec(
            names=ACTION_NAMES, horizon=horizon, n_action_steps=n_action_steps, dt=dt,
            lower=(-0.5, 0.4, 0.05, -1.0), upper=(0.5, 1.0, 0.5, 1.0),
            max_velocity=(0.8, 0.8, 0.8, 20.0), max_acceleration=(8.0, 8.0, 8.0, 400.0),
            gripper_indices=(), kind="joint_position",
        ),
        calibration=calibration,
    )


# --------------------------------------------------------------------------- episodes
# Recorded messages are decoded by l1flow_ros.msgs (no decoder of message fields here); a
# malformed one is a MessageError, which makes its episode a DatasetError (skipped with the reason).


@dataclass
class _Stream:
    """Time-sorted samples of one stream."""

    stamps: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def add(self, stamp: int, value: Any) -> None:
        self.stamps.append(stamp)
        self.values.append(value)

    def sort(self) -> None:
        order = np.argsort(self.stamps, kind="stable")
        self.stamps = [self.stamps[i] for i in order]
        self.values = [self.values[i] for i in order]

    def at_or_before(self, t: int) -> int:
        """Index of the newest sample with stamp <= t, or -1."""
        return bisect.bisect_right(self.stamps, t) - 1


@dataclass
class Episode:
    """One episode's synchronised steps in storage form."""

    obs: dict[str, np.ndarray]  # key -> (T, ...)
    actions: np.ndarray  # (T, A)
    stamps_ns: np.ndarray  # (T,) grid times
    metadata: dict[str, Any]


def _calibration_for(cfg: DatasetConfig, meta: dict[str, Any]) -> dict[str, np.ndarray] | None:
    if cfg.observation.num_points <= 0:
        return None
    try:
        if cfg.calibration:
            from l1flow_ros.perception.geometry import load_calibration

            return load_calibration(cfg.calibration)
        if isinstance(meta.get("calibration"), dict):
            return parse_calibration(meta["calibration"])
    except PerceptionError as e:
        raise DatasetError(f"calibration: {e}") from None
    raise DatasetError("points need camera extrinsics: set 'calibration' in the dataset config")


def load_episode(path: str | Path, cfg: DatasetConfig) -> Episode:
    """Read and synchronise one episode file (see module docstring). Raises DatasetError."""
    o, a = cfg.observation, cfg.action
    meta = read_metadata(path)
    cams = list(o.cameras) if (o.use_rgb or o.num_points > 0) else []
    need_depth = o.num_points > 0
    topic_of: dict[str, tuple[str, str]] = {}
    for c in cams:
        topic_of[f"/{c}/color/image_raw"] = (c, "color")
        if need_depth:
            topic_of[f"/{c}/aligned_depth_to_color/image_raw"] = (c, "depth")
            topic_of[f"/{c}/color/camera_info"] = (c, "info")
    streams: dict[tuple[str, str], _Stream] = {k: _Stream() for k in topic_of.values()}
    joints = _Stream()
    commands = _Stream()
    wanted = [*topic_of, cfg.joint_states_topic, cfg.action_topic]
    try:
        for m in read_messages(path, wanted):
            try:
                if m.topic == cfg.action_topic:
                    commands.add(m.log_time_ns, command_from_msg(m.msg, a.names))
                elif m.topic == cfg.joint_states_topic:
                    # /joint_states may also carry other joint sets (several publishers): a message
                    # without every proprio name is not this stream's and is skipped.
                    if o.proprio_names and set(o.proprio_names) <= set(m.msg.name):
                        q, _ = joint_state_from_msg(m.msg, o.proprio_names)
                        joints.add(header_stamp_ns(m.msg, m.log_time_ns), q)
                else:
                    cam, kind = topic_of[m.topic]
                    value = camera_info_from_msg(m.msg) if kind == "info" else m.msg  # images decoded lazily
                    streams[(cam, kind)].add(header_stamp_ns(m.msg, m.log_time_ns), value)
            except MessageError as e:
                raise DatasetError(f"{m.topic} at {m.log_time_ns} ns: {e}") from None
    except EpisodeError as e:
        raise DatasetError(str(e)) from None
    empty = [f"/{c}/{k}" for (c, k), s in streams.items() if not s.stamps]
    if o.proprio_names and not joints.stamps:
        empty.append(f"{cfg.joint_states_topic} (with {list(o.proprio_names)})")
    if not commands.stamps:
        empty.append(cfg.action_topic)
    if empty:
        raise DatasetError(f"no messages on {empty}")
    for s in [*streams.values(), joints, commands]:
        s.sort()

    dt_ns = int(round(a.dt * 1e9))
    obs_streams = [*streams.values(), *([joints] if o.proprio_names else [])]
    t_start = max([commands.stamps[0] - dt_ns] + [s.stamps[0] for s in obs_streams])
    t_end = min(s.stamps[-1] for s in obs_streams)
    if t_end < t_start:
        raise DatasetError("observations end before the first command")
    grid = np.arange(t_start, t_end + 1, dt_ns, dtype=np.int64)
    calib = _calibration_for(cfg, meta)
    steps, actions = [], []
    for t in grid:
        frames = RawFrames(stamp_ns=int(t))
        for c in cams:
            color = streams[(c, "color")]
            i = color.at_or_before(int(t))
            stamp = color.stamps[i]
            aligned = {}
            if need_depth:
                aligned = {
                    "depth": _matching(streams[(c, "depth")], stamp, int(t)),
                    "info": _matching(streams[(c, "info")], stamp, int(t)),  # CameraIntrinsics
                }
            try:
                frame = camera_frame_from_msgs(color=color.values[i], **aligned)
            except MessageError as e:
                raise DatasetError(f"camera {c!r} at {stamp} ns: {e}") from None
            frame.stamp_ns = stamp  # the colour frame's time (its receive time if it had no stamp)
            frames.cameras[c] = frame
        if o.proprio_names:
            frames.proprio = joints.values[joints.at_or_before(int(t))]
        try:
            steps.append(frame_step(o, frames, calib))
        except PerceptionError as e:
            raise DatasetError(f"step at {int(t)} ns: {e}") from None
        j = commands.at_or_before(int(t) + dt_ns)
        actions.append(commands.values[max(j, 0)])
    obs = {k: np.stack([s[k] for s in steps]) for k in steps[0]} if steps else {}
    return Episode(obs, np.asarray(actions, dtype=np.float32), grid, meta)


def _matching(stream: _Stream, stamp: int, t: int) -> Any:
    """The sample with exactly ``stamp`` (aligned frames share it), else the newest <= t."""
    i = bisect.bisect_left(stream.stamps, stamp)
    if i < len(stream.stamps) and stream.stamps[i] == stamp:
        return stream.values[i]
    j = stream.at_or_before(t)
    if j < 0:
        raise DatasetError(f"no message at or before {t} ns")
    return stream.values[j]


@dataclass
class BuildReport:
    episodes_written: int = 0
    steps_written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def summary(self) -> str:
        lines = [f"{self.episodes_written} episodes, {self.steps_written} steps written"]
        lines += [f"  skipped {Path(f).name}: {why}" for f, why in self.skipped]
        return "\n".join(lines)


def build_dataset(
    episodes: str | Path | Sequence[str | Path],
    out: str | Path,
    cfg: DatasetConfig,
    append: bool = False,
    progress: bool = True,
    on_episode: Callable[[Path, Episode], None] | None = None,
) -> BuildReport:
    """Episodes (a folder or a list of .mcap files) -> zarr store at ``out``.

    Unusable episodes (failed when ``only_successful``, too short, truncated or corrupt) are
    skipped with a reason in the report, and so are the ``.part`` files of recordings cut off
    in a folder (never taken for finished episodes); no usable episode at all is an error. A
    store the disk refuses (full) stops the build: what was written before stays usable.
    """
    from tqdm import tqdm

    from l1flow_ros.data.store import StoreError, StoreWriteError, StoreWriter

    cfg.validate()
    try:
        files = list_episodes(episodes) if isinstance(episodes, (str, Path)) else [Path(p) for p in episodes]
    except EpisodeError as e:
        raise DatasetError(str(e)) from None
    if not files:
        raise DatasetError(f"no episode files (*.mcap) in {episodes}")
    report = BuildReport()
    if isinstance(episodes, (str, Path)):
        report.skipped += [(str(p), "a recording cut off while written, not a finished episode "
                            "(`l1flow dataset recover` rewrites what it holds)") for p in leftover_parts(episodes)]
    writer = None
    bar = tqdm(files, desc="episodes", unit="ep", disable=not progress)
    for f in bar:
        try:
            meta = read_metadata(f)
            if cfg.only_successful and meta.get("success") is False:
                report.skipped.append((str(f), "not successful"))
                continue
            ep = load_episode(f, cfg)
            if ep.actions.shape[0] < cfg.min_steps:
                report.skipped.append((str(f), f"{ep.actions.shape[0]} steps < min_steps {cfg.min_steps}"))
                continue
            if writer is None:
                writer = StoreWriter(out, cfg.observation, cfg.action, mode="a" if append else "w")
            writer.add_episode(ep.obs, ep.actions, task=meta.get("task") or None)
        except (StoreWriteError, OSError) as e:  # the store's disk: every episode after would fail too
            raise DatasetError(f"store {out}: {e}\nstopped after {report.episodes_written} episodes, "
                               f"{report.steps_written} steps (the store holds them)\n{report.summary()}") from None
        except (DatasetError, EpisodeError, StoreError) as e:
            if isinstance(e, StoreError) and writer is None:
                raise DatasetError(f"store {out}: {e}") from None
            report.skipped.append((str(f), str(e)))
            continue
        report.episodes_written += 1
        report.steps_written += int(ep.actions.shape[0])
        bar.set_postfix(steps=report.steps_written, skipped=len(report.skipped))
        if on_episode is not None:
            on_episode(f, ep)
    if writer is not None:
        writer.close()
    if report.episodes_written == 0:
        raise DatasetError("no usable episode:\n" + report.summary())
    return report
