"""Well-formed poison (issue 8.1, 8.2, 8.15): valid msgpack, the right schema, hostile values,
sent by a client that joined like an actor. A real actor trains beside it on CartPole-v1.
"""

from __future__ import annotations

import json
import time

import numpy as np

from common import protocol
from common.model import build_model, expected_params
from learner import checkpoint
from tests.conftest import (
    CARTPOLE,
    cartpole_rollout,
    free_base_port,
    last_metrics,
    read_actors,
    read_metrics,
    wait_for,
)
from tests.scripted import ScriptedActor


def _strict_rows(run) -> list[dict]:
    def refuse(name: str):
        raise ValueError(f"{name} in metrics.jsonl")

    return [json.loads(line, parse_constant=refuse)
            for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _beyond_the_bounds(evil: ScriptedActor) -> list[bytes]:
    """Rollouts no real actor can send, each wrong in one value (with --max-abs-reward 1)."""
    pack, aid = protocol.pack_array, evil.actor_id
    r = cartpole_rollout(aid)
    ended = cartpole_rollout(aid, done_at=(9,))
    two = cartpole_rollout(aid, done_at=(4, 9))

    def ep(ret, length, frames=None):
        return {"return": ret, "length": length, "frames": length if frames is None else frames}

    return [
        evil.rollout_message(r, behaviour_logp=pack(np.full(32, -1e30, np.float32))),
        evil.rollout_message(r, rewards=pack(np.full(32, 3e38, np.float32))),
        evil.rollout_message(r, rewards=pack(np.full(32, 1.5, np.float32))),  # over --max-abs-reward
        evil.rollout_message(r, frames=pack(np.full((33, 4), 3e38, np.float32))),
        evil.rollout_message(ended, episodes=[ep(1e30, 10)]),  # ends --stop-at-return on main
        evil.rollout_message(two, episodes=[ep(1.7e308, 5), ep(1.7e308, 5)]),  # Infinity in metrics on main
        evil.rollout_message(r, episodes=[ep(5.0, 5)]),  # an episode without its done flag
        evil.rollout_message(ended, episodes=[]),  # a done flag without its episode
        evil.rollout_message(ended, episodes=[ep(3.0, 600)]),  # over CartPole's 500-step limit
        evil.rollout_message(ended, episodes=[ep(3.0, 3)]),  # shorter than the steps sent for it
        evil.rollout_message(ended, episodes=[ep(10.0, 10, frames=40)]),  # frames != length x skip
    ]


def test_well_formed_poison_is_rejected_and_the_bounds_keep_training_finite(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--max-abs-reward", "1", "--stop-at-return", "1000", "--return-window", "1",
                  "--save-interval", "5", port=port, run_dir=run)
    procs.actor(port, "a0")
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 3, 90, "first updates")
    evil = ScriptedActor(port)
    try:
        evil.join()
        poison = _beyond_the_bounds(evil)
        for _ in range(3):
            for buf in poison:
                evil.send(buf)
        expected = 3 * len(poison)
        wait_for(lambda: last_metrics(run)["rejected_messages"] >= expected, 30, "poison counted")
        # at the bounds: what a real actor could send, log-probabilities at the floor and every
        # reward at --max-abs-reward; accepted, trained on, and the weights stay finite
        u0 = last_metrics(run)["updates"]
        version = 0
        for i in range(40):
            if i % 10 == 0:
                version = evil.newest_weights()["version"]
            at_bounds = cartpole_rollout(evil.actor_id, version=version, seed=i, logp=protocol.LOGP_FLOOR,
                                         reward=-1.0 if i % 2 else 1.0)
            evil.send(evil.rollout_message(at_bounds))
        wait_for(lambda: last_metrics(run)["updates"] >= u0 + 12, 60, "updates on the bounded poison")
        weights = evil.newest_weights()
        spec = evil.welcome["settings"]["model"]
        params = protocol.validate_weights(weights, expected_params(build_model(spec)), weights["spec_hash"])
        assert all(np.isfinite(p).all() for p in params.values())  # validate_weights checks it too
    finally:
        evil.close()
    row = last_metrics(run)
    assert row["rejected_messages"] == expected, "each poisoned message rejected once, nothing else"
    assert row["skipped_updates"] == 0, "values within the bounds never need the guard"
    assert procs.procs[0].poll() is None, "no claimed return ended the run"
    rows = _strict_rows(run)  # strict JSON: no NaN, no Infinity
    assert rows == read_metrics(run) and all(r["mean_return"] is None or r["mean_return"] <= 500 for r in rows)
    _, ckpt = checkpoint.load_latest(run / "checkpoints")
    assert all(bool(t.isfinite().all()) for t in ckpt["model"].values())
    actor_log = (tmp_path / "a0.log").read_text()
    assert "dropped bad weights" not in actor_log and "Traceback" not in actor_log
    learner_log = (tmp_path / "learner.log").read_text()
    assert "rejected message" in learner_log and "Traceback" not in learner_log


