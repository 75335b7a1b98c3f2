"""Checkpoints: atomic writes, rotation, fallback past a damaged file, --resume through the CLI."""

from __future__ import annotations

import torch

from learner import checkpoint
from tests.conftest import free_base_port, last_metrics, wait_for


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
    flags = ("--env", "CartPole-v1", "--batch-size", "128", "--save-interval", "5")
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
