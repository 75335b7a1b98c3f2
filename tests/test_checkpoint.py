"""Checkpoints: atomic writes, rotation, fallback past a damaged file, --resume through the CLI."""

from __future__ import annotations

import subprocess

import pytest
import torch

from learner import checkpoint
from tests.conftest import BIN, free_base_port, last_metrics, wait_for


def test_rotation_keeps_newest_and_leaves_no_temp_files(tmp_path):
    for n in (5, 10, 15, 20):
        checkpoint.save(tmp_path, n, {"w": torch.full((3,), float(n))}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt_15.pt", "ckpt_20.pt"]
    assert not list(tmp_path.glob(".ckpt_*"))
    path, ckpt = checkpoint.load_latest(tmp_path)
    assert path.name == "ckpt_20.pt" and ckpt["w"][0] == 20


def test_temp_file_of_a_killed_write_is_cleaned_by_the_next_save(tmp_path):
    (tmp_path / ".ckpt_dead.tmp").write_bytes(b"partial")
    checkpoint.save(tmp_path, 1, {"w": torch.ones(1)}, keep=2)
    assert not list(tmp_path.glob(".ckpt_*.tmp"))


def test_damaged_newest_falls_back_to_previous(tmp_path):
    checkpoint.save(tmp_path, 1, {"w": torch.ones(2)}, keep=3)
    checkpoint.save(tmp_path, 2, {"w": torch.ones(2) * 2}, keep=3)
    (tmp_path / "ckpt_2.pt").write_bytes(b"half-written garbage")
    path, ckpt = checkpoint.load_latest(tmp_path)
    assert path.name == "ckpt_1.pt" and ckpt["w"][0] == 1


def test_resume_continues_counters_model_and_optimizer(procs, tmp_path):
    run = tmp_path / "run"
    port = free_base_port()
    flags = ("--env", "CartPole-v1", "--preset", "none", "--batch-size", "128", "--save-interval", "5")
    learner = procs.learner(*flags, port=port, run_dir=run)
    procs.actor(port, "a0")
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 12, 60, "12 updates")
    learner.terminate()
    learner.wait(15)
    assert learner.returncode == 0
    _, saved = checkpoint.load_latest(run / "checkpoints")
    frames, updates = saved["counters"]["frames"], saved["counters"]["updates"]
    assert saved["optimizer"]["state"], "optimizer moments are saved"

    procs.learner(*flags, "--resume", port=port, run_dir=run, log_name="learner2.log")
    assert f"resumed {run}/checkpoints/ckpt_{updates}.pt" in (tmp_path / "learner2.log").read_text()
    wait_for(lambda: last_metrics(run).get("updates", 0) >= updates + 5, 60, "updates after resume")
    row = last_metrics(run)
    assert row["frames"] > frames, "frames continue from the checkpoint, not from zero"


def test_no_checkpoint_is_none_and_all_damaged_is_one_clear_error(tmp_path):
    assert checkpoint.load_latest(tmp_path) is None
    (tmp_path / "ckpt_1.pt").write_bytes(b"garbage")
    (tmp_path / "ckpt_2.pt").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="none of the 2 checkpoints") as info:
        checkpoint.load_latest(tmp_path)
    assert "\n" not in str(info.value)


def test_find_takes_a_run_directory_a_file_or_a_name_in_the_run(tmp_path):
    ckpts = tmp_path / "checkpoints"
    checkpoint.save(ckpts, 3, {"w": torch.ones(1)}, keep=3)
    newest = checkpoint.save(ckpts, 7, {"w": torch.ones(1) * 7}, keep=3)
    assert checkpoint.find(tmp_path)[0] == newest
    assert checkpoint.find(newest)[0] == newest
    assert checkpoint.find(tmp_path, "ckpt_3.pt")[0] == ckpts / "ckpt_3.pt"
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint not found"):
        checkpoint.find(tmp_path, "ckpt_9.pt")
    with pytest.raises(checkpoint.CheckpointError, match="run directory not found"):
        checkpoint.find(tmp_path / "nope")


def test_resume_from_only_damaged_checkpoints_stops_with_one_line(tmp_path):
    """Starting fresh would rotate the damaged files away; the learner says so and stops."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "ckpt_5.pt").write_bytes(b"half-written")
    out = subprocess.run([str(BIN / "learner"), "--env", "CartPole-v1", "--run-dir", str(tmp_path / "run"),
                          "--resume", "--port", str(free_base_port())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("learner: error:") and "ckpt_5.pt does not load" in lines[-1], out.stderr
    assert (tmp_path / "run" / "checkpoints" / "ckpt_5.pt").read_bytes() == b"half-written"
