"""Reproducibility (issue 8.11): sync mode, two actors (or one actor host of three emulators), the
same seed: two runs write bit-identical checkpoints after the same number of updates."""

from __future__ import annotations

import torch

from learner import checkpoint
from tests.conftest import BIN, free_base_port, wait_for

FLAGS = ("--env", "CartPole-v1", "--preset", "none", "--mode", "sync", "--seed", "7", "--min-actors", "2",
         "--sync-timeout", "120", "--save-interval", "6", "--unroll-length", "16")


def _run(procs, tmp_path, name: str, *extra: str, flags: tuple[str, ...] = FLAGS, emulators: int = 0,
         updates: int = 6) -> dict:
    port = free_base_port()
    run = tmp_path / name
    procs.learner(*flags, *extra, port=port, run_dir=run, log_name=f"{name}.log")
    if emulators:  # one actor host, as ./launch.sh runs it
        procs.start([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}", "--emulators", str(emulators)],
                    tmp_path / f"{name}_host.log")
    else:
        procs.actor(port, f"{name}_a0")
        procs.actor(port, f"{name}_a1")
    path = run / "checkpoints" / f"ckpt_{updates}.pt"
    wait_for(path.exists, 120, f"{updates} updates")
    procs.stop_all()
    procs.procs.clear()
    return checkpoint.load(path)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_sync_mode_same_seed_same_checkpoints(procs, tmp_path):
    first, second = _run(procs, tmp_path, "first"), _run(procs, tmp_path, "second")
    assert _same(first["model"], second["model"]), "initial weights and every update are seeded"
    assert _same(first["optimizer"], second["optimizer"])
    for k in ("frames", "steps", "episodes", "updates", "recent_returns"):
        assert first["counters"][k] == second["counters"][k], k
    assert first["counters"]["updates"] == 6 and first["counters"]["steps"] == 6 * 2 * 16


def test_sync_mode_same_seed_same_checkpoints_with_adaptive_exploration(procs, tmp_path):
    # a short window: the bandits change arms many times in 6 updates (episodes of ~20 steps)
    extra = ("--exploration", "adaptive", "--bandit-window", "3", "--bandit-arms", "0.9,0.3,0")
    first, second = (_run(procs, tmp_path, name, *extra) for name in ("first", "second"))
    assert _same(first["model"], second["model"]), "the bandits' choices are seeded too"
    assert _same(first["optimizer"], second["optimizer"])
    for k in ("frames", "episodes"):
        assert first["counters"][k] == second["counters"][k], k
    # the same episodes; the two actors' may arrive within a round in either order
    assert sorted(first["counters"]["recent_returns"]) == sorted(second["counters"]["recent_returns"])
    assert first["counters"]["episodes"] >= 4


def test_sync_mode_same_seed_same_checkpoints_from_an_actor_host(procs, tmp_path):
    """A host batches its emulators' observations for the policy, and the CNN's numbers for one
    emulator differ a little with the batch it shares: made of whichever emulators answered first,
    two runs of one seed differed here in 4 of 4 tries. In sync mode the host steps them in
    lockstep (the policy runs on all of them at once, in slot order)."""
    flags = ("--env", "Airstriker-Genesis-v0", "--preset", "atari", "--mode", "sync", "--seed", "7",
             "--min-actors", "3", "--sync-timeout", "120", "--save-interval", "4", "--unroll-length", "32")
    first, second = (_run(procs, tmp_path, name, flags=flags, emulators=3, updates=4) for name in ("first", "second"))
    assert first["counters"]["updates"] == 4 and first["counters"]["frames"] == 4 * 3 * 32 * 4
    assert _same(first["model"], second["model"]), "the same batches, so the same numbers"
    assert _same(first["optimizer"], second["optimizer"])
