"""benchmarks.floor's arithmetic, through its command line (tests import no benchmark module):
the floor of `./launch.sh N` from the parts' costs, and the profile's top list. The measurements
themselves run in `python -m benchmarks.floor`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _parts(update_s: float = 0.512) -> dict:
    # us per agent step (frame skip 4): actor 1,600 us a step = 400 us a frame
    step = {"emulate": 1200.0, "preprocess": 100.0, "infer": 260.0, "other": 20.0, "encode": 12.0, "send": 8.0}
    return {"actor": {"us_per_step": step}, "infer": {"1": 300.0, "4": 100.0},
            "trainer": {"batch": 512, "cpu": {"seconds_per_update": update_s, "threads": 1}},
            "learner_side": {"decode_us_per_rollout": 1024.0, "collate_us_per_rollout": 256.0, "steps_per_rollout": 32}}


def _floor(tmp_path, parts: dict, cores: int, *actors: int) -> dict:
    path = tmp_path / "parts.json"
    path.write_text(json.dumps({"parts": parts}))
    out = subprocess.run([sys.executable, "-m", "benchmarks.floor", "--part", "floor", "--parts", str(path),
                          "--cores", str(cores), "--actors", *map(str, actors)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_floor_shares_the_cores_between_actors_and_learner(tmp_path):
    f = _floor(tmp_path, _parts(), 2, 2)["2"]
    # learner: 0.512 s / (512 x 4) frames = 250 us a frame, + 1,280 us / 128 frames = 10
    assert f["actor_us_per_frame"] == pytest.approx(400.0)
    assert f["learner_us_per_frame"] == pytest.approx(260.0)
    assert f["bound"] == "cores" and f["frames_per_s"] == pytest.approx(2e6 / 660.0)


def test_floor_bounded_by_the_actors_own_cores_and_the_learner_thread(tmp_path):
    f = _floor(tmp_path, _parts(update_s=0.01), 8, 1)["1"]
    assert f["bound"] == "actors" and f["frames_per_s"] == pytest.approx(1e6 / 400.0)
    f = _floor(tmp_path, _parts(update_s=4.0), 64, 8)["8"]
    assert f["bound"] == "learner_thread" and f["frames_per_s"] == pytest.approx(512 * 4 / 4.0)


def test_a_host_infers_at_the_batch_its_emulators_make(tmp_path):
    fs = _floor(tmp_path, _parts(), 2, 2, 3, 8)
    assert [fs[n]["host_batch"] for n in ("2", "3", "8")] == [1, 1, 4]
    assert fs["8"]["infer_us_per_sample"] == 100.0
    assert fs["8"]["actor_us_per_frame"] == pytest.approx((1600.0 - 260.0 + 100.0) / 4)


def test_the_busy_floor_takes_the_parts_measured_with_the_other_cores_busy(tmp_path):
    parts = _parts()
    step = dict(parts["actor"]["us_per_step"], emulate=1500.0, infer=520.0)  # emulation 1.25x, inference 2x
    parts["actor_busy"] = {"busy_cores": 1, "us_per_step": step}
    parts["trainer_busy"] = {"batch": 512, "cpu": {"seconds_per_update": 0.768, "threads": 1}}  # 1.5x
    fs = _floor(tmp_path, parts, 2, 2, 8)
    assert fs["2"]["actor_us_per_frame"] == pytest.approx(400.0)  # the floor alone is unchanged
    assert fs["2"]["learner_us_per_frame"] == pytest.approx(260.0)
    assert fs["2 busy"]["actor_us_per_frame"] == pytest.approx((1600.0 + 300.0 + 260.0) / 4)
    assert fs["2 busy"]["learner_us_per_frame"] == pytest.approx(375.0 + 10.0)
    assert fs["2 busy"]["frames_per_s"] == pytest.approx(2e6 / (540.0 + 385.0))
    # the host's batch of 4 costs what batch 1 cost more with the cores busy: 100 x 2
    assert fs["8 busy"]["infer_us_per_sample"] == pytest.approx(200.0)
    assert "2 busy" not in _floor(tmp_path, _parts(), 2, 2)  # older parts without it: no busy floor


def test_top_functions_counts_own_time(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("main (a.py:1);step (b.py:2) 30\nmain (a.py:1);infer (c.py:3) 10\nmain (a.py:1);step (b.py:2) 20\n")
    lines = subprocess.run([sys.executable, "-m", "benchmarks.floor", "--part", "top", "--profile-file", str(path)],
                           capture_output=True, text=True, cwd=ROOT, timeout=120, check=True).stdout.splitlines()
    assert lines[0] == "60 samples, own time"
    assert "83.3 %  step (b.py:2)" in lines[1] and "16.7 %  infer (c.py:3)" in lines[2]


def test_parts_of_another_game_are_refused_in_one_line(tmp_path):
    path = tmp_path / "parts.json"
    path.write_text(json.dumps({"env": "Airstriker-Genesis-v0", "parts": _parts()}))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.floor", "--parts", str(path), "--env", "ALE/Pong-v5",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "out" / "launch_2").exists()
    assert proc.stderr.strip().splitlines()[-1].endswith(
        f"--parts {path} measured Airstriker-Genesis-v0, not --env ALE/Pong-v5")
