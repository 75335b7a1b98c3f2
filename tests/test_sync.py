"""Sync mode under loss (issue 8.6) and its exact rounds (issue 8.7). CartPole-v1, real sockets."""

from __future__ import annotations

import time

from common import protocol
from common.config import Config
from common.model import build_model, spec_hash, state_to_numpy
from learner.server import actor_settings
from tests.conftest import cartpole_rollout, free_base_port, last_metrics, read_metrics, wait_for
from tests.scripted import ScriptedActor, ScriptedLearner

SYNC = ("--env", "CartPole-v1", "--preset", "none", "--mode", "sync")


def test_a_round_trains_on_what_it_has_when_a_live_actor_never_delivers(procs, tmp_path):
    """An actor whose rollout was lost keeps heartbeating (so it stays live); the round must
    not wait for it forever."""
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*SYNC, "--sync-timeout", "1", port=port, run_dir=run)
    silent = ScriptedActor(port)
    silent.join()
    silent.heartbeat()  # confirmed and live from now on, but it never sends a rollout
    procs.actor(port, "a0")
    beat = [time.monotonic()]

    def keep_beating_and(cond):
        if time.monotonic() - beat[0] > 1:
            silent.heartbeat()
            beat[0] = time.monotonic()
        return cond()

    try:
        wait_for(lambda: keep_beating_and(lambda: last_metrics(run).get("actors") == 2), 60, "both live")
        u0 = last_metrics(run)["updates"]
        wait_for(lambda: keep_beating_and(lambda: last_metrics(run)["updates"] >= u0 + 4), 30,
                 "updates although one live actor never delivers")
        assert last_metrics(run)["actors"] == 2
    finally:
        silent.close()
    assert max(r["policy_lag_max"] or 0 for r in read_metrics(run)) == 0


def test_an_actor_whose_rollout_was_lost_sends_another(procs, tmp_path):
    """The actor side of 8.6, against a scripted learner that loses the first rollout."""
    port = free_base_port()
    settings = actor_settings(Config(env="CartPole-v1", mode="sync", sync_timeout=1.0, publish_interval=0.5))
    weights = protocol.encode_weights(state_to_numpy(build_model(settings["model"])), version=0,
                                      spec_hash=spec_hash(settings["model"]), session="scripted")
    learner = ScriptedLearner(port, settings, weights)
    try:
        actor = procs.actor(port, "a0")
        learner.welcome_next_hello()
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            learner.publish()  # version 0, again and again: never a newer one
            if learner.pull.poll(250):
                got.append((time.monotonic(), protocol.decode(learner.pull.recv())))  # and lost: no update
        assert actor.poll() is None
    finally:
        learner.close()
    assert len(got) == 2, "after the first rollout was lost the actor sent another"
    (t1, first), (t2, second) = got
    assert first["policy_version"] == second["policy_version"] == 0
    assert 1.0 <= t2 - t1 <= 10, t2 - t1  # after sync_timeout + two republishes, not forever
    assert "sending another rollout" in (tmp_path / "a0.log").read_text()


def test_a_late_rollout_never_slips_into_the_next_round(procs, tmp_path):
    """A rollout made with version k that arrives while the update on round k runs is stale:
    round k+1 holds only rollouts made with k+1 (policy lag 0, exactly)."""
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*SYNC, "--update-delay", "1.5", "--sync-timeout", "30", port=port, run_dir=run)
    a = ScriptedActor(port)
    try:
        a.join()
        for i in range(3):
            version = a.newest_weights()["version"]
            assert version == i
            a.send(a.rollout_message(cartpole_rollout(a.actor_id, version=version, seed=i)))
            time.sleep(0.5)  # the update on it is running now (1.5 s)
            a.send(a.rollout_message(cartpole_rollout(a.actor_id, version=version, seed=100 + i)))  # late
            wait_for(lambda v=version: last_metrics(run).get("updates", 0) >= v + 1, 30, "the round's update")
            wait_for(lambda v=version: a.newest_weights()["version"] > v, 30, "the next version published")
    finally:
        a.close()
    time.sleep(1)
    rows = read_metrics(run)
    assert rows[-1]["updates"] == 3, "one update a round, none on the late rollouts"
    assert max(r["policy_lag_max"] or 0 for r in rows) == 0
    assert rows[-1]["dropped_stale"] == 3
