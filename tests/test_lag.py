"""A deliberately slow learner: rollouts older than --max-policy-lag are dropped and counted."""

from __future__ import annotations

from tests.conftest import CARTPOLE, free_base_port, read_metrics, wait_for


def test_slow_learner_drops_and_counts_stale_rollouts(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--batch-size", "64", "--unroll-length", "16",
                  "--max-policy-lag", "1", "--update-delay", "0.3", port=port, run_dir=run)
    procs.actor(port, "a0")
    procs.actor(port, "a1")
    wait_for(lambda: (read_metrics(run) or [{}])[-1].get("dropped_stale", 0) > 0, 90, "stale rollouts dropped")
    rows = read_metrics(run)
    lags = [r["policy_lag_max"] for r in rows if r["policy_lag_max"] is not None]
    assert lags and max(lags) <= 1, "no update trains on data over the lag limit"
    assert rows[-1]["updates"] > 0
