"""Episodes as MCAP files that are valid ROS 2 bags, no rclpy.

One episode = one ``.mcap`` file with the ``ros2`` profile: schemas are ROS 2 message
definitions (encoding ``ros2msg``, the text rosbag2 stores: the type's ``.msg`` followed
by every nested type's, separated by ``=====`` lines), channels carry CDR-serialised
messages — the layout ``ros2 bag record -s mcap`` writes — so rosbag2 (``ros2 bag info``,
``ros2 bag play``), the ``rosbags`` library (tested) and Foxglove read the files.

The ``.msg`` files come from the ROS installation: ``share/<pkg>/msg/`` under every
prefix of ``AMENT_PREFIX_PATH`` and under this Python environment's prefix (where the
ROS wheels install them).

Episode metadata (task, success, ...) is an MCAP metadata record named
:data:`EPISODE_METADATA`; values are strings (MCAP's rule), :func:`read_metadata`
parses them back.

While recording, an episode is written to ``<name>.mcap.part`` and renamed on
:meth:`EpisodeWriter.close`, so a folder never shows a half-written episode as done.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

EPISODE_METADATA = "l1flow_episode"
SEPARATOR = "=" * 80
PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "string", "wstring",
}


class EpisodeError(ValueError):
    """An episode file or message type that cannot be written or read; the text says why."""


def _share_dirs() -> list[Path]:
    dirs = [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(sys.prefix) / "share")
    return dirs


def normalise_type(type_name: str) -> str:
    """'sensor_msgs/Image' or 'sensor_msgs/msg/Image' -> 'sensor_msgs/msg/Image'."""
    parts = type_name.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise EpisodeError(f"message type {type_name!r} is not 'pkg/msg/Type'")
    return "/".join(parts)


@cache
def _msg_file_text(type_name: str) -> str:
    pkg, _, name = normalise_type(type_name).split("/")
    for share in _share_dirs():
        f = share / pkg / "msg" / f"{name}.msg"
        if f.is_file():
            return f.read_text()
    raise EpisodeError(
        f"no definition for {type_name}: {pkg}/msg/{name}.msg not found under "
        f"{[str(d) for d in _share_dirs()]} (is the ROS package installed?)"
    )


def _field_types(text: str, pkg: str) -> list[str]:
    """Nested message types a .msg refers to, as 'pkg/msg/Type'."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 2 or "=" in parts[1] or (len(parts) > 2 and parts[2].startswith("=")):
            continue  # constant
        base = re.sub(r"(\[.*\]|<=\d+)$", "", parts[0])
        base = re.sub(r"<=\d+$", "", base)
        if base in PRIMITIVES:
            continue
        if base == "Header":
            out.append("std_msgs/msg/Header")
        elif "/" in base:
            out.append(normalise_type(base))
        else:
            out.append(f"{pkg}/msg/{base}")
    return out


@cache
def message_definition(type_name: str) -> str:
    """The full ROS 2 message definition rosbag2 stores for ``type_name``."""
    root = normalise_type(type_name)
    seen: list[str] = []
    stack = [root]
    while stack:  # depth-first, each nested type once
        t = stack.pop()
        if t in seen:
            continue
        seen.append(t)
        stack.extend(reversed(_field_types(_msg_file_text(t), t.split("/")[0])))
    parts = [_msg_file_text(root).rstrip("\n")]
    for t in seen[1:]:
        pkg, _, name = t.split("/")
        parts.append(f"{SEPARATOR}\nMSG: {pkg}/{name}\n{_msg_file_text(t).rstrip(chr(10))}")
    return "\n".join(parts) + "\n"


