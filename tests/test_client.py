"""The actor's link to its learner is one state machine (joining, waiting for weights, running,
lost); here its transitions against a scripted learner (real sockets, a real actor process)."""

from __future__ import annotations

import threading
import time

from common import protocol
from common.config import Config
from common.model import build_model, spec_hash, state_to_numpy
from learner.server import actor_settings
from tests.conftest import free_base_port, wait_for
from tests.scripted import ScriptedLearner


def _scripted_learner():
    """A scripted learner on a free port with weights version 3: (learner, port, model, its
    numpy state, spec hash)."""
    port = free_base_port()
    settings = actor_settings(Config(env="CartPole-v1", publish_interval=0.5))
    model = build_model(settings["model"])
    state, sh = state_to_numpy(model), spec_hash(settings["model"])
    learner = ScriptedLearner(port, settings, protocol.encode_weights(state, version=3, spec_hash=sh,
                                                                      session="scripted"))
    return learner, port, model, state, sh


def _join(learner: ScriptedLearner, link, model) -> None:
    """The link joins the scripted learner (which welcomes it from a thread) and opens its data links."""
    t = threading.Thread(target=learner.welcome_next_hello, daemon=True)
    t.start()
    link.join()
    t.join(10)
    link.open_data_links(model)


def test_a_learner_that_forgot_the_actor_makes_it_join_again_with_its_id(procs, tmp_path):
    learner, port, *_ = _scripted_learner()
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


def test_a_republish_of_the_version_held_is_not_decoded(monkeypatch):
    """Weights are republished every few seconds; an actor reads the version from the message's
    head and decodes the 6.7 MB body only when it is newer (issue 19's profile: 4.8 % of an
    actor's samples went to decoding republishes). Real sockets, the actor's own link."""
    from actor.link import LearnerLink

    learner, port, model, state, sh = _scripted_learner()
    link = LearnerLink(f"tcp://127.0.0.1:{port}")
    decoded: list[int] = []
    real_decode = protocol.decode

    def counting_decode(buf, **kw):
        msg = real_decode(buf, **kw)
        if msg.get("kind") == "weights":
            decoded.append(msg["version"])
        return msg

    monkeypatch.setattr(protocol, "decode", counting_decode)
    try:
        _join(learner, link, model)

        def publish_until(pred, what):
            deadline = time.monotonic() + 20
            while not pred():
                learner.publish()
                assert time.monotonic() < deadline, what

        publish_until(lambda: link.poll_weights(model, timeout_ms=200), "weights v3 never adopted")
        assert link.version == 3 and decoded == [3]
        for _ in range(5):  # republishes of v3: seen (liveness) but not decoded
            before = link.weights_seen_at
            learner.publish()
            wait_for(lambda: link.sub.poll(50), 10, "the republish")
            assert link.poll_weights(model, timeout_ms=200) is False
            assert link.weights_seen_at > before
        assert decoded == [3], "a republish of the version held was decoded"
        learner.weights = protocol.encode_weights(state, version=4, spec_hash=sh, session="scripted")
        publish_until(lambda: link.poll_weights(model, timeout_ms=200), "weights v4 never adopted")
        assert link.version == 4 and decoded[-1] == 4
    finally:
        link.close()
        learner.close()


def test_peek_weights_reads_the_head_and_refuses_hostile_heads():
    state = {"w": __import__("numpy").zeros((2, 3), "float32")}
    buf = protocol.encode_weights(state, version=7, spec_hash="h", session="s1")
    assert protocol.peek_weights(buf) == (7, "s1")
    import msgpack
    for hostile in (
        protocol.encode("weights", version="7", spec_hash="h", session="s1", params={}),
        protocol.encode("weights", version=7.0, spec_hash="h", session="s1", params={}),
        protocol.encode("weights", version=True, spec_hash="h", session="s1", params={}),
        protocol.encode("weights", version=7, spec_hash="h", session=12, params={}),
        protocol.encode("weights", params={"w": b"x" * 300}, version=7, spec_hash="h", session="s1"),
        protocol.encode("welcome", version=7, spec_hash="h", session="s1"),
        msgpack.packb({"kind": "weights", "v": protocol.PROTOCOL_VERSION, "version": 7, "session": "s1"}),
        buf[:6], b"", b"\xc1" * 40,
    ):
        assert protocol.peek_weights(hostile) is None, hostile[:40]


def test_weights_do_not_end_lost_while_a_link_is_still_down():
    """The last weights of a learner that was just killed can reach an actor after its
    rollouts link dropped (CI: 5 messages of the old learner rejected by its successor). They
    must not put the link back to RUNNING: it stays LOST, holding rollouts, until the lost link
    is up again. Real sockets; the scripted learner loses only its rollouts socket."""
    import zmq

    from actor.link import LearnerLink, State

    learner, port, model, state, sh = _scripted_learner()
    link = LearnerLink(f"tcp://127.0.0.1:{port}")
    try:
        _join(learner, link, model)

        def publish_until(pred, what, seconds=20):
            deadline = time.monotonic() + seconds
            while not pred():
                link.tick()
                learner.publish()
                link.poll_weights(model, timeout_ms=100)
                assert time.monotonic() < deadline, what

        publish_until(lambda: link.running(), "never running")
        wait_for(lambda: (link.tick(), link.watches["rollouts"].up)[1], 10, "rollouts link up")
        learner.pull.close(0)  # the rollouts link drops; weights keep coming
        wait_for(lambda: (link.tick(), link.state is State.LOST)[1], 10, "LOST after the rollouts link dropped")
        learner.weights = protocol.encode_weights(state, version=4, spec_hash=sh, session="scripted")
        for _ in range(10):
            learner.publish()
            link.poll_weights(model, timeout_ms=100)
            link.tick()
        assert link.version == 4, "the newer weights are still taken"
        assert link.state is State.LOST, "weights ended LOST while the rollouts link was down"
        assert link.try_send(b"x") is False
        learner.pull = learner.ctx.socket(zmq.PULL)  # the rollouts link comes back
        learner.pull.linger = 0
        learner.pull.bind(f"tcp://127.0.0.1:{port + 1}")
        publish_until(lambda: link.state is State.RUNNING, "not RUNNING once every link was back")
    finally:
        link.close()
        learner.close()