def test_forged_actor_ids_are_rejected_and_counted(procs, tmp_path):
    """Issue 8.3: a rollout or heartbeat speaks for an actor only with the token of its welcome."""
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, port=port, run_dir=run)
    alice, mallory = ScriptedActor(port), ScriptedActor(port)
    try:
        alice.join()
        mallory.join()
        assert alice.welcome["token"] != mallory.welcome["token"] and len(alice.welcome["token"]) == 32
        r = cartpole_rollout(alice.actor_id)
        alice.send(alice.rollout_message(r))  # genuine: accepted
        wait_for(lambda: last_metrics(run).get("frames", 0) == 32, 20, "alice's rollout counted")
        forged = [mallory.rollout_message(r, actor_id=alice.actor_id),  # mallory's token, alice's id
                  mallory.rollout_message(r, actor_id=alice.actor_id, token="0" * 32),
                  mallory.rollout_message(r, actor_id=alice.actor_id, token="")]
        for buf in forged:
            mallory.send(buf)
        mallory.heartbeat(actor_id=alice.actor_id)  # alice's id and the session, mallory's token
        assert mallory.dealer.poll(5000), "the forger is told to join properly"
        note = protocol.decode(mallory.dealer.recv())
        assert note["kind"] == "rejoin" and "token" in note["reason"]
        alice.heartbeat()  # genuine: accepted, no answer
        row = wait_for(lambda: (m := last_metrics(run))["rejected_messages"] >= 4 and m, 20, "forgeries counted")
        assert not alice.dealer.poll(1000)
    finally:
        alice.close()
        mallory.close()
    time.sleep(0.6)
    row = last_metrics(run)
    assert row["rejected_messages"] == 4 and row["frames"] == 32, row
    assert row["actors"] == 1, "alice confirmed by her rollout and heartbeat; mallory never spoke as herself"
    assert [a["actor_id"] for a in read_actors(run)] == [alice.actor_id]


def test_messages_sent_before_a_rejoin_are_late_not_forged(procs, tmp_path):
    """Found by the chaos run: an actor that joins again (after a freeze, with its old id) gets a
    new token, and its heartbeats and rollouts sent before the new welcome reached it carry the
    old one; they were counted as rejected messages (attacks). Now they are dropped quietly (a
    rollout as stale), while a token the id never held is still rejected."""
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--actor-timeout", "1", port=port, run_dir=run)
    alice, again, mallory = ScriptedActor(port), ScriptedActor(port), ScriptedActor(port)
    try:
        alice.join()
        r = cartpole_rollout(alice.actor_id)
        alice.send(alice.rollout_message(r))
        wait_for(lambda: last_metrics(run).get("frames", 0) == 32, 20, "alice's rollout counted")
        late_rollout = alice.rollout_message(r)
        time.sleep(1.5)  # silent past --actor-timeout: her id is free to take back
        again.join(previous_id=alice.actor_id)  # alice again, on a new connection as after a reconnect
        assert again.welcome["token"] != alice.welcome["token"] and again.actor_id == alice.actor_id
        alice.heartbeat()  # with the old token: in flight when the new welcome came
        alice.send(late_rollout)
        assert not alice.dealer.poll(1000), "no rejoin note for a late heartbeat"
        mallory.join()
        mallory.heartbeat(actor_id=alice.actor_id, token="0" * 32)  # never her token: still a forgery
        row = wait_for(lambda: (m := last_metrics(run))["rejected_messages"] >= 1 and m, 20, "the forgery counted")
        time.sleep(1.5)
        row = last_metrics(run)
        assert row["rejected_messages"] == 1, row
        assert row["dropped_stale"] == 1 and row["frames"] == 32, row
    finally:
        for a in (alice, again, mallory):
            a.close()
