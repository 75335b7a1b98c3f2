"""The actor's link to its learner is one state machine (joining, waiting for weights, running,
lost); here its transitions against a scripted learner (real sockets, a real actor process)."""

from __future__ import annotations

import time

from common import protocol
from common.config import Config
from common.model import build_model, spec_hash, state_to_numpy
from learner.server import actor_settings
from tests.conftest import free_base_port, wait_for
from tests.scripted import ScriptedLearner


def test_a_learner_that_forgot_the_actor_makes_it_join_again_with_its_id(procs, tmp_path):
    port = free_base_port()
    settings = actor_settings(Config(env="CartPole-v1", publish_interval=0.5))
    weights = protocol.encode_weights(state_to_numpy(build_model(settings["model"])), version=3,
                                      spec_hash=spec_hash(settings["model"]), session="scripted")
    learner = ScriptedLearner(port, settings, weights)
    try:
        procs.actor(port, "a0")
        first = learner.welcome_next_hello(actor_id=7)
        assert first["previous_id"] is None
        deadline = time.monotonic() + 30
        while not learner.pull.poll(200):  # waiting for weights -> running: it sends rollouts
            learner.publish()
            assert time.monotonic() < deadline, "no rollout"
        r = protocol.decode(learner.pull.recv())
        assert (r["actor_id"], r["token"], r["policy_version"]) == (7, "t" * 32, 3)
        learner.router.send_multipart([learner.peer, protocol.encode("rejoin", reason="unknown actor id 7")])
        again = learner.welcome_next_hello(actor_id=7)  # joining again
        assert again["previous_id"] == 7, "it asks for its old id back"
        log = tmp_path / "a0.log"
        wait_for(lambda: "the learner no longer knows us" in log.read_text(), 10, "the reason in the log")
        while not learner.pull.poll(200):  # and runs again once weights come
            learner.publish()
            assert time.monotonic() < deadline + 30, "no rollout after the rejoin"
    finally:
        learner.close()
