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

What a killed writer leaves
---------------------------

An MCAP file cut off (kill -9, power loss, a full disk) has no summary and no footer, and
the mcap reader's seeking path refuses it. Its data section is still a sequence of
length-prefixed records, so :func:`salvage` reads it record by record: every complete
chunk (CRC checked), and of a chunk cut in the middle the messages its compressed part
still holds (zstd decodes a cut frame block by block). What a writer still buffers in
memory when it dies is lost, so :class:`EpisodeWriter` closes its chunk and writes it to
disk (``fsync``) every ``flush_period_s`` (default 1 s; checked on each message and by the
recorder's 1 Hz timer): a killed recorder keeps every message older than that period plus
one timer tick (with the recorder's timer, 2 s at most). Without that flush the default 4 MiB chunks
kept nothing of an episode of joint states and commands until 4 MiB had been written
(measured: ``bench/bench_recording_kill.py``, docs/RELIABILITY.md "Recording").

The episode's metadata known at its start (task, topics, calibration) is written as a
first metadata record and flushed at once, so a cut-off file still says what it was;
:func:`read_metadata` merges the records in file order (the one written on close last).

:func:`recover_leftovers` (the recorder runs it when it starts) turns every ``.part`` that
no live writer holds (an exclusive ``flock`` while writing) into a finished episode in
``recovered/`` (metadata ``recovered: true``; not in the folder of finished episodes, so
dataset building never takes it unasked), or moves it to ``corrupt/`` when nothing of it
can be read; the original is deleted only when the rewrite holds everything that could be
read, and left in place when the rewrite itself fails (a disk still full).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

EPISODE_METADATA = "l1flow_episode"
RECOVERED_DIR = "recovered"  # beside the episodes: files rebuilt from a cut-off recording
CORRUPT_DIR = "corrupt"  # beside the episodes: leftovers nothing could be read from
MAGIC = b"\x89MCAP0\r\n"
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
    """Writes one episode: messages as CDR bytes (from a raw subscription) or objects.

    ``metadata`` known at the start is written (and flushed) at once, so that a cut-off
    file still carries it; every ``flush_period_s`` (0: only on close) the open chunk is
    written and fsync'ed (:meth:`flush`). An ``OSError`` from the disk (full, ...) comes out
    of the call that hit it; :meth:`abort` then leaves what reached the disk in the
    ``.part`` file, for :func:`recover_leftovers`.
    """

    def __init__(self, path: str | os.PathLike, chunk_size: int = 4 * 1024 * 1024,
                 flush_period_s: float = 1.0, metadata: dict[str, Any] | None = None) -> None:
        from mcap.writer import CompressionType, Writer

        self.path = Path(path)
        if self.path.suffix != ".mcap":
            raise EpisodeError(f"episode file must end in .mcap, got {self.path.name}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.part_path = self.path.with_name(self.path.name + ".part")
        # Locked before truncating: a .part another live writer holds is never clobbered.
        fd = os.open(self.part_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EpisodeError(f"{self.part_path} is being written by another recorder") from None
        os.ftruncate(fd, 0)
        self._file = _PartFile(fd)
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}
        self._encoders: dict[str, Any] = {}
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.count = 0
        self.on_disk = 0  # messages written and fsync'ed: what a kill cannot take
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.flush_period_s = float(flush_period_s)
        self._last_flush = time.monotonic()
        self._closed = False
        try:
            self._writer.start(profile="ros2", library="l1flow_ros")
            if self.metadata:
                self._writer.add_metadata(EPISODE_METADATA, _encode_metadata(self.metadata))
            self.flush()
        except OSError:
            self.discard()
            raise

    def _channel(self, topic: str, type_name: str, definition: bytes | None = None) -> int:
        type_name = normalise_type(type_name)
        ch = self._channels.get(topic)
        if ch is not None:
            if ch[1] != type_name:
                raise EpisodeError(f"topic {topic} already recorded as {ch[1]}, not {type_name}")
            return ch[0]
        if type_name not in self._schemas:
            data = definition if definition is not None else message_definition(type_name).encode()
            self._schemas[type_name] = self._writer.register_schema(name=type_name, encoding="ros2msg", data=data)
        cid = self._writer.register_channel(topic=topic, message_encoding="cdr", schema_id=self._schemas[type_name])
        self._channels[topic] = (cid, type_name)
        return cid

    def write_raw(self, topic: str, type_name: str, cdr: bytes, log_time_ns: int, publish_time_ns: int | None = None,
                  definition: bytes | None = None):
        """Append one CDR-serialised message (as an rclpy raw subscription delivers it);
        ``definition``: the schema text, when not the installed type's (a file being recovered)."""
        if self._closed:
            raise EpisodeError(f"episode {self.path.name} is closed")
        cid = self._channel(topic, type_name, definition)
        self._writer.add_message(
            channel_id=cid, log_time=int(log_time_ns),
            publish_time=int(log_time_ns if publish_time_ns is None else publish_time_ns), data=bytes(cdr),
        )
        self.count += 1
        self.first_ns = int(log_time_ns) if self.first_ns is None else min(self.first_ns, int(log_time_ns))
        self.last_ns = int(log_time_ns) if self.last_ns is None else max(self.last_ns, int(log_time_ns))
        self.maybe_flush()

    def write(self, topic: str, type_name: str, message: Any, log_time_ns: int, publish_time_ns: int | None = None):
        """Append one message given as an object or dict with the type's fields."""
        from mcap_ros2._dynamic import serialize_dynamic

        type_name = normalise_type(type_name)
        enc = self._encoders.get(type_name)
        if enc is None:
            enc = serialize_dynamic(type_name, message_definition(type_name))[type_name]
            self._encoders[type_name] = enc
        self.write_raw(topic, type_name, enc(message), log_time_ns, publish_time_ns)

    def flush(self) -> None:
        """Close the open chunk, write it and fsync: every message so far survives a kill."""
        if self._closed:
            return
        self._writer.flush()
        os.fsync(self._file.fd)
        self.on_disk = self.count
        self._last_flush = time.monotonic()

    def maybe_flush(self) -> None:
        """:meth:`flush` when ``flush_period_s`` has passed since the last one."""
        if self.flush_period_s > 0 and self.count > self.on_disk and (
                time.monotonic() - self._last_flush >= self.flush_period_s):
            self.flush()

    def close(self, **metadata: Any) -> Path:
        """Write the episode metadata (merged into :attr:`metadata`), finish and publish the file.

        A disk error on the way leaves the ``.part`` (what reached the disk: see :func:`salvage`)
        and raises EpisodeError saying so."""
        if self._closed:
            return self.path
        self.metadata.update(metadata)
        try:
            self._writer.add_metadata(EPISODE_METADATA, _encode_metadata(self.metadata))
            self._writer.finish()
            os.fsync(self._file.fd)
        except OSError as e:
            self.abort()
            raise EpisodeError(f"cannot finish {self.path.name}: {e}; what reached the disk stays in "
                               f"{self.part_path} (recovered by the next recorder start)") from None
        os.replace(self.part_path, self.path)  # still locked: no recovery takes the file meanwhile
        self._file.close()
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop writing, keep the ``.part`` as it is on disk (after a disk error: nothing more is written)."""
        if self._closed:
            return
        self._closed = True
        self._file.close()

    def discard(self) -> None:
        """Drop the episode: nothing stays on disk."""
        self.part_path.unlink(missing_ok=True)
        self.abort()


class _PartFile:
    """The ``.part`` file, unbuffered (the mcap writer hands over whole records): after a disk
    error no buffer is left to be written later, and :meth:`tell` is what reached the file."""

    def __init__(self, fd: int) -> None:
        self.fd, self.pos = fd, 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)  # a full disk: a short write, then OSError
            self.pos += n
            view = view[n:]
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            os.close(self.fd)  # releases the flock
        except OSError:
            pass


def _encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in meta.items()}


def _decode_metadata(meta: dict[str, str]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in meta.items()}


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

    out: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            for m in make_reader(f).iter_metadata():  # in file order: the record written on close last
                if m.name == EPISODE_METADATA:
                    out.update(_decode_metadata(m.metadata))
    except Exception as e:  # truncated / corrupt file, bad JSON: one clear error type
        raise EpisodeError(f"cannot read metadata of {path}: {_why_unreadable(path, e)}") from None
    return out


def _why_unreadable(path: str | os.PathLike, e: Exception) -> str:
    """The reader's error, and what it means for an episode file."""
    text = f"{type(e).__name__}: {e}"
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
            f.seek(max(0, os.fstat(f.fileno()).st_size - len(MAGIC)))
            tail = f.read()
    except OSError:
        return text
    if head != MAGIC:
        return f"not an MCAP file ({'empty' if not head else text})"
    if tail != MAGIC:
        return (f"truncated: no MCAP footer, the file was cut off while written ({text}); "
                "`l1flow dataset recover` rewrites what it holds")
    return f"corrupt ({text})"


def topics(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """{topic: (type, message count)} of an episode file."""
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception as e:
        raise EpisodeError(f"cannot read {path}: {_why_unreadable(path, e)}") from None
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
        reader = make_reader(f, validate_crcs=True, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(topics=topic_filter, log_time_order=True):
            yield Message(channel.topic, schema.name, message.log_time, message.publish_time, decoded)
    except Exception as e:  # corrupt / truncated file: one clear error type
        if isinstance(e, EpisodeError):
            raise
        raise EpisodeError(f"cannot read episode {path}: {_why_unreadable(path, e)}") from None
    finally:
        f.close()


def list_episodes(directory: str | os.PathLike) -> list[Path]:
    """Finished episode files in a folder (``*.mcap``, sorted by name; ``.part`` skipped)."""
    d = Path(directory)
    if not d.is_dir():
        raise EpisodeError(f"episode folder {d} does not exist")
    return sorted(p for p in d.glob("*.mcap") if p.is_file())


def leftover_parts(directory: str | os.PathLike) -> list[Path]:
    """``.part`` files in a folder that no live writer holds: recordings cut off (kill, power, disk)."""
    return [p for p in sorted(Path(directory).glob("*.mcap.part")) if p.is_file() and not _held(p)]


def _held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this took


# --------------------------------------------------------------------------- recovery


@dataclass
class Salvage:
    """What a record-by-record read of an episode file got back (:func:`salvage`)."""

    path: Path
    messages: int = 0  # messages read back whole
    finished: bool = False  # the end of the data section was reached: nothing was cut off
    cut: str = ""  # where the file ends early ('' when finished)
    damage: list[str] = field(default_factory=list)  # records skipped inside the file (bad CRC, ...)
    metadata: dict[str, Any] = field(default_factory=dict)  # the episode metadata records, merged


_OPCODES = {0x01: "header", 0x02: "footer", 0x03: "schema", 0x04: "channel", 0x05: "message", 0x06: "chunk",
            0x07: "message index", 0x08: "chunk index", 0x09: "attachment", 0x0A: "attachment index",
            0x0B: "statistics", 0x0C: "metadata", 0x0D: "metadata index", 0x0E: "summary offset", 0x0F: "data end"}


def _records(data: bytes, start: int = 0) -> Iterator[tuple[int, int, bytes]]:
    """(offset, opcode, body) of each complete record in ``data`` from ``start``; stops at a cut one."""
    pos = start
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if pos + 9 + length > len(data):
            return
        yield pos, opcode, data[pos + 9:pos + 9 + length]
        pos += 9 + length


def _parse(opcode: int, body: bytes) -> Any:
    from mcap.data_stream import ReadDataStream
    from mcap.records import Channel, Message, Metadata, Schema

    stream = ReadDataStream(BytesIO(body))
    if opcode == 0x05:
        return Message.read(stream, len(body))
    cls = {0x03: Schema, 0x04: Channel, 0x0C: Metadata}.get(opcode)
    return cls.read(stream) if cls is not None else None


def _chunk_records(body: bytes, whole: bool) -> list[Any]:
    """The schema / channel / message records of a chunk; of a cut one (``whole`` false), those
    its compressed part still holds."""
    from mcap.data_stream import ReadDataStream
    from mcap.records import Chunk
    from mcap.stream_reader import breakup_chunk

    if whole:
        return breakup_chunk(Chunk.read(ReadDataStream(BytesIO(body))), validate_crc=True)
    # start u64, end u64, uncompressed size u64, crc u32, compression (u32 length + text), records u64 + bytes
    if len(body) < 32:
        return []
    n = struct.unpack_from("<I", body, 28)[0]
    compression, data = body[32:32 + n].decode(errors="replace"), body[32 + n + 8:]
    if compression == "zstd":
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)  # the blocks that made it
    elif compression:
        return []  # lz4 frames are not read cut
    return [r for _, op, b in _records(data) if (r := _parse(op, b)) is not None]


def salvage(path: str | os.PathLike) -> Iterator[tuple[Any, Any, Any]]:
    """(schema, channel, message) records of an episode file in file order, read without its
    summary: the way to read a file cut off while written. The generator's return value (``yield
    from``) is the :class:`Salvage`; :func:`recover_episode` is the usual caller."""
    import mmap

    from mcap.records import Channel, Message, Metadata, Schema

    path = Path(path)
    result = Salvage(path)
    schemas: dict[int, Any] = {}
    channels: dict[int, Any] = {}
    orphans = 0

    def take(records: list[Any], pos: int) -> Iterator[tuple[Any, Any, Any]]:
        nonlocal orphans
        for r in records:
            if isinstance(r, Schema):
                schemas[r.id] = r
            elif isinstance(r, Channel):
                channels[r.id] = r
            elif isinstance(r, Metadata) and r.name == EPISODE_METADATA:
                try:
                    result.metadata.update(_decode_metadata(r.metadata))
                except ValueError as e:
                    result.damage.append(f"metadata record at byte {pos}: {e}")
            elif isinstance(r, Message):
                ch = channels.get(r.channel_id)
                if ch is None or ch.schema_id not in schemas:
                    orphans += 1
                    continue
                result.messages += 1
                yield schemas[ch.schema_id], ch, r

    try:
        f = open(path, "rb")
    except OSError as e:
        raise EpisodeError(f"cannot read {path}: {e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        if data[:len(MAGIC)] != MAGIC:
            result.cut = "not an MCAP file (no magic at the start)"
            return result
        pos = len(MAGIC)
        while pos + 9 <= size:
            opcode, length = struct.unpack_from("<BQ", data, pos)
            if pos + 9 + length > size or opcode == 0:  # opcode 0 is no record: zeros a crash left
                break
            body = data[pos + 9:pos + 9 + length]
            name = _OPCODES.get(opcode, f"opcode {opcode:#x}")
            try:
                records = _chunk_records(body, True) if opcode == 0x06 else [_parse(opcode, body)]
            except Exception as e:  # the record's length held, its content did not: read on past it
                result.damage.append(f"unreadable {name} record at byte {pos}: {type(e).__name__}: {e}")
                records = []
            yield from take(records, pos)
            pos += 9 + length
            if opcode == 0x0F:  # data end: the rest is the summary
                result.finished = True
                break
        if not result.finished:
            if pos + 9 <= size:
                opcode, length = struct.unpack_from("<BQ", data, pos)
                name = _OPCODES.get(opcode, f"opcode {opcode:#x}")
                result.cut = (f"cut at byte {size} inside a {name} record at byte {pos} "
                              f"({size - pos - 9} of {length} bytes)")
                if opcode == 0 and not any(data[pos:size]):
                    result.cut = f"zeros from byte {pos} to the end (a crash before the data reached the disk)"
                elif opcode not in _OPCODES:  # not what a cut write leaves: a damaged record header
                    result.damage.append(f"unknown record at byte {pos}: the rest of the file ({size - pos} bytes) "
                                         "could not be read")
                if opcode == 0x06:  # a chunk cut while written: the messages its compressed part holds
                    try:
                        yield from take(_chunk_records(data[pos + 9:size], False), pos)
                    except Exception as e:
                        result.damage.append(f"cut chunk at byte {pos}: {type(e).__name__}: {e}")
            else:
                result.cut = f"cut at byte {size} (no data end, no footer)"
        if isinstance(data, mmap.mmap):
            data.close()
    if orphans:
        result.damage.append(f"{orphans} messages of channels whose definition was lost")
    return result


def recover_episode(src: str | os.PathLike, dest: str | os.PathLike) -> Salvage:
    """Rewrite what :func:`salvage` reads of ``src`` as a finished episode ``dest``, its metadata
    marked ``recovered`` (with the count and where the source was cut); nothing is written when
    no message could be read. An OSError (a full disk) leaves no ``dest`` behind."""
    src, dest = Path(src), Path(dest)
    w = EpisodeWriter(dest, flush_period_s=0.0)
    try:
        gen = salvage(src)
        while True:
            try:
                schema, channel, msg = next(gen)
            except StopIteration as stop:
                result: Salvage = stop.value
                break
            w.write_raw(channel.topic, schema.name, msg.data, msg.log_time, msg.publish_time, definition=schema.data)
        if result.messages == 0:
            w.discard()
            return result
        meta = dict(result.metadata)
        meta.setdefault("success", None)  # unknown: the recording was cut before it said
        meta.update(recovered=True, recovered_from=src.name, recovered_cut=result.cut,
                    recovered_damage=result.damage, messages=w.count)
        meta.setdefault("end_ns", w.last_ns)
        w.close(**meta)
    except BaseException:
        w.discard()
        raise
    return result


@dataclass(frozen=True)
class Leftover:
    """What :func:`recover_leftovers` did with one cut-off recording."""

    source: Path
    outcome: str  # recovered | corrupt | left
    moved_to: Path | None
    salvage: Salvage | None
    why: str

    def __str__(self) -> str:
        where = f" -> {self.moved_to}" if self.moved_to else ""
        return f"{self.source.name}: {self.outcome}{where} ({self.why})"


def free_path(path: Path) -> Path:
    """``path``, or ``<stem>.<n><suffix>`` when it exists."""
    n, out = 1, path
    while out.exists() or out.with_name(out.name + ".part").exists():
        out = path.with_name(f"{path.name.split('.')[0]}.{n}{''.join(path.suffixes)}")
        n += 1
    return out


def recover_leftovers(directory: str | os.PathLike) -> list[Leftover]:
    """Each ``.part`` in ``directory`` that no live writer holds: rewritten as a finished episode
    in ``recovered/``, or moved to ``corrupt/`` when nothing could be read. The source is deleted
    only when its rewrite holds everything readable in it (a clean cut at the end); else it goes
    to ``corrupt/`` too. A rewrite that fails (OSError: a full disk) leaves the source in place."""
    d = Path(directory)
    out: list[Leftover] = []
    for part in leftover_parts(d):
        dest = free_path(d / RECOVERED_DIR / part.name[: -len(".part")])
        try:
            s = recover_episode(part, dest)
        except (OSError, EpisodeError) as e:
            out.append(Leftover(part, "left", None, None, f"cannot recover now, left in place: {e}"))
            continue
        why = "; ".join(x for x in [s.cut, *s.damage] if x)
        kept = None
        try:
            if s.messages == 0 or s.damage:
                (d / CORRUPT_DIR).mkdir(exist_ok=True)
                kept = free_path(d / CORRUPT_DIR / part.name)
                shutil.move(part, kept)
                if s.messages:
                    why += f"; the original kept as {kept}"
            else:
                part.unlink()
        except OSError as e:
            why += f"; source left in place: {e}"
        if s.messages == 0:
            out.append(Leftover(part, "corrupt", kept, s, f"no message readable: {why}"))
        else:
            out.append(Leftover(part, "recovered", dest, s, f"{s.messages} messages; {why}"))
    return out
