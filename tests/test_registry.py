"""The actor registry (issue 8.3, 8.4): tokens and keys, rate limits, pruning, --max-actors."""

from __future__ import annotations

import json

import pytest

from common.config import Config
from learner.registry import (
    ANSWER_BURST,
    PEER_BURST,
    SUPERSEDED_S,
    UNCONFIRMED_S,
    IdentityError,
    Registry,
    SupersededToken,
)
from learner.rounds import SyncRound
from tests.conftest import cartpole_rollout

HELLO = {"host": "h", "pid": 1, "previous_id": None}


@pytest.fixture
def reg(tmp_path):
    r = Registry(Config(env="CartPole-v1", max_actors=4), tmp_path, now=0.0)
    yield r
    r.close()


def test_each_actor_speaks_only_with_its_own_token_and_key(reg, tmp_path):
    a, b = reg.join(HELLO, None, 0.0), reg.join(HELLO, "KEY-B", 0.0)
    assert a.token != b.token and len(a.token) == 32
    assert reg.verify(a.actor_id, a.token, None, 1.0) is a
    with pytest.raises(IdentityError, match="wrong token"):
        reg.verify(a.actor_id, b.token, None, 1.0)
    with pytest.raises(IdentityError, match="unknown"):
        reg.verify(99, a.token, None, 1.0)
    with pytest.raises(IdentityError, match="CURVE key"):
        reg.verify(b.actor_id, b.token, "KEY-A", 1.0)  # b's token, another key
    reg.verify(b.actor_id, b.token, "KEY-B", 1.0)
    lines = [json.loads(x) for x in (tmp_path / "actors.jsonl").read_text().splitlines()]
    assert [x["actor_id"] for x in lines] == [a.actor_id, b.actor_id], "written when confirmed"


def test_rate_limits_per_peer_before_overall(reg):
    now = 0.0
    assert all(reg.admit(b"noisy", now) for _ in range(PEER_BURST))
    assert not reg.admit(b"noisy", now) and reg.rate_limited == 1
    assert reg.admit(b"quiet", now), "one noisy connection does not use up the others' budget"
    assert reg.admit(b"noisy", now + 0.5), "and it gets its rate back"
    assert reg.may_answer(now, b"noisy") and not reg.may_answer(now + 9, b"noisy"), "one welcome a connection"
    assert reg.may_answer(now, b"quiet")
    answered = 2 + sum(reg.may_answer(now) for _ in range(ANSWER_BURST + 10))
    assert answered == ANSWER_BURST


def test_unconfirmed_and_silent_actors_are_forgotten(reg):
    a, b = reg.join(HELLO, None, 0.0), reg.join(HELLO, None, 0.0)
    reg.verify(a.actor_id, a.token, None, 1.0)
    assert reg.live(2.0) == [a.actor_id], "only confirmed actors count"
    assert reg.prune(UNCONFIRMED_S + 1) == [b.actor_id]
    assert reg.prune(reg.forget_after + 2) == [a.actor_id]
    with pytest.raises(IdentityError):
        reg.verify(a.actor_id, a.token, None, reg.forget_after + 3)


def test_max_actors_evicts_the_unconfirmed_then_refuses(reg):
    first = reg.join(HELLO, None, 0.0)
    for _ in range(3):
        info = reg.join(HELLO, None, 0.0)
        reg.verify(info.actor_id, info.token, None, 0.0)
    assert reg.join(HELLO, None, 1.0) is not None, "room made by forgetting an unconfirmed one"
    assert first.actor_id not in reg.actors
    last = max(reg.actors)
    reg.verify(last, reg.actors[last].token, None, 1.0)
    assert reg.join(HELLO, None, 1.0) is None, "--max-actors live actors: refused"


def test_sync_round_is_exact_and_times_out():
    r = SyncRound(3, timeout=2.0, min_actors=2)
    assert r.offer(cartpole_rollout(0, version=3), now=10.0)
    assert not r.offer(cartpole_rollout(0, version=3), now=10.1), "one rollout an actor"
    assert not r.offer(cartpole_rollout(1, version=2), now=10.1), "another version"
    assert not r.complete([0], now=10.5), "fewer than --min-actors"
    assert r.complete([0, 1], now=12.0), "timed out: trains on what it has"
    assert [x.actor_id for x in r.take()] == [0]
    assert not r.offer(cartpole_rollout(1, version=3), now=12.1), "closed while its update runs"
    r.open(4)
    assert r.offer(cartpole_rollout(1, version=4), now=13.0) and r.offer(cartpole_rollout(0, version=4), now=13.0)
    assert r.complete([0, 1], now=13.0)


def test_the_token_an_actor_held_before_it_joined_again_is_late_for_a_while(reg):
    a = reg.join(HELLO, "KEY-A", 0.0)
    reg.verify(a.actor_id, a.token, "KEY-A", 1.0)
    t = reg.forget_after / 2  # silent past --actor-timeout, not yet forgotten
    b = reg.join({**HELLO, "previous_id": a.actor_id}, "KEY-A", t)
    assert b.actor_id == a.actor_id and b.token != a.token
    with pytest.raises(SupersededToken):
        reg.verify(a.actor_id, a.token, "KEY-A", t + 1)
    with pytest.raises(IdentityError, match="wrong token") as other:
        reg.verify(a.actor_id, "0" * 32, "KEY-A", t + 1)
    assert not isinstance(other.value, SupersededToken), "a token it never held is a forgery"
    with pytest.raises(IdentityError) as late:
        reg.verify(a.actor_id, a.token, "KEY-A", t + SUPERSEDED_S + 1)
    assert not isinstance(late.value, SupersededToken), "only for a while after the rejoin"
    with pytest.raises(IdentityError) as key:
        reg.verify(a.actor_id, a.token, "KEY-M", t + 1)
    assert not isinstance(key.value, SupersededToken), "and only with the key it joined with"
    assert reg.verify(b.actor_id, b.token, "KEY-A", t + 2) is b
