"""--anneal-lr across --resume: the learning rate goes on from the checkpoint's frames."""

from __future__ import annotations

import pytest

from common.config import Config
from learner import checkpoint
from learner.server import Learner


def test_resumed_run_anneals_from_the_frames_already_done(tmp_path):
    run = tmp_path / "run"
    cfg = dict(env="CartPole-v1", preset="none", total_frames=100_000, lr=1e-3, eval_interval=0.0)
    first = Learner(Config(**cfg), run)
    counters = {**first.counters(), "frames": 40_000, "updates": 7}
    assert first.worker.save_checkpoint(run, counters) is not None
    assert first.worker.trainer.learning_rate() == 1e-3
    first.worker.shutdown()

    resumed = Learner(Config(**cfg, resume=True), run)
    resumed.worker.shutdown()
    assert resumed.worker.trainer.frames_done == 40_000
    assert resumed.worker.trainer.learning_rate() == pytest.approx(0.6e-3)
    assert checkpoint.load_latest(run / "checkpoints") is not None