class EpisodeWriter:
    """Writes one episode: messages as CDR bytes (from a raw subscription) or objects."""

    def __init__(self, path: str | os.PathLike, chunk_size: int = 4 * 1024 * 1024) -> None:
        from mcap.writer import CompressionType, Writer

        self.path = Path(path)
        if self.path.suffix != ".mcap":
            raise EpisodeError(f"episode file must end in .mcap, got {self.path.name}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.part_path = self.path.with_name(self.path.name + ".part")
        self._file = open(self.part_path, "wb")
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="l1flow_ros")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}
        self._encoders: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.count = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self._closed = False

    def _channel(self, topic: str, type_name: str) -> int:
        type_name = normalise_type(type_name)
        ch = self._channels.get(topic)
        if ch is not None:
            if ch[1] != type_name:
                raise EpisodeError(f"topic {topic} already recorded as {ch[1]}, not {type_name}")
            return ch[0]
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding="ros2msg", data=message_definition(type_name).encode()
            )
        cid = self._writer.register_channel(topic=topic, message_encoding="cdr", schema_id=self._schemas[type_name])
        self._channels[topic] = (cid, type_name)
        return cid

    def write_raw(self, topic: str, type_name: str, cdr: bytes, log_time_ns: int, publish_time_ns: int | None = None):
        """Append one CDR-serialised message (as an rclpy raw subscription delivers it)."""
        if self._closed:
            raise EpisodeError(f"episode {self.path.name} is closed")
        cid = self._channel(topic, type_name)
        self._writer.add_message(
            channel_id=cid, log_time=int(log_time_ns),
            publish_time=int(log_time_ns if publish_time_ns is None else publish_time_ns), data=bytes(cdr),
        )
        self.count += 1
        self.first_ns = int(log_time_ns) if self.first_ns is None else min(self.first_ns, int(log_time_ns))
        self.last_ns = int(log_time_ns) if self.last_ns is None else max(self.last_ns, int(log_time_ns))

    def write(self, topic: str, type_name: str, message: Any, log_time_ns: int, publish_time_ns: int | None = None):
        """Append one message given as an object or dict with the type's fields."""
        from mcap_ros2._dynamic import serialize_dynamic

        type_name = normalise_type(type_name)
        enc = self._encoders.get(type_name)
        if enc is None:
            enc = serialize_dynamic(type_name, message_definition(type_name))[type_name]
            self._encoders[type_name] = enc
        self.write_raw(topic, type_name, enc(message), log_time_ns, publish_time_ns)

    def close(self, **metadata: Any) -> Path:
        """Write the episode metadata (merged into :attr:`metadata`), finish and publish the file."""
        if self._closed:
            return self.path
        self.metadata.update(metadata)
        self._writer.add_metadata(EPISODE_METADATA, {k: json.dumps(v) for k, v in self.metadata.items()})
        self._writer.finish()
        self._file.close()
        self._closed = True
        os.replace(self.part_path, self.path)
        return self.path

    def discard(self) -> None:
        """Drop the episode: nothing stays on disk."""
        if not self._closed:
            self._file.close()
            self._closed = True
        self.part_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Message:
    topic: str
    type_name: str
    log_time_ns: int
    publish_time_ns: int
    msg: Any  # decoded message: attributes named as the ROS fields


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The episode metadata record of an episode file ({} if none)."""
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            for m in make_reader(f).iter_metadata():
                if m.name == EPISODE_METADATA:
                    return {k: json.loads(v) for k, v in m.metadata.items()}
    except Exception as e:  # truncated / corrupt file, bad JSON: one clear error type
        raise EpisodeError(f"cannot read metadata of {path}: {type(e).__name__}: {e}") from None
    return {}


def topics(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """{topic: (type, message count)} of an episode file."""
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception as e:
        raise EpisodeError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if summary is None:
        raise EpisodeError(f"{path}: no MCAP summary (file not finished?)")
    counts = summary.statistics.channel_message_counts if summary.statistics else {}
    return {
        ch.topic: (summary.schemas[ch.schema_id].name, int(counts.get(cid, 0)))
        for cid, ch in summary.channels.items()
    }


def read_messages(path: str | os.PathLike, topic_filter: list[str] | None = None) -> Iterator[Message]:
    """Decoded messages of an episode file in log-time order."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    try:
        f = open(path, "rb")
    except OSError as e:
        raise EpisodeError(f"cannot open episode {path}: {e}") from None
    try:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(topics=topic_filter, log_time_order=True):
            yield Message(channel.topic, schema.name, message.log_time, message.publish_time, decoded)
    except Exception as e:  # corrupt / truncated file: one clear error type
        if isinstance(e, EpisodeError):
            raise
        raise EpisodeError(f"cannot read episode {path}: {type(e).__name__}: {e}") from None
    finally:
        f.close()


def list_episodes(directory: str | os.PathLike) -> list[Path]:
    """Finished episode files in a folder (``*.mcap``, sorted by name; ``.part`` skipped)."""
    d = Path(directory)
    if not d.is_dir():
        raise EpisodeError(f"episode folder {d} does not exist")
    return sorted(p for p in d.glob("*.mcap") if p.is_file())
