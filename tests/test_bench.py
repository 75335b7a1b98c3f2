"""Smoke test of the performance benchmark: a tiny part of --quick, keys and positive numbers only."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_raw_and_actor_parts(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--scale", "0.2", "--only", "raw,actor",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((out / "bench.json").read_text())
    assert rep["errors"] == {}, rep["errors"]
    assert {"mode", "machine", "results", "derived", "durations"} <= set(rep)
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["torch"]

    r = rep["results"]
    assert r["raw"]["frames_per_s"] > 0
    split = r["actor"]["split"]
    parts = {"emulate", "preprocess", "infer", "other", "encode", "send"}
    assert set(split["us_per_step"]) == parts and set(split["percent"]) == parts
    assert all(v > 0 for v in split["us_per_step"].values())
    assert abs(sum(split["percent"].values()) - 100.0) < 1e-6
    assert split["ceiling_frames_per_s"] > 0

    wire = r["actor"]["wire"]["bytes_per_step"]
    assert {"lz4", "none"} <= set(wire) and all(v > 0 for v in wire.values())
    assert wire["lz4"] < wire["none"]  # real frames compress
    assert rep["derived"]["actor_ceiling_over_raw"] > 0

    md = (out / "bench.md").read_text()
    assert "| figure | value | target | ratio / verdict |" in md
    assert "raw emulator" in md and "bytes on the wire" in md
