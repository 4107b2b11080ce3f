"""Dataset building with truncated, corrupt and cut-off episodes in the folder: each is skipped
with the file named and why, the rest is built; `l1flow dataset recover` brings a cut-off one
back; a store whose disk refuses a write is left as it was before the episode."""

import json
import resource

import numpy as np
import pytest
import yaml
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray

from l1flow_ros.data.dataset_build import DatasetConfig, DatasetError, build_dataset
from l1flow_ros.data.mcap_io import RECOVERED_DIR, EpisodeWriter, read_metadata
from l1flow_ros.data.store import StoreWriteError, StoreWriter, open_store
from l1flow_ros.msgs.chunk_conv import ns_to_stamp
from l1flow_ros.spec import ActionSpec, ObservationSpec

pytestmark = pytest.mark.core

SPEC = ObservationSpec(cameras=("a",), image_size=(8, 8), use_rgb=True)
ACT = ActionSpec(names=("j0",), horizon=2, n_action_steps=1, dt=0.1)
CFG = DatasetConfig(observation=SPEC, action=ACT, only_successful=False)


def write_episode(path, steps: int = 40, seed: int = 0, close: bool = True, flush_every: int = 10) -> EpisodeWriter:
    """An episode of ``steps`` 8 x 12 rgb frames and commands at dt; flushed every ``flush_every`` steps."""
    rng = np.random.default_rng(seed)
    w = EpisodeWriter(path, flush_period_s=0.0, metadata={"task": "t"})
    for k in range(steps):
        stamp = 10**9 + k * 100_000_000
        img = Image(height=8, width=12, encoding="rgb8", step=36,
                    data=rng.integers(0, 256, 8 * 36, dtype=np.uint8).tobytes())
        img.header.stamp = ns_to_stamp(stamp)
        w.write_raw("/a/color/image_raw", "sensor_msgs/msg/Image", serialize_message(img), stamp)
        w.write_raw("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray",
                    serialize_message(Float64MultiArray(data=[0.01 * k])), stamp)
        if k % flush_every == flush_every - 1:
            w.flush()
    if close:
        w.close(success=True)
    return w


def test_build_skips_truncated_corrupt_and_cut_off_episodes_naming_each(tmp_path, capsys):
    from l1flow_ros.cli import main

    d = tmp_path / "episodes"
    for i in range(2):
        write_episode(d / f"ep{i}.mcap", seed=i)
    data = (d / "ep0.mcap").read_bytes()
    (d / "ep2_truncated.mcap").write_bytes(data[: len(data) * 2 // 3])  # a copy cut short
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside a chunk
    (d / "ep3_corrupt.mcap").write_bytes(bytes(flipped))
    (d / "ep4_empty.mcap").write_bytes(b"")
    write_episode(d / "ep5.mcap", seed=5, close=False).abort()  # a recorder killed mid-episode
    report = build_dataset(d, tmp_path / "s.zarr", CFG, progress=False)
    assert report.episodes_written == 2
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in report.skipped}
    assert set(reasons) == {"ep2_truncated.mcap", "ep3_corrupt.mcap", "ep4_empty.mcap", "ep5.mcap.part"}
    assert "truncated" in reasons["ep2_truncated.mcap"] and "ep2_truncated.mcap" in reasons["ep2_truncated.mcap"]
    assert "corrupt" in reasons["ep3_corrupt.mcap"] and "cut off" in reasons["ep5.mcap.part"]
    assert "not an MCAP file" in reasons["ep4_empty.mcap"]
    one = build_dataset([d / "ep0.mcap"], tmp_path / "one.zarr", CFG, progress=False)
    assert report.steps_written == 2 * one.steps_written  # the two whole episodes, nothing of the others
    # The command line says the same, each file by name; then recover brings the cut-off one back.
    cfg_file = tmp_path / "dataset.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(json.dumps(CFG.to_dict()))))
    assert main(["dataset", "build", str(d), "--out", str(tmp_path / "cli.zarr"), "--config", str(cfg_file),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("ep2_truncated.mcap", "ep3_corrupt.mcap", "ep5.mcap.part"):
        assert f"skipped {name}" in out, out
    assert main(["dataset", "info", str(d)]) == 0
    out = capsys.readouterr().out
    assert "ep2_truncated.mcap: unreadable" in out and "ep5.mcap.part: a recording cut off" in out, out
    assert main(["dataset", "recover", str(d), str(d / "ep2_truncated.mcap")]) == 0
    out = capsys.readouterr().out
    assert "ep5.mcap.part: recovered" in out and "ep2_truncated.mcap:" in out
    rec = sorted((d / RECOVERED_DIR).glob("*.mcap"))
    assert [p.name for p in rec] == ["ep2_truncated.mcap", "ep5.mcap"]
    assert read_metadata(rec[1])["recovered"] is True
    again = build_dataset(d / RECOVERED_DIR, tmp_path / "rec.zarr", CFG, progress=False)
    assert again.episodes_written == 2 and not again.skipped
    # ep5 was flushed every 10 steps before its writer stopped: all its 40 steps were on disk.
    ep5 = build_dataset([rec[1]], tmp_path / "ep5.zarr", CFG, progress=False)
    assert ep5.steps_written == one.steps_written and again.steps_written > ep5.steps_written
    assert main(["dataset", "recover", str(d / "ep4_empty.mcap")]) == 1


def test_a_store_the_disk_refuses_is_left_as_before_the_episode(tmp_path):
    """A write that fails halfway (EFBIG past RLIMIT_FSIZE, as ENOSPC from a full disk) is undone:
    the store still opens with every earlier episode; the build stops with the reason."""
    d = tmp_path / "episodes"
    for i in range(3):
        write_episode(d / f"ep{i}.mcap", seed=i, steps=20)
    store = tmp_path / "s.zarr"
    rgb = np.zeros((20, 1, 3, 8, 8), np.uint8)
    w = StoreWriter(store, SPEC, ACT)
    w.add_episode({"rgb": rgb}, np.zeros((20, 1), np.float32))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        big = np.random.default_rng(0).integers(0, 256, (40, 1, 3, 8, 8), dtype=np.uint8)
        with pytest.raises(StoreWriteError, match="undone"):
            w.add_episode({"rgb": big}, np.zeros((40, 1), np.float32))
        with pytest.raises(DatasetError, match=r"(?s)File too large.*stopped after"):
            build_dataset(d, tmp_path / "b.zarr", CFG, progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    _, _, arrays = open_store(store)
    assert arrays["episode_ends"].tolist() == [20] and arrays["rgb"].shape[0] == 20
    w.add_episode({"rgb": rgb}, np.ones((20, 1), np.float32))  # and it takes episodes again
    assert open_store(store)[2]["episode_ends"].tolist() == [20, 40]
