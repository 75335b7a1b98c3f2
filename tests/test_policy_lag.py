"""A learner slower than its actors trains on data only a few updates old: the actors are held
back at the learner's pace by small queues (one batch waiting in the learner, ZeroMQ queues of
2, kernel buffers of one message), not by a backlog of old rollouts (real learner, real actors,
real sockets)."""

from __future__ import annotations

from testkit.run_files import last_metrics, read_metrics
from tests.conftest import free_base_port, wait_for


def test_a_slow_learner_trains_on_rollouts_a_few_updates_old(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    # CartPole's preset: batches of 4 rollouts of 64 steps; each update held 0.5 s, so two
    # actors could make several batches during one. With the queues as they were (kernel
    # buffers of twice a rollout's largest size, which Linux doubles again, ZeroMQ queues of 4,
    # room for 2 batches in the learner) the data was 13 updates old here; now 5.5.
    procs.learner("--env", "CartPole-v1", "--update-delay", "0.5", "--report-interval", "1",
                  port=port, run_dir=run)
    for i in range(2):
        procs.actor(port, f"a{i}")
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 14, 120, "14 updates")
    rows = [r for r in read_metrics(run) if r["updates"] >= 6 and r["policy_lag_mean"] is not None]
    assert rows, read_metrics(run)[-3:]
    lags = [r["policy_lag_mean"] for r in rows]
    assert max(lags) <= 6.5, f"policy lag mean per report: {lags}"
    assert max(r["policy_lag_max"] for r in rows) <= 8
    assert rows[-1]["dropped_stale"] == 0
