"""perception_node in its own process, fed by a camera publisher process (bench/bench_perception_node.py).

Short runs of the rate bench, checking its accounting rather than its timing (the 60 s run at
30 Hz is the bench's): every set the publisher sent is either encoded or counted by the node as
dropped (``sets_dropped`` on /diagnostics), every embedding is of a set that was sent, in order;
and a burst faster than the node can encode makes it drop, and say so, instead of queueing.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.graph

ROOT = Path(__file__).resolve().parents[1]


def bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "rate.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_perception_node.py"), "--views", "2", "--width", "64",
           "--height", "48", "--num-points", "256", "--max-observation-age", "30", "--json", str(out), *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_set_encoded_or_counted(tmp_path):
    r = bench(tmp_path, "--rate", "5", "--seconds", "4", "--warmup", "1")
    assert r["total_sent"] >= 10
    assert r["node_published_total"] + r["node_dropped_total"] == r["total_sent"]
    assert 0 < r["total_received"] <= r["node_published_total"]
    assert r["foreign_embeddings"] == 0 and r["stamps_increasing"]
    assert "sets_dropped" in r["node_diagnostics"]


def test_a_burst_is_dropped_and_counted_not_queued(tmp_path):
    r = bench(tmp_path, "--rate", "1000", "--seconds", "0.05", "--warmup", "0")
    assert r["total_sent"] >= 20
    assert r["node_dropped_total"] > 0
    assert r["node_published_total"] + r["node_dropped_total"] <= r["total_sent"]
    assert r["node_published_total"] < r["total_sent"]  # the newest set wins; no backlog is worked off
    assert r["foreign_embeddings"] == 0 and r["stamps_increasing"]
