"""Episode files cut off while written (kill, full disk) or damaged: what a reader gets back,
and what recovery does with them. The recorder process killed with SIGKILL and the full
filesystem are in test_recorder_recovery.py."""

import shutil
import struct

import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState

from l1flow_ros.data.mcap_io import (
    CORRUPT_DIR,
    RECOVERED_DIR,
    EpisodeError,
    EpisodeWriter,
    leftover_parts,
    list_episodes,
    read_messages,
    read_metadata,
    recover_leftovers,
    salvage,
)

pytestmark = pytest.mark.core

JS = "sensor_msgs/msg/JointState"


def js(k: int, width: int = 1) -> bytes:
    return serialize_message(JointState(name=["j"] * width, position=[float(k)] * width))


def salvaged(path) -> tuple[list[int], object]:
    """The positions[0] of the messages salvage reads from ``path``, and its Salvage."""
    from mcap_ros2.decoder import DecoderFactory

    decode = {}
    gen, got = salvage(path), []
    while True:
        try:
            schema, channel, msg = next(gen)
        except StopIteration as stop:
            return got, stop.value
        dec = decode.setdefault(schema.id, DecoderFactory().decoder_for("cdr", schema))
        got.append(int(dec(msg.data).position[0]))


def test_cut_file_gives_back_every_message_flushed_before_the_cut(tmp_path):
    """A .part cut at any byte: every message flushed before that byte comes back, in order, and
    nothing after the cut is invented (a prefix of what was written)."""
    w = EpisodeWriter(tmp_path / "ep.mcap", flush_period_s=0.0, metadata={"task": "t"})
    start = w.part_path.stat().st_size  # header and the start metadata, on disk at once
    sizes = []  # (file size after a flush, messages on disk then)
    for k in range(60):
        w.write_raw("/joint_states", JS, js(k, width=20), 1000 + k)
        if k % 10 == 9:
            w.flush()
            sizes.append((w.part_path.stat().st_size, w.on_disk))
    data = w.part_path.read_bytes()
    w.abort()
    assert w.part_path.exists() and [n for _, n in sizes] == [10, 20, 30, 40, 50, 60]
    for cut in sorted({*range(0, len(data), 97), *(s for s, _ in sizes), *(s - 1 for s, _ in sizes)}):
        p = tmp_path / "cut.mcap.part"
        p.write_bytes(data[:cut])
        got, s = salvaged(p)
        assert got == list(range(len(got))), (cut, got)
        expected = max([n for size, n in sizes if size <= cut], default=0)
        assert len(got) >= expected, (cut, len(got), expected)
        assert not s.finished and s.cut and not s.damage, (cut, s)
        assert s.metadata == ({"task": "t"} if cut >= start else {}), cut


