"""Agents learn through the real pipeline: CartPole-v1, learner + 2 actor processes over ZeroMQ."""

from __future__ import annotations

from tests.conftest import read_actors, read_metrics, solve_cartpole


def _check_solved(run, result: dict, mode: str) -> None:
    assert result["solved"], f"{mode}: mean of the last 20 episodes {result['final_mean_return']} " \
                             f"after {result['steps']} steps"
    assert result["steps"] <= 300_000
    rows = read_metrics(run)
    assert rows[-1]["mean_return"] >= 475 and rows[-1]["updates"] > 0


def test_cartpole_async_reaches_475_within_300k_steps(solved_cartpole):
    run, result = solved_cartpole
    _check_solved(run, result, "async")


def test_cartpole_sync_reaches_475_within_300k_steps(tmp_path):
    run = tmp_path / "sync"
    result = solve_cartpole(run, "--mode", "sync", "--eval-interval", "0")
    _check_solved(run, result, "sync")
    assert result["policy_lag_max"] == 0, "sync rounds train only on the newest policy's data"


def test_cartpole_with_epsilon_ladder_still_learns(tmp_path):
    """Learning, not solving: a mean return of 300 (a random policy's is about 22) within the
    300k steps; reaching 475 took 34-98 s, the test that CartPole is solved is the one above."""
    run = tmp_path / "eps"
    result = solve_cartpole(run, "--exploration", "epsilon", "--eps-base", "0.1", "--eval-interval", "0",
                            "--stop-at-return", "300")
    assert result["solved"] and result["final_mean_return"] >= 300, result
    epsilons = sorted(a["epsilon"] for a in read_actors(run))
    assert len(epsilons) == 2 and 0 < epsilons[0] < epsilons[1] <= 0.1
