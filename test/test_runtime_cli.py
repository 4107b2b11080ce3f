"""`l1flow export` and `l1flow bench inference` (small sizes: structure, not absolute times)."""

from __future__ import annotations

import math

import pytest

from l1flow_ros.cli import main
from l1flow_ros.inference.synthetic import make_bundle

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.core]


def test_export_command_writes_graphs_and_fails_cleanly(tmp_path, capsys):
    from l1flow_ros.policy.bundle import read_manifest

    d = tmp_path / "b"
    fp0 = make_bundle(d, seed=2)
    assert main(["export", str(d)]) == 0
    out = capsys.readouterr().out
    m = read_manifest(d)
    assert {"encoder.onnx", "policy.onnx", "policy.warm.onnx"} <= set(m.files)
    assert m.fingerprint != fp0 and m.fingerprint in out
    assert main(["export", str(tmp_path / "nothing")]) == 1
    assert "not a directory" in capsys.readouterr().out


def test_bench_inference_rows_and_ratios(tmp_path):
    from l1flow_ros.inference.bench import available_backends, bench_inference, format_table, ratios

    src = tmp_path / "src"
    make_bundle(src, seed=0)
    backends = [b for b in available_backends(threads=1) if b.label in ("torch-cpu", "onnxruntime-cpu")]
    rows = bench_inference(src, tmp_path / "work", samplers=("imle:1", "fm:2"), backends=backends, iters=4,
                           warmup=1, rounds=2, encoder=True, log=lambda *_: None)
    got = {(r.sampler, r.backend) for r in rows}
    assert got == {(s, b) for s in ("imle1", "fm2", "encoder") for b in ("torch-cpu", "onnxruntime-cpu")}
    assert all(not r.error and len(r.samples_ms) == 4 and math.isfinite(r.p99) for r in rows)
    assert {r.sampler: r.trained for r in rows if r.sampler != "encoder"} == {"imle1": True, "fm2": False}
    to_fm = ratios(rows, "fm2")
    assert to_fm[("fm2", "torch-cpu")] == pytest.approx(1.0) and ("encoder", "torch-cpu") not in to_fm
    table = format_table(rows)
    assert table.count("\n") == 1 + len(rows)
