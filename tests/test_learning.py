"""Agents learn through the real pipeline: CartPole-v1, learner + 2 actor processes over ZeroMQ."""

from __future__ import annotations

import pytest

from tests.conftest import CARTPOLE_FLAGS, read_actors, read_metrics, run_pipeline


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_cartpole_reaches_475_within_300k_steps(tmp_path, mode):
    run = tmp_path / mode
    flags = [*CARTPOLE_FLAGS, "--mode", mode, "--seed", "1", "--stop-at-return", "475",
             "--return-window", "20", "--total-frames", "300000"]
    result = run_pipeline(flags, actors=2, run_dir=run, timeout=420)
    assert result["solved"], f"{mode}: mean of the last 20 episodes {result['final_mean_return']} " \
                             f"after {result['steps']} steps"
    assert result["steps"] <= 300_000
    rows = read_metrics(run)
    assert rows[-1]["mean_return"] >= 475 and rows[-1]["updates"] > 0
    if mode == "sync":
        assert result["policy_lag_max"] == 0, "sync rounds train only on the newest policy's data"


def test_cartpole_with_epsilon_ladder_still_learns(tmp_path):
    run = tmp_path / "eps"
    flags = [*CARTPOLE_FLAGS, "--exploration", "epsilon", "--eps-base", "0.1", "--seed", "1",
             "--stop-at-return", "475", "--return-window", "20", "--total-frames", "300000"]
    result = run_pipeline(flags, actors=2, run_dir=run, timeout=420)
    assert result["solved"], result
    epsilons = sorted(a["epsilon"] for a in read_actors(run))
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1] <= 0.1
