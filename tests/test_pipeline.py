"""Learner and actor processes over real ZeroMQ sockets on 127.0.0.1 (CartPole-v1)."""

from __future__ import annotations

import zmq

from common import protocol
from common.runspec import RunSpec
from tests.conftest import CARTPOLE, free_base_port, last_metrics, read_actors, wait_for


def _hello(ctx: zmq.Context, port: int) -> dict:
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(protocol.encode("hello", host="test", pid=1, previous_id=None))
    assert dealer.poll(10_000), "no welcome"
    msg = protocol.decode(dealer.recv())
    dealer.close()
    assert msg["kind"] == "welcome"
    return msg


def test_actors_and_learner_update_and_adopt_weights(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, port=port, run_dir=run)
    procs.actor(port, "a0")
    procs.actor(port, "a1")

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port + 2}")
    try:
        row = wait_for(lambda: (m := last_metrics(run)).get("updates", 0) >= 30 and m, 90, "30 updates")
        versions = []  # the SUB queue holds old versions first; read until a recent one arrives
        while not versions or versions[-1] < 30:
            assert sub.poll(10_000), f"weights stopped at {versions[-1:]}"
            versions.append(protocol.decode(sub.recv())["version"])
    finally:
        sub.close()
        ctx.term()
    assert versions == sorted(versions), "published versions only go up"
    assert row["actors"] == 2 and len(read_actors(run)) == 2
    # Actors adopt new weights: data stays within a version or two of the learner, nothing stale.
    assert row["dropped_stale"] == 0
    assert row["policy_lag_max"] is not None and row["policy_lag_max"] <= 3
    assert row["frames"] > 30 * 256 and row["episodes"] > 0 and row["rejected_messages"] == 0


def test_epsilon_actors_send_their_own_log_probs_and_the_learner_trains_on_them(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--exploration", "epsilon", port=port, run_dir=run)
    procs.actor(port, "a0")  # actor 0: the ladder's most exploring rung (epsilon 0.4)
    row = wait_for(lambda: (m := last_metrics(run)).get("updates", 0) >= 5 and m, 90, "5 updates")
    assert row["rejected_messages"] == 0 and row["frames"] >= 5 * 256


def test_spec_in_welcome_matches_cartpole(procs, tmp_path):
    port = free_base_port()
    procs.learner("--env", "CartPole-v1", "--seed", "7", port=port, run_dir=tmp_path / "run")
    ctx = zmq.Context()
    try:
        w = _hello(ctx, port)
    finally:
        ctx.term()
    s = RunSpec.from_wire(w["settings"])  # what an actor reads, by attribute
    spec = s.rollout
    assert spec.frame_shape == (4,) and spec.n_actions == 2 and spec.frame_stack == 1
    assert spec.frame_dtype == "float32" and spec.max_episode_steps == 500, "CartPole's registered limit"
    assert s.env.id == "CartPole-v1" and s.env.frame_skip == 1 and w["actor_id"] == 0