def test_chunk_cut_in_the_middle_still_gives_its_first_messages(tmp_path):
    """One big chunk (no flush) cut halfway, as a full disk cuts a chunk's write: zstd decodes the
    blocks that made it, so the messages before the cut come back."""
    w = EpisodeWriter(tmp_path / "ep.mcap", flush_period_s=0.0)
    import os

    for k in range(400):  # ~1.3 MB of incompressible positions: one chunk of several zstd blocks
        w.write_raw("/joint_states", JS, serialize_message(
            JointState(name=["j"], position=[float(k)] + list(map(float, os.urandom(400))))), 1000 + k)
    path = w.close()
    data = path.read_bytes()
    p = tmp_path / "half.mcap.part"
    p.write_bytes(data[: len(data) // 2])
    got, s = salvaged(p)
    assert 50 < len(got) < 400 and got == list(range(len(got))), len(got)
    assert "inside a chunk record" in s.cut


def test_finished_file_reads_whole_and_metadata_records_merge(tmp_path):
    w = EpisodeWriter(tmp_path / "ep.mcap", metadata={"task": "t", "success": None})
    for k in range(5):
        w.write_raw("/joint_states", JS, js(k), 1000 + k)
    path = w.close(success=True, messages=5)
    got, s = salvaged(path)
    assert got == [0, 1, 2, 3, 4] and s.finished and not s.cut and not s.damage
    assert read_metadata(path) == {"task": "t", "success": True, "messages": 5}


def test_damaged_chunk_is_an_error_for_the_reader_and_skipped_by_salvage(tmp_path):
    """A flipped byte inside a chunk: reading the episode fails with the file named (chunk CRCs
    are checked, no silently wrong data); salvage skips that chunk and reads the others."""
    w = EpisodeWriter(tmp_path / "ep.mcap", flush_period_s=0.0)
    offsets = []
    for k in range(30):
        w.write_raw("/joint_states", JS, js(k, width=50), 1000 + k)
        if k % 10 == 9:
            w.flush()
            offsets.append(w.part_path.stat().st_size)
    path = w.close()
    data = bytearray(path.read_bytes())
    mid = (offsets[0] + offsets[1]) // 2  # inside the second chunk's compressed data
    data[mid] ^= 0xFF
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(bytes(data))
    with pytest.raises(EpisodeError, match=r"bad\.mcap.*corrupt"):
        list(read_messages(bad))
    got, s = salvaged(bad)
    assert got == [*range(10), *range(20, 30)] and len(s.damage) == 1 and "chunk" in s.damage[0]


def test_recover_leftovers_rewrites_moves_and_leaves_live_files_alone(tmp_path):
    d = tmp_path / "episodes"
    # A recording killed after a flush: recovered into recovered/, marked, the original gone.
    w = EpisodeWriter(d / "episode_00000.mcap", flush_period_s=0.0, metadata={"task": "reach", "start_ns": 5})
    for k in range(20):
        w.write_raw("/joint_states", JS, js(k), 1000 + k)
    w.flush()
    w.write_raw("/joint_states", JS, js(20), 2000)  # still in memory: lost with the process
    w.abort()
    # Garbage where a recording was: moved to corrupt/, bytes kept.
    (d / "episode_00001.mcap.part").write_bytes(b"\x89MCAP0\r\n\x01\xff\xff")
    (d / "episode_00002.mcap.part").write_bytes(b"")
    # A damaged chunk in the middle: rewritten, and the original kept in corrupt/ too.
    w3 = EpisodeWriter(d / "episode_00003.mcap", flush_period_s=0.0)
    for k in range(20):
        w3.write_raw("/joint_states", JS, js(k, width=50), 1000 + k)
        if k == 9:
            w3.flush()
            first = w3.part_path.stat().st_size
    w3.flush()
    w3.abort()
    data = bytearray((d / "episode_00003.mcap.part").read_bytes())
    data[first + 60] ^= 0xFF
    (d / "episode_00003.mcap.part").write_bytes(bytes(data))
    # A recording in progress (its writer alive): not touched.
    live = EpisodeWriter(d / "episode_00004.mcap", flush_period_s=0.0)
    live.write_raw("/joint_states", JS, js(0), 1000)
    live.flush()
    assert [p.name for p in leftover_parts(d)] == [f"episode_0000{i}.mcap.part" for i in range(4)]

    done = {x.source.name: x for x in recover_leftovers(d)}
    assert set(done) == {f"episode_0000{i}.mcap.part" for i in range(4)}
    x = done["episode_00000.mcap.part"]
    assert x.outcome == "recovered" and x.moved_to == d / RECOVERED_DIR / "episode_00000.mcap"
    assert not (d / "episode_00000.mcap.part").exists()
    meta = read_metadata(x.moved_to)
    assert meta["recovered"] is True and meta["task"] == "reach" and meta["messages"] == 20
    assert meta["success"] is None and meta["recovered_from"] == "episode_00000.mcap.part"
    assert [m.msg.position[0] for m in read_messages(x.moved_to)] == list(map(float, range(20)))
    for name in ("episode_00001.mcap.part", "episode_00002.mcap.part"):
        assert done[name].outcome == "corrupt" and done[name].moved_to == d / CORRUPT_DIR / name
    assert (d / CORRUPT_DIR / "episode_00001.mcap.part").read_bytes() == b"\x89MCAP0\r\n\x01\xff\xff"
    x3 = done["episode_00003.mcap.part"]
    assert x3.outcome == "recovered" and "unreadable chunk" in x3.why
    assert (d / CORRUPT_DIR / "episode_00003.mcap.part").read_bytes() == bytes(data)
    assert [m.msg.position[0] for m in read_messages(x3.moved_to)] == list(map(float, range(10)))
    # Recovered files are not finished episodes of the folder: a dataset build never takes them unasked.
    assert list_episodes(d) == [] and live.part_path.exists()
    live.close()
    assert list_episodes(d) == [d / "episode_00004.mcap"]
    # Run again: nothing left to do; a second recovery of the same name does not overwrite the first.
    assert recover_leftovers(d) == []
    shutil.copy(d / CORRUPT_DIR / "episode_00003.mcap.part", d / "episode_00000.mcap.part")
    again = recover_leftovers(d)
    assert again[0].moved_to == d / RECOVERED_DIR / "episode_00000.1.mcap"


def test_a_writer_never_clobbers_a_part_another_live_writer_holds(tmp_path):
    a = EpisodeWriter(tmp_path / "ep.mcap")
    a.write_raw("/joint_states", JS, js(1), 1000)
    with pytest.raises(EpisodeError, match="another recorder"):
        EpisodeWriter(tmp_path / "ep.mcap")
    assert [m.msg.position[0] for m in read_messages(a.close())] == [1.0]


def test_a_refused_write_leaves_every_flushed_message_readable(tmp_path):
    """The disk refuses a write (EFBIG past RLIMIT_FSIZE here, ENOSPC on a full disk: the same
    short write, then OSError): the error comes out of the write, abort() keeps the .part as it
    is on disk, and it reads back with at least every message flushed before."""
    import resource

    w = EpisodeWriter(tmp_path / "ep.mcap", flush_period_s=0.0, metadata={"task": "t"})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        with pytest.raises(OSError, match="File too large"):
            for k in range(10_000):
                w.write_raw("/joint_states", JS, js(k, width=30), 1000 + k)
                if k % 5 == 4:
                    w.flush()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    flushed = w.on_disk
    w.abort()
    assert flushed > 0 and w.part_path.stat().st_size == 20_000
    got, s = salvaged(w.part_path)
    assert got == list(range(len(got))) and flushed <= len(got) <= w.count and s.metadata == {"task": "t"}
    assert "cut at byte 20000" in s.cut


def test_a_damaged_record_header_keeps_the_original(tmp_path):
    """Bytes that are no record (a damaged header, not what a cut write leaves): the messages
    before are recovered, and the original is kept in corrupt/ for whatever else can read it."""
    w = EpisodeWriter(tmp_path / "episode.mcap", flush_period_s=0.0)
    for k in range(10):
        w.write_raw("/joint_states", JS, js(k), 1000 + k)
    w.flush()
    w.abort()
    good = w.part_path.read_bytes()
    raw = good + b"\x77" + struct.pack("<Q", 10**12) + bytes(200)
    w.part_path.write_bytes(raw)
    (x,) = recover_leftovers(tmp_path)
    assert x.outcome == "recovered" and "unknown record" in x.why
    assert [m.msg.position[0] for m in read_messages(x.moved_to)] == list(map(float, range(10)))
    assert (tmp_path / CORRUPT_DIR / "episode.mcap.part").read_bytes() == raw
    # Zeros at the end (a power cut before the data reached the disk, on some filesystems): a cut, not damage.
    (tmp_path / "episode2.mcap.part").write_bytes(good + bytes(4096))
    (y,) = recover_leftovers(tmp_path)
    assert y.outcome == "recovered" and "zeros from byte" in y.why and not y.salvage.damage
    assert not (tmp_path / "episode2.mcap.part").exists()
